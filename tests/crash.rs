//! Crash injection: `import` is killed (deterministic failpoints, and
//! SIGKILL at random moments) and afterwards the store holds exactly the
//! old or exactly the new state, `check` finds no problem, and re-running
//! the import completes it. Also: an import onto a filesystem that fills up
//! fails cleanly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What an admin sees of the replicated state (journal timestamps aside).
fn view(dir: &Path) -> String {
    let mut s = String::new();
    for args in [
        &["status", "--json"][..],
        &["updates", "list", "--json"],
        &["deployments", "list", "--json"],
        &["deployments", "list", "--removed", "--json"],
        &["groups", "list", "--json"],
    ] {
        s.push_str(&gs(dir, args).ok().stdout);
    }
    // Recorded content: what the database says is there (orphans aside).
    s
}

/// The shared lab, a full bundle of its hq, and the views of a replica
/// before and after importing it (the only two states a crash may leave).
struct Setup {
    lab: Lab,
    bundle: PathBuf,
    new_view: String,
    old_view: String,
}

/// A fresh replica `root/dir` (server name `down`) trusting `key_pub`.
fn fresh_down(root: &Path, dir: &str, key_pub: &Path) -> PathBuf {
    replica_trusting(root, dir, "down", key_pub)
}

fn setup(updates: u32, content: &str) -> Setup {
    let lab = Lab::new(updates, content);
    gs(&lab.hq, &["groups", "add", "Pilot"]).ok();
    let bundle = lab.export("b", &[]);
    let probe = fresh_down(&lab.root, "probe", &lab.pubkey);
    let old_view = view(&probe);
    gs(&probe, &["import", bundle.to_str().unwrap()]).ok();
    let new_view = view(&probe);
    Setup {
        lab,
        bundle,
        new_view,
        old_view,
    }
}

/// Replaces one server's id (both spellings) by another's.
fn normalise(v: &str, dir_id: &str, probe_id: &str) -> String {
    v.replace(dir_id, probe_id)
        .replace(&dir_id.replace('-', ""), &probe_id.replace('-', ""))
}

fn server_id(dir: &Path) -> String {
    gs(dir, &["status", "--json"]).ok().json()["server_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// After a crash: old or new state, check clean, re-run completes.
fn after_crash(s: &Setup, dir: &Path, what: &str) -> bool {
    let probe_id = server_id(&s.lab.root.join("probe"));
    let id = server_id(dir);
    let v = normalise(&view(dir), &id, &probe_id);
    let old = normalise(&s.old_view, &id, &probe_id);
    let new = s.new_view.clone();
    let was_new = v == new;
    assert!(
        v == old || was_new,
        "{what}: neither the old nor the new state"
    );
    let c = gs(dir, &["check", "--json"]).ok().json();
    assert_eq!(
        c["problems"],
        serde_json::json!([]),
        "{what}: check found problems"
    );
    let r = gs(dir, &["import", s.bundle.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(
        r["status"],
        if was_new {
            "already-imported"
        } else {
            "imported"
        },
        "{what}"
    );
    assert_eq!(
        normalise(&view(dir), &id, &probe_id),
        s.new_view,
        "{what}: re-run did not complete"
    );
    assert_eq!(
        gs(dir, &["check", "--json"]).ok().json()["problems"],
        serde_json::json!([])
    );
    content_files_are_whole(dir);
    was_new
}

#[test]
fn failpoints_leave_old_or_new_state_and_rerun_completes() {
    let s = setup(200, "8M");
    for point in [
        "import-after-metadata",
        "import-before-content-rename",
        "import-before-commit",
    ] {
        let dir = fresh_down(&s.lab.root, point, &s.lab.pubkey);
        let r = gs_env(
            &dir,
            &["import", s.bundle.to_str().unwrap()],
            &[("GAPSYNC_FAILPOINT", point)],
        );
        assert_ne!(r.code, 0, "{point}");
        assert!(r.stderr.contains(point), "{}", r.stderr);
        assert!(
            !after_crash(&s, &dir, point),
            "{point}: a failpoint before commit must leave the old state"
        );
    }
}

#[test]
fn sigkill_at_random_moments() {
    let s = setup(1500, "48M");
    // How long an import takes here.
    let t = Instant::now();
    let probe = fresh_down(&s.lab.root, "timing", &s.lab.pubkey);
    gs(&probe, &["import", s.bundle.to_str().unwrap()]).ok();
    let full = t.elapsed().as_millis().max(20) as u64;
    let kills = 16u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut old, mut new) = (0, 0);
    for i in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % (full + full / 4);
        let dir = fresh_down(&s.lab.root, &format!("kill-{i}"), &s.lab.pubkey);
        let mut child = Command::new(bin())
            .arg("--server")
            .arg(&dir)
            .args(["-q", "import", s.bundle.to_str().unwrap()])
            .env_remove("GAPSYNC_FAILPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL on unix
        let _ = child.wait();
        if after_crash(&s, &dir, &format!("kill {i} after {delay} ms")) {
            new += 1;
        } else {
            old += 1;
        }
    }
    eprintln!(
        "SIGKILL: {kills} kills over {full} ms imports: {old} left the old state, {new} the new one"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn disk_full_fails_cleanly() {
    // A small tmpfs holds the disconnected store (CI runs as root).
    let s = setup(3000, "6M");
    let mnt = s.lab.root.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&mnt)
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "mounting a tmpfs needs root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let dir = fresh_down(&mnt, "down", &s.lab.pubkey);
    let before = snapshot(&dir);
    let r = gs(&dir, &["import", s.bundle.to_str().unwrap()]);
    assert_ne!(r.code, 0, "the import cannot fit");
    eprintln!("disk full: {}", r.stderr.trim());
    assert!(
        r.stderr.contains("space") || r.stderr.contains("full") || r.stderr.contains("No space"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&dir), before, "old state intact");
    assert_eq!(
        std::fs::read_dir(dir.join("staging")).unwrap().count(),
        0,
        "no staging debris"
    );
    assert_eq!(
        gs(&dir, &["check", "--json"]).ok().json()["problems"],
        serde_json::json!([])
    );
    // Too much content for the free space is refused before anything is written.
    let s2 = setup(50, "20M");
    let dir2 = fresh_down(&mnt, "down2", &s2.lab.pubkey);
    gs(&dir2, &["import", s2.bundle.to_str().unwrap()]).fails(1, "not enough space");
}

/// `sync` killed at failpoints and at random moments: afterwards `check`
/// finds no problem, the store holds the old state, the synced metadata
/// (content still to come: metadata and content commit separately, as WSUS
/// downloads content after metadata), or the complete new state; and
/// re-running the sync completes it to equality with the upstream.
#[cfg(target_os = "linux")]
#[test]
fn sync_killed_at_any_moment_recovers() {
    use std::io::BufRead;
    let (t, up) = new_store("hq", "autonomous");
    gs(
        &up,
        &[
            "catalog",
            "generate",
            "--updates",
            "600",
            "--content-bytes",
            "24M",
        ],
    )
    .ok();
    gs(&up, &["groups", "add", "Pilot"]).ok();
    let mut server = Command::new(bin())
        .arg("--server")
        .arg(&up)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let want = gs(&up, &["updates", "list", "--json"]).ok().stdout;
    let fresh = |name: &str| {
        let d = t.path().join(name);
        gs_plain(&["init", d.to_str().unwrap(), "--mode", "replica"]).ok();
        d
    };
    let finish = |d: &Path, what: &str| {
        let c = gs(d, &["check", "--json"]).ok().json();
        assert_eq!(c["problems"], serde_json::json!([]), "{what}");
        let n = gs(d, &["status", "--json"]).ok().json()["updates"]["total"]
            .as_u64()
            .unwrap();
        assert!(
            n == 0 || gs(d, &["updates", "list", "--json"]).ok().stdout == want,
            "{what}: partial metadata"
        );
        gs(d, &["-q", "sync", "--upstream", &url, "--replica"]).ok();
        assert_eq!(
            gs(d, &["updates", "list", "--json"]).ok().stdout,
            want,
            "{what}: re-run did not complete"
        );
        assert_eq!(
            tree(&d.join("content")),
            tree(&up.join("content")),
            "{what}: content"
        );
        assert_eq!(
            gs(d, &["check", "--json"]).ok().json()["problems"],
            serde_json::json!([])
        );
    };
    for point in ["sync-before-commit", "sync-content-before-commit"] {
        let d = fresh(point);
        let r = gs_env(
            &d,
            &["sync", "--upstream", &url, "--replica"],
            &[("GAPSYNC_FAILPOINT", point)],
        );
        assert_ne!(r.code, 0, "{point}");
        finish(&d, point);
    }
    let t0 = Instant::now();
    let d = fresh("timing");
    gs(&d, &["-q", "sync", "--upstream", &url, "--replica"]).ok();
    let full = t0.elapsed().as_millis().max(20) as u64;
    let mut seed = 0x1234_5678_9abc_def1u64;
    for i in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % full;
        let d = fresh(&format!("sync-kill-{i}"));
        let mut child = Command::new(bin())
            .arg("--server")
            .arg(&d)
            .args(["-q", "sync", "--upstream", &url, "--replica"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        finish(&d, &format!("sync kill {i} after {delay} ms of {full}"));
    }
}
