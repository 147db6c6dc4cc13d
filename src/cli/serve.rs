//! `serve`: runs the upstream (USS) role of a store over HTTP or HTTPS.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::failure::usage;
use anyhow::Result;
use clap::Args;

use gapsync::http::{ServeOptions, Server, TlsFiles};
use gapsync::store::Store;
use gapsync::units::parse_size;

/// Flags of `serve`. Limits left out keep the defaults docs/protocol.md
/// lists.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8530")]
    pub listen: String,
    /// TLS certificate (PEM); with --tls-key, serve HTTPS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connections open at once; one more gets 503 [default: 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Seconds a request head may take from its first byte [default: 20].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: Option<u64>,
    /// Seconds a SOAP request body may take after its head [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: Option<u64>,
    /// Seconds a keep-alive connection may wait for its next request [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: Option<u64>,
    /// Seconds a response write may make no progress [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout: Option<u64>,
    /// Largest request head, e.g. 16K; beyond it 431 [default: 16K].
    #[arg(long, value_name = "SIZE", value_parser = head_size)]
    pub max_head: Option<usize>,
    /// Largest SOAP request body, e.g. 4M; beyond it 413 [default: 4M].
    #[arg(long, value_name = "SIZE", value_parser = body_size)]
    pub max_body: Option<usize>,
    /// Requests doing store work at once [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub store_workers: Option<u64>,
    /// Requests waiting for a store worker; one more gets 503 [default: 512].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub store_queue: Option<u64>,
}

fn size_in(s: &str, min: u64, max: u64, range: &str) -> std::result::Result<usize, String> {
    let v = parse_size(s).map_err(|e| e.to_string())?;
    if !(min..=max).contains(&v) {
        return Err(format!("{s:?} is out of range; allowed {range}"));
    }
    usize::try_from(v).map_err(|_| format!("{s:?} is too large"))
}

fn head_size(s: &str) -> std::result::Result<usize, String> {
    size_in(s, 1024, 1024 * 1024, "1K to 1M")
}

fn body_size(s: &str) -> std::result::Result<usize, String> {
    size_in(s, 1024, 64 * 1024 * 1024, "1K to 64M")
}

/// Seconds from an environment variable (tests and tuning).
fn env_secs(name: &str) -> Result<Option<Duration>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=86_400).contains(s))
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| usage!("{name}={v:?}: not a number of seconds from 1 to 86400")),
    }
}

/// The options: defaults, then the environment (`GAPSYNC_SERVE_COOKIE_LIFETIME`;
/// `GAPSYNC_SERVE_REQUEST_TIMEOUT`, which sets the header and body timeouts
/// and caps the idle timeout), then the flags.
fn options(a: &ServeArgs) -> Result<ServeOptions> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => return Err(usage!("--tls-cert and --tls-key go together")),
    };
    let mut o = ServeOptions {
        listen: a.listen.clone(),
        tls,
        ..ServeOptions::default()
    };
    if let Some(d) = env_secs("GAPSYNC_SERVE_COOKIE_LIFETIME")? {
        o.uss.cookie_lifetime = d;
    }
    if let Some(d) = env_secs("GAPSYNC_SERVE_REQUEST_TIMEOUT")? {
        o.header_timeout = d;
        o.body_timeout = d;
        o.idle_timeout = o.idle_timeout.min(d);
    }
    let secs = Duration::from_secs;
    if let Some(n) = a.max_connections {
        o.max_connections = n as usize;
    }
    if let Some(s) = a.header_timeout {
        o.header_timeout = secs(s);
    }
    if let Some(s) = a.body_timeout {
        o.body_timeout = secs(s);
    }
    if let Some(s) = a.idle_timeout {
        o.idle_timeout = secs(s);
    }
    if let Some(s) = a.write_timeout {
        o.write_timeout = secs(s);
    }
    if let Some(n) = a.max_head {
        o.max_head = n;
    }
    if let Some(n) = a.max_body {
        o.max_body = n;
    }
    if let Some(n) = a.store_workers {
        o.store_workers = n as usize;
    }
    if let Some(n) = a.store_queue {
        o.store_queue = n as usize;
    }
    Ok(o)
}

/// Serves `server` (HTTPS when both TLS files are given) until the process
/// is stopped. Prints `listening on URL` to stdout once bound (with the
/// real port when `--listen` asks for port 0); the server's log goes to
/// stderr, one line per request, with UTC timestamps.
pub fn serve(server: &Path, a: &ServeArgs) -> Result<()> {
    let opts = options(a)?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
    let info = Store::open(server)?.info().clone();
    raise_open_files(opts.max_connections);
    let srv = Server::bind(server, opts)?;
    let addr = srv.local_addr()?;
    tracing::info!(
        "server {} ({}, {}) from {}",
        info.name,
        info.server_id,
        info.mode.as_str(),
        server.display()
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}://{addr}", srv.scheme())?;
    out.flush()?;
    drop(out);
    srv.run()?;
    Ok(())
}

/// Each connection is a file descriptor: raises the soft limit on open
/// files toward the hard limit so `--max-connections` can be reached, and
/// says so when it cannot.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
fn raise_open_files(connections: usize) {
    // Connections plus store handles, content files being sent, the log.
    let want = (connections as u64).saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let target = (want as libc::rlim_t).min(lim.rlim_max);
    if target > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    if (lim.rlim_cur as u64) < want {
        tracing::warn!(
            "open files limited to {} (ulimit -n): fewer than the {connections} connections allowed",
            lim.rlim_cur
        );
    }
}

#[cfg(not(unix))]
fn raise_open_files(_connections: usize) {}
