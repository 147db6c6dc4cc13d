//! Times the console's pages on a store (docs/performance.md):
//!
//!     cargo run --release --example console_pages -- DIR [UPDATES]
//!
//! DIR is a store; when it does not exist, one is made there with a
//! synthetic catalog of UPDATES updates (default 100000), a group, a
//! computer and 200 approvals. A store without sites gets 3 (as an upper
//! server keeps rolled-up downstream servers: each reports the whole
//! catalog, 100 computers and 200 statuses per computer). Each page is
//! rendered through the console's request handler (no network), 5 times;
//! the median and the slowest are printed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gapsync::console::app::{App, Method, Req};
use gapsync::console::auth::{LoginLimiter, Sessions};
use gapsync::console::pages::Params;
use gapsync::store::deployments::{Action, Approval};
use gapsync::store::rollup::{RolledComputer, RolledDetails, RolledServer, RolledStatus};
use gapsync::store::wusp::UpdateState;
use gapsync::store::{Mode, Store, UpdateFilter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: console_pages DIR [UPDATES]")?);
    let updates: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    if !dir.exists() {
        make_store(&dir, updates)?;
    }
    if !Store::open_read_only(&dir)?.has_sites()? {
        add_sites(&dir)?;
    }
    let app = App {
        root: dir.clone(),
        sessions: Sessions::default(),
        limiter: LoginLimiter::default(),
        admin_name: "bench".into(),
        tls: false,
        loopback: true,
    };
    let (token, _) = app.sessions.create()?;
    let store = Store::open_read_only(&dir)?;
    let st = store.status()?;
    let some = store
        .search_updates(&gapsync::store::console::UpdateQuery {
            limit: 1,
            ..Default::default()
        })?
        .rows
        .first()
        .map(|r| r.id.clone())
        .ok_or("no update")?;
    let computer = store.list_computers()?.first().map(|c| c.id.clone());
    drop(store);
    println!(
        "store {}: {} updates ({} software, {} driver), {} approvals, {} computers",
        dir.display(),
        st.updates.total,
        st.updates.software,
        st.updates.driver,
        st.deployments,
        st.computers
    );
    let mut pages: Vec<(String, String)> = vec![
        ("/".into(), String::new()),
        ("/updates".into(), String::new()),
        ("/updates".into(), "page=1000".into()),
        ("/updates".into(), "q=cumulative".into()),
        ("/updates".into(), "q=KB5".into()),
        ("/updates".into(), "approval=approved".into()),
        (format!("/updates/{some}"), String::new()),
        ("/computers".into(), String::new()),
        ("/compliance".into(), String::new()),
        ("/compliance.csv".into(), String::new()),
        ("/bundles".into(), String::new()),
    ];
    if let Some(c) = computer {
        pages.push((format!("/computers/{c}"), String::new()));
    }
    println!(
        "{:<48} {:>10} {:>10} {:>9}",
        "page", "median ms", "max ms", "bytes"
    );
    for (path, query) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let req = Req {
                method: Method::Get,
                path: path.clone(),
                query: query.clone(),
                host: Some("127.0.0.1".into()),
                cookies: vec![("gapsync_session".into(), token.clone())],
                form: Params(Vec::new()),
                peer: "127.0.0.1".parse()?,
            };
            let t = Instant::now();
            let r = app.handle(&req);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if r.status != 200 {
                return Err(format!("{path}?{query}: status {}", r.status).into());
            }
            bytes = r.body.len();
        }
        times.sort_by(f64::total_cmp);
        let name = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let name: String = name.chars().take(48).collect();
        println!(
            "{name:<48} {:>10.1} {:>10.1} {bytes:>9}",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    Ok(())
}

fn make_store(dir: &Path, updates: u64) -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("making a store of {updates} updates in {}", dir.display());
    Store::init(dir, "bench", Mode::Autonomous)?;
    let mut s = Store::open_writer(dir)?;
    gapsync::seed::generate::generate(
        &mut s,
        &gapsync::seed::generate::GenerateOptions {
            updates,
            content_bytes: 0,
            seed: 1,
        },
        &gapsync::progress::Silent,
    )?;
    s.add_group("Pilot", None)?;
    s.add_computer("ws-001", Some("Pilot"))?;
    let list = s.list_updates(&UpdateFilter {
        kind: Some(gapsync::model::metadata::UpdateKind::Software),
        ..UpdateFilter::default()
    })?;
    for u in list.iter().take(200) {
        s.approve(&Approval {
            update_id: &u.id,
            group: "Pilot",
            action: Action::Install,
            deadline: None,
            admin_name: "bench",
        })?;
    }
    Ok(())
}

/// Three rolled-up downstream servers, as `sync --replica` at three sites
/// would leave them: the catalog is theirs, 100 computers each, 200
/// statuses per computer (installed, needed, failed, not applicable).
fn add_sites(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("adding 3 rolled-up sites to {}", dir.display());
    let s = Store::open_writer(dir)?;
    let updates: Vec<String> = s
        .list_updates(&UpdateFilter {
            kind: Some(gapsync::model::metadata::UpdateKind::Software),
            ..UpdateFilter::default()
        })?
        .into_iter()
        .take(200)
        .map(|u| u.id)
        .collect();
    let states = [
        UpdateState::Installed,
        UpdateState::Needed,
        UpdateState::Failed,
        UpdateState::NotApplicable,
    ];
    let when = "2026-12-01T00:00:00Z".to_string();
    for site in 0..3u32 {
        let server_id = format!("5e1e0000-0000-4000-8000-{site:012}");
        s.rollup_record_servers(&[RolledServer {
            server_id: server_id.clone(),
            name: format!("site-{site}"),
            rollup_time: Some(when.clone()),
        }])?;
        let computers: Vec<RolledComputer> = (0..100u32)
            .map(|c| RolledComputer {
                server_id: server_id.clone(),
                computer_id: format!("c0000000-0000-4000-8{site:03}-{c:012}"),
                last_sync: Some(when.clone()),
                last_report: Some(when.clone()),
                details: Some(RolledDetails {
                    name: format!("ws-{site}-{c:03}"),
                    group_id: None,
                    os_description: Some("Windows 11".into()),
                    arch: Some("AMD64".into()),
                }),
            })
            .collect();
        s.rollup_record_computers(&computers)?;
        let status: Vec<RolledStatus> = computers
            .iter()
            .enumerate()
            .map(|(i, c)| RolledStatus {
                computer_id: c.computer_id.clone(),
                rollup_number: 1,
                full: true,
                rows: updates
                    .iter()
                    .enumerate()
                    .map(|(j, u)| (u.clone(), states[(i + j) % states.len()], when.clone()))
                    .collect(),
            })
            .collect();
        s.rollup_record_status(&server_id, &status)?;
    }
    Ok(())
}
