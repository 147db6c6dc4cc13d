//! `snapshot` and `restore`: disaster-recovery snapshots of a whole store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gapsync::airgap::dr::{self, RestoreOptions, SnapshotOptions};
use gapsync::model::units::{count, human_bytes};
use gapsync::store::Store;
use gapsync::trust::{PublicKey, SecretKey};

use super::{Ctx, args, print_json};

/// Flags of `snapshot`.
#[derive(Args)]
pub struct SnapshotArgs {
    /// Secret key to sign with (PREFIX.key).
    #[arg(long)]
    key: PathBuf,
    /// Snapshot folder to create.
    #[arg(long)]
    out: PathBuf,
    /// The previous snapshot of this store (signed with the same key):
    /// write only the content it does not hold (the database is always
    /// whole). `restore` then needs both.
    #[arg(long, value_name = "PREV_DIR")]
    base: Option<PathBuf>,
    /// Split into volumes of at most SIZE (e.g. 4G; at least 2052K);
    /// volume 1 holds the whole database.
    #[arg(long, value_parser = args::volume_size)]
    volume_size: Option<u64>,
    /// Validity period: a number and s, m, h, d or w; between 1m and
    /// 3650d (the default: a snapshot is meant to be kept).
    #[arg(long, default_value = "3650d", value_parser = args::expires)]
    expires: time::Duration,
    #[arg(long)]
    json: bool,
}

/// Flags of `restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The snapshot folder (the newest of its chain).
    path: PathBuf,
    /// The store folder to create: must not exist, or be an empty folder.
    #[arg(long, value_name = "NEWDIR")]
    into: PathBuf,
    /// Public keys whose snapshots are accepted (PREFIX.pub).
    #[arg(long, required = true, num_args = 1..)]
    trust: Vec<PathBuf>,
    /// The bases of an incremental snapshot, back to its full snapshot
    /// (repeatable, any order).
    #[arg(long = "base", value_name = "PREV_DIR")]
    bases: Vec<PathBuf>,
    /// Accept an expired snapshot (loudly).
    #[arg(long)]
    allow_expired: bool,
    #[arg(long)]
    json: bool,
}

pub fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<()> {
    let server = ctx.server()?;
    let key = SecretKey::read_file(&a.key)?;
    // A reader: no lock, so a running `serve` (and writers) go on.
    let store = Store::open_read_only(server)?;
    let started = std::time::Instant::now();
    let r = dr::snapshot(
        &store,
        &SnapshotOptions {
            out: &a.out,
            base: a.base.as_deref(),
            volume_size: a.volume_size,
            expires: a.expires,
            key: &key,
        },
        &ctx.progress,
    )?;
    args::warn_short_expiry(a.expires);
    if a.json {
        return print_json(&r);
    }
    println!(
        "{} snapshot {} seq {} of {} at {}: database {} ({} compressed), {}, {} ({}) of the store's {} ({}), {}, {} written in {:.1} s",
        if r.incremental { "incremental" } else { "full" },
        r.bundle_id,
        r.seq,
        r.server_name,
        r.to_anchor,
        human_bytes(r.database_bytes),
        human_bytes(r.database_pack_bytes),
        count(r.computers, "computer"),
        count(r.content_files, "content file"),
        human_bytes(r.content_bytes),
        r.store_content_files,
        human_bytes(r.store_content_bytes),
        count(u64::from(r.volumes), "volume"),
        human_bytes(r.bytes_written),
        started.elapsed().as_secs_f64()
    );
    if let Some(b) = &r.base_manifest_sha256 {
        println!("base: the snapshot with manifest SHA-256 {b}");
    }
    println!("snapshot: {}", r.path.display());
    Ok(())
}

pub fn restore(ctx: &Ctx, a: RestoreArgs) -> Result<()> {
    if a.allow_expired {
        eprintln!("gapsync: WARNING: --allow-expired: an expired snapshot will be accepted");
    }
    let keys: Vec<PublicKey> = a
        .trust
        .iter()
        .map(|p| PublicKey::read_file(p))
        .collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();
    let r = dr::restore(
        &RestoreOptions {
            snapshot: &a.path,
            bases: &a.bases,
            trust: &keys,
            into: &a.into,
            allow_expired: a.allow_expired,
        },
        &ctx.progress,
    )
    .with_context(|| {
        format!(
            "restore failed; nothing was created at {}",
            a.into.display()
        )
    })?;
    if r.expired_but_allowed {
        eprintln!("gapsync: WARNING: a snapshot had EXPIRED; restored because of --allow-expired");
    }
    if a.json {
        return print_json(&r);
    }
    println!(
        "restored server {} ({}) at {} into {} from {}: database {}, {}, {} ({}) in {:.1} s",
        r.server_name,
        r.server_id,
        r.anchor,
        r.path.display(),
        count(r.chain.len() as u64, "snapshot"),
        human_bytes(r.database_bytes),
        count(r.computers, "computer"),
        count(r.content_files, "content file"),
        human_bytes(r.content_bytes),
        started.elapsed().as_secs_f64()
    );
    for c in &r.checks {
        println!("  ok  {c}");
    }
    Ok(())
}
