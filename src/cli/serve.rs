//! `serve`: runs the upstream (USS) role of a store over HTTP or HTTPS.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::failure::usage;
use anyhow::Result;
use clap::Args;

use gapsync::http::{ServeOptions, Server, TlsFiles};
use gapsync::model::units::parse_size;
use gapsync::store::Store;

/// Flags of `serve`. Limits left out keep the defaults docs/protocol.md
/// lists.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on (HOST:PORT; port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:8530", value_parser = parse_listen)]
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
    /// How long a Windows client's cookie lasts, e.g. 60m; after it the
    /// client gets CookieExpired and asks again [default: 60m].
    #[arg(long, value_name = "DURATION", value_parser = client_cookie_lifetime)]
    pub client_cookie_lifetime: Option<time::Duration>,
    /// Updates per SyncUpdates answer to Windows clients [default: 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub client_page_size: Option<u64>,
    /// Events kept per computer; older ones are dropped [default: 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub client_events_kept: Option<u64>,
}

fn client_cookie_lifetime(s: &str) -> std::result::Result<time::Duration, String> {
    gapsync::model::units::duration_in(s, time::Duration::seconds(10), time::Duration::days(7))
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
    if let Some(d) = a.client_cookie_lifetime {
        o.wusp.cookie_lifetime_secs = d.whole_seconds();
    }
    if let Some(n) = a.client_page_size {
        o.wusp.page_size = n as usize;
    }
    if let Some(n) = a.client_events_kept {
        o.wusp.event_bound = n as usize;
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
        .event_format(LogLine)
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

/// The log line format: `<UTC time, RFC 3339 with milliseconds> <client
/// address, or - when the line is about no one client> <message>`, warnings
/// marked as such (docs/protocol.md).
struct LogLine;

/// The fields of one event: the `client` field apart, the rest in order.
#[derive(Default)]
struct Fields {
    client: Option<String>,
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "client" => self.client = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        writeln!(
            writer,
            "{} {} {level}{}{}",
            utc_now_millis(),
            f.client.as_deref().unwrap_or("-"),
            f.message,
            f.rest
        )
    }
}

/// Now, as `2026-05-04T09:12:30.118Z`.
fn utc_now_millis() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
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
/// `--listen`: `HOST:PORT` (an IP address, `[IPv6]`, or a host name that
/// resolves when binding), port 0-65535 (0: any free port). Checked while
/// parsing (a bad value exits 2); whether the address can be bound is found
/// when binding (exit 1).
pub fn parse_listen(s: &str) -> std::result::Result<String, String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let why = "expected HOST:PORT, e.g. 0.0.0.0:8530, [::]:8530 or localhost:8530 (port 0-65535)";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(why.to_string());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number 0-65535; {why}"));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !name_ok {
        return Err(format!(
            "host {host:?} is not an IP address or host name; {why}"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses() {
        for ok in [
            "0.0.0.0:8530",
            "127.0.0.1:0",
            "[::]:8530",
            "[::1]:65535",
            "localhost:8530",
            "wsus-01.corp:80",
        ] {
            assert_eq!(parse_listen(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "8530",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            ":8530",
            "host name:80",
            "::1:80x",
            "[::1:80",
            "a..b:80",
            "1.2.3.4.5:80x",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }
}
