//! `gapsync sync`: synchronize this store from an upstream WSUS or gapsync
//! server over MS-WSUSSS (this server as the downstream server).

use anyhow::Result;
use clap::Args;
use gapsync::airgap::format::ContentMode;
use gapsync::model::units::{count, human_bytes};
use gapsync::protocols::wsusss::downstream::SyncOptions;
use gapsync::store::{Store, canonical_guid};

use super::failure::usage;
use super::{Ctx, args, print_json};

/// Flags of `sync`. `GAPSYNC_UPSTREAM_CA` names a PEM file of the
/// certificate authorities an https upstream must chain to.
#[derive(Args)]
pub struct SyncArgs {
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
    /// Do not roll computers and their status up to the upstream after a
    /// replica sync (MS-WSUSSS reporting; on by default for replicas).
    #[arg(long)]
    no_rollup: bool,
    #[arg(long)]
    json: bool,
}

/// `gapsync --server DIR sync --upstream URL ...`, with progress bars or
/// lines on stderr.
pub fn sync(ctx: &Ctx, a: SyncArgs) -> Result<()> {
    let SyncArgs {
        upstream,
        replica,
        products,
        classifications,
        content,
        no_rollup,
        json,
    } = a;
    let (server, progress) = (ctx.server()?, &ctx.progress);
    let upstream = upstream.as_str();
    let content = ContentMode::parse(&content)
        .ok_or_else(|| usage!("--content {content:?}: expected all, approved or none"))?;
    let mut store = Store::open_writer(server)?;
    let mut opts = SyncOptions::new(upstream);
    opts.replica = replica;
    opts.products = products.clone();
    opts.classifications = classifications.clone();
    opts.content = content;
    opts.rollup = replica && !no_rollup;
    // An https upstream with its own certificate authority (e.g. `gapsync
    // serve --tls-cert`): its PEM certificate(s).
    opts.client.ca_file = std::env::var_os("GAPSYNC_UPSTREAM_CA")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    opts.account_name = host_name();
    let r = gapsync::protocols::wsusss::downstream::sync(&mut store, &opts, progress)?;
    // After the sync: the categories the upstream has are here now.
    let canonical =
        |ids: &[String]| -> Vec<String> { ids.iter().filter_map(|i| canonical_guid(i)).collect() };
    super::warn_unknown_categories(&store, "--product", &canonical(&products))?;
    super::warn_unknown_categories(&store, "--classification", &canonical(&classifications))?;
    if let Some(e) = &r.rollup_error {
        super::warn(format!(
            "synced, but the rollup to the upstream failed (the next sync sends it again): {e}"
        ));
    }
    if json {
        print_json(&r)?;
        return Ok(());
    }
    println!(
        "synced from {} ({}{}): {} added, {} already present ({})",
        r.upstream,
        if r.full { "full" } else { "incremental" },
        if r.replica { ", replica" } else { "" },
        count(r.revisions_added, "revision"),
        r.revisions_already_present,
        count(r.update_data_requests, "GetUpdateData request")
    );
    if r.replica {
        println!(
            "groups      +{} ~{} -{}; deployments +{} ~{} -{} ({} skipped); {} declined",
            r.state.groups_added,
            r.state.groups_changed,
            r.state.groups_removed,
            r.state.deployments_created,
            r.state.deployments_changed,
            r.state.deployments_removed,
            r.deployments_skipped,
            count(r.state.updates_declined, "update")
        );
    }
    println!(
        "content     {}, {} ({} resumed); {} not on the upstream yet",
        count(r.content_files, "file"),
        human_bytes(r.content_bytes),
        r.content_resumed,
        r.content_missing
    );
    if r.restarts > 0 || r.anchors_reset > 0 {
        println!(
            "protocol    {}, {}",
            count(u64::from(r.restarts), "restart"),
            count(u64::from(r.anchors_reset), "anchor reset")
        );
    }
    if let Some(ru) = &r.rollup {
        println!(
            "rollup      {} ({} with details), status of {} ({} in full, {} rows){}",
            count(ru.computers, "computer"),
            ru.details,
            count(ru.status_computers, "computer"),
            ru.status_full,
            ru.status_rows,
            if ru.busy {
                "; the upstream was busy: the rest goes next time"
            } else {
                ""
            }
        );
    }
    println!("anchor      {}", r.anchor);
    Ok(())
}

/// This machine's host name, the name a sync gives its upstream (as a
/// Windows WSUS gives its FQDN).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
