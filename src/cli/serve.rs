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
    gapsync::serve::log(
        None,
        &format!(
            "serving server {} ({}, {}) from {} on {}://{addr}",
            info.name,
            info.server_id,
            info.mode.as_str(),
            server.display(),
            srv.scheme()
        ),
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}://{addr}", srv.scheme())?;
    out.flush()?;
    drop(out);
    srv.run()?;
    Ok(())
}

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
