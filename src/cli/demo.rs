//! `gapsync demo`: the whole air-gap loop in a fresh folder — a connected
//! server with a generated catalog, groups and approvals; a full export,
//! verify and import into a disconnected replica; more updates and
//! approvals upstream; an incremental export and import; then a summary
//! and the stock-tool commands that check the bundle independently.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gapsync::airgap::export::{self, ExportOptions, ExportReport};
use gapsync::airgap::format::{Filters, Layout};
use gapsync::airgap::import::{self, ImportOptions, ImportReport};
use gapsync::airgap::verify;
use gapsync::model::metadata::UpdateKind;
use gapsync::model::units::human_bytes;
use gapsync::progress::Progress;
use gapsync::seed::generate::{self, GenerateOptions};
use gapsync::store::deployments::{Action, Approval};
use gapsync::store::{Mode, Store, UpdateFilter};
use gapsync::trust::{self, SecretKey, TrustView};

struct Step {
    name: String,
    detail: String,
    bytes: u64,
    secs: f64,
}

fn rate(bytes: u64, secs: f64) -> String {
    if bytes == 0 || secs <= 0.0 {
        "-".into()
    } else {
        format!("{:.0} MB/s", bytes as f64 / 1e6 / secs)
    }
}

/// Approves the first `n` visible (bundle) updates not approved yet.
fn approve_some(store: &mut Store, n: usize, skip: usize) -> Result<usize> {
    let software = store.list_updates(&UpdateFilter {
        kind: Some(UpdateKind::Software),
        ..Default::default()
    })?;
    let approved: std::collections::BTreeSet<String> = store
        .list_deployments()?
        .into_iter()
        .map(|d| d.update_id)
        .collect();
    let mut count = 0;
    for (i, u) in software
        .iter()
        .filter(|u| !u.title.starts_with("HIDDEN") && !u.declined && !approved.contains(&u.id))
        .skip(skip)
        .take(n)
        .enumerate()
    {
        let (group, deadline) = match i % 3 {
            0 => ("Pilot", None),
            1 => ("Workstations", Some("2026-12-31T18:00:00Z")),
            _ => ("Servers", Some("2027-01-15T02:00:00Z")),
        };
        store.approve(&Approval {
            update_id: &u.id,
            group,
            action: Action::Install,
            deadline,
            admin_name: "demo-admin",
        })?;
        count += 1;
    }
    Ok(count)
}

fn export_step(
    store: &mut Store,
    key: &SecretKey,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(ExportReport, f64)> {
    let t = Instant::now();
    let r = export::export(
        store,
        &ExportOptions {
            out,
            destination: "plant",
            full: false,
            since: None,
            allow_empty: false,
            filters: Filters::default(),
            volume_size: None,
            expires: time::Duration::days(30),
            key,
        },
        progress,
    )?;
    Ok((r, t.elapsed().as_secs_f64()))
}

fn import_step(
    store: &mut Store,
    bundle: &Path,
    progress: &dyn Progress,
) -> Result<(ImportReport, f64)> {
    let t = Instant::now();
    let r = import::import(
        store,
        &ImportOptions {
            layout: Layout::discover(bundle)?,
            dry_run: false,
            plan_from_first_volume: false,
            allow_expired: false,
            rebase: false,
            prompt: None,
        },
        progress,
    )?;
    Ok((r, t.elapsed().as_secs_f64()))
}

pub fn run(base: &Path, updates: u64, content_bytes: u64, progress: &dyn Progress) -> Result<()> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let root = base.join(format!("run-{stamp}"));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    println!("gapsync demo in {}\n", root.display());
    let mut steps: Vec<Step> = Vec::new();

    // --- the connected side
    let up_dir = root.join("connected");
    let down_dir = root.join("disconnected");
    let mut up = Store::init(&up_dir, "hq-connected", Mode::Autonomous)?;
    let mut down = Store::init(&down_dir, "plant-disconnected", Mode::Replica)?;
    println!(
        "1. init: connected server {} and disconnected replica {}",
        up.info().server_id,
        down.info().server_id
    );

    let t = Instant::now();
    let g = generate::generate(
        &mut up,
        &GenerateOptions {
            updates,
            content_bytes,
            seed: 1,
        },
        progress,
    )?;
    steps.push(Step {
        name: "catalog generate".into(),
        detail: format!(
            "{} revisions, {} content files",
            g.revisions_added, g.content_files
        ),
        bytes: g.content_bytes,
        secs: t.elapsed().as_secs_f64(),
    });
    println!(
        "2. catalog generate: {} revisions ({} software, {} drivers, {} categories, {} detectoids), {} content files ({})",
        g.revisions_added,
        g.software,
        g.drivers,
        g.categories,
        g.detectoids,
        g.content_files,
        human_bytes(g.content_bytes)
    );
    for (name, parent) in [
        ("Servers", None),
        ("Workstations", None),
        ("Pilot", Some("Workstations")),
    ] {
        up.add_group(name, parent)?;
    }
    for (name, group) in [
        ("dc01", "Servers"),
        ("ws-001", "Workstations"),
        ("ws-pilot", "Pilot"),
    ] {
        up.add_computer(name, Some(group))?;
    }
    let n = approve_some(&mut up, 20, 0)?;
    let software = up.list_updates(&UpdateFilter {
        kind: Some(UpdateKind::Software),
        ..Default::default()
    })?;
    if let Some(u) = software
        .iter()
        .filter(|u| !u.title.starts_with("HIDDEN"))
        .nth(25)
    {
        up.decline(&u.id)?;
    }
    println!(
        "3. groups Servers, Workstations, Pilot; computers dc01, ws-001, ws-pilot; {n} approvals; 1 decline"
    );

    // --- keys and trust
    let key = SecretKey::generate()?;
    let (key_path, pub_path) = key.write_pair(&root.join("hq-signing"))?;
    trust::trust_add(&down, &key.public(), "hq-signing", trust::ADDED_BY_ADMIN)?;
    println!(
        "4. key generate: {} (secret {}); the disconnected server trusts it",
        key.id(),
        key_path.display()
    );

    // --- full bundle
    let b1 = root.join("media").join("bundle-0001");
    let (e1, s) = export_step(&mut up, &key, &b1, progress)?;
    steps.push(Step {
        name: "export (full)".into(),
        detail: format!(
            "{} revisions, {} files",
            e1.counts.revisions, e1.counts.content_files
        ),
        bytes: e1.bytes_written,
        secs: s,
    });
    println!(
        "5. export --full: bundle {} seq {} ({}) -> {}",
        e1.bundle_id,
        e1.seq,
        human_bytes(e1.bytes_written),
        b1.display()
    );

    let t = Instant::now();
    let mut view = TrustView::from_keys(&[key.public()])?;
    let v = verify::verify_bundle(&Layout::discover(&b1)?, &mut view, false, progress)?;
    steps.push(Step {
        name: "verify (full)".into(),
        detail: format!("{} checks", v.checks.len()),
        bytes: e1.bytes_written,
        secs: t.elapsed().as_secs_f64(),
    });
    println!(
        "6. verify: signature by {}, every hash, expiry ({} checks passed)",
        v.signer,
        v.checks.len()
    );

    let (i1, s) = import_step(&mut down, &b1, progress)?;
    steps.push(Step {
        name: "import (full)".into(),
        detail: format!(
            "{} revisions, {} files",
            i1.plan.revisions_added, i1.plan.content_files
        ),
        bytes: e1.bytes_written,
        secs: s,
    });
    println!(
        "7. import: {} revisions, {} deployments, {} content files into the disconnected server",
        i1.plan.revisions_added, i1.plan.state.deployments_created, i1.plan.content_files
    );

    // --- changes upstream, incremental bundle
    let t = Instant::now();
    let g2 = generate::generate(
        &mut up,
        &GenerateOptions {
            updates: (updates / 10).max(10),
            content_bytes: content_bytes / 10,
            seed: 2,
        },
        progress,
    )?;
    let n2 = approve_some(&mut up, 5, 0)?;
    steps.push(Step {
        name: "more updates".into(),
        detail: format!("{} revisions, {n2} approvals", g2.revisions_added),
        bytes: g2.content_bytes,
        secs: t.elapsed().as_secs_f64(),
    });
    println!(
        "8. upstream changes: {} new revisions, {} content files, {n2} approvals",
        g2.revisions_added, g2.content_files
    );

    let b2 = root.join("media").join("bundle-0002");
    let (e2, s) = export_step(&mut up, &key, &b2, progress)?;
    steps.push(Step {
        name: "export (incremental)".into(),
        detail: format!(
            "{} revisions, {} files",
            e2.counts.revisions, e2.counts.content_files
        ),
        bytes: e2.bytes_written,
        secs: s,
    });
    println!(
        "9. export (incremental from {}): bundle seq {} ({})",
        e2.from_anchor.as_deref().unwrap_or("-"),
        e2.seq,
        human_bytes(e2.bytes_written)
    );
    let (i2, s) = import_step(&mut down, &b2, progress)?;
    steps.push(Step {
        name: "import (incremental)".into(),
        detail: format!(
            "{} revisions, {} files",
            i2.plan.revisions_added, i2.plan.content_files
        ),
        bytes: e2.bytes_written,
        secs: s,
    });
    println!(
        "10. import: {} revisions, {} deployments created",
        i2.plan.revisions_added, i2.plan.state.deployments_created
    );

    // --- the two servers agree
    let same_updates = serde_json::to_string(&up.list_updates(&UpdateFilter::default())?)?
        == serde_json::to_string(&down.list_updates(&UpdateFilter::default())?)?;
    let same_deployments = serde_json::to_string(&up.list_deployments()?)?
        == serde_json::to_string(&down.list_deployments()?)?;
    let (su, sd) = (up.status()?, down.status()?);
    let same_content = su.content_files == sd.content_files && su.content_bytes == sd.content_bytes;
    if !(same_updates && same_deployments && same_content) {
        bail!(
            "the disconnected server does not match the connected one (updates {same_updates}, deployments {same_deployments}, content {same_content})"
        );
    }

    println!(
        "\n{:<22} {:<34} {:>12} {:>8} {:>10}",
        "step", "what", "bytes", "time", "rate"
    );
    for s in &steps {
        println!(
            "{:<22} {:<34} {:>12} {:>7.2}s {:>10}",
            s.name,
            s.detail,
            human_bytes(s.bytes),
            s.secs,
            rate(s.bytes, s.secs)
        );
    }
    println!(
        "\nthe disconnected server now equals the connected one: {} updates, {} revisions, {} deployments, {} content files ({})",
        sd.updates.total,
        sd.revisions,
        sd.deployments,
        sd.content_files,
        human_bytes(sd.content_bytes as u64)
    );
    println!("\ncheck the first bundle with stock tools (apt-get install minisign zstd):");
    println!("  cd {}", b1.display());
    println!("  minisign -V -p {} -m SHA256SUMS", pub_path.display());
    println!("  sha256sum -c SHA256SUMS");
    println!("  tar --zstd -tf metadata.tar.zst | head");
    println!("\nexplore:");
    println!("  gapsync --server {} status", down_dir.display());
    println!("  gapsync --server {} deployments list", down_dir.display());
    println!(
        "  gapsync verify {} --trust {}",
        b2.display(),
        pub_path.display()
    );
    Ok(())
}
