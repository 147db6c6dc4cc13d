//! `gapsync sync`: synchronize this store from an upstream WSUS or gapsync
//! server over MS-WSUSSS (this server as the downstream server).

use std::path::Path;

use anyhow::Result;
use gapsync::airgap::format::ContentMode;
use gapsync::model::units::{count, human_bytes};
use gapsync::progress::Progress;
use gapsync::protocols::wsusss::downstream::SyncOptions;
use gapsync::store::{Store, canonical_guid};

use super::failure::usage;
use super::print_json;
use super::progress::TermProgress;

/// `gapsync --server DIR sync --upstream URL [--replica] [--product ID]...
/// [--classification ID]... [--content all|approved|none] [--json]`, with
/// progress bars or lines on stderr. `GAPSYNC_UPSTREAM_CA` names a PEM file
/// of the certificate authorities an https upstream must chain to.
#[allow(dead_code)] // the CLI passes its own progress (`--quiet`) to `sync_with_progress`
pub fn sync(
    server: &Path,
    upstream: &str,
    replica: bool,
    products: &[String],
    classifications: &[String],
    content: &str,
    json: bool,
) -> Result<()> {
    sync_with_progress(
        server,
        upstream,
        replica,
        products,
        classifications,
        content,
        json,
        &TermProgress::new(false),
    )
}

/// [`sync`] reporting progress to `progress` (e.g. a quiet one).
#[allow(clippy::too_many_arguments)]
pub fn sync_with_progress(
    server: &Path,
    upstream: &str,
    replica: bool,
    products: &[String],
    classifications: &[String],
    content: &str,
    json: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let content = ContentMode::parse(content)
        .ok_or_else(|| usage!("--content {content:?}: expected all, approved or none"))?;
    let mut store = Store::open_writer(server)?;
    let mut opts = SyncOptions::new(upstream);
    opts.replica = replica;
    opts.products = products.to_vec();
    opts.classifications = classifications.to_vec();
    opts.content = content;
    // An https upstream with its own certificate authority (e.g. `gapsync
    // serve --tls-cert`): its PEM certificate(s).
    opts.client.ca_file = std::env::var_os("GAPSYNC_UPSTREAM_CA")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    let r = gapsync::protocols::wsusss::downstream::sync(&mut store, &opts, progress)?;
    // After the sync: the categories the upstream has are here now.
    let canonical =
        |ids: &[String]| -> Vec<String> { ids.iter().filter_map(|i| canonical_guid(i)).collect() };
    super::warn_unknown_categories(&store, "--product", &canonical(products))?;
    super::warn_unknown_categories(&store, "--classification", &canonical(classifications))?;
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
    println!("anchor      {}", r.anchor);
    Ok(())
}
