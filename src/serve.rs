//! `gapsync serve`: the HTTP(S) server of the upstream role.
//!
//! - `POST /ServerSyncWebService/ServerSyncWebService.asmx` and
//!   `POST /DssAuthWebService/DssAuthWebService.asmx` (also under a doubled
//!   leading slash, as Windows WSUS sends, and without regard to case, as
//!   IIS): SOAP 1.1 or 1.2, answered by [`crate::wsusss::server::Uss`].
//! - `GET` / `HEAD /Content/XX/<SHA-1 HEX>.ext`: content files from the
//!   store, streamed, with single byte ranges (206, 416) for restartable
//!   downloads (MS-WSUSOD 2.3.2.5).
//!
//! Load and hostile clients:
//! - A fixed pool of worker threads serves connections; an acceptor hands
//!   them over through a bounded queue, and answers 503 (a ServerBusy
//!   fault) when the queue is full.
//! - Every connection has deadlines: the request head and body must arrive
//!   within [`ServeOptions::request_timeout`] (however slowly the bytes
//!   trickle), an idle keep-alive connection is closed after
//!   [`ServeOptions::idle_timeout`], and a write that makes no progress for
//!   [`ServeOptions::write_timeout`] drops the connection. A slow client
//!   holds one worker for at most that long.
//! - Request heads are bounded ([`MAX_HEAD`] bytes in all, so no line is
//!   longer; [`MAX_HEADERS`] headers: 431 beyond), SOAP bodies by
//!   [`ServeOptions::max_body`] (413 with a fault beyond it).
//! - A request whose body framing is ambiguous (RFC 9112 6.3: several
//!   differing `Content-Length`s, `Transfer-Encoding` with
//!   `Content-Length`...) gets 400 and the connection is closed, so a proxy
//!   in front cannot be made to read a different request than this server.
//! - One log line per request on stderr: a UTC timestamp (RFC 3339), the
//!   client address, method, path, status and outcome.
//! - Content paths are never joined to the file system: the SHA-1 in the
//!   name is looked up in the store, whose own path is served.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::wsusss::server::{SoapCall, Uss, UssOptions};
use crate::wsusss::{ErrorCode, FaultInfo, Service, SoapVersion, fault_envelope};

/// Largest request head in bytes: the request line, the header lines and
/// the empty line that ends them, all together (so also the longest line).
/// Beyond it: 431 and the connection is closed.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Bytes per write when streaming content.
const CHUNK: usize = 64 * 1024;

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub tls: Option<TlsFiles>,
    /// Worker threads (connections served at once).
    pub workers: usize,
    /// Accepted connections waiting for a worker.
    pub queue: usize,
    /// Largest SOAP request body.
    pub max_body: usize,
    /// Deadline for a request's head and body, from its first byte.
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long one write may block.
    pub write_timeout: Duration,
    pub uss: UssOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: "0.0.0.0:8530".to_string(),
            tls: None,
            workers: 16,
            queue: 64,
            max_body: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(60),
            uss: UssOptions::default(),
        }
    }
}

/// Environment overrides (for tests and tuning): `GAPSYNC_SERVE_COOKIE_LIFETIME`
/// and `GAPSYNC_SERVE_REQUEST_TIMEOUT`, in seconds.
impl ServeOptions {
    pub fn with_env_overrides(mut self) -> Result<Self> {
        let secs = |name: &str| -> Result<Option<Duration>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .map(|s| Some(Duration::from_secs(s)))
                    .ok_or_else(|| {
                        Error::invalid(name, format!("{v:?} is not a positive number of seconds"))
                    }),
                Err(_) => Ok(None),
            }
        };
        if let Some(d) = secs("GAPSYNC_SERVE_COOKIE_LIFETIME")? {
            self.uss.cookie_lifetime = d;
        }
        if let Some(d) = secs("GAPSYNC_SERVE_REQUEST_TIMEOUT")? {
            self.request_timeout = d;
            self.idle_timeout = self.idle_timeout.min(d);
        }
        Ok(self)
    }
}

/// A bound server, not yet running.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
    uss: Arc<Uss>,
    tls: Option<Arc<rustls::ServerConfig>>,
    opts: ServeOptions,
}

impl Server {
    /// Opens the store (creating the cookie secret on first use), loads the
    /// TLS files, binds the address.
    pub fn bind(root: &Path, opts: ServeOptions) -> Result<Server> {
        let store = Store::open(root)?;
        let uss = Uss::open(&store, opts.uss.clone())?;
        drop(store);
        let tls = opts.tls.as_ref().map(load_tls).transpose()?;
        let listener = TcpListener::bind(&opts.listen).map_err(|e| {
            Error::Refused(format!(
                "cannot listen on {}: {}",
                opts.listen,
                bind_failure(&e)
            ))
        })?;
        Ok(Server {
            listener,
            root: root.to_path_buf(),
            uss: Arc::new(uss),
            tls,
            opts,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("listening socket", e))
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until the process ends.
    pub fn run(self) -> Result<()> {
        let (tx, rx): (SyncSender<TcpStream>, Receiver<TcpStream>) =
            sync_channel(self.opts.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let ctx = Arc::new(Ctx {
            root: self.root.clone(),
            uss: self.uss.clone(),
            tls: self.tls.clone(),
            opts: self.opts.clone(),
        });
        for i in 0..self.opts.workers.max(1) {
            let rx = rx.clone();
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || worker(&ctx, &rx))
                .map_err(|e| Error::io("worker thread", e))?;
        }
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    log(None, &format!("accept: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            match tx.try_send(stream) {
                Ok(()) => {}
                Err(TrySendError::Full(s)) => reject_busy(s, self.tls.is_some()),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Error::Refused("every serve worker has stopped".into()));
                }
            }
        }
        Ok(())
    }
}

/// Why an address cannot be bound, said once and in words.
fn bind_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "the address is already in use (another server listens on this port)".into()
        }
        io::ErrorKind::AddrNotAvailable => "no interface of this machine has this address".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::invalid(
                format!("TLS certificate {}", files.cert.display()),
                e.to_string(),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::invalid(
            format!("TLS certificate {}", files.cert.display()),
            "no CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::invalid(format!("TLS key {}", files.key.display()), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::invalid(
                format!(
                    "TLS certificate {} and key {}",
                    files.cert.display(),
                    files.key.display()
                ),
                e.to_string(),
            )
        })?;
    Ok(Arc::new(config))
}

/// Rule: when every worker is busy and the queue is full, a new connection
/// gets 503 with a ServerBusy fault at once (plain HTTP) or is closed
/// (TLS), and the acceptor never blocks on it.
fn reject_busy(mut s: TcpStream, tls: bool) {
    let _ = s.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    if !tls {
        let body = fault_envelope(
            SoapVersion::V11,
            &FaultInfo {
                code: ErrorCode::ServerBusy,
                message: "",
                id: uuid::Uuid::new_v4(),
                actor: "",
                method: None,
            },
        );
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(body.as_bytes());
    }
    let peer = s.peer_addr().ok();
    let _ = s.shutdown(Shutdown::Both);
    log(
        peer,
        "busy (every worker serving, queue full): connection refused",
    );
}

struct Ctx {
    root: PathBuf,
    uss: Arc<Uss>,
    tls: Option<Arc<rustls::ServerConfig>>,
    opts: ServeOptions,
}

fn worker(ctx: &Ctx, rx: &Mutex<Receiver<TcpStream>>) {
    let mut store: Option<Store> = None;
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(tcp) = next else { return };
        if store.is_none() {
            match Store::open(&ctx.root) {
                Ok(s) => {
                    // Bookkeeping writes wait little for an importer's lock.
                    let _ = s.conn().busy_timeout(Duration::from_secs(2));
                    store = Some(s);
                }
                Err(e) => {
                    log(tcp.peer_addr().ok(), &format!("cannot open the store: {e}"));
                    let _ = tcp.shutdown(Shutdown::Both);
                    continue;
                }
            }
        }
        let Some(st) = store.as_ref() else { continue };
        let peer = tcp.peer_addr().ok();
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve_connection(ctx, st, tcp, peer)
        }));
        let served = served
            .unwrap_or_else(|_| Err(io::Error::other("internal error (panic) while serving")));
        if let Err(e) = served
            && !matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            )
        {
            log(peer, &format!("connection closed: {e}"));
        }
    }
}

/// The connection's byte stream (plain or TLS) and its socket (for
/// timeouts).
struct Conn {
    tcp: TcpStream,
    tls: Option<rustls::ServerConnection>,
    buf: Vec<u8>,
    /// Bytes of `buf` not yet consumed: `buf[pos..]`.
    pos: usize,
    write_timeout: Duration,
    /// The client's address (for the log).
    peer: Option<SocketAddr>,
}

impl Conn {
    /// Reads more bytes into `buf`, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request deadline passed",
            ));
        }
        self.tcp.set_read_timeout(Some(deadline - now))?;
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 8192];
        let n = match self.tls.as_mut() {
            None => self.tcp.read(&mut tmp),
            Some(tls) => rustls::Stream::new(tls, &mut self.tcp).read(&mut tmp),
        };
        let n = match n {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request deadline passed",
                ));
            }
            other => other?,
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.tcp.set_write_timeout(Some(self.write_timeout))?;
        match self.tls.as_mut() {
            None => self.tcp.write_all(data),
            Some(tls) => {
                let mut s = rustls::Stream::new(tls, &mut self.tcp);
                s.write_all(data)?;
                s.flush()
            }
        }
    }

    fn close(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = self.tcp.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = tls.complete_io(&mut self.tcp);
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    /// HTTP/1.1 (else 1.0).
    http11: bool,
    headers: Vec<(String, String)>,
    /// How the body is delimited.
    framing: Framing,
}

/// How a request's body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked` (HTTP/1.1, no
    /// `Content-Length`).
    Chunked,
}

/// Rule (RFC 9112 6.1 and 6.3, RFC 9110 8.6): a request's body framing is
/// unambiguous, else it is refused with 400 and the connection closed (a
/// proxy in front might delimit the request otherwise: request smuggling):
/// - `Transfer-Encoding` together with `Content-Length`;
/// - `Transfer-Encoding` in an HTTP/1.0 request;
/// - `Transfer-Encoding` whose final coding is not `chunked`, or that
///   applies `chunked` more than once;
/// - a `Content-Length` that is not a decimal number of bytes, or several
///   `Content-Length` values (fields or list members) that differ.
///
/// Identical repeated `Content-Length` values count as one (RFC 9110 8.6).
fn framing(
    http11: bool,
    headers: &[(String, String)],
) -> std::result::Result<Framing, &'static str> {
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect()
    };
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if has("transfer-encoding") {
        if has("content-length") {
            return Err("Transfer-Encoding and Content-Length together");
        }
        if !http11 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        let codings = values("transfer-encoding");
        let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
        if !codings.last().is_some_and(chunked) {
            return Err("Transfer-Encoding whose final coding is not chunked");
        }
        if codings.iter().filter(|c| chunked(c)).count() > 1 {
            return Err("Transfer-Encoding with chunked more than once");
        }
        return Ok(Framing::Chunked);
    }
    let mut length: Option<u64> = None;
    for v in values("content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Content-Length is not a number of bytes");
        }
        let n = v
            .parse::<u64>()
            .map_err(|_| "Content-Length is not a number of bytes")?;
        match length {
            Some(l) if l != n => return Err("several different Content-Length values"),
            _ => length = Some(n),
        }
    }
    Ok(length.map_or(Framing::None, Framing::Length))
}

impl Head {
    /// True when the request carries body bytes (which are not read unless
    /// the request is served, so the connection cannot be kept).
    fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::None | Framing::Length(0))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match conn.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => self.http11,
        }
    }
}

/// A response ready to write.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// Close the connection after it (the request was not fully read).
    close: bool,
}

enum Body {
    Bytes(Vec<u8>),
    /// A file region: (file, start, length); HEAD sends only headers.
    File(File, u64, u64),
    Empty,
}

impl Reply {
    fn simple(status: u16, text: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(format!("{text}\n").into_bytes()),
            close: false,
        }
    }
    fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

fn serve_connection(
    ctx: &Ctx,
    store: &Store,
    tcp: TcpStream,
    peer: Option<SocketAddr>,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = match &ctx.tls {
        Some(cfg) => Some(
            rustls::ServerConnection::new(cfg.clone())
                .map_err(|e| io::Error::other(format!("TLS: {e}")))?,
        ),
        None => None,
    };
    let mut conn = Conn {
        tcp,
        tls,
        buf: Vec::with_capacity(8192),
        pos: 0,
        write_timeout: ctx.opts.write_timeout,
        peer,
    };
    let result = serve_requests(ctx, store, &mut conn);
    conn.close();
    result
}

fn serve_requests(ctx: &Ctx, store: &Store, conn: &mut Conn) -> io::Result<()> {
    let mut first = true;
    loop {
        // Wait for the first byte of the next request: the idle timeout
        // (the whole request timeout for a new connection, which may be
        // doing its TLS handshake).
        let idle = if first {
            ctx.opts.request_timeout
        } else {
            ctx.opts.idle_timeout
        };
        first = false;
        if conn.pending().is_empty() {
            match conn.fill(Instant::now() + idle) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let started = Instant::now();
        let deadline = started + ctx.opts.request_timeout;
        let head = match read_head(conn, deadline) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(HeadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                let _ = write_reply(
                    conn,
                    false,
                    &Reply::simple(408, "request timeout").closing(),
                );
                log(
                    conn.peer,
                    &format!(
                        "request head not complete in {:?}: 408, connection closed",
                        ctx.opts.request_timeout
                    ),
                );
                return Ok(());
            }
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::Bad(status, why)) => {
                let _ = write_reply(conn, false, &Reply::simple(status, &why).closing());
                log(conn.peer, &format!("bad request head: {why} ({status})"));
                return Ok(());
            }
        };
        let is_head = head.method == "HEAD";
        let (reply, outcome) = respond(ctx, store, conn, &head, deadline);
        let keep = head.keep_alive() && !reply.close;
        let written = write_reply(conn, is_head, &reply_with_connection(reply, keep));
        log(
            conn.peer,
            &format!(
                "{} {} -> {}{} ({} ms)",
                head.method,
                truncate_path(&head.target),
                outcome.0,
                if outcome.1.is_empty() {
                    String::new()
                } else {
                    format!(" {}", outcome.1)
                },
                started.elapsed().as_millis()
            ),
        );
        written?;
        if !keep {
            return Ok(());
        }
    }
}

/// One log line: `<UTC time, RFC 3339> <client address or -> <message>`,
/// e.g. `2026-05-01T10:00:00.123Z 10.0.0.7:50123 POST /... -> 200 (3 ms)`.
pub fn log_line(at: time::OffsetDateTime, client: Option<SocketAddr>, message: &str) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into());
    let client = client.map_or_else(|| "-".to_string(), |a| a.to_string());
    format!("{at} {client} {message}")
}

/// Writes a log line (stderr), stamped now.
pub fn log(client: Option<SocketAddr>, message: &str) {
    eprintln!(
        "{}",
        log_line(time::OffsetDateTime::now_utc(), client, message)
    );
}

fn truncate_path(s: &str) -> String {
    let t: String = s.chars().take(120).filter(|c| !c.is_control()).collect();
    t
}

fn reply_with_connection(mut r: Reply, keep: bool) -> Reply {
    r.close = !keep;
    r
}

enum HeadError {
    Io(io::Error),
    Bad(u16, String),
}

fn head_too_large() -> String {
    format!("request head larger than {} KiB", MAX_HEAD / 1024)
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// Rule: a request head (request line, header lines, empty line) is at
/// most [`MAX_HEAD`] bytes, so no line is longer either, and holds at most
/// [`MAX_HEADERS`] headers; beyond: 431, closed. Its framing is unambiguous
/// ([`framing`]), else 400, closed.
///
/// Reads and parses one request head; `None` when the peer closed cleanly
/// before sending one.
fn read_head(conn: &mut Conn, deadline: Instant) -> std::result::Result<Option<Head>, HeadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(conn.pending()) {
            Ok(httparse::Status::Complete(n)) => {
                if n > MAX_HEAD {
                    return Err(HeadError::Bad(431, head_too_large()));
                }
                let http11 = req.version == Some(1);
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                let framing = framing(http11, &headers)
                    .map_err(|why| HeadError::Bad(400, why.to_string()))?;
                let head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").to_string(),
                    http11,
                    headers,
                    framing,
                };
                conn.consume(n);
                return Ok(Some(head));
            }
            Ok(httparse::Status::Partial) => {
                // An unfinished head (or line) already over the limit.
                if conn.pending().len() > MAX_HEAD {
                    return Err(HeadError::Bad(431, head_too_large()));
                }
                if conn.fill(deadline)? == 0 {
                    if conn.pending().is_empty() {
                        return Ok(None);
                    }
                    return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::Bad(
                    431,
                    format!("more than {MAX_HEADERS} headers"),
                ));
            }
            Err(httparse::Error::Version) => {
                let line_end = conn
                    .pending()
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(conn.pending().len());
                let line = &conn.pending()[..line_end];
                if line.windows(6).any(|w| w == b" HTTP/") {
                    return Err(HeadError::Bad(505, "unsupported HTTP version".into()));
                }
                return Err(HeadError::Bad(400, "malformed request line".into()));
            }
            Err(_) => return Err(HeadError::Bad(400, "malformed request head".into())),
        }
    }
}

/// Reads a body of `len` bytes by the deadline.
fn read_body(conn: &mut Conn, len: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    while conn.pending().len() < len {
        if conn.fill(deadline)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let body = conn.pending()[..len].to_vec();
    conn.consume(len);
    Ok(body)
}

fn write_reply(conn: &mut Conn, is_head: bool, r: &Reply) -> io::Result<()> {
    let len = match &r.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File(_, _, n) => *n,
        Body::Empty => 0,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    head.push_str(&format!(
        "Date: {}\r\nServer: gapsync/{}\r\n",
        http_date(SystemTime::now()),
        env!("CARGO_PKG_VERSION")
    ));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {len}\r\n"));
    if r.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if is_head {
        return conn.write_all(head.as_bytes());
    }
    match &r.body {
        Body::Bytes(b) => {
            let mut all = head.into_bytes();
            all.extend_from_slice(b);
            conn.write_all(&all)
        }
        Body::Empty => conn.write_all(head.as_bytes()),
        Body::File(f, start, n) => {
            conn.write_all(head.as_bytes())?;
            let mut f = f.try_clone()?;
            f.seek(SeekFrom::Start(*start))?;
            let mut r = BufReader::with_capacity(CHUNK, f.take(*n));
            let mut sent = 0u64;
            loop {
                let chunk = r.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                let k = chunk.len();
                conn.write_all(chunk)?;
                r.consume(k);
                sent += k as u64;
            }
            if sent != *n {
                // The file shrank under us: the length we announced is a lie.
                return Err(io::Error::other("content file shorter than announced"));
            }
            Ok(())
        }
    }
}

/// The path of a request target: absolute-form (`http://host/path`, RFC
/// 9112 3.2.2) is reduced to its path.
fn origin_form(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let (Some(head), Some(rest)) = (target.get(..scheme.len()), target.get(scheme.len()..))
            && head.eq_ignore_ascii_case(scheme)
        {
            return rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        }
    }
    target
}

/// Which service a request path names: `/ServerSyncWebService/...` or
/// `/DssAuthWebService/...`, case-insensitive, with one or two leading
/// slashes, query string ignored.
fn soap_service(path: &str) -> Option<Service> {
    let path = path.split('?').next().unwrap_or("");
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_prefix('/').unwrap_or(path);
    [Service::ServerSync, Service::DssAuth]
        .into_iter()
        .find(|s| s.path()[1..].eq_ignore_ascii_case(path))
}

/// Answers one request; returns the reply and (status, detail) for the log.
fn respond(
    ctx: &Ctx,
    store: &Store,
    conn: &mut Conn,
    head: &Head,
    deadline: Instant,
) -> (Reply, (u16, String)) {
    let path = origin_form(&head.target);
    if let Some(service) = soap_service(path) {
        if head.method != "POST" {
            let mut r = Reply::simple(405, "SOAP endpoints take POST");
            r.headers.push(("Allow", "POST".into()));
            if head.has_body() {
                r = r.closing();
            }
            return (r, (405, String::new()));
        }
        return soap(ctx, store, conn, head, service, deadline);
    }
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("/content/") || lower.starts_with("//content/") {
        if head.method != "GET" && head.method != "HEAD" {
            let mut r = Reply::simple(405, "content takes GET or HEAD");
            r.headers.push(("Allow", "GET, HEAD".into()));
            return (r.closing(), (405, String::new()));
        }
        if head.has_body() {
            return (
                Reply::simple(400, "content requests carry no body").closing(),
                (400, String::new()),
            );
        }
        return content(store, head, path);
    }
    let r = Reply::simple(404, "not found");
    let r = if head.has_body() { r.closing() } else { r };
    (r, (404, String::new()))
}

/// The SOAP version and action a request's headers announce: SOAP 1.2 by
/// `application/soap+xml` (action in its `action` parameter), else SOAP
/// 1.1 with the SOAPAction header.
fn soap_headers(head: &Head) -> (SoapVersion, Option<String>) {
    let ct = head.header("content-type").unwrap_or("");
    if ct.to_ascii_lowercase().starts_with("application/soap+xml") {
        let action = ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("action")
                .then(|| v.trim().trim_matches('"').to_string())
        });
        (SoapVersion::V12, action)
    } else {
        let action = head
            .header("soapaction")
            .map(|a| a.trim().trim_matches('"').to_string());
        (SoapVersion::V11, action)
    }
}

fn base_url(ctx: &Ctx, head: &Head, conn: &Conn) -> String {
    let scheme = if ctx.tls.is_some() { "https" } else { "http" };
    let host = head
        .header("host")
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_graphic()
                        && b != b'/'
                        && b != b'\\'
                        && b != b'"'
                        && b != b'<'
                        && b != b'>'
                })
        })
        .map(str::to_string)
        .or_else(|| conn.tcp.local_addr().ok().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

fn soap_fault_reply(
    status: u16,
    version: SoapVersion,
    code: ErrorCode,
    message: &str,
    actor: &str,
) -> Reply {
    let body = fault_envelope(
        version,
        &FaultInfo {
            code,
            message,
            id: uuid::Uuid::new_v4(),
            actor,
            method: None,
        },
    );
    Reply {
        status,
        headers: vec![("Content-Type", version.content_type().into())],
        body: Body::Bytes(body.into_bytes()),
        close: false,
    }
}

fn soap(
    ctx: &Ctx,
    store: &Store,
    conn: &mut Conn,
    head: &Head,
    service: Service,
    deadline: Instant,
) -> (Reply, (u16, String)) {
    let (version, action) = soap_headers(head);
    let base = base_url(ctx, head, conn);
    let actor = format!("{base}{}", service.path());
    if head.framing == Framing::Chunked {
        let r = soap_fault_reply(
            411,
            version,
            ErrorCode::InvalidParameters,
            "Content-Length",
            &actor,
        )
        .closing();
        return (
            r,
            (
                411,
                "chunked request bodies are not accepted; send Content-Length".into(),
            ),
        );
    }
    let len = match head.framing {
        Framing::Length(n) => n,
        Framing::None | Framing::Chunked => {
            let r = soap_fault_reply(
                411,
                version,
                ErrorCode::InvalidParameters,
                "Content-Length",
                &actor,
            )
            .closing();
            return (r, (411, "no Content-Length".into()));
        }
    };
    let len = match usize::try_from(len) {
        Ok(n) if n <= ctx.opts.max_body => n,
        _ => {
            let r = soap_fault_reply(
                413,
                version,
                ErrorCode::InvalidParameters,
                "request",
                &actor,
            )
            .closing();
            return (
                r,
                (
                    413,
                    format!("body of {len} bytes exceeds {}", ctx.opts.max_body),
                ),
            );
        }
    };
    if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && conn.pending().len() < len
        && let Err(e) = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
    {
        return (
            Reply::simple(500, "write failed").closing(),
            (0, e.to_string()),
        );
    }
    let body = match read_body(conn, len, deadline) {
        Ok(b) => b,
        Err(e) => {
            let timed_out = e.kind() == io::ErrorKind::TimedOut;
            let r = if timed_out {
                Reply::simple(408, "request timeout")
            } else {
                Reply::simple(400, "incomplete body")
            };
            return (
                r.closing(),
                (if timed_out { 408 } else { 400 }, format!("body: {e}")),
            );
        }
    };
    let call = SoapCall {
        service,
        body: &body,
        action: action.as_deref(),
        base_url: &base,
    };
    let out = ctx.uss.handle(store, &call);
    let reply = Reply {
        status: out.status,
        headers: vec![("Content-Type", out.version.content_type().into())],
        body: Body::Bytes(out.body.into_bytes()),
        close: false,
    };
    (reply, (out.status, out.summary))
}

/// Rule: a content path is `/Content/XX/NAME` where NAME is 40 hex digits
/// (a SHA-1) and an optional `.ext` of 1-16 ASCII letters or digits, and XX
/// its last two hex digits. Anything else (dot segments, encodings,
/// separators) names no file.
fn content_name(target: &str) -> Option<([u8; 20], Option<String>)> {
    let path = target.split('?').next()?;
    let rest = path.strip_prefix("//").or_else(|| path.strip_prefix('/'))?;
    let mut parts = rest.split('/');
    let (Some(top), Some(dir), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !top.eq_ignore_ascii_case("content") {
        return None;
    }
    let (hex_part, ext) = match name.split_once('.') {
        Some((h, e)) => (h, Some(e)),
        None => (name, None),
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if let Some(e) = ext
        && (e.is_empty() || e.len() > 16 || !e.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return None;
    }
    if !dir.eq_ignore_ascii_case(&hex_part[38..]) {
        return None;
    }
    let sha1: [u8; 20] = hex::decode(hex_part).ok()?.try_into().ok()?;
    Some((sha1, ext.map(str::to_ascii_lowercase)))
}

fn content(store: &Store, head: &Head, path: &str) -> (Reply, (u16, String)) {
    let not_found = |why: &str| (Reply::simple(404, "not found"), (404, why.to_string()));
    let Some((sha1, ext)) = content_name(path) else {
        return not_found("not a content file name");
    };
    let file = match store.content_file(&sha1) {
        Ok(Some(f)) => f,
        Ok(None) => return not_found("not in this store"),
        Err(e) => {
            return (Reply::simple(500, "internal error"), (500, e.to_string()));
        }
    };
    let stored_ext = file
        .rel_path
        .rsplit('/')
        .next()
        .and_then(|n| n.split_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    if ext != stored_ext {
        return not_found("extension differs from the stored file's");
    }
    let path = store.content().path_of(&file.rel_path);
    let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
    let (f, meta) = match opened {
        Ok(x) => x,
        Err(e) => {
            return (
                Reply::simple(500, "internal error"),
                (500, format!("{}: {e}", path.display())),
            );
        }
    };
    let size = meta.len();
    if size != file.size {
        return (
            Reply::simple(500, "internal error"),
            (
                500,
                format!(
                    "{} has {size} bytes, the store says {}",
                    path.display(),
                    file.size
                ),
            ),
        );
    }
    let etag = format!("\"{}\"", hex::encode_upper(sha1));
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", etag.clone()),
    ];
    if let Ok(m) = meta.modified() {
        headers.push(("Last-Modified", http_date(m)));
    }
    // If-Range with another validator: the whole file.
    let range = head
        .header("range")
        .filter(|_| head.header("if-range").is_none_or(|v| v.trim() == etag));
    let pick = match range.map(http_range_header::parse_range_header) {
        None => Ok((0, size, String::new())),
        // A malformed Range header is ignored (RFC 9110 14.2).
        Some(Err(_)) => Ok((0, size, " (malformed Range ignored)".to_string())),
        Some(Ok(parsed)) => match parsed.validate(size) {
            Err(_) => Err(()),
            Ok(ranges) => match ranges.as_slice() {
                [r] => Ok((*r.start(), *r.end() - *r.start() + 1, " range".to_string())),
                // Several ranges: the whole file (a server may ignore Range).
                _ => Ok((0, size, " (multiple ranges: whole file)".to_string())),
            },
        },
    };
    match pick {
        Err(()) => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            let r = Reply {
                status: 416,
                headers,
                body: Body::Empty,
                close: false,
            };
            (r, (416, format!("{} of {size} bytes", range.unwrap_or(""))))
        }
        Ok((start, len, note)) => {
            let partial = !note.is_empty() && note == " range";
            let status = if partial { 206 } else { 200 };
            if partial {
                headers.push((
                    "Content-Range",
                    format!("bytes {start}-{}/{size}", start + len - 1),
                ));
            }
            let r = Reply {
                status,
                headers,
                body: Body::File(f, start, len),
                close: false,
            };
            (r, (status, format!("{len} of {size} bytes{note}")))
        }
    }
}

/// An HTTP date (RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soap_paths() {
        assert_eq!(
            soap_service("/ServerSyncWebService/ServerSyncWebService.asmx"),
            Some(Service::ServerSync)
        );
        assert_eq!(
            soap_service("//ServerSyncWebService/ServerSyncWebService.asmx"),
            Some(Service::ServerSync)
        );
        assert_eq!(
            soap_service("/dssauthwebservice/dssauthwebservice.asmx?x"),
            Some(Service::DssAuth)
        );
        assert_eq!(
            soap_service("///ServerSyncWebService/ServerSyncWebService.asmx"),
            None
        );
        assert_eq!(soap_service("/ServerSyncWebService/"), None);
    }

    #[test]
    fn content_names() {
        let hex = "0123456789ABCDEF0123456789ABCDEF012345CD";
        assert!(content_name(&format!("/Content/CD/{hex}.exe")).is_some());
        assert!(content_name(&format!("//content/cd/{}.EXE", hex.to_lowercase())).is_some());
        assert!(content_name(&format!("/Content/CD/{hex}")).is_some());
        for bad in [
            format!("/Content/AB/{hex}.exe"),
            format!("/Content/CD/{hex}.e/x"),
            format!("/Content/CD/../{hex}.exe"),
            "/Content/../gapsync.db".to_string(),
            "/Content/..%2Fgapsync.db".to_string(),
            format!("/Content/CD/{hex}.ex%2e"),
            format!("/Content/CD/{hex}."),
            format!("/Content/CD/x{hex}"),
        ] {
            assert!(content_name(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn absolute_form_targets() {
        assert_eq!(origin_form("http://h:1/Content/x"), "/Content/x");
        assert_eq!(origin_form("HTTPS://h"), "/");
        assert_eq!(origin_form("/a"), "/a");
        assert_eq!(origin_form("ht\u{e9}p://x"), "ht\u{e9}p://x");
    }

    #[test]
    fn log_lines_carry_utc_time_and_client() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(784_111_777_123_456_789)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        let client: SocketAddr = "10.0.0.7:50123".parse().unwrap();
        assert_eq!(
            log_line(at, Some(client), "GET / -> 404 (0 ms)"),
            "1994-11-06T08:49:37.123Z 10.0.0.7:50123 GET / -> 404 (0 ms)"
        );
        assert_eq!(log_line(at, None, "x"), "1994-11-06T08:49:37.123Z - x");
    }

    #[test]
    fn framing_rules() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = [
            (true, h(&[]), Framing::None),
            (true, h(&[("Content-Length", "12")]), Framing::Length(12)),
            (
                true,
                h(&[("content-length", "5"), ("Content-Length", "5")]),
                Framing::Length(5),
            ),
            (true, h(&[("Content-Length", "5, 5")]), Framing::Length(5)),
            (false, h(&[("Content-Length", "0")]), Framing::Length(0)),
            (
                true,
                h(&[("Transfer-Encoding", "chunked")]),
                Framing::Chunked,
            ),
            (
                true,
                h(&[
                    ("Transfer-Encoding", "gzip"),
                    ("Transfer-Encoding", "Chunked"),
                ]),
                Framing::Chunked,
            ),
        ];
        for (http11, headers, want) in ok {
            assert_eq!(framing(http11, &headers), Ok(want), "{headers:?}");
        }
        let bad = [
            (true, h(&[("Content-Length", "5"), ("Content-Length", "6")])),
            (true, h(&[("Content-Length", "5, 6")])),
            (true, h(&[("Content-Length", "")])),
            (true, h(&[("Content-Length", "+5")])),
            (true, h(&[("Content-Length", "-1")])),
            (true, h(&[("Content-Length", "0x10")])),
            (true, h(&[("Content-Length", "99999999999999999999999")])),
            (
                true,
                h(&[("Transfer-Encoding", "chunked"), ("Content-Length", "5")]),
            ),
            (false, h(&[("Transfer-Encoding", "chunked")])),
            (true, h(&[("Transfer-Encoding", "gzip")])),
            (true, h(&[("Transfer-Encoding", "chunked, gzip")])),
            (true, h(&[("Transfer-Encoding", "chunked, chunked")])),
            (true, h(&[("Transfer-Encoding", "")])),
        ];
        for (http11, headers) in bad {
            assert!(framing(http11, &headers).is_err(), "{headers:?}");
        }
    }

    #[test]
    fn http_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
