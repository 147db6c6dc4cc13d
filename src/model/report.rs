//! A site's report: what a server tells the server above it about itself
//! (docs/bundle-format.md, "Report bundles", `report.json`): its identity,
//! the bundles it applied, the content it holds, its groups, reportable
//! updates and approvals, its computers with their per-update status, and
//! recent events. Carried across the gap in a report bundle
//! (`airgap::report`); applied at the upper server by `store::sites`,
//! whichever way it came.
//!
//! Every rule a report must follow to be applied is one function here
//! (`validate`), failing with `[malformed-report]`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first report to a destination carries at most this many events per
/// computer (the most recent ones).
pub const FIRST_REPORT_EVENTS: usize = 100;
/// A later report carries the events received since the previous report
/// to the same destination, at most this many per computer (the most
/// recent; `serve --client-events-kept`'s default).
pub const REPORT_EVENTS: usize = 2000;
/// The upper server keeps at most this many events per computer of a site.
pub const SITE_EVENTS_KEPT: usize = 2000;

/// What a report carries, in the report bundle's manifest (`report`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportCounts {
    pub computers: u64,
    pub status: u64,
    pub events: u64,
    pub imports: u64,
    pub content_held: u64,
    pub content_missing: u64,
    pub content_corrupt: u64,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteReport {
    /// The site's server id (GUID, lower case).
    pub server_id: String,
    /// The site's server name (`init --name`): the site's name upstream.
    pub name: String,
    /// When the site read its state (RFC 3339, UTC).
    pub created: String,
    /// The site's journal anchor when it read its state.
    pub anchor: String,
    /// The site's import ledger: every bundle it applied.
    pub imports: Vec<ImportedLink>,
    pub receipt: Receipt,
    /// Every group of the site (built-in ones included).
    pub groups: Vec<GroupRow>,
    /// The site's reportable updates (software and driver updates not
    /// declined), with their titles.
    pub updates: Vec<UpdateRow>,
    /// The site's live install approvals of those updates.
    pub approvals: Vec<ApprovalRow>,
    pub computers: Vec<ComputerRow>,
    /// Per computer and update, the stored status (no row: unknown).
    pub status: Vec<StatusRow>,
    /// Events, per computer in arrival order.
    pub events: Vec<EventRow>,
}

/// One bundle the site applied (a row of its `imports list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedLink {
    pub source_server_id: String,
    pub seq: u64,
    pub bundle_id: String,
    pub manifest_sha256: String,
    pub full: bool,
    pub from_anchor: Option<String>,
    pub to_anchor: String,
    pub imported: String,
}

/// How the site checked the content it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentCheck {
    /// Each file is present with the recorded size.
    Size,
    /// Each file's size, SHA-1 and SHA-256 are recomputed.
    Digest,
}

/// The content receipt: the content files the site's store records, by
/// SHA-1 (40 upper-case hex digits), as the check found them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub check: ContentCheck,
    pub held: Vec<String>,
    pub missing: Vec<String>,
    pub corrupt: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRow {
    pub update_id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRow {
    pub update_id: String,
    pub group_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputerRow {
    pub computer_id: String,
    pub name: String,
    pub group_id: String,
    pub os_description: Option<String>,
    pub arch: Option<String>,
    pub last_sync: Option<String>,
    pub last_report: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRow {
    pub computer_id: String,
    pub update_id: String,
    /// `installed`, `needed`, `downloaded`, `failed` or `not_applicable`.
    pub state: String,
    pub changed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRow {
    pub computer_id: String,
    pub instance_id: String,
    /// The site's arrival order of the computer's events.
    pub arrival: i64,
    pub time_at_target: String,
    pub namespace_id: i64,
    pub event_id: i64,
    pub source_id: i64,
    pub update_id: Option<String>,
    pub revision: Option<i64>,
    pub hresult: i64,
    pub app_name: Option<String>,
    pub replacement: Vec<String>,
    pub misc: Vec<String>,
    pub received: String,
}

/// The states a status row may have.
pub const STATES: [&str; 5] = [
    "installed",
    "needed",
    "downloaded",
    "failed",
    "not_applicable",
];

impl SiteReport {
    /// The counts the manifest carries.
    pub fn counts(&self) -> ReportCounts {
        ReportCounts {
            computers: self.computers.len() as u64,
            status: self.status.len() as u64,
            events: self.events.len() as u64,
            imports: self.imports.len() as u64,
            content_held: self.receipt.held.len() as u64,
            content_missing: self.receipt.missing.len() as u64,
            content_corrupt: self.receipt.corrupt.len() as u64,
        }
    }

    /// Every rule below, in order.
    pub fn validate(&self) -> Result<()> {
        rule_identity(self)?;
        let groups = rule_groups(&self.groups)?;
        let updates = rule_unique(
            "updates",
            self.updates.iter().map(|u| u.update_id.as_str()),
            true,
        )?;
        for a in &self.approvals {
            rule_member("approvals", "update", &a.update_id, &updates)?;
            rule_member("approvals", "group", &a.group_id, &groups)?;
        }
        let computers = rule_unique(
            "computers",
            self.computers.iter().map(|c| c.computer_id.as_str()),
            true,
        )?;
        for c in &self.computers {
            rule_member("computers", "group", &c.group_id, &groups)?;
            rule_text("computers", &c.name)?;
        }
        let mut pairs = BTreeSet::new();
        for s in &self.status {
            rule_member("status", "computer", &s.computer_id, &computers)?;
            rule_guid("status", &s.update_id)?;
            if !STATES.contains(&s.state.as_str()) {
                return Err(bad(format!(
                    "status: state {:?} is none of {}",
                    s.state,
                    STATES.join(", ")
                )));
            }
            if !pairs.insert((s.computer_id.as_str(), s.update_id.as_str())) {
                return Err(bad(format!(
                    "status: computer {} and update {} listed twice",
                    s.computer_id, s.update_id
                )));
            }
        }
        let mut events = BTreeSet::new();
        for e in &self.events {
            rule_member("events", "computer", &e.computer_id, &computers)?;
            if !events.insert((e.computer_id.as_str(), e.instance_id.as_str())) {
                return Err(bad(format!(
                    "events: event {} of computer {} listed twice",
                    e.instance_id, e.computer_id
                )));
            }
        }
        rule_receipt(&self.receipt)?;
        Ok(())
    }
}

fn bad(detail: String) -> Error {
    Error::verification("malformed-report", format!("report.json: {detail}"))
}

/// True for a lower-case, hyphenated GUID.
fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.to_string() == s)
}

/// Rule: an id is a lower-case hyphenated GUID.
fn rule_guid(list: &str, id: &str) -> Result<()> {
    if !is_guid(id) {
        return Err(bad(format!("{list}: {id:?} is not a lower-case GUID")));
    }
    Ok(())
}

/// Rule: a name is 1-256 characters, none of them a control character.
fn rule_text(list: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(bad(format!(
            "{list}: name {name:?} must be 1-256 printable characters"
        )));
    }
    Ok(())
}

/// Rule: the site names itself with a GUID server id and a name.
fn rule_identity(r: &SiteReport) -> Result<()> {
    rule_guid("server_id", &r.server_id)?;
    rule_text("name", &r.name)
}

/// Rule: the ids of a list are GUIDs (when `guids`), each listed once.
fn rule_unique<'a>(
    list: &str,
    ids: impl Iterator<Item = &'a str>,
    guids: bool,
) -> Result<BTreeSet<&'a str>> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if guids {
            rule_guid(list, id)?;
        }
        if !seen.insert(id) {
            return Err(bad(format!("{list}: {id} listed twice")));
        }
    }
    Ok(seen)
}

/// Rule: a reference names a row of the report.
fn rule_member(list: &str, what: &str, id: &str, known: &BTreeSet<&str>) -> Result<()> {
    if !known.contains(id) {
        return Err(bad(format!("{list}: {what} {id} is not in the report")));
    }
    Ok(())
}

/// Rule: groups are unique GUIDs whose parents are groups of the report,
/// with no cycle.
fn rule_groups(groups: &[GroupRow]) -> Result<BTreeSet<&str>> {
    let ids = rule_unique("groups", groups.iter().map(|g| g.id.as_str()), true)?;
    let parent: std::collections::BTreeMap<&str, Option<&str>> = groups
        .iter()
        .map(|g| (g.id.as_str(), g.parent_id.as_deref()))
        .collect();
    for g in groups {
        rule_text("groups", &g.name)?;
        if let Some(p) = &g.parent_id {
            rule_member("groups", "parent", p, &ids)?;
        }
        let mut at = g.parent_id.as_deref();
        let mut steps = 0;
        while let Some(p) = at {
            steps += 1;
            if p == g.id || steps > groups.len() {
                return Err(bad(format!("groups: {} is its own ancestor", g.id)));
            }
            at = parent.get(p).copied().flatten();
        }
    }
    Ok(ids)
}

/// Rule: the receipt names content files by SHA-1 (40 upper-case hex
/// digits), each in one list at most once.
fn rule_receipt(r: &Receipt) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (list, sha1) in r
        .held
        .iter()
        .map(|s| ("held", s))
        .chain(r.missing.iter().map(|s| ("missing", s)))
        .chain(r.corrupt.iter().map(|s| ("corrupt", s)))
    {
        let ok = sha1.len() == 40
            && sha1
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if !ok {
            return Err(bad(format!(
                "receipt.{list}: {sha1:?} is not 40 upper-case hex digits"
            )));
        }
        if !seen.insert(sha1.as_str()) {
            return Err(bad(format!("receipt: {sha1} listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SiteReport {
        let g = "a0a08746-4dbe-4a37-9adf-9e7652c0b421".to_string();
        let c = "5eed0000-0000-4000-8000-000000000001".to_string();
        let u = "17aa26f5-1759-4683-9e07-67ff09056abc".to_string();
        SiteReport {
            server_id: "b211dd2e-2237-4644-b86b-17c5c67fe2c8".into(),
            name: "plant".into(),
            created: "2026-12-01T00:00:00Z".into(),
            anchor: "gapsync1:b211dd2e22374644b86b17c5c67fe2c8:1".into(),
            imports: vec![],
            receipt: Receipt {
                check: ContentCheck::Size,
                held: vec!["50A9BFD477F02A63F569661DA8EABF72B0798707".into()],
                missing: vec![],
                corrupt: vec![],
            },
            groups: vec![GroupRow {
                id: g.clone(),
                name: "All Computers".into(),
                parent_id: None,
            }],
            updates: vec![UpdateRow {
                update_id: u.clone(),
                title: "t".into(),
            }],
            approvals: vec![ApprovalRow {
                update_id: u.clone(),
                group_id: g.clone(),
            }],
            computers: vec![ComputerRow {
                computer_id: c.clone(),
                name: "pc1".into(),
                group_id: g,
                os_description: None,
                arch: None,
                last_sync: None,
                last_report: None,
            }],
            status: vec![StatusRow {
                computer_id: c,
                update_id: u,
                state: "installed".into(),
                changed: "2026-12-01T00:00:00Z".into(),
            }],
            events: vec![],
        }
    }

    fn rule_of(r: &SiteReport) -> String {
        match r.validate() {
            Err(Error::Verification { rule, .. }) => rule.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_report_passes_and_each_rule_refuses() {
        report().validate().unwrap();
        let mut r = report();
        r.status[0].state = "sideways".into();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.status[0].computer_id = "5eed0000-0000-4000-8000-000000000009".into();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.computers[0].group_id = "b73ca6ed-5727-47f3-84de-015e03f6a88a".into();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.receipt.missing = r.receipt.held.clone();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.receipt.held[0] = r.receipt.held[0].to_ascii_lowercase();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.groups[0].parent_id = Some(r.groups[0].id.clone());
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.server_id = r.server_id.to_ascii_uppercase();
        assert_eq!(rule_of(&r), "malformed-report");
        let mut r = report();
        r.status.push(r.status[0].clone());
        assert_eq!(rule_of(&r), "malformed-report");
    }
}
