//! Command-line parsing and dispatch: one file per command group, each
//! with its flags (`Args`/`Subcommand` types) and its command bodies; this
//! file holds the command tree, the context every command gets ([`Ctx`])
//! and the helpers they share. Exit codes: 0 ok, 1 error, 2 usage,
//! 3 verification failure (`failure.rs`).

mod approvals;
mod args;
mod bundle;
mod catalog;
mod console;
mod demo;
mod failure;
mod groups;
mod progress;
mod reports;
mod serve;
mod sites;
mod snapshot;
mod store;
mod sync;
mod trust;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use gapsync::store::Store;

use failure::usage;
use progress::TermProgress;

#[derive(Parser)]
#[command(
    name = "gapsync",
    version,
    about = "A WSUS-family update server that carries update state across an air gap",
    after_help = "Exit codes: 0 ok; 1 runtime error (I/O, lock, network, not found, a malformed key file); \
2 usage (a bad flag value or combination); 3 verification failure (signature, digest, size, chain rule, trust). \
With --json a failure is also printed on stdout as {\"error\": {\"code\", \"rule\", \"message\"}}."
)]
pub struct Cli {
    /// Server store directory.
    #[arg(long, global = true, env = "GAPSYNC_SERVER", value_name = "DIR")]
    server: Option<PathBuf>,
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new server store in DIR.
    Init(store::InitArgs),
    /// Show the store's identity, counts and anchor.
    Status(store::StatusArgs),
    /// Seed the catalog from files or generate a synthetic one.
    #[command(subcommand)]
    Catalog(catalog::CatalogCmd),
    /// Target groups.
    #[command(subcommand)]
    Groups(groups::GroupsCmd),
    /// Computers (minimal: name and group).
    #[command(subcommand)]
    Computers(groups::ComputersCmd),
    /// Settings of this store (`targeting`: where Windows clients' target
    /// groups come from).
    #[command(subcommand)]
    Config(store::ConfigCmd),
    /// Update status reported by Windows clients, per computer or update.
    #[command(subcommand)]
    Report(reports::ReportCmd),
    /// Events reported by Windows clients.
    #[command(subcommand)]
    Events(reports::EventsCmd),
    /// Sites whose reports this store imported (the way back across the
    /// gap: `export --report` at the site, `import` here).
    #[command(subcommand)]
    Sites(sites::SitesCmd),
    /// Approve an update's current revision for a group.
    Approve(approvals::ApproveArgs),
    /// Remove an update's approval for a group.
    Unapprove(approvals::UnapproveArgs),
    /// Decline an update (removes its approvals).
    Decline(approvals::DeclineArgs),
    /// Deployments (approvals).
    #[command(subcommand)]
    Deployments(approvals::DeploymentsCmd),
    /// Updates in the catalog.
    #[command(subcommand)]
    Updates(catalog::UpdatesCmd),
    /// Changes recorded in the journal after an anchor.
    Journal(store::JournalArgs),
    /// Check the store: database integrity, journal, every content file's
    /// digests, staging leftovers, the import ledger. Exit 3 if a problem is
    /// found.
    Check(store::CheckArgs),
    /// Serve downstream servers (MS-WSUSSS upstream role) and content.
    Serve(serve::ServeArgs),
    /// The administration console in the browser (`console passwd` sets
    /// its password).
    Console(console::ConsoleArgs),
    /// Synchronize from an upstream WSUS or gapsync server (MS-WSUSSS).
    Sync(sync::SyncArgs),
    /// Bundles exported, per destination (the chains).
    #[command(subcommand)]
    Exports(bundle::ListCmd),
    /// Bundles imported, per source (the import ledger).
    #[command(subcommand)]
    Imports(bundle::ListCmd),
    /// Signing keys.
    #[command(subcommand)]
    Key(trust::KeyCmd),
    /// The keys whose bundles this server accepts.
    #[command(subcommand)]
    Trust(trust::TrustCmd),
    /// Export the store (or what changed) as a signed bundle.
    Export(bundle::ExportArgs),
    /// Verify a bundle: signature, expiry, every hash, completeness (and,
    /// with --server, its place in that server's chain).
    Verify(bundle::VerifyArgs),
    /// Verify and apply a bundle, all or nothing.
    Import(bundle::ImportArgs),
    /// Write a signed disaster-recovery snapshot of the whole store
    /// (local state included), full or on a base.
    Snapshot(snapshot::SnapshotArgs),
    /// Verify a snapshot (and its bases) and rebuild the store from it in
    /// a new folder: same server id, revisions, anchors, computers.
    Restore(snapshot::RestoreArgs),
    /// Run the demonstration in a fresh folder.
    Demo(demo::DemoArgs),
}

/// What every command gets besides its own flags.
pub(crate) struct Ctx {
    /// `--server` or `GAPSYNC_SERVER`.
    server: Option<PathBuf>,
    /// Whether `server` came from `GAPSYNC_SERVER` rather than `--server`
    /// (an explicit `verify --trust` wins over the environment's server).
    server_from_env: bool,
    /// Progress on stderr (bars on a terminal, lines otherwise; none with
    /// `--quiet`).
    progress: TermProgress,
}

impl Ctx {
    /// The selected server store, or a usage error.
    fn server(&self) -> Result<&Path> {
        self.server.as_deref().ok_or_else(|| {
            usage!("no server store selected: pass --server DIR or set GAPSYNC_SERVER")
        })
    }
}

pub fn main() -> ExitCode {
    if let Some(name) = std::env::var_os("GAPSYNC_FAILPOINT") {
        gapsync::failpoint::arm(&name.to_string_lossy(), |name| {
            eprintln!("gapsync: failpoint {name} reached, aborting")
        });
    }
    // Tests of the readers of bundle format versions 1 and 2 make such
    // bundles with the old writer (docs/bundle-format.md §16).
    if std::env::var_os("GAPSYNC_TEST_BUNDLE_FORMAT").is_some_and(|v| v == "1") {
        gapsync::airgap::export::write_format_1_for_tests(true);
    }
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, server_from_env) = match parsed {
        Ok((c, m)) => {
            let from_env = m.value_source("server") == Some(clap::parser::ValueSource::EnvVariable);
            (c, from_env)
        }
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS; // --help, --version
            }
            if wants_json() {
                let text = e.kind().to_string();
                let msg = e
                    .render()
                    .to_string()
                    .lines()
                    .next()
                    .map(|l| l.trim_start_matches("error: ").to_string())
                    .unwrap_or(text);
                failure::print_json_failure(failure::EXIT_USAGE, None, &msg);
            }
            return ExitCode::from(failure::EXIT_USAGE);
        }
    };
    let json = wants_json();
    match run(cli, server_from_env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure::report(&e, json),
    }
}

/// Whether the command line asks for `--json` (also read when parsing
/// failed, so that a usage error is a JSON object too).
fn wants_json() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

fn run(cli: Cli, server_from_env: bool) -> Result<()> {
    let ctx = Ctx {
        server: cli.server,
        server_from_env,
        progress: TermProgress::new(cli.quiet),
    };
    let ctx = &ctx;
    match cli.command {
        Command::Init(a) => store::init(a),
        Command::Status(a) => store::status(ctx, a),
        Command::Catalog(cmd) => catalog::catalog(ctx, cmd),
        Command::Groups(cmd) => groups::groups(ctx, cmd),
        Command::Computers(cmd) => groups::computers(ctx, cmd),
        Command::Config(cmd) => store::config(ctx, cmd),
        Command::Report(cmd) => reports::report(ctx, cmd),
        Command::Events(cmd) => reports::events(ctx, cmd),
        Command::Sites(cmd) => sites::sites(ctx, cmd),
        Command::Approve(a) => approvals::approve(ctx, a),
        Command::Unapprove(a) => approvals::unapprove(ctx, a),
        Command::Decline(a) => approvals::decline(ctx, a),
        Command::Deployments(cmd) => approvals::deployments(ctx, cmd),
        Command::Updates(cmd) => catalog::updates(ctx, cmd),
        Command::Journal(a) => store::journal(ctx, a),
        Command::Check(a) => store::check(ctx, a),
        Command::Serve(a) => serve::serve(ctx.server()?, &a),
        Command::Console(a) => console::run(ctx.server()?, &a),
        Command::Sync(a) => sync::sync(ctx, a),
        Command::Exports(cmd) => bundle::exports_list(ctx, cmd),
        Command::Imports(cmd) => bundle::imports_list(ctx, cmd),
        Command::Key(cmd) => trust::key(cmd),
        Command::Trust(cmd) => trust::trust(ctx, cmd),
        Command::Export(a) => bundle::export(ctx, a),
        Command::Verify(a) => bundle::verify(ctx, a),
        Command::Import(a) => bundle::import(ctx, a),
        Command::Snapshot(a) => snapshot::snapshot(ctx, a),
        Command::Restore(a) => snapshot::restore(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
    }
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A warning on stderr (the exit status is unchanged): something legal but
/// probably wrong.
pub(crate) fn warn(msg: impl std::fmt::Display) {
    eprintln!("gapsync: warning: {msg}");
}

/// Warns about each `FLAG ID` (a `--product` or `--classification`
/// filter) that names no category update of the store: such a filter
/// matches no update.
pub(crate) fn warn_unknown_categories(store: &Store, flag: &str, ids: &[String]) -> Result<()> {
    for id in store.unknown_categories(ids)? {
        warn(format_args!(
            "{flag} {id}: not a category in this store, so this filter matches no update (the store's categories: `gapsync updates list --kind category`)"
        ));
    }
    Ok(())
}

/// [`warn_unknown_categories`] on the store in `server`, opened read-only;
/// silent when it cannot be opened (the command itself says why).
pub(crate) fn warn_unknown_categories_in(server: &Path, flag: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    if let Ok(store) = Store::open_read_only(server) {
        let _ = warn_unknown_categories(&store, flag, ids);
    }
}
