//! The MS-WSUSSS reporting web service (3.1.4.13-3.1.4.17): the messages a
//! downstream server (DSS) sends to roll its computers and their update
//! status up to its upstream (USS), written and read once for both sides.
//!
//! The five operations live at `/ReportingWebService/ReportingWebService.asmx`
//! in the `http://www.microsoft.com/SoftwareDistribution` namespace (the
//! path the MS-WUSP reporting service also uses; the routing table tells
//! them apart by request element). Their `cookie` is reserved: the DSS
//! sends the fixed one of 3.2.4.5 and the USS ignores it.
//!
//! Times travel as `xsd:dateTime`; "never" is 1753-01-01T00:00:00 on the
//! wire and `None` here. Computer fields travel as XML attributes
//! (`ComputerRollupInfo`, `ComputerRollupDetails`, `ChangedComputer`).

use uuid::Uuid;

use crate::soap::xml::{Element, XmlWriter};
use crate::soap::xsd;

pub const REPORTING_PATH: &str = "/ReportingWebService/ReportingWebService.asmx";
/// The wire form of "never" (3.1.4.14.3.2 and the others).
pub const NEVER: &str = "1753-01-01T00:00:00";
const NO_EXPIRY: &str = "9999-12-31T23:59:59.9999999";

/// Why a rollup message could not be read: the element or attribute and
/// what is wrong with it (the USS answers it as InvalidParameters naming
/// the field; the DSS reports it as a malformed answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: String,
    pub why: String,
}

impl BadField {
    fn new(field: &str, why: impl Into<String>) -> BadField {
        BadField {
            field: field.to_string(),
            why: why.into(),
        }
    }
}

type Read<T> = std::result::Result<T, BadField>;

// ---------------------------------------------------------------------------
// Field readers: one rule each
// ---------------------------------------------------------------------------

/// Rule: a GUID field is present and a GUID (any case, braces allowed as
/// .NET writes them nowhere but accepts).
fn guid(field: &str, s: Option<&str>) -> Read<Uuid> {
    let s = s.ok_or_else(|| BadField::new(field, "is missing"))?;
    Uuid::parse_str(s.trim().trim_start_matches('{').trim_end_matches('}'))
        .map_err(|_| BadField::new(field, format!("{s:?} is not a GUID")))
}

/// Rule: an `xsd:int` field is present and within i32.
fn int(field: &str, s: Option<&str>) -> Read<i32> {
    let s = s.ok_or_else(|| BadField::new(field, "is missing"))?;
    s.trim()
        .parse::<i32>()
        .map_err(|_| BadField::new(field, format!("{s:?} is not an xsd:int")))
}

/// Rule: a count is an `xsd:int` of 0 or more (3.1.4.14.3.3: "MUST be 0 or
/// greater").
fn count(field: &str, s: Option<&str>) -> Read<u32> {
    let v = int(field, s)?;
    u32::try_from(v).map_err(|_| BadField::new(field, format!("{v} is below 0")))
}

/// Rule: an `xsd:boolean` field is present and one of true/false/1/0.
fn boolean(field: &str, s: Option<&str>) -> Read<bool> {
    let s = s.ok_or_else(|| BadField::new(field, "is missing"))?;
    xsd::parse_bool(s.trim())
        .ok_or_else(|| BadField::new(field, format!("{s:?} is not an xsd:boolean")))
}

/// Rule: an `xsd:dateTime` field is present and valid; 1753-01-01 (and
/// anything before 1900) means never.
fn time(field: &str, s: Option<&str>) -> Read<Option<i64>> {
    let s = s.ok_or_else(|| BadField::new(field, "is missing"))?;
    let t = xsd::parse_datetime(s.trim())
        .ok_or_else(|| BadField::new(field, format!("{s:?} is not an xsd:dateTime")))?;
    Ok((t.year() >= 1900).then(|| t.unix_timestamp()))
}

/// Rule: a string field the spec bounds (ComputerMake: 64 characters, ...)
/// holds at most `max` characters; absent is empty.
fn bounded(field: &str, s: Option<&str>, max: usize) -> Read<String> {
    let s = s.unwrap_or_default();
    if s.chars().count() > max {
        return Err(BadField::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(s.to_string())
}

fn write_time(t: Option<i64>) -> String {
    t.map(xsd::format_unix).unwrap_or_else(|| NEVER.to_string())
}

/// The reserved cookie every rollup request carries (3.2.4.5).
fn reserved_cookie(w: &mut XmlWriter) {
    w.start("cookie")
        .elem("Expiration", NO_EXPIRY)
        .empty("EncryptedData")
        .end("cookie");
}

/// Rule: a list field holds at most `max` items (the batch sizes the USS
/// announced in GetRollupConfiguration; 3.1.4.14-3.1.4.17 request
/// validation).
fn at_most(field: &str, n: usize, max: u32) -> Read<()> {
    if n > max as usize {
        return Err(BadField::new(
            field,
            format!("holds {n} items, more than the batch size {max}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// GetRollupConfiguration
// ---------------------------------------------------------------------------

/// The USS's rollup settings (3.1.4.13.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupConfiguration {
    pub do_detailed_rollup: bool,
    /// Changes when the USS forgets what was rolled up: the DSS then sends
    /// everything again.
    pub rollup_reset_guid: Uuid,
    pub server_id: Uuid,
    pub max_servers: u32,
    pub max_computers: u32,
    pub max_out_of_sync: u32,
    pub max_status: u32,
}

pub fn get_rollup_configuration_request(w: &mut XmlWriter) {
    reserved_cookie(w);
}

pub fn write_rollup_configuration(w: &mut XmlWriter, c: &RollupConfiguration) {
    w.start("GetRollupConfigurationResult")
        .bool_elem("DoDetailedRollup", c.do_detailed_rollup)
        .elem("RollupResetGuid", &c.rollup_reset_guid.to_string())
        .elem("ServerId", &c.server_id.to_string())
        .elem(
            "RollupDownstreamServersMaxBatchSize",
            &c.max_servers.to_string(),
        )
        .elem("RollupComputersMaxBatchSize", &c.max_computers.to_string())
        .elem(
            "GetOutOfSyncComputersMaxBatchSize",
            &c.max_out_of_sync.to_string(),
        )
        .elem(
            "RollupComputerStatusMaxBatchSize",
            &c.max_status.to_string(),
        )
        .end("GetRollupConfigurationResult");
}

/// Reads a GetRollupConfigurationResponse element.
pub fn read_rollup_configuration(response: &Element) -> Read<RollupConfiguration> {
    let r = response
        .child("GetRollupConfigurationResult")
        .ok_or_else(|| BadField::new("GetRollupConfigurationResult", "is missing"))?;
    // Rule: every batch size is greater than zero (3.1.4.13.3.1).
    let batch = |f: &str| -> Read<u32> {
        let v = count(f, r.child_text(f))?;
        if v == 0 {
            return Err(BadField::new(f, "is 0; it must be greater than zero"));
        }
        Ok(v)
    };
    Ok(RollupConfiguration {
        do_detailed_rollup: boolean("DoDetailedRollup", r.child_text("DoDetailedRollup"))?,
        rollup_reset_guid: guid("RollupResetGuid", r.child_text("RollupResetGuid"))?,
        server_id: guid("ServerId", r.child_text("ServerId"))?,
        max_servers: batch("RollupDownstreamServersMaxBatchSize")?,
        max_computers: batch("RollupComputersMaxBatchSize")?,
        max_out_of_sync: batch("GetOutOfSyncComputersMaxBatchSize")?,
        max_status: batch("RollupComputerStatusMaxBatchSize")?,
    })
}

// ---------------------------------------------------------------------------
// RollupDownstreamServers
// ---------------------------------------------------------------------------

/// The 18 counts of DownstreamServerRollupServerSummary, in wire order
/// (3.1.4.14.3.3).
pub const SUMMARY_FIELDS: [&str; 18] = [
    "UpdateCount",
    "DeclinedUpdateCount",
    "ApprovedUpdateCount",
    "NotApprovedUpdateCount",
    "UpdatesWithStaleUpdateApprovalsCount",
    "ExpiredUpdateCount",
    "CriticalOrSecurityUpdatesNotApprovedForInstallCount",
    "WsusInfrastructureUpdatesNotApprovedForInstallCount",
    "UpdatesWithClientErrorsCount",
    "UpdatesWithServerErrorsCount",
    "UpdatesNeedingFilesCount",
    "UpdatesNeededByComputersCount",
    "UpdatesUpToDateCount",
    "CustomComputerTargetGroupCount",
    "ComputerTargetCount",
    "ComputerTargetsNeedingUpdatesCount",
    "ComputerTargetsWithUpdateErrorsCount",
    "ComputersUpToDateCount",
];

/// One update server as a DSS reports it (3.1.4.14.3.2). Client summaries
/// (per OS version and update: install counts since the last rollup) are
/// not kept by gapsync: a DSS sends none, and a USS reads and drops them
/// (it keeps per-computer status through RollupComputerStatus instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRollup {
    pub server_id: Uuid,
    pub full_domain_name: String,
    pub last_sync: Option<i64>,
    /// `None`: the USS receiving the request (the nil GUID on the wire).
    pub parent_server_id: Option<Uuid>,
    pub version: String,
    pub is_replica: bool,
    pub last_rollup: Option<i64>,
    /// [`SUMMARY_FIELDS`] in order.
    pub summary: [u32; 18],
}

pub fn rollup_downstream_servers_request(w: &mut XmlWriter, now: i64, servers: &[ServerRollup]) {
    reserved_cookie(w);
    w.elem("clientTime", &xsd::format_unix(now));
    w.list("downstreamServers", servers, |w, s| {
        w.start("DownstreamServerRollupInfo")
            .elem("ServerId", &s.server_id.to_string())
            .elem("FullDomainName", &s.full_domain_name)
            .elem("LastSyncTime", &write_time(s.last_sync))
            .elem(
                "ParentServerId",
                &s.parent_server_id.unwrap_or(Uuid::nil()).to_string(),
            )
            .elem("Version", &s.version)
            .bool_elem("IsReplica", s.is_replica)
            .elem("LastRollupTime", &write_time(s.last_rollup))
            .start("ServerSummary");
        for (name, v) in SUMMARY_FIELDS.iter().zip(s.summary) {
            w.elem(name, &v.to_string());
        }
        w.end("ServerSummary")
            .empty("ClientSummaries")
            .end("DownstreamServerRollupInfo");
    });
}

/// Reads a RollupDownstreamServers request: the servers, in order.
pub fn read_rollup_downstream_servers(request: &Element, max: u32) -> Read<Vec<ServerRollup>> {
    let list = request
        .child("downstreamServers")
        .ok_or_else(|| BadField::new("downstreamServers", "is missing"))?;
    let items: Vec<&Element> = list
        .children_named("DownstreamServerRollupInfo")
        .filter(|e| !e.is_nil())
        .collect();
    // The batch size counts client summaries (3.1.4.14); gapsync's DSS
    // sends none, so it bounds the servers as well.
    let summaries: usize = items
        .iter()
        .map(|i| {
            i.child("ClientSummaries").map_or(0, |c| {
                c.children_named("DownstreamServerRollupClientSummary")
                    .count()
            })
        })
        .sum();
    at_most("downstreamServers", items.len().max(summaries), max)?;
    items
        .into_iter()
        .map(|i| {
            let version = bounded("Version", i.child_text("Version"), 32)?;
            let parent = guid("ParentServerId", i.child_text("ParentServerId"))?;
            let mut summary = [0u32; 18];
            if let Some(s) = i.child("ServerSummary").filter(|s| !s.is_nil()) {
                for (slot, name) in summary.iter_mut().zip(SUMMARY_FIELDS) {
                    *slot = count(name, s.child_text(name))?;
                }
            }
            Ok(ServerRollup {
                server_id: guid("ServerId", i.child_text("ServerId"))?,
                full_domain_name: bounded("FullDomainName", i.child_text("FullDomainName"), 255)?,
                last_sync: time("LastSyncTime", i.child_text("LastSyncTime"))?,
                parent_server_id: (!parent.is_nil()).then_some(parent),
                version,
                is_replica: boolean("IsReplica", i.child_text("IsReplica"))?,
                last_rollup: time("LastRollupTime", i.child_text("LastRollupTime"))?,
                summary,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// RollupComputers
// ---------------------------------------------------------------------------

/// What a DSS knows about one client computer (3.1.4.15.3.2-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerRollup {
    pub computer_id: String,
    pub last_sync: Option<i64>,
    /// 0 unknown, 1 succeeded, 2 failed.
    pub last_sync_result: i32,
    pub last_reported_status: Option<i64>,
    pub parent_server_id: Uuid,
    pub details: Option<ComputerDetails>,
}

/// The detailed fields gapsync keeps of a computer; the others are written
/// as the spec's defaults and ignored when read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputerDetails {
    pub target_group_ids: Vec<Uuid>,
    pub requested_group_names: Vec<String>,
    pub full_domain_name: String,
    pub os_major: i32,
    pub os_minor: i32,
    pub os_build: i32,
    pub os_description: String,
    pub make: String,
    pub model: String,
    pub processor_architecture: String,
    pub client_version: String,
}

pub fn rollup_computers_request(w: &mut XmlWriter, now: i64, computers: &[ComputerRollup]) {
    reserved_cookie(w);
    w.elem("clientTime", &xsd::format_unix(now));
    w.list("computers", computers, |w, c| {
        let sync = write_time(c.last_sync);
        let status = write_time(c.last_reported_status);
        let result = c.last_sync_result.to_string();
        let parent = c.parent_server_id.to_string();
        let attrs = [
            ("ComputerId", c.computer_id.as_str()),
            ("LastSyncTime", sync.as_str()),
            ("LastSyncResult", result.as_str()),
            ("LastReportedRebootTime", NEVER),
            ("LastReportedStatusTime", status.as_str()),
            ("LastInventoryTime", NEVER),
            ("ParentServerId", parent.as_str()),
        ];
        let Some(d) = &c.details else {
            w.empty_attrs("ComputerRollupInfo", &attrs);
            return;
        };
        w.start_attrs("ComputerRollupInfo", &attrs);
        let (major, minor, build) = (
            d.os_major.to_string(),
            d.os_minor.to_string(),
            d.os_build.to_string(),
        );
        w.start_attrs(
            "Details",
            &[
                ("IPAddress", ""),
                ("FullDomainName", &d.full_domain_name),
                ("OSMajorVersion", &major),
                ("OSMinorVersion", &minor),
                ("OSBuildNumber", &build),
                ("OSServicePackMajorNumber", "0"),
                ("OSServicePackMinorNumber", "0"),
                ("OSLocale", ""),
                ("OSFamily", "Windows"),
                ("OSDescription", &d.os_description),
                ("ComputerMake", &d.make),
                ("ComputerModel", &d.model),
                ("BiosVersion", ""),
                ("BiosName", ""),
                ("BiosReleaseDate", NEVER),
                ("ProcessorArchitecture", &d.processor_architecture),
                ("SuiteMask", "0"),
                ("OldProductType", "0"),
                ("NewProductType", "0"),
                ("SystemMetrics", "0"),
                ("ClientVersion", &d.client_version),
            ],
        );
        w.list("TargetGroupIdList", &d.target_group_ids, |w, g| {
            w.elem("guid", &g.to_string());
        });
        w.list(
            "RequestedTargetGroupNames",
            &d.requested_group_names,
            |w, n| {
                w.elem("string", n);
            },
        );
        w.end("Details").end("ComputerRollupInfo");
    });
}

/// Reads a RollupComputers request.
pub fn read_rollup_computers(request: &Element, max: u32) -> Read<Vec<ComputerRollup>> {
    let list = request
        .child("computers")
        .ok_or_else(|| BadField::new("computers", "is missing"))?;
    let items: Vec<&Element> = list
        .children_named("ComputerRollupInfo")
        .filter(|e| !e.is_nil())
        .collect();
    at_most("computers", items.len(), max)?;
    items
        .into_iter()
        .map(|c| {
            let details = match c.child("Details").filter(|d| !d.is_nil()) {
                None => None,
                Some(d) => Some(ComputerDetails {
                    target_group_ids: d
                        .child("TargetGroupIdList")
                        .map(|l| {
                            l.children_named("guid")
                                .map(|g| guid("TargetGroupIdList", Some(g.text())))
                                .collect::<Read<Vec<_>>>()
                        })
                        .transpose()?
                        .unwrap_or_default(),
                    requested_group_names: d
                        .child("RequestedTargetGroupNames")
                        .map(|l| {
                            l.children_named("string")
                                .map(|s| bounded("RequestedTargetGroupNames", Some(s.text()), 256))
                                .collect::<Read<Vec<_>>>()
                        })
                        .transpose()?
                        .unwrap_or_default(),
                    full_domain_name: bounded("FullDomainName", d.attr("FullDomainName"), 255)?,
                    os_major: int("OSMajorVersion", d.attr("OSMajorVersion"))?,
                    os_minor: int("OSMinorVersion", d.attr("OSMinorVersion"))?,
                    os_build: int("OSBuildNumber", d.attr("OSBuildNumber"))?,
                    os_description: bounded("OSDescription", d.attr("OSDescription"), 256)?,
                    make: bounded("ComputerMake", d.attr("ComputerMake"), 64)?,
                    model: bounded("ComputerModel", d.attr("ComputerModel"), 64)?,
                    processor_architecture: bounded(
                        "ProcessorArchitecture",
                        d.attr("ProcessorArchitecture"),
                        50,
                    )?,
                    client_version: bounded("ClientVersion", d.attr("ClientVersion"), 20)?,
                }),
            };
            Ok(ComputerRollup {
                computer_id: computer_id(c.attr("ComputerId"))?,
                last_sync: time("LastSyncTime", c.attr("LastSyncTime"))?,
                last_sync_result: int("LastSyncResult", c.attr("LastSyncResult"))?,
                last_reported_status: time(
                    "LastReportedStatusTime",
                    c.attr("LastReportedStatusTime"),
                )?,
                parent_server_id: guid("ParentServerId", c.attr("ParentServerId"))?,
                details,
            })
        })
        .collect()
}

/// Rule: a ComputerId is present, 1-256 characters, no control characters
/// (WSUS's are GUIDs; the schema says string).
fn computer_id(s: Option<&str>) -> Read<String> {
    let s = s.map(str::trim).unwrap_or_default();
    if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
        return Err(BadField::new(
            "ComputerId",
            format!("{s:?} is not a computer id"),
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// What the USS asks of the DSS about one computer (3.1.4.15.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputerChange {
    /// Send its details next time.
    NewParent,
    /// Stop sending it.
    Deleted,
}

pub fn write_rollup_computers_result(w: &mut XmlWriter, changes: &[(String, ComputerChange)]) {
    w.list("RollupComputersResult", changes, |w, (id, change)| {
        let c = match change {
            ComputerChange::NewParent => "NewParent",
            ComputerChange::Deleted => "Deleted",
        };
        w.empty_attrs("ChangedComputer", &[("ComputerId", id), ("Change", c)]);
    });
}

/// Reads a RollupComputersResponse element.
pub fn read_rollup_computers_result(response: &Element) -> Read<Vec<(String, ComputerChange)>> {
    let Some(list) = response.child("RollupComputersResult") else {
        return Ok(Vec::new());
    };
    list.children_named("ChangedComputer")
        .filter(|e| !e.is_nil())
        .map(|c| {
            let change = match c.attr("Change").map(str::trim) {
                Some("NewParent") => ComputerChange::NewParent,
                Some("Deleted") => ComputerChange::Deleted,
                other => {
                    return Err(BadField::new(
                        "Change",
                        format!("{other:?} is not NewParent or Deleted"),
                    ));
                }
            };
            Ok((computer_id(c.attr("ComputerId"))?, change))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// GetOutOfSyncComputers
// ---------------------------------------------------------------------------

pub fn get_out_of_sync_computers_request(
    w: &mut XmlWriter,
    parent_server_id: Uuid,
    numbers: &[(String, i32)],
) {
    reserved_cookie(w);
    w.elem("parentServerId", &parent_server_id.to_string());
    w.list("lastRollupNumbers", numbers, |w, (id, n)| {
        w.start("ComputerLastRollupNumber")
            .elem("ComputerId", id)
            .elem("RollupNumber", &n.to_string())
            .end("ComputerLastRollupNumber");
    });
}

/// Reads a GetOutOfSyncComputers request: the calling server and the last
/// rollup number it sent per computer.
pub fn read_get_out_of_sync_computers(
    request: &Element,
    max: u32,
) -> Read<(Uuid, Vec<(String, i32)>)> {
    let parent = guid("parentServerId", request.child_text("parentServerId"))?;
    let list = request
        .child("lastRollupNumbers")
        .ok_or_else(|| BadField::new("lastRollupNumbers", "is missing"))?;
    let items: Vec<&Element> = list
        .children_named("ComputerLastRollupNumber")
        .filter(|e| !e.is_nil())
        .collect();
    at_most("lastRollupNumbers", items.len(), max)?;
    let numbers = items
        .into_iter()
        .map(|c| {
            Ok((
                computer_id(c.child_text("ComputerId"))?,
                int("RollupNumber", c.child_text("RollupNumber"))?,
            ))
        })
        .collect::<Read<Vec<_>>>()?;
    Ok((parent, numbers))
}

pub fn write_out_of_sync_result(w: &mut XmlWriter, ids: &[String]) {
    w.list("GetOutOfSyncComputersResult", ids, |w, id| {
        w.elem("string", id);
    });
}

pub fn read_out_of_sync_result(response: &Element) -> Read<Vec<String>> {
    let Some(list) = response.child("GetOutOfSyncComputersResult") else {
        return Ok(Vec::new());
    };
    list.children_named("string")
        .map(|s| computer_id(Some(s.text())))
        .collect()
}

// ---------------------------------------------------------------------------
// RollupComputerStatus
// ---------------------------------------------------------------------------

/// SummarizationState (3.1.4.17.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summarization {
    NotApplicable = 0,
    NotInstalled = 2,
    Downloaded = 3,
    Installed = 4,
    Failed = 5,
    InstalledPendingReboot = 6,
}

impl Summarization {
    /// Rule: SummarizationState is one of 0, 2, 3, 4, 5, 6.
    fn read(s: Option<&str>) -> Read<Summarization> {
        Ok(match int("SummarizationState", s)? {
            0 => Summarization::NotApplicable,
            2 => Summarization::NotInstalled,
            3 => Summarization::Downloaded,
            4 => Summarization::Installed,
            5 => Summarization::Failed,
            6 => Summarization::InstalledPendingReboot,
            v => {
                return Err(BadField::new(
                    "SummarizationState",
                    format!("{v} is not 0, 2, 3, 4, 5 or 6"),
                ));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatusRollup {
    pub update_id: Uuid,
    pub state: Summarization,
    pub last_change: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerStatusRollup {
    pub instance_id: Uuid,
    pub computer_id: String,
    pub effective_last_detection: Option<i64>,
    pub rollup_number: i32,
    pub full: bool,
    pub statuses: Vec<UpdateStatusRollup>,
}

pub fn rollup_computer_status_request(
    w: &mut XmlWriter,
    now: i64,
    parent_server_id: Uuid,
    computers: &[ComputerStatusRollup],
) {
    reserved_cookie(w);
    w.elem("clientTime", &xsd::format_unix(now))
        .elem("parentServerId", &parent_server_id.to_string());
    w.list("computers", computers, |w, c| {
        w.start("ComputerStatusRollupInfo")
            .elem("InstanceId", &c.instance_id.to_string())
            .elem("ComputerId", &c.computer_id)
            .elem(
                "EffectiveLastDetectionTime",
                &write_time(c.effective_last_detection),
            )
            .elem("RollupNumber", &c.rollup_number.to_string())
            .bool_elem("IsFullRollup", c.full);
        w.list("UpdateStatus", &c.statuses, |w, s| {
            w.start("ComputerStatusRollupUpdateStatus")
                .elem("UpdateId", &s.update_id.to_string())
                .elem("SummarizationState", &(s.state as i32).to_string())
                .elem("LastChangeTime", &write_time(s.last_change))
                .end("ComputerStatusRollupUpdateStatus");
        });
        w.end("ComputerStatusRollupInfo");
    });
}

/// Reads a RollupComputerStatus request: the calling server and the
/// computers' status.
pub fn read_rollup_computer_status(
    request: &Element,
    max: u32,
) -> Read<(Uuid, Vec<ComputerStatusRollup>)> {
    let parent = guid("parentServerId", request.child_text("parentServerId"))?;
    let list = request
        .child("computers")
        .ok_or_else(|| BadField::new("computers", "is missing"))?;
    let items: Vec<&Element> = list
        .children_named("ComputerStatusRollupInfo")
        .filter(|e| !e.is_nil())
        .collect();
    at_most("computers", items.len(), max)?;
    let computers = items
        .into_iter()
        .map(|c| {
            let rollup_number = int("RollupNumber", c.child_text("RollupNumber"))?;
            // Rule: RollupNumber is 1 or greater (3.1.4.17.3.2).
            if rollup_number < 1 {
                return Err(BadField::new(
                    "RollupNumber",
                    format!("{rollup_number} is below 1"),
                ));
            }
            let statuses = match c.child("UpdateStatus") {
                None => Vec::new(),
                Some(l) => l
                    .children_named("ComputerStatusRollupUpdateStatus")
                    .filter(|e| !e.is_nil())
                    .map(|s| {
                        Ok(UpdateStatusRollup {
                            update_id: guid("UpdateId", s.child_text("UpdateId"))?,
                            state: Summarization::read(s.child_text("SummarizationState"))?,
                            last_change: time("LastChangeTime", s.child_text("LastChangeTime"))?,
                        })
                    })
                    .collect::<Read<Vec<_>>>()?,
            };
            Ok(ComputerStatusRollup {
                instance_id: guid("InstanceId", c.child_text("InstanceId"))?,
                computer_id: computer_id(c.child_text("ComputerId"))?,
                effective_last_detection: time(
                    "EffectiveLastDetectionTime",
                    c.child_text("EffectiveLastDetectionTime"),
                )?,
                rollup_number,
                full: boolean("IsFullRollup", c.child_text("IsFullRollup"))?,
                statuses,
            })
        })
        .collect::<Read<Vec<_>>>()?;
    Ok((parent, computers))
}

pub fn write_rollup_computer_status_result(w: &mut XmlWriter, accepted: bool) {
    w.bool_elem("RollupComputerStatusResult", accepted);
}

pub fn read_rollup_computer_status_result(response: &Element) -> Read<bool> {
    boolean(
        "RollupComputerStatusResult",
        response.child_text("RollupComputerStatusResult"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{Limits, parse_str};

    /// Writes a request element (as the DSS does) and reads it back as the
    /// USS does.
    fn element(op: &str, inner: impl FnOnce(&mut XmlWriter)) -> Element {
        let mut w = XmlWriter::new();
        w.start_ns(op, super::super::SSS_NS);
        inner(&mut w);
        w.end(op);
        parse_str(w.as_str(), &Limits::REQUEST).unwrap()
    }

    fn server(i: u8) -> ServerRollup {
        let mut summary = [0u32; 18];
        for (k, v) in summary.iter_mut().enumerate() {
            *v = (k as u32) * u32::from(i);
        }
        ServerRollup {
            server_id: Uuid::from_bytes([i; 16]),
            full_domain_name: format!("site-{i}.example"),
            last_sync: Some(1_700_000_000 + i64::from(i)),
            parent_server_id: None,
            version: "0.1.0".into(),
            is_replica: i.is_multiple_of(2),
            last_rollup: None,
            summary,
        }
    }

    #[test]
    fn every_message_reads_back_as_written() {
        let config = RollupConfiguration {
            do_detailed_rollup: true,
            rollup_reset_guid: Uuid::from_bytes([7; 16]),
            server_id: Uuid::from_bytes([9; 16]),
            max_servers: 100,
            max_computers: 200,
            max_out_of_sync: 300,
            max_status: 40,
        };
        let e = element("GetRollupConfigurationResponse", |w| {
            write_rollup_configuration(w, &config)
        });
        assert_eq!(read_rollup_configuration(&e).unwrap(), config);

        let servers = vec![server(1), server(2)];
        let e = element("RollupDownstreamServers", |w| {
            rollup_downstream_servers_request(w, 1_700_000_000, &servers)
        });
        assert_eq!(read_rollup_downstream_servers(&e, 10).unwrap(), servers);

        let computers = vec![
            ComputerRollup {
                computer_id: "d07a4d51-7cb2-46d1-ad86-91195cb4325a".into(),
                last_sync: Some(1_700_000_100),
                last_sync_result: 1,
                last_reported_status: None,
                parent_server_id: Uuid::from_bytes([1; 16]),
                details: Some(ComputerDetails {
                    target_group_ids: vec![Uuid::from_bytes([3; 16])],
                    requested_group_names: vec!["Pilot & <Ring 1>".into()],
                    full_domain_name: "pc-1.plant.example".into(),
                    os_major: 10,
                    os_minor: 0,
                    os_build: 26100,
                    os_description: "Windows 11 \"Enterprise\"".into(),
                    make: "Contoso".into(),
                    model: "M1".into(),
                    processor_architecture: "AMD64".into(),
                    client_version: "10.0.26100.1".into(),
                }),
            },
            ComputerRollup {
                computer_id: "a2".into(),
                last_sync: None,
                last_sync_result: 0,
                last_reported_status: Some(1_700_000_200),
                parent_server_id: Uuid::from_bytes([1; 16]),
                details: None,
            },
        ];
        let e = element("RollupComputers", |w| {
            rollup_computers_request(w, 0, &computers)
        });
        assert_eq!(read_rollup_computers(&e, 2).unwrap(), computers);
        let changes = vec![
            ("a1".to_string(), ComputerChange::NewParent),
            ("a2".to_string(), ComputerChange::Deleted),
        ];
        let e = element("RollupComputersResponse", |w| {
            write_rollup_computers_result(w, &changes)
        });
        assert_eq!(read_rollup_computers_result(&e).unwrap(), changes);

        let numbers = vec![("a1".to_string(), 3), ("a2".to_string(), 1)];
        let parent = Uuid::from_bytes([5; 16]);
        let e = element("GetOutOfSyncComputers", |w| {
            get_out_of_sync_computers_request(w, parent, &numbers)
        });
        assert_eq!(
            read_get_out_of_sync_computers(&e, 2).unwrap(),
            (parent, numbers)
        );
        let ids = vec!["a2".to_string()];
        let e = element("GetOutOfSyncComputersResponse", |w| {
            write_out_of_sync_result(w, &ids)
        });
        assert_eq!(read_out_of_sync_result(&e).unwrap(), ids);

        let status = vec![ComputerStatusRollup {
            instance_id: Uuid::from_bytes([8; 16]),
            computer_id: "a1".into(),
            effective_last_detection: Some(1_700_000_300),
            rollup_number: 3,
            full: true,
            statuses: vec![
                UpdateStatusRollup {
                    update_id: Uuid::from_bytes([10; 16]),
                    state: Summarization::Installed,
                    last_change: Some(1_700_000_301),
                },
                UpdateStatusRollup {
                    update_id: Uuid::from_bytes([11; 16]),
                    state: Summarization::Failed,
                    last_change: None,
                },
            ],
        }];
        let e = element("RollupComputerStatus", |w| {
            rollup_computer_status_request(w, 0, parent, &status)
        });
        assert_eq!(
            read_rollup_computer_status(&e, 1).unwrap(),
            (parent, status)
        );
        for accepted in [true, false] {
            let e = element("RollupComputerStatusResponse", |w| {
                write_rollup_computer_status_result(w, accepted)
            });
            assert_eq!(read_rollup_computer_status_result(&e).unwrap(), accepted);
        }
    }

    #[test]
    fn reads_the_shape_windows_wsus_sends() {
        // The shape of MS-WSUSSS 4's RollupComputers example: fields as
        // attributes, "never" as 0001-01-01, namespaced attributes and
        // unknown ones ignored.
        let e = parse_str(
            r#"<RollupComputers xmlns="http://www.microsoft.com/SoftwareDistribution" xmlns:x="urn:x">
            <cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData /></cookie>
            <clientTime>2007-03-06T03:28:02.9726004Z</clientTime>
            <computers><ComputerRollupInfo ComputerId="D07A4D51-7cb2-46d1-ad86-91195cb4325a"
              LastSyncTime="2007-03-06T03:22:28.137Z" LastSyncResult="1"
              LastReportedRebootTime="0001-01-01T00:00:00" LastReportedStatusTime="0001-01-01T00:00:00"
              LastInventoryTime="0001-01-01T00:00:00" ParentServerId="050cee4a-aaff-470c-8fc3-7a94cb3a4293" x:extra="1">
              <Details IPAddress="127.0.0.1" FullDomainName="pc.example" OSMajorVersion="5" OSMinorVersion="2"
                OSBuildNumber="3790" OSServicePackMajorNumber="1" OSServicePackMinorNumber="0" OSLocale="en-US"
                ComputerMake="Make" ComputerModel="Model" BiosVersion="1" BiosName="B" BiosReleaseDate="2005-01-01T00:00:00"
                ProcessorArchitecture="X86Compatible" SuiteMask="272" OldProductType="3" NewProductType="7"
                SystemMetrics="0" ClientVersion="3.0.6000.374" Future="ignored">
                <TargetGroupIdList><guid>a0a08746-4dbe-4a37-9adf-9e7652c0b421</guid></TargetGroupIdList>
                <RequestedTargetGroupNames />
              </Details></ComputerRollupInfo></computers></RollupComputers>"#,
            &Limits::REQUEST,
        )
        .unwrap();
        let c = read_rollup_computers(&e, 5).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].computer_id, "d07a4d51-7cb2-46d1-ad86-91195cb4325a");
        assert_eq!(c[0].last_reported_status, None);
        assert_eq!(c[0].last_sync, Some(1_173_151_348));
        let d = c[0].details.as_ref().unwrap();
        assert_eq!((d.os_major, d.os_minor, d.os_build), (5, 2, 3790));
        assert_eq!(d.target_group_ids.len(), 1);
        assert_eq!(d.full_domain_name, "pc.example");
    }

    #[test]
    fn bad_fields_are_named() {
        let one = ComputerStatusRollup {
            instance_id: Uuid::nil(),
            computer_id: "a".into(),
            effective_last_detection: None,
            rollup_number: 1,
            full: false,
            statuses: vec![],
        };
        let three = vec![one.clone(), one.clone(), one];
        let over = element("RollupComputerStatus", |w| {
            rollup_computer_status_request(w, 0, Uuid::nil(), &three)
        });
        let err = read_rollup_computer_status(&over, 2).unwrap_err();
        assert_eq!(err.field, "computers");
        assert!(err.why.contains("batch size 2"), "{err:?}");
        let bad_state = parse_str(
            "<RollupComputerStatus><parentServerId>050cee4a-aaff-470c-8fc3-7a94cb3a4293</parentServerId><computers>\
             <ComputerStatusRollupInfo><InstanceId>050cee4a-aaff-470c-8fc3-7a94cb3a4293</InstanceId><ComputerId>a</ComputerId>\
             <EffectiveLastDetectionTime>0001-01-01T00:00:00</EffectiveLastDetectionTime><RollupNumber>1</RollupNumber>\
             <IsFullRollup>true</IsFullRollup><UpdateStatus><ComputerStatusRollupUpdateStatus>\
             <UpdateId>050cee4a-aaff-470c-8fc3-7a94cb3a4293</UpdateId><SummarizationState>1</SummarizationState>\
             <LastChangeTime>0001-01-01T00:00:00</LastChangeTime></ComputerStatusRollupUpdateStatus></UpdateStatus>\
             </ComputerStatusRollupInfo></computers></RollupComputerStatus>",
            &Limits::REQUEST,
        )
        .unwrap();
        assert_eq!(
            read_rollup_computer_status(&bad_state, 5)
                .unwrap_err()
                .field,
            "SummarizationState"
        );
        let zero_batch = element("GetRollupConfigurationResponse", |w| {
            write_rollup_configuration(
                w,
                &RollupConfiguration {
                    do_detailed_rollup: true,
                    rollup_reset_guid: Uuid::nil(),
                    server_id: Uuid::nil(),
                    max_servers: 0,
                    max_computers: 1,
                    max_out_of_sync: 1,
                    max_status: 1,
                },
            )
        });
        assert_eq!(
            read_rollup_configuration(&zero_batch).unwrap_err().field,
            "RollupDownstreamServersMaxBatchSize"
        );
        let no_id = parse_str(
            "<RollupComputers><computers><ComputerRollupInfo LastSyncTime=\"0001-01-01T00:00:00\" /></computers></RollupComputers>",
            &Limits::REQUEST,
        )
        .unwrap();
        assert_eq!(
            read_rollup_computers(&no_id, 5).unwrap_err().field,
            "ComputerId"
        );
    }
}
