//! The server: options and limits, the accept loop, one task per
//! connection, and the request handler (routing, SOAP calls, content).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{ConnShared, Framing, Guarded, HeadTimer, Timeout};
use super::content::{self, FileBody};
use super::pool::{StorePool, WorkError};
use super::routes::{Route, Routes, SoapRequest, http_fault};
use crate::error::{Error, Result};
use crate::protocols::wsusss::upstream::{self as wsusss_upstream, UssOptions};
use crate::protocols::wusp::server as wusp_server;
use crate::soap::{CommonCode, Limits, SoapVersion, request_binding};
use crate::store::Store;

/// `Retry-After` of a 503, seconds.
const RETRY_AFTER_SECS: u64 = 5;
/// Connections refused at the limit that may be in the middle of getting
/// their 503 at once; beyond that they are just closed.
const MAX_REJECTING: usize = 64;
/// How long a refused connection gets to take its 503.
const REJECT_LINGER: Duration = Duration::from_secs(2);

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How `serve` runs, and its limits against slow, idle, oversized and
/// too many clients (docs/protocol.md lists them with what happens beyond
/// each).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub tls: Option<TlsFiles>,
    /// Connections open at once (default 10,000). One more is answered
    /// 503 (a ServerBusy fault, `Retry-After`) at once, or closed (TLS).
    /// An open connection costs a parked task and its buffers, not a
    /// thread.
    pub max_connections: usize,
    /// A request head must be complete this long after its first byte
    /// (default 20 s; also the TLS handshake and the first request of a
    /// new connection). Beyond it the connection is closed.
    pub header_timeout: Duration,
    /// A SOAP request body must be complete this long after its head
    /// (default 30 s). Beyond it: 408, closed.
    pub body_timeout: Duration,
    /// A keep-alive connection may wait this long for its next request
    /// (default 60 s); then it is closed.
    pub idle_timeout: Duration,
    /// A response write that makes no progress for this long drops the
    /// connection (default 60 s).
    pub write_timeout: Duration,
    /// Largest request head, request line and headers (default 16 KiB).
    /// Beyond it: 431, closed.
    pub max_head: usize,
    /// Most header fields in a request (default 64). Beyond it: 431,
    /// closed.
    pub max_headers: usize,
    /// Largest SOAP request body (default 4 MiB). Beyond it: 413 with a
    /// fault, closed, before the body is read.
    pub max_body: usize,
    /// Request bodies held in memory at once, all connections together
    /// (default 64 MiB). A body that would exceed it: 503, closed.
    pub body_memory: usize,
    /// Requests doing store work at once, each on a blocking thread with
    /// a store handle of its own (default 8).
    pub store_workers: usize,
    /// Requests waiting for a store worker (default 512). One more is
    /// answered 503 (`Retry-After`; a ServerBusy fault for SOAP).
    pub store_queue: usize,
    pub uss: UssOptions,
    /// The MS-WUSP client protocol (cookie lifetime, page size, events
    /// kept per computer).
    pub wusp: crate::protocols::wusp::WuspOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: "0.0.0.0:8530".to_string(),
            tls: None,
            max_connections: 10_000,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 4 * 1024 * 1024,
            body_memory: 64 * 1024 * 1024,
            store_workers: 8,
            store_queue: 512,
            uss: UssOptions::default(),
            wusp: crate::protocols::wusp::WuspOptions::default(),
        }
    }
}

impl ServeOptions {
    /// Rule: every limit is positive; the head limit is at least 1 KiB
    /// and one body fits in the body memory.
    fn check(&self) -> Result<()> {
        let positive = [
            ("max connections", self.max_connections),
            ("max headers", self.max_headers),
            ("max body", self.max_body),
            ("store workers", self.store_workers),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(Error::bad_argument(what, "must be at least 1"));
            }
        }
        let times = [
            ("header timeout", self.header_timeout),
            ("body timeout", self.body_timeout),
            ("idle timeout", self.idle_timeout),
            ("write timeout", self.write_timeout),
        ];
        for (what, v) in times {
            if v.is_zero() {
                return Err(Error::bad_argument(what, "must be positive"));
            }
        }
        if self.max_head < 1024 {
            return Err(Error::bad_argument(
                "max head",
                format!("{} bytes is too small; at least 1K", self.max_head),
            ));
        }
        if self.body_memory < self.max_body {
            return Err(Error::bad_argument(
                "body memory",
                format!(
                    "{} bytes is less than the max body ({} bytes)",
                    self.body_memory, self.max_body
                ),
            ));
        }
        Ok(())
    }
}

/// A bound server, not yet running.
pub struct Server {
    listener: StdListener,
    root: PathBuf,
    routes: Routes,
    tls: Option<Arc<rustls::ServerConfig>>,
    opts: ServeOptions,
}

impl Server {
    /// The upstream server of the store in `root` (the MS-WSUSSS web
    /// services and content): opens the store (creating the cookie secret
    /// on first use), loads the TLS files, binds the address.
    pub fn bind(root: &Path, opts: ServeOptions) -> Result<Server> {
        let store = Store::open(root)?;
        // The protocols' rows, merged: MS-WSUSSS and MS-WUSP, then the
        // content tree.
        let routes = Routes::new()
            .merge(wsusss_upstream::routes(&store, opts.uss.clone())?)
            .merge(wusp_server::routes(&store, opts.wusp.clone())?)
            .content();
        drop(store);
        Self::bind_routes(root, opts, routes)
    }

    /// A server of the store in `root` answering `routes`.
    pub fn bind_routes(root: &Path, opts: ServeOptions, routes: Routes) -> Result<Server> {
        opts.check()?;
        let tls = opts.tls.as_ref().map(load_tls).transpose()?;
        let listener = StdListener::bind(&opts.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::CannotListen {
                addr: opts.listen.clone(),
                why: bind_failure(&e),
            })?;
        Ok(Server {
            listener,
            root: root.to_path_buf(),
            routes,
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

    /// Serves until the process ends, on a runtime of one thread per core
    /// plus the bounded blocking pool for store work and file reads.
    pub fn run(self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("gapsync-serve")
            .max_blocking_threads(self.opts.store_workers + 16)
            .build()
            .map_err(|e| Error::io("serve runtime", e))?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> Result<()> {
        let listener =
            TcpListener::from_std(self.listener).map_err(|e| Error::io("listening socket", e))?;
        let opts = self.opts;
        let ctx = Arc::new(Ctx {
            pool: Arc::new(StorePool::new(
                self.root,
                opts.store_workers,
                opts.store_queue,
            )),
            routes: self.routes,
            body_memory: Arc::new(Semaphore::new(opts.body_memory)),
            tls: self.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            opts,
        });
        let slots = Arc::new(Semaphore::new(ctx.opts.max_connections));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(connection(ctx.clone(), tcp, peer, slot));
                }
                Err(_) => {
                    tracing::warn!(client = %peer, "refused: {} connections open (the limit)",
                        ctx.opts.max_connections
                    );
                    if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                        tokio::spawn(reject(tcp, ctx.tls.is_some(), permit));
                    }
                }
            }
        }
    }
}

pub(crate) fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Rule: a connection beyond the limit gets 503 with a ServerBusy fault
/// and `Retry-After` (plain HTTP) or is closed (TLS), and the accept loop
/// never waits for it.
async fn reject(mut tcp: TcpStream, tls: bool, _permit: OwnedSemaphorePermit) {
    if tls {
        return;
    }
    let body = busy_fault(SoapVersion::V11, "");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_SECS}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        SoapVersion::V11.content_type(),
        body.len()
    );
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await?;
        // Take what the client sent, so closing does not reset the
        // connection before it read the answer.
        let mut sink = [0u8; 4096];
        let mut taken = 0;
        while taken < 64 * 1024 {
            let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await?;
            if n == 0 {
                break;
            }
            taken += n;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// What every connection shares.
pub(crate) struct Ctx {
    pool: Arc<StorePool>,
    routes: Routes,
    body_memory: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: ServeOptions,
}

/// One connection: TLS handshake (within the header timeout), then HTTP/1.1
/// with keep-alive and pipelining until the client closes or a limit ends
/// it.
async fn connection(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    let local = tcp.local_addr().ok();
    match ctx.tls.clone() {
        None => http1(ctx, tcp, peer, local).await,
        Some(acceptor) => {
            match tokio::time::timeout(ctx.opts.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => http1(ctx, tls, peer, local).await,
                Ok(Err(e)) => tracing::info!(client = %peer, "TLS handshake failed: {e}"),
                Err(_) => {
                    tracing::info!(client = %peer, "TLS handshake not complete in {} s; closed",
                        ctx.opts.header_timeout.as_secs()
                    )
                }
            }
        }
    }
}

async fn http1<S>(ctx: Arc<Ctx>, stream: S, peer: SocketAddr, local: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(ConnShared::default());
    let io = Guarded::new(
        stream,
        shared.clone(),
        ctx.opts.write_timeout,
        ctx.opts.max_head,
    );
    let conn = Arc::new(ConnInfo {
        peer,
        local,
        shared: shared.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer::new(
            shared.clone(),
            ctx.opts.header_timeout,
            ctx.opts.idle_timeout,
        ))
        .header_read_timeout(ctx.opts.header_timeout)
        .max_header_size(ctx.opts.max_head)
        .max_headers(ctx.opts.max_headers)
        .max_buf_size((ctx.opts.max_head + 1).max(64 * 1024))
        .keep_alive(true);
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, &conn, req).await) }
    });
    let served = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        match shared.timed_out() {
            Some(Timeout::Head) => {
                tracing::info!(client = %peer, "request head not complete in time; closed")
            }
            Some(Timeout::Idle) => tracing::debug!(client = %peer, "idle; closed"),
            None if e.is_incomplete_message() || e.is_canceled() => {
                tracing::debug!(client = %peer, "closed: {e}")
            }
            None if e.is_parse() || e.is_parse_too_large() => {
                tracing::info!(client = %peer, "malformed request ({e}); answered 4xx and closed")
            }
            None => tracing::info!(client = %peer, "connection closed: {e}"),
        }
    }
}

/// One connection's addresses and shared state.
struct ConnInfo {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: Arc<ConnShared>,
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// A response on its way out, with a note for the log.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Body,
    /// Close the connection after it (the request was not read whole, or
    /// its framing is not to be trusted).
    close: bool,
    note: String,
}

impl Reply {
    pub(crate) fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
            note: String::new(),
        }
    }

    pub(crate) fn text(status: StatusCode, text: &str) -> Reply {
        let mut r = Reply::new(status).header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        r.body = Body::Bytes(Bytes::from(format!("{text}\n")));
        r
    }

    /// 503 for a request that found the store queue full.
    pub(crate) fn busy_text() -> Reply {
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later")
            .header(header::RETRY_AFTER, &RETRY_AFTER_SECS.to_string())
            .note("store workers busy and their queue full")
    }

    fn soap(status: StatusCode, version: SoapVersion, body: String) -> Reply {
        let mut r = Reply::new(status).header(header::CONTENT_TYPE, version.content_type());
        r.body = Body::Bytes(Bytes::from(body));
        r
    }

    /// A fault the HTTP layer answers itself (the request never reached
    /// the endpoint).
    fn fault(
        status: StatusCode,
        version: SoapVersion,
        code: CommonCode,
        message: &str,
        actor: &str,
    ) -> Reply {
        Reply::soap(status, version, http_fault(version, code, message, actor))
    }

    fn busy_fault(version: SoapVersion, actor: &str) -> Reply {
        Reply::soap(
            StatusCode::SERVICE_UNAVAILABLE,
            version,
            busy_fault(version, actor),
        )
        .header(header::RETRY_AFTER, &RETRY_AFTER_SECS.to_string())
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub(crate) fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Reply {
        self.note = note.into();
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::SERVER, HeaderValue::from_static(SERVER));
        let mut has_length = false;
        for (k, v) in self.headers {
            has_length |= k == header::CONTENT_LENGTH;
            h.append(k, v);
        }
        if !has_length {
            let len = match resp.body() {
                Body::Bytes(b) => b.len() as u64,
                Body::File(f) => http_body::Body::size_hint(f).exact().unwrap_or(0),
                Body::Empty => 0,
            };
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

const SERVER: &str = concat!("gapsync/", env!("CARGO_PKG_VERSION"));

fn busy_fault(version: SoapVersion, actor: &str) -> String {
    http_fault(version, CommonCode::ServerBusy, "", actor)
}

/// A response body: bytes in memory, a file region, or nothing.
pub(crate) enum Body {
    Bytes(Bytes),
    File(FileBody),
    Empty,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Bytes(b) if b.is_empty() => Poll::Ready(None),
            Body::Bytes(b) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(b))))),
            Body::File(f) => Pin::new(f).poll_frame(cx),
            Body::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Bytes(b) => b.is_empty(),
            Body::File(f) => f.is_end_stream(),
            Body::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            Body::File(f) => f.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Answers one request and logs it: client, method, path, status, what
/// happened, time.
async fn handle(ctx: &Ctx, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let framing = conn.shared.next_framing();
    let method = req.method().clone();
    let target = loggable(req.uri().path_and_query().map_or("", |p| p.as_str()));
    let reply = route(ctx, conn, req, framing).await;
    let note = if reply.note.is_empty() {
        String::new()
    } else {
        format!(" {}", reply.note)
    };
    tracing::info!(
        client = %conn.peer,
        "{method} {target} -> {}{note} ({} ms)",
        reply.status.as_u16(),
        started.elapsed().as_millis()
    );
    reply.into_response()
}

async fn route(ctx: &Ctx, conn: &ConnInfo, req: Request<Incoming>, framing: Framing) -> Reply {
    let headers = req.headers();
    // Rule (RFC 9112 6.3): duplicate Content-Length fields, or
    // Content-Length with Transfer-Encoding, make the framing ambiguous:
    // 400 and close. The guards keep a note that does not fit this
    // request (it cannot happen while the scan and hyper agree) from
    // refusing it.
    if framing.duplicate_length && headers.contains_key(header::CONTENT_LENGTH) {
        return Reply::text(StatusCode::BAD_REQUEST, "duplicate Content-Length")
            .closing()
            .note("duplicate Content-Length");
    }
    if framing.length_and_encoding && headers.contains_key(header::TRANSFER_ENCODING) {
        return Reply::text(
            StatusCode::BAD_REQUEST,
            "Content-Length with Transfer-Encoding",
        )
        .closing()
        .note("Content-Length with Transfer-Encoding");
    }
    let path = req.uri().path().to_string();
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes().trim_ascii() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    match ctx.routes.find(&path) {
        Some(Route::Soap { path }) => {
            if req.method() != Method::POST {
                let r = Reply::text(StatusCode::METHOD_NOT_ALLOWED, "SOAP endpoints take POST")
                    .header(header::ALLOW, "POST");
                return if has_body { r.closing() } else { r };
            }
            soap(ctx, conn, req, path).await
        }
        Some(Route::Content) => content::serve(&ctx.pool, req.method(), req.headers(), &path).await,
        None => {
            let r = Reply::text(StatusCode::NOT_FOUND, "not found");
            if has_body { r.closing() } else { r }
        }
    }
}

/// The SOAP version and action a request's headers announce (see
/// [`request_binding`]).
fn soap_headers(headers: &HeaderMap) -> (SoapVersion, Option<String>) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    request_binding(text("content-type"), text("soapaction"))
}

/// Scheme and authority the client used: its `Host` when that is a plain
/// authority, else the address it connected to.
fn base_url(tls: bool, headers: &HeaderMap, local: Option<SocketAddr>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
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
        .or_else(|| local.map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

/// Why a request body was not read.
enum BodyError {
    TimedOut,
    /// The body memory is used up.
    Busy,
    Broken(String),
}

/// Reads a body of `len` bytes (announced by Content-Length) within the
/// body timeout, reserving its bytes in the shared body memory as they
/// arrive (a client pays with bytes actually sent, not with what it
/// announces).
async fn read_body(
    ctx: &Ctx,
    body: Incoming,
    len: usize,
) -> std::result::Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    let collect = async {
        let mut body = body;
        let mut out = Vec::with_capacity(len.min(64 * 1024));
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let n = u32::try_from(data.len()).map_err(|_| BodyError::Busy)?;
            let permit = ctx
                .body_memory
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| BodyError::Busy)?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            out.extend_from_slice(&data);
            if out.len() > len {
                return Err(BodyError::Broken("body longer than announced".into()));
            }
        }
        Ok((out, held))
    };
    match tokio::time::timeout(ctx.opts.body_timeout, collect).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// A SOAP call: HTTP-level checks (faults with the status the limit
/// names), the body within its limits, then the endpoint on a store
/// worker.
async fn soap(ctx: &Ctx, conn: &ConnInfo, req: Request<Incoming>, path: &'static str) -> Reply {
    let (parts, body) = req.into_parts();
    let (version, action) = soap_headers(&parts.headers);
    let base = base_url(ctx.tls.is_some(), &parts.headers, conn.local);
    let actor = format!("{base}{path}");
    let invalid = |status, message: &str| {
        Reply::fault(
            status,
            version,
            CommonCode::InvalidParameters,
            message,
            &actor,
        )
        .closing()
    };
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return invalid(StatusCode::LENGTH_REQUIRED, "Content-Length")
            .note("chunked request bodies are not accepted; send Content-Length");
    }
    let len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let Some(len) = len else {
        return invalid(StatusCode::LENGTH_REQUIRED, "Content-Length")
            .note("no valid Content-Length");
    };
    if len > ctx.opts.max_body {
        return invalid(StatusCode::PAYLOAD_TOO_LARGE, "request")
            .note(format!("body of {len} bytes exceeds {}", ctx.opts.max_body));
    }
    let (bytes, _memory) = match read_body(ctx, body, len).await {
        Ok(b) => b,
        Err(BodyError::TimedOut) => {
            return Reply::text(StatusCode::REQUEST_TIMEOUT, "request timeout")
                .closing()
                .note(format!(
                    "body not complete in {} s",
                    ctx.opts.body_timeout.as_secs()
                ));
        }
        Err(BodyError::Busy) => {
            return Reply::busy_fault(version, &actor)
                .closing()
                .note("request body memory used up");
        }
        Err(BodyError::Broken(why)) => {
            return Reply::text(StatusCode::BAD_REQUEST, "incomplete body")
                .closing()
                .note(format!("body: {why}"));
        }
    };
    if bytes.len() != len {
        return Reply::text(StatusCode::BAD_REQUEST, "incomplete body")
            .closing()
            .note("body shorter than announced");
    }
    let Ok(ticket) = ctx.pool.admit() else {
        return Reply::busy_fault(version, &actor).note("store workers busy and their queue full");
    };
    let routes = ctx.routes.clone();
    let limits = Limits {
        max_bytes: ctx.opts.max_body,
        ..Limits::REQUEST
    };
    let answered = ctx
        .pool
        .run(ticket, move |store| {
            routes.answer(
                store,
                &SoapRequest {
                    path,
                    body: &bytes,
                    action: action.as_deref(),
                    base_url: &base,
                    limits,
                },
            )
        })
        .await;
    match answered {
        Ok(out) => {
            let status =
                StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Reply::soap(status, out.version, out.body).note(out.summary)
        }
        Err(WorkError::Busy) => {
            Reply::busy_fault(version, &actor).note("store workers busy and their queue full")
        }
        Err(WorkError::Failed(why)) => Reply::fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            version,
            CommonCode::InternalServerError,
            "",
            &actor,
        )
        .note(why),
    }
}

/// A request target for the log: at most 120 characters, no controls.
fn loggable(s: &str) -> String {
    s.chars().take(120).filter(|c| !c.is_control()).collect()
}

/// Why an address cannot be bound, said once and in words.
fn bind_failure(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is already in use (another server listens on this port)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has this address".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(ServeOptions::default().check().is_ok());
        for bad in [
            ServeOptions {
                max_connections: 0,
                ..Default::default()
            },
            ServeOptions {
                header_timeout: Duration::ZERO,
                ..Default::default()
            },
            ServeOptions {
                max_head: 100,
                ..Default::default()
            },
            ServeOptions {
                body_memory: 1024,
                ..Default::default()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.is_usage(), "{e}");
        }
    }

    #[test]
    fn soap_versions_and_actions_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("soapaction", HeaderValue::from_static("\"urn:a\""));
        assert_eq!(soap_headers(&h), (SoapVersion::V11, Some("urn:a".into())));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/soap+xml; charset=utf-8; action=\"urn:b\""),
        );
        assert_eq!(soap_headers(&h), (SoapVersion::V12, Some("urn:b".into())));
    }

    #[test]
    fn base_urls_take_a_plain_host_only() {
        let local: SocketAddr = "10.0.0.1:8530".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("wsus.example:8530"));
        assert_eq!(base_url(false, &h, Some(local)), "http://wsus.example:8530");
        h.insert(header::HOST, HeaderValue::from_static("evil/<x>"));
        assert_eq!(base_url(true, &h, Some(local)), "https://10.0.0.1:8530");
    }
}
