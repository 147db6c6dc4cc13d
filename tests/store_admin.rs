//! The store and the admin commands around it (issue 9): nested stores,
//! replicas and local groups, read-only users, free space, folders that
//! are not stores, and side effects that are said. Through the real binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A store with a small generated catalog (content included).
fn generated_store(name: &str, mode: &str) -> (tempfile::TempDir, PathBuf) {
    let (t, dir) = new_store(name, mode);
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "30",
            "--content-bytes",
            "300K",
            "--seed",
            "3",
        ],
    )
    .ok();
    (t, dir)
}

fn ids_of(dir: &Path, kind: &str) -> Vec<String> {
    gs(dir, &["updates", "list", "--kind", kind, "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every path under `dir` (files and folders), sorted.
fn paths(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    out.sort();
    out
}

fn assert_check_clean(dir: &Path) {
    let r = gs(dir, &["check"]).ok();
    assert!(r.stdout.contains(": clean"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------
// 1. init inside or above a store
// ---------------------------------------------------------------------------

#[test]
fn init_inside_or_above_a_store_is_refused_and_changes_nothing() {
    let (t, s) = generated_store("s", "autonomous");
    let before_paths = paths(t.path());
    let before = snapshot(&s);
    for inner in [
        s.join("content"),
        s.join("content/ab/new"),
        s.join("staging"),
        s.join("sub"),
    ] {
        gs_plain(&["init", inner.to_str().unwrap()]).fails(
            1,
            &format!("inside the gapsync server store {}", s.display()),
        );
    }
    // Through a symbolic link to the store, too.
    #[cfg(unix)]
    {
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&s, &link).unwrap();
        gs_plain(&["init", link.join("content").to_str().unwrap()])
            .fails(1, "inside the gapsync server store");
        fs::remove_file(&link).unwrap();
    }
    // Above: the folder holding the store, and one further up.
    gs_plain(&["init", t.path().to_str().unwrap()]).fails(
        1,
        &format!("holds the gapsync server store {}", s.display()),
    );
    let deep = tempfile::tempdir().unwrap();
    let nested = deep.path().join("a/b/c");
    fs::create_dir_all(&nested).unwrap();
    gs_plain(&["init", nested.join("s2").to_str().unwrap()]).ok();
    for above in [deep.path().to_path_buf(), deep.path().join("a")] {
        gs_plain(&["init", above.to_str().unwrap()]).fails(1, "holds the gapsync server store");
    }
    assert!(!deep.path().join("gapsync.db").exists());
    assert_eq!(paths(t.path()), before_paths);
    assert_eq!(snapshot(&s), before);
    assert_check_clean(&s);
    assert_check_clean(&nested.join("s2"));
    // Beside a store is fine.
    gs_plain(&["init", t.path().join("other").to_str().unwrap()]).ok();
}

// ---------------------------------------------------------------------------
// 2. replicas and local groups
// ---------------------------------------------------------------------------

#[test]
fn replica_refuses_local_group_changes() {
    let (_t, r) = new_store("r", "replica");
    let before = snapshot(&r);
    gs(&r, &["groups", "add", "Pilot"]).fails(1, "this server is a replica: groups come from");
    gs(&r, &["groups", "remove", "Pilot"]).fails(1, "this server is a replica");
    gs(&r, &["groups", "remove", "Unassigned Computers"]).fails(1, "this server is a replica");
    assert_eq!(snapshot(&r), before);
    assert_check_clean(&r);
    // Computers are local to a server: still allowed.
    gs(&r, &["computers", "add", "ws-1"]).ok();
}

/// A bundle whose group clashes with a local group of the same name is
/// refused, the message saying it is an import, and nothing is applied.
#[test]
fn a_group_clash_in_an_import_names_the_import() {
    let (_t, hq) = generated_store("hq", "autonomous");
    gs(&hq, &["groups", "add", "Pilot"]).ok();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("hq");
    gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    let bundle = keys.path().join("b1");
    gs(
        &hq,
        &[
            "export",
            "--key",
            key.with_extension("key").to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ],
    )
    .ok();
    let (_t2, site) = new_store("site", "autonomous");
    gs(&site, &["groups", "add", "pilot"]).ok();
    gs(
        &site,
        &["trust", "add", key.with_extension("pub").to_str().unwrap()],
    )
    .ok();
    let before = snapshot(&site);
    let r = gs(&site, &["import", bundle.to_str().unwrap()])
        .fails(1, "import: group \"Pilot\" in the bundle");
    assert!(
        r.stderr.contains("clashes with group \"pilot\""),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&site), before);
    assert_check_clean(&site);
}

// ---------------------------------------------------------------------------
// 3. read-only users
// ---------------------------------------------------------------------------

/// Runs the binary (copied to `bin`) as another user: as root, user
/// `nobody` (65534) through `setpriv`; otherwise the current user, on a
/// store the caller made read-only.
fn as_reader(bin: &Path, store: &Path, args: &[&str]) -> Run {
    let mut c = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    c.arg("--server")
        .arg(store)
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .env_remove("GAPSYNC_FAILPOINT");
    let out = c.output().expect("run gapsync as a reader");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Without root, the store is made read-only for its own user instead.
#[cfg(unix)]
fn make_read_only(store: &Path, read_only: bool) {
    if is_root() {
        return;
    }
    for e in walkdir::WalkDir::new(store) {
        let e = e.unwrap();
        let dir = e.file_type().is_dir();
        let mode = match (dir, read_only) {
            (true, true) => 0o555,
            (true, false) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        set_mode(e.path(), mode);
    }
}

#[cfg(unix)]
#[test]
fn a_user_who_may_only_read_runs_every_reading_command() {
    let t = tempfile::tempdir().unwrap();
    set_mode(t.path(), 0o755);
    let bin = t.path().join("gapsync");
    fs::copy(common::bin(), &bin).unwrap();
    set_mode(&bin, 0o755);
    let s = t.path().join("s");
    gs_plain(&["init", s.to_str().unwrap(), "--name", "s"]).ok();
    gs(
        &s,
        &[
            "catalog",
            "generate",
            "--updates",
            "30",
            "--content-bytes",
            "300K",
            "--seed",
            "3",
        ],
    )
    .ok();
    gs(&s, &["groups", "add", "Pilot"]).ok();
    gs(&s, &["computers", "add", "ws-1", "--group", "Pilot"]).ok();
    let software = ids_of(&s, "software");
    gs(&s, &["approve", &software[0], "--group", "Pilot"]).ok();
    gs(&s, &["approve", &software[1], "--group", "Pilot"]).ok();
    gs(&s, &["unapprove", &software[1], "--group", "Pilot"]).ok();
    let before = snapshot(&s);
    make_read_only(&s, true);

    let reading: &[&[&str]] = &[
        &["status", "--json"],
        &["updates", "list", "--json"],
        &["updates", "list", "--kind", "software"],
        &["updates", "show", &software[0], "--json"],
        &["journal", "--json"],
        &["deployments", "list", "--json"],
        &["deployments", "list", "--removed", "--json"],
        &["groups", "list", "--json"],
        &["computers", "list", "--json"],
        &["exports", "list", "--json"],
        &["imports", "list", "--json"],
        &["check", "--json"],
    ];
    let compare = |what: &str| {
        for args in reading {
            let r = as_reader(&bin, &s, args);
            assert_eq!(
                r.code, 0,
                "{what}: {args:?} as a reader\nstdout: {}\nstderr: {}",
                r.stdout, r.stderr
            );
            let own = gs(&s, args).ok();
            assert_eq!(r.stdout, own.stdout, "{what}: {args:?}");
        }
    };
    compare("store written by this gapsync");
    // The reader's check stands, but its result cannot be recorded.
    let r = as_reader(&bin, &s, &["check"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("this check's result was not recorded in the store"),
        "{}",
        r.stderr
    );
    // A writing command fails with a clear message and changes nothing.
    for args in [
        &["groups", "add", "Lab"][..],
        &["approve", &software[2], "--group", "Pilot"],
        &["check", "--repair"],
    ] {
        let r = as_reader(&bin, &s, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("this user may not write the store"),
            "{args:?}: {}",
            r.stderr
        );
    }
    make_read_only(&s, false);
    assert_eq!(snapshot(&s), before);
    assert_check_clean(&s);

    // The store was last closed by a tool that removes the WAL files
    // (another SQLite program, an older gapsync): the reader is told what
    // to do, and after one command by the owner it reads again.
    {
        let c = rusqlite::Connection::open(s.join("gapsync.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM server", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
    assert!(!s.join("gapsync.db-shm").exists());
    assert!(!s.join("gapsync.db-wal").exists());
    make_read_only(&s, true);
    as_reader(&bin, &s, &["status"]).fails(
        1,
        "run any gapsync command on the store once as a user who may write it",
    );
    make_read_only(&s, false);
    gs(&s, &["status"]).ok();
    make_read_only(&s, true);
    compare("after the owner's command");
    make_read_only(&s, false);

    // A store of an older schema: the upgrade needs a writer.
    let older = rusqlite::Connection::open(s.join("gapsync.db")).unwrap();
    older
        .execute_batch(
            // Undo v12 (check runs, ledger sizes), v11 (search table), v10
            // (rollup), v9 (site reports), v8 (indexes), v7 (MS-WUSP tables
            // and computer columns), then v6.
            "DROP TABLE check_runs; ALTER TABLE export_history DROP COLUMN bytes; \
             ALTER TABLE export_history DROP COLUMN expires; ALTER TABLE import_ledger DROP COLUMN expires; \
             ALTER TABLE import_ledger DROP COLUMN bytes; ALTER TABLE import_ledger DROP COLUMN signer; \
             DROP TABLE update_search; \
             CREATE INDEX revisions_kb ON revisions (kb_article); CREATE INDEX localized_title ON localized (title); \
             DROP TABLE rollup_upstream; DROP TABLE rollup_computers; \
             DROP TABLE report_exports; DROP TABLE site_reports; DROP TABLE site_imports; \
             DROP TABLE site_content; DROP TABLE site_groups; DROP TABLE site_updates; \
             DROP TABLE site_approvals; DROP TABLE site_computers; DROP TABLE site_status; \
             DROP TABLE site_events; DROP TABLE sites; \
             DROP INDEX updates_current_rev; DROP INDEX revisions_kb; DROP INDEX localized_title; \
             DROP TABLE wusp_events; DROP TABLE wusp_status; DROP TABLE wusp_revisions; \
             DROP INDEX computers_client; DROP INDEX computers_name; \
             CREATE UNIQUE INDEX computers_name ON computers (name COLLATE NOCASE); \
             ALTER TABLE computers DROP COLUMN client_id; ALTER TABLE computers DROP COLUMN dns_name; ALTER TABLE computers DROP COLUMN os_version; ALTER TABLE computers DROP COLUMN os_description; ALTER TABLE computers DROP COLUMN arch; ALTER TABLE computers DROP COLUMN manufacturer; ALTER TABLE computers DROP COLUMN model; ALTER TABLE computers DROP COLUMN client_version; ALTER TABLE computers DROP COLUMN registered; ALTER TABLE computers DROP COLUMN last_sync; ALTER TABLE computers DROP COLUMN last_report; ALTER TABLE computers DROP COLUMN client_groups; \
             DROP TABLE removed_groups; ALTER TABLE export_history DROP COLUMN signer; \
             ALTER TABLE export_history DROP COLUMN last_stmt_seq; PRAGMA user_version = 5;",
        )
        .unwrap();
    make_read_only(&s, true);
    let r = as_reader(&bin, &s, &["status"]).fails(1, "schema version 5");
    assert!(
        r.stderr
            .contains("run any gapsync command on it once as a user who may write it"),
        "{}",
        r.stderr
    );
    make_read_only(&s, false);
    drop(older);
    gs(&s, &["status"]).ok();
    make_read_only(&s, true);
    compare("after the upgrade");
    make_read_only(&s, false);
    assert_eq!(snapshot(&s), before);
    assert_check_clean(&s);
}

// ---------------------------------------------------------------------------
// 4. catalog generate and free space
// ---------------------------------------------------------------------------

/// Runs `gapsync --server DIR args...`, killed (and the test failed) if it
/// still runs after `secs` seconds: a build that writes before checking
/// the space must not fill the disk of the machine running the tests.
fn gs_bounded(server: &Path, args: &[&str], secs: u64) -> Run {
    use std::io::Read;
    let mut child = std::process::Command::new(common::bin())
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .env_remove("GAPSYNC_FAILPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gapsync");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gapsync {args:?} still ran after {secs} s (writing?); killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

#[test]
fn catalog_generate_checks_free_space_before_writing() {
    let (_t, s) = new_store("s", "autonomous");
    let before = snapshot(&s);
    let r = gs_bounded(
        &s,
        &[
            "catalog",
            "generate",
            "--updates",
            "100",
            "--content-bytes",
            "15T",
        ],
        30,
    )
    .fails(1, "not enough space in");
    assert!(
        r.stderr.contains("needs 15.0 TiB") && r.stderr.contains(" free"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&s), before);
    assert!(paths(&s.join("staging")).len() == 1, "staging is empty");
    assert_check_clean(&s);
}

// ---------------------------------------------------------------------------
// 5. folders that are not stores
// ---------------------------------------------------------------------------

#[test]
fn commands_on_a_folder_that_is_not_a_store_touch_nothing() {
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("notes.txt"), b"not a store").unwrap();
    let foreign = t.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    {
        let c = rusqlite::Connection::open(foreign.join("gapsync.db")).unwrap();
        c.execute_batch("CREATE TABLE inventory (host TEXT); INSERT INTO inventory VALUES ('a');")
            .unwrap();
    }
    let foreign_wal = t.path().join("foreign-wal");
    fs::create_dir(&foreign_wal).unwrap();
    {
        let c = rusqlite::Connection::open(foreign_wal.join("gapsync.db")).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let before = tree(t.path());
    let before_paths = paths(t.path());
    let commands: &[&[&str]] = &[
        &["status"],
        &["groups", "list"],
        &["groups", "add", "Pilot"],
        &["computers", "add", "ws-1"],
        &["catalog", "generate", "--updates", "5"],
        &["decline", "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe"],
        &["check"],
        &["check", "--repair"],
    ];
    for dir in [&plain, &foreign, &foreign_wal] {
        for args in commands {
            let r = gs(dir, args).fails(1, "not a gapsync server store");
            assert!(!r.stderr.contains("already holds"), "{}", r.stderr);
            if dir != &plain {
                assert!(r.stderr.contains("not a gapsync database"), "{}", r.stderr);
            }
        }
        // init does not take over a folder whose gapsync.db is another
        // program's database either, and says what it is.
        if dir != &plain {
            let r =
                gs_plain(&["init", dir.to_str().unwrap()]).fails(1, "not a gapsync server store");
            assert!(
                r.stderr.contains("init does not replace it"),
                "{}",
                r.stderr
            );
            assert!(!r.stderr.contains("already holds"), "{}", r.stderr);
        }
    }
    assert_eq!(paths(t.path()), before_paths, "no file was created");
    assert!(tree(t.path()) == before, "no file was changed");

    // A regular file given as the store.
    let afile = t.path().join("afile");
    fs::write(&afile, b"x").unwrap();
    for args in [&["status"][..], &["groups", "add", "Pilot"]] {
        gs(&afile, args).fails(1, "not a directory");
    }
    gs_plain(&["init", afile.to_str().unwrap()]).fails(1, "not a directory");
    assert_eq!(fs::read(&afile).unwrap(), b"x");
}

// ---------------------------------------------------------------------------
// 6. side effects said; names; declines; unknown categories
// ---------------------------------------------------------------------------

#[test]
fn groups_remove_says_what_moved_and_what_was_unapproved() {
    let (_t, s) = generated_store("s", "autonomous");
    let software = ids_of(&s, "software");
    gs(&s, &["groups", "add", "Pilot"]).ok();
    gs(&s, &["computers", "add", "ws-2", "--group", "Pilot"]).ok();
    gs(&s, &["computers", "add", "ws-1", "--group", "Pilot"]).ok();
    gs(&s, &["approve", &software[0], "--group", "Pilot"]).ok();
    gs(
        &s,
        &[
            "approve",
            &software[1],
            "--group",
            "Pilot",
            "--action",
            "block",
        ],
    )
    .ok();
    let r = gs(&s, &["groups", "remove", "pilot", "--json"]).ok().json();
    assert_eq!(r["name"], "Pilot");
    assert_eq!(r["computers_moved"], serde_json::json!(["ws-1", "ws-2"]));
    assert_eq!(r["computers_moved_to"], "Unassigned Computers");
    let removed = r["approvals_removed"].as_array().unwrap();
    assert_eq!(removed.len(), 2, "{r}");
    let mut want = vec![software[0].clone(), software[1].clone()];
    want.sort();
    let got: Vec<&str> = removed
        .iter()
        .map(|a| a["update_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    assert!(removed.iter().any(|a| a["action"] == "block"));

    // In words, with counts that read right.
    gs(&s, &["groups", "add", "Lab"]).ok();
    gs(&s, &["computers", "add", "ws-3", "--group", "Lab"]).ok();
    gs(&s, &["approve", &software[2], "--group", "Lab"]).ok();
    let out = gs(&s, &["groups", "remove", "Lab"]).ok().stdout;
    assert!(
        out.contains("moved 1 computer to \"Unassigned Computers\": ws-3"),
        "{out}"
    );
    assert!(out.contains("removed 1 approval "), "{out}");
    assert!(out.contains(&software[2]), "{out}");

    // Removed deployments still name their (removed) group.
    let dead = gs(&s, &["deployments", "list", "--removed", "--json"])
        .ok()
        .json();
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 3);
    for d in dead {
        let expect = if d["update_id"] == software[2].as_str() {
            "Lab"
        } else {
            "Pilot"
        };
        assert_eq!(d["group"], expect, "{d}");
    }
    let text = gs(&s, &["deployments", "list", "--removed"]).ok().stdout;
    assert!(text.contains(" Lab ") && text.contains(" Pilot "), "{text}");
    let computers = gs(&s, &["computers", "list", "--json"]).ok().json();
    assert!(
        computers
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["group"] == "Unassigned Computers")
    );
    assert_check_clean(&s);
}

#[test]
fn names_with_invisible_or_bidi_characters_are_refused() {
    let (_t, s) = new_store("s", "autonomous");
    let before = snapshot(&s);
    for (name, code) in [
        ("Pilot\u{202E}", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("Pi\u{200B}lot", "U+200B (ZERO WIDTH SPACE)"),
        ("\u{2066}Pilot", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("Pilot\u{FEFF}", "U+FEFF"),
        ("Pi\u{1B}lot", "U+001B"),
    ] {
        let r = gs(&s, &["groups", "add", name]).fails(2, code);
        assert!(
            !r.stderr.contains(name),
            "the message shows the name escaped"
        );
        gs(&s, &["computers", "add", name]).fails(2, code);
    }
    assert_eq!(snapshot(&s), before);
    assert_check_clean(&s);
    gs(&s, &["groups", "add", "Équipe Nord"]).ok();
}

#[test]
fn declining_a_category_or_detectoid_is_refused() {
    let (_t, s) = generated_store("s", "autonomous");
    let before = snapshot(&s);
    for kind in ["category", "detectoid"] {
        let id = ids_of(&s, kind)[0].clone();
        gs(&s, &["decline", &id]).fails(
            1,
            &format!("is a {kind}; only software and driver updates are declined"),
        );
        gs(&s, &["approve", &id, "--group", "Unassigned Computers"]).fails(
            1,
            &format!("is a {kind}; only software and driver updates are approved"),
        );
    }
    assert_eq!(snapshot(&s), before);
    assert_check_clean(&s);
}

#[test]
fn unknown_product_or_classification_gets_a_warning() {
    let (_t, s) = generated_store("s", "autonomous");
    let unknown = "0b5bb2a6-0c5c-4c5b-9a3b-000000000001";
    let software = ids_of(&s, "software")[0].clone();
    let r = gs(&s, &["updates", "list", "--product", unknown]).ok();
    assert!(
        r.stderr.contains(&format!(
            "warning: --product {unknown}: not a category in this store"
        )),
        "{}",
        r.stderr
    );
    // A software update is not a category either.
    let r = gs(&s, &["updates", "list", "--classification", &software]).ok();
    assert!(
        r.stderr.contains(&format!("--classification {software}")),
        "{}",
        r.stderr
    );
    // A real category: no warning.
    let category = ids_of(&s, "category")[0].clone();
    let r = gs(
        &s,
        &["updates", "list", "--product", &category.to_uppercase()],
    )
    .ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);

    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("k");
    gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    let r = gs(
        &s,
        &[
            "export",
            "--key",
            key.with_extension("key").to_str().unwrap(),
            "--out",
            keys.path().join("b").to_str().unwrap(),
            "--classification",
            unknown,
            "--content",
            "none",
        ],
    )
    .ok();
    assert!(
        r.stderr.contains(&format!(
            "warning: --classification {unknown}: not a category"
        )),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// 7. each cause said once
// ---------------------------------------------------------------------------

/// No sentence of the message is said twice.
fn said_once(stderr: &str, cause: &str) {
    assert_eq!(
        stderr.matches(cause).count(),
        1,
        "{cause:?} should appear once in:\n{stderr}"
    );
}

#[test]
fn catalog_add_and_init_say_each_cause_once() {
    let (t, s) = new_store("s", "autonomous");
    let before = snapshot(&s);
    let missing = t.path().join("missing.xml");
    let r = gs(&s, &["catalog", "add", missing.to_str().unwrap()]).fails(1, "missing.xml");
    said_once(&r.stderr, "No such file or directory");

    let bad = t.path().join("bad.xml");
    fs::write(
        &bad,
        b"<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><unclosed>",
    )
    .unwrap();
    let r = gs(&s, &["catalog", "add", bad.to_str().unwrap()]).fails(1, "bad.xml");
    let line = r.stderr.lines().next().unwrap_or_default();
    let parts: Vec<&str> = line.split(": ").collect();
    for p in &parts[2..] {
        said_once(&r.stderr, p);
    }
    assert_eq!(snapshot(&s), before);

    // init where the folder cannot be made (its parent is a file).
    let afile = t.path().join("afile");
    fs::write(&afile, b"x").unwrap();
    let r = gs_plain(&["init", afile.join("sub").to_str().unwrap()]).fails(1, "afile");
    said_once(&r.stderr, "Not a directory");
}
