//! The way back across the gap (docs/bundle-format.md, "Report bundles"):
//! HQ exports, the site imports, simulated Windows clients at the site
//! scan, install and report against `serve`, the site exports a signed
//! report, HQ imports it; HQ's per-site reports equal the site's own, and
//! HQ's next export follows the site's content receipt. Every chain rule
//! on report bundles leaves HQ's store unchanged.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};
use gapsync::store::Store;

use common::{Lab, copy_tree, gs, gs_plain, p, resign};

/// A running `gapsync serve`; killed on drop.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(store: &Path) -> Served {
        let mut child = Command::new(common::bin())
            .arg("--server")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("GAPSYNC_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gapsync serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("serve printed no address")
            });
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Served { child, url }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn machine(n: u32) -> Machine {
    Machine::new(
        &format!("5eed0000-0000-4000-8000-{n:012}"),
        &format!("pc{n}.plant.invalid"),
    )
}

/// The lab (hq, plant, HQ's signing key) plus the site's own key pair,
/// which HQ trusts (label `plant`).
struct Loop {
    lab: Lab,
    site_key: PathBuf,
    site_pub: PathBuf,
}

impl Loop {
    fn new(updates: u32, content: &str) -> Loop {
        let lab = Lab::new(updates, content);
        let prefix = lab.root.join("site");
        gs_plain(&["key", "generate", "--out", p(&prefix)]).ok();
        let site_pub = prefix.with_extension("pub");
        gs(&lab.hq, &["trust", "add", p(&site_pub), "--label", "plant"]).ok();
        Loop {
            site_key: prefix.with_extension("key"),
            site_pub,
            lab,
        }
    }

    /// HQ's bundle `name` to `plant`, imported at the plant.
    fn bundle_in(&self, name: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["--to", "plant"];
        args.extend_from_slice(extra);
        let b = self.lab.export(name, &args);
        gs(&self.lab.plant, &["import", p(&b)]).ok();
        b
    }

    /// The plant's report `name` to `hq` (with `extra` flags).
    fn report_out(&self, name: &str, extra: &[&str]) -> PathBuf {
        self.report_to(name, "hq", extra)
    }

    /// The plant's report `name` to destination `to`.
    fn report_to(&self, name: &str, to: &str, extra: &[&str]) -> PathBuf {
        let dir = self.lab.root.join(name);
        let mut args = vec![
            "export",
            "--report",
            "--key",
            p(&self.site_key),
            "--to",
            to,
            "--out",
            p(&dir),
        ];
        args.extend_from_slice(extra);
        gs(&self.lab.plant, &args).ok();
        dir
    }
}

/// HQ's per-site state: `sites list --json` and every row of the site
/// tables.
fn hq_sites(hq: &Path) -> String {
    let mut s = gs(hq, &["sites", "list", "--json"]).ok().stdout;
    let store = Store::open_read_only(hq).unwrap();
    for table in [
        "sites",
        "site_reports",
        "site_imports",
        "site_content",
        "site_groups",
        "site_updates",
        "site_approvals",
        "site_computers",
        "site_status",
        "site_events",
    ] {
        let mut st = store
            .conn()
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                let mut line = String::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push_str(&format!("{v:?}|"));
                }
                Ok(line)
            })
            .unwrap();
        s.push_str(table);
        s.push('\n');
        for r in rows {
            s.push_str(&r.unwrap());
            s.push('\n');
        }
    }
    s
}

fn json(server: &Path, args: &[&str]) -> serde_json::Value {
    gs(server, args).ok().json()
}

/// The content files under a store's `content/`, by path.
fn content_files(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(store.join("content"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    out.sort();
    out
}

/// The monthly loop: bundle in, clients report, report out, HQ imports;
/// HQ's reports on the site equal the site's own; HQ's next export skips
/// what the site holds and re-sends the file deleted at the site.
#[test]
fn the_monthly_loop_bundle_in_report_out() {
    let l = Loop::new(40, "6M");
    let (hq, plant) = (&l.lab.hq, &l.lab.plant);
    let b1 = l.bundle_in("b-0001", &[]);

    // Two clients at the plant scan and report what they need.
    let srv = Served::start(plant);
    let mut clients: Vec<Wua> = (1..=2)
        .map(|n| Wua::new(&srv.url, machine(n), WuaOptions::default()))
        .collect();
    for w in &mut clients {
        w.scan().expect("scan at the plant");
        w.report_status().expect("status report");
    }
    let needed = clients[0].needed();
    assert!(needed.len() >= 2, "{needed:?}");
    // HQ approves two of them for everyone; the next bundle brings them.
    for id in &needed[..2] {
        gs(hq, &["approve", id, "--group", "All Computers"]).ok();
    }
    l.bundle_in("b-0002", &[]);
    for w in &mut clients {
        w.scan().expect("rescan");
        let done = w.install().expect("install");
        assert!(done.iter().any(|i| i.ok), "{done:?}");
    }
    drop(srv);

    // A content file is lost at the plant before it reports.
    let files = content_files(plant);
    assert!(files.len() >= 2, "{files:?}");
    let lost = files[0].clone();
    let lost_sha1 = lost
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_ascii_uppercase();
    let lost_size = fs::metadata(&lost).unwrap().len();
    fs::remove_file(&lost).unwrap();

    let r1 = l.report_out("r-0001", &[]);
    // Stock tools check it as they check a data bundle.
    let out = Command::new("minisign")
        .args(["-V", "-p"])
        .arg(&l.site_pub)
        .args(["-m", "SHA256SUMS"])
        .current_dir(&r1)
        .output()
        .expect("minisign is installed");
    assert!(out.status.success(), "{out:?}");
    let comment =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(r1.join("manifest.json")).unwrap()).unwrap();
    assert!(
        comment.contains(&format!(
            "gapsync bundle {} seq 1",
            manifest["bundle_id"].as_str().unwrap()
        )),
        "{comment}"
    );
    assert_eq!(
        (manifest["version"].as_u64(), manifest["kind"].as_str()),
        (Some(4), Some("report"))
    );
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&r1)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches(": OK").count(),
        fs::read_to_string(r1.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .count()
    );
    let v = gs_plain(&["verify", p(&r1), "--trust", p(&l.site_pub), "--json"])
        .ok()
        .json();
    assert_eq!(v["kind"], "report");
    // A data import of the report is refused, naming the kind; `import`
    // recognises it.
    let lib = gapsync::airgap::report::peek_kind(
        &gapsync::airgap::format::Layout::discover(&r1).unwrap(),
    );
    assert_eq!(lib, Some(gapsync::airgap::format::BundleKind::Report));

    let before_plan = json(hq, &["export", "--dry-run", "--to", "plant", "--json"]);
    assert!(before_plan["receipt_sites"].as_array().unwrap().is_empty());
    let r = json(hq, &["import", p(&r1), "--json"]);
    assert_eq!(r["status"], "imported", "{r}");
    assert_eq!(r["site"], "plant");
    // The same report again: nothing to do.
    let again = json(hq, &["import", p(&r1), "--json"]);
    assert_eq!(again["status"], "already-imported");

    // HQ's per-site reports equal the site's own.
    for args in [
        &["report", "updates", "--json"][..],
        &["report", "updates", "--approved", "--json"],
        &["report", "computers", "--json"],
        &[
            "report",
            "computers",
            "--group",
            "Unassigned Computers",
            "--json",
        ],
    ] {
        let site_own = json(plant, args);
        let mut at_hq: Vec<&str> = args.to_vec();
        at_hq.extend_from_slice(&["--site", "plant"]);
        assert_eq!(json(hq, &at_hq), site_own, "{args:?}");
    }
    let site_updates = json(plant, &["report", "updates", "--json"]);
    let installed: i64 = site_updates
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["installed"].as_i64().unwrap())
        .sum();
    assert!(installed >= 2, "{site_updates}");

    // sites list: the plant, up to date with HQ's chain.
    let sites = json(hq, &["sites", "list", "--json"]);
    let row = &sites[0];
    assert_eq!(row["site"], "plant");
    let plant_id = json(plant, &["status", "--json"])["server_id"].clone();
    assert_eq!(row["server_id"], plant_id);
    assert_eq!(row["computers"], 2);
    assert_eq!(row["installed"].as_i64(), Some(installed));
    assert_eq!(row["bundles_behind"], 0);
    let imports = json(plant, &["imports", "list", "--json"]);
    assert_eq!(row["applied_anchor"], imports[1]["to_anchor"]);
    // Without --site: the roll-up (HQ has no computers of its own).
    let rollup = json(hq, &["report", "computers", "--json"]);
    assert_eq!(rollup.as_array().unwrap().len(), 2);
    assert!(
        rollup
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["site"] == "plant")
    );

    // HQ's next export: the lost file goes again; a full one skips what
    // the plant holds.
    let plan = json(hq, &["export", "--dry-run", "--to", "plant", "--json"]);
    assert_eq!(plan["receipt_sites"], serde_json::json!(["plant"]));
    let c = &plan["content_plan"];
    assert_eq!(
        (c["resent_files"].as_u64(), c["resent_bytes"].as_u64()),
        (Some(1), Some(lost_size)),
        "{plan}"
    );
    assert_eq!(c["new_files"], 0, "{plan}");
    let full = json(
        hq,
        &["export", "--dry-run", "--to", "plant", "--full", "--json"],
    );
    let c = &full["content_plan"];
    let held = (files.len() - 1) as u64;
    assert_eq!(c["skipped_files"].as_u64(), Some(held), "{full}");
    assert_eq!(c["resent_files"], 1, "{full}");
    assert_eq!(c["new_files"], 0, "{full}");
    // The text plan says the same and writes nothing.
    let text = gs(hq, &["export", "--dry-run", "--to", "plant"])
        .ok()
        .stdout;
    assert!(
        text.contains("re-sent 1") && text.contains("nothing was written"),
        "{text}"
    );
    assert_eq!(
        gs(hq, &["exports", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The real export carries exactly the lost file; the plant gets it back.
    let b3 = l.bundle_in("b-0003", &[]);
    assert_eq!(
        fs::read_to_string(b3.join("content.json"))
            .unwrap()
            .matches("\"sha1\"")
            .count(),
        1
    );
    assert!(
        fs::read_to_string(b3.join("content.json"))
            .unwrap()
            .contains(&lost_sha1)
    );
    assert!(lost.is_file());
    gs(plant, &["check"]).ok();

    // The next report continues the chain; HQ applies it.
    let r2 = l.report_out("r-0002", &[]);
    let m2: serde_json::Value =
        serde_json::from_slice(&fs::read(r2.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["seq"], 2);
    assert_eq!(m2["from_anchor"], manifest["to_anchor"]);
    assert_eq!(m2["report"]["content_missing"], 0);
    // Events: the first report carried the clients' events; the second,
    // with no client activity since, none.
    assert!(
        manifest["report"]["events"].as_u64().unwrap() > 0,
        "{manifest}"
    );
    assert_eq!(m2["report"]["events"], 0, "{m2}");
    gs(hq, &["import", p(&r2)]).ok();
    let row = &json(hq, &["sites", "list", "--json"])[0];
    assert_eq!(row["bundles_behind"], 0);

    // The receipt checks presence and size; --hash-content finds a file
    // changed in place too (each to a destination of its own).
    let victim = &files[1];
    let mut bytes = fs::read(victim).unwrap();
    bytes[0] ^= 0xff;
    fs::write(victim, &bytes).unwrap();
    let victim_sha1 = victim
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_ascii_uppercase();
    let receipt = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&fs::read(dir.join("report.json")).unwrap())
            .unwrap()["receipt"]
            .clone()
    };
    let sized = l.report_to("r-size", "audit", &[]);
    let r = receipt(&sized);
    assert_eq!(r["check"], "size");
    assert!(
        r["held"]
            .as_array()
            .unwrap()
            .contains(&victim_sha1.clone().into()),
        "{r}"
    );
    let hashed = l.report_to("r-hash", "audit2", &["--hash-content"]);
    let r = receipt(&hashed);
    assert_eq!(r["check"], "digest");
    assert_eq!(r["corrupt"], serde_json::json!([victim_sha1]), "{r}");
    let _ = b1;
}

/// Each chain rule on report bundles, with HQ's store unchanged by every
/// refusal; exit codes by class.
#[test]
fn report_chain_rules_leave_hq_unchanged() {
    let l = Loop::new(10, "0");
    let (hq, plant) = (&l.lab.hq, &l.lab.plant);
    l.bundle_in("b-0001", &[]);
    let r1 = l.report_out("r-0001", &[]);
    // A copy of the plant before its second report: a fork source.
    let twin = l.lab.root.join("plant-twin");
    copy_tree(plant, &twin);
    let r2 = l.report_out("r-0002", &[]);
    let r3 = l.report_out("r-0003", &[]);
    let refused = |b: &Path, extra: &[&str], rule: &str| {
        let before = hq_sites(hq);
        let mut args = vec!["import", p(b)];
        args.extend_from_slice(extra);
        let r = gs(hq, &args).fails(3, &format!("[{rule}]"));
        assert_eq!(hq_sites(hq), before, "{rule}: HQ's store changed");
        r
    };
    // Gap: seq 2 is missing.
    refused(&r3, &[], "gap");
    // A crash before the report's transaction commits leaves nothing.
    let before = hq_sites(hq);
    let crashed = common::gs_env(
        hq,
        &["import", p(&r1)],
        &[("GAPSYNC_FAILPOINT", "report-import-before-commit")],
    );
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    assert!(
        crashed
            .stderr
            .contains("failpoint report-import-before-commit"),
        "{}",
        crashed.stderr
    );
    assert_eq!(hq_sites(hq), before);
    // `verify` with HQ's store places the report in its chain.
    let v = gs(hq, &["verify", p(&r1)]).ok().stdout;
    assert!(v.contains("the first link from its source"), "{v}");
    gs(hq, &["verify", p(&r3)]).fails(3, "[gap]");
    gs(hq, &["import", p(&r1)]).ok();
    refused(&r3, &[], "gap");
    gs(hq, &["import", p(&r2)]).ok();
    // Fork: another report with seq 2.
    let fork = l.lab.root.join("r-fork");
    gs(
        &twin,
        &[
            "export",
            "--report",
            "--key",
            p(&l.site_key),
            "--to",
            "hq",
            "--out",
            p(&fork),
        ],
    )
    .ok();
    refused(&fork, &[], "fork");
    // Tampered byte in report.json.
    let tampered = l.lab.root.join("r-tampered");
    copy_tree(&r3, &tampered);
    let mut bytes = fs::read(tampered.join("report.json")).unwrap();
    let i = bytes.iter().position(|b| *b == b'p').unwrap();
    bytes[i] = b'q';
    fs::write(tampered.join("report.json"), &bytes).unwrap();
    refused(&tampered, &[], "hash-mismatch");
    // Expired (re-signed with other dates).
    let expired = l.lab.root.join("r-expired");
    copy_tree(&r3, &expired);
    resign(&expired, &l.site_key, |m| {
        m.created = "2026-01-01T00:00:00Z".into();
        m.expires = "2026-01-31T00:00:00Z".into();
    });
    refused(&expired, &[], "expired");
    // Untrusted key.
    let other = l.lab.root.join("other");
    gs_plain(&["key", "generate", "--out", p(&other)]).ok();
    let untrusted = l.lab.root.join("r-untrusted");
    copy_tree(&r3, &untrusted);
    resign(&untrusted, &other.with_extension("key"), |_| {});
    refused(&untrusted, &[], "unknown-key");
    // A report that starts the chain again needs --rebase; after it, the
    // skipped seq 3 is a replay.
    let r4 = l.report_out("r-0004", &["--full"]);
    refused(&r4, &[], "rebase-required");
    gs(hq, &["import", p(&r4), "--rebase"]).ok();
    refused(&r3, &[], "replay");
    // Own bundle: HQ's own report, signed by a key it trusts.
    let own = l.lab.root.join("r-own");
    gs(
        hq,
        &[
            "export",
            "--report",
            "--key",
            p(&l.lab.key),
            "--to",
            "x",
            "--out",
            p(&own),
        ],
    )
    .ok();
    gs(hq, &["trust", "add", p(&l.lab.pubkey), "--label", "hq-own"]).ok();
    refused(&own, &[], "own-bundle");
    // A data import of a report refuses with the kind (through the
    // library's data import, as `import` dispatches reports itself).
    {
        let before = hq_sites(hq);
        let mut store = Store::open_writer(hq).unwrap();
        let e = gapsync::airgap::import::import(
            &mut store,
            &gapsync::airgap::import::ImportOptions {
                layout: gapsync::airgap::format::Layout::discover(&r1).unwrap(),
                dry_run: false,
                plan_from_first_volume: false,
                allow_expired: false,
                rebase: false,
                prompt: None,
            },
            &gapsync::progress::Silent,
        )
        .unwrap_err();
        assert!(
            matches!(&e, gapsync::error::Error::Verification { rule: "wrong-kind", detail } if detail.contains("report bundle")),
            "{e}"
        );
        drop(store);
        assert_eq!(hq_sites(hq), before);
    }
    // Usage errors exit 2 before any work.
    gs(
        plant,
        &[
            "export",
            "--report",
            "--to",
            "hq",
            "--out",
            "x",
            "--volume-size",
            "4G",
            "--key",
            p(&l.site_key),
        ],
    )
    .fails(2, "--volume-size");
    gs(
        plant,
        &[
            "export",
            "--hash-content",
            "--key",
            p(&l.site_key),
            "--out",
            "y",
        ],
    )
    .fails(2, "--report");
    gs(hq, &["report", "updates", "--site", "nowhere"]).fails(1, "unknown site");
}

/// A revoked site key: HQ applied a trust statement revoking it (carried
/// by a data bundle from another server HQ trusts); the site's next report
/// is refused and HQ's store is unchanged.
#[test]
fn a_report_signed_by_a_revoked_key_is_refused() {
    let l = Loop::new(5, "0");
    let hq = &l.lab.hq;
    l.bundle_in("b-0001", &[]);
    let r1 = l.report_out("r-0001", &[]);
    // `root`, a server HQ trusts, revokes the site key in a bundle to HQ.
    let (_t, root) = common::new_store("root", "autonomous");
    let root_key = l.lab.root.join("root");
    gs_plain(&["key", "generate", "--out", p(&root_key)]).ok();
    gs(
        hq,
        &[
            "trust",
            "add",
            p(&root_key.with_extension("pub")),
            "--label",
            "root",
        ],
    )
    .ok();
    let site_key_id = json(hq, &["trust", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "plant")
        .map(|k| k["key_id"].as_str().unwrap().to_string())
        .unwrap();
    gs(
        &root,
        &[
            "trust",
            "statement",
            "--key",
            p(&root_key.with_extension("key")),
            "--revoke",
            &site_key_id,
        ],
    )
    .ok();
    let rb = l.lab.root.join("root-b1");
    gs(
        &root,
        &[
            "export",
            "--key",
            p(&root_key.with_extension("key")),
            "--to",
            "hq",
            "--out",
            p(&rb),
        ],
    )
    .ok();
    gs(hq, &["import", p(&rb)]).ok();
    let before = hq_sites(hq);
    gs(hq, &["import", p(&r1)]).fails(3, "[revoked-key]");
    assert_eq!(hq_sites(hq), before);
    let r = gs(hq, &["import", p(&r1), "--json"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["error"]["rule"], "revoked-key");
}
