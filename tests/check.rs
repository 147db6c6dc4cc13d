//! `gapsync check`: clean stores pass; each kind of damage is named (exit 3);
//! `--repair` fixes only what is safe.

mod common;

use std::fs;

use common::*;

fn store_with_content() -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, dir) = new_store("s", "autonomous");
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "60",
            "--content-bytes",
            "3M",
        ],
    )
    .ok();
    gs(&dir, &["catalog", "add", captured_docs().to_str().unwrap()]).ok();
    (t, dir)
}

fn first_content_file(dir: &std::path::Path) -> std::path::PathBuf {
    let (rel, _) = tree(&dir.join("content")).into_iter().next().unwrap();
    dir.join("content").join(rel)
}

#[test]
fn a_clean_store_passes() {
    let (_t, dir) = store_with_content();
    let r = gs(&dir, &["check", "--json"]).ok().json();
    assert_eq!(r["problems"], serde_json::json!([]));
    assert!(r["revisions_checked"].as_u64().unwrap() > 60);
    assert!(r["content_files_checked"].as_u64().unwrap() > 0);
    assert_eq!(r["content_bytes_checked"], 3 << 20);
}

#[test]
fn damaged_content_is_named() {
    let (_t, dir) = store_with_content();
    let f = first_content_file(&dir);
    flip_byte(&f, 10);
    let name = f.file_name().unwrap().to_string_lossy().to_string();
    let r = gs(&dir, &["check"]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout.contains("[content-corrupt]") && r.stdout.contains(&name),
        "{}",
        r.stdout
    );
    fs::remove_file(&f).unwrap();
    let r = gs(&dir, &["check"]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("[content-missing]"), "{}", r.stdout);
}

#[test]
fn staging_leftovers_are_reported_and_repaired() {
    let (_t, dir) = store_with_content();
    fs::write(dir.join("staging/0123.part"), b"half a file").unwrap();
    let r = gs(&dir, &["check"]).ok();
    assert!(r.stdout.contains("note [staging-leftover]"), "{}", r.stdout);
    let r = gs(&dir, &["check", "--repair"]).ok();
    assert!(
        r.stdout.contains("repaired: removed staging leftover"),
        "{}",
        r.stdout
    );
    assert!(
        !gs(&dir, &["check"])
            .ok()
            .stdout
            .contains("staging-leftover")
    );
}

#[test]
fn orphans_are_notes_strays_are_problems() {
    let (_t, dir) = store_with_content();
    // A complete file named by its SHA-1 (as an interrupted import leaves).
    let data = noise(1000, 9);
    let hex = sha1_hex_upper(&data);
    fs::create_dir_all(dir.join("content").join(&hex[38..])).unwrap();
    fs::write(
        dir.join("content")
            .join(&hex[38..])
            .join(format!("{hex}.cab")),
        &data,
    )
    .unwrap();
    let r = gs(&dir, &["check", "--json"]).ok().json();
    assert_eq!(r["notes"][0]["rule"], "content-orphan");
    // A file whose bytes do not match its name.
    fs::write(
        dir.join("content").join(&hex[38..]).join("ABCDEF.cab"),
        b"junk",
    )
    .unwrap();
    let r = gs(&dir, &["check"]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("[content-stray]"), "{}", r.stdout);
}

#[test]
fn tampered_database_rows_are_found() {
    let (_t, dir) = store_with_content();
    {
        let conn = rusqlite::Connection::open(dir.join("gapsync.db")).unwrap();
        conn.execute(
            "UPDATE revisions SET xml = CAST('<x/>' AS BLOB) WHERE rev_id = 5",
            [],
        )
        .unwrap();
        conn.execute(
            "UPDATE updates SET current_rev = 1 WHERE current_rev = 7",
            [],
        )
        .unwrap();
    }
    let r = gs(&dir, &["check"]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("[revision-digest]"), "{}", r.stdout);
    assert!(r.stdout.contains("[current-revision]"), "{}", r.stdout);
}

#[test]
fn after_a_crash_check_is_clean_once_the_import_is_rerun() {
    let (t, up) = store_with_content();
    let down = t.path().join("down");
    gs_plain(&["init", down.to_str().unwrap(), "--mode", "replica"]).ok();
    let key = t.path().join("k");
    gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    gs(
        &down,
        &["trust", "add", key.with_extension("pub").to_str().unwrap()],
    )
    .ok();
    let b = t.path().join("b");
    gs(
        &up,
        &[
            "export",
            "--key",
            key.with_extension("key").to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
        ],
    )
    .ok();
    for point in ["import-before-content-rename", "import-before-commit"] {
        let r = gs_env(
            &down,
            &["import", b.to_str().unwrap()],
            &[("GAPSYNC_FAILPOINT", point)],
        );
        assert_ne!(r.code, 0);
        // The database is consistent; leftovers are only notes.
        let c = gs(&down, &["check", "--json"]).ok().json();
        assert_eq!(c["problems"], serde_json::json!([]), "{point}");
    }
    gs(&down, &["import", b.to_str().unwrap()]).ok();
    let c = gs(&down, &["check", "--json"]).ok().json();
    assert_eq!(c["problems"], serde_json::json!([]));
}
