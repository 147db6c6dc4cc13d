//! `gapsync demo`: builds a connected server in a fresh folder and shows the
//! administration steps. (The bundle issue extends it to the whole air-gap
//! loop.)

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use gapsync::deployments::{Action, Approval};
use gapsync::generate::{self, GenerateOptions};
use gapsync::metadata::UpdateKind;
use gapsync::progress::Progress;
use gapsync::store::{Mode, Store, UpdateFilter};
use gapsync::units::human_bytes;

pub fn run(base: &Path, updates: u64, content_bytes: u64, progress: &dyn Progress) -> Result<()> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let root = base.join(format!("run-{stamp}"));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let upstream = root.join("connected");
    println!("gapsync demo in {}", root.display());

    let t = Instant::now();
    let mut store = Store::init(&upstream, "connected", Mode::Autonomous)?;
    println!(
        "1. init: connected server {} in {}",
        store.info().server_id,
        upstream.display()
    );

    let r = generate::generate(
        &mut store,
        &GenerateOptions {
            updates,
            content_bytes,
            seed: 1,
        },
        progress,
    )?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "2. catalog generate: {} revisions ({} software, {} drivers, {} categories, {} detectoids), {} content files, {} in {:.1} s",
        r.revisions_added,
        r.software,
        r.drivers,
        r.categories,
        r.detectoids,
        r.content_files,
        human_bytes(r.content_bytes),
        secs
    );

    for (name, parent) in [
        ("Servers", None),
        ("Workstations", None),
        ("Pilot", Some("Workstations")),
    ] {
        let g = store.add_group(name, parent)?;
        println!(
            "3. groups add {:?} under {:?}",
            g.name,
            g.parent.unwrap_or_default()
        );
    }
    for (name, group) in [
        ("dc01", "Servers"),
        ("ws-001", "Workstations"),
        ("ws-pilot", "Pilot"),
    ] {
        store.add_computer(name, Some(group))?;
    }
    println!("4. computers add: dc01 (Servers), ws-001 (Workstations), ws-pilot (Pilot)");

    let software = store.list_updates(&UpdateFilter {
        kind: Some(UpdateKind::Software),
        ..Default::default()
    })?;
    let mut approved = 0;
    // Approve what an admin approves: the visible (bundle) updates, not the
    // hidden leaves they bundle.
    let visible: Vec<_> = software
        .iter()
        .filter(|u| !u.title.starts_with("HIDDEN"))
        .collect();
    for (i, u) in visible.iter().take(20).enumerate() {
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
        approved += 1;
    }
    println!("5. approve: {approved} updates for Pilot, Workstations and Servers");
    if let Some(u) = visible.get(25) {
        store.decline(&u.id)?;
        println!("6. decline: {} ({})", u.id, u.title);
    }

    let s = store.status()?;
    println!(
        "done: {} updates, {} revisions, {} groups, {} deployments, {} content files ({}); anchor {}",
        s.updates.total,
        s.revisions,
        s.groups,
        s.deployments,
        s.content_files,
        human_bytes(s.content_bytes as u64),
        s.anchor
    );
    println!("try:  gapsync --server {} status", upstream.display());
    println!(
        "      gapsync --server {} deployments list",
        upstream.display()
    );
    println!(
        "      gapsync --server {} journal --json | head",
        upstream.display()
    );
    Ok(())
}
