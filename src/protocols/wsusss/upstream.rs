//! The upstream (USS) side of MS-WSUSSS: one SOAP call in, one SOAP
//! message out. The HTTP server (`crate::http`) routes POSTs of the two
//! web services here; everything a downstream server (DSS) sees comes from
//! the store, read in one SQLite snapshot per call.
//!
//! Rules (each a function or a match arm below):
//! - Cookies are opaque to the DSS and authenticated with HMAC-SHA256 under
//!   a random per-server secret (`config` key [`COOKIE_SECRET_KEY`]), carry
//!   the DSS id, this server's id, an expiry and the protocol version; a
//!   cookie that fails any check is `InvalidCookie` (`InvalidAuthorizationCookie`
//!   for the authorization cookie of GetCookie).
//! - Anchors are this server's journal anchors (`gapsync1:<id>:<seq>`). A
//!   malformed one is `InvalidParameters` (the parameter's name as Message,
//!   as Windows WSUS answers); one of another server, or ahead of the
//!   journal, is `ServerChanged`: the DSS resets its anchors.
//! - Revisions are listed as `UpdateIdentity` (UpdateID + RevisionNumber),
//!   every stored revision added after the anchor, oldest first.
//! - Metadata is sent verbatim (decoded to text): `XmlUpdateBlob` up to
//!   5,120 bytes of UTF-16, else `XmlUpdateBlobCompressed` (a cabinet with
//!   one member `blob`, UTF-16LE, LZX with a 2 MB window), as Windows does.
//! - Nothing a DSS sends changes replicated state; only the DSS table
//!   (`downstream_servers`) is written, best effort.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use uuid::Uuid;

use super::reporting;
use super::{
    DSS_AUTH_SERVICE_URL, ErrorCode, NIL_GUID, NO_DEADLINE, Operation, PLUGIN_ID, PROTOCOL_VERSION,
};
use crate::error::{Error, Result};
use crate::http::{Routes, SoapAnswer, SoapCall, SoapOperation};
use crate::soap::cookie::{CookieKey, MAC_LEN};
use crate::soap::xsd::format_unix as xsd_datetime;
use crate::soap::{Element, Refusal, XmlWriter, parse_bool};
use crate::store::content::wsus_rel_path;
use crate::store::journal::Anchor;
use crate::store::serving::{self, Snapshot};
use crate::store::{Store, canonical_guid};

/// `config` key of the cookie secret (64 hex digits).
pub const COOKIE_SECRET_KEY: &str = "uss.cookie_secret";
/// Default cookie lifetime: 240 minutes, as Windows WSUS.
pub const DEFAULT_COOKIE_LIFETIME: Duration = Duration::from_secs(240 * 60);
/// `MaxNumberOfUpdatesPerRequest` (as Windows WSUS).
pub const MAX_UPDATES_PER_REQUEST: usize = 100;
/// `MaxUpdatesPerRequestInGetUpdateDecryptionData` (as Windows WSUS).
pub const MAX_DECRYPTION_PER_REQUEST: usize = 100;
/// Most digests one DownloadFiles may name (MS-WSUSSS 3.1.4.11).
pub const MAX_DOWNLOAD_DIGESTS: usize = 100;
/// Metadata longer than this many bytes of UTF-16 goes compressed
/// (MS-WSUSSS 3.1.4.6, Windows behavior note 36).
pub const COMPRESS_ABOVE: usize = 5120;
/// Most category or classification ids one filter may carry.
pub const MAX_FILTER_IDS: usize = 10_000;

const AUTH_MAGIC: &[u8; 4] = b"GSA1";
const SYNC_MAGIC: &[u8; 4] = b"GSC1";
const AUTH_LEN: usize = 4 + 16 + 16 + 8 + MAC_LEN;
const SYNC_LEN: usize = 4 + 16 + 16 + 8 + 2 + 2 + MAC_LEN;

/// Settings of the upstream role.
#[derive(Debug, Clone)]
pub struct UssOptions {
    /// How long authorization cookies and cookies stay valid.
    pub cookie_lifetime: Duration,
    pub max_updates_per_request: usize,
}

impl Default for UssOptions {
    fn default() -> Self {
        UssOptions {
            cookie_lifetime: DEFAULT_COOKIE_LIFETIME,
            max_updates_per_request: MAX_UPDATES_PER_REQUEST,
        }
    }
}

/// The upstream role of one store.
pub struct Uss {
    server_id: Uuid,
    key: CookieKey,
    opts: UssOptions,
}

/// The routing table rows of the upstream role: one per operation of the
/// two web services (ServerSyncWebService, DssAuthWebService), each at its
/// service's path, answered by [`Uss`] over the store (whose cookie secret
/// is created on first use).
pub fn routes(store: &Store, opts: UssOptions) -> Result<Routes> {
    let uss = Arc::new(Uss::open(store, opts)?);
    let mut routes = Routes::new();
    for op in Operation::ALL.into_iter().chain(Operation::REPORTING) {
        let uss = uss.clone();
        routes = routes.operation(
            SoapOperation::new(
                op.service().path(),
                op.namespace(),
                op.name(),
                op.soap_action(),
            ),
            move |store: &Store, call: &SoapCall<'_>| uss.call(store, op, call),
        );
    }
    Ok(routes)
}

/// Batch sizes this server announces in GetRollupConfiguration: a status
/// batch stays well under the default request body limit (a computer's
/// status is about 200 bytes per update).
const ROLLUP_MAX_SERVERS: u32 = 100;
const ROLLUP_MAX_COMPUTERS: u32 = 500;
const ROLLUP_MAX_OUT_OF_SYNC: u32 = 1000;
const ROLLUP_MAX_STATUS: u32 = 5;

/// A SummarizationState as the status rules of `store::wusp` name it
/// (installed pending a restart counts as installed).
fn rollup_state(s: reporting::Summarization) -> crate::store::wusp::UpdateState {
    use crate::store::wusp::UpdateState;
    match s {
        reporting::Summarization::NotApplicable => UpdateState::NotApplicable,
        reporting::Summarization::NotInstalled => UpdateState::Needed,
        reporting::Summarization::Downloaded => UpdateState::Downloaded,
        reporting::Summarization::Installed | reporting::Summarization::InstalledPendingReboot => {
            UpdateState::Installed
        }
        reporting::Summarization::Failed => UpdateState::Failed,
    }
}

/// A failed call: the fault sent and what the log says.
#[derive(Debug)]
struct Fail {
    code: ErrorCode,
    /// Sent as `Message`: for InvalidParameters the parameter's name.
    message: String,
    /// Why, for the server log.
    why: String,
}

impl Fail {
    fn new(code: ErrorCode, message: &str, why: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.to_string(),
            why: why.into(),
        }
    }
    fn invalid(param: &str, why: impl Into<String>) -> Fail {
        Fail::new(ErrorCode::InvalidParameters, param, why)
    }
    fn cookie(why: impl Into<String>) -> Fail {
        Fail::new(ErrorCode::InvalidCookie, "", why)
    }
    fn auth_cookie(why: impl Into<String>) -> Fail {
        Fail::new(ErrorCode::InvalidAuthorizationCookie, "", why)
    }
    fn internal(why: impl Into<String>) -> Fail {
        Fail::new(ErrorCode::InternalServerError, "", why)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::internal(e.to_string())
    }
}

impl From<Fail> for Refusal {
    fn from(f: Fail) -> Refusal {
        Refusal::new(f.code, &f.message, f.why)
    }
}

type CallResult = std::result::Result<(String, String), Fail>;

/// What a valid cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyncCookie {
    dss: Uuid,
    expires: i64,
    major: u16,
    minor: u16,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Uss {
    /// The upstream role of `store`: loads its cookie secret, creating it
    /// (32 random bytes) the first time.
    pub fn open(store: &Store, opts: UssOptions) -> Result<Uss> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| Error::invalid("random number generator", e.to_string()))?;
        let stored =
            serving::config_value_or_insert(store, COOKIE_SECRET_KEY, &hex::encode(fresh))?;
        let secret: [u8; 32] = hex::decode(stored.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                Error::invalid(
                    format!("config {COOKIE_SECRET_KEY}"),
                    "is not 64 hex digits",
                )
            })?;
        Ok(Uss {
            server_id: store.info().server_id,
            key: CookieKey::new(secret),
            opts,
        })
    }

    /// Answers one call the routing table placed (envelope read, operation
    /// and SOAPAction checked there).
    pub fn call(
        &self,
        store: &Store,
        op: Operation,
        call: &SoapCall<'_>,
    ) -> std::result::Result<SoapAnswer, Box<Refusal>> {
        let body = call.body;
        let result = match op {
            Operation::GetAuthConfig => Ok(self.get_auth_config()),
            Operation::GetAuthorizationCookie => self.get_authorization_cookie(store, body),
            Operation::GetCookie => self.get_cookie(body),
            Operation::GetConfigData => self.get_config_data(store, body),
            Operation::GetRevisionIdList => self.get_revision_id_list(store, body),
            Operation::GetUpdateData => self.get_update_data(store, body, call.base_url),
            Operation::GetUpdateDecryptionData => self.get_update_decryption_data(store, body),
            Operation::GetDeployments => self.get_deployments(store, body),
            Operation::DownloadFiles => self.download_files(store, body),
            Operation::GetRelatedRevisionsForUpdates => self.get_related_revisions(body),
            Operation::GetRollupConfiguration => self.get_rollup_configuration(store),
            Operation::RollupDownstreamServers => self.rollup_downstream_servers(store, body),
            Operation::RollupComputers => self.rollup_computers(store, body),
            Operation::GetOutOfSyncComputers => self.get_out_of_sync_computers(store, body),
            Operation::RollupComputerStatus => self.rollup_computer_status(store, body),
        };
        let (body, summary) = result.map_err(|f| Box::new(Refusal::from(f)))?;
        Ok(SoapAnswer { body, summary })
    }

    // -----------------------------------------------------------------------
    // Reporting web service: rollup (3.1.4.13-3.1.4.17). What a downstream
    // server rolls up is kept as a site (`store::rollup`, `store::sites`).
    // -----------------------------------------------------------------------

    fn get_rollup_configuration(&self, store: &Store) -> CallResult {
        let mut w = XmlWriter::new();
        w.start_ns("GetRollupConfigurationResponse", super::SSS_NS);
        reporting::write_rollup_configuration(
            &mut w,
            &reporting::RollupConfiguration {
                do_detailed_rollup: true,
                rollup_reset_guid: Uuid::parse_str(&store.rollup_reset_guid()?)
                    .map_err(|e| Fail::internal(format!("the stored RollupResetGuid: {e}")))?,
                server_id: self.server_id,
                max_servers: ROLLUP_MAX_SERVERS,
                max_computers: ROLLUP_MAX_COMPUTERS,
                max_out_of_sync: ROLLUP_MAX_OUT_OF_SYNC,
                max_status: ROLLUP_MAX_STATUS,
            },
        );
        w.end("GetRollupConfigurationResponse");
        Ok((w.into_string(), String::new()))
    }

    /// Rule: a rollup names a server that authorized with this one as a
    /// downstream server, or is a site already (an unknown one is refused,
    /// where the spec would record it: nobody unknown writes site status).
    fn rollup_server(&self, store: &Store, id: Uuid, field: &str) -> Result<String, Fail> {
        let id = if id.is_nil() { self.server_id } else { id };
        let s = id.to_string();
        if id == self.server_id || !store.rollup_server_known(&s)? {
            return Err(Fail::invalid(
                field,
                format!("{s} is not a downstream server of this one (it never authorized)"),
            ));
        }
        Ok(s)
    }

    fn rollup_downstream_servers(&self, store: &Store, body: &Element) -> CallResult {
        let servers = reporting::read_rollup_downstream_servers(body, ROLLUP_MAX_SERVERS)
            .map_err(|f| Fail::invalid(&f.field, f.why))?;
        let mut rows = Vec::with_capacity(servers.len());
        for s in &servers {
            rows.push(crate::store::rollup::RolledServer {
                server_id: self.rollup_server(store, s.server_id, "ServerId")?,
                name: if s.full_domain_name.trim().is_empty() {
                    s.server_id.to_string()
                } else {
                    s.full_domain_name.trim().to_string()
                },
                rollup_time: s.last_rollup.map(xsd_datetime),
            });
        }
        store.rollup_record_servers(&rows)?;
        let mut w = XmlWriter::new();
        w.empty_ns("RollupDownstreamServersResponse", super::SSS_NS);
        Ok((w.into_string(), format!("{} servers", rows.len())))
    }

    fn rollup_computers(&self, store: &Store, body: &Element) -> CallResult {
        let list = reporting::read_rollup_computers(body, ROLLUP_MAX_COMPUTERS)
            .map_err(|f| Fail::invalid(&f.field, f.why))?;
        let mut rows = Vec::with_capacity(list.len());
        for c in &list {
            rows.push(crate::store::rollup::RolledComputer {
                server_id: self.rollup_server(store, c.parent_server_id, "ParentServerId")?,
                computer_id: c.computer_id.clone(),
                last_sync: c.last_sync.map(xsd_datetime),
                last_report: c.last_reported_status.map(xsd_datetime),
                details: c
                    .details
                    .as_ref()
                    .map(|d| crate::store::rollup::RolledDetails {
                        name: if d.full_domain_name.is_empty() {
                            c.computer_id.clone()
                        } else {
                            d.full_domain_name.clone()
                        },
                        group_id: d.target_group_ids.first().map(Uuid::to_string),
                        os_description: Some(d.os_description.clone()).filter(|s| !s.is_empty()),
                        arch: Some(d.processor_architecture.clone()).filter(|s| !s.is_empty()),
                    }),
            });
        }
        let wanted = store.rollup_record_computers(&rows)?;
        let changes: Vec<(String, reporting::ComputerChange)> = wanted
            .into_iter()
            .map(|id| (id, reporting::ComputerChange::NewParent))
            .collect();
        let mut w = XmlWriter::new();
        w.start_ns("RollupComputersResponse", super::SSS_NS);
        reporting::write_rollup_computers_result(&mut w, &changes);
        w.end("RollupComputersResponse");
        Ok((
            w.into_string(),
            format!(
                "{} computers, {} asked for details",
                rows.len(),
                changes.len()
            ),
        ))
    }

    fn get_out_of_sync_computers(&self, store: &Store, body: &Element) -> CallResult {
        let (parent, numbers) =
            reporting::read_get_out_of_sync_computers(body, ROLLUP_MAX_OUT_OF_SYNC)
                .map_err(|f| Fail::invalid(&f.field, f.why))?;
        let server = self.rollup_server(store, parent, "parentServerId")?;
        let stale = store.rollup_out_of_sync(&server, &numbers)?;
        let mut w = XmlWriter::new();
        w.start_ns("GetOutOfSyncComputersResponse", super::SSS_NS);
        reporting::write_out_of_sync_result(&mut w, &stale);
        w.end("GetOutOfSyncComputersResponse");
        Ok((w.into_string(), format!("{} out of sync", stale.len())))
    }

    fn rollup_computer_status(&self, store: &Store, body: &Element) -> CallResult {
        let (parent, list) = reporting::read_rollup_computer_status(body, ROLLUP_MAX_STATUS)
            .map_err(|f| Fail::invalid(&f.field, f.why))?;
        let server = self.rollup_server(store, parent, "parentServerId")?;
        let now = xsd_datetime(unix_now());
        let rows: Vec<crate::store::rollup::RolledStatus> = list
            .iter()
            .map(|c| crate::store::rollup::RolledStatus {
                computer_id: c.computer_id.clone(),
                rollup_number: c.rollup_number,
                full: c.full,
                rows: c
                    .statuses
                    .iter()
                    .map(|u| {
                        (
                            u.update_id.to_string(),
                            rollup_state(u.state),
                            u.last_change
                                .map(xsd_datetime)
                                .unwrap_or_else(|| now.clone()),
                        )
                    })
                    .collect(),
            })
            .collect();
        store.rollup_record_status(&server, &rows)?;
        let mut w = XmlWriter::new();
        w.start_ns("RollupComputerStatusResponse", super::SSS_NS);
        reporting::write_rollup_computer_status_result(&mut w, true);
        w.end("RollupComputerStatusResponse");
        Ok((w.into_string(), format!("{} computers", rows.len())))
    }

    // -----------------------------------------------------------------------
    // Cookies
    // -----------------------------------------------------------------------

    fn auth_cookie_bytes(&self, dss: Uuid, expires: i64) -> Vec<u8> {
        let mut v = Vec::with_capacity(AUTH_LEN);
        v.extend_from_slice(AUTH_MAGIC);
        v.extend_from_slice(dss.as_bytes());
        v.extend_from_slice(self.server_id.as_bytes());
        v.extend_from_slice(&expires.to_be_bytes());
        self.key.seal(&v)
    }

    fn sync_cookie_bytes(&self, c: &SyncCookie) -> Vec<u8> {
        let mut v = Vec::with_capacity(SYNC_LEN);
        v.extend_from_slice(SYNC_MAGIC);
        v.extend_from_slice(c.dss.as_bytes());
        v.extend_from_slice(self.server_id.as_bytes());
        v.extend_from_slice(&c.expires.to_be_bytes());
        v.extend_from_slice(&c.major.to_be_bytes());
        v.extend_from_slice(&c.minor.to_be_bytes());
        self.key.seal(&v)
    }

    /// Rule: an authorization cookie is ours (magic, length, MAC, this
    /// server's id) and not expired; returns the DSS id and expiry.
    fn read_auth_cookie(&self, data: &[u8]) -> std::result::Result<(Uuid, i64), String> {
        if data.len() != AUTH_LEN || &data[..4] != AUTH_MAGIC {
            return Err("not an authorization cookie of gapsync".into());
        }
        let body = self.key.open(data).ok_or_else(|| {
            "authorization cookie fails its MAC (forged, or of another server)".to_string()
        })?;
        let dss = Uuid::from_slice(&body[4..20]).map_err(|e| e.to_string())?;
        let uss = Uuid::from_slice(&body[20..36]).map_err(|e| e.to_string())?;
        if uss != self.server_id {
            return Err(format!("authorization cookie of server {uss}"));
        }
        let expires = i64::from_be_bytes(body[36..44].try_into().map_err(|_| "length")?);
        if expires <= unix_now() {
            return Err(format!(
                "authorization cookie expired at {}",
                xsd_datetime(expires)
            ));
        }
        Ok((dss, expires))
    }

    /// Rule: a cookie is present, ours (magic, length, MAC, this server's
    /// id) and not expired, and names protocol major version 1.
    fn check_cookie(&self, body: &Element) -> std::result::Result<SyncCookie, Fail> {
        let cookie = body
            .child("cookie")
            .filter(|c| !c.is_nil())
            .ok_or_else(|| Fail::cookie("no cookie"))?;
        let data = cookie
            .child_text("EncryptedData")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| Fail::cookie("cookie without EncryptedData"))?;
        let data = b64()
            .decode(data)
            .map_err(|e| Fail::cookie(format!("EncryptedData is not base64: {e}")))?;
        if data.len() != SYNC_LEN || &data[..4] != SYNC_MAGIC {
            return Err(Fail::cookie("EncryptedData is not a cookie of gapsync"));
        }
        let signed = self
            .key
            .open(&data)
            .ok_or_else(|| Fail::cookie("cookie fails its MAC (forged, or of another server)"))?;
        let field = |r: std::ops::Range<usize>| signed.get(r).unwrap_or(&[]);
        let dss = Uuid::from_slice(field(4..20)).map_err(|e| Fail::cookie(e.to_string()))?;
        let uss = Uuid::from_slice(field(20..36)).map_err(|e| Fail::cookie(e.to_string()))?;
        if uss != self.server_id {
            return Err(Fail::cookie(format!("cookie of server {uss}")));
        }
        let num = |r: std::ops::Range<usize>| -> u64 {
            field(r)
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        let c = SyncCookie {
            dss,
            expires: num(36..44) as i64,
            major: num(44..46) as u16,
            minor: num(46..48) as u16,
        };
        if c.expires <= unix_now() {
            return Err(Fail::cookie(format!(
                "cookie of {dss} expired at {}",
                xsd_datetime(c.expires)
            )));
        }
        if c.major != 1 {
            return Err(Fail::new(
                ErrorCode::IncompatibleProtocolVersion,
                "",
                format!("protocol version {}.{}", c.major, c.minor),
            ));
        }
        Ok(c)
    }

    // -----------------------------------------------------------------------
    // Operations
    // -----------------------------------------------------------------------

    /// GetAuthConfig (3.1.4.1): one plug-in, DssTargeting, at the relative
    /// DSS authorization URL.
    fn get_auth_config(&self) -> (String, String) {
        let mut w = XmlWriter::new();
        w.start_ns("GetAuthConfigResponse", super::SSS_NS)
            .start("GetAuthConfigResult")
            .elem("LastChange", &xsd_datetime(unix_now()))
            .start("AuthInfo")
            .start("AuthPlugInInfo")
            .elem("PlugInID", PLUGIN_ID)
            .elem("ServiceUrl", DSS_AUTH_SERVICE_URL)
            .empty("Parameter")
            .end("AuthPlugInInfo")
            .end("AuthInfo")
            .end("GetAuthConfigResult")
            .end("GetAuthConfigResponse");
        (w.into_string(), String::new())
    }

    /// GetAuthorizationCookie (3.1.4.2): checks accountName (an FQDN) and
    /// accountGuid (a GUID), records the DSS, returns an authorization
    /// cookie bound to it.
    fn get_authorization_cookie(&self, store: &Store, body: &Element) -> CallResult {
        let name = body
            .child_text("accountName")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Fail::invalid("accountName", "missing or empty"))?;
        if !is_fqdn(name) {
            return Err(Fail::invalid(
                "accountName",
                format!("{:?} is not an FQDN", truncate(name)),
            ));
        }
        let guid = body
            .child_text("accountGuid")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Fail::invalid("accountGuid", "missing or empty"))?;
        let dss = parse_guid(guid).ok_or_else(|| {
            Fail::invalid("accountGuid", format!("{:?} is not a GUID", truncate(guid)))
        })?;
        record_dss(store, dss, name);
        let expires = unix_now().saturating_add(self.lifetime_secs());
        let data = b64().encode(self.auth_cookie_bytes(dss, expires));
        let mut w = XmlWriter::new();
        w.start_ns("GetAuthorizationCookieResponse", super::DSSAUTH_NS)
            .start("GetAuthorizationCookieResult")
            .elem("PlugInId", PLUGIN_ID)
            .elem("CookieData", &data)
            .end("GetAuthorizationCookieResult")
            .end("GetAuthorizationCookieResponse");
        Ok((w.into_string(), format!("dss {dss} ({name})")))
    }

    fn lifetime_secs(&self) -> i64 {
        i64::try_from(self.opts.cookie_lifetime.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// GetCookie (3.1.4.3): exactly one authorization cookie of ours, a
    /// protocol version `x.y` with major 1; the cookie expires after the
    /// lifetime or with the authorization cookie, whichever is sooner.
    fn get_cookie(&self, body: &Element) -> CallResult {
        let cookies: Vec<&Element> = body
            .child("authCookies")
            .map(|a| {
                a.children_named("AuthorizationCookie")
                    .filter(|c| !c.is_nil())
                    .collect()
            })
            .unwrap_or_default();
        let [auth] = cookies.as_slice() else {
            return Err(Fail::invalid(
                "authCookies",
                format!(
                    "{} authorization cookies, expected exactly one",
                    cookies.len()
                ),
            ));
        };
        if auth.child_text("PlugInId") != Some(PLUGIN_ID) {
            return Err(Fail::auth_cookie(format!(
                "PlugInId {:?}, expected {PLUGIN_ID}",
                auth.child_text("PlugInId").map(truncate)
            )));
        }
        let data = auth
            .child_text("CookieData")
            .ok_or_else(|| Fail::auth_cookie("no CookieData"))?;
        let data = b64()
            .decode(data)
            .map_err(|e| Fail::auth_cookie(format!("CookieData is not base64: {e}")))?;
        let (dss, auth_expires) = self.read_auth_cookie(&data).map_err(Fail::auth_cookie)?;
        let version = body.child_text("protocolVersion").unwrap_or("");
        let (major, minor) = parse_protocol_version(version).ok_or_else(|| {
            Fail::invalid(
                "protocolVersion",
                format!("{:?} is not of the form x.y", truncate(version)),
            )
        })?;
        if major != 1 {
            return Err(Fail::new(
                ErrorCode::IncompatibleProtocolVersion,
                "",
                format!("protocol version {version}"),
            ));
        }
        let expires = unix_now()
            .saturating_add(self.lifetime_secs())
            .min(auth_expires);
        let cookie = SyncCookie {
            dss,
            expires,
            major,
            minor,
        };
        let data = b64().encode(self.sync_cookie_bytes(&cookie));
        let mut w = XmlWriter::new();
        w.start_ns("GetCookieResponse", super::SSS_NS)
            .start("GetCookieResult")
            .elem("Expiration", &xsd_datetime(expires))
            .elem("EncryptedData", &data)
            .end("GetCookieResult")
            .end("GetCookieResponse");
        Ok((
            w.into_string(),
            format!("dss {dss} protocol {major}.{minor}"),
        ))
    }

    /// GetConfigData (3.1.4.4): fixed limits, content served (not catalog
    /// only), lazy sync, and the language list; with a config anchor of
    /// this server the list is empty (gapsync's language settings never
    /// change).
    fn get_config_data(&self, store: &Store, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let known_anchor = body
            .child_text("configAnchor")
            .and_then(|a| a.parse::<Anchor>().ok())
            .is_some_and(|a| a.server_id == self.server_id);
        let anchor = store.anchor()?;
        let n = self.opts.max_updates_per_request.to_string();
        let mut w = XmlWriter::new();
        w.start_ns("GetConfigDataResponse", super::SSS_NS)
            .start("GetConfigDataResult")
            .elem("CatalogOnlySync", "false")
            .elem("LazySync", "true")
            .elem("ServerHostsPsfFiles", "false")
            .elem("MaxNumberOfComputerIdsInRequest", "0")
            .elem("MaxNumberOfDriverSetsPerRequest", "0")
            .elem("MaxNumberOfPnpHardwareIdsInRequest", "0")
            .elem("MaxNumberOfUpdatesPerRequest", &n)
            .elem("NewConfigAnchor", &anchor.to_string())
            .elem("ProtocolVersion", PROTOCOL_VERSION);
        let languages: &[(u32, &str, &str)] = if known_anchor { &[] } else { LANGUAGES };
        w.list("LanguageUpdateList", languages, |w, (id, short, long)| {
            w.start("ServerSyncLanguageData")
                .elem("LanguageID", &id.to_string())
                .elem("ShortLanguage", short)
                .elem("LongLanguage", long)
                .elem("Enabled", "true")
                .end("ServerSyncLanguageData");
        })
        .elem(
            "MaxUpdatesPerRequestInGetUpdateDecryptionData",
            &MAX_DECRYPTION_PER_REQUEST.to_string(),
        )
        .end("GetConfigDataResult")
        .end("GetConfigDataResponse");
        Ok((
            w.into_string(),
            format!("dss {} languages {}", cookie.dss, languages.len()),
        ))
    }

    /// Rule: an anchor a DSS passes back is empty/absent (from the start),
    /// or this server's anchor not ahead of its journal. Malformed:
    /// InvalidParameters naming `param`; another server's or ahead:
    /// ServerChanged.
    fn own_anchor(
        &self,
        snap: &Snapshot<'_>,
        param: &str,
        text: Option<&str>,
    ) -> std::result::Result<i64, Fail> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(0);
        };
        let a: Anchor = text
            .parse()
            .map_err(|e: Error| Fail::invalid(param, e.to_string()))?;
        match snap.own_anchor(text) {
            Ok(a) => Ok(a.seq),
            Err(e @ (Error::ForeignAnchor { .. } | Error::BadAnchor { .. })) => Err(Fail::new(
                ErrorCode::ServerChanged,
                "",
                format!("{param} {}: {e}", a),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// GetRevisionIdList (3.1.4.5): see [`Snapshot::revision_list`].
    fn get_revision_id_list(&self, store: &Store, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let filter = body
            .child("filter")
            .filter(|f| !f.is_nil())
            .ok_or_else(|| Fail::invalid("filter", "missing"))?;
        let get_config = filter
            .child_text("GetConfig")
            .and_then(parse_bool)
            .ok_or_else(|| Fail::invalid("filter", "GetConfig missing or not a boolean"))?;
        let categories = parse_id_and_delta(filter.child("Categories"))?;
        let classifications = parse_id_and_delta(filter.child("Classifications"))?;
        let snap = Snapshot::begin(store)?;
        let since = self.own_anchor(&snap, "filter", filter.child_text("Anchor"))?;
        let head = snap.anchor()?;
        let revs =
            snap.revision_list(get_config, &categories, &classifications, since, head.seq)?;
        drop(snap);
        let mut w = XmlWriter::new();
        w.start_ns("GetRevisionIdListResponse", super::SSS_NS)
            .start("GetRevisionIdListResult")
            .elem("Anchor", &head.to_string())
            .list("NewRevisions", &revs, |w, (id, rev)| {
                w.start("UpdateIdentity")
                    .elem("UpdateID", id)
                    .elem("RevisionNumber", &rev.to_string())
                    .end("UpdateIdentity");
            })
            .end("GetRevisionIdListResult")
            .end("GetRevisionIdListResponse");
        record_sync(store, cookie.dss, &head);
        Ok((
            w.into_string(),
            format!(
                "dss {} config {get_config} since {since}: {} revisions, anchor {head}",
                cookie.dss,
                revs.len()
            ),
        ))
    }

    /// GetUpdateData (3.1.4.6): up to MaxNumberOfUpdatesPerRequest
    /// revisions, each with its verbatim metadata and file digests; one
    /// ServerSyncUrlData per distinct file, its MUUrl the file's URL on this
    /// server's content service. An unknown revision is an
    /// InternalServerError, as Windows WSUS answers.
    fn get_update_data(&self, store: &Store, body: &Element, base_url: &str) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let ids = parse_update_ids(
            body.child("updateIds"),
            "updateIds",
            self.opts.max_updates_per_request,
        )?;
        let snap = Snapshot::begin(store)?;
        let mut w = XmlWriter::new();
        w.start_ns("GetUpdateDataResponse", super::SSS_NS)
            .start("GetUpdateDataResult")
            .start("updates");
        let mut urls: Vec<([u8; 20], String)> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut compressed = 0usize;
        for (id, rev) in &ids {
            let Some((rev_id, xml)) = snap.revision_document(id, *rev)? else {
                return Err(Fail::internal(format!("updateIds: no revision {id}/{rev}")));
            };
            let text = crate::model::metadata::decode_text(&xml)
                .map_err(|e| Fail::internal(format!("stored revision {id}/{rev}: {e}")))?;
            let files = snap.revision_files(rev_id)?;
            w.start("ServerSyncUpdateData")
                .start("Id")
                .elem("UpdateID", id)
                .elem("RevisionNumber", &rev.to_string())
                .end("Id");
            let utf16_len = text.encode_utf16().count().saturating_mul(2);
            if utf16_len <= COMPRESS_ABOVE {
                w.elem("XmlUpdateBlob", &text);
            }
            if !files.is_empty() {
                w.start("FileDigestList");
                for (name, sha1) in &files {
                    w.elem("base64Binary", &b64().encode(sha1));
                    if seen.insert(*sha1) {
                        urls.push((*sha1, name.clone()));
                    }
                }
                w.end("FileDigestList");
            }
            if utf16_len > COMPRESS_ABOVE {
                let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
                w.elem(
                    "XmlUpdateBlobCompressed",
                    &b64().encode(crate::soap::cab::write_lzx_stored("blob", &utf16)),
                );
                compressed += 1;
            }
            w.end("ServerSyncUpdateData");
        }
        w.end("updates");
        w.list("fileUrls", &urls, |w, (sha1, name)| {
            w.start("ServerSyncUrlData")
                .elem("FileDigest", &b64().encode(sha1))
                .elem(
                    "MUUrl",
                    &format!("{base_url}/Content/{}", wsus_rel_path(sha1, name)),
                )
                .empty("UssUrl")
                .end("ServerSyncUrlData");
        });
        w.end("GetUpdateDataResult").end("GetUpdateDataResponse");
        Ok((
            w.into_string(),
            format!(
                "dss {}: {} revisions ({compressed} compressed), {} files",
                cookie.dss,
                ids.len(),
                urls.len()
            ),
        ))
    }

    /// GetUpdateDecryptionData (3.1.4.18): the file digests of each
    /// revision; gapsync keeps no decryption keys, so DecryptionKey is
    /// absent (the spec allows NULL).
    fn get_update_decryption_data(&self, store: &Store, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let ids = parse_update_ids(
            body.child("updateIds"),
            "updateIds",
            MAX_DECRYPTION_PER_REQUEST,
        )?;
        let snap = Snapshot::begin(store)?;
        let mut entries = Vec::new();
        for (id, rev) in &ids {
            let Some(rev_id) = snap.revision_key(id, *rev)? else {
                return Err(Fail::internal(format!("updateIds: no revision {id}/{rev}")));
            };
            let files = snap.revision_files(rev_id)?;
            if !files.is_empty() {
                entries.push((id.clone(), *rev, files));
            }
        }
        let mut w = XmlWriter::new();
        w.start_ns("GetUpdateDecryptionDataResponse", super::SSS_NS)
            .start("GetUpdateDecryptionDataResult")
            .list(
                "UpdateFileDecryptionData",
                &entries,
                |w, (id, rev, files)| {
                    w.start("ServerSyncUpdateFileDecryption")
                        .start("UpdateId")
                        .elem("UpdateID", id)
                        .elem("RevisionNumber", &rev.to_string())
                        .end("UpdateId")
                        .list("FileDecryptionData", files, |w, (_, sha1)| {
                            w.start("ServerSyncFileDecryption")
                                .elem("FileDigest", &b64().encode(sha1))
                                .end("ServerSyncFileDecryption");
                        })
                        .end("ServerSyncUpdateFileDecryption");
                },
            )
            .end("GetUpdateDecryptionDataResult")
            .end("GetUpdateDecryptionDataResponse");
        Ok((
            w.into_string(),
            format!("dss {}: {} revisions", cookie.dss, ids.len()),
        ))
    }

    /// GetDeployments (3.1.4.10): every target group; the deployments
    /// changed and removed after `deploymentAnchor` up to `syncAnchor`;
    /// every declined update (hidden); the EULAs of approved revisions
    /// (approving accepts them). The returned anchor is the sync anchor,
    /// so nothing after it is skipped next time. Marks the DSS a replica.
    fn get_deployments(&self, store: &Store, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let sync_text = body
            .child_text("syncAnchor")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Fail::invalid("syncAnchor", "missing or empty"))?;
        let snap = Snapshot::begin(store)?;
        let from = self.own_anchor(
            &snap,
            "deploymentAnchor",
            body.child_text("deploymentAnchor"),
        )?;
        let to = self.own_anchor(&snap, "syncAnchor", Some(sync_text))?;
        let anchor = Anchor {
            server_id: self.server_id,
            seq: from.max(to),
        };
        let groups = snap.groups_parents_first()?;
        let deployments = snap.deployments_changed(from, to, false)?;
        let dead: Vec<String> = snap
            .deployments_changed(from, to, true)?
            .into_iter()
            .map(|d| d.deployment_id)
            .collect();
        let hidden = snap.declined_updates()?;
        let eulas = snap.approved_eulas()?;
        drop(snap);
        let mut w = XmlWriter::new();
        w.start_ns("GetDeploymentsResponse", super::SSS_NS)
            .start("GetDeploymentsResult")
            .elem("Anchor", &anchor.to_string())
            .list("Groups", &groups, |w, g| {
                w.start("ServerSyncTargetGroup")
                    .elem("TargetGroupID", &g.id)
                    .elem("ParentGroupId", g.parent.as_deref().unwrap_or(NIL_GUID))
                    .elem("Name", &g.name)
                    .elem("IsBuiltin", if g.builtin { "true" } else { "false" })
                    .end("ServerSyncTargetGroup");
            })
            .list("Deployments", &deployments, |w, d| {
                w.start("ServerSyncDeployment")
                    .elem("UpdateId", &d.update_id)
                    .elem("RevisionNumber", &d.revision.to_string())
                    .elem("Action", &d.action.to_string())
                    .elem("AdminName", &d.admin_name)
                    .elem("Deadline", d.deadline.as_deref().unwrap_or(NO_DEADLINE))
                    .elem("IsAssigned", if d.is_assigned { "true" } else { "false" })
                    .elem("GoLiveTime", &d.go_live)
                    .elem("DeploymentGuid", &d.deployment_id)
                    .elem("TargetGroupId", &d.group_id)
                    .elem("DownloadPriority", &d.download_priority.to_string())
                    .end("ServerSyncDeployment");
            });
        for (name, ids) in [
            ("DeadDeployments", &dead),
            ("HiddenUpdates", &hidden),
            ("AcceptedEulas", &eulas),
        ] {
            w.list(name, ids, |w, id| {
                w.elem("guid", id);
            });
        }
        w.end("GetDeploymentsResult").end("GetDeploymentsResponse");
        record_replica(store, cookie.dss);
        Ok((
            w.into_string(),
            format!(
                "dss {} ({from}, {to}]: {} groups, {} deployments, {} dead, {} hidden, {} eulas",
                cookie.dss,
                groups.len(),
                deployments.len(),
                dead.len(),
                hidden.len(),
                eulas.len()
            ),
        ))
    }

    /// DownloadFiles (3.1.4.11): at most 100 digests, each known to the
    /// metadata (else FileDigestsMissing listing them, `|`-separated); then
    /// nothing to do: gapsync's content comes from its own store (bundles
    /// or sync), never fetched on demand.
    fn download_files(&self, store: &Store, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let list = body
            .child("fileDigestList")
            .filter(|l| !l.is_nil())
            .ok_or_else(|| Fail::invalid("fileDigestList", "missing"))?;
        let digests: Vec<&str> = list
            .children_named("base64Binary")
            .map(|d| d.text().trim())
            .collect();
        if digests.len() > MAX_DOWNLOAD_DIGESTS {
            return Err(Fail::invalid(
                "fileDigestList",
                format!("{} digests, at most {MAX_DOWNLOAD_DIGESTS}", digests.len()),
            ));
        }
        let mut missing = Vec::new();
        for d in &digests {
            let sha1: [u8; 20] = b64()
                .decode(d)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    Fail::invalid(
                        "fileDigestList",
                        format!("{:?} is not a SHA-1 digest", truncate(d)),
                    )
                })?;
            if !serving::file_digest_known(store, &sha1)? {
                missing.push(d.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(Fail::new(
                ErrorCode::FileDigestsMissing,
                &missing.join("|"),
                format!("{} unknown digests", missing.len()),
            ));
        }
        let mut w = XmlWriter::new();
        w.start_ns("DownloadFilesResponse", super::SSS_NS)
            .end("DownloadFilesResponse");
        Ok((
            w.into_string(),
            format!(
                "dss {}: {} digests (content is local)",
                cookie.dss,
                digests.len()
            ),
        ))
    }

    /// GetRelatedRevisionsForUpdates (3.1.4.9): unused by the protocol;
    /// answered with an empty list.
    fn get_related_revisions(&self, body: &Element) -> CallResult {
        let cookie = self.check_cookie(body)?;
        let mut w = XmlWriter::new();
        w.start_ns("GetRelatedRevisionsForUpdatesResponse", super::SSS_NS)
            .empty("GetRelatedRevisionsForUpdatesResult")
            .end("GetRelatedRevisionsForUpdatesResponse");
        Ok((
            w.into_string(),
            format!("dss {} (unused operation)", cookie.dss),
        ))
    }
}

// ---------------------------------------------------------------------------
// Request fields
// ---------------------------------------------------------------------------

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_guid(s: &str) -> Option<Uuid> {
    let s = s.trim();
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// Rule: an accountName is an FQDN (RFC 1035 2.3: labels of letters,
/// digits and hyphens, separated by dots; underscores are tolerated as
/// Windows host names carry them), at most 255 characters.
fn is_fqdn(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Rule: a protocol version is `x.y`, both decimal numbers.
fn parse_protocol_version(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.trim().split_once('.')?;
    let num = |t: &str| {
        (!t.is_empty() && t.len() <= 5 && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse::<u16>().ok())
            .flatten()
    };
    Some((num(a)?, num(b)?))
}

/// An `ArrayOfIdAndDelta`: (category id, delta). Malformed entries are
/// InvalidParameters `filter`.
fn parse_id_and_delta(list: Option<&Element>) -> std::result::Result<Vec<(String, bool)>, Fail> {
    let Some(list) = list.filter(|l| !l.is_nil()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in list.children_named("IdAndDelta").filter(|i| !i.is_nil()) {
        let id = item
            .child_text("Id")
            .and_then(canonical_guid)
            .ok_or_else(|| {
                Fail::invalid(
                    "filter",
                    format!("{}: IdAndDelta without a GUID Id", list.name()),
                )
            })?;
        let delta = item
            .child_text("Delta")
            .and_then(parse_bool)
            .ok_or_else(|| {
                Fail::invalid(
                    "filter",
                    format!("{}: IdAndDelta without a boolean Delta", list.name()),
                )
            })?;
        out.push((id, delta));
        if out.len() > MAX_FILTER_IDS {
            return Err(Fail::invalid(
                "filter",
                format!("more than {MAX_FILTER_IDS} {}", list.name()),
            ));
        }
    }
    Ok(out)
}

/// An `ArrayOfUpdateIdentity` of 1..=`max` entries.
fn parse_update_ids(
    list: Option<&Element>,
    param: &str,
    max: usize,
) -> std::result::Result<Vec<(String, i32)>, Fail> {
    let list = list
        .filter(|l| !l.is_nil())
        .ok_or_else(|| Fail::invalid(param, "missing"))?;
    let mut out = Vec::new();
    for item in list.children_named("UpdateIdentity") {
        if out.len() >= max {
            return Err(Fail::invalid(param, format!("more than {max} revisions")));
        }
        let id = item
            .child_text("UpdateID")
            .and_then(canonical_guid)
            .ok_or_else(|| Fail::invalid(param, "UpdateIdentity without a GUID UpdateID"))?;
        let rev = item
            .child_text("RevisionNumber")
            .and_then(|r| r.parse::<i32>().ok())
            .ok_or_else(|| Fail::invalid(param, "UpdateIdentity without an int RevisionNumber"))?;
        out.push((id, rev));
    }
    if out.is_empty() {
        return Err(Fail::invalid(param, "no revisions"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Bookkeeping (best effort: it never fails a call)
// ---------------------------------------------------------------------------

/// Records a DSS in the DSS table on GetAuthorizationCookie (MS-WSUSSS
/// 3.1.4.2).
fn record_dss(store: &Store, dss: Uuid, fqdn: &str) {
    if let Err(e) = serving::record_downstream_server(store, &dss.to_string(), fqdn) {
        tracing::warn!("could not record downstream server {dss}: {e}");
    }
}

/// Records a DSS's last sync time and the anchor it was handed.
fn record_sync(store: &Store, dss: Uuid, anchor: &Anchor) {
    if let Err(e) = serving::record_downstream_sync(store, &dss.to_string(), anchor) {
        tracing::warn!("could not record the sync of downstream server {dss}: {e}");
    }
}

/// Records that a DSS is a replica (only replicas call GetDeployments).
fn record_replica(store: &Store, dss: Uuid) {
    if let Err(e) = serving::record_downstream_replica(store, &dss.to_string()) {
        tracing::warn!("could not record downstream server {dss} as a replica: {e}");
    }
}

/// Languages announced in GetConfigData (MS-LCID ids and names), all
/// enabled: gapsync carries every language its metadata has.
const LANGUAGES: &[(u32, &str, &str)] = &[
    (0, "all", "all"),
    (1025, "ar", "Arabic"),
    (1026, "bg", "Bulgarian"),
    (1028, "zh-tw", "Chinese (Traditional)"),
    (1029, "cs", "Czech"),
    (1030, "da", "Danish"),
    (1031, "de", "German"),
    (1032, "el", "Greek"),
    (1033, "en", "English"),
    (1034, "es", "Spanish"),
    (1035, "fi", "Finnish"),
    (1036, "fr", "French"),
    (1037, "he", "Hebrew"),
    (1038, "hu", "Hungarian"),
    (1040, "it", "Italian"),
    (1041, "ja", "Japanese"),
    (1042, "ko", "Korean"),
    (1043, "nl", "Dutch"),
    (1044, "no", "Norwegian"),
    (1045, "pl", "Polish"),
    (1046, "pt-br", "Portuguese (Brazil)"),
    (1048, "ro", "Romanian"),
    (1049, "ru", "Russian"),
    (1050, "hr", "Croatian"),
    (1051, "sk", "Slovak"),
    (1053, "sv", "Swedish"),
    (1054, "th", "Thai"),
    (1055, "tr", "Turkish"),
    (1058, "uk", "Ukrainian"),
    (1060, "sl", "Slovenian"),
    (1061, "et", "Estonian"),
    (1062, "lv", "Latvian"),
    (1063, "lt", "Lithuanian"),
    (1081, "hi", "Hindi"),
    (2052, "zh-cn", "Chinese (Simplified)"),
    (2070, "pt", "Portuguese (Portugal)"),
    (2074, "sr", "Serbian (Latin)"),
    (3076, "zh-hk", "Chinese (Hong Kong SAR)"),
];

/// Content URL of a file on a server at `base_url`.
pub fn content_url(base_url: &str, sha1: &[u8; 20], file_name: &str) -> String {
    format!("{base_url}/Content/{}", wsus_rel_path(sha1, file_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(parse_protocol_version("1.20"), Some((1, 20)));
        assert_eq!(parse_protocol_version("2.0"), Some((2, 0)));
        for bad in ["", "1", "1.", ".2", "a.b", "1.2.3", "-1.2", "1.999999"] {
            assert_eq!(parse_protocol_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn fqdns() {
        assert!(is_fqdn("probe.lab.invalid"));
        assert!(is_fqdn("WSUS-01"));
        for bad in ["", "a..b", "a b", "a/b", "x.", "<x>"] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }
}
