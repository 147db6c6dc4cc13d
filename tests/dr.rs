//! Disaster-recovery snapshots (`gapsync snapshot`, `gapsync restore`)
//! driving the real binary: a site store with Windows clients, their
//! status, a downstream server and an import chain is snapshotted while
//! `serve` runs, destroyed and restored; the restored server is the same
//! server to its clients (a no-change rescan with the old cache and cookie
//! gets nothing new and no ServerChanged), to its downstream server (which
//! continues its incremental sync) and to HQ (the next bundle of its chain
//! imports). Incremental snapshots carry only new content and restore as a
//! chain; tampered, wrongly signed or incomplete snapshots are refused
//! (exit 3) and nothing is created; a restore killed at failpoints or by
//! SIGKILL at any moment leaves nothing at NEWDIR or the complete store.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};

use common::*;

/// A running `gapsync serve`; killed on drop.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(store: &Path, listen: &str) -> Served {
        // The port of a server just stopped may take a moment to be free.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Served::try_start(store, listen) {
                Some(s) => return s,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                None => panic!("serve did not start on {listen}"),
            }
        }
    }

    fn try_start(store: &Path, listen: &str) -> Option<Served> {
        let mut child = Command::new(bin())
            .arg("--server")
            .arg(store)
            .args(["serve", "--listen", listen])
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
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        match line.trim().strip_prefix("listening on ") {
            Some(url) => Some(Served {
                url: url.to_string(),
                child,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// `127.0.0.1:PORT` of the server.
    fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gapsync args...` (no store selected) with `env`.
fn gs_env_plain(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("GAPSYNC_SERVER")
        .env_remove("GAPSYNC_FAILPOINT");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run gapsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A key pair `root/NAME.key`, `root/NAME.pub`.
fn key_pair(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = root.join(name);
    gs_plain(&["key", "generate", "--out", p(&prefix)]).ok();
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

fn snapshot_json(store: &Path, key: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["snapshot", "--key", p(key), "--out", p(out), "--json"];
    a.extend_from_slice(extra);
    gs(store, &a).ok().json()
}

fn restore(snap: &Path, trust: &Path, into: &Path, extra: &[&str]) -> Run {
    let mut a = vec!["restore", p(snap), "--trust", p(trust), "--into", p(into)];
    a.extend_from_slice(extra);
    gs_plain(&a)
}

/// Everything an administrator sees of a store, local state included
/// (journal timestamps are the store's own, so they compare too).
fn full_view(dir: &Path) -> String {
    let mut s = snapshot_db(dir);
    for args in [
        &["computers", "list", "--json"][..],
        &["report", "computers", "--json"],
        &["report", "updates", "--json"],
        &["events", "list", "--json"],
        &["imports", "list", "--json"],
        &["exports", "list", "--json"],
        &["config", "get", "targeting"],
    ] {
        s.push_str(&gs(dir, args).ok().stdout);
    }
    s.push_str(&db_rows(
        dir,
        "SELECT server_id, replica, last_anchor FROM downstream_servers ORDER BY 1",
    ));
    s.push_str(&db_rows(dir, "SELECT key, value FROM config ORDER BY key"));
    s.push_str(&db_rows(
        dir,
        "SELECT upstream_url, sync_anchor, deployment_anchor FROM upstream_state ORDER BY 1",
    ));
    s
}

/// Rows of a query on a store's database, as text.
fn db_rows(dir: &Path, sql: &str) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("gapsync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = conn.prepare(sql).unwrap();
    let n = st.column_count();
    let rows: Vec<String> = st
        .query_map([], |r| {
            let mut cols = Vec::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                cols.push(format!("{v:?}"));
            }
            Ok(cols.join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    format!("{sql}\n{}\n", rows.join("\n"))
}

/// The content tree: paths and bytes.
fn content_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    tree(&dir.join("content"))
}

fn check_clean(dir: &Path) {
    assert_eq!(
        gs(dir, &["check", "--json"]).ok().json()["problems"],
        serde_json::json!([]),
        "check of {}",
        dir.display()
    );
}

/// Folders an interrupted restore or snapshot left beside `path`.
fn debris_beside(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect()
}

fn machine(n: u32) -> Machine {
    Machine::new(
        &format!("5eed0000-0000-4000-8000-{n:012}"),
        &format!("pc{n}.plant.invalid"),
    )
}

fn software(dir: &Path) -> Vec<String> {
    gs(dir, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

/// The scenario, end to end.
#[test]
fn a_restored_site_is_the_same_server_to_clients_downstreams_and_hq() {
    let lab = Lab::new(60, "6M");
    let (dr_key, dr_pub) = key_pair(&lab.root, "dr");
    let ids = software(&lab.hq);
    assert!(ids.len() >= 6);
    for id in &ids[..3] {
        gs(&lab.hq, &["approve", id, "--group", "All Computers"]).ok();
    }
    let b1 = lab.export("b1", &["--to", "plant"]);
    gs(&lab.plant, &["import", p(&b1)]).ok();
    gs(
        &lab.plant,
        &[
            "computers",
            "add",
            "ws-001",
            "--group",
            "Unassigned Computers",
        ],
    )
    .ok();

    // The site serves: a Windows client scans, installs and reports; a
    // downstream gapsync syncs from it.
    let srv = Served::start(&lab.plant, "127.0.0.1:0");
    let listen = srv.addr();
    let mut w = Wua::new(&srv.url, machine(1), WuaOptions::default());
    w.scan().expect("first scan");
    let installed = w.install().expect("install");
    assert!(installed.iter().any(|i| i.ok), "{installed:?}");
    w.scan().expect("rescan after the install");
    let (_t_down, down) = new_store("down", "replica");
    let r = gs(
        &down,
        &["sync", "--upstream", &srv.url, "--replica", "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["full"], true, "{r}");

    // The snapshot is taken while serve runs (it blocks nothing: the
    // client scans right after it).
    let before = full_view(&lab.plant);
    let content_before = content_tree(&lab.plant);
    let snap = lab.root.join("snap-1");
    let s = snapshot_json(&lab.plant, &dr_key, &snap, &[]);
    assert_eq!(s["incremental"], false, "{s}");
    assert_eq!(s["computers"], 2, "{s}");
    assert!(s["content_files"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["content_files"], s["store_content_files"], "{s}");
    let again = w.scan().expect("a scan right after the snapshot");
    assert_eq!((again.new, again.changed), (0, 0));
    // Stock verification works on a snapshot as on any bundle.
    gs_plain(&["verify", p(&snap), "--trust", p(&dr_pub)]).ok();

    // HQ goes on: the next link of the plant's chain.
    gs(&lab.hq, &["approve", &ids[4], "--group", "All Computers"]).ok();
    let b2 = lab.export("b2", &["--to", "plant"]);

    // Disaster (what the site recorded after the snapshot is lost).
    drop(srv);
    std::fs::remove_dir_all(&lab.plant).unwrap();

    let r = restore(&snap, &dr_pub, &lab.plant, &["--json"]).ok().json();
    assert_eq!(r["chain"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(full_view(&lab.plant), before, "the restored store differs");
    assert_eq!(content_tree(&lab.plant), content_before);
    check_clean(&lab.plant);
    assert!(debris_beside(&lab.plant).is_empty());

    // The client: its old cache and cookie, a no-change rescan.
    let srv = Served::start(&lab.plant, &listen);
    w.set_server(&srv.url);
    let requests_before = w.stats().requests;
    let rescan = w.scan().expect("rescan of the restored server");
    assert_eq!((rescan.new, rescan.changed, rescan.out_of_scope), (0, 0, 0));
    assert!(
        w.stats().recoveries.is_empty(),
        "no ServerChanged, no InvalidCookie: {:?}",
        w.stats().recoveries
    );
    assert_eq!(w.stats().refreshed, 0);
    assert!(w.stats().requests > requests_before);

    // The downstream server continues its incremental sync.
    let r = gs(
        &down,
        &["sync", "--upstream", &srv.url, "--replica", "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["full"], false, "{r}");
    assert_eq!(r["anchors_reset"], 0, "{r}");
    assert_eq!(r["revisions_added"], 0, "{r}");
    assert_eq!(r["update_data_requests"], 0, "{r}");

    // HQ's next bundle (exported before the restore) imports, and reaches
    // the downstream server and the client incrementally.
    let imp = gs(&lab.plant, &["import", p(&b2), "--json"]).ok().json();
    assert_eq!(imp["chain"], "next", "{imp}");
    let r = gs(
        &down,
        &["sync", "--upstream", &srv.url, "--replica", "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["full"], false, "{r}");
    assert_eq!(r["anchors_reset"], 0, "{r}");
    assert_eq!(r["deployments_created"], 1, "{r}");
    w.scan().expect("scan after HQ's next bundle");
    assert!(
        w.stats().recoveries.is_empty(),
        "{:?}",
        w.stats().recoveries
    );
    check_clean(&lab.plant);
}

/// An incremental snapshot carries only the content its base does not
/// hold; the chain restores to the same store; a missing or wrong base is
/// refused naming the file.
#[test]
fn incremental_snapshots_carry_only_new_content_and_restore_as_a_chain() {
    let lab = Lab::new(40, "4M");
    let (key, pubkey) = key_pair(&lab.root, "dr");
    let s1 = lab.root.join("s1");
    let j1 = snapshot_json(&lab.hq, &key, &s1, &[]);
    let held = j1["store_content_files"].as_u64().unwrap();
    assert!(held > 0);
    lab.generate(20, "2M", 2);
    gs(&lab.hq, &["groups", "add", "After"]).ok();
    let s2 = lab.root.join("s2");
    let j2 = snapshot_json(&lab.hq, &key, &s2, &["--base", p(&s1)]);
    assert_eq!(j2["incremental"], true);
    assert_eq!(j2["seq"], 2);
    let now = j2["store_content_files"].as_u64().unwrap();
    assert!(now > held);
    assert_eq!(j2["content_files"].as_u64().unwrap(), now - held, "{j2}");
    // Nothing new: an incremental snapshot without content.
    let s3 = lab.root.join("s3");
    let j3 = snapshot_json(&lab.hq, &key, &s3, &["--base", p(&s2)]);
    assert_eq!(j3["content_files"], 0, "{j3}");

    let into = lab.root.join("restored");
    // No base, a wrong base, a base too many: exit 3, nothing created.
    let e = restore(&s2, &pubkey, &into, &[]).fails(3, "snapshot-base-missing");
    assert!(
        e.stderr
            .contains(&format!("{}", s2.join("manifest.json").display())),
        "{}",
        e.stderr
    );
    let (_t, other) = new_store("other", "autonomous");
    let so = lab.root.join("so");
    snapshot_json(&other, &key, &so, &[]);
    restore(&s2, &pubkey, &into, &["--base", p(&so)]).fails(3, "snapshot-base-mismatch");
    restore(&s3, &pubkey, &into, &["--base", p(&s2)]).fails(3, "snapshot-base-missing");
    restore(&s2, &pubkey, &into, &["--base", p(&s1), "--base", p(&s3)])
        .fails(3, "snapshot-base-mismatch");
    assert!(!into.exists());
    assert!(debris_beside(&into).is_empty());
    // A base of another store is refused when snapshotting too.
    gs(
        &other,
        &[
            "snapshot",
            "--key",
            p(&key),
            "--out",
            p(&lab.root.join("x")),
            "--base",
            p(&s1),
        ],
    )
    .fails(3, "snapshot-base-mismatch");

    // The chain, bases in any order.
    let r = restore(
        &s3,
        &pubkey,
        &into,
        &["--base", p(&s1), "--base", p(&s2), "--json"],
    )
    .ok()
    .json();
    assert_eq!(r["chain"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["content_files"].as_u64().unwrap(), now);
    assert_eq!(full_view(&into), full_view(&lab.hq));
    assert_eq!(content_tree(&into), content_tree(&lab.hq));
    check_clean(&into);

    // `verify --server` places data and report bundles in the store's
    // chains; a snapshot has none (it is restored, never imported).
    gs(&lab.hq, &["trust", "add", p(&pubkey)]).ok();
    let v = gs(&lab.hq, &["verify", p(&s1)]).ok();
    assert!(v.stdout.contains("no chain position"), "{}", v.stdout);
    assert!(
        !v.stdout.contains("chain position for server"),
        "{}",
        v.stdout
    );
}

/// Tampered bytes, a wrong key, bad targets and the wrong command are
/// refused before anything is created.
#[test]
fn tampered_or_untrusted_snapshots_and_bad_targets_create_nothing() {
    let lab = Lab::new(30, "3M");
    let (key, pubkey) = key_pair(&lab.root, "dr");
    let (_other_key, other_pub) = key_pair(&lab.root, "other");
    let snap = lab.root.join("snap");
    snapshot_json(&lab.hq, &key, &snap, &[]);
    let into = lab.root.join("restored");
    let nothing = |what: &str| {
        assert!(!into.exists(), "{what}: {} exists", into.display());
        assert!(debris_beside(&into).is_empty(), "{what}: debris left");
    };

    // An untrusted key.
    restore(&snap, &other_pub, &into, &[]).fails(3, "verification failed");
    nothing("untrusted key");

    // A byte flipped in the database pack, a content file, content.json.
    let content_file = tree(&snap.join("content"))
        .into_iter()
        .next()
        .map(|(rel, _)| snap.join("content").join(rel))
        .expect("a content file");
    for (file, rule) in [
        (snap.join("gapsync.db.zst"), "hash-mismatch"),
        (content_file, "hash-mismatch"),
        (snap.join("content.json"), "hash-mismatch"),
        (snap.join("manifest.json"), "hash-mismatch"),
    ] {
        let bad = lab.root.join("bad");
        copy_tree(&snap, &bad);
        let rel = file.strip_prefix(&snap).unwrap();
        flip_byte(&bad.join(rel), 100);
        restore(&bad, &pubkey, &into, &[]).fails(3, rule);
        nothing(&format!("{} tampered", rel.display()));
        std::fs::remove_dir_all(&bad).unwrap();
    }

    // Targets: not empty, inside a store.
    std::fs::create_dir_all(&into).unwrap();
    std::fs::write(into.join("keep"), b"x").unwrap();
    restore(&snap, &pubkey, &into, &[]).fails(1, "not empty");
    assert_eq!(std::fs::read(into.join("keep")).unwrap(), b"x");
    std::fs::remove_dir_all(&into).unwrap();
    restore(&snap, &pubkey, &lab.hq.join("content/inner"), &[])
        .fails(1, "inside the gapsync server store");
    // An empty folder is fine.
    std::fs::create_dir_all(&into).unwrap();
    restore(&snap, &pubkey, &into, &[]).ok();
    check_clean(&into);

    // A snapshot is not imported, and a data bundle not restored.
    gs(&lab.plant, &["trust", "add", p(&pubkey), "--label", "dr"]).ok();
    gs(&lab.plant, &["import", p(&snap)]).fails(3, "gapsync restore");
    let b1 = lab.export("b1", &[]);
    restore(&b1, &lab.pubkey, &lab.root.join("r2"), &[]).fails(3, "wrong-kind");
    // Flags are checked while parsing.
    gs(
        &lab.hq,
        &[
            "snapshot",
            "--key",
            p(&key),
            "--out",
            p(&lab.root.join("s9")),
            "--expires",
            "0s",
        ],
    )
    .fails(2, "--expires");
    gs_plain(&["restore", p(&snap), "--into", p(&lab.root.join("r3"))]).fails(2, "--trust");
}

/// A restore killed at each failpoint, and by SIGKILL at pseudo-random
/// moments of the copy, leaves nothing at NEWDIR (or its empty folder) or
/// the complete store; the next restore removes what the killed one left
/// and completes.
#[test]
fn a_killed_restore_leaves_nothing_or_the_complete_store() {
    let lab = Lab::new(200, "40M");
    gs(&lab.hq, &["groups", "add", "Pilot"]).ok();
    let (key, pubkey) = key_pair(&lab.root, "dr");
    let snap = lab.root.join("snap");
    snapshot_json(&lab.hq, &key, &snap, &[]);
    let want = full_view(&lab.hq);
    let want_content = content_tree(&lab.hq);
    let complete = |into: &Path, what: &str| {
        assert_eq!(full_view(into), want, "{what}: not the snapshot's store");
        assert_eq!(content_tree(into), want_content, "{what}");
        check_clean(into);
    };
    let restore_args = |into: &Path| -> Vec<String> {
        vec![
            "-q".into(),
            "restore".into(),
            p(&snap).into(),
            "--trust".into(),
            p(&pubkey).into(),
            "--into".into(),
            p(into).into(),
        ]
    };

    for (i, point) in [
        "restore-after-database",
        "restore-mid-content",
        "restore-before-rename",
    ]
    .into_iter()
    .enumerate()
    {
        let into = lab.root.join(format!("fp-{i}"));
        // One of them into an empty folder that exists.
        if i == 2 {
            std::fs::create_dir_all(&into).unwrap();
        }
        let args = restore_args(&into);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = gs_env_plain(&args, &[("GAPSYNC_FAILPOINT", point)]);
        assert_ne!(r.code, 0, "{point}");
        assert!(r.stderr.contains(point), "{}", r.stderr);
        if i == 2 {
            assert_eq!(std::fs::read_dir(&into).unwrap().count(), 0, "{point}");
        } else {
            assert!(!into.exists(), "{point}");
        }
        assert_eq!(debris_beside(&into).len(), 1, "{point}: the killed build");
        gs_env_plain(&args, &[]).ok();
        assert!(debris_beside(&into).is_empty(), "{point}: debris removed");
        complete(&into, point);
    }

    // SIGKILL by timer.
    let t = Instant::now();
    let timing = lab.root.join("timing");
    restore(&snap, &pubkey, &timing, &[]).ok();
    let full = t.elapsed().as_millis().max(20) as u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut nothing, mut whole) = (0, 0);
    for i in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Mostly before the restore would end (the timing run was the
        // first, on a cold cache), so most kills land mid-copy.
        let delay = seed % full;
        let into = lab.root.join(format!("kill-{i}"));
        let mut child = Command::new(bin())
            .args(restore_args(&into))
            .env_remove("GAPSYNC_SERVER")
            .env_remove("GAPSYNC_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL on unix
        let _ = child.wait();
        let what = format!("kill {i} after {delay} ms");
        if into.exists() {
            whole += 1;
            complete(&into, &what);
        } else {
            nothing += 1;
            let args = restore_args(&into);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gs_env_plain(&args, &[]).ok();
            assert!(debris_beside(&into).is_empty(), "{what}");
            complete(&into, &what);
        }
    }
    eprintln!(
        "SIGKILL: 8 kills over {full} ms restores: {nothing} left nothing, {whole} the complete store"
    );
}
