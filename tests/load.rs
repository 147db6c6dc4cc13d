//! The upstream server under load and abuse: 50 downstream servers sync at
//! once from one `gapsync serve` and all end equal to it, while slow clients
//! trickle bytes at it; the server's memory stays bounded. Loopback only;
//! every loop is bounded in count and time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(store: &Path) -> Served {
    let mut child = Command::new(bin())
        .arg("--server")
        .arg(store)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("GAPSYNC_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    Served { child, url }
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn fifty_concurrent_downstream_syncs_all_complete_while_slow_clients_trickle() {
    let (t, up) = new_store("hq", "autonomous");
    gs(
        &up,
        &[
            "catalog",
            "generate",
            "--updates",
            "80",
            "--content-bytes",
            "2M",
        ],
    )
    .ok();
    gs(&up, &["groups", "add", "Pilot"]).ok();
    let list = gs(&up, &["updates", "list", "--json", "--kind", "software"])
        .ok()
        .json();
    for u in list
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| !u["title"].as_str().unwrap().starts_with("HIDDEN"))
        .take(5)
    {
        gs(
            &up,
            &["approve", u["id"].as_str().unwrap(), "--group", "Pilot"],
        )
        .ok();
    }
    let server = serve(&up);
    let host = server.url.trim_start_matches("http://").to_string();

    // Slow clients: each sends a request head one byte every 200 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(&host) else { return };
                let head = b"POST /ServerSyncWebService/ServerSyncWebService.asmx HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
                let started = Instant::now();
                for b in head.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    if s.write_all(&[*b]).is_err() {
                        break; // the server cut us off: fine
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();

    // 50 downstream replicas sync at once.
    let n = 50;
    let downs: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = t.path().join(format!("dss-{i:02}"));
            gs_plain(&[
                "init",
                d.to_str().unwrap(),
                "--name",
                &format!("dss-{i}"),
                "--mode",
                "replica",
            ])
            .ok();
            d
        })
        .collect();
    let started = Instant::now();
    let children: Vec<Child> = downs
        .iter()
        .map(|d| {
            Command::new(bin())
                .arg("--server")
                .arg(d)
                .args([
                    "-q",
                    "sync",
                    "--upstream",
                    &server.url,
                    "--replica",
                    "--json",
                ])
                .env_remove("GAPSYNC_SERVER")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sync")
        })
        .collect();
    let mut failures = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(format!("dss-{i}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in slow {
        let _ = s.join();
    }
    assert!(
        failures.is_empty(),
        "{} of {n} syncs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // All equal to the upstream.
    let want_updates = gs(&up, &["updates", "list", "--json"]).ok().stdout;
    let want_deployments = gs(&up, &["deployments", "list", "--json"]).ok().stdout;
    let want_content = tree(&up.join("content"));
    for d in &downs {
        assert_eq!(
            gs(d, &["updates", "list", "--json"]).ok().stdout,
            want_updates,
            "{}",
            d.display()
        );
        assert_eq!(
            gs(d, &["deployments", "list", "--json"]).ok().stdout,
            want_deployments,
            "{}",
            d.display()
        );
        assert_eq!(tree(&d.join("content")), want_content, "{}", d.display());
    }
    // The server recorded each downstream and its memory stayed bounded.
    let rss = peak_rss_kib(server.child.id());
    eprintln!(
        "50 concurrent syncs in {took:?} with 8 slow clients; server peak RSS {} MiB",
        rss / 1024
    );
    assert!(rss > 0 && rss < 256 * 1024, "server peak RSS {rss} KiB");
    let conn = rusqlite::Connection::open(up.join("gapsync.db")).unwrap();
    let recorded: i64 = conn
        .query_row("SELECT COUNT(*) FROM downstream_servers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recorded, n as i64);
}

#[path = "../examples/load/harness.rs"]
mod harness;

/// The load harness (`examples/load`, numbers in docs/performance.md) in
/// small: idle keep-alive and slowloris connections held while ordinary
/// requests are answered, the slow ones closed by the header timeout;
/// concurrent syncs while downloaders fetch ranges over 7 connections
/// each, all complete and equal; throughput and RSS measured. Asserts the
/// behaviours, never a time.
#[cfg(target_os = "linux")]
#[test]
fn load_harness_smoke_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = harness::Config {
        gapsync: bin().into(),
        work: tmp.path().join("load"),
        updates: 30,
        content_bytes: "6M".into(),
        serve_args: vec!["--idle-timeout".into(), "120".into()],
        header_timeout: Duration::from_secs(2),
        idle: 100,
        slow: 10,
        slow_interval: Duration::from_millis(300),
        ordinary_clients: 2,
        syncs: 3,
        downloaders: 4,
        connections_per_downloader: 7,
        range: 256 * 1024,
        files_per_downloader: 2,
        throughput_for: Duration::from_secs(1),
        throughput_clients: 2,
    };
    let r = harness::run(&cfg).unwrap_or_else(|e| panic!("harness: {e}"));
    let log = std::fs::read_to_string(cfg.work.join("serve.log")).unwrap_or_default();
    eprintln!("{}", r.table(&cfg));
    let p1 = &r.phase1;
    assert!(p1.ordinary > 0);
    let answered: usize = ["200", "206"]
        .iter()
        .filter_map(|s| p1.statuses.get(*s))
        .sum();
    assert_eq!(
        answered, p1.ordinary,
        "every ordinary request answered: {:?}",
        p1.statuses
    );
    assert_eq!(
        (p1.idle_opened, p1.idle_still_open),
        (100, 100),
        "idle connections held"
    );
    assert_eq!(p1.slow_opened, 10);
    assert_eq!(
        p1.slow_closed, 10,
        "slow heads closed by the header timeout; log:\n{log}"
    );
    assert!(log.contains("request head not complete in time"), "{log}");
    let p2 = &r.phase2;
    assert!(p2.syncs_failed.is_empty(), "{:?}", p2.syncs_failed);
    assert_eq!(p2.replicas_equal, 3);
    assert!(p2.ranges > 0);
    assert_eq!(p2.ranges_failed, 0);
    assert_eq!(r.throughput_errors, 0);
    assert!(
        r.rps_revision_list_full > 0.0
            && r.rps_revision_list_anchor > 0.0
            && r.rps_content_range > 0.0
    );
    assert!(r.peak_rss_kib > 0);
}
