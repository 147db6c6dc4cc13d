//! MS-WUSP scan benchmark (docs/performance.md, "MS-WUSP scans"): the
//! simulated Windows Update Agent (`gapsync::protocols::wusp::client`) as
//! load generator against one `gapsync serve` per catalog size. Prints
//! first scans and no-change rescans per second, server CPU per scan, peak
//! server RSS and the ratios against the goals. Linux (reads /proc). Run it
//! by hand, release build:
//!
//!     cargo build --release && cargo run --release --example wua_bench
//!     cargo run --release --example wua_bench -- --smoke
//!
//! Flags: `--gapsync PATH` (default: the `gapsync` beside this example's
//! target folder), `--work DIR` (default: a fresh temporary folder),
//! `--catalogs 5000,50000`, `--applicable N` (200), `--clients N` (1000),
//! `--concurrent N` (20), `--smoke` (catalogs 300,1500; 20 applicable; 20
//! clients, 4 at once). Exits 1 when a scan failed or a no-change rescan
//! got something new.

#[path = "bench.rs"]
mod bench;

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("wua_bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn default_gapsync() -> PathBuf {
    // target/<profile>/examples/wua_bench -> target/<profile>/gapsync
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("gapsync")))
        .unwrap_or_else(|| PathBuf::from("gapsync"))
}

fn run() -> Result<bool, String> {
    let mut cfg = bench::Config {
        gapsync: default_gapsync(),
        work: PathBuf::new(),
        catalogs: vec![5_000, 50_000],
        applicable: 200,
        clients: 1_000,
        concurrent: 20,
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
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag}: {v:?} is not a positive number"))
        };
        match flag.as_str() {
            "--gapsync" => cfg.gapsync = PathBuf::from(value()?),
            "--work" => work = Some(PathBuf::from(value()?)),
            "--catalogs" => {
                cfg.catalogs = value()?
                    .split(',')
                    .map(|v| num(v.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--applicable" => cfg.applicable = num(value()?)? as usize,
            "--clients" => cfg.clients = num(value()?)? as usize,
            "--concurrent" => cfg.concurrent = num(value()?)? as usize,
            "--smoke" => {
                cfg.catalogs = vec![300, 1_500];
                cfg.applicable = 20;
                cfg.clients = 20;
                cfg.concurrent = 4;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let tmp = tempfile_dir()?;
    cfg.work = work.unwrap_or_else(|| tmp.clone());
    let rows = bench::run(&cfg)?;
    print!("{}", bench::table(&cfg, &rows));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut ok = true;
    for r in &rows {
        for e in r.first.errors.iter().chain(&r.rescan.errors) {
            eprintln!("wua_bench: {} updates: {e}", r.updates);
            ok = false;
        }
        if r.rescan.new > 0 {
            eprintln!(
                "wua_bench: {} updates: no-change rescans got {} new revisions",
                r.updates, r.rescan.new
            );
            ok = false;
        }
    }
    Ok(ok)
}

/// A fresh folder under the system temporary folder.
fn tempfile_dir() -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("gapsync-wua-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}
