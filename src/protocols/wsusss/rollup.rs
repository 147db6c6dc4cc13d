//! Reporting data synchronization, the DSS side (MS-WSUSSS 3.2.4.5): after
//! a sync, a downstream server rolls itself, its computers and their
//! update status up to its upstream, which then shows it as a site (the
//! same per-site view a report bundle gives across an air gap).
//!
//! The steps, in the spec's order:
//! 1. GetRollupConfiguration; a RollupResetGuid other than the one last
//!    seen means the upstream forgot: everything is sent again.
//! 2. RollupDownstreamServers: this server with its summary counts
//!    (`store::rollup::ServerCounts`; the counts gapsync cannot compute are
//!    0, docs/protocol.md), no client summaries. Descendant servers are not
//!    rolled up.
//! 3. Unless the upstream said DoDetailedRollup false: RollupComputers for
//!    every computer (details the first time, or when the upstream answers
//!    NewParent; a computer it answers Deleted for is not sent again).
//! 4. GetOutOfSyncComputers for the computers whose status was rolled up
//!    before: those the upstream names get their full status next.
//! 5. RollupComputerStatus: per computer, the full status (first time, or
//!    out of sync) or the status rows changed since the last rollup; an
//!    upstream too busy (result false) ends the rollup: the rest goes next
//!    time.
//!
//! Batches never exceed the sizes the upstream announced.

use serde::Serialize;
use uuid::Uuid;

use super::Operation;
use super::client::{Client, ClientError};
use super::reporting::{self as msg, ComputerChange, ComputerDetails, ComputerRollup};
use crate::store::Store;
use crate::store::rollup::{RollupComputer, ServerCounts};
use crate::store::wusp::UpdateState;

/// What a rollup sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RollupReport {
    /// The upstream takes computers and status (DoDetailedRollup).
    pub detailed: bool,
    /// The upstream's RollupResetGuid changed: everything was sent again.
    pub reset: bool,
    pub computers: u64,
    pub details: u64,
    /// Computers whose status was sent, and in full.
    pub status_computers: u64,
    pub status_full: u64,
    pub status_rows: u64,
    /// Computers the upstream asked to stop hearing of.
    pub forgotten: u64,
    /// The upstream was too busy for some status: sent next time.
    pub busy: bool,
}

/// Who this server is to its upstream.
#[derive(Debug, Clone)]
pub struct Identity {
    pub server_id: Uuid,
    /// The name given to the upstream (the sync's account name).
    pub name: String,
    pub replica: bool,
    pub last_sync: Option<i64>,
}

/// Errors of a rollup: the upstream's (network, fault, malformed answer)
/// or the store's.
#[derive(Debug)]
pub enum RollupError {
    Upstream(ClientError),
    Store(crate::error::Error),
}

impl From<ClientError> for RollupError {
    fn from(e: ClientError) -> Self {
        RollupError::Upstream(e)
    }
}

impl From<crate::error::Error> for RollupError {
    fn from(e: crate::error::Error) -> Self {
        RollupError::Store(e)
    }
}

type Step<T> = std::result::Result<T, RollupError>;

fn unix(rfc3339: Option<&str>) -> Option<i64> {
    rfc3339
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(time::OffsetDateTime::unix_timestamp)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The summary in wire order ([`msg::SUMMARY_FIELDS`]).
fn summary(c: &ServerCounts) -> [u32; 18] {
    [
        c.updates,
        c.declined,
        c.approved,
        c.not_approved,
        0, // UpdatesWithStaleUpdateApprovalsCount
        0, // ExpiredUpdateCount
        0, // CriticalOrSecurityUpdatesNotApprovedForInstallCount
        0, // WsusInfrastructureUpdatesNotApprovedForInstallCount
        c.updates_with_client_errors,
        0, // UpdatesWithServerErrorsCount
        c.updates_needing_files,
        c.updates_needed,
        c.updates_up_to_date,
        c.custom_groups,
        c.computers,
        c.computers_needing,
        c.computers_with_errors,
        c.computers_up_to_date,
    ]
}

fn summarization(s: UpdateState) -> msg::Summarization {
    match s {
        UpdateState::Installed => msg::Summarization::Installed,
        UpdateState::Needed => msg::Summarization::NotInstalled,
        UpdateState::Downloaded => msg::Summarization::Downloaded,
        UpdateState::Failed => msg::Summarization::Failed,
        UpdateState::NotApplicable => msg::Summarization::NotApplicable,
    }
}

fn computer_rollup(c: &RollupComputer, me: Uuid, with_details: bool) -> ComputerRollup {
    let details = with_details.then(|| {
        let mut v = c
            .os_version
            .as_deref()
            .unwrap_or_default()
            .split('.')
            .map(|p| p.parse::<i32>().unwrap_or(0));
        ComputerDetails {
            target_group_ids: Uuid::parse_str(&c.group_id).into_iter().collect(),
            requested_group_names: Vec::new(),
            full_domain_name: c.name.clone(),
            os_major: v.next().unwrap_or(0),
            os_minor: v.next().unwrap_or(0),
            os_build: v.next().unwrap_or(0),
            os_description: c.os_description.clone().unwrap_or_default(),
            make: c
                .make
                .clone()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            model: c
                .model
                .clone()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            processor_architecture: c
                .arch
                .clone()
                .unwrap_or_default()
                .chars()
                .take(50)
                .collect(),
            client_version: c
                .client_version
                .clone()
                .unwrap_or_default()
                .chars()
                .take(20)
                .collect(),
        }
    });
    let last_sync = unix(c.last_sync.as_deref());
    ComputerRollup {
        computer_id: c.computer_id.clone(),
        last_sync,
        last_sync_result: if last_sync.is_some() { 1 } else { 0 },
        last_reported_status: unix(c.last_report.as_deref()),
        parent_server_id: me,
        details,
    }
}

/// Sends computers (with or without details) in batches; returns the
/// upstream's requests.
fn send_computers(
    client: &Client,
    store: &Store,
    url: &str,
    batch: u32,
    list: &[ComputerRollup],
) -> Step<Vec<(String, ComputerChange)>> {
    let mut changes = Vec::new();
    for chunk in list.chunks(batch.max(1) as usize) {
        let got = client.rollup_call(
            Operation::RollupComputers,
            |w| msg::rollup_computers_request(w, now(), chunk),
            msg::read_rollup_computers_result,
        )?;
        let with: Vec<String> = chunk
            .iter()
            .filter(|c| c.details.is_some())
            .map(|c| c.computer_id.clone())
            .collect();
        store.rollup_details_sent(url, &with, true)?;
        changes.extend(got);
    }
    Ok(changes)
}

/// Rolls this server up to the upstream `client` talks to.
pub fn rollup(store: &Store, client: &Client, me: &Identity) -> Step<RollupReport> {
    let url = client.base().to_string();
    let mut report = RollupReport::default();
    // 1. configuration
    let config = client.rollup_call(
        Operation::GetRollupConfiguration,
        msg::get_rollup_configuration_request,
        msg::read_rollup_configuration,
    )?;
    report.detailed = config.do_detailed_rollup;
    report.reset = store.rollup_begin(&url, &config.rollup_reset_guid.to_string())?;
    // 2. this server
    let server = msg::ServerRollup {
        server_id: me.server_id,
        full_domain_name: me.name.clone(),
        last_sync: me.last_sync,
        parent_server_id: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        is_replica: me.replica,
        last_rollup: unix(store.rollup_last(&url)?.as_deref()),
        summary: summary(&store.rollup_server_counts()?),
    };
    let sent_at = crate::store::now_rfc3339();
    client.rollup_call(
        Operation::RollupDownstreamServers,
        |w| msg::rollup_downstream_servers_request(w, now(), std::slice::from_ref(&server)),
        |_| Ok(()),
    )?;
    store.rollup_servers_sent(&url, &sent_at)?;
    if !config.do_detailed_rollup {
        return Ok(report);
    }
    // 3. computers
    let computers = store.rollup_local_computers(&url)?;
    let list: Vec<ComputerRollup> = computers
        .iter()
        .map(|c| computer_rollup(c, me.server_id, !c.details_sent))
        .collect();
    report.computers = list.len() as u64;
    report.details = list.iter().filter(|c| c.details.is_some()).count() as u64;
    let mut changes = send_computers(client, store, &url, config.max_computers, &list)?;
    let again: Vec<String> = changes
        .iter()
        .filter(|(_, c)| *c == ComputerChange::NewParent)
        .map(|(id, _)| id.clone())
        .collect();
    if !again.is_empty() {
        store.rollup_details_sent(&url, &again, false)?;
        let resend: Vec<ComputerRollup> = computers
            .iter()
            .filter(|c| again.contains(&c.computer_id))
            .map(|c| computer_rollup(c, me.server_id, true))
            .collect();
        report.details += resend.len() as u64;
        changes.extend(
            send_computers(client, store, &url, config.max_computers, &resend)?
                .into_iter()
                .filter(|(_, c)| *c == ComputerChange::Deleted),
        );
    }
    let forget: Vec<String> = changes
        .iter()
        .filter(|(_, c)| *c == ComputerChange::Deleted)
        .map(|(id, _)| id.clone())
        .collect();
    report.forgotten = forget.len() as u64;
    store.rollup_forget(&url, &forget)?;
    // 4. out of sync
    let numbers: Vec<(String, i32)> = computers
        .iter()
        .filter(|c| c.rollup_number > 0 && !forget.contains(&c.computer_id))
        .map(|c| (c.computer_id.clone(), c.rollup_number))
        .collect();
    for chunk in numbers.chunks(config.max_out_of_sync.max(1) as usize) {
        let stale = client.rollup_call(
            Operation::GetOutOfSyncComputers,
            |w| msg::get_out_of_sync_computers_request(w, me.server_id, chunk),
            msg::read_out_of_sync_result,
        )?;
        store.rollup_mark_full(&url, &stale)?;
    }
    // 5. status
    let mut batch: Vec<(msg::ComputerStatusRollup, Option<String>)> = Vec::new();
    for c in store.rollup_local_computers(&url)? {
        let full = c.status_rolled_up.is_none();
        let rows = store.rollup_status(&c.computer_id, c.status_rolled_up.as_deref())?;
        if !full && rows.is_empty() {
            continue;
        }
        let newest = rows.iter().map(|r| r.changed.clone()).max();
        batch.push((
            msg::ComputerStatusRollup {
                instance_id: Uuid::new_v4(),
                computer_id: c.computer_id.clone(),
                effective_last_detection: newest.as_deref().and_then(|n| unix(Some(n))),
                rollup_number: c.rollup_number.saturating_add(1),
                full,
                statuses: rows
                    .iter()
                    .filter_map(|r| {
                        Some(msg::UpdateStatusRollup {
                            update_id: Uuid::parse_str(&r.update_id).ok()?,
                            state: summarization(r.state),
                            last_change: unix(Some(&r.changed)),
                        })
                    })
                    .collect(),
            },
            newest,
        ));
    }
    for chunk in batch.chunks(config.max_status.max(1) as usize) {
        let infos: Vec<msg::ComputerStatusRollup> = chunk.iter().map(|(i, _)| i.clone()).collect();
        let accepted = client.rollup_call(
            Operation::RollupComputerStatus,
            |w| msg::rollup_computer_status_request(w, now(), me.server_id, &infos),
            msg::read_rollup_computer_status_result,
        )?;
        if !accepted {
            report.busy = true;
            break;
        }
        for (info, newest) in chunk {
            store.rollup_status_sent(
                &url,
                &info.computer_id,
                info.rollup_number,
                newest.as_deref(),
            )?;
            report.status_computers += 1;
            report.status_full += u64::from(info.full);
            report.status_rows += info.statuses.len() as u64;
        }
    }
    Ok(report)
}
