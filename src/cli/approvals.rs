//! `approve`, `unapprove`, `decline` and `deployments list`: the
//! approvals ("deployments") of updates to target groups.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use gapsync::store::Store;
use gapsync::store::deployments::{Action, Approval};

use super::failure::usage;
use super::{Ctx, args, print_json};

/// Flags of `approve`.
#[derive(Args)]
pub struct ApproveArgs {
    #[arg(value_parser = args::guid)]
    update_id: String,
    #[arg(long)]
    group: String,
    #[arg(long, value_enum, default_value_t = ActionArg::Install)]
    action: ActionArg,
    /// Installation deadline, RFC 3339 (e.g. 2026-12-01T18:00:00Z); a
    /// past one is accepted with a warning.
    #[arg(long, value_parser = args::deadline)]
    deadline: Option<time::OffsetDateTime>,
    /// Administrator name recorded in the deployment.
    #[arg(long, env = "GAPSYNC_ADMIN")]
    admin: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    Install,
    Uninstall,
    Block,
}

/// Flags of `unapprove`.
#[derive(Args)]
pub struct UnapproveArgs {
    #[arg(value_parser = args::guid)]
    update_id: String,
    #[arg(long)]
    group: String,
}

/// Flags of `decline`.
#[derive(Args)]
pub struct DeclineArgs {
    #[arg(value_parser = args::guid)]
    update_id: String,
}

#[derive(Subcommand)]
pub enum DeploymentsCmd {
    List {
        #[arg(long)]
        json: bool,
        /// List removed ("dead") deployments instead.
        #[arg(long)]
        removed: bool,
    },
}

/// The administrator an approval records when `--admin` is not given.
pub(crate) fn default_admin() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "gapsync-admin".to_string())
}

pub fn approve(ctx: &Ctx, a: ApproveArgs) -> Result<()> {
    let mut store = Store::open_writer(ctx.server()?)?;
    let action = match a.action {
        ActionArg::Install => Action::Install,
        ActionArg::Uninstall => Action::Uninstall,
        ActionArg::Block => Action::Block,
    };
    let admin = a.admin.unwrap_or_else(default_admin);
    let deadline_text = a
        .deadline
        .map(|t| t.format(&time::format_description::well_known::Rfc3339))
        .transpose()
        .map_err(|e| usage!("--deadline: {e}"))?;
    let d = store.approve(&Approval {
        update_id: &a.update_id,
        group: &a.group,
        action,
        deadline: deadline_text.as_deref(),
        admin_name: &admin,
    })?;
    if let (Some(t), Some(text)) = (&a.deadline, &deadline_text) {
        args::warn_past_deadline(t, text);
    }
    if a.json {
        return print_json(&d);
    }
    println!(
        "approved {} revision {} for {:?}: {}{}",
        d.update_id,
        d.revision,
        d.group,
        d.action,
        d.deadline
            .as_deref()
            .map(|x| format!(", deadline {x}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn unapprove(ctx: &Ctx, a: UnapproveArgs) -> Result<()> {
    let mut store = Store::open_writer(ctx.server()?)?;
    let id = store.unapprove(&a.update_id, &a.group)?;
    println!("removed deployment {id}");
    Ok(())
}

pub fn decline(ctx: &Ctx, a: DeclineArgs) -> Result<()> {
    let mut store = Store::open_writer(ctx.server()?)?;
    if store.decline(&a.update_id)? {
        println!("declined {}", store.resolve_update(&a.update_id)?);
    } else {
        println!(
            "{} was already declined",
            store.resolve_update(&a.update_id)?
        );
    }
    Ok(())
}

pub fn deployments(ctx: &Ctx, cmd: DeploymentsCmd) -> Result<()> {
    let DeploymentsCmd::List { json, removed } = cmd;
    let store = Store::open_read_only(ctx.server()?)?;
    let list = if removed {
        store.list_dead_deployments()?
    } else {
        store.list_deployments()?
    };
    if json {
        return print_json(&list);
    }
    for d in list {
        println!(
            "{} r{:<5} {:<30} {:<9} {}",
            d.update_id,
            d.revision,
            d.group,
            d.action,
            d.deadline.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
