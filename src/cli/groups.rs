//! `groups add | list | remove` and `computers add | list | move`: target
//! groups and the computers in them.

use anyhow::Result;
use clap::Subcommand;

use gapsync::model::units::count;
use gapsync::store::Store;

use super::{Ctx, print_json};

#[derive(Subcommand)]
pub enum GroupsCmd {
    Add {
        name: String,
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a group: its computers move to "Unassigned Computers" and
    /// its approvals are removed (both are listed).
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ComputersCmd {
    Add {
        name: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Computers: the ones added here and the Windows clients that
    /// registered (their OS, architecture, last contact and last report).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Move a computer (name or id) to a group: server-side targeting.
    Move {
        computer: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn groups(ctx: &Ctx, cmd: GroupsCmd) -> Result<()> {
    match cmd {
        GroupsCmd::Add { name, parent, json } => {
            let mut store = Store::open_writer(ctx.server()?)?;
            let g = store.add_group(&name, parent.as_deref())?;
            if json {
                print_json(&g)?;
            } else {
                println!(
                    "added group {:?} ({}) under {:?}",
                    g.name,
                    g.id,
                    g.parent.unwrap_or_default()
                );
            }
        }
        GroupsCmd::List { json } => {
            let store = Store::open_read_only(ctx.server()?)?;
            let list = store.list_groups()?;
            if json {
                print_json(&list)?;
            } else {
                for g in list {
                    println!(
                        "{} {:<30} parent {:<22} {}{}",
                        g.id,
                        g.name,
                        g.parent.unwrap_or_else(|| "-".into()),
                        count(g.computers as u64, "computer"),
                        if g.builtin { " (built in)" } else { "" }
                    );
                }
            }
        }
        GroupsCmd::Remove { name, json } => {
            let mut store = Store::open_writer(ctx.server()?)?;
            let r = store.remove_group(&name)?;
            if json {
                print_json(&r)?;
            } else {
                println!("removed group {:?} ({})", r.name, r.id);
                let n = r.computers_moved.len();
                if n > 0 {
                    println!(
                        "moved {} to {:?}: {}",
                        count(n as u64, "computer"),
                        r.computers_moved_to,
                        r.computers_moved.join(", ")
                    );
                }
                let n = r.approvals_removed.len();
                if n > 0 {
                    println!(
                        "removed {} (listed by `deployments list --removed`):",
                        count(n as u64, "approval")
                    );
                    for a in &r.approvals_removed {
                        println!("  {} r{} {}", a.update_id, a.revision, a.action);
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn computers(ctx: &Ctx, cmd: ComputersCmd) -> Result<()> {
    match cmd {
        ComputersCmd::Add { name, group, json } => {
            let mut store = Store::open_writer(ctx.server()?)?;
            let c = store.add_computer(&name, group.as_deref())?;
            if json {
                return print_json(&c);
            }
            println!("added computer {:?} to group {:?}", c.name, c.group);
        }
        ComputersCmd::Move {
            computer,
            group,
            json,
        } => {
            let mut store = Store::open_writer(ctx.server()?)?;
            let c = store.move_computer(&computer, &group)?;
            if json {
                return print_json(&c);
            }
            println!(
                "moved computer {:?} ({}) to group {:?}",
                c.name, c.id, c.group
            );
        }
        ComputersCmd::List { json } => {
            let store = Store::open_read_only(ctx.server()?)?;
            let list = store.list_computers()?;
            if json {
                return print_json(&list);
            }
            for c in list {
                match &c.last_sync {
                    Some(seen) => println!(
                        "{:<40} {:<24} {} {} last contact {seen}",
                        c.name,
                        c.group,
                        c.os.as_deref().unwrap_or("-"),
                        c.arch.as_deref().unwrap_or("-")
                    ),
                    None => println!("{:<40} {}", c.name, c.group),
                }
            }
        }
    }
    Ok(())
}
