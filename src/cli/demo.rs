//! `gapsync demo`: the whole air-gap loop in a fresh folder — a connected
//! server with a generated catalog, groups and approvals; a full export,
//! verify and import into a disconnected replica; more updates and
//! approvals upstream; an incremental export and import; simulated
//! Windows clients (`gapsync::protocols::wusp::client`) that scan the
//! disconnected server over MS-WUSP, install what is approved for their
//! groups and report; the site's signed report carried back to the
//! connected server, which imports it; then a summary, the stock-tool
//! commands that check the bundle independently, and the connected
//! server's per-site compliance table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use gapsync::airgap::export::{self, ExportOptions, ExportReport};
use gapsync::airgap::format::{Filters, Layout};
use gapsync::airgap::import::{self, ImportOptions, ImportReport};
use gapsync::airgap::verify;
use gapsync::model::metadata::UpdateKind;
use gapsync::model::units::{count, human_bytes};
use gapsync::progress::Progress;
use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};
use gapsync::seed::generate::{self, GenerateOptions};
use gapsync::store::deployments::{Action, Approval};
use gapsync::store::{Mode, Store, UpdateFilter};
use gapsync::trust::{self, SecretKey, TrustView};

use super::{Ctx, args};

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

/// Flags of `demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Folder to create the demo servers in (a fresh one is made inside).
    #[arg(long, default_value = "gapsync-demo")]
    dir: PathBuf,
    /// Updates to generate (1-100000000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=generate::MAX_UPDATES))]
    updates: u64,
    /// Total content size (e.g. 128M, 2G; at most 16T).
    #[arg(long, default_value = "128M", value_parser = args::content_bytes)]
    content_bytes: u64,
}

pub fn run(ctx: &Ctx, a: DemoArgs) -> Result<()> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let root = a.dir.join(format!("run-{stamp}"));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    println!("gapsync demo in {}\n", root.display());
    let mut demo = Demo::init(root, &ctx.progress)?;
    demo.seed(a.updates, a.content_bytes)?;
    let b1 = demo.carry("bundle-0001", 5)?;
    demo.change_upstream(a.updates, a.content_bytes)?;
    let b2 = demo.carry("bundle-0002", 9)?;
    demo.compare()?;
    demo.clients()?;
    demo.report_back()?;
    demo.check()?;
    demo.summary(&b1, &b2)?;
    demo.compliance()
}

/// The demo's two servers, its signing key, and the steps timed so far.
struct Demo<'a> {
    root: PathBuf,
    up: Store,
    down: Store,
    key: SecretKey,
    pub_path: PathBuf,
    steps: Vec<Step>,
    progress: &'a dyn Progress,
}

impl<'a> Demo<'a> {
    /// Steps 1 and 4: the connected server and the disconnected replica,
    /// and a signing key the replica trusts.
    fn init(root: PathBuf, progress: &'a dyn Progress) -> Result<Demo<'a>> {
        let up = Store::init(&root.join("connected"), "hq-connected", Mode::Autonomous)?;
        let down = Store::init(
            &root.join("disconnected"),
            "plant-disconnected",
            Mode::Replica,
        )?;
        println!(
            "1. init: connected server {} and disconnected replica {}",
            up.info().server_id,
            down.info().server_id
        );
        let key = SecretKey::generate()?;
        let (_, pub_path) = key.write_pair(&root.join("hq-signing"))?;
        trust::trust_add(&down, &key.public(), "hq-signing", trust::ADDED_BY_ADMIN)?;
        Ok(Demo {
            root,
            up,
            down,
            key,
            pub_path,
            steps: Vec::new(),
            progress,
        })
    }

    fn step(&mut self, name: &str, detail: String, bytes: u64, secs: f64) {
        self.steps.push(Step {
            name: name.into(),
            detail,
            bytes,
            secs,
        });
    }

    /// Steps 2-4: a generated catalog, groups, computers, approvals and a
    /// decline on the connected side.
    fn seed(&mut self, updates: u64, content_bytes: u64) -> Result<()> {
        let t = Instant::now();
        let g = generate::generate(
            &mut self.up,
            &GenerateOptions {
                updates,
                content_bytes,
                seed: 1,
            },
            self.progress,
        )?;
        self.step(
            "catalog generate",
            format!(
                "{}, {}",
                count(g.revisions_added, "revision"),
                count(g.content_files, "content file")
            ),
            g.content_bytes,
            t.elapsed().as_secs_f64(),
        );
        println!(
            "2. catalog generate: {} ({} software, {}, {}, {}), {} ({})",
            count(g.revisions_added, "revision"),
            g.software,
            count(g.drivers, "driver"),
            count(g.categories, "category"),
            count(g.detectoids, "detectoid"),
            count(g.content_files, "content file"),
            human_bytes(g.content_bytes)
        );
        for (name, parent) in [
            ("Servers", None),
            ("Workstations", None),
            ("Pilot", Some("Workstations")),
        ] {
            self.up.add_group(name, parent)?;
        }
        for (name, group) in [
            ("dc01", "Servers"),
            ("ws-001", "Workstations"),
            ("ws-pilot", "Pilot"),
        ] {
            self.up.add_computer(name, Some(group))?;
        }
        let n = approve_some(&mut self.up, 20, 0)?;
        let software = self.up.list_updates(&UpdateFilter {
            kind: Some(UpdateKind::Software),
            ..Default::default()
        })?;
        if let Some(u) = software
            .iter()
            .filter(|u| !u.title.starts_with("HIDDEN"))
            .nth(25)
        {
            self.up.decline(&u.id)?;
        }
        println!(
            "3. groups Servers, Workstations, Pilot; computers dc01, ws-001, ws-pilot; {n} approvals; 1 decline"
        );
        println!(
            "4. key generate: {} (secret {}); the disconnected server trusts it",
            self.key.id(),
            self.pub_path.with_extension("key").display()
        );
        Ok(())
    }

    /// Steps `first`..`first + 2`: export the next bundle of the chain to
    /// the media folder, verify it with stock-tool rules, import it.
    fn carry(&mut self, name: &str, first: u32) -> Result<PathBuf> {
        let bundle = self.root.join("media").join(name);
        let (e, secs) = export_step(&mut self.up, &self.key, &bundle, self.progress)?;
        let full = e.from_anchor.is_none();
        let kind = if full { "full" } else { "incremental" };
        self.step(
            &format!("export ({kind})"),
            format!(
                "{}, {}",
                count(e.counts.revisions, "revision"),
                count(e.counts.content_files, "file")
            ),
            e.bytes_written,
            secs,
        );
        if full {
            println!(
                "{first}. export --full: bundle {} seq {} ({}) -> {}",
                e.bundle_id,
                e.seq,
                human_bytes(e.bytes_written),
                bundle.display()
            );
        } else {
            println!(
                "{first}. export (incremental from {}): bundle seq {} ({})",
                e.from_anchor.as_deref().unwrap_or("-"),
                e.seq,
                human_bytes(e.bytes_written)
            );
        }

        if full {
            let t = Instant::now();
            let mut view = TrustView::from_keys(&[self.key.public()])?;
            let v = verify::verify_bundle(
                &Layout::discover(&bundle)?,
                &mut view,
                false,
                self.progress,
            )?;
            self.step(
                "verify (full)",
                format!("{} checks", v.checks.len()),
                e.bytes_written,
                t.elapsed().as_secs_f64(),
            );
            println!(
                "{}. verify: signature by {}, every hash, expiry ({} checks passed)",
                first + 1,
                v.signer,
                v.checks.len()
            );
        }

        let (i, secs) = import_step(&mut self.down, &bundle, self.progress)?;
        self.step(
            &format!("import ({kind})"),
            format!(
                "{}, {}",
                count(i.plan.revisions_added, "revision"),
                count(i.plan.content_files, "file")
            ),
            e.bytes_written,
            secs,
        );
        let n = if full { first + 2 } else { first + 1 };
        if full {
            println!(
                "{n}. import: {}, {}, {} into the disconnected server",
                count(i.plan.revisions_added, "revision"),
                count(i.plan.state.deployments_created, "deployment"),
                count(i.plan.content_files, "content file")
            );
        } else {
            println!(
                "{n}. import: {}, {} created",
                count(i.plan.revisions_added, "revision"),
                count(i.plan.state.deployments_created, "deployment")
            );
        }
        Ok(bundle)
    }

    /// Step 8: more updates and approvals upstream.
    fn change_upstream(&mut self, updates: u64, content_bytes: u64) -> Result<()> {
        let t = Instant::now();
        let g = generate::generate(
            &mut self.up,
            &GenerateOptions {
                updates: (updates / 10).max(10),
                content_bytes: content_bytes / 10,
                seed: 2,
            },
            self.progress,
        )?;
        let n = approve_some(&mut self.up, 5, 0)?;
        self.step(
            "more updates",
            format!(
                "{}, {}",
                count(g.revisions_added, "revision"),
                count(n as u64, "approval")
            ),
            g.content_bytes,
            t.elapsed().as_secs_f64(),
        );
        println!(
            "8. upstream changes: {} added, {}, {}",
            count(g.revisions_added, "revision"),
            count(g.content_files, "content file"),
            count(n as u64, "approval")
        );
        Ok(())
    }

    /// Step 11: Windows clients at the disconnected site. Their computers
    /// are added to the site's groups; each simulated Windows Update Agent
    /// scans the disconnected server over MS-WUSP (served in this process
    /// on a loopback port), installs what is approved for its group
    /// (downloads checked against both digests), reports, and the site's
    /// status per computer is printed.
    fn clients(&mut self) -> Result<()> {
        let t = Instant::now();
        let sites = [
            ("site-ws-101", "Workstations"),
            ("site-pilot-7", "Pilot"),
            ("site-srv-01", "Servers"),
        ];
        for (name, group) in sites {
            self.down.add_computer(name, Some(group))?;
        }
        let srv = gapsync::http::Server::bind(
            &self.root.join("disconnected"),
            gapsync::http::ServeOptions {
                listen: "127.0.0.1:0".into(),
                ..Default::default()
            },
        )?;
        let url = format!("{}://{}", srv.scheme(), srv.local_addr()?);
        // Serves until the demo ends.
        std::thread::spawn(move || srv.run());
        println!("11. serve: the disconnected server answers Windows clients (MS-WUSP) at {url}");
        let (mut files, mut bytes) = (0u64, 0u64);
        for (k, (name, group)) in sites.iter().enumerate() {
            let id = format!("de70c11e-0000-4000-8000-{:012}", k + 1);
            let mut w = Wua::new(&url, Machine::new(&id, name), WuaOptions::default());
            let scan = w
                .scan()
                .with_context(|| format!("simulated client {name}"))?;
            let done = w
                .install()
                .with_context(|| format!("simulated client {name}"))?;
            let deadlines: std::collections::BTreeSet<&str> =
                done.iter().filter_map(|i| i.deadline.as_deref()).collect();
            files += done.iter().map(|i| i.files as u64).sum::<u64>();
            bytes += done.iter().map(|i| i.bytes).sum::<u64>();
            let c = self
                .down
                .wusp_computer(&id)?
                .with_context(|| format!("{name} is not registered"))?;
            let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
            for (_, st) in self.down.wusp_status_of(&c.computer_id)? {
                *states.entry(st.as_str()).or_default() += 1;
            }
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!(
                "    {name} ({group}): {} cached after {} passes; installed {} ({} files, {}){}; status: {}",
                count(w.cache().len() as u64, "update"),
                scan.passes,
                done.iter().filter(|i| i.ok).count(),
                done.iter().map(|i| i.files).sum::<usize>(),
                human_bytes(done.iter().map(|i| i.bytes).sum()),
                if deadlines.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", deadline {}",
                        deadlines.into_iter().collect::<Vec<_>>().join(", ")
                    )
                },
                states.join(", ")
            );
        }
        self.step(
            "windows clients",
            format!("{} scans, {}", sites.len(), count(files, "file")),
            bytes,
            t.elapsed().as_secs_f64(),
        );
        Ok(())
    }

    /// Step 12: the way back. The site signs a report with its own key
    /// (trusted by the connected server), the connected server imports it.
    fn report_back(&mut self) -> Result<()> {
        use gapsync::airgap::report::{self, ReportExportOptions, ReportImportOptions};
        let t = Instant::now();
        let site_key = SecretKey::generate()?;
        site_key.write_pair(&self.root.join("plant-signing"))?;
        trust::trust_add(
            &self.up,
            &site_key.public(),
            "plant-signing",
            trust::ADDED_BY_ADMIN,
        )?;
        let out = self.root.join("media").join("report-0001");
        let e = report::export_report(
            &mut self.down,
            &ReportExportOptions {
                out: &out,
                destination: "hq",
                full: false,
                check: gapsync::model::report::ContentCheck::Size,
                expires: time::Duration::days(30),
                key: &site_key,
            },
            self.progress,
        )?;
        let i = report::import_report(
            &mut self.up,
            &ReportImportOptions {
                layout: Layout::discover(&out)?,
                dry_run: false,
                allow_expired: false,
                rebase: false,
            },
            self.progress,
        )?;
        self.step(
            "report out and in",
            format!(
                "{}, {} status rows",
                count(e.report.computers, "computer"),
                e.report.status
            ),
            e.bytes_written,
            t.elapsed().as_secs_f64(),
        );
        println!(
            "12. export --report at the site (seq {}, {} held, {} missing) -> import at the connected server: site {} {}",
            e.seq, e.report.content_held, e.report.content_missing, i.site, i.status
        );
        Ok(())
    }

    /// The connected server's per-site compliance table (`sites list`, and
    /// `report computers --site` for each site).
    fn compliance(&self) -> Result<()> {
        use gapsync::store::reports::ReportSource;
        println!(
            "
per-site compliance at the connected server (gapsync sites list):"
        );
        println!(
            "  {:<20} {:>9} {:>9} {:>8} {:>7} {:>7}  last report",
            "site", "computers", "installed", "needed", "failed", "behind"
        );
        for s in self.up.sites_list()? {
            println!(
                "  {:<20} {:>9} {:>9} {:>8} {:>7} {:>7}  {}",
                s.site,
                s.computers,
                s.installed,
                s.needed,
                s.failed,
                s.bundles_behind
                    .map_or_else(|| "-".to_string(), |b| b.to_string()),
                s.last_report
            );
            for c in self
                .up
                .report_computers_of(ReportSource::Site(&s.server_id), None)?
            {
                println!(
                    "    {:<18} {:<14} installed {:>4}, needed {:>4}, failed {:>3}, unknown {:>5}",
                    c.name,
                    c.group,
                    c.counts.installed,
                    c.counts.needed,
                    c.counts.failed,
                    c.counts.unknown
                );
            }
        }
        println!(
            "  (gapsync --server {} report updates --site {})",
            self.root.join("connected").display(),
            self.down.info().name
        );
        Ok(())
    }

    /// Step 13: `check` on both stores (every revision and content digest),
    /// recorded so that their consoles show it.
    fn check(&mut self) -> Result<()> {
        use gapsync::store::check;
        let t = Instant::now();
        let mut bytes = 0;
        let mut lines = Vec::new();
        for store in [&self.up, &self.down] {
            let r = check::check(store, false, self.progress)?;
            check::record(store, &r, false)?;
            if !r.clean() {
                bail!(
                    "check found problems in {}: {:?}",
                    store.root().display(),
                    r.problems
                );
            }
            bytes += r.content_bytes_checked;
            lines.push(format!(
                "{} clean ({}, {})",
                store.info().name,
                count(r.revisions_checked, "revision"),
                count(r.content_files_checked, "content file")
            ));
        }
        let secs = t.elapsed().as_secs_f64();
        self.step(
            "check (both)",
            "every revision and content digest".into(),
            bytes,
            secs,
        );
        println!("13. check: {}", lines.join("; "));
        Ok(())
    }

    /// The two servers agree: updates, deployments and content.
    fn compare(&self) -> Result<()> {
        let (up, down) = (&self.up, &self.down);
        let same_updates = serde_json::to_string(&up.list_updates(&UpdateFilter::default())?)?
            == serde_json::to_string(&down.list_updates(&UpdateFilter::default())?)?;
        let same_deployments = serde_json::to_string(&up.list_deployments()?)?
            == serde_json::to_string(&down.list_deployments()?)?;
        let (su, sd) = (up.status()?, down.status()?);
        let same_content =
            su.content_files == sd.content_files && su.content_bytes == sd.content_bytes;
        if !(same_updates && same_deployments && same_content) {
            bail!(
                "the disconnected server does not match the connected one (updates {same_updates}, deployments {same_deployments}, content {same_content})"
            );
        }
        Ok(())
    }

    /// The table of timed steps, the end state, and what to try next.
    fn summary(&self, b1: &Path, b2: &Path) -> Result<()> {
        println!(
            "\n{:<22} {:<34} {:>12} {:>8} {:>10}",
            "step", "what", "bytes", "time", "rate"
        );
        for s in &self.steps {
            println!(
                "{:<22} {:<34} {:>12} {:>7.2}s {:>10}",
                s.name,
                s.detail,
                human_bytes(s.bytes),
                s.secs,
                rate(s.bytes, s.secs)
            );
        }
        let sd = self.down.status()?;
        println!(
            "\nthe disconnected server now equals the connected one: {}, {}, {}, {} ({})",
            count(sd.updates.total as u64, "update"),
            count(sd.revisions as u64, "revision"),
            count(sd.deployments as u64, "deployment"),
            count(sd.content_files as u64, "content file"),
            human_bytes(sd.content_bytes as u64)
        );
        let down_dir = self.root.join("disconnected");
        println!("\ncheck the first bundle with stock tools (apt-get install minisign zstd):");
        println!("  cd {}", b1.display());
        println!("  minisign -V -p {} -m SHA256SUMS", self.pub_path.display());
        println!("  sha256sum -c SHA256SUMS");
        println!("  tar --zstd -tf metadata.tar.zst | head");
        println!("\nexplore:");
        println!("  gapsync --server {} status", down_dir.display());
        println!("  gapsync --server {} deployments list", down_dir.display());
        println!("  gapsync --server {} computers list", down_dir.display());
        println!(
            "  gapsync verify {} --trust {}",
            b2.display(),
            self.pub_path.display()
        );
        Ok(())
    }
}
