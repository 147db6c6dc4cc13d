//! `export`, `verify` and `import`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gapsync::airgap::export::{self, ExportOptions};
use gapsync::airgap::format::{BundleKind, ContentMode, Filters, Layout};
use gapsync::airgap::import::{self, ImportOptions};
use gapsync::airgap::{report, verify};
use gapsync::model::units::{count, human_bytes};
use gapsync::store::Store;
use gapsync::store::journal::Anchor;
use gapsync::trust::{PublicKey, SecretKey, TrustView};

use super::failure::usage;
use super::{Ctx, args, print_json};

/// Flags of `export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Secret key to sign with (PREFIX.key).
    #[arg(long, required_unless_present = "dry_run")]
    key: Option<PathBuf>,
    /// Bundle folder to create.
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Write a site report for the server above (a report bundle: this
    /// store's identity, import ledger, content receipt, computers and
    /// their status, events since the last report to --to).
    #[arg(long, conflicts_with_all = ["since", "allow_empty", "products", "classifications", "languages", "volume_size", "dry_run"])]
    report: bool,
    /// With --report: the content receipt hashes every content file
    /// (SHA-1, SHA-256 and size) instead of checking presence and size.
    #[arg(long, requires = "report")]
    hash_content: bool,
    /// Print the plan (chain position, counts, content new / re-sent /
    /// skipped because of the sites' receipts) and write nothing.
    #[arg(long, conflicts_with_all = ["out", "key"])]
    dry_run: bool,
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
    since: Option<Anchor>,
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
}

/// Flags of `verify`.
#[derive(Args)]
pub struct VerifyArgs {
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
}

/// Flags of `import`.
#[derive(Args)]
pub struct ImportArgs {
    path: Option<PathBuf>,
    /// Volume folders, in order (one folder may be given for all: the
    /// next medium is asked for on a terminal).
    #[arg(long, num_args = 1..)]
    volumes: Vec<PathBuf>,
    /// Print the plan and change nothing (every volume must be given).
    #[arg(long)]
    pub(super) dry_run: bool,
    /// With --dry-run: plan from volume 1 alone when later volumes are
    /// not at hand (the plan names them).
    #[arg(long, requires = "dry_run")]
    plan_from_first_volume: bool,
    /// Accept a full bundle that replaces the chain from its source (or
    /// a site report that starts its chain again).
    #[arg(long)]
    pub(super) rebase: bool,
    /// Accept an expired bundle (loudly).
    #[arg(long)]
    pub(super) allow_expired: bool,
    #[arg(long)]
    pub(super) json: bool,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<()> {
    let server = ctx.server()?;
    let progress = &ctx.progress;
    if a.report {
        return super::sites::export_report(
            ctx,
            &a.to,
            a.full,
            a.hash_content,
            a.expires,
            a.key.as_deref(),
            a.out.as_deref(),
            a.json,
        );
    }
    let content = ContentMode::parse(&a.content)
        .ok_or_else(|| usage!("--content {:?}: use all, approved or none", a.content))?;
    let filters = Filters {
        content,
        products: sorted(a.products),
        classifications: sorted(a.classifications),
        languages: sorted(a.languages.iter().map(|l| l.to_ascii_lowercase()).collect()),
    };
    super::warn_unknown_categories_in(server, "--product", &filters.products);
    super::warn_unknown_categories_in(server, "--classification", &filters.classifications);
    if a.dry_run {
        // A plan signs nothing; the options carry a key all the same (a
        // throwaway one, never written anywhere).
        let key = SecretKey::generate()?;
        let mut store = Store::open_writer(server)?;
        let plan = export::plan(
            &mut store,
            &ExportOptions {
                out: Path::new("."),
                destination: &a.to,
                full: a.full,
                since: a.since,
                allow_empty: a.allow_empty,
                filters,
                volume_size: a.volume_size,
                expires: a.expires,
                key: &key,
            },
        )?;
        return super::sites::print_export_plan(&plan, a.json);
    }
    let (Some(key), Some(out)) = (a.key.as_deref(), a.out.as_deref()) else {
        return Err(usage!("export needs --key PREFIX.key and --out DIR"));
    };
    let key = SecretKey::read_file(key)?;
    let mut store = Store::open_writer(server)?;
    let started = std::time::Instant::now();
    let r = export::export(
        &mut store,
        &ExportOptions {
            out,
            destination: &a.to,
            full: a.full,
            since: a.since,
            allow_empty: a.allow_empty,
            filters,
            volume_size: a.volume_size,
            expires: a.expires,
            key: &key,
        },
        progress,
    )?;
    args::warn_short_expiry(a.expires);
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&r)?;
    } else {
        println!(
            "exported {} bundle {} seq {} to {:?}: {}, {}, {} ({} removed), {}, {} ({}), {}, {} written in {:.1} s",
            r.kind,
            r.bundle_id,
            r.seq,
            r.destination,
            count(r.counts.revisions, "revision"),
            count(r.counts.groups, "group"),
            count(r.counts.deployments, "deployment"),
            r.counts.dead_deployments,
            count(r.counts.declined, "decline"),
            count(r.counts.content_files, "content file"),
            human_bytes(r.counts.content_bytes),
            count(u64::from(r.volumes), "volume"),
            human_bytes(r.bytes_written),
            secs
        );
        super::sites::print_content_plan(&r.content_plan, &r.receipt_sites);
        if r.counts.content_missing > 0 {
            println!(
                "note: {} in scope {} not in this store yet and {} not sent",
                count(r.counts.content_missing, "content file"),
                if r.counts.content_missing == 1 {
                    "is"
                } else {
                    "are"
                },
                if r.counts.content_missing == 1 {
                    "was"
                } else {
                    "were"
                }
            );
        }
        println!(
            "anchors: {} -> {}",
            r.from_anchor.as_deref().unwrap_or("(full)"),
            r.to_anchor
        );
        println!("bundle: {}", r.path.display());
        if !r.trust_statements.is_empty() {
            println!("trust statements carried ({}):", r.trust_statements.len());
            for t in &r.trust_statements {
                println!("  {:>4}  {}", t.seq, super::trust::describe(t));
            }
        }
    }
    Ok(())
}

fn layout(path: Option<&Path>, volumes: &[PathBuf]) -> Result<Layout> {
    match (path, volumes.is_empty()) {
        (Some(p), true) => Ok(Layout::discover(p)?),
        (None, false) => Ok(Layout::from_volumes(volumes)),
        (Some(_), false) => Err(usage!(
            "give either a bundle PATH or --volumes DIR..., not both"
        )),
        (None, true) => Err(usage!("give a bundle PATH or --volumes DIR...")),
    }
}

/// `verify`: against the keys given with `--trust`, or a server's trust
/// store and chain. `server_from_env`: the server came from
/// `GAPSYNC_SERVER`, which an explicit `--trust` overrides (an explicit
/// `--server` with `--trust` is a usage error).
pub fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<()> {
    let VerifyArgs {
        path,
        volumes,
        trust,
        allow_expired,
        json,
    } = a;
    let (server, server_from_env, progress) =
        (ctx.server.as_deref(), ctx.server_from_env, &ctx.progress);
    let layout = layout(path.as_deref(), &volumes)?;
    let store = match server {
        Some(s) if trust.is_empty() => Some(Store::open(s)?),
        Some(_) if server_from_env => None,
        Some(_) => {
            return Err(usage!(
                "give either --trust PREFIX.pub... or --server DIR, not both"
            ));
        }
        None => None,
    };
    let mut view = match &store {
        Some(s) => TrustView::from_store(s)?,
        None => {
            if trust.is_empty() {
                return Err(usage!(
                    "verify needs the keys to trust: --trust PREFIX.pub... or --server DIR"
                ));
            }
            let keys: Vec<PublicKey> = trust
                .iter()
                .map(|p| PublicKey::read_file(p))
                .collect::<Result<_, _>>()?;
            TrustView::from_keys(&keys)?
        }
    };
    if allow_expired {
        eprintln!("gapsync: WARNING: --allow-expired: an expired bundle will be accepted");
    }
    let mut v = verify::verify_bundle(&layout, &mut view, allow_expired, progress)?;
    if let Some(s) = &store
        && v.kind == BundleKind::Snapshot
    {
        // A snapshot has no place in a store's chains: it is restored
        // into a new store, never imported.
        v.checks.push(format!(
            "a snapshot of server {}: no chain position in {} (restore it with gapsync restore)",
            v.manifest.source.name,
            s.info().name
        ));
    } else if let Some(s) = &store {
        let chain = if v.kind == BundleKind::Report {
            report::check_report_chain(s, &v.manifest, &v.manifest_sha256, false)
        } else {
            verify::check_chain(
                s,
                &s.info().server_id.to_string(),
                &v.manifest,
                &v.manifest_sha256,
                false,
            )
        }
        .map(|c| format!("chain position for server {}: {c}", s.info().name))?;
        v.checks.push(chain);
    }
    if v.expired_but_allowed {
        eprintln!(
            "gapsync: WARNING: bundle {} EXPIRED on {}; accepted because of --allow-expired",
            v.bundle_id, v.expires
        );
    }
    if json {
        print_json(&v)?;
    } else {
        println!(
            "{} bundle {} seq {} from {} ({}) to {:?}, signed by {}",
            v.kind, v.bundle_id, v.seq, v.source_name, v.source_server_id, v.destination, v.signer
        );
        for c in &v.checks {
            println!("  ok  {c}");
        }
        println!("verified");
    }
    Ok(())
}

/// Asks for the next medium on a terminal (stdin), refuses otherwise.
fn prompt_for_volume(v: u32, mount: &Path) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!(
        "Insert volume {v} at {} and press Enter (or type q to stop): ",
        mount.display()
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(_) => !line.trim().eq_ignore_ascii_case("q"),
        Err(_) => false,
    }
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<()> {
    let server = ctx.server()?;
    let progress = &ctx.progress;
    let layout = layout(a.path.as_deref(), &a.volumes)?;
    if a.allow_expired {
        eprintln!("gapsync: WARNING: --allow-expired: an expired bundle will be accepted");
    }
    let mut store = Store::open_writer(server)?;
    if report::peek_kind(&layout) == Some(BundleKind::Report) {
        return super::sites::import_report(&mut store, layout, &a, progress);
    }
    let started = std::time::Instant::now();
    let r = import::import(
        &mut store,
        &ImportOptions {
            layout,
            dry_run: a.dry_run,
            plan_from_first_volume: a.plan_from_first_volume,
            allow_expired: a.allow_expired,
            rebase: a.rebase,
            prompt: Some(&prompt_for_volume),
        },
        progress,
    )
    .context("import failed; the store is unchanged")?;
    if r.expired_but_allowed {
        eprintln!(
            "gapsync: WARNING: bundle {} had EXPIRED; imported because of --allow-expired",
            r.bundle_id
        );
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&r)?;
        return Ok(());
    }
    let p = &r.plan;
    match r.status {
        "already-imported" => println!(
            "bundle {} seq {} from {} was already imported; nothing to do",
            r.bundle_id, r.seq, r.source_name
        ),
        status => {
            println!(
                "{} {} bundle {} seq {} from {} ({}):",
                if status == "dry-run" {
                    "dry run: would import"
                } else {
                    "imported"
                },
                r.kind,
                r.bundle_id,
                r.seq,
                r.source_name,
                r.chain
            );
            println!(
                "  updates       {} new revisions ({} new updates, {} superseded), {} already present",
                p.revisions_added,
                p.updates_added,
                p.updates_superseded,
                p.revisions_already_present
            );
            println!(
                "  groups        +{} ~{} -{}",
                p.state.groups_added, p.state.groups_changed, p.state.groups_removed
            );
            println!(
                "  deployments   +{} ~{} -{}",
                p.state.deployments_created,
                p.state.deployments_changed,
                p.state.deployments_removed
            );
            println!("  declined      {}", p.state.updates_declined);
            println!("  trust         {}", count(p.trust_statements, "statement"));
            println!(
                "  content       {} files, {} to write ({} already present); {} free",
                p.content_files,
                human_bytes(p.content_bytes),
                p.content_already_present,
                human_bytes(p.disk_free)
            );
            if !p.volumes_missing.is_empty() {
                println!(
                    "  volumes       planned from volume 1 alone: every count above comes from volume 1 (its metadata pack and content index); {} of {} not given, so their content was not checked",
                    import::volume_list(&p.volumes_missing),
                    p.volumes
                );
            }
            if status != "dry-run" {
                println!("  anchor        {}  ({:.1} s)", r.anchor, secs);
            } else {
                println!("  (nothing was changed)");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ListCmd {
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `exports list`: the bundles exported, per destination (the chains).
pub fn exports_list(ctx: &Ctx, cmd: ListCmd) -> Result<()> {
    let ListCmd::List { json } = cmd;
    let store = Store::open_read_only(ctx.server()?)?;
    let list = export::history(&store)?;
    if json {
        return print_json(&list);
    }
    for l in list {
        println!(
            "{:<16} seq {:<5} {:<11} {} -> {}  {}  {}",
            l.destination,
            l.seq,
            l.kind,
            l.from_anchor.as_deref().unwrap_or("(full)"),
            l.to_anchor,
            size_or_dash(l.bytes),
            l.created
        );
    }
    Ok(())
}

/// `imports list`: the bundles imported, per source (the import ledger).
pub fn imports_list(ctx: &Ctx, cmd: ListCmd) -> Result<()> {
    let ListCmd::List { json } = cmd;
    let store = Store::open_read_only(ctx.server()?)?;
    let list = import::ledger(&store)?;
    if json {
        return print_json(&list);
    }
    for l in list {
        println!(
            "{} seq {:<5} {:<11} to {}  {}  {}",
            l.source_server_id,
            l.seq,
            if l.full { "full" } else { "incremental" },
            l.to_anchor,
            size_or_dash(l.bytes),
            l.imported
        );
    }
    Ok(())
}

/// A ledger's recorded bundle size, or `-` where it was not recorded
/// (bundles of stores before schema v12).
fn size_or_dash(bytes: Option<u64>) -> String {
    bytes.map(human_bytes).unwrap_or_else(|| "-".into())
}
