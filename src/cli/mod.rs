//! Command-line parsing and dispatch. Exit codes: 0 ok, 1 error, 2 usage,
//! 3 verification failure.

mod args;
mod bundle;
mod console;
mod demo;
mod failure;
mod progress;
mod serve;
mod sync;
mod trust;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use gapsync::model::metadata::UpdateKind;
use gapsync::model::units::{count, human_bytes};
use gapsync::seed::files as seed_files;
use gapsync::seed::generate::{self, GenerateOptions};
use gapsync::store::deployments::{Action, Approval};
use gapsync::store::{Mode, Store, UpdateFilter};
use gapsync::trust::KeyId;

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
    /// Whether `server` came from `GAPSYNC_SERVER` rather than `--server`
    /// (an explicit `verify --trust` wins over the environment's server).
    #[arg(skip)]
    server_from_env: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new server store in DIR.
    Init {
        dir: PathBuf,
        #[arg(long, default_value = "gapsync")]
        name: String,
        #[arg(long, value_enum, default_value_t = ModeArg::Autonomous)]
        mode: ModeArg,
        #[arg(long)]
        json: bool,
    },
    /// Show the store's identity, counts and anchor.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Seed the catalog from files or generate a synthetic one.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Target groups.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Computers (minimal: name and group).
    #[command(subcommand)]
    Computers(ComputersCmd),
    /// Approve an update's current revision for a group.
    Approve {
        #[arg(value_parser = args::guid)]
        update_id: String,
        #[arg(long)]
        group: String,
        #[arg(long, value_enum, default_value_t = ActionArg::Install)]
        action: ActionArg,
        /// Installation deadline, RFC 3339 (e.g. 2026-12-01T18:00:00Z); a
        /// past one is accepted with a warning.
        #[arg(long, value_parser = args::deadline)]
        deadline: Option<time::OffsetDateTime>,
        /// Administrator name recorded in the deployment.
        #[arg(long, env = "GAPSYNC_ADMIN")]
        admin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove an update's approval for a group.
    Unapprove {
        #[arg(value_parser = args::guid)]
        update_id: String,
        #[arg(long)]
        group: String,
    },
    /// Decline an update (removes its approvals).
    Decline {
        #[arg(value_parser = args::guid)]
        update_id: String,
    },
    /// Deployments (approvals).
    #[command(subcommand)]
    Deployments(DeploymentsCmd),
    /// Updates in the catalog.
    #[command(subcommand)]
    Updates(UpdatesCmd),
    /// Changes recorded in the journal after an anchor.
    Journal {
        /// Anchor to list changes after (default: from the beginning).
        #[arg(long, value_parser = args::anchor)]
        since: Option<gapsync::store::journal::Anchor>,
        #[arg(long)]
        json: bool,
    },
    /// Check the store: database integrity, journal, every content file's
    /// digests, staging leftovers, the import ledger. Exit 3 if a problem is
    /// found.
    Check {
        /// Fix what is safe to fix (staging leftovers), and say so.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Serve downstream servers (MS-WSUSSS upstream role) and content.
    Serve(serve::ServeArgs),
    /// Synchronize from an upstream WSUS or gapsync server (MS-WSUSSS).
    Sync {
        /// The upstream server, e.g. http://wsus.example:8530.
        #[arg(long)]
        upstream: String,
        /// Take groups and approvals from the upstream (replica stores).
        #[arg(long)]
        replica: bool,
        /// Only updates of this product (repeatable; remembered).
        #[arg(long = "product", value_parser = args::guid)]
        products: Vec<String>,
        /// Only updates of this classification (repeatable; remembered).
        #[arg(long = "classification", value_parser = args::guid)]
        classifications: Vec<String>,
        /// Content to download: all, approved or none.
        #[arg(long, default_value = "all", value_parser = ["all", "approved", "none"])]
        content: String,
        #[arg(long)]
        json: bool,
    },
    /// Bundles exported, per destination (the chains).
    #[command(subcommand)]
    Exports(ListCmd),
    /// Bundles imported, per source (the import ledger).
    #[command(subcommand)]
    Imports(ListCmd),
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// The keys whose bundles this server accepts.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Export the store (or what changed) as a signed bundle.
    Export {
        /// Secret key to sign with (PREFIX.key).
        #[arg(long)]
        key: PathBuf,
        /// Bundle folder to create.
        #[arg(long)]
        out: PathBuf,
        /// Destination name (1-128 characters): each destination has its
        /// own chain.
        #[arg(long, default_value = "default", value_parser = args::destination)]
        to: String,
        /// A full bundle, even if the destination's chain could continue.
        #[arg(long, conflicts_with = "since")]
        full: bool,
        /// Continue from the link(s) that ended at this anchor (the
        /// to_anchor `imports list` shows on the disconnected server)
        /// instead of the chain's last link: replaces bundles lost on the
        /// way.
        #[arg(long, value_parser = args::anchor)]
        since: Option<gapsync::store::journal::Anchor>,
        /// Write an incremental bundle even when nothing changed and no
        /// trust statement is queued (refused otherwise).
        #[arg(long)]
        allow_empty: bool,
        /// Content to include: all, approved or none.
        #[arg(long, default_value = "all", value_parser = ["all", "approved", "none"])]
        content: String,
        /// Only updates of this product (repeatable).
        #[arg(long = "product", value_parser = args::guid)]
        products: Vec<String>,
        /// Only updates of this classification (repeatable).
        #[arg(long = "classification", value_parser = args::guid)]
        classifications: Vec<String>,
        /// Languages (repeatable; recorded in the manifest).
        #[arg(long = "language")]
        languages: Vec<String>,
        /// Split into volumes of at most SIZE (e.g. 700M, 4G, 25G; at least
        /// 2052K: each volume keeps 1 MiB for manifest and sums).
        #[arg(long, value_parser = args::volume_size)]
        volume_size: Option<u64>,
        /// Validity period: a number and s, m, h, d or w (e.g. 30d, 12h);
        /// between 1m and 3650d (10 years); under 1h is warned about.
        #[arg(long, default_value = "30d", value_parser = args::expires)]
        expires: time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle: signature, expiry, every hash, completeness (and,
    /// with --server, its place in that server's chain).
    Verify {
        path: Option<PathBuf>,
        /// Volume folders, in order, instead of PATH.
        #[arg(long, num_args = 1..)]
        volumes: Vec<PathBuf>,
        /// Public keys to trust (PREFIX.pub), instead of a server's trust
        /// store: wins over GAPSYNC_SERVER; not with --server.
        #[arg(long, num_args = 1..)]
        trust: Vec<PathBuf>,
        /// Accept an expired bundle (loudly).
        #[arg(long)]
        allow_expired: bool,
        #[arg(long)]
        json: bool,
    },
    /// Verify and apply a bundle, all or nothing.
    Import {
        path: Option<PathBuf>,
        /// Volume folders, in order (one folder may be given for all: the
        /// next medium is asked for on a terminal).
        #[arg(long, num_args = 1..)]
        volumes: Vec<PathBuf>,
        /// Print the plan and change nothing (every volume must be given).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: plan from volume 1 alone when later volumes are
        /// not at hand (the plan names them).
        #[arg(long, requires = "dry_run")]
        plan_from_first_volume: bool,
        /// Accept a full bundle that replaces the chain from its source.
        #[arg(long)]
        rebase: bool,
        /// Accept an expired bundle (loudly).
        #[arg(long)]
        allow_expired: bool,
        #[arg(long)]
        json: bool,
    },
    /// The administration console in the browser (`console passwd` sets
    /// its password).
    Console(console::ConsoleArgs),
    /// Run the demonstration in a fresh folder.
    Demo {
        /// Folder to create the demo servers in (a fresh one is made inside).
        #[arg(long, default_value = "gapsync-demo")]
        dir: PathBuf,
        /// Updates to generate (1-100000000).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=generate::MAX_UPDATES))]
        updates: u64,
        /// Total content size (e.g. 128M, 2G; at most 16T).
        #[arg(long, default_value = "128M", value_parser = args::content_bytes)]
        content_bytes: u64,
    },
}

#[derive(Subcommand)]
enum ListCmd {
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write a new Ed25519 key pair: PREFIX.key (secret) and PREFIX.pub.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TrustCmd {
    /// Trust a public key (PREFIX.pub).
    Add {
        public_key: PathBuf,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key (by key id).
    Remove {
        #[arg(value_parser = trust::key_id_arg)]
        key_id: KeyId,
    },
    /// Issue a signed statement (carried in the next bundles) that adds or
    /// revokes a key on the importing servers; list or cancel queued ones.
    #[command(group(
        clap::ArgGroup::new("what")
            .required(true)
            .args(["add", "revoke", "list", "cancel"])
    ))]
    Statement {
        /// The currently trusted key that signs the statement (with --add
        /// or --revoke).
        #[arg(
            long,
            value_name = "SIGNER.key",
            required_unless_present_any = ["list", "cancel"],
            conflicts_with_all = ["list", "cancel"]
        )]
        key: Option<PathBuf>,
        /// Public key to introduce.
        #[arg(long, value_name = "NEW.pub")]
        add: Option<PathBuf>,
        /// Label of the key introduced (default: its file name).
        #[arg(long, requires = "add")]
        label: Option<String>,
        /// Key id to revoke (not the signing key's own).
        #[arg(long, value_name = "KEYID", value_parser = trust::key_id_arg)]
        revoke: Option<KeyId>,
        /// List the queued statements and the destinations each went to.
        #[arg(long)]
        list: bool,
        /// Cancel a queued statement that no bundle has carried yet.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
        cancel: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Add update XML files or folders of them.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Folder of content files, matched to the metadata by digest name.
        #[arg(long)]
        content: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate a synthetic, realistic catalog.
    Generate {
        /// Software and driver updates to generate (0-100000000).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=generate::MAX_UPDATES))]
        updates: u64,
        /// Total content size, e.g. 512M, 2G (0 for metadata only; at most
        /// 16T).
        #[arg(long, default_value = "0", value_parser = args::content_bytes)]
        content_bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GroupsCmd {
    Add {
        name: String,
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a group: its computers move to "Unassigned Computers" and
    /// its approvals are removed (both are listed).
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ComputersCmd {
    Add {
        name: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeploymentsCmd {
    List {
        #[arg(long)]
        json: bool,
        /// List removed ("dead") deployments instead.
        #[arg(long)]
        removed: bool,
    },
}

#[derive(Subcommand)]
enum UpdatesCmd {
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Product category id.
        #[arg(long, value_parser = args::guid)]
        product: Option<String>,
        /// Classification category id.
        #[arg(long, value_parser = args::guid)]
        classification: Option<String>,
    },
    Show {
        #[arg(value_parser = args::guid)]
        id: String,
        #[arg(long)]
        json: bool,
        /// Print the current revision's verbatim XML.
        #[arg(long, conflicts_with = "json")]
        xml: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Autonomous,
    Replica,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    Install,
    Uninstall,
    Block,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Software,
    Driver,
    Category,
    Detectoid,
}

pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let cli = match parsed {
        Ok((mut c, m)) => {
            c.server_from_env =
                m.value_source("server") == Some(clap::parser::ValueSource::EnvVariable);
            c
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure::report(&e, json),
    }
}

/// Whether the command line asks for `--json` (also read when parsing
/// failed, so that a usage error is a JSON object too).
fn wants_json() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

fn server_dir(cli_server: &Option<PathBuf>) -> Result<&Path> {
    cli_server
        .as_deref()
        .ok_or_else(|| usage!("no server store selected: pass --server DIR or set GAPSYNC_SERVER"))
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

fn default_admin() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "gapsync-admin".to_string())
}

fn run(cli: Cli) -> Result<()> {
    let progress = TermProgress::new(cli.quiet);
    match cli.command {
        Command::Init {
            dir,
            name,
            mode,
            json,
        } => {
            let mode = match mode {
                ModeArg::Autonomous => Mode::Autonomous,
                ModeArg::Replica => Mode::Replica,
            };
            let store = Store::init(&dir, &name, mode)?;
            if json {
                print_json(&store.status()?)?;
            } else {
                let i = store.info();
                println!(
                    "initialised {} server {:?} (id {}) in {}",
                    i.mode.as_str(),
                    i.name,
                    i.server_id,
                    dir.display()
                );
            }
        }
        Command::Status { json } => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let s = store.status()?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "server      {} ({}), {}",
                    s.name,
                    s.server_id,
                    s.mode.as_str()
                );
                println!(
                    "updates     {} (software {}, driver {}, category {}, detectoid {}); {} revisions, {} declined",
                    s.updates.total,
                    s.updates.software,
                    s.updates.driver,
                    s.updates.category,
                    s.updates.detectoid,
                    s.revisions,
                    s.declined
                );
                println!("groups      {}; computers {}", s.groups, s.computers);
                println!("deployments {}", s.deployments);
                println!(
                    "content     {} files, {}",
                    s.content_files,
                    human_bytes(s.content_bytes as u64)
                );
                println!("anchor      {}", s.anchor);
            }
        }
        Command::Catalog(CatalogCmd::Add {
            paths,
            content,
            json,
        }) => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            let r = seed_files::add_paths(&mut store, &paths, content.as_deref(), &progress)?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "{}: {} added, {} already present; {} ({}) added, {} not found",
                    count(r.documents, "document"),
                    count(r.revisions_added, "revision"),
                    r.revisions_already_present,
                    count(r.content_files_added, "content file"),
                    human_bytes(r.content_bytes_added),
                    r.content_missing
                );
            }
        }
        Command::Catalog(CatalogCmd::Generate {
            updates,
            content_bytes,
            seed,
            json,
        }) => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            let opts = GenerateOptions {
                updates,
                content_bytes,
                seed,
            };
            let r = generate::generate(&mut store, &opts, &progress)?;
            if json {
                print_json(&r)?;
            } else {
                let revisions = r.revisions_added + r.revisions_already_present;
                println!(
                    "generated (seed {seed}): {} of {} ({} added, {} already present): {}, {}, {} ({}), {}; {}, {}",
                    count(revisions, "revision"),
                    count(
                        r.categories + r.detectoids + r.software + r.drivers,
                        "update"
                    ),
                    r.revisions_added,
                    r.revisions_already_present,
                    count(r.categories, "category"),
                    count(r.detectoids, "detectoid"),
                    count(r.software, "software update"),
                    count(r.bundles, "bundle"),
                    count(r.drivers, "driver"),
                    count(r.content_files, "content file"),
                    human_bytes(r.content_bytes)
                );
            }
        }
        Command::Groups(cmd) => groups(&cli.server, cmd)?,
        Command::Computers(ComputersCmd::Add { name, group, json }) => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            let c = store.add_computer(&name, group.as_deref())?;
            if json {
                print_json(&c)?;
            } else {
                println!("added computer {:?} to group {:?}", c.name, c.group);
            }
        }
        Command::Computers(ComputersCmd::List { json }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let list = store.list_computers()?;
            if json {
                print_json(&list)?;
            } else {
                for c in list {
                    println!("{:<40} {}", c.name, c.group);
                }
            }
        }
        Command::Approve {
            update_id,
            group,
            action,
            deadline,
            admin,
            json,
        } => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            let action = match action {
                ActionArg::Install => Action::Install,
                ActionArg::Uninstall => Action::Uninstall,
                ActionArg::Block => Action::Block,
            };
            let admin = admin.unwrap_or_else(default_admin);
            let deadline_text = deadline
                .map(|t| t.format(&time::format_description::well_known::Rfc3339))
                .transpose()
                .map_err(|e| usage!("--deadline: {e}"))?;
            let d = store.approve(&Approval {
                update_id: &update_id,
                group: &group,
                action,
                deadline: deadline_text.as_deref(),
                admin_name: &admin,
            })?;
            if let (Some(t), Some(text)) = (&deadline, &deadline_text) {
                args::warn_past_deadline(t, text);
            }
            if json {
                print_json(&d)?;
            } else {
                println!(
                    "approved {} revision {} for {:?}: {}{}",
                    d.update_id,
                    d.revision,
                    d.group,
                    d.action,
                    d.deadline
                        .as_deref()
                        .map(|x| format!(", deadline {x}"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Unapprove { update_id, group } => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            let id = store.unapprove(&update_id, &group)?;
            println!("removed deployment {id}");
        }
        Command::Decline { update_id } => {
            let mut store = Store::open_writer(server_dir(&cli.server)?)?;
            if store.decline(&update_id)? {
                println!("declined {}", store.resolve_update(&update_id)?);
            } else {
                println!("{} was already declined", store.resolve_update(&update_id)?);
            }
        }
        Command::Deployments(DeploymentsCmd::List { json, removed }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let list = if removed {
                store.list_dead_deployments()?
            } else {
                store.list_deployments()?
            };
            if json {
                print_json(&list)?;
            } else {
                for d in list {
                    println!(
                        "{} r{:<5} {:<30} {:<9} {}",
                        d.update_id,
                        d.revision,
                        d.group,
                        d.action,
                        d.deadline.unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        Command::Updates(UpdatesCmd::List {
            json,
            kind,
            product,
            classification,
        }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let filter = UpdateFilter {
                kind: kind.map(|k| match k {
                    KindArg::Software => UpdateKind::Software,
                    KindArg::Driver => UpdateKind::Driver,
                    KindArg::Category => UpdateKind::Category,
                    KindArg::Detectoid => UpdateKind::Detectoid,
                }),
                product,
                classification,
            };
            warn_unknown_categories(&store, "--product", filter.product.as_slice())?;
            warn_unknown_categories(&store, "--classification", filter.classification.as_slice())?;
            let list = store.list_updates(&filter)?;
            if json {
                print_json(&list)?;
            } else {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for u in list {
                    writeln!(
                        out,
                        "{} r{:<5} {:<9} {}{}",
                        u.id,
                        u.revision,
                        u.kind,
                        u.title,
                        if u.declined { " [declined]" } else { "" }
                    )?;
                }
                out.flush()?;
            }
        }
        Command::Updates(UpdatesCmd::Show { id, json, xml }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let d = store.update_detail(&id)?;
            if xml {
                use std::io::Write;
                let bytes = store.revision_xml(d.revision_id)?;
                std::io::stdout().write_all(&bytes)?;
            } else if json {
                print_json(&d)?;
            } else {
                show_update(&d);
            }
        }
        Command::Journal { since, json } => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let from = match since {
                Some(a) => store.own_anchor(&a.to_string())?,
                None => gapsync::store::journal::Anchor {
                    server_id: store.info().server_id,
                    seq: 0,
                },
            };
            let changes = store.changes_since(&from)?;
            if json {
                print_json(&changes)?;
            } else {
                for c in changes {
                    println!(
                        "{:>8} {:<20} {} {}",
                        c.seq,
                        c.kind.as_str(),
                        c.subject,
                        c.at
                    );
                }
            }
        }
        Command::Check { repair, json } => {
            let dir = server_dir(&cli.server)?;
            let store = if repair {
                Store::open_writer(dir)?
            } else {
                Store::open_read_only(dir)?
            };
            let r = gapsync::store::check::check(&store, repair, &progress)?;
            if json {
                print_json(&r)?;
            } else {
                for f in &r.repaired {
                    println!("repaired: {f}");
                }
                for f in &r.notes {
                    println!("note [{}]: {}", f.rule, f.detail);
                }
                for f in &r.problems {
                    println!("PROBLEM [{}]: {}", f.rule, f.detail);
                }
                println!(
                    "checked {} and {} ({}): {}",
                    count(r.revisions_checked as u64, "revision"),
                    count(r.content_files_checked as u64, "content file"),
                    human_bytes(r.content_bytes_checked),
                    if r.clean() {
                        "clean".to_string()
                    } else {
                        count(r.problems.len() as u64, "problem")
                    }
                );
            }
            if !r.clean() {
                return Err(gapsync::Error::verification(
                    "check",
                    format!("{} found", count(r.problems.len() as u64, "problem")),
                )
                .into());
            }
        }
        Command::Serve(args) => serve::serve(server_dir(&cli.server)?, &args)?,
        Command::Console(args) => console::run(server_dir(&cli.server)?, &args)?,
        Command::Sync {
            upstream,
            replica,
            products,
            classifications,
            content,
            json,
        } => sync::sync_with_progress(
            server_dir(&cli.server)?,
            &upstream,
            replica,
            &products,
            &classifications,
            &content,
            json,
            &progress,
        )?,
        Command::Exports(ListCmd::List { json }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let list = gapsync::airgap::export::history(&store)?;
            if json {
                print_json(&list)?;
            } else {
                for l in list {
                    println!(
                        "{:<16} seq {:<5} {:<11} {} -> {}  {}",
                        l.destination,
                        l.seq,
                        l.kind,
                        l.from_anchor.as_deref().unwrap_or("(full)"),
                        l.to_anchor,
                        l.created
                    );
                }
            }
        }
        Command::Imports(ListCmd::List { json }) => {
            let store = Store::open_read_only(server_dir(&cli.server)?)?;
            let list = gapsync::airgap::import::ledger(&store)?;
            if json {
                print_json(&list)?;
            } else {
                for l in list {
                    println!(
                        "{} seq {:<5} {:<11} to {}  {}",
                        l.source_server_id,
                        l.seq,
                        if l.full { "full" } else { "incremental" },
                        l.to_anchor,
                        l.imported
                    );
                }
            }
        }
        Command::Key(KeyCmd::Generate { out, json }) => trust::key_generate(&out, json)?,
        Command::Trust(TrustCmd::Add {
            public_key,
            label,
            json,
        }) => trust::trust_add(
            server_dir(&cli.server)?,
            &public_key,
            label.as_deref(),
            json,
        )?,
        Command::Trust(TrustCmd::List { json }) => {
            trust::trust_list(server_dir(&cli.server)?, json)?
        }
        Command::Trust(TrustCmd::Remove { key_id }) => {
            trust::trust_remove(server_dir(&cli.server)?, &key_id)?
        }
        Command::Trust(TrustCmd::Statement {
            key,
            add,
            label,
            revoke,
            list,
            cancel,
            json,
        }) => {
            let server = server_dir(&cli.server)?;
            match (list, cancel, key) {
                (true, _, _) => trust::statement_list(server, json)?,
                (false, Some(seq), _) => trust::statement_cancel(server, seq, json)?,
                (false, None, Some(key)) => trust::trust_statement(
                    server,
                    &key,
                    add.as_deref(),
                    label.as_deref(),
                    revoke.as_ref(),
                    json,
                )?,
                (false, None, None) => {
                    return Err(usage!("--add and --revoke need --key SIGNER.key"));
                }
            }
        }
        Command::Export {
            key,
            out,
            to,
            full,
            since,
            allow_empty,
            content,
            products,
            classifications,
            languages,
            volume_size,
            expires,
            json,
        } => bundle::export(
            server_dir(&cli.server)?,
            bundle::ExportArgs {
                key,
                out,
                to,
                full,
                since,
                allow_empty,
                content,
                products,
                classifications,
                languages,
                volume_size,
                expires,
                json,
            },
            &progress,
        )?,
        Command::Verify {
            path,
            volumes,
            trust,
            allow_expired,
            json,
        } => bundle::verify(
            cli.server.as_deref(),
            cli.server_from_env,
            path.as_deref(),
            &volumes,
            &trust,
            allow_expired,
            json,
            &progress,
        )?,
        Command::Import {
            path,
            volumes,
            dry_run,
            plan_from_first_volume,
            rebase,
            allow_expired,
            json,
        } => bundle::import(
            server_dir(&cli.server)?,
            bundle::ImportArgs {
                path: path.as_deref(),
                volumes: &volumes,
                dry_run,
                plan_from_first_volume,
                rebase,
                allow_expired,
                json,
            },
            &progress,
        )?,
        Command::Demo {
            dir,
            updates,
            content_bytes,
        } => {
            demo::run(&dir, updates, content_bytes, &progress)?;
        }
    }
    Ok(())
}

fn groups(server: &Option<PathBuf>, cmd: GroupsCmd) -> Result<()> {
    match cmd {
        GroupsCmd::Add { name, parent, json } => {
            let mut store = Store::open_writer(server_dir(server)?)?;
            let g = store.add_group(&name, parent.as_deref())?;
            if json {
                print_json(&g)?;
            } else {
                println!(
                    "added group {:?} ({}) under {:?}",
                    g.name,
                    g.id,
                    g.parent.unwrap_or_default()
                );
            }
        }
        GroupsCmd::List { json } => {
            let store = Store::open_read_only(server_dir(server)?)?;
            let list = store.list_groups()?;
            if json {
                print_json(&list)?;
            } else {
                for g in list {
                    println!(
                        "{} {:<30} parent {:<22} {}{}",
                        g.id,
                        g.name,
                        g.parent.unwrap_or_else(|| "-".into()),
                        count(g.computers as u64, "computer"),
                        if g.builtin { " (built in)" } else { "" }
                    );
                }
            }
        }
        GroupsCmd::Remove { name, json } => {
            let mut store = Store::open_writer(server_dir(server)?)?;
            let r = store.remove_group(&name)?;
            if json {
                print_json(&r)?;
            } else {
                println!("removed group {:?} ({})", r.name, r.id);
                let n = r.computers_moved.len();
                if n > 0 {
                    println!(
                        "moved {} to {:?}: {}",
                        count(n as u64, "computer"),
                        r.computers_moved_to,
                        r.computers_moved.join(", ")
                    );
                }
                let n = r.approvals_removed.len();
                if n > 0 {
                    println!(
                        "removed {} (listed by `deployments list --removed`):",
                        count(n as u64, "approval")
                    );
                    for a in &r.approvals_removed {
                        println!("  {} r{} {}", a.update_id, a.revision, a.action);
                    }
                }
            }
        }
    }
    Ok(())
}

fn show_update(d: &gapsync::store::UpdateDetail) {
    let m = &d.metadata;
    println!(
        "{}  revision {} (revision id {})",
        d.id, d.revision, d.revision_id
    );
    println!("  title        {}", d.title);
    println!(
        "  kind         {}{}",
        d.kind,
        d.category_type
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    );
    if let Some(kb) = &m.kb_article_id {
        println!("  KB           {kb}");
    }
    println!(
        "  created      {}",
        m.creation_date.as_deref().unwrap_or("-")
    );
    println!(
        "  state        {}{}",
        m.publication_state.as_deref().unwrap_or("-"),
        if d.declined { ", declined" } else { "" }
    );
    println!(
        "  revisions    {}",
        d.revisions
            .iter()
            .map(|r| r.revision.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  languages    {}",
        m.localized
            .iter()
            .map(|l| l.language.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &m.prerequisites {
        match p {
            gapsync::model::metadata::Prerequisite::Required(id) => println!("  requires     {id}"),
            gapsync::model::metadata::Prerequisite::AtLeastOne { is_category, ids } => println!(
                "  {} {}",
                if *is_category {
                    "category    "
                } else {
                    "one of      "
                },
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        }
    }
    for b in &m.bundled {
        println!(
            "  bundles      {} r{}",
            b.id,
            b.revision.map(|r| r.to_string()).unwrap_or("-".into())
        );
    }
    for s in &m.superseded {
        println!("  supersedes   {s}");
    }
    for s in &d.superseded_by {
        println!("  superseded by {s}");
    }
    for f in &d.files {
        println!(
            "  file         {} {} SHA-1 {} {}",
            f.file_name,
            human_bytes(f.size),
            f.sha1,
            f.content_path.as_deref().unwrap_or("(content not present)")
        );
    }
}
