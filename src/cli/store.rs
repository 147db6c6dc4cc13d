//! `init`, `status`, `journal` and `check`: a store's identity, state and
//! health.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use gapsync::model::units::{count, human_bytes};
use gapsync::store::check::CheckReport;
use gapsync::store::journal::Anchor;
use gapsync::store::wusp::Targeting;
use gapsync::store::{Mode, Store};

use super::{Ctx, args, print_json};

/// Flags of `init`.
#[derive(Args)]
pub struct InitArgs {
    dir: PathBuf,
    #[arg(long, default_value = "gapsync")]
    name: String,
    #[arg(long, value_enum, default_value_t = ModeArg::Autonomous)]
    mode: ModeArg,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Autonomous,
    Replica,
}

/// Flags of `status`.
#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
}

/// Flags of `journal`.
#[derive(Args)]
pub struct JournalArgs {
    /// Anchor to list changes after (default: from the beginning).
    #[arg(long, value_parser = args::anchor)]
    since: Option<Anchor>,
    #[arg(long)]
    json: bool,
}

/// Flags of `check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Fix what is safe to fix (staging leftovers), and say so.
    #[arg(long)]
    repair: bool,
    #[arg(long)]
    json: bool,
}

/// `config`: the store's settings.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Set a setting: `targeting server` (groups assigned here, the
    /// default) or `targeting client` (clients name their groups).
    Set {
        key: ConfigKey,
        #[arg(value_parser = args::targeting)]
        value: Targeting,
        #[arg(long)]
        json: bool,
    },
    /// Show a setting.
    Get {
        key: ConfigKey,
        #[arg(long)]
        json: bool,
    },
    /// Replace the key that seals Windows clients' cookies: every cookie
    /// issued before is refused (InvalidCookie) and clients recover by
    /// asking for new ones.
    RotateCookieKey {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ConfigKey {
    Targeting,
}

pub fn config(ctx: &Ctx, cmd: ConfigCmd) -> Result<()> {
    let mode = match cmd {
        ConfigCmd::RotateCookieKey { json } => {
            let store = Store::open_writer(ctx.server()?)?;
            let key_id = gapsync::protocols::wusp::cookie::Keys::rotate(&store)?;
            if json {
                return print_json(&serde_json::json!({ "cookie_key": key_id }));
            }
            println!(
                "cookie key {key_id} is now in use; Windows clients holding older cookies will ask for new ones"
            );
            return Ok(());
        }
        ConfigCmd::Set {
            key: ConfigKey::Targeting,
            value,
            json,
        } => {
            Store::open_writer(ctx.server()?)?.set_targeting(value)?;
            (value, json)
        }
        ConfigCmd::Get {
            key: ConfigKey::Targeting,
            json,
        } => (Store::open_read_only(ctx.server()?)?.targeting()?, json),
    };
    match mode {
        (m, true) => print_json(&serde_json::json!({ "targeting": m })),
        (m, false) => {
            println!("targeting: {}", m.as_str());
            Ok(())
        }
    }
}

pub fn init(a: InitArgs) -> Result<()> {
    let mode = match a.mode {
        ModeArg::Autonomous => Mode::Autonomous,
        ModeArg::Replica => Mode::Replica,
    };
    let store = Store::init(&a.dir, &a.name, mode)?;
    if a.json {
        return print_json(&store.status()?);
    }
    let i = store.info();
    println!(
        "initialised {} server {:?} (id {}) in {}",
        i.mode.as_str(),
        i.name,
        i.server_id,
        a.dir.display()
    );
    Ok(())
}

pub fn status(ctx: &Ctx, a: StatusArgs) -> Result<()> {
    let store = Store::open_read_only(ctx.server()?)?;
    let s = store.status()?;
    if a.json {
        return print_json(&s);
    }
    println!(
        "server      {} ({}), {}",
        s.name,
        s.server_id,
        s.mode.as_str()
    );
    println!(
        "updates     {} (software {}, driver {}, category {}, detectoid {}); {} revisions, {} declined",
        s.updates.total,
        s.updates.software,
        s.updates.driver,
        s.updates.category,
        s.updates.detectoid,
        s.revisions,
        s.declined
    );
    println!("groups      {}; computers {}", s.groups, s.computers);
    println!("deployments {}", s.deployments);
    println!(
        "content     {} files, {}",
        s.content_files,
        human_bytes(s.content_bytes as u64)
    );
    println!("anchor      {}", s.anchor);
    Ok(())
}

pub fn journal(ctx: &Ctx, a: JournalArgs) -> Result<()> {
    let store = Store::open_read_only(ctx.server()?)?;
    let from = match a.since {
        Some(anchor) => store.own_anchor(&anchor.to_string())?,
        None => Anchor {
            server_id: store.info().server_id,
            seq: 0,
        },
    };
    let changes = store.changes_since(&from)?;
    if a.json {
        return print_json(&changes);
    }
    for c in changes {
        println!(
            "{:>8} {:<20} {} {}",
            c.seq,
            c.kind.as_str(),
            c.subject,
            c.at
        );
    }
    Ok(())
}

/// Keeps the check's result in the store for the console's overview. A
/// read-only check records through a bookkeeping open (no writer lock, so
/// it works beside `serve` and `console`); a user who may not write the
/// store is told the result was not kept, and the check stands.
fn record_check(dir: &Path, store: Store, r: &CheckReport, repair: bool) {
    let recorded = if repair {
        gapsync::store::check::record(&store, r, repair)
    } else {
        drop(store);
        Store::open(dir).and_then(|s| gapsync::store::check::record(&s, r, repair))
    };
    if let Err(e) = recorded {
        eprintln!("note: this check's result was not recorded in the store ({e})");
    }
}

/// Exit 3 (a verification failure) when a problem is found.
pub fn check(ctx: &Ctx, a: CheckArgs) -> Result<()> {
    let dir = ctx.server()?;
    let store = if a.repair {
        Store::open_writer(dir)?
    } else {
        Store::open_read_only(dir)?
    };
    let r = gapsync::store::check::check(&store, a.repair, &ctx.progress)?;
    record_check(dir, store, &r, a.repair);
    if a.json {
        print_json(&r)?;
    } else {
        for f in &r.repaired {
            println!("repaired: {f}");
        }
        for f in &r.notes {
            println!("note [{}]: {}", f.rule, f.detail);
        }
        for f in &r.problems {
            println!("PROBLEM [{}]: {}", f.rule, f.detail);
        }
        println!(
            "checked {} and {} ({}): {}",
            count(r.revisions_checked as u64, "revision"),
            count(r.content_files_checked as u64, "content file"),
            human_bytes(r.content_bytes_checked),
            if r.clean() {
                "clean".to_string()
            } else {
                count(r.problems.len() as u64, "problem")
            }
        );
    }
    if !r.clean() {
        return Err(gapsync::Error::verification(
            "check",
            format!("{} found", count(r.problems.len() as u64, "problem")),
        )
        .into());
    }
    Ok(())
}
