//! The load harness of `gapsync serve` (docs/performance.md, "serve under
//! load"): one server on loopback, driven by this process and by `gapsync
//! sync` child processes. Used by `examples/load` (the full run, numbers
//! for the record) and by `tests/load.rs` (a seconds-long smoke run that
//! asserts behaviours, never times).
//!
//! Phases:
//! 1. idle keep-alive connections (each did one request) and slowloris
//!    connections (one head byte per interval) are held open while a few
//!    clients send ordinary requests (GetAuthConfig, GetRevisionIdList,
//!    Range GETs of content): every ordinary answer, its latency, and when
//!    the server closed each slow connection;
//! 2. concurrent downstream syncs (`gapsync sync --replica`) while
//!    downloaders fetch content in 1 MiB ranges over several connections
//!    each (every range compared with the upstream file): all complete,
//!    every replica equal to the upstream;
//! 3. requests per second for GetRevisionIdList and content Range GETs
//!    over keep-alive connections; the server's peak RSS (VmHWM).
//!
//! Every loop is bounded in count and time; only loopback is used.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SSS: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
const AUTH: &str = "/DssAuthWebService/DssAuthWebService.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const AUTH_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";
const DSS: &str = "6f1c2f6e-3f0b-4d3a-9b1e-0d2f6a1c5e12";
/// A request that takes longer than this counts as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `gapsync` binary.
    pub gapsync: PathBuf,
    /// A fresh folder for the stores and the server log.
    pub work: PathBuf,
    /// `catalog generate` of the upstream: updates and content bytes.
    pub updates: u32,
    pub content_bytes: String,
    /// Extra `serve` flags.
    pub serve_args: Vec<String>,
    /// The server's header timeout (its flag is added to `serve_args`).
    pub header_timeout: Duration,
    // Phase 1
    pub idle: usize,
    pub slow: usize,
    pub slow_interval: Duration,
    pub ordinary_clients: usize,
    // Phase 2
    pub syncs: usize,
    pub downloaders: usize,
    pub connections_per_downloader: usize,
    pub range: u64,
    pub files_per_downloader: usize,
    // Phase 3
    pub throughput_for: Duration,
    pub throughput_clients: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Phase1 {
    pub seconds: f64,
    pub idle_opened: usize,
    /// Idle connections the server still held at the end.
    pub idle_still_open: usize,
    pub slow_opened: usize,
    /// Slow connections the server closed.
    pub slow_closed: usize,
    /// Longest a slow connection was held, from its first byte.
    pub slow_held_max: f64,
    pub ordinary: usize,
    /// Ordinary requests by status ("timeout" and "error" for none).
    pub statuses: BTreeMap<String, usize>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Phase2 {
    pub seconds: f64,
    pub syncs: usize,
    pub syncs_failed: Vec<String>,
    pub replicas_equal: usize,
    pub downloads: usize,
    pub ranges: usize,
    pub ranges_failed: usize,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub revisions: usize,
    pub content_files: usize,
    pub content_bytes: u64,
    pub phase1: Phase1,
    pub phase2: Phase2,
    /// Requests/s: GetRevisionIdList from the start, GetRevisionIdList
    /// with the current anchor (nothing new), content Range GETs.
    pub rps_revision_list_full: f64,
    pub rps_revision_list_anchor: f64,
    pub rps_content_range: f64,
    pub throughput_errors: usize,
    /// Server peak RSS (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Server RSS right after phase 1 (all its connections open), KiB.
    pub rss_phase1_kib: u64,
}

impl Report {
    /// The table for docs/performance.md.
    pub fn table(&self, cfg: &Config) -> String {
        let p1 = &self.phase1;
        let p2 = &self.phase2;
        let statuses: Vec<String> = p1
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let mut t = String::new();
        t += &format!(
            "upstream: {} revisions, {} content files, {:.0} MiB\n\n",
            self.revisions,
            self.content_files,
            self.content_bytes as f64 / 1048576.0
        );
        t += "| measure | result |\n|---|---|\n";
        t += &format!(
            "| phase 1 ({:.0} s): idle keep-alive connections held | {} opened, {} still open at the end |\n",
            p1.seconds, p1.idle_opened, p1.idle_still_open
        );
        t += &format!(
            "| slowloris connections (1 byte / {:.1} s), header timeout {} s | {} opened, {} closed by the server, longest held {:.1} s |\n",
            cfg.slow_interval.as_secs_f64(),
            cfg.header_timeout.as_secs(),
            p1.slow_opened,
            p1.slow_closed,
            p1.slow_held_max
        );
        t += &format!(
            "| ordinary requests meanwhile ({} clients) | {} sent; {} |\n",
            cfg.ordinary_clients,
            p1.ordinary,
            statuses.join(", ")
        );
        t += &format!(
            "| ordinary latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |\n",
            p1.p50_ms, p1.p99_ms, p1.max_ms
        );
        t += &format!(
            "| server RSS with all phase-1 connections open | {} MiB |\n",
            self.rss_phase1_kib / 1024
        );
        t += &format!(
            "| phase 2 ({:.0} s): downstream syncs | {} run, {} failed, {} replicas equal to the upstream |\n",
            p2.seconds,
            p2.syncs,
            p2.syncs_failed.len(),
            p2.replicas_equal
        );
        t += &format!(
            "| content downloads meanwhile ({} clients x {} connections, {} KiB ranges) | {} files, {} ranges, {} failed, {:.0} MiB |\n",
            cfg.downloaders,
            cfg.connections_per_downloader,
            cfg.range / 1024,
            p2.downloads,
            p2.ranges,
            p2.ranges_failed,
            p2.bytes as f64 / 1048576.0
        );
        t += &format!(
            "| GetRevisionIdList, from the start ({} keep-alive clients) | {:.0} requests/s |\n",
            cfg.throughput_clients, self.rps_revision_list_full
        );
        t += &format!(
            "| GetRevisionIdList, with the current anchor | {:.0} requests/s |\n",
            self.rps_revision_list_anchor
        );
        t += &format!(
            "| /Content {} KiB Range GETs | {:.0} requests/s |\n",
            cfg.range / 1024,
            self.rps_content_range
        );
        t += &format!(
            "| server peak RSS (VmHWM) over the run | {} MiB |\n",
            self.peak_rss_kib / 1024
        );
        t
    }
}

// ---------------------------------------------------------------------------
// The server and the stores
// ---------------------------------------------------------------------------

fn gs(cfg: &Config, store: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(&cfg.gapsync);
    if let Some(s) = store {
        c.arg("--server").arg(s);
    }
    let out = c
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .output()
        .map_err(|e| format!("{}: {e}", cfg.gapsync.display()))?;
    if !out.status.success() {
        return Err(format!(
            "gapsync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The upstream: a generated catalog with content, a group, approvals.
fn upstream(cfg: &Config) -> Result<PathBuf, String> {
    let up = cfg.work.join("upstream");
    let s = up.to_str().ok_or("work path is not UTF-8")?;
    gs(
        cfg,
        None,
        &["init", s, "--name", "hq", "--mode", "autonomous"],
    )?;
    let n = cfg.updates.to_string();
    gs(
        cfg,
        Some(&up),
        &[
            "catalog",
            "generate",
            "--updates",
            &n,
            "--content-bytes",
            &cfg.content_bytes,
            "--seed",
            "1",
        ],
    )?;
    gs(cfg, Some(&up), &["groups", "add", "Pilot"])?;
    let list: serde_json::Value = serde_json::from_str(&gs(
        cfg,
        Some(&up),
        &["updates", "list", "--json", "--kind", "software"],
    )?)
    .map_err(|e| e.to_string())?;
    let ids: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| !u["title"].as_str().unwrap_or("").starts_with("HIDDEN"))
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .take(5)
        .collect();
    for id in ids {
        gs(cfg, Some(&up), &["approve", &id, "--group", "Pilot"])?;
    }
    Ok(up)
}

/// A running `gapsync serve`; killed on drop.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn serve(cfg: &Config, store: &Path) -> Result<Served, String> {
    use std::io::BufRead;
    let log = cfg.work.join("serve.log");
    let mut child = Command::new(&cfg.gapsync)
        .arg("--server")
        .arg(store)
        .args(["serve", "--listen", "127.0.0.1:0", "--header-timeout"])
        .arg(cfg.header_timeout.as_secs().max(1).to_string())
        .args(&cfg.serve_args)
        .env_remove("GAPSYNC_SERVER")
        .env_remove("GAPSYNC_SERVE_REQUEST_TIMEOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&log).map_err(|e| e.to_string())?,
        ))
        .spawn()
        .map_err(|e| format!("start serve: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok(Served { child, addr, log }),
        None => {
            let _ = child.kill();
            Err(format!(
                "serve did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        }
    }
}

/// Peak resident memory of a process (VmHWM), or its current one (VmRSS),
/// in KiB.
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A content file of the upstream: URL path, file on disk, size.
#[derive(Debug, Clone)]
struct ContentFile {
    url: String,
    file: PathBuf,
    size: u64,
}

fn content_files(store: &Path) -> Vec<ContentFile> {
    let mut out = Vec::new();
    let root = store.join("content");
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(ContentFile {
                url: format!(
                    "/Content/{}/{}",
                    dir.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ),
                file: f.path(),
                size,
            });
        }
    }
    out.sort_by(|a, b| b.size.cmp(&a.size).then(a.url.cmp(&b.url)));
    out
}

/// Names and sizes of a store's content files.
fn content_listing(store: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = content_files(store)
        .into_iter()
        .map(|f| (f.url, f.size))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// A small HTTP/1.1 client
// ---------------------------------------------------------------------------

struct Resp {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

impl Resp {
    fn field(&self, name: &str) -> Option<String> {
        let t = String::from_utf8_lossy(&self.body);
        let open = format!("<{name}>");
        let start = t.find(&open)? + open.len();
        let end = t[start..].find(&format!("</{name}>"))? + start;
        Some(t[start..end].to_string())
    }
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(s),
        })
    }

    /// Sends one request, reads its response.
    async fn send(&mut self, req: &[u8]) -> std::io::Result<Resp> {
        self.stream.get_mut().write_all(req).await?;
        let mut status = 0;
        let mut len = 0usize;
        let mut close = false;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if first {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                first = false;
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        Ok(Resp {
            status,
            body,
            close,
        })
    }

    /// True when the server has closed the connection (the socket reads
    /// its end, or fails).
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.stream.get_ref().try_read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

fn soap_req(path: &str, action: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>{inner}</soap:Body></soap:Envelope>"
    )
}

fn auth_config_req() -> Vec<u8> {
    soap_req(
        SSS,
        &format!("{NS}/GetAuthConfig"),
        &envelope(&format!("<GetAuthConfig xmlns=\"{NS}\"/>")),
    )
}

fn revision_list_req(cookie: &str, anchor: Option<&str>) -> Vec<u8> {
    let a = anchor
        .map(|a| format!("<Anchor>{a}</Anchor>"))
        .unwrap_or_default();
    soap_req(
        SSS,
        &format!("{NS}/GetRevisionIdList"),
        &envelope(&format!(
            "<GetRevisionIdList xmlns=\"{NS}\"><cookie><Expiration>2099-01-01T00:00:00Z</Expiration><EncryptedData>{cookie}</EncryptedData></cookie><filter>{a}<GetConfig>false</GetConfig></filter></GetRevisionIdList>"
        )),
    )
}

fn range_req(url: &str, start: u64, end: u64) -> Vec<u8> {
    format!("GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={start}-{end}\r\n\r\n")
        .into_bytes()
}

/// GetAuthorizationCookie then GetCookie: the cookie.
async fn login(addr: SocketAddr) -> Result<String, String> {
    let mut c = Client::connect(addr).await.map_err(|e| e.to_string())?;
    let r = c
        .send(&soap_req(
            AUTH,
            &format!("{AUTH_NS}/GetAuthorizationCookie"),
            &envelope(&format!(
                "<GetAuthorizationCookie xmlns=\"{AUTH_NS}\"><accountName>load.test</accountName><accountGuid>{DSS}</accountGuid></GetAuthorizationCookie>"
            )),
        ))
        .await
        .map_err(|e| e.to_string())?;
    let data = r.field("CookieData").ok_or("no CookieData")?;
    let r = c
        .send(&soap_req(
            SSS,
            &format!("{NS}/GetCookie"),
            &envelope(&format!(
                "<GetCookie xmlns=\"{NS}\"><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId><CookieData>{data}</CookieData></AuthorizationCookie></authCookies><protocolVersion>1.20</protocolVersion></GetCookie>"
            )),
        ))
        .await
        .map_err(|e| e.to_string())?;
    r.field("EncryptedData")
        .ok_or_else(|| "no cookie".to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Runs the three phases. Errors are failures of the harness itself (a
/// store that cannot be made, a server that does not start).
pub fn run(cfg: &Config) -> Result<Report, String> {
    std::fs::create_dir_all(&cfg.work).map_err(|e| e.to_string())?;
    let up = upstream(cfg)?;
    let server = serve(cfg, &up)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut files = content_files(&up);
    files.retain(|f| f.size > 0);
    if files.is_empty() {
        return Err("the upstream has no content".into());
    }
    let mut report = Report {
        content_files: files.len(),
        content_bytes: files.iter().map(|f| f.size).sum(),
        ..Report::default()
    };
    let addr = server.addr;
    let cookie = rt.block_on(login(addr))?;
    let (full_count, anchor) = rt.block_on(async {
        let mut c = Client::connect(addr).await.map_err(|e| e.to_string())?;
        let r = c
            .send(&revision_list_req(&cookie, None))
            .await
            .map_err(|e| e.to_string())?;
        let n = String::from_utf8_lossy(&r.body)
            .matches("<UpdateID>")
            .count();
        Ok::<_, String>((n, r.field("Anchor").ok_or("no anchor")?))
    })?;
    report.revisions = full_count;
    report.phase1 = rt.block_on(phase1(cfg, addr, &cookie, &files));
    report.rss_phase1_kib = rss_kib(server.pid(), "VmRSS");
    report.phase2 = phase2(cfg, &rt, &server, &up, &files)?;
    let (full, with_anchor, range, errors) =
        rt.block_on(throughput(cfg, addr, &cookie, &anchor, &files));
    report.rps_revision_list_full = full;
    report.rps_revision_list_anchor = with_anchor;
    report.rps_content_range = range;
    report.throughput_errors = errors;
    report.peak_rss_kib = rss_kib(server.pid(), "VmHWM");
    Ok(report)
}

async fn phase1(cfg: &Config, addr: SocketAddr, cookie: &str, files: &[ContentFile]) -> Phase1 {
    let started = Instant::now();
    let duration = cfg.header_timeout + cfg.slow_interval * 2 + Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));

    // Idle keep-alive connections: one request each, then silence.
    let mut idle = Vec::with_capacity(cfg.idle);
    for _ in 0..cfg.idle {
        if let Ok(mut c) = Client::connect(addr).await
            && let Ok(r) = c.send(&auth_config_req()).await
            && r.status == 200
            && !r.close
        {
            idle.push(c);
        }
    }
    let idle_opened = idle.len();

    // Slowloris: a head, one byte per interval.
    let slow: Vec<_> = (0..cfg.slow)
        .map(|i| {
            let interval = cfg.slow_interval;
            let limit = duration + cfg.header_timeout;
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return None;
                };
                let head = format!(
                    "GET /Content/00/{i:040} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {}",
                    "a".repeat(10_000)
                );
                let first = Instant::now();
                let mut buf = [0u8; 256];
                for b in head.bytes() {
                    if first.elapsed() > limit {
                        return Some((false, first.elapsed()));
                    }
                    if s.write_all(&[b]).await.is_err() {
                        return Some((true, first.elapsed()));
                    }
                    // Wait one interval, noticing a close meanwhile.
                    match tokio::time::timeout(interval, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some((true, first.elapsed())),
                        Ok(Ok(_)) => return Some((true, first.elapsed())),
                        Err(_) => {}
                    }
                }
                Some((false, first.elapsed()))
            })
        })
        .collect();

    // Ordinary clients: a few keep-alive requests per connection.
    let results = Arc::new(std::sync::Mutex::new(Vec::<(String, f64)>::new()));
    let ordinary: Vec<_> = (0..cfg.ordinary_clients)
        .map(|k| {
            let stop = stop.clone();
            let results = results.clone();
            let cookie = cookie.to_string();
            let files = files.to_vec();
            let range = cfg.range;
            tokio::spawn(async move {
                let mut n = k;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Client::connect(addr).await else {
                        results.lock().unwrap().push(("error".into(), 0.0));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for _ in 0..5 {
                        n += 1;
                        let (req, ok) = match n % 3 {
                            0 => (auth_config_req(), 200),
                            1 => (revision_list_req(&cookie, None), 200),
                            _ => {
                                let f = &files[n % files.len()];
                                let end = range.min(f.size) - 1;
                                (range_req(&f.url, 0, end), 206)
                            }
                        };
                        let t = Instant::now();
                        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.send(&req)).await;
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let (label, again) = match r {
                            Err(_) => ("timeout".to_string(), false),
                            Ok(Err(_)) => ("error".to_string(), false),
                            Ok(Ok(r)) if r.status == ok => (r.status.to_string(), !r.close),
                            Ok(Ok(r)) => (format!("unexpected {}", r.status), !r.close),
                        };
                        results.lock().unwrap().push((label, ms));
                        if !again {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for h in ordinary {
        let _ = h.await;
    }
    let mut slow_closed = 0;
    let mut slow_opened = 0;
    let mut held_max: f64 = 0.0;
    for h in slow {
        if let Ok(Some((closed, held))) = h.await {
            slow_opened += 1;
            if closed {
                slow_closed += 1;
            }
            held_max = held_max.max(held.as_secs_f64());
        }
    }
    let mut still_open = 0;
    for c in &mut idle {
        if !c.closed_by_server() {
            still_open += 1;
        }
    }
    let results = results.lock().unwrap().clone();
    let mut statuses = BTreeMap::new();
    let mut times: Vec<f64> = Vec::new();
    for (label, ms) in &results {
        *statuses.entry(label.clone()).or_insert(0) += 1;
        times.push(*ms);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Phase1 {
        seconds: started.elapsed().as_secs_f64(),
        idle_opened,
        idle_still_open: still_open,
        slow_opened,
        slow_closed,
        slow_held_max: held_max,
        ordinary: results.len(),
        statuses,
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
        max_ms: times.last().copied().unwrap_or(0.0),
    }
}

fn phase2(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    server: &Served,
    up: &Path,
    files: &[ContentFile],
) -> Result<Phase2, String> {
    let url = format!("http://{}", server.addr);
    let downs: Vec<PathBuf> = (0..cfg.syncs)
        .map(|i| {
            let d = cfg.work.join(format!("dss-{i:03}"));
            let s = d.to_str().ok_or("work path is not UTF-8")?;
            gs(
                cfg,
                None,
                &[
                    "init",
                    s,
                    "--name",
                    &format!("dss-{i}"),
                    "--mode",
                    "replica",
                ],
            )?;
            Ok(d)
        })
        .collect::<Result<_, String>>()?;
    let started = Instant::now();
    let children: Vec<(PathBuf, std::io::Result<Child>)> = downs
        .iter()
        .map(|d| {
            let c = Command::new(&cfg.gapsync)
                .arg("--server")
                .arg(d)
                .args(["-q", "sync", "--upstream", &url, "--replica", "--json"])
                .env_remove("GAPSYNC_SERVER")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            (d.clone(), c)
        })
        .collect();
    let (downloads, ranges, ranges_failed, bytes) = rt.block_on(downloads(cfg, server.addr, files));
    let mut failed = Vec::new();
    for (d, c) in children {
        match c.and_then(|c| c.wait_with_output()) {
            Ok(out) if out.status.success() => {}
            Ok(out) => failed.push(format!(
                "{}: {}",
                d.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failed.push(format!("{}: {e}", d.display())),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let want = (
        gs(cfg, Some(up), &["updates", "list", "--json"])?,
        gs(cfg, Some(up), &["deployments", "list", "--json"])?,
        content_listing(up),
    );
    let mut equal = 0;
    for d in &downs {
        let got = (
            gs(cfg, Some(d), &["updates", "list", "--json"]).unwrap_or_default(),
            gs(cfg, Some(d), &["deployments", "list", "--json"]).unwrap_or_default(),
            content_listing(d),
        );
        if got == want {
            equal += 1;
        }
    }
    Ok(Phase2 {
        seconds,
        syncs: downs.len(),
        syncs_failed: failed,
        replicas_equal: equal,
        downloads,
        ranges,
        ranges_failed,
        bytes,
    })
}

/// Downloaders: each fetches its files in ranges over its connections,
/// comparing every range with the upstream file. (files, ranges, failed
/// ranges, bytes).
async fn downloads(
    cfg: &Config,
    addr: SocketAddr,
    files: &[ContentFile],
) -> (usize, usize, usize, u64) {
    let ranges = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut file_count = 0;
    for d in 0..cfg.downloaders {
        // This downloader's work: its files cut into ranges.
        let mut work = Vec::new();
        for k in 0..cfg.files_per_downloader {
            let f = files[(d * cfg.files_per_downloader + k) % files.len()].clone();
            file_count += 1;
            let mut start = 0;
            while start < f.size {
                let end = (start + cfg.range).min(f.size) - 1;
                work.push((f.clone(), start, end));
                start = end + 1;
            }
        }
        let queue = Arc::new(std::sync::Mutex::new(work));
        for _ in 0..cfg.connections_per_downloader {
            let queue = queue.clone();
            let (ranges, failed, bytes) = (ranges.clone(), failed.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut client: Option<Client> = None;
                loop {
                    let Some((f, start, end)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if client.is_none() {
                        client = Client::connect(addr).await.ok();
                    }
                    let Some(c) = client.as_mut() else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let r = tokio::time::timeout(
                        Duration::from_secs(60),
                        c.send(&range_req(&f.url, start, end)),
                    )
                    .await;
                    ranges.fetch_add(1, Ordering::Relaxed);
                    let ok = match r {
                        Ok(Ok(r)) if r.status == 206 => {
                            let want = read_range(&f.file, start, end).await;
                            if r.close {
                                client = None;
                            }
                            want.as_deref() == Some(&r.body[..])
                        }
                        _ => {
                            client = None;
                            false
                        }
                    };
                    if ok {
                        bytes.fetch_add(end - start + 1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        file_count,
        ranges.load(Ordering::Relaxed) as usize,
        failed.load(Ordering::Relaxed) as usize,
        bytes.load(Ordering::Relaxed),
    )
}

async fn read_range(path: &Path, start: u64, end: u64) -> Option<Vec<u8>> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(path).await.ok()?;
    f.seek(std::io::SeekFrom::Start(start)).await.ok()?;
    let mut buf = vec![0u8; (end - start + 1) as usize];
    f.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// Requests/s of three kinds, each for `throughput_for` over
/// `throughput_clients` keep-alive connections; and the requests that
/// failed.
async fn throughput(
    cfg: &Config,
    addr: SocketAddr,
    cookie: &str,
    anchor: &str,
    files: &[ContentFile],
) -> (f64, f64, f64, usize) {
    let errors = Arc::new(AtomicU64::new(0));
    let mut rates = Vec::new();
    for kind in 0..3 {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let until = started + cfg.throughput_for;
        let tasks: Vec<_> = (0..cfg.throughput_clients)
            .map(|k| {
                let (done, errors) = (done.clone(), errors.clone());
                let cookie = cookie.to_string();
                let anchor = anchor.to_string();
                let files = files.to_vec();
                let range = cfg.range;
                tokio::spawn(async move {
                    let mut c: Option<Client> = None;
                    let mut n = k;
                    while Instant::now() < until {
                        n += 1;
                        let (req, want) = match kind {
                            0 => (revision_list_req(&cookie, None), 200),
                            1 => (revision_list_req(&cookie, Some(&anchor)), 200),
                            _ => {
                                let f = &files[n % files.len()];
                                let end = range.min(f.size) - 1;
                                (range_req(&f.url, 0, end), 206)
                            }
                        };
                        if c.is_none() {
                            c = Client::connect(addr).await.ok();
                        }
                        let Some(cl) = c.as_mut() else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        match tokio::time::timeout(REQUEST_TIMEOUT, cl.send(&req)).await {
                            Ok(Ok(r)) if r.status == want => {
                                done.fetch_add(1, Ordering::Relaxed);
                                if r.close {
                                    c = None;
                                }
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                c = None;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        rates.push(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
    }
    (
        rates[0],
        rates[1],
        rates[2],
        errors.load(Ordering::Relaxed) as usize,
    )
}
