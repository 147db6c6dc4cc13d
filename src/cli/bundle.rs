//! `export`, `verify` and `import`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gapsync::airgap::export::{self, ExportOptions};
use gapsync::airgap::format::{ContentMode, Filters, Layout};
use gapsync::airgap::import::{self, ImportOptions};
use gapsync::airgap::verify;
use gapsync::model::units::{count, human_bytes};
use gapsync::progress::Progress;
use gapsync::store::Store;
use gapsync::store::journal::Anchor;
use gapsync::trust::{PublicKey, SecretKey, TrustView};

use super::args;
use super::failure::usage;
use super::print_json;

pub struct ExportArgs {
    pub key: PathBuf,
    pub out: PathBuf,
    pub to: String,
    pub full: bool,
    pub since: Option<Anchor>,
    pub allow_empty: bool,
    /// `all`, `approved` or `none` (checked while parsing).
    pub content: String,
    /// Canonical GUIDs (checked while parsing).
    pub products: Vec<String>,
    pub classifications: Vec<String>,
    pub languages: Vec<String>,
    pub volume_size: Option<u64>,
    pub expires: time::Duration,
    pub json: bool,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

pub fn export(server: &Path, a: ExportArgs, progress: &dyn Progress) -> Result<()> {
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
    let key = SecretKey::read_file(&a.key)?;
    let mut store = Store::open_writer(server)?;
    let started = std::time::Instant::now();
    let r = export::export(
        &mut store,
        &ExportOptions {
            out: &a.out,
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
#[allow(clippy::too_many_arguments)]
pub fn verify(
    server: Option<&Path>,
    server_from_env: bool,
    path: Option<&Path>,
    volumes: &[PathBuf],
    trust: &[PathBuf],
    allow_expired: bool,
    json: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let layout = layout(path, volumes)?;
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
    if let Some(s) = &store {
        let chain = verify::check_chain(
            s,
            &s.info().server_id.to_string(),
            &v.manifest,
            &v.manifest_sha256,
            false,
        )
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

pub struct ImportArgs<'a> {
    pub path: Option<&'a Path>,
    pub volumes: &'a [PathBuf],
    pub dry_run: bool,
    pub plan_from_first_volume: bool,
    pub rebase: bool,
    pub allow_expired: bool,
    pub json: bool,
}

pub fn import(server: &Path, a: ImportArgs<'_>, progress: &dyn Progress) -> Result<()> {
    let layout = layout(a.path, a.volumes)?;
    if a.allow_expired {
        eprintln!("gapsync: WARNING: --allow-expired: an expired bundle will be accepted");
    }
    let mut store = Store::open_writer(server)?;
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
