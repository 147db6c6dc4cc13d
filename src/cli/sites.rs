//! The way back across the gap: `export --report` (site side), `import`
//! of a report, `sites list`, and the receipt-driven export plan
//! (`export --dry-run`).

use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;

use gapsync::airgap::export::{ContentPlan, ExportPlan};
use gapsync::airgap::format::Layout;
use gapsync::airgap::report::{self, ReportExportOptions, ReportImportOptions};
use gapsync::model::report::ContentCheck;
use gapsync::model::units::{count, human_bytes};
use gapsync::store::Store;
use gapsync::trust::SecretKey;

use super::failure::usage;
use super::{Ctx, print_json};

#[derive(Subcommand)]
pub enum SitesCmd {
    /// The sites whose reports this store imported: last report, the
    /// anchor of the last bundle from here they applied, bundles behind,
    /// computers and status counts.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `export --report`.
#[allow(clippy::too_many_arguments)]
pub fn export_report(
    ctx: &Ctx,
    to: &str,
    full: bool,
    hash_content: bool,
    expires: time::Duration,
    key: Option<&Path>,
    out: Option<&Path>,
    json: bool,
) -> Result<()> {
    let server = ctx.server()?;
    let (Some(key), Some(out)) = (key, out) else {
        return Err(usage!(
            "export --report needs --key PREFIX.key and --out DIR"
        ));
    };
    let key = SecretKey::read_file(key)?;
    let mut store = Store::open_writer(server)?;
    let r = report::export_report(
        &mut store,
        &ReportExportOptions {
            out,
            destination: to,
            full,
            check: if hash_content {
                ContentCheck::Digest
            } else {
                ContentCheck::Size
            },
            expires,
            key: &key,
        },
        &ctx.progress,
    )?;
    super::args::warn_short_expiry(expires);
    if json {
        return print_json(&r);
    }
    let c = &r.report;
    println!(
        "exported report {} seq {} to {:?}: {}, {} status rows, {}, {} applied bundles; content {} held, {} missing, {} corrupt ({} checked)",
        r.bundle_id,
        r.seq,
        r.destination,
        count(c.computers, "computer"),
        c.status,
        count(c.events, "event"),
        c.imports,
        c.content_held,
        c.content_missing,
        c.content_corrupt,
        match r.content_check {
            ContentCheck::Size => "presence and size",
            ContentCheck::Digest => "digests",
        }
    );
    println!(
        "anchors: {} -> {}",
        r.from_anchor.as_deref().unwrap_or("(first)"),
        r.to_anchor
    );
    println!("bundle: {}", r.path.display());
    Ok(())
}

/// `import DIR` of a report bundle.
pub fn import_report(
    store: &mut Store,
    layout: Layout,
    a: &super::bundle::ImportArgs,
    progress: &dyn gapsync::progress::Progress,
) -> Result<()> {
    let r = report::import_report(
        store,
        &ReportImportOptions {
            layout,
            dry_run: a.dry_run,
            allow_expired: a.allow_expired,
            rebase: a.rebase,
        },
        progress,
    )
    .context("import failed; the store is unchanged")?;
    if r.expired_but_allowed {
        eprintln!(
            "gapsync: WARNING: report {} had EXPIRED; imported because of --allow-expired",
            r.bundle_id
        );
    }
    if a.json {
        return print_json(&r);
    }
    match r.status {
        "already-imported" => println!(
            "report {} seq {} from site {} was already imported; nothing to do",
            r.bundle_id, r.seq, r.site
        ),
        status => {
            println!(
                "{} report {} seq {} from site {} ({}): {}",
                if status == "dry-run" {
                    "dry run: would import"
                } else {
                    "imported"
                },
                r.bundle_id,
                r.seq,
                r.site,
                r.server_id,
                r.chain
            );
            let c = &r.report;
            println!(
                "  {}, {} status rows, {}; content {} held, {} missing, {} corrupt",
                count(c.computers, "computer"),
                c.status,
                count(c.events, "event"),
                c.content_held,
                c.content_missing,
                c.content_corrupt
            );
            if status == "dry-run" {
                println!("  (nothing was changed)");
            }
        }
    }
    Ok(())
}

/// The lines of an export's content plan that the receipts shaped.
pub fn print_content_plan(p: &ContentPlan, sites: &[String]) {
    if sites.is_empty() {
        return;
    }
    println!(
        "receipts of {}: {} ({}) new, {} ({}) re-sent (reported missing or corrupt), {} ({}) skipped (held)",
        sites.join(", "),
        p.new_files,
        human_bytes(p.new_bytes),
        p.resent_files,
        human_bytes(p.resent_bytes),
        p.skipped_files,
        human_bytes(p.skipped_bytes)
    );
}

/// `export --dry-run`.
pub fn print_export_plan(p: &ExportPlan, json: bool) -> Result<()> {
    if json {
        return print_json(p);
    }
    println!(
        "dry run: would export {} bundle seq {} to {:?}: {}, {}, {} ({} removed), {}, {}",
        p.kind,
        p.seq,
        p.destination,
        count(p.counts.revisions, "revision"),
        count(p.counts.groups, "group"),
        count(p.counts.deployments, "deployment"),
        p.counts.dead_deployments,
        count(p.counts.declined, "decline"),
        count(p.counts.trust_statements, "trust statement"),
    );
    let c = &p.content_plan;
    println!(
        "  content  new {} ({}), re-sent {} ({}), skipped {} ({}); {} in scope not in this store",
        c.new_files,
        human_bytes(c.new_bytes),
        c.resent_files,
        human_bytes(c.resent_bytes),
        c.skipped_files,
        human_bytes(c.skipped_bytes),
        p.counts.content_missing
    );
    if p.receipt_sites.is_empty() {
        println!("  receipts none (no site's report names a bundle of this destination's chain)");
    } else {
        println!("  receipts {}", p.receipt_sites.join(", "));
    }
    println!(
        "  anchors  {} -> {}",
        p.from_anchor.as_deref().unwrap_or("(full)"),
        p.to_anchor
    );
    if p.empty {
        println!("  nothing to carry: export refuses this bundle unless --allow-empty");
    }
    println!("  (nothing was written)");
    Ok(())
}

/// `sites list`.
pub fn sites(ctx: &Ctx, cmd: SitesCmd) -> Result<()> {
    let SitesCmd::List { json } = cmd;
    let store = Store::open_read_only(ctx.server()?)?;
    let rows = store.sites_list()?;
    if json {
        return print_json(&rows);
    }
    println!(
        "{:<16} {:<36} {:<20} {:>6} {:>9} {:>8} {:>7} {:>9}  applied anchor",
        "site", "server id", "last report", "behind", "computers", "needed", "failed", "installed"
    );
    for r in rows {
        println!(
            "{:<16} {:<36} {:<20} {:>6} {:>9} {:>8} {:>7} {:>9}  {}",
            r.site,
            r.server_id,
            r.last_report,
            r.bundles_behind
                .map_or_else(|| "-".to_string(), |b| b.to_string()),
            r.computers,
            r.needed,
            r.failed,
            r.installed,
            r.applied_anchor.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
