//! Export, verify and import across the air gap, through the real binary:
//! equality after a full bundle and a chain of incremental links, every
//! import rule (each proving the store did not change), stock tools,
//! volumes and key rotation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The shared lab (120 updates; groups Servers and Pilot under it) and
/// the chain of bundles exported to its plant.
struct Chain {
    lab: Lab,
    /// Bundles exported so far (`bundle-N`).
    n: u32,
    /// (update id, group) approved by `new`.
    approved: Vec<(String, String)>,
    /// Export in bundle format version 1 (for the readers of versions 1
    /// and 2).
    format_1: bool,
}

impl std::ops::Deref for Chain {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl std::ops::DerefMut for Chain {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

impl Chain {
    /// The lab with four updates approved (deadline 2027-01-01) for
    /// Servers and Pilot in turn.
    fn new(content: &str) -> Chain {
        let mut lab = Chain::setup(content);
        for (i, id) in lab.visible_updates().iter().take(4).enumerate() {
            let group = if i % 2 == 0 { "Servers" } else { "Pilot" };
            gs(
                &lab.hq,
                &[
                    "approve",
                    id,
                    "--group",
                    group,
                    "--deadline",
                    "2027-01-01T00:00:00Z",
                ],
            )
            .ok();
            lab.approved.push((id.clone(), group.to_string()));
        }
        lab
    }

    /// The lab with its groups, nothing approved.
    fn setup(content: &str) -> Chain {
        let lab = Lab::new(120, content);
        gs(&lab.hq, &["groups", "add", "Servers"]).ok();
        gs(&lab.hq, &["groups", "add", "Pilot", "--parent", "Servers"]).ok();
        Chain {
            lab,
            n: 0,
            approved: Vec::new(),
            format_1: false,
        }
    }

    fn visible_updates(&self) -> Vec<String> {
        let list = gs(
            &self.hq,
            &["updates", "list", "--json", "--kind", "software"],
        )
        .ok()
        .json();
        list.as_array()
            .unwrap()
            .iter()
            .filter(|u| {
                !u["title"].as_str().unwrap().starts_with("HIDDEN") && u["declined"] == false
            })
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The next bundle of the chain to the plant (`bundle-N`).
    fn export(&mut self, extra: &[&str]) -> PathBuf {
        self.n += 1;
        let out = self.root.join(format!("bundle-{}", self.n));
        let mut args = vec![
            "export",
            "--key",
            self.key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--to",
            "plant",
        ];
        args.extend_from_slice(extra);
        let env: &[(&str, &str)] = if self.format_1 {
            &[(FORMAT_1_ENV, "1")]
        } else {
            &[]
        };
        gs_env(&self.hq, &args, env).ok();
        out
    }

    fn import(&self, bundle: &Path) -> Run {
        gs(&self.plant, &["import", bundle.to_str().unwrap(), "--json"])
    }

    /// The downstream refuses `bundle` with exit 3 naming `rule`, and is
    /// unchanged.
    fn refused(&self, bundle: &Path, rule: &str) {
        let before = snapshot(&self.plant);
        let content_before = tree(&self.plant.join("content"));
        self.import(bundle).fails(3, &format!("[{rule}]"));
        assert_eq!(snapshot(&self.plant), before, "{rule}: store changed");
        assert_eq!(
            tree(&self.plant.join("content")),
            content_before,
            "{rule}: content changed"
        );
        assert_eq!(
            fs::read_dir(self.plant.join("staging")).unwrap().count(),
            0,
            "{rule}: staging debris"
        );
    }

    fn assert_equal(&self) {
        for args in [
            &["updates", "list", "--json"][..],
            &["deployments", "list", "--json"],
            &["deployments", "list", "--removed", "--json"],
        ] {
            assert_eq!(
                gs(&self.hq, args).ok().stdout,
                gs(&self.plant, args).ok().stdout,
                "{args:?} differ"
            );
        }
        let groups = |dir: &Path| -> Vec<(String, String, String)> {
            let g = gs(dir, &["groups", "list", "--json"]).ok().json();
            g.as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["id"].to_string(),
                        g["name"].to_string(),
                        g["parent"].to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(groups(&self.hq), groups(&self.plant));
        assert_eq!(
            tree(&self.hq.join("content")),
            tree(&self.plant.join("content")),
            "content trees differ"
        );
        // Byte-identical XML for every update.
        let list = gs(&self.hq, &["updates", "list", "--json"]).ok().json();
        for u in list.as_array().unwrap().iter().step_by(7) {
            let id = u["id"].as_str().unwrap();
            assert_eq!(
                gs(&self.hq, &["updates", "show", id, "--xml"]).ok().stdout,
                gs(&self.plant, &["updates", "show", id, "--xml"])
                    .ok()
                    .stdout
            );
        }
    }
}

#[test]
fn full_bundle_and_three_incremental_links_make_the_stores_equal() {
    let mut lab = Chain::new("6M");
    let b1 = lab.export(&["--json"]);
    let r = lab.import(&b1).ok().json();
    assert_eq!(r["status"], "imported");
    assert_eq!(r["chain"], "first");
    lab.assert_equal();

    // Link 2: new updates (another seed) with content, new approvals.
    gs(
        &lab.hq,
        &[
            "catalog",
            "generate",
            "--updates",
            "40",
            "--content-bytes",
            "2M",
            "--seed",
            "2",
        ],
    )
    .ok();
    let visible = lab.visible_updates();
    gs(
        &lab.hq,
        &[
            "approve",
            &visible[10],
            "--group",
            "Pilot",
            "--action",
            "install",
        ],
    )
    .ok();
    let b2 = lab.export(&[]);
    let m2: serde_json::Value =
        serde_json::from_slice(&fs::read(b2.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["kind"], "incremental");
    assert_eq!(m2["seq"], 2);
    assert_eq!(
        m2["counts"]["content_bytes"],
        2 << 20,
        "only the new content travels"
    );
    assert_eq!(
        m2["counts"]["revisions"], 42,
        "40 new updates + 2 second revisions"
    );
    lab.import(&b2).ok();
    lab.assert_equal();

    // Link 3: approval changed, one removed, an update declined, a group removed.
    let (a0, g0) = lab.approved[0].clone();
    let (a1, g1) = lab.approved[1].clone();
    let (a2, _) = lab.approved[2].clone();
    gs(
        &lab.hq,
        &["approve", &a0, "--group", &g0, "--action", "block"],
    )
    .ok();
    gs(&lab.hq, &["unapprove", &a1, "--group", &g1]).ok();
    gs(&lab.hq, &["decline", &a2]).ok();
    gs(&lab.hq, &["groups", "add", "Temporary"]).ok();
    let b3 = lab.export(&[]);
    let r3 = lab.import(&b3).ok().json();
    assert_eq!(r3["plan"]["deployments_changed"], 1);
    assert!(
        r3["plan"]["deployments_removed"].as_u64().unwrap() >= 2,
        "{r3}"
    );
    assert_eq!(r3["plan"]["updates_declined"], 1);
    lab.assert_equal();

    // Link 4: a group removed, nothing else.
    gs(&lab.hq, &["groups", "remove", "Temporary"]).ok();
    let b4 = lab.export(&[]);
    let m4: serde_json::Value =
        serde_json::from_slice(&fs::read(b4.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m4["counts"]["revisions"], 0);
    assert_eq!(m4["counts"]["content_files"], 0);
    assert_eq!(m4["counts"]["removed_groups"], 1);
    lab.import(&b4).ok();
    lab.assert_equal();
    assert_eq!(
        gs(&lab.plant, &["status", "--json"]).ok().json()["bundles_imported"],
        4
    );

    // An export with nothing changed is refused and leaves nothing behind;
    // with --allow-empty it is an empty link that still chains.
    let before = snapshot(&lab.hq);
    let links_before = gs(&lab.hq, &["exports", "list", "--json"]).ok().stdout;
    let empty = lab.root.join("empty");
    gs(
        &lab.hq,
        &[
            "export",
            "--key",
            lab.key.to_str().unwrap(),
            "--out",
            empty.to_str().unwrap(),
            "--to",
            "plant",
        ],
    )
    .fails(1, "nothing to export to \"plant\"")
    .fails(1, "--allow-empty");
    assert!(!empty.exists());
    assert_no_partial(&lab.root);
    assert_eq!(snapshot(&lab.hq), before);
    assert_eq!(
        gs(&lab.hq, &["exports", "list", "--json"]).ok().stdout,
        links_before
    );
    gs(&lab.hq, &["check"]).ok();
    let b5 = lab.export(&["--allow-empty"]);
    let r5 = lab.import(&b5).ok().json();
    assert_eq!(r5["plan"]["revisions_added"], 0);
    lab.assert_equal();
}

#[test]
fn the_same_bundle_again_is_a_no_op() {
    let mut lab = Chain::new("1M");
    let b1 = lab.export(&[]);
    lab.import(&b1).ok();
    let before = snapshot(&lab.plant);
    let r = lab.import(&b1).ok().json();
    assert_eq!(r["status"], "already-imported");
    assert_eq!(snapshot(&lab.plant), before);
    let text = gs(&lab.plant, &["import", b1.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(text.contains("already imported"), "{text}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let mut lab = Chain::new("2M");
    let b1 = lab.export(&[]);
    let before = snapshot(&lab.plant);
    let r = gs(
        &lab.plant,
        &["import", b1.to_str().unwrap(), "--dry-run", "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["status"], "dry-run");
    assert_eq!(
        r["plan"]["revisions_added"], 152,
        "26 categories and detectoids, 120 updates, 6 second revisions"
    );
    assert_eq!(r["plan"]["deployments_created"], 4);
    assert_eq!(r["plan"]["groups_added"], 2);
    assert_eq!(r["plan"]["content_bytes"], 2 << 20);
    assert!(r["plan"]["disk_free"].as_u64().unwrap() > 0);
    assert_eq!(snapshot(&lab.plant), before);
    assert!(tree(&lab.plant.join("content")).is_empty());
}

/// A dry run plans for the whole bundle: with volumes missing it names
/// them and fails (exit 1) unless told to plan from volume 1 alone, and
/// then the plan says which volumes it did not see. Nothing changes.
#[test]
fn dry_run_names_missing_volumes_unless_planning_from_volume_1() {
    let mut lab = Chain::new("10M");
    let b = lab.export(&["--volume-size", "5M"]);
    let vols: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    assert_eq!(vols.len(), 3, "10 MiB in 5 MiB volumes");
    let v: Vec<&str> = vols.iter().map(|p| p.to_str().unwrap()).collect();
    let before = snapshot(&lab.plant);
    let dry = |volumes: &[&str], extra: &[&str]| {
        let mut args = vec!["import", "--dry-run"];
        args.extend_from_slice(extra);
        args.push("--volumes");
        args.extend_from_slice(volumes);
        gs(&lab.plant, &args)
    };

    let r = dry(&v[..1], &[]).fails(1, "volumes 2 and 3 of this 3-volume bundle not given");
    assert!(
        r.stderr.contains("--plan-from-first-volume"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "no plan: {}", r.stdout);
    dry(&v[..2], &[]).fails(1, "volume 3 of this 3-volume bundle not given");
    // A bundle folder with only its first volume copied.
    let partial = lab.root.join("partial");
    copy_tree(&b, &partial);
    fs::remove_dir_all(partial.join("vol-002")).unwrap();
    fs::remove_dir_all(partial.join("vol-003")).unwrap();
    gs(
        &lab.plant,
        &["import", partial.to_str().unwrap(), "--dry-run"],
    )
    .fails(1, "volumes 2 and 3");
    let j = gs(
        &lab.plant,
        &[
            "import",
            partial.to_str().unwrap(),
            "--dry-run",
            "--plan-from-first-volume",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["plan"]["volumes_missing"], serde_json::json!([2, 3]));
    // Volumes given in the wrong order are not the volumes asked for.
    dry(&[v[0], v[2], v[1]], &[]).fails(3, "[wrong-volume]");
    // Without --dry-run the flag is a usage error.
    let r = gs(
        &lab.plant,
        &["import", "--plan-from-first-volume", "--volumes", v[0]],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--dry-run"), "{}", r.stderr);

    // Planned from volume 1 alone: said in the text and the JSON.
    let r = dry(&v[..1], &["--plan-from-first-volume"]).ok();
    assert!(
        r.stdout.contains("planned from volume 1 alone")
            && r.stdout.contains("volumes 2 and 3 of 3 not given"),
        "{}",
        r.stdout
    );
    let j = dry(&v[..1], &["--plan-from-first-volume", "--json"])
        .ok()
        .json();
    assert_eq!(j["status"], "dry-run");
    assert_eq!(j["plan"]["volumes"], 3);
    assert_eq!(j["plan"]["volumes_missing"], serde_json::json!([2, 3]));
    assert_eq!(j["plan"]["content_bytes"], 10 << 20);
    // Every volume given: the whole plan, every header checked.
    let r = dry(&v, &[]).ok();
    assert!(!r.stdout.contains("planned from volume 1"), "{}", r.stdout);
    let j = dry(&v, &["--json"]).ok().json();
    assert_eq!(j["plan"]["volumes_missing"], serde_json::json!([]));
    let checks = j["checks"].to_string();
    assert!(checks.contains("volume 3: signature valid"), "{checks}");
    assert_eq!(snapshot(&lab.plant), before, "a dry run changed the store");
    assert!(tree(&lab.plant.join("content")).is_empty());

    let mut args = vec!["import", "--volumes"];
    args.extend_from_slice(&v);
    gs(&lab.plant, &args).ok();
    lab.assert_equal();
}

#[test]
fn stock_tools_verify_a_bundle() {
    let mut lab = Chain::new("3M");
    let b = lab.export(&[]);
    let run = |cmd: &mut Command| {
        let out = cmd
            .current_dir(&b)
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install minisign and zstd)"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let m = run(Command::new("minisign")
        .args(["-V", "-p"])
        .arg(&lab.pubkey)
        .args(["-m", "SHA256SUMS"]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert!(
        m.contains(&format!(
            "gapsync bundle {} seq 1",
            manifest["bundle_id"].as_str().unwrap()
        )),
        "{m}"
    );
    let sums = run(Command::new("sha256sum").args(["-c", "SHA256SUMS"]));
    assert_eq!(
        sums.matches(": OK").count(),
        fs::read_to_string(b.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .count()
    );
    let listing = run(Command::new("tar").args(["--zstd", "-tf", "metadata.tar.zst"]));
    assert!(listing.starts_with("state.json\n"));
    let extract = lab.root.join("extracted");
    fs::create_dir_all(&extract).unwrap();
    run(Command::new("tar")
        .args(["--zstd", "-xf", "metadata.tar.zst", "-C"])
        .arg(&extract));
    let first_xml = listing
        .lines()
        .find(|l| l.starts_with("revisions/"))
        .unwrap();
    let id = first_xml
        .trim_start_matches("revisions/")
        .split("-r")
        .next()
        .unwrap();
    assert_eq!(
        fs::read(extract.join(first_xml)).unwrap(),
        gs(&lab.hq, &["updates", "show", id, "--xml"])
            .ok()
            .stdout
            .into_bytes()
    );
    // Every content file is listed, and so checked by sha256sum.
    let index = content_index(&b);
    assert!(!index.is_empty());
    for c in &index {
        let file = format!("content/{}", c["path"].as_str().unwrap());
        assert!(sums.contains(&format!("{file}: OK")), "{file}: {sums}");
    }
    // Tampering makes the stock tools fail too.
    flip_byte(&b.join(first_content_file(&b)), 1000);
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `content.json` of a single-volume bundle.
fn content_index(b: &Path) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&fs::read(b.join("content.json")).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The bundle file holding the first part of the first content file.
fn first_content_file(b: &Path) -> String {
    content_index(b)[0]["parts"][0]["file"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A bundle's `content/` folder copied into a fresh folder is a WSUS
/// content folder: every file named `XX/<SHA-1>.ext` after its own SHA-1
/// (`XX` its last two digits), with the SHA-256 the update metadata gives,
/// and every content file the bundle carries is there.
#[test]
fn a_bundles_content_folder_is_a_wsus_content_folder() {
    use sha1::Digest as _;
    let mut lab = Chain::new("6M");
    let b = lab.export(&[]);
    let wsus = lab.root.join("WsusContent");
    copy_tree(&b.join("content"), &wsus);
    let files = tree(&wsus);
    let index = content_index(&b);
    assert!(files.len() >= 2, "{} files", files.len());
    assert_eq!(files.len(), index.len());
    let db = rusqlite::Connection::open_with_flags(
        lab.hq.join("gapsync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut with_metadata_sha256 = 0;
    for (rel, data) in &files {
        let (dir, name) = rel.split_once('/').unwrap();
        let sha1 = hex::encode_upper(sha1::Sha1::digest(data));
        let stem = name.split('.').next().unwrap();
        assert_eq!(stem, sha1, "{rel} is named after its SHA-1");
        assert_eq!(dir, &sha1[38..], "{rel} sits under its last two digits");
        let sha256 = hex::encode(sha2::Sha256::digest(data));
        let meta: Option<Vec<u8>> = db
            .query_row(
                "SELECT sha256 FROM files WHERE sha1 = ?1 AND sha256 IS NOT NULL",
                [hex::decode(&sha1).unwrap()],
                |r| r.get(0),
            )
            .ok();
        if let Some(m) = meta {
            assert_eq!(hex::encode(m), sha256, "{rel}: the metadata's SHA-256");
            with_metadata_sha256 += 1;
        }
        let rec = index
            .iter()
            .find(|c| c["sha1"] == sha1.as_str())
            .unwrap_or_else(|| panic!("{rel} is in content.json"));
        assert_eq!(rec["sha256"], sha256.as_str());
        assert_eq!(
            fs::read(lab.hq.join("content").join(rel)).unwrap(),
            *data,
            "{rel}: the exporter's file"
        );
    }
    assert!(
        with_metadata_sha256 > 0,
        "the generated metadata has SHA-256s"
    );
    lab.import(&b).ok();
    lab.assert_equal();
}

/// The exporter never sends bytes that differ from what its store
/// recorded: a stored content file changed on disk (a byte flipped, or cut
/// short) stops the export, naming the file; no bundle and no ledger trace
/// are left, and the export succeeds once the file is repaired.
#[test]
fn a_corrupted_store_file_stops_the_export() {
    let mut lab = Chain::new("2M");
    let (rel, data) = tree(&lab.hq.join("content")).remove(0);
    let stored = lab.hq.join("content").join(&rel);
    for (what, bad, needle) in [
        (
            "flipped",
            {
                let mut d = data.clone();
                let mid = d.len() / 2;
                d[mid] ^= 1;
                d
            },
            "SHA-256",
        ),
        ("short", data[..data.len() - 1].to_vec(), "size"),
    ] {
        fs::write(&stored, &bad).unwrap();
        let out = lab.root.join(format!("corrupt-{what}"));
        let r = gs(
            &lab.hq,
            &[
                "export",
                "--key",
                lab.key.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--to",
                "plant",
            ],
        );
        assert_ne!(r.code, 0, "{what}: exported");
        assert!(
            r.stderr.contains(needle) && r.stderr.contains(&rel),
            "{what}: {}",
            r.stderr
        );
        assert!(!out.exists(), "{what}: a bundle was left");
    }
    fs::write(&stored, &data).unwrap();
    let b = lab.export(&[]);
    assert_eq!(
        manifest_of(&b)["seq"],
        1,
        "the failed exports left no ledger trace"
    );
    lab.import(&b).ok();
    lab.assert_equal();
}

#[test]
fn verify_needs_no_store_and_names_failures() {
    let mut lab = Chain::new("1M");
    let b = lab.export(&[]);
    let r = gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(r["seq"], 1);
    assert!(r["checks"].as_array().unwrap().len() >= 4);
    // With --server: its chain position is checked too.
    let r = gs(&lab.plant, &["verify", b.to_str().unwrap()]).ok().stdout;
    assert!(
        r.contains("chain position") && r.contains("the first link"),
        "{r}"
    );
    // An untrusted key.
    let other = lab.root.join("other");
    gs_plain(&["key", "generate", "--out", other.to_str().unwrap()]).ok();
    gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        other.with_extension("pub").to_str().unwrap(),
    ])
    .fails(3, "[unknown-key]");
    flip_byte(&b.join("metadata.tar.zst"), 100);
    gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .fails(3, "metadata.tar.zst");
    gs_plain(&["verify", b.to_str().unwrap()]).fails(2, "--trust");
}

/// Bundles of format version 1 (content in tar packs), as earlier
/// gapsync wrote them and media may still hold, verify and import: single
/// and multi-volume (a file split over volumes), and a damaged pack or a
/// pack entry rebuilt out of order is refused.
#[test]
fn format_1_bundles_still_verify_and_import() {
    let mut lab = Chain::new("6M");
    lab.format_1 = true;
    let b = lab.export(&[]);
    assert_eq!(manifest_of(&b)["version"], 1);
    assert!(b.join("content-001.tar").is_file());
    assert!(!b.join("content").exists());
    let trust = lab.pubkey.to_str().unwrap().to_string();
    gs_plain(&["verify", b.to_str().unwrap(), "--trust", &trust]).ok();
    let damaged = lab.root.join("v1-damaged");
    copy_tree(&b, &damaged);
    flip_byte(&damaged.join("content-001.tar"), 4096);
    gs_plain(&["verify", damaged.to_str().unwrap(), "--trust", &trust]).fails(3, "[hash-mismatch]");
    lab.refused(&damaged, "hash-mismatch");
    // A format-3 layout inside a version-1 bundle is not its content.
    let mixed = lab.root.join("v1-content-folder");
    copy_tree(&b, &mixed);
    fs::create_dir_all(mixed.join("content/00")).unwrap();
    fs::write(mixed.join("content/00/X.cab"), b"x").unwrap();
    resign(&mixed, &lab.key, |_| {});
    lab.refused(&mixed, "extra-file");
    lab.import(&b).ok();
    lab.assert_equal();

    // Multi-volume, a file split over volumes.
    let mut lab = Chain::new("12M");
    lab.format_1 = true;
    let b = lab.export(&["--volume-size", "3M"]);
    let trust = lab.pubkey.to_str().unwrap().to_string();
    assert_eq!(manifest_of(&b)["version"], 1);
    assert!(b.join("vol-002/content-002.tar").is_file());
    gs_plain(&["verify", b.to_str().unwrap(), "--trust", &trust]).ok();
    lab.import(&b).ok();
    lab.assert_equal();
    gs(&lab.plant, &["check"]).ok();
}

#[test]
fn rule_unknown_key() {
    let mut lab = Chain::new("1M");
    let other = lab.root.join("stranger");
    gs_plain(&["key", "generate", "--out", other.to_str().unwrap()]).ok();
    lab.key = other.with_extension("key");
    let b = lab.export(&[]);
    lab.refused(&b, "unknown-key");
}

#[test]
fn rule_unsupported_version() {
    let mut lab = Chain::new("1M");
    let b = lab.export(&[]);
    // A later version may add fields; it is still named as a version problem.
    resign_json(&b, &lab.key, |m| {
        m["version"] = serde_json::json!(gapsync::airgap::format::NEWEST_VERSION + 1);
        m["new_field"] = serde_json::json!(1);
    });
    lab.refused(&b, "unsupported-version");
}

#[test]
fn rule_bad_signature() {
    let mut lab = Chain::new("1M");
    let b = lab.export(&[]);
    // Change SHA256SUMS (re-point one digest) without re-signing.
    let sums = fs::read_to_string(b.join("SHA256SUMS")).unwrap();
    let first = sums.chars().next().unwrap();
    let swapped = if first == '0' { '1' } else { '0' };
    fs::write(b.join("SHA256SUMS"), format!("{swapped}{}", &sums[1..])).unwrap();
    lab.refused(&b, "bad-signature");
}

#[test]
fn rule_hash_mismatch_in_every_file() {
    let mut lab = Chain::new("6M");
    let b = lab.export(&[]);
    let content = first_content_file(&b);
    for name in [
        content.as_str(),
        "metadata.tar.zst",
        "content.json",
        "manifest.json",
    ] {
        let copy = lab
            .root
            .join(format!("tampered-{}", name.replace('/', "-")));
        copy_tree(&b, &copy);
        let len = fs::metadata(copy.join(name)).unwrap().len() as usize;
        flip_byte(&copy.join(name), len / 2);
        lab.refused(&copy, "hash-mismatch");
    }
    // Truncated and appended.
    let copy = lab.root.join("truncated");
    copy_tree(&b, &copy);
    let data = fs::read(copy.join(&content)).unwrap();
    fs::write(copy.join(&content), &data[..data.len() - 512]).unwrap();
    lab.refused(&copy, "hash-mismatch");
    let copy = lab.root.join("appended");
    copy_tree(&b, &copy);
    let mut data = fs::read(copy.join(&content)).unwrap();
    data.extend_from_slice(&[0u8; 512]);
    fs::write(copy.join(&content), data).unwrap();
    lab.refused(&copy, "hash-mismatch");
    // Two content files' bytes swapped (each under the other's name).
    let second = content_index(&b)[1]["parts"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = lab.root.join("swapped");
    copy_tree(&b, &copy);
    fs::rename(copy.join(&content), copy.join("x")).unwrap();
    fs::rename(copy.join(&second), copy.join(&content)).unwrap();
    fs::rename(copy.join("x"), copy.join(&second)).unwrap();
    lab.refused(&copy, "hash-mismatch");
    lab.import(&b).ok();
}

#[test]
fn rule_missing_and_extra_files() {
    let mut lab = Chain::new("1M");
    let b = lab.export(&[]);
    let missing = lab.root.join("missing");
    copy_tree(&b, &missing);
    fs::remove_file(missing.join("content.json")).unwrap();
    lab.refused(&missing, "missing-file");
    let extra = lab.root.join("extra");
    copy_tree(&b, &extra);
    fs::write(extra.join("readme.txt"), "hello").unwrap();
    lab.refused(&extra, "extra-file");
    let nosig = lab.root.join("nosig");
    copy_tree(&b, &nosig);
    fs::remove_file(nosig.join("SHA256SUMS.minisig")).unwrap();
    lab.refused(&nosig, "missing-file");
}

#[test]
fn rule_expired_and_the_loud_override() {
    let mut lab = Chain::new("1M");
    let b = lab.export(&[]);
    resign(&b, &lab.key, |m| {
        m.created = "2026-01-01T00:00:00Z".into();
        m.expires = "2026-01-31T00:00:00Z".into();
    });
    lab.refused(&b, "expired");
    let r = gs(
        &lab.plant,
        &["import", b.to_str().unwrap(), "--allow-expired"],
    )
    .ok();
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("EXPIRED"),
        "{}",
        r.stderr
    );
    // Created in the future is refused as well.
    let b2 = lab.export(&["--full"]);
    resign(&b2, &lab.key, |m| m.created = "2099-01-01T00:00:00Z".into());
    lab.refused(&b2, "not-yet-valid");
}

#[test]
fn rules_replay_gap_fork_and_rebase() {
    let mut lab = Chain::new("1M");
    let b1 = lab.export(&[]);
    gs(&lab.hq, &["groups", "add", "G2"]).ok();
    // Keep a copy of the connected store as it is now, to fork the chain.
    let fork_store = lab.root.join("hq-copy");
    copy_tree(&lab.hq, &fork_store);
    let b2 = lab.export(&[]);
    gs(&lab.hq, &["groups", "add", "G3"]).ok();
    let b3 = lab.export(&[]);

    // Gap: an incremental bundle first, or a link skipped.
    lab.refused(&b2, "gap");
    lab.import(&b1).ok();
    lab.refused(&b3, "gap");
    lab.import(&b2).ok();

    // Fork: another bundle with seq 2 (exported from the copy).
    let b2x = lab.root.join("bundle-2x");
    gs(&fork_store, &["groups", "add", "Other"]).ok();
    gs(
        &fork_store,
        &[
            "export",
            "--key",
            lab.key.to_str().unwrap(),
            "--out",
            b2x.to_str().unwrap(),
            "--to",
            "plant",
        ],
    )
    .ok();
    lab.refused(&b2x, "fork");
    lab.import(&b3).ok();

    // Rebase: a full bundle onto a store that follows the chain.
    let b4 = lab.export(&["--full"]);
    lab.refused(&b4, "rebase-required");
    let r = gs(
        &lab.plant,
        &["import", b4.to_str().unwrap(), "--rebase", "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["chain"], "rebase");
    lab.assert_equal();

    // Replay: older links after the rebase.
    let fresh_down = lab.root.join("plant2");
    gs_plain(&[
        "init",
        fresh_down.to_str().unwrap(),
        "--name",
        "plant2",
        "--mode",
        "replica",
    ])
    .ok();
    gs(&fresh_down, &["trust", "add", lab.pubkey.to_str().unwrap()]).ok();
    gs(&fresh_down, &["import", b4.to_str().unwrap()]).ok();
    let before = snapshot(&fresh_down);
    gs(&fresh_down, &["import", b2.to_str().unwrap()]).fails(3, "[replay]");
    gs(&fresh_down, &["import", b1.to_str().unwrap()]).fails(3, "[replay]");
    assert_eq!(snapshot(&fresh_down), before);
}

#[test]
fn rule_content_must_match_update_metadata_even_when_signed() {
    let mut lab = Chain::new("2M");
    let b = lab.export(&[]);
    // A trusted exporter gone wrong: content bytes changed, its index
    // and SHA256SUMS made to agree, bundle re-signed.
    let mut index = content_index(&b);
    let file = first_content_file(&b);
    let size = index[0]["size"].as_u64().unwrap() as usize;
    flip_byte(&b.join(&file), size / 2);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(fs::read(b.join(&file)).unwrap()))
    };
    index[0]["sha256"] = serde_json::json!(digest);
    index[0]["parts"][0]["sha256"] = serde_json::json!(digest);
    fs::write(b.join("content.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    resign(&b, &lab.key, |_| {});
    gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .ok();
    lab.refused(&b, "content-mismatch");
}

#[test]
fn imports_are_exclusive_and_interrupted_imports_complete_on_rerun() {
    let mut lab = Chain::new("2M");
    let b = lab.export(&[]);
    {
        let _held = gapsync::store::Store::open_writer(&lab.plant).unwrap();
        lab.import(&b).fails(1, "locked");
    }
    for point in ["import-before-content-rename", "import-before-commit"] {
        let before = snapshot_db(&lab.plant);
        let r = gs_env(
            &lab.plant,
            &["import", b.to_str().unwrap()],
            &[("GAPSYNC_FAILPOINT", point)],
        );
        assert_ne!(r.code, 0, "{point}");
        assert!(r.stderr.contains(point), "{}", r.stderr);
        assert_eq!(snapshot_db(&lab.plant), before, "{point}: the old state");
        // At most complete, verified files without a database row (a crash
        // after they were moved in), which the re-run adopts.
        content_files_are_whole(&lab.plant);
    }
    lab.import(&b).ok();
    lab.assert_equal();
}

#[test]
fn volumes_split_big_files_verify_alone_and_import_in_sequence() {
    let mut lab = Chain::new("24M");
    let b = lab.export(&["--volume-size", "5M"]);
    let vols: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    assert!(vols.len() >= 5, "24 MiB in 5 MiB volumes: {}", vols.len());
    for v in &vols {
        let size: u64 = tree(v).iter().map(|(_, d)| d.len() as u64).sum();
        assert!(size <= 5 << 20, "{} is {size} bytes", v.display());
        // Each volume verifies alone with stock minisign.
        let out = Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&lab.pubkey)
            .args(["-m", "SHA256SUMS"])
            .current_dir(v)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(vols[0].join("content.json")).unwrap()).unwrap();
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["parts"].as_array().unwrap().len() > 1),
        "a file larger than a volume is split"
    );
    gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .ok();

    // A missing volume is named.
    let some: Vec<&str> = vols[..vols.len() - 1]
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect();
    let mut args = vec!["import", "--volumes"];
    args.extend(&some);
    gs(&lab.plant, &args).fails(3, &format!("volume {}", vols.len()));

    // A damaged volume is named: a part of a split file in volume 2.
    let damaged = lab.root.join("damaged");
    copy_tree(&b, &damaged);
    let vol2 = damaged.join("vol-002");
    let (part, _) = tree(&vol2)
        .into_iter()
        .find(|(rel, _)| rel.starts_with("parts/"))
        .expect("volume 2 holds a part of a split file");
    flip_byte(&vol2.join(&part), 4096);
    gs_plain(&[
        "verify",
        damaged.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .fails(3, "[hash-mismatch]")
    .fails(3, &format!("vol-002/{part}"));
    lab.refused(&damaged, "hash-mismatch");
    // So is a part missing from its volume.
    let gone = lab.root.join("part-missing");
    copy_tree(&b, &gone);
    fs::remove_file(gone.join("vol-002").join(&part)).unwrap();
    lab.refused(&gone, "missing-file");

    // Import from the volumes one after another.
    let all: Vec<&str> = vols.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["import", "--volumes"];
    args.extend(&all);
    gs(&lab.plant, &args).ok();
    lab.assert_equal();

    // Volumes of another bundle mixed in are refused.
    gs(&lab.hq, &["groups", "add", "X"]).ok();
    let other = lab.export(&["--full", "--volume-size", "5M"]);
    let mixed = lab.root.join("mixed");
    copy_tree(&b, &mixed);
    fs::remove_dir_all(mixed.join("vol-002")).unwrap();
    copy_tree(&other.join("vol-002"), &mixed.join("vol-002"));
    gs_plain(&[
        "verify",
        mixed.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .fails(3, "[mixed-volumes]");
}

#[test]
fn key_rotation_and_revocation_travel_in_bundles() {
    let mut lab = Chain::new("1M");
    let b1 = lab.export(&[]);
    lab.import(&b1).ok();
    // Introduce k2, signed by the trusted k1; the next bundle carries it.
    let k2 = lab.root.join("k2");
    gs_plain(&["key", "generate", "--out", k2.to_str().unwrap()]).ok();
    gs(
        &lab.hq,
        &[
            "trust",
            "statement",
            "--key",
            lab.key.to_str().unwrap(),
            "--add",
            k2.with_extension("pub").to_str().unwrap(),
            "--label",
            "k2",
        ],
    )
    .ok();
    // Sign that bundle already with the new key: the statement vouches for it.
    let k1 = lab.key.clone();
    lab.key = k2.with_extension("key");
    let b2 = lab.export(&[]);
    assert!(b2.join("trust/0001.json").is_file());
    // A statement swapped on the media (here: another one, validly signed by
    // the trusted k1) is refused: the bundle's SHA256SUMS fixes the bytes.
    let side = lab.root.join("side-store");
    gs_plain(&["init", side.to_str().unwrap()]).ok();
    gs(
        &side,
        &[
            "trust",
            "statement",
            "--key",
            k1.to_str().unwrap(),
            "--add",
            k2.with_extension("pub").to_str().unwrap(),
            "--label",
            "other",
        ],
    )
    .ok();
    gs(
        &side,
        &[
            "export",
            "--key",
            k1.to_str().unwrap(),
            "--out",
            lab.root.join("side-bundle").to_str().unwrap(),
        ],
    )
    .ok();
    let swapped = lab.root.join("swapped-statement");
    copy_tree(&b2, &swapped);
    for f in ["trust/0001.json", "trust/0001.json.minisig"] {
        fs::copy(lab.root.join("side-bundle").join(f), swapped.join(f)).unwrap();
    }
    lab.refused(&swapped, "hash-mismatch");
    // A verifier that trusts only k1 accepts it through the statement.
    gs_plain(&[
        "verify",
        b2.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
    ])
    .ok();
    lab.import(&b2).ok();
    let keys = gs(&lab.plant, &["trust", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // k2 revokes k1; bundles signed by k1 are refused from then on.
    let k1_id = gs_plain(&[
        "verify",
        b1.to_str().unwrap(),
        "--trust",
        lab.pubkey.to_str().unwrap(),
        "--json",
    ])
    .ok()
    .json()["signer"]
        .as_str()
        .unwrap()
        .to_string();
    gs(
        &lab.hq,
        &[
            "trust",
            "statement",
            "--key",
            lab.key.to_str().unwrap(),
            "--revoke",
            &k1_id,
        ],
    )
    .ok();
    let b3 = lab.export(&[]);
    lab.import(&b3).ok();
    let keys = gs(&lab.plant, &["trust", "list", "--json"]).ok().json();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == k1_id.as_str() && k["revoked"] == true),
        "{keys}"
    );
    // The exporter refuses to sign with k1 from then on (the bundle would
    // be refused everywhere), and changes nothing.
    gs(&lab.hq, &["groups", "add", "After"]).ok();
    let refused_out = lab.root.join("signed-by-revoked");
    let exports_before = gs(&lab.hq, &["exports", "list", "--json"]).ok().stdout;
    gs(
        &lab.hq,
        &[
            "export",
            "--key",
            k1.to_str().unwrap(),
            "--out",
            refused_out.to_str().unwrap(),
            "--to",
            "plant",
        ],
    )
    .fails(1, "revoked by queued trust statement 2");
    assert!(!refused_out.exists());
    assert_eq!(
        gs(&lab.hq, &["exports", "list", "--json"]).ok().stdout,
        exports_before
    );
    // A bundle signed by k1 elsewhere (the side store, which never heard of
    // the revocation and carries no statement this time) is refused.
    gs(&side, &["groups", "add", "After"]).ok();
    let b4 = lab.root.join("side-bundle-2");
    gs(
        &side,
        &[
            "export",
            "--key",
            k1.to_str().unwrap(),
            "--out",
            b4.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(!b4.join("trust").exists());
    lab.refused(&b4, "revoked-key");
}

#[test]
fn filters_and_content_modes() {
    let mut lab = Chain::new("4M");
    // Content only for approved updates; metadata only for one classification.
    let b = lab.export(&[
        "--content",
        "approved",
        "--classification",
        "0fa1201d-4330-4fa8-8ae9-b877473b6441",
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["filters"]["content"], "approved");
    assert_eq!(
        m["filters"]["classifications"][0],
        "0fa1201d-4330-4fa8-8ae9-b877473b6441"
    );
    let total = gs(&lab.hq, &["status", "--json"]).ok().json()["revisions"]
        .as_u64()
        .unwrap();
    assert!(
        m["counts"]["revisions"].as_u64().unwrap() < total,
        "the filter narrows the metadata"
    );
    lab.import(&b).ok();
    // A later export with other filters must start a new chain explicitly.
    gs(
        &lab.hq,
        &[
            "export",
            "--key",
            lab.key.to_str().unwrap(),
            "--out",
            lab.root.join("x").to_str().unwrap(),
            "--to",
            "plant",
        ],
    )
    .fails(1, "filters differ");
    let none = lab.export(&["--full", "--content", "none"]);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(none.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["counts"]["content_files"], 0);
}

#[test]
fn volumes_can_arrive_one_at_a_time_at_one_mount_point() {
    use gapsync::airgap::format::Layout;
    use gapsync::airgap::import::{ImportOptions, import};
    let mut lab = Chain::new("12M");
    let b = lab.export(&["--volume-size", "5M"]);
    let mut vols: Vec<PathBuf> = fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    vols.sort();
    assert!(vols.len() >= 3);
    // The "drive": volume 1 is inserted; each prompt swaps in the volume asked for.
    let mount = lab.root.join("mnt");
    copy_tree(&vols[0], &mount);
    let asked = std::cell::RefCell::new(Vec::new());
    let swap = |v: u32, at: &Path| -> bool {
        asked.borrow_mut().push(v);
        fs::remove_dir_all(at).unwrap();
        copy_tree(&vols[v as usize - 1], at);
        true
    };
    let mut store = gapsync::store::Store::open_writer(&lab.plant).unwrap();
    let r = import(
        &mut store,
        &ImportOptions {
            layout: Layout::from_volumes(std::slice::from_ref(&mount)),
            dry_run: false,
            plan_from_first_volume: false,
            allow_expired: false,
            rebase: false,
            prompt: Some(&swap),
        },
        &gapsync::progress::Silent,
    )
    .unwrap();
    drop(store);
    assert_eq!(r.status, "imported");
    assert_eq!(*asked.borrow(), (2..=vols.len() as u32).collect::<Vec<_>>());
    lab.assert_equal();
}

#[test]
fn language_filter_keeps_neutral_and_selected_language_updates() {
    let (t, up) = new_store("hq", "autonomous");
    let docs = t.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    let with_lang = |id: &str, lang: Option<&str>| {
        let x = update_xml(id, 1, "Software", id, &[], &[]);
        match lang {
            Some(l) => x.replace(
                "></upd:Properties>",
                &format!("><upd:Language>{l}</upd:Language></upd:Properties>"),
            ),
            None => x,
        }
    };
    for (id, lang) in [
        ("dddddddd-0000-0000-0000-00000000000d", Some("de")),
        ("ffffffff-0000-0000-0000-00000000000f", Some("fr")),
        ("eeeeeeee-0000-0000-0000-00000000000e", None),
    ] {
        fs::write(docs.join(format!("{id}.xml")), with_lang(id, lang)).unwrap();
    }
    gs(&up, &["catalog", "add", docs.to_str().unwrap()]).ok();
    let key = t.path().join("k");
    gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    let b = t.path().join("b");
    gs(
        &up,
        &[
            "export",
            "--key",
            key.with_extension("key").to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--language",
            "DE",
        ],
    )
    .ok();
    let listing = Command::new("tar")
        .args(["--zstd", "-tf"])
        .arg(b.join("metadata.tar.zst"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("dddddddd-0000-0000-0000-00000000000d-r1.xml"),
        "{listing}"
    );
    assert!(
        listing.contains("eeeeeeee-0000-0000-0000-00000000000e-r1.xml"),
        "language-neutral stays: {listing}"
    );
    assert!(
        !listing.contains("ffffffff"),
        "French-only update filtered out: {listing}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["filters"]["languages"][0], "de");
}

#[test]
fn lost_bundles_are_replaced_by_an_export_since_the_last_applied_anchor() {
    let mut lab = Chain::new("2M");
    let b1 = lab.export(&[]);
    lab.import(&b1).ok();
    // Two links are exported but lost on the way.
    gs(
        &lab.hq,
        &[
            "catalog",
            "generate",
            "--updates",
            "10",
            "--content-bytes",
            "1M",
            "--seed",
            "2",
        ],
    )
    .ok();
    let _lost2 = lab.export(&[]);
    gs(&lab.hq, &["groups", "add", "Lost"]).ok();
    let _lost3 = lab.export(&[]);
    let links = gs(&lab.hq, &["exports", "list", "--json"]).ok().json();
    assert_eq!(links.as_array().unwrap().len(), 3);
    // The disconnected side says where it stands.
    let applied = gs(&lab.plant, &["imports", "list", "--json"]).ok().json();
    let anchor = applied[0]["to_anchor"].as_str().unwrap().to_string();
    assert_eq!(applied[0]["seq"], 1);
    // A new link from there replaces the lost ones, content included.
    let again = lab.export(&["--since", &anchor, "--json"]);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(again.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["seq"], 2);
    assert_eq!(m["from_anchor"], anchor.as_str());
    assert_eq!(
        m["counts"]["content_bytes"],
        1 << 20,
        "content sent in the lost links travels again"
    );
    lab.import(&again).ok();
    lab.assert_equal();
    // And the chain goes on from the new link.
    gs(&lab.hq, &["groups", "add", "After"]).ok();
    let next = lab.export(&[]);
    lab.import(&next).ok();
    lab.assert_equal();
    assert_eq!(
        gs(&lab.hq, &["exports", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // An anchor that ends no exported link is refused with a pointer.
    gs(&lab.hq, &["groups", "add", "Z"]).ok();
    let head = gs(&lab.hq, &["status", "--json"]).ok().json()["anchor"]
        .as_str()
        .unwrap()
        .to_string();
    let out = lab.root.join("x");
    gs(
        &lab.hq,
        &[
            "export",
            "--key",
            lab.key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--to",
            "plant",
            "--since",
            &head,
        ],
    )
    .fails(1, "exports list");
    assert!(!out.exists());
}

/// No `.NAME.partial-*` export folder is left in `dir`.
fn assert_no_partial(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(left.is_empty(), "partial export folders left: {left:?}");
}

/// The manifest of a bundle as JSON.
fn manifest_of(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(bundle.join("manifest.json")).unwrap()).unwrap()
}

/// The `to_anchor` the disconnected side applied last, as `imports list`
/// shows it.
fn last_applied_anchor(lab: &Lab) -> String {
    let applied = gs(&lab.plant, &["imports", "list", "--json"]).ok().json();
    let last = applied.as_array().unwrap().last().unwrap().clone();
    last["to_anchor"].as_str().unwrap().to_string()
}

/// The same anchor with the server id written as `status` prints it
/// (hyphenated GUID).
fn dashed(anchor: &str) -> String {
    let parts: Vec<&str> = anchor.split(':').collect();
    let id = uuid::Uuid::parse_str(parts[1])
        .unwrap()
        .hyphenated()
        .to_string();
    format!("{}:{id}:{}", parts[0], parts[2])
}

/// Issue 9: a full bundle (seq 1, ends at A), an empty link (seq 2, A to A),
/// a change and the next link (seq 3, A to B). Whichever of seq 2 and seq 3
/// is lost, `export --since A` (A as `imports list` shows it) makes a link
/// the disconnected side applies, and the chain goes on after it.
#[test]
fn export_since_continues_after_a_lost_empty_link_or_the_link_after_it() {
    // Format 1 too: the old writer makes such a link a version-2 bundle,
    // which this reader still applies.
    for (lost, format_1) in [(2, false), (3, false), (2, true), (3, true)] {
        let mut lab = Chain::new("1M");
        lab.format_1 = format_1;
        let b1 = lab.export(&[]);
        let b2 = lab.export(&["--allow-empty"]);
        let m1 = manifest_of(&b1);
        let m2 = manifest_of(&b2);
        assert_eq!(m2["from_anchor"], m1["to_anchor"]);
        assert_eq!(
            m2["to_anchor"], m1["to_anchor"],
            "an empty link ends where it starts"
        );
        gs(&lab.hq, &["groups", "add", "After-A"]).ok();
        let b3 = lab.export(&[]);
        lab.import(&b1).ok();
        if lost == 3 {
            lab.import(&b2).ok();
        } else {
            // Without seq 2, seq 3 is a gap.
            lab.refused(&b3, "gap");
        }
        let anchor = last_applied_anchor(&lab);
        assert_eq!(anchor, m1["to_anchor"].as_str().unwrap());
        // The server id may be written as `status` prints it.
        let again = lab.export(&["--since", &dashed(&anchor)]);
        let m = manifest_of(&again);
        assert_eq!(m["seq"], 3, "lost {lost}");
        assert_eq!(m["from_anchor"], anchor.as_str());
        assert_eq!(
            m["version"],
            if format_1 { 2 } else { 3 },
            "it names an equivalent link"
        );
        assert_eq!(m1["version"], if format_1 { 1 } else { 3 });
        let digest = |b: &Path| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(
                fs::read(b.join("manifest.json")).unwrap(),
            ))
        };
        assert_eq!(m["prev_manifest_sha256"], digest(&b2).as_str());
        assert_eq!(
            m["prev_equivalent_sha256"],
            serde_json::json!([digest(&b1)]),
            "lost {lost}"
        );
        assert_eq!(m["counts"]["groups"], 1, "the change since A travels again");
        let r = lab.import(&again).ok().json();
        assert_eq!(r["status"], "imported", "lost {lost}");
        lab.assert_equal();
        // The bundle it replaced is refused now, as a fork of seq 3.
        lab.refused(&b3, "fork");
        // The chain goes on.
        gs(&lab.hq, &["groups", "add", "Later"]).ok();
        let b4 = lab.export(&[]);
        assert_eq!(manifest_of(&b4)["seq"], 4);
        assert_eq!(manifest_of(&b4)["version"], if format_1 { 1 } else { 3 });
        lab.import(&b4).ok();
        lab.assert_equal();
        let links = gs(&lab.hq, &["exports", "list", "--json"]).ok().json();
        let seqs: Vec<i64> = links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        gs(&lab.plant, &["check"]).ok();
        gs(&lab.hq, &["check"]).ok();
    }
}

/// `export --since` carries again the trust statements that the links it
/// replaces (or the equivalent links after the first) carried: here a key
/// introduction that rode in an otherwise empty link which was lost.
#[test]
fn export_since_carries_again_the_trust_statements_of_lost_links() {
    let mut lab = Chain::new("0");
    let b1 = lab.export(&[]);
    lab.import(&b1).ok();
    let k2 = lab.root.join("k2");
    gs_plain(&["key", "generate", "--out", k2.to_str().unwrap()]).ok();
    gs(
        &lab.hq,
        &[
            "trust",
            "statement",
            "--key",
            lab.key.to_str().unwrap(),
            "--add",
            k2.with_extension("pub").to_str().unwrap(),
            "--label",
            "k2",
        ],
    )
    .ok();
    // Nothing changed but the statement: not an empty link.
    let lost = lab.export(&[]);
    assert_eq!(manifest_of(&lost)["counts"]["trust_statements"], 1);
    assert_eq!(
        manifest_of(&lost)["to_anchor"],
        manifest_of(&b1)["to_anchor"]
    );
    gs(&lab.hq, &["groups", "add", "After"]).ok();
    let anchor = last_applied_anchor(&lab);
    lab.key = k2.with_extension("key");
    let again = lab.export(&["--since", &anchor]);
    let m = manifest_of(&again);
    assert_eq!(m["counts"]["trust_statements"], 1, "{m}");
    assert!(again.join("trust/0001.json").is_file());
    // Signed with the new key: accepted because the statement travels with it.
    lab.import(&again).ok();
    let keys = gs(&lab.plant, &["trust", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    lab.assert_equal();
    // Once carried in the new chain, it is not carried again.
    gs(&lab.hq, &["groups", "add", "Later"]).ok();
    let next = lab.export(&[]);
    assert_eq!(manifest_of(&next)["counts"]["trust_statements"], 0);
    lab.import(&next).ok();
}

/// `export --since` needs a chain to continue: to a destination that never
/// received a full bundle it is refused (the importer would refuse it), and
/// an empty incremental export is refused unless `--allow-empty`; neither
/// leaves a trace.
#[test]
fn export_since_to_a_new_destination_and_empty_exports_are_refused() {
    let lab = Chain::new("0");
    let head = gs(&lab.hq, &["status", "--json"]).ok().json()["anchor"]
        .as_str()
        .unwrap()
        .to_string();
    let before = snapshot(&lab.hq);
    let out = lab.root.join("never");
    let export = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "export",
            "--key",
            lab.key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--to",
            to,
        ];
        args.extend_from_slice(extra);
        gs(&lab.hq, &args)
    };
    export("new-site", &["--since", &head]).fails(1, "must be a full one");
    assert!(!out.exists());
    assert_no_partial(&lab.root);
    assert_eq!(snapshot(&lab.hq), before);
    assert_eq!(
        gs(&lab.hq, &["exports", "list", "--json"]).ok().json(),
        serde_json::json!([])
    );
    gs(&lab.hq, &["check"]).ok();
    // A full bundle, then --since its end with nothing new: empty, refused.
    export("new-site", &[]).ok();
    let out2 = lab.root.join("empty");
    let mut args = vec![
        "export",
        "--key",
        lab.key.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--to",
        "new-site",
        "--since",
        &head,
    ];
    gs(&lab.hq, &args).fails(1, "nothing to export");
    assert!(!out2.exists());
    args.push("--allow-empty");
    gs(&lab.hq, &args).ok();
    assert_eq!(manifest_of(&out2)["from_anchor"], head.as_str());
    gs(&lab.hq, &["check"]).ok();
}

/// Issue 9: 300 generated updates with 48 MiB of content in 4 MiB volumes
/// split content files over several volumes; the space reserved for
/// `content.json` counted files, not parts, and the export failed. Every
/// volume stays within its size, and the bundle verifies and imports.
#[test]
fn content_split_over_many_volumes_fits_its_index_reservation() {
    let (tmp, up) = new_store("hq", "autonomous");
    gs(
        &up,
        &[
            "catalog",
            "generate",
            "--updates",
            "300",
            "--content-bytes",
            "48M",
            "--seed",
            "1",
        ],
    )
    .ok();
    let prefix = tmp.path().join("k");
    gs_plain(&["key", "generate", "--out", prefix.to_str().unwrap()]).ok();
    let b = tmp.path().join("b");
    let r = gs(
        &up,
        &[
            "export",
            "--key",
            prefix.with_extension("key").to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--volume-size",
            "4M",
            "--json",
        ],
    )
    .ok()
    .json();
    let volumes = r["volumes"].as_u64().unwrap();
    assert!(volumes >= 12, "{volumes}");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("vol-001/content.json")).unwrap()).unwrap();
    let parts: usize = index
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["parts"].as_array().unwrap().len())
        .sum();
    assert!(
        parts > index.as_array().unwrap().len(),
        "files are split: {parts} parts"
    );
    for v in 1..=volumes {
        let dir = b.join(format!("vol-{v:03}"));
        let size: u64 = tree(&dir).iter().map(|(_, d)| d.len() as u64).sum();
        assert!(size <= 4 << 20, "{} is {size} bytes", dir.display());
    }
    gs_plain(&[
        "verify",
        b.to_str().unwrap(),
        "--trust",
        prefix.with_extension("pub").to_str().unwrap(),
    ])
    .ok();
    let down = tmp.path().join("down");
    gs_plain(&["init", down.to_str().unwrap(), "--mode", "replica"]).ok();
    gs(
        &down,
        &[
            "trust",
            "add",
            prefix.with_extension("pub").to_str().unwrap(),
        ],
    )
    .ok();
    gs(&down, &["import", b.to_str().unwrap()]).ok();
    assert_eq!(tree(&up.join("content")), tree(&down.join("content")));
    gs(&down, &["check"]).ok();
}
