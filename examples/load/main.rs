//! Load harness of `gapsync serve` (docs/performance.md, "serve under
//! load"). Builds its own stores in a fresh folder, starts one server on
//! loopback and prints a table. Not a test: run it by hand, release build:
//!
//!     cargo build --release && cargo run --release --example load
//!     cargo run --release --example load -- --idle 500 --slow 50 --syncs 10
//!
//! Flags (defaults are the numbers): `--gapsync PATH` (default: the
//! `gapsync` beside this example's target folder), `--work DIR`, `--updates
//! N`, `--content-bytes SIZE`, `--header-timeout SECS`, `--idle N`, `--slow
//! N`, `--slow-interval SECS`, `--ordinary N`, `--syncs N`, `--downloaders
//! N`, `--connections N`, `--files N`, `--throughput-secs SECS`,
//! `--throughput-clients N`. Exits 1 when a behaviour fails (an ordinary
//! request not answered 2xx, a slow connection not closed, a sync or a
//! range failed, a replica not equal).

mod harness;

use std::path::PathBuf;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn default_gapsync() -> PathBuf {
    // target/<profile>/examples/load -> target/<profile>/gapsync
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("gapsync")))
        .unwrap_or_else(|| PathBuf::from("gapsync"))
}

fn run() -> Result<bool, String> {
    let mut cfg = harness::Config {
        gapsync: default_gapsync(),
        work: PathBuf::new(),
        updates: 500,
        content_bytes: "128M".into(),
        serve_args: Vec::new(),
        header_timeout: Duration::from_secs(20),
        idle: 2000,
        slow: 200,
        slow_interval: Duration::from_secs(3),
        ordinary_clients: 4,
        syncs: 50,
        downloaders: 100,
        connections_per_downloader: 7,
        range: 1024 * 1024,
        files_per_downloader: 2,
        throughput_for: Duration::from_secs(10),
        throughput_clients: 8,
    };
    let mut work: Option<PathBuf> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--gapsync" => cfg.gapsync = PathBuf::from(value()?),
            "--work" => work = Some(PathBuf::from(value()?)),
            "--updates" => cfg.updates = num(value()?)? as u32,
            "--content-bytes" => cfg.content_bytes = value()?,
            "--header-timeout" => cfg.header_timeout = Duration::from_secs(num(value()?)?),
            "--idle" => cfg.idle = num(value()?)? as usize,
            "--slow" => cfg.slow = num(value()?)? as usize,
            "--slow-interval" => cfg.slow_interval = Duration::from_secs(num(value()?)?),
            "--ordinary" => cfg.ordinary_clients = num(value()?)? as usize,
            "--syncs" => cfg.syncs = num(value()?)? as usize,
            "--downloaders" => cfg.downloaders = num(value()?)? as usize,
            "--connections" => cfg.connections_per_downloader = num(value()?)? as usize,
            "--files" => cfg.files_per_downloader = num(value()?)? as usize,
            "--throughput-secs" => cfg.throughput_for = Duration::from_secs(num(value()?)?),
            "--throughput-clients" => cfg.throughput_clients = num(value()?)? as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    raise_open_files();
    let tmp;
    cfg.work = match work {
        Some(w) => w,
        None => {
            tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            tmp.path().join("load")
        }
    };
    eprintln!(
        "load: {} idle + {} slow connections, {} syncs, {} downloaders x {}; gapsync {}",
        cfg.idle,
        cfg.slow,
        cfg.syncs,
        cfg.downloaders,
        cfg.connections_per_downloader,
        cfg.gapsync.display()
    );
    let report = harness::run(&cfg)?;
    println!(
        "gapsync serve under load — {} — {} cores\n",
        now(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{}", report.table(&cfg));
    let p1 = &report.phase1;
    let p2 = &report.phase2;
    let answered = p1
        .statuses
        .iter()
        .filter(|(k, _)| k.as_str() == "200" || k.as_str() == "206")
        .map(|(_, v)| v)
        .sum::<usize>();
    let mut ok = true;
    let mut fail = |what: String| {
        eprintln!("load: FAILED: {what}");
        ok = false;
    };
    if answered != p1.ordinary {
        fail(format!("ordinary requests: {:?}", p1.statuses));
    }
    if p1.slow_closed != p1.slow_opened {
        fail(format!(
            "{} of {} slow connections closed",
            p1.slow_closed, p1.slow_opened
        ));
    }
    if !p2.syncs_failed.is_empty() {
        fail(format!("syncs: {}", p2.syncs_failed.join("\n")));
    }
    if p2.replicas_equal != p2.syncs {
        fail(format!(
            "{} of {} replicas equal",
            p2.replicas_equal, p2.syncs
        ));
    }
    if p2.ranges_failed > 0 {
        fail(format!("{} ranges failed", p2.ranges_failed));
    }
    Ok(ok)
}

fn now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// 2,000 connections need more than the usual 1,024 open files, on this
/// side and in the server (which inherits the limit): soft limit up to
/// the hard one.
#[cfg(unix)]
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(not(unix))]
fn raise_open_files() {}
