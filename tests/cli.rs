//! The admin commands and their JSON, driven through the real binary.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const DEFENDER_KB: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
const DEFINITION_UPDATES: &str = "e0789628-ce08-4437-be74-2495b842f43b";
const DEFENDER_PRODUCT: &str = "8c3fcc84-7410-4a95-8b89-a166a0190486";

fn store_with_captured_docs() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = new_store("connected", "autonomous");
    let docs = captured_docs();
    let r = gs(&dir, &["catalog", "add", docs.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(r["documents"], 9);
    assert_eq!(r["revisions_added"], 9);
    (tmp, dir)
}

#[test]
fn init_and_status_json() {
    let (_t, dir) = new_store("branch-01", "replica");
    let s = gs(&dir, &["status", "--json"]).ok().json();
    let id = s["server_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(id, id.to_lowercase());
    assert_eq!(s["name"], "branch-01");
    assert_eq!(s["mode"], "replica");
    assert_eq!(s["updates"]["total"], 0);
    for k in ["software", "driver", "category", "detectoid"] {
        assert_eq!(s["updates"][k], 0, "{k}");
    }
    assert_eq!(s["groups"], 2);
    assert_eq!(s["deployments"], 0);
    assert_eq!(s["content_files"], 0);
    assert_eq!(s["content_bytes"], 0);
    assert_eq!(
        s["anchor"].as_str().unwrap(),
        format!("gapsync1:{}:0", id.replace('-', ""))
    );
    // GAPSYNC_SERVER selects the store too.
    let out = std::process::Command::new(bin())
        .args(["status", "--json"])
        .env("GAPSYNC_SERVER", &dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    // A second init on the same folder is refused.
    gs_plain(&["init", dir.to_str().unwrap()]).fails(1, "already holds a gapsync server store");
    // Two stores get different identities.
    let (_t2, dir2) = new_store("other", "autonomous");
    assert_ne!(
        gs(&dir2, &["status", "--json"]).ok().json()["server_id"],
        s["server_id"]
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(gs_plain(&["no-such-command"]).code, 2);
    assert_eq!(gs_plain(&["init"]).code, 2);
    let (_t, dir) = new_store("s", "autonomous");
    assert_eq!(
        gs(&dir, &["approve", DEFENDER_KB]).code,
        2,
        "missing --group"
    );
    assert_eq!(gs(&dir, &["updates", "list", "--kind", "firmware"]).code, 2);
}

#[test]
fn updates_list_json_contract_and_filters() {
    let (_t, dir) = store_with_captured_docs();
    let list = gs(&dir, &["updates", "list", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 9);
    for u in list {
        let id = u["id"].as_str().unwrap();
        assert_eq!(
            id,
            id.to_lowercase(),
            "ids are lower case even when the XML has upper case"
        );
        assert!(u["revision"].is_i64());
        assert!(
            ["software", "driver", "category", "detectoid"].contains(&u["kind"].as_str().unwrap())
        );
        assert!(u.get("category_type").is_some());
        assert!(u["title"].is_string());
    }
    let kb = list.iter().find(|u| u["id"] == DEFENDER_KB).unwrap();
    assert_eq!(kb["revision"], 200);
    assert_eq!(kb["kind"], "software");
    assert_eq!(kb["category_type"], serde_json::Value::Null);
    assert_eq!(
        kb["title"],
        "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.459.547.0) - Current Channel (Broad)"
    );
    let company = list
        .iter()
        .find(|u| u["id"] == "56309036-4c77-4dd9-951a-99ee9c246a94")
        .unwrap();
    assert_eq!(company["kind"], "category");
    assert_eq!(company["category_type"], "Company");
    assert_eq!(company["revision"], 101);
    assert_eq!(company["title"], "Microsoft");

    let cats = gs(&dir, &["updates", "list", "--json", "--kind", "category"])
        .ok()
        .json();
    let mut types: Vec<&str> = cats
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["category_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["Company", "Product", "ProductFamily"]);
    assert_eq!(
        gs(&dir, &["updates", "list", "--json", "--kind", "software"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        gs(&dir, &["updates", "list", "--json", "--kind", "driver"])
            .ok()
            .json(),
        serde_json::json!([])
    );

    // The KB bundle names product and classification with IsCategory="true";
    // the hidden installer bundles (and, for the product, the engine and
    // platform leaves) name the same ids in a plain AtLeastOne, as the real
    // WSUS documents do, and belong to them too.
    let by_classification = [
        "1f9bd9bb-7390-4aa3-bbdb-ded99fac2583",
        DEFENDER_KB,
        "ccb78947-6453-4ecc-9de8-bc0305c98f2d",
    ];
    let by_product = [
        "1f9bd9bb-7390-4aa3-bbdb-ded99fac2583",
        "266f6222-c89d-43f2-9f8a-69340271e677",
        "7366a74a-ef29-44e1-b738-570b516aca1f",
        DEFENDER_KB,
        "ccb78947-6453-4ecc-9de8-bc0305c98f2d",
        "ff36f0b5-dded-4780-8664-cd78af8b62c1",
    ];
    for (flag, id, want) in [
        (
            "--classification",
            DEFINITION_UPDATES,
            &by_classification[..],
        ),
        ("--product", DEFENDER_PRODUCT, &by_product[..]),
    ] {
        let f = gs(
            &dir,
            &["updates", "list", "--json", flag, &id.to_uppercase()],
        )
        .ok()
        .json();
        let ids: Vec<&str> = f
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want, "{flag}");
    }
    let both = gs(
        &dir,
        &[
            "updates",
            "list",
            "--json",
            "--product",
            DEFENDER_PRODUCT,
            "--classification",
            "0fa1201d-4330-4fa8-8ae9-b877473b6441",
        ],
    )
    .ok()
    .json();
    assert_eq!(both, serde_json::json!([]));
    gs(&dir, &["updates", "list", "--product", "not-a-guid"]).fails(2, "not-a-guid");
}

#[test]
fn updates_show_text_json_and_verbatim_xml() {
    let (_t, dir) = store_with_captured_docs();
    let d = gs(
        &dir,
        &["updates", "show", &DEFENDER_KB.to_uppercase(), "--json"],
    )
    .ok()
    .json();
    assert_eq!(d["id"], DEFENDER_KB);
    assert_eq!(d["revision"], 200);
    assert_eq!(d["metadata"]["kb_article_id"], "2267602");
    assert_eq!(d["revisions"].as_array().unwrap().len(), 1);
    let xml = gs(&dir, &["updates", "show", DEFENDER_KB, "--xml"])
        .ok()
        .stdout;
    let original = fs::read(captured_docs().join(format!("{DEFENDER_KB}-r200.xml"))).unwrap();
    assert_eq!(
        xml.as_bytes(),
        &original[..],
        "stored XML is byte-identical to the source"
    );
    let text = gs(
        &dir,
        &["updates", "show", "ff36f0b5-dded-4780-8664-cd78af8b62c1"],
    )
    .ok()
    .stdout;
    assert!(text.contains("AM_Engine.exe"), "{text}");
    assert!(text.contains("(content not present)"), "{text}");
    gs(
        &dir,
        &["updates", "show", "00000000-0000-0000-0000-000000000001"],
    )
    .fails(1, "unknown update 00000000-0000-0000-0000-000000000001");
}

#[test]
fn adding_the_same_documents_again_changes_nothing() {
    let (_t, dir) = store_with_captured_docs();
    let before = snapshot(&dir);
    let r = gs(
        &dir,
        &[
            "catalog",
            "add",
            captured_docs().to_str().unwrap(),
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["revisions_added"], 0);
    assert_eq!(r["revisions_already_present"], 9);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn new_revisions_become_current_and_keep_compact_ids() {
    let (t, dir) = new_store("s", "autonomous");
    let id = "11111111-2222-3333-4444-555555555555";
    for (rev, title) in [(100, "first"), (102, "third"), (101, "second")] {
        let p = t.path().join(format!("r{rev}.xml"));
        fs::write(
            &p,
            update_xml(&id.to_uppercase(), rev, "Software", title, &[], &[]),
        )
        .unwrap();
        gs(&dir, &["catalog", "add", p.to_str().unwrap()]).ok();
    }
    let list = gs(&dir, &["updates", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0]["revision"], 102,
        "the newest revision is current, whatever the order of arrival"
    );
    assert_eq!(list[0]["title"], "third");
    let d = gs(&dir, &["updates", "show", id, "--json"]).ok().json();
    let revs: Vec<(i64, i64)> = d["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["revision_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revs,
        [(100, 1), (101, 3), (102, 2)],
        "revision ids are assigned once, in arrival order"
    );
    let s = gs(&dir, &["status", "--json"]).ok().json();
    assert_eq!(s["updates"]["total"], 1);
    assert_eq!(s["revisions"], 3);
}

#[test]
fn bad_documents_are_named_and_change_nothing() {
    let (t, dir) = store_with_captured_docs();
    let before = snapshot(&dir);
    let good = update_xml(
        "99999999-0000-0000-0000-000000000001",
        1,
        "Software",
        "good",
        &[],
        &[],
    );
    let kb_original =
        fs::read_to_string(captured_docs().join(format!("{DEFENDER_KB}-r200.xml"))).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed.xml", "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><oops></upd:Update>".into(), "malformed.xml"),
        ("truncated.xml", kb_original[..kb_original.len() / 2].to_string(), "truncated.xml"),
        ("wrongns.xml", good.replace("http://schemas.microsoft.com/msus/2002/12/Update", "urn:other"), "wrongns.xml"),
        ("noidentity.xml", good.replace("<upd:UpdateIdentity UpdateID=\"99999999-0000-0000-0000-000000000001\" RevisionNumber=\"1\" />", ""), "noidentity.xml"),
        ("dtd.xml", format!("<?xml version=\"1.0\"?><!DOCTYPE lol [<!ENTITY lol \"lol\">]>{}", good.replace("good", "&lol;")), "DTD"),
        ("conflict.xml", kb_original.replace("Current Channel (Broad)</upd:Title>", "Current Channel (Tampered)</upd:Title>"), "already stored with different XML"),
    ];
    for (name, body, needle) in cases {
        let folder = t.path().join(format!("case-{name}"));
        fs::create_dir_all(&folder).unwrap();
        // A good document beside the bad one: all or nothing.
        fs::write(folder.join("a-good.xml"), &good).unwrap();
        fs::write(folder.join(name), body).unwrap();
        let r = gs(&dir, &["catalog", "add", folder.to_str().unwrap()]);
        r.fails(1, needle);
        assert_eq!(snapshot(&dir), before, "{name} changed the store");
    }
    gs(
        &dir,
        &["catalog", "add", t.path().join("missing").to_str().unwrap()],
    )
    .fails(1, "missing");
}

#[test]
fn content_is_matched_verified_and_laid_out_like_wsus() {
    let (t, dir) = new_store("s", "autonomous");
    let data = noise(300_000, 7);
    let other = noise(5_000, 8);
    let docs = t.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(
        docs.join("u.xml"),
        update_xml(
            "aaaaaaaa-0000-0000-0000-000000000001",
            1,
            "Software",
            "with file",
            &[],
            &[
                FileSpec {
                    name: "windows-kb1-x64.CAB",
                    data: &data,
                },
                FileSpec {
                    name: "second.msu",
                    data: &other,
                },
            ],
        ),
    )
    .unwrap();
    // Content folder: one file under its digest name, one under its original name.
    let content = t.path().join("incoming");
    fs::create_dir_all(&content).unwrap();
    let hex = sha1_hex_upper(&data);
    fs::write(content.join(format!("{}.cab", hex.to_lowercase())), &data).unwrap();
    fs::write(content.join("second.msu"), &other).unwrap();
    let r = gs(
        &dir,
        &[
            "catalog",
            "add",
            docs.to_str().unwrap(),
            "--content",
            content.to_str().unwrap(),
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["content_files_added"], 2);
    assert_eq!(r["content_bytes_added"], 305_000);
    let stored = dir
        .join("content")
        .join(&hex[38..])
        .join(format!("{hex}.cab"));
    assert_eq!(fs::read(&stored).unwrap(), data);
    let hex2 = sha1_hex_upper(&other);
    assert!(
        dir.join("content")
            .join(&hex2[38..])
            .join(format!("{hex2}.msu"))
            .is_file()
    );
    let s = gs(&dir, &["status", "--json"]).ok().json();
    assert_eq!(s["content_files"], 2);
    assert_eq!(s["content_bytes"], 305_000);
    assert_eq!(
        fs::read_dir(dir.join("staging")).unwrap().count(),
        0,
        "no staging debris"
    );
}

#[test]
fn content_digest_mismatch_exits_3_and_changes_nothing() {
    let (t, dir) = new_store("s", "autonomous");
    let before = snapshot(&dir);
    let data = noise(100_000, 1);
    let docs = t.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(
        docs.join("u.xml"),
        update_xml(
            "aaaaaaaa-0000-0000-0000-000000000002",
            1,
            "Software",
            "x",
            &[],
            &[FileSpec {
                name: "payload.exe",
                data: &data,
            }],
        ),
    )
    .unwrap();
    let content = t.path().join("incoming");
    fs::create_dir_all(&content).unwrap();
    let mut tampered = data.clone();
    tampered[5000] ^= 0x40;
    fs::write(content.join("payload.exe"), &tampered).unwrap();
    gs(
        &dir,
        &[
            "catalog",
            "add",
            docs.to_str().unwrap(),
            "--content",
            content.to_str().unwrap(),
        ],
    )
    .fails(3, "payload.exe");
    assert_eq!(snapshot(&dir), before);
    assert_eq!(fs::read_dir(dir.join("staging")).unwrap().count(), 0);
}

#[test]
fn content_write_interrupted_before_rename_leaves_no_visible_file() {
    let (t, dir) = new_store("s", "autonomous");
    let before = snapshot(&dir);
    let data = noise(2_500_000, 3);
    let docs = t.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(
        docs.join("u.xml"),
        update_xml(
            "aaaaaaaa-0000-0000-0000-000000000003",
            1,
            "Software",
            "x",
            &[],
            &[FileSpec {
                name: "big.cab",
                data: &data,
            }],
        ),
    )
    .unwrap();
    let content = t.path().join("incoming");
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("big.cab"), &data).unwrap();
    let args = [
        "catalog",
        "add",
        docs.to_str().unwrap(),
        "--content",
        content.to_str().unwrap(),
    ];
    let r = gs_env(
        &dir,
        &args,
        &[("GAPSYNC_FAILPOINT", "content-before-rename")],
    );
    assert_ne!(
        r.code, 0,
        "the process must have been killed at the failpoint"
    );
    assert!(
        r.stderr.contains("failpoint content-before-rename"),
        "{}",
        r.stderr
    );
    assert!(
        tree(&dir.join("content")).is_empty(),
        "no partial or unrecorded file is visible"
    );
    assert_eq!(snapshot(&dir), before, "old state intact");
    // The complete file was staged under a temp name only.
    let staged: Vec<_> = fs::read_dir(dir.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        staged
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "part")),
        "{staged:?}"
    );
    // Re-running completes.
    gs(&dir, &args).ok();
    let hex = sha1_hex_upper(&data);
    assert_eq!(
        fs::read(
            dir.join("content")
                .join(&hex[38..])
                .join(format!("{hex}.cab"))
        )
        .unwrap(),
        data
    );
}

#[test]
fn crash_before_database_commit_keeps_old_state_and_rerun_adopts_file() {
    let (t, dir) = new_store("s", "autonomous");
    let before = snapshot(&dir);
    let data = noise(50_000, 4);
    let docs = t.path().join("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(
        docs.join("u.xml"),
        update_xml(
            "aaaaaaaa-0000-0000-0000-000000000004",
            1,
            "Software",
            "x",
            &[],
            &[FileSpec {
                name: "f.exe",
                data: &data,
            }],
        ),
    )
    .unwrap();
    let content = t.path().join("incoming");
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("f.exe"), &data).unwrap();
    let args = [
        "catalog",
        "add",
        docs.to_str().unwrap(),
        "--content",
        content.to_str().unwrap(),
        "--json",
    ];
    let r = gs_env(
        &dir,
        &args,
        &[("GAPSYNC_FAILPOINT", "catalog-before-commit")],
    );
    assert_ne!(r.code, 0);
    let s = gs(&dir, &["status", "--json"]).ok().json();
    assert_eq!(s["updates"]["total"], 0, "metadata not committed");
    assert_eq!(s["content_files"], 0);
    let _ = before;
    let r = gs(&dir, &args).ok().json();
    assert_eq!(r["content_files_added"], 1);
    let s = gs(&dir, &["status", "--json"]).ok().json();
    assert_eq!(s["content_files"], 1);
}

#[test]
fn groups_and_computers() {
    let (_t, dir) = new_store("s", "autonomous");
    let g = gs(&dir, &["groups", "add", "Workstations", "--json"])
        .ok()
        .json();
    assert_eq!(g["parent"], "All Computers");
    gs(
        &dir,
        &["groups", "add", "Pilot", "--parent", "workstations"],
    )
    .ok();
    gs(&dir, &["groups", "add", "PILOT"]).fails(1, "already exists");
    gs(&dir, &["groups", "add", "X", "--parent", "Nope"]).fails(1, "unknown group \"Nope\"");
    gs(
        &dir,
        &["groups", "add", "X", "--parent", "Unassigned Computers"],
    )
    .fails(1, "Unassigned");
    let list = gs(&dir, &["groups", "list", "--json"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "All Computers",
            "Unassigned Computers",
            "Pilot",
            "Workstations"
        ]
    );
    assert_eq!(list[0]["id"], "a0a08746-4dbe-4a37-9adf-9e7652c0b421");
    assert_eq!(list[1]["id"], "b73ca6ed-5727-47f3-84de-015e03f6a88a");
    assert_eq!(list[2]["parent"], "Workstations");

    gs(&dir, &["computers", "add", "ws-001", "--group", "Pilot"]).ok();
    gs(&dir, &["computers", "add", "ws-002"]).ok();
    gs(&dir, &["computers", "add", "WS-001"]).fails(1, "already exists");
    gs(&dir, &["computers", "add", "ws-003", "--group", "Ghosts"])
        .fails(1, "unknown group \"Ghosts\"");
    let c = gs(&dir, &["computers", "list", "--json"]).ok().json();
    assert_eq!(c[0]["group"], "Pilot");
    assert_eq!(c[1]["group"], "Unassigned Computers");

    gs(&dir, &["groups", "remove", "Workstations"]).fails(1, "subgroup");
    gs(&dir, &["groups", "remove", "All Computers"]).fails(1, "built in");
    gs(&dir, &["groups", "remove", "Unassigned Computers"]).fails(1, "built in");
    gs(&dir, &["groups", "remove", "Ghosts"]).fails(1, "unknown group \"Ghosts\"");
    gs(&dir, &["groups", "remove", "pilot"]).ok();
    let c = gs(&dir, &["computers", "list", "--json"]).ok().json();
    assert_eq!(
        c[0]["group"], "Unassigned Computers",
        "computers of a removed group become unassigned"
    );
    assert_eq!(
        gs(&dir, &["groups", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn approvals_declines_and_deployments_json() {
    let (_t, dir) = store_with_captured_docs();
    gs(&dir, &["groups", "add", "Servers"]).ok();
    gs(&dir, &["groups", "add", "Pilot"]).ok();
    let d = gs_env(
        &dir,
        &[
            "approve",
            &DEFENDER_KB.to_uppercase(),
            "--group",
            "servers",
            "--deadline",
            "2026-12-01T20:00:00+02:00",
            "--json",
        ],
        &[("GAPSYNC_ADMIN", "alice")],
    )
    .ok()
    .json();
    assert_eq!(
        d["deadline"], "2026-12-01T18:00:00Z",
        "deadlines are stored in UTC"
    );
    assert_eq!(d["admin_name"], "alice");
    let dep_id = d["deployment_id"].as_str().unwrap().to_string();
    gs(
        &dir,
        &[
            "approve",
            "ff36f0b5-dded-4780-8664-cd78af8b62c1",
            "--group",
            "Pilot",
            "--action",
            "block",
        ],
    )
    .ok();

    let list = gs(&dir, &["deployments", "list", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let kb = list.iter().find(|d| d["update_id"] == DEFENDER_KB).unwrap();
    assert_eq!(kb["revision"], 200);
    assert_eq!(kb["group"], "Servers");
    assert_eq!(kb["action"], "install");
    assert_eq!(kb["deadline"], "2026-12-01T18:00:00Z");
    assert!(
        kb.get("last_changed_anchor").is_none(),
        "server-local anchors stay out of the list"
    );
    let blocked = list.iter().find(|d| d["group"] == "Pilot").unwrap();
    assert_eq!(blocked["action"], "block");
    assert_eq!(blocked["deadline"], serde_json::Value::Null);

    // Approving again changes the same deployment.
    let d2 = gs(
        &dir,
        &[
            "approve",
            DEFENDER_KB,
            "--group",
            "Servers",
            "--action",
            "uninstall",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(d2["deployment_id"], dep_id.as_str());
    assert_eq!(d2["action"], "uninstall");
    assert_eq!(d2["deadline"], serde_json::Value::Null);

    // Bad input: named, nothing changed (exit 2 for bad values, refused
    // while the command line is parsed; exit 1 for what the store refuses).
    let before = snapshot(&dir);
    gs(&dir, &["approve", DEFENDER_KB, "--group", "Nobody"]).fails(1, "unknown group \"Nobody\"");
    gs(
        &dir,
        &[
            "approve",
            "12345678-1234-1234-1234-123456789012",
            "--group",
            "Servers",
        ],
    )
    .fails(1, "unknown update 12345678-1234-1234-1234-123456789012");
    gs(&dir, &["approve", "not-a-guid", "--group", "Servers"]).fails(2, "not-a-guid");
    gs(
        &dir,
        &[
            "approve",
            DEFENDER_KB,
            "--group",
            "Servers",
            "--deadline",
            "tomorrow",
        ],
    )
    .fails(2, "tomorrow");
    gs(
        &dir,
        &[
            "approve",
            "56309036-4c77-4dd9-951a-99ee9c246a94",
            "--group",
            "Servers",
        ],
    )
    .fails(1, "is a category");
    gs(&dir, &["decline", "12345678-1234-1234-1234-123456789012"]).fails(1, "unknown update");
    assert_eq!(snapshot(&dir), before);

    // Declining removes the deployment (kept as dead) and blocks approval.
    gs(&dir, &["decline", DEFENDER_KB]).ok();
    let live = gs(&dir, &["deployments", "list", "--json"]).ok().json();
    assert_eq!(live.as_array().unwrap().len(), 1);
    let dead = gs(&dir, &["deployments", "list", "--removed", "--json"])
        .ok()
        .json();
    assert_eq!(dead[0]["deployment_id"], dep_id.as_str());
    gs(&dir, &["approve", DEFENDER_KB, "--group", "Pilot"]).fails(1, "declined");
    let u = gs(&dir, &["updates", "list", "--json", "--kind", "software"])
        .ok()
        .json();
    assert_eq!(
        u.as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == DEFENDER_KB)
            .unwrap()["declined"],
        true
    );
    assert_eq!(
        gs(&dir, &["status", "--json"]).ok().json()["deployments"],
        1
    );

    gs(
        &dir,
        &[
            "unapprove",
            "ff36f0b5-dded-4780-8664-cd78af8b62c1",
            "--group",
            "Pilot",
        ],
    )
    .ok();
    assert_eq!(
        gs(&dir, &["deployments", "list", "--json"]).ok().json(),
        serde_json::json!([])
    );
    gs(
        &dir,
        &[
            "unapprove",
            "ff36f0b5-dded-4780-8664-cd78af8b62c1",
            "--group",
            "Pilot",
        ],
    )
    .fails(1, "not approved");
}

#[test]
fn replica_servers_refuse_local_approvals() {
    let (_t, dir) = new_store("replica", "replica");
    gs(&dir, &["catalog", "add", captured_docs().to_str().unwrap()]).ok();
    gs(
        &dir,
        &["approve", DEFENDER_KB, "--group", "Unassigned Computers"],
    )
    .fails(1, "replica");
    gs(&dir, &["decline", DEFENDER_KB]).fails(1, "replica");
}

#[test]
fn journal_command_lists_changes_after_an_anchor() {
    let (_t, dir) = new_store("s", "autonomous");
    gs(&dir, &["groups", "add", "A"]).ok();
    let anchor = gs(&dir, &["status", "--json"]).ok().json()["anchor"]
        .as_str()
        .unwrap()
        .to_string();
    gs(&dir, &["groups", "add", "B"]).ok();
    gs(&dir, &["groups", "remove", "A"]).ok();
    let changes = gs(&dir, &["journal", "--since", &anchor, "--json"])
        .ok()
        .json();
    let kinds: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["group_added", "group_removed"]);
    let (_t2, other) = new_store("other", "autonomous");
    gs(&other, &["journal", "--since", &anchor]).fails(1, "belongs to server");
    gs(&dir, &["journal", "--since", "garbage"]).fails(2, "garbage");
}

#[test]
fn stores_that_are_not_stores_or_too_new_are_refused() {
    let t = tempfile::tempdir().unwrap();
    gs(t.path(), &["status"]).fails(1, "not a gapsync server store");
    gs(&t.path().join("nope"), &["status"]).fails(1, "no such directory");
    fs::write(
        t.path().join("gapsync.db"),
        b"this is not sqlite at all, just text padding it out",
    )
    .unwrap();
    gs(t.path(), &["status"]).fails(1, "not a gapsync server store");
    gs(t.path(), &["groups", "add", "x"]).fails(1, "not a gapsync server store");

    // Another SQLite database.
    let t2 = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(t2.path().join("gapsync.db"))
        .unwrap()
        .execute_batch("CREATE TABLE x(y)")
        .unwrap();
    gs(t2.path(), &["status"]).fails(1, "not a gapsync database");

    // A store from a newer gapsync.
    let (_t3, dir) = new_store("s", "autonomous");
    rusqlite::Connection::open(dir.join("gapsync.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    gs(&dir, &["status"]).fails(1, "schema version 99 is newer");
    gs(&dir, &["groups", "add", "x"]).fails(1, "schema version 99 is newer");
}

#[test]
fn writers_are_exclusive() {
    let (_t, dir) = new_store("s", "autonomous");
    let held = gapsync::store::Store::open_writer(&dir).unwrap();
    gs(&dir, &["groups", "add", "x"]).fails(1, "locked by another gapsync process");
    // Readers are not blocked.
    gs(&dir, &["status", "--json"]).ok();
    drop(held);
    gs(&dir, &["groups", "add", "x"]).ok();
}

#[test]
fn demo_runs_the_whole_air_gap_loop_in_a_fresh_folder() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("demo");
    let r = gs_plain(&[
        "demo",
        "--dir",
        base.to_str().unwrap(),
        "--updates",
        "300",
        "--content-bytes",
        "4M",
    ])
    .ok();
    assert!(
        r.stdout
            .contains("the disconnected server now equals the connected one"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("minisign -V -p"), "{}", r.stdout);
    let run = fs::read_dir(&base).unwrap().next().unwrap().unwrap().path();
    // Simulated Windows clients at the site scanned, installed what their
    // group has approved and reported: their lines, and the site's records.
    assert!(
        r.stdout
            .contains("11. serve: the disconnected server answers Windows clients"),
        "{}",
        r.stdout
    );
    let computers = gs(&run.join("disconnected"), &["computers", "list", "--json"])
        .ok()
        .json();
    for (name, group) in [
        ("site-ws-101", "Workstations"),
        ("site-pilot-7", "Pilot"),
        ("site-srv-01", "Servers"),
    ] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ({group}):")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", r.stdout));
        assert!(line.contains(" installed"), "{line}");
        assert!(!line.contains("installed 0 "), "{line}");
        let row = computers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {computers}"));
        assert_eq!(row["group"], group, "{row}");
        assert!(row["last_report"].is_string(), "{row}");
    }
    let up = gs(&run.join("connected"), &["status", "--json"])
        .ok()
        .json();
    let down = gs(&run.join("disconnected"), &["status", "--json"])
        .ok()
        .json();
    assert_eq!(up["deployments"], 25);
    assert_eq!(up["declined"], 1);
    assert_eq!(down["bundles_imported"], 2);
    for k in [
        "revisions",
        "deployments",
        "declined",
        "content_files",
        "content_bytes",
    ] {
        assert_eq!(up[k], down[k], "{k}");
    }
    // The printed stock-tool commands work.
    let bundle = run.join("media/bundle-0001");
    let out = std::process::Command::new("minisign")
        .args(["-V", "-p"])
        .arg(run.join("hq-signing.pub"))
        .args(["-m", "SHA256SUMS"])
        .current_dir(&bundle)
        .output()
        .expect("minisign is installed (apt-get install minisign)");
    assert!(out.status.success());
    // The demo ends with the site's report imported at the connected
    // server and its per-site compliance table.
    assert!(
        r.stdout.contains("12. export --report at the site"),
        "{}",
        r.stdout
    );
    // Both stores were checked, and the check recorded for their consoles.
    assert!(
        r.stdout.contains("13. check: hq-connected clean (")
            && r.stdout.contains("; plant-disconnected clean ("),
        "{}",
        r.stdout
    );
    for side in ["connected", "disconnected"] {
        let store = gapsync::store::Store::open_read_only(&run.join(side)).unwrap();
        let last = gapsync::store::check::last_recorded(&store)
            .unwrap()
            .expect("a recorded check");
        assert!(
            last.problems.is_empty() && last.content_files_checked > 0,
            "{side}: {last:?}"
        );
    }
    // The connected server's overview places the site on its chain: the
    // site's report says it applied the last bundle.
    let connected = gapsync::store::Store::open_read_only(&run.join("connected")).unwrap();
    let chains = connected.chain_rows().unwrap();
    assert_eq!(chains.len(), 1, "{chains:?}");
    assert_eq!(
        chains[0].sites,
        [gapsync::store::console::SiteApplied {
            site: "plant-disconnected".into(),
            seq: chains[0].last_seq,
            behind: 0
        }]
    );
    drop(connected);
    let table = r
        .stdout
        .split("per-site compliance at the connected server")
        .nth(1)
        .unwrap_or_else(|| panic!("no compliance table:\n{}", r.stdout));
    assert!(table.contains("plant-disconnected"), "{table}");
    assert!(table.contains("site-ws-101"), "{table}");
    let sites = gs(&run.join("connected"), &["sites", "list", "--json"])
        .ok()
        .json();
    assert_eq!(sites[0]["site"], "plant-disconnected", "{sites}");
    assert_eq!(sites[0]["computers"], 3, "{sites}");
    assert_eq!(sites[0]["bundles_behind"], 0, "{sites}");
    assert_eq!(
        gs(
            &run.join("connected"),
            &[
                "report",
                "updates",
                "--site",
                "plant-disconnected",
                "--json"
            ]
        )
        .ok()
        .json(),
        gs(&run.join("disconnected"), &["report", "updates", "--json"])
            .ok()
            .json()
    );
    // Progress is plain lines on stderr when it is not a terminal.
    assert!(r.stderr.contains("generate:"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "no terminal escapes off a TTY"
    );
}

/// Issue 9: every flag value is checked while the command line is parsed:
/// exit 2, naming the flag, the value and what is allowed, before any work
/// (so no partial bundle folder, and the store unchanged). Before, `export
/// --expires 99999999w` panicked after writing all content and left
/// `.OUT.partial-<uuid>/`, and `99999999999999999w` panicked at once.
#[test]
fn bad_flag_values_are_refused_while_parsing_naming_flag_value_and_range() {
    let (tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "20",
            "--content-bytes",
            "2M",
            "--seed",
            "1",
        ],
    )
    .ok();
    gs(&dir, &["groups", "add", "G"]).ok();
    let prefix = tmp.path().join("k");
    gs_plain(&["key", "generate", "--out", prefix.to_str().unwrap()]).ok();
    let key = prefix.with_extension("key");
    let key = key.to_str().unwrap();
    let media = tmp.path().join("media");
    fs::create_dir(&media).unwrap();
    let out = media.join("b");
    let out = out.to_str().unwrap();
    let id = gs(&dir, &["status", "--json"]).ok().json()["server_id"]
        .as_str()
        .unwrap()
        .to_string();
    let huge_seq = format!("gapsync1:{id}:99999999999999999999");
    let demo_dir = tmp.path().join("demo");
    let demo_dir = demo_dir.to_str().unwrap();
    let upd = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
    let before = snapshot(&dir);
    let export = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["export", "--key", key, "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let owned = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    // (arguments, the flag, the value, what is allowed)
    let cases: Vec<(Vec<String>, &str, &str, &str)> = vec![
        (
            export(&["--expires", "99999999w"]),
            "--expires",
            "99999999w",
            "between 1m and 3650d",
        ),
        (
            export(&["--expires", "3000000d"]),
            "--expires",
            "3000000d",
            "between 1m and 3650d",
        ),
        (
            export(&["--expires", "99999999999999999w"]),
            "--expires",
            "99999999999999999w",
            "between 1m and 3650d",
        ),
        (
            export(&["--expires", "0d"]),
            "--expires",
            "0d",
            "between 1m and 3650d",
        ),
        (
            export(&["--expires", "soon"]),
            "--expires",
            "soon",
            "between 1m and 3650d",
        ),
        (
            export(&["--volume-size", "1K"]),
            "--volume-size",
            "1K",
            "the minimum is 2052K (2101248 bytes)",
        ),
        (
            export(&["--volume-size", "2M"]),
            "--volume-size",
            "2M",
            "the minimum is 2052K",
        ),
        (
            export(&["--volume-size", "4X"]),
            "--volume-size",
            "4X",
            "the minimum is 2052K",
        ),
        (
            export(&["--since", "gapsync1:nope:1"]),
            "--since",
            "gapsync1:nope:1",
            "GUID",
        ),
        (
            {
                let mut v = export(&["--since"]);
                v.push(huge_seq.clone());
                v
            },
            "--since",
            &huge_seq,
            "out of range",
        ),
        (
            export(&["--product", "nope"]),
            "--product",
            "nope",
            "not a GUID",
        ),
        (
            export(&["--classification", "KB1"]),
            "--classification",
            "KB1",
            "not a GUID",
        ),
        (export(&["--to", ""]), "--to", "''", "1-128"),
        (
            export(&["--content", "some"]),
            "--content",
            "some",
            "approved",
        ),
        (
            owned(&["catalog", "generate", "--updates", "1000000000"]),
            "--updates",
            "1000000000",
            "0..=100000000",
        ),
        (
            owned(&[
                "catalog",
                "generate",
                "--updates",
                "1",
                "--content-bytes",
                "100T",
            ]),
            "--content-bytes",
            "100T",
            "16T",
        ),
        (
            owned(&["demo", "--dir", demo_dir, "--content-bytes", "100T"]),
            "--content-bytes",
            "100T",
            "16T",
        ),
        (
            owned(&["demo", "--dir", demo_dir, "--updates", "0"]),
            "--updates",
            "0",
            "1..=",
        ),
        (
            owned(&["approve", "nope", "--group", "G"]),
            "<UPDATE_ID>",
            "nope",
            "not a GUID",
        ),
        (
            owned(&[
                "approve",
                upd,
                "--group",
                "G",
                "--deadline",
                "2026-13-01T00:00:00Z",
            ]),
            "--deadline",
            "2026-13-01T00:00:00Z",
            "RFC 3339",
        ),
        (
            owned(&["unapprove", "nope", "--group", "G"]),
            "<UPDATE_ID>",
            "nope",
            "not a GUID",
        ),
        (
            owned(&["decline", "nope"]),
            "<UPDATE_ID>",
            "nope",
            "not a GUID",
        ),
        (
            owned(&["updates", "show", "nope"]),
            "<ID>",
            "nope",
            "not a GUID",
        ),
        (
            owned(&["updates", "list", "--classification", "nope"]),
            "--classification",
            "nope",
            "not a GUID",
        ),
        (
            owned(&[
                "sync",
                "--upstream",
                "http://127.0.0.1:9",
                "--product",
                "nope",
            ]),
            "--product",
            "nope",
            "not a GUID",
        ),
        (
            owned(&["journal", "--since", &huge_seq]),
            "--since",
            &huge_seq,
            "out of range",
        ),
    ];
    for (args, flag, value, allowed) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = gs(&dir, &args);
        assert_eq!(r.code, 2, "{args:?}\nstderr: {}", r.stderr);
        for needle in [*flag, *value, *allowed] {
            assert!(
                r.stderr.contains(needle),
                "{args:?}: stderr should name {needle:?}:\n{}",
                r.stderr
            );
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Nothing was done: no bundle, no partial folder, no demo folder, the
    // store as it was.
    assert_eq!(fs::read_dir(&media).unwrap().count(), 0);
    assert!(!Path::new(demo_dir).exists());
    assert_eq!(snapshot(&dir), before);
    gs(&dir, &["check"]).ok();
}

/// Legal but probably wrong: a deadline in the past and a validity period
/// under an hour are accepted with a warning on stderr (exit 0); anchors
/// take the server id as `status` prints it.
#[test]
fn past_deadlines_and_short_expiry_are_warned_and_anchors_take_dashed_ids() {
    let (tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &["catalog", "generate", "--updates", "20", "--seed", "1"],
    )
    .ok();
    gs(&dir, &["groups", "add", "G"]).ok();
    let list = gs(&dir, &["updates", "list", "--json", "--kind", "software"])
        .ok()
        .json();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| !u["title"].as_str().unwrap().starts_with("HIDDEN"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gs(
        &dir,
        &[
            "approve",
            &id,
            "--group",
            "G",
            "--deadline",
            "2020-01-01T00:00:00+01:00",
        ],
    )
    .ok();
    assert!(
        r.stderr
            .contains("warning: --deadline 2019-12-31T23:00:00Z is in the past"),
        "{}",
        r.stderr
    );
    let r = gs(
        &dir,
        &[
            "approve",
            &id,
            "--group",
            "G",
            "--deadline",
            "2999-01-01T00:00:00Z",
        ],
    )
    .ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let prefix = tmp.path().join("k");
    gs_plain(&["key", "generate", "--out", prefix.to_str().unwrap()]).ok();
    let out = tmp.path().join("b");
    let r = gs(
        &dir,
        &[
            "export",
            "--key",
            prefix.with_extension("key").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--expires",
            "30m",
        ],
    )
    .ok();
    assert!(r.stderr.contains("warning: --expires 30m"), "{}", r.stderr);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let created = time::OffsetDateTime::parse(
        m["created"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        m["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::minutes(30));
    // Anchors: the dashed id `status` prints, and the 32-digit form.
    let s = gs(&dir, &["status", "--json"]).ok().json();
    let dashed = s["server_id"].as_str().unwrap().to_string();
    assert!(dashed.contains('-'));
    let all = gs(&dir, &["journal", "--json"]).ok().json();
    for form in [
        dashed.clone(),
        dashed.replace('-', ""),
        dashed.to_uppercase(),
    ] {
        let since = format!("gapsync1:{form}:0");
        let j = gs(&dir, &["journal", "--since", &since, "--json"])
            .ok()
            .json();
        assert_eq!(j, all, "{since}");
    }
}

/// Counts read correctly in human output: "1 computer", "341 revisions
/// of 326 updates".
#[test]
fn counts_read_correctly() {
    let (_tmp, dir) = new_store("s", "autonomous");
    let r = gs(&dir, &["catalog", "generate", "--updates", "40"]).ok();
    assert!(
        r.stdout.contains(" revisions of ") && r.stdout.contains(" updates ("),
        "{}",
        r.stdout
    );
    gs(&dir, &["groups", "add", "One"]).ok();
    gs(&dir, &["computers", "add", "ws-1", "--group", "One"]).ok();
    let list = gs(&dir, &["groups", "list"]).ok().stdout;
    let one = list
        .lines()
        .find(|l| l.contains(" One "))
        .expect("group One");
    assert!(
        one.contains(" 1 computer") && !one.contains("1 computers"),
        "{one}"
    );
    let check = gs(&dir, &["check"]).ok().stdout;
    assert!(!check.contains("(s)"), "{check}");
}
