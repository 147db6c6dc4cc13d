//! `console`: the administration console in the browser, and
//! `console passwd`, which sets its password.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};

use super::failure::usage;
use gapsync::console::{Console, ConsoleOptions, auth, is_loopback};
use gapsync::http::TlsFiles;
use gapsync::store::Store;

/// Flags of `console`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConsoleArgs {
    #[command(subcommand)]
    pub cmd: Option<ConsoleCmd>,
    /// Address and port to listen on (HOST:PORT; port 0: any free port).
    /// Anything but a loopback address needs --tls-cert/--tls-key, or
    /// --insecure-http.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = super::serve::parse_listen)]
    pub listen: String,
    /// TLS certificate (PEM); with --tls-key, serve HTTPS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: the password and the
    /// session cross the network readable by anyone on it.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,
    /// Administrator name recorded in approvals made in the console.
    #[arg(long, env = "GAPSYNC_ADMIN")]
    pub admin: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ConsoleCmd {
    /// Set the console password of the store (asked twice on a terminal;
    /// otherwise one line read from stdin).
    Passwd,
}

pub fn run(server: &Path, a: &ConsoleArgs) -> Result<()> {
    match a.cmd {
        Some(ConsoleCmd::Passwd) => passwd(server),
        None => console(server, a),
    }
}

fn passwd(server: &Path) -> Result<()> {
    let store = Store::open_writer(server)?;
    let pw = if std::io::stdin().is_terminal() {
        let first = prompt("New console password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(usage!("the two passwords differ; nothing changed"));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    auth::check_password_rules(&pw)?;
    let phc = auth::hash_password(&pw)?;
    store.set_console_password_hash(&phc)?;
    println!(
        "console password set for {} (sessions of a running console stay logged in until they end)",
        server.display()
    );
    Ok(())
}

/// Reads a line from the terminal without echo (unix), or with it.
fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let _echo = EchoOff::new();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    eprintln!();
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns terminal echo off while alive (unix; elsewhere a no-op).
struct EchoOff {
    #[cfg(unix)]
    saved: Option<libc::termios>,
}

impl EchoOff {
    #[cfg(unix)]
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, struct.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff { saved: None };
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return EchoOff { saved: None };
            }
            EchoOff { saved: Some(saved) }
        }
    }
    #[cfg(not(unix))]
    fn new() -> EchoOff {
        EchoOff {}
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

fn console(server: &Path, a: &ConsoleArgs) -> Result<()> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let loopback = is_loopback(&a.listen);
    if !loopback && tls.is_none() && !a.insecure_http {
        return Err(usage!(
            "--listen {}: not a loopback address, so the console needs --tls-cert and --tls-key (or --insecure-http, which sends the password readable on the network)",
            a.listen
        ));
    }
    if a.insecure_http && loopback {
        super::warn("--insecure-http has no effect on a loopback address");
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
    let console = Console::bind(
        server,
        ConsoleOptions {
            listen: a.listen.clone(),
            tls,
            admin_name: a
                .admin
                .clone()
                .unwrap_or_else(super::approvals::default_admin),
        },
    )?;
    if !loopback && a.insecure_http {
        eprintln!(
            "gapsync: WARNING: the console serves PLAIN HTTP on {}: the password and session cookies cross the network unencrypted; anyone on the path can take over the console. Use --tls-cert/--tls-key.",
            a.listen
        );
    }
    let addr = console.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}://{addr}", console.scheme())?;
    out.flush()?;
    drop(out);
    console.run()?;
    Ok(())
}
