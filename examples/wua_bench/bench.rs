//! The MS-WUSP scan benchmark's harness (`examples/wua_bench`, numbers in
//! docs/performance.md "MS-WUSP scans"; its smoke run is a test in
//! tests/wua.rs). For each catalog size: a fresh store with a generated
//! catalog of `updates - applicable` updates and `applicable` updates of
//! the benchmark's own product and detectoid; one `gapsync serve`; then
//! `clients` simulated Windows Update Agents (`concurrent` at once) do a
//! first scan each, then a no-change rescan each. The clients' machines
//! evaluate the generated detectoids false and the benchmark's true, so
//! every catalog gives each client the same scope (the applicable updates,
//! the categories and the detectoids) and only the catalog around it
//! grows: what a rescan costs the server beyond the client's own scope is
//! per-catalog work. Server CPU is read from `/proc/PID/stat` (utime +
//! stime, 100 ticks per second) around each phase, peak RSS from
//! `/proc/PID/status` (VmHWM): Linux only.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};
use gapsync::store::Store;

#[derive(Debug, Clone)]
pub struct Config {
    pub gapsync: PathBuf,
    pub work: PathBuf,
    /// Catalog sizes (software and driver updates), each above `applicable`.
    pub catalogs: Vec<u64>,
    /// Updates applicable to the clients, in every catalog.
    pub applicable: usize,
    pub clients: usize,
    pub concurrent: usize,
}

/// One phase (first scans or rescans) over every client.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub scans: usize,
    pub secs: f64,
    /// Server CPU (user + system) during the phase.
    pub cpu_secs: f64,
    pub requests: u64,
    /// Revisions sent as new, all clients together.
    pub new: usize,
    pub errors: Vec<String>,
}

impl Phase {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.scans as f64 / self.secs
        } else {
            0.0
        }
    }
    pub fn cpu_ms_per_scan(&self) -> f64 {
        if self.scans > 0 {
            self.cpu_secs * 1000.0 / self.scans as f64
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub updates: u64,
    /// Revisions each client holds after its first scan.
    pub scope: usize,
    pub first: Phase,
    pub rescan: Phase,
    pub peak_rss_kib: u64,
}

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

fn gs(cfg: &Config, dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(&cfg.gapsync)
        .arg("--server")
        .arg(dir)
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .output()
        .map_err(|e| format!("{}: {e}", cfg.gapsync.display()))?;
    if !out.status.success() {
        return Err(format!(
            "gapsync {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn serve(cfg: &Config, dir: &Path) -> Result<Served, String> {
    let log = std::fs::File::create(dir.with_extension("serve.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(&cfg.gapsync)
        .arg("--server")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("GAPSYNC_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("serve: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
        .ok_or_else(|| format!("serve printed {line:?}"))?;
    Ok(Served { child, url })
}

/// (utime + stime) of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fixed_id(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("gapsync-wua-bench/{name}").as_bytes(),
    )
    .to_string()
}

fn doc(id: &str, kind: &str, title: &str, prereqs: &str, deployable: bool) -> String {
    let ed = if deployable {
        " ExplicitlyDeployable=\"true\""
    } else {
        ""
    };
    format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><upd:Properties UpdateType=\"{kind}\"{ed} DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" CreationDate=\"2026-10-01T00:00:00.000Z\"></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>{prereqs}</upd:Update>"
    )
}

/// The benchmark's detectoid, product and `n` applicable updates, as
/// XML files in `dir`.
fn write_applicable(dir: &Path, n: usize) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let detectoid = fixed_id("detectoid");
    let product = fixed_id("product");
    let w = |name: String, x: String| std::fs::write(dir.join(name), x).map_err(|e| e.to_string());
    w(
        "detectoid.xml".into(),
        doc(&detectoid, "Detectoid", "Bench x64 machines", "", false),
    )?;
    w(
        "product.xml".into(),
        doc(&product, "Category", "Bench product", "", false),
    )?;
    let prereqs = format!(
        "<upd:Relationships><upd:Prerequisites><upd:UpdateIdentity UpdateID=\"{detectoid}\" /><upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{product}\" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"
    );
    for i in 0..n {
        let id = fixed_id(&format!("update/{i}"));
        w(
            format!("u{i}.xml"),
            doc(
                &id,
                "Software",
                &format!("Bench update {i}"),
                &prereqs,
                true,
            ),
        )?;
    }
    Ok(detectoid)
}

/// The machine of client `k`: every detectoid but the benchmark's false.
fn machine(k: usize, off: &[String]) -> Machine {
    let mut m = Machine::new(
        &format!("be4c0000-0000-4000-8000-{k:012}"),
        &format!("bench{k}.lab.invalid"),
    );
    m.not_applicable = off.iter().cloned().collect();
    m
}

/// Runs every client through `scan` on `concurrent` threads.
fn phase(
    cfg: &Config,
    slots: &[Mutex<Option<Wua>>],
    pid: u32,
    make: &(dyn Fn(usize) -> Wua + Sync),
) -> Phase {
    let next = AtomicUsize::new(0);
    let results: Mutex<Phase> = Mutex::new(Phase::default());
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cfg.concurrent.max(1) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(k) else { break };
                    let mut w = slot
                        .lock()
                        .ok()
                        .and_then(|mut s| s.take())
                        .unwrap_or_else(|| make(k));
                    let before = w.stats().requests;
                    let r = w.scan();
                    let requests = w.stats().requests - before;
                    if let Ok(mut p) = results.lock() {
                        p.requests += requests;
                        match r {
                            Ok(r) => {
                                p.scans += 1;
                                p.new += r.new;
                            }
                            Err(e) => p.errors.push(format!("client {k}: {e}")),
                        }
                    }
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(w);
                    }
                }
            });
        }
    });
    let mut p = results.into_inner().unwrap_or_default();
    p.secs = t0.elapsed().as_secs_f64();
    p.cpu_secs = cpu_secs(pid) - cpu0;
    p
}

/// One catalog size.
fn one(cfg: &Config, updates: u64) -> Result<Row, String> {
    let generated = updates
        .checked_sub(cfg.applicable as u64)
        .filter(|g| *g > 0)
        .ok_or_else(|| format!("catalog of {updates} is not above --applicable"))?;
    let dir = cfg.work.join(format!("catalog-{updates}"));
    let init = Command::new(&cfg.gapsync)
        .arg("init")
        .arg(&dir)
        .args(["--name", "bench", "--mode", "autonomous"])
        .env_remove("GAPSYNC_SERVER")
        .output()
        .map_err(|e| e.to_string())?;
    if !init.status.success() {
        return Err(format!("init: {}", String::from_utf8_lossy(&init.stderr)));
    }
    let g = generated.to_string();
    gs(
        cfg,
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            &g,
            "--content-bytes",
            "0",
            "--seed",
            "1",
        ],
    )?;
    let docs = cfg.work.join(format!("applicable-{updates}"));
    let on = write_applicable(&docs, cfg.applicable)?;
    gs(
        cfg,
        &dir,
        &["catalog", "add", docs.to_str().unwrap_or_default()],
    )?;
    let off: Vec<String> = Store::open_read_only(&dir)
        .and_then(|s| s.list_updates(&Default::default()))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|u| u.kind == "detectoid" && u.id != on)
        .map(|u| u.id.to_ascii_lowercase())
        .collect();
    let srv = serve(cfg, &dir)?;
    let pid = srv.child.id();
    let slots: Vec<Mutex<Option<Wua>>> = (0..cfg.clients).map(|_| Mutex::new(None)).collect();
    let url = srv.url.clone();
    let opts = WuaOptions {
        timeout: Duration::from_secs(120),
        ..WuaOptions::default()
    };
    let make = |k: usize| Wua::new(&url, machine(k, &off), opts.clone());
    let first = phase(cfg, &slots, pid, &make);
    let scope = slots
        .first()
        .and_then(|s| {
            s.lock()
                .ok()
                .and_then(|w| w.as_ref().map(|w| w.cache().len()))
        })
        .unwrap_or(0);
    let rescan = phase(cfg, &slots, pid, &make);
    let peak = peak_rss_kib(pid);
    Ok(Row {
        updates,
        scope,
        first,
        rescan,
        peak_rss_kib: peak,
    })
}

pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    std::fs::create_dir_all(&cfg.work).map_err(|e| format!("{}: {e}", cfg.work.display()))?;
    cfg.catalogs.iter().map(|&n| one(cfg, n)).collect()
}

/// The table and the ratios against the goals.
pub fn table(cfg: &Config, rows: &[Row]) -> String {
    let mut s = format!(
        "MS-WUSP scans: {} clients, {} at once, {} applicable updates each\n\n",
        cfg.clients, cfg.concurrent, cfg.applicable
    );
    s.push_str("| catalog | client scope | first scans/s | server CPU ms / first scan | no-change rescans/s | server CPU ms / rescan | requests / rescan | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.2} | {:.1} | {:.3} | {:.1} | {:.0} |\n",
            r.updates,
            r.scope,
            r.first.per_sec(),
            r.first.cpu_ms_per_scan(),
            r.rescan.per_sec(),
            r.rescan.cpu_ms_per_scan(),
            r.rescan.requests as f64 / r.rescan.scans.max(1) as f64,
            r.peak_rss_kib as f64 / 1024.0
        ));
    }
    if let (Some(a), Some(b)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
        let rescan = ratio(b.rescan.cpu_ms_per_scan(), a.rescan.cpu_ms_per_scan());
        let first = ratio(b.first.cpu_ms_per_scan(), a.first.cpu_ms_per_scan());
        let rss = rows.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        s.push_str(&format!(
            "\nno-change rescan CPU, {} / {} updates: {rescan:.2} (goal <= 1.5: {})\nfirst scan CPU, {} / {} updates: {first:.2}\npeak RSS {rss:.0} MiB (goal <= 256: {})\n",
            b.updates,
            a.updates,
            if rescan <= 1.5 { "met" } else { "MISSED" },
            b.updates,
            a.updates,
            if rss <= 256.0 { "met" } else { "MISSED" }
        ));
    }
    s
}
