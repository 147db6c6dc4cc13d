//! `serve`: runs the upstream (USS) role of a store over HTTP or HTTPS.

use std::io::Write;
use std::path::Path;

use super::failure::usage;
use anyhow::Result;

use gapsync::serve::{ServeOptions, Server, TlsFiles};
use gapsync::store::Store;

/// Serves `server` on `listen` (HTTPS when both TLS files are given) until
/// the process is stopped. Prints `listening on URL` to stdout once bound
/// (with the real port when `listen` asks for port 0); logs go to stderr.
pub fn serve(
    server: &Path,
    listen: &str,
    tls_cert: Option<&Path>,
    tls_key: Option<&Path>,
) -> Result<()> {
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        (None, None) => None,
        _ => return Err(usage!("--tls-cert and --tls-key go together")),
    };
    let opts = ServeOptions {
        listen: listen.to_string(),
        tls,
        ..ServeOptions::default()
    }
    .with_env_overrides()?;
    let info = Store::open(server)?.info().clone();
    let srv = Server::bind(server, opts)?;
    let addr = srv.local_addr()?;
    eprintln!(
        "gapsync serve: server {} ({}, {}) from {}",
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
