//! The administration console (`gapsync console`): a small web server of
//! its own, on the same stack as `serve` (tokio + hyper 1 + tokio-rustls,
//! and `serve`'s TLS loading), that renders every page on the server from
//! the store.
//!
//! - Self-contained for air-gapped networks: the stylesheet, a small
//!   optional script (select all, confirm decline) and the logo are
//!   embedded in the binary (`include_str!`); pages read and work without
//!   JavaScript. Every response carries a strict Content-Security-Policy
//!   ([`app::CSP`]): nothing but this server's own files, no inline script
//!   or style.
//! - Authentication: a password per store (Argon2id hash in the store's
//!   `config`, set by `gapsync console passwd`), sessions and CSRF tokens,
//!   rate-limited logins ([`auth`]).
//! - Reads open the store read-only per request; actions open it as the
//!   writer and call the library's `approve`, `unapprove` and `decline`, so
//!   they are journaled exactly as the command line's. Lists are paged in
//!   SQL ([`crate::store::console`]).
//! - Limits: [`MAX_CONNECTIONS`] connections, request heads within
//!   [`HEAD_TIMEOUT`], form bodies up to [`MAX_BODY`].

pub mod app;
pub mod auth;
pub mod html;
pub mod pages;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::http::TlsFiles;
use crate::store::Store;
use app::{App, Method, Req};

pub const MAX_CONNECTIONS: usize = 256;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(20);
pub const MAX_BODY: usize = 256 * 1024;

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// `HOST:PORT`.
    pub listen: String,
    pub tls: Option<TlsFiles>,
    /// Recorded as the administrator of approvals made in the console.
    pub admin_name: String,
}

/// Whether `listen` (`HOST:PORT`) names only loopback addresses
/// (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(a) = listen.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost"))
}

/// A bound console, not yet running.
pub struct Console {
    listener: StdListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
}

impl Console {
    /// Opens the store in `root` (which must have a console password),
    /// loads the TLS files, binds the address.
    pub fn bind(root: &Path, opts: ConsoleOptions) -> Result<Console> {
        let store = Store::open_read_only(root)?;
        if store.console_password_hash()?.is_none() {
            return Err(Error::NoConsolePassword(root.to_path_buf()));
        }
        drop(store);
        let tls = opts.tls.as_ref().map(crate::http::load_tls).transpose()?;
        let listener = StdListener::bind(&opts.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::CannotListen {
                addr: opts.listen.clone(),
                why: e.to_string(),
            })?;
        let loopback = listener
            .local_addr()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false);
        Ok(Console {
            listener,
            app: Arc::new(App {
                root: PathBuf::from(root),
                sessions: auth::Sessions::default(),
                limiter: auth::LoginLimiter::default(),
                admin_name: opts.admin_name,
                tls: tls.is_some(),
                loopback,
            }),
            tls,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("gapsync-console")
            .max_blocking_threads(16)
            .build()
            .map_err(|e| Error::io("console runtime", e))?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> Result<()> {
        let listener =
            TcpListener::from_std(self.listener).map_err(|e| Error::io("listening socket", e))?;
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(client = %peer, "refused: {MAX_CONNECTIONS} connections open (the limit)");
                continue;
            };
            let app = self.app.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match acceptor {
                    None => connection(app, tcp, peer).await,
                    Some(a) => match tokio::time::timeout(HEAD_TIMEOUT, a.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(app, tls, peer).await,
                        Ok(Err(e)) => tracing::info!(client = %peer, "TLS handshake failed: {e}"),
                        Err(_) => {
                            tracing::info!(client = %peer, "TLS handshake not complete in time")
                        }
                    },
                }
            });
        }
    }
}

async fn connection<S>(app: Arc<App>, stream: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(app, peer, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(client = %peer, "connection closed: {e}");
    }
}

async fn handle(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let method = match parts.method {
        hyper::Method::GET => Method::Get,
        hyper::Method::HEAD => Method::Head,
        hyper::Method::POST => Method::Post,
        _ => Method::Other,
    };
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let cookies = parts
        .headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(app::parse_cookies)
        .collect();
    let form = if method == Method::Post {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => pages::Params(form_urlencoded::parse(&b.to_bytes()).into_owned().collect()),
            Err(_) => return plain(413, "request body too large or cut short"),
        }
    } else {
        pages::Params(Vec::new())
    };
    let r = Req {
        method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        host: header(hyper::header::HOST),
        cookies,
        form,
        peer: peer.ip(),
    };
    let path = r.path.clone();
    let head = method == Method::Head;
    let resp = match tokio::task::spawn_blocking(move || app.handle(&r)).await {
        Ok(r) => r,
        Err(_) => return plain(500, "internal error"),
    };
    tracing::info!(client = %peer, "{} {} {} {} ms",
        parts.method,
        path.chars().take(200).collect::<String>(),
        resp.status,
        started.elapsed().as_millis()
    );
    let mut b = Response::builder()
        .status(resp.status)
        .header(hyper::header::CONTENT_TYPE, resp.content_type);
    for (k, v) in &resp.headers {
        b = b.header(*k, v.as_str());
    }
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(resp.body)
    };
    b.body(Full::new(body))
        .unwrap_or_else(|_| plain(500, "internal error"))
}

fn plain(status: u16, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_listen_addresses() {
        for a in [
            "127.0.0.1:8080",
            "127.1.2.3:0",
            "[::1]:8080",
            "localhost:8080",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.1:80",
            "console.corp:443",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
    }
}
