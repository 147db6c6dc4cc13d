//! `report computers | updates` and `events list`: what Windows clients
//! told this store (status per computer and per update, and the events
//! they reported). The counting rules are `gapsync::store::reports`'.

use anyhow::Result;
use clap::{Args, Subcommand};

use gapsync::store::Store;
use gapsync::store::reports::{ReportSource, StatusCounts};

use super::{Ctx, args, print_json};

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Each computer with its update status counts.
    Computers {
        /// Only computers of this group and the groups below it.
        #[arg(long)]
        group: Option<String>,
        /// A site's computers (its name or server id), from its latest
        /// report. Without it, a store that has sites lists its own
        /// computers and every site's, with a site column.
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each update with how many computers have it installed, need it...
    Updates {
        /// Only computers of this group and the groups below it (and with
        /// --approved, updates approved for it or a group above it).
        #[arg(long)]
        group: Option<String>,
        /// Only updates approved for install.
        #[arg(long)]
        approved: bool,
        /// A site's status (its name or server id), from its latest
        /// report. Without it, a store that has sites sums each update's
        /// counts over its own computers and every site's.
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum EventsCmd {
    /// The events Windows clients reported, oldest first.
    List(EventsListArgs),
}

/// Flags of `events list`.
#[derive(Args)]
pub struct EventsListArgs {
    /// Only this computer's (its id, or a name only one computer has).
    #[arg(long)]
    computer: Option<String>,
    /// Only events received since then: RFC 3339, or a duration back from
    /// now (24h, 7d).
    #[arg(long, value_parser = args::since)]
    since: Option<time::OffsetDateTime>,
    #[arg(long)]
    json: bool,
}

const COUNTS_HEAD: &str = "installed   needed   failed  not-appl  unknown";

fn counts(c: &StatusCounts) -> String {
    format!(
        "{:>9} {:>8} {:>8} {:>9} {:>8}",
        c.installed, c.needed, c.failed, c.not_applicable, c.unknown
    )
}

pub fn report(ctx: &Ctx, cmd: ReportCmd) -> Result<()> {
    let store = Store::open_read_only(ctx.server()?)?;
    match cmd {
        ReportCmd::Computers {
            group,
            site: None,
            json,
        } if store.has_sites()? => {
            let rows = store.rollup_computers(group.as_deref())?;
            if json {
                return print_json(&rows);
            }
            println!(
                "{:<16} {:<32} {:<24} {COUNTS_HEAD}  last report",
                "site", "computer", "group"
            );
            for r in rows {
                println!(
                    "{:<16} {:<32} {:<24} {}  {}",
                    r.site,
                    r.row.name,
                    r.row.group,
                    counts(&r.row.counts),
                    r.row.last_report.as_deref().unwrap_or("never")
                );
            }
        }
        ReportCmd::Updates {
            group,
            approved,
            site: None,
            json,
        } if store.has_sites()? => {
            let rows = store.rollup_updates(group.as_deref(), approved)?;
            if json {
                return print_json(&rows);
            }
            println!("{:<36} {COUNTS_HEAD}  sites  title", "update");
            for r in rows {
                println!(
                    "{:<36} {}  {:>5}  {}",
                    r.update_id,
                    counts(&r.counts),
                    r.sites,
                    r.title
                );
            }
        }
        ReportCmd::Computers { group, site, json } => {
            let site = site.map(|s| store.site_id(&s)).transpose()?;
            let source = site
                .as_deref()
                .map_or(ReportSource::Local, ReportSource::Site);
            let rows = store.report_computers_of(source, group.as_deref())?;
            if json {
                return print_json(&rows);
            }
            println!(
                "{:<32} {:<24} {COUNTS_HEAD}  last report",
                "computer", "group"
            );
            for r in rows {
                println!(
                    "{:<32} {:<24} {}  {}",
                    r.name,
                    r.group,
                    counts(&r.counts),
                    r.last_report.as_deref().unwrap_or("never")
                );
            }
        }
        ReportCmd::Updates {
            group,
            approved,
            site,
            json,
        } => {
            let site = site.map(|s| store.site_id(&s)).transpose()?;
            let source = site
                .as_deref()
                .map_or(ReportSource::Local, ReportSource::Site);
            let rows = store.report_updates_of(source, group.as_deref(), approved)?;
            if json {
                return print_json(&rows);
            }
            println!("{:<36} {COUNTS_HEAD}  title", "update");
            for r in rows {
                println!("{:<36} {}  {}", r.update_id, counts(&r.counts), r.title);
            }
        }
    }
    Ok(())
}

pub fn events(ctx: &Ctx, cmd: EventsCmd) -> Result<()> {
    let EventsCmd::List(a) = cmd;
    let store = Store::open_read_only(ctx.server()?)?;
    let rows = store.list_events(a.computer.as_deref(), a.since)?;
    if a.json {
        return print_json(&rows);
    }
    for e in rows {
        println!(
            "{}  {:<24} event {:>3} hresult {:#010x} {}",
            e.received,
            e.computer,
            e.event_id,
            e.hresult as u32,
            e.update_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
