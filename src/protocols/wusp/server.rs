//! The MS-WUSP server: the client web service, SimpleAuth and the
//! reporting web service over one store (docs/protocol.md, MS-WUSP).
//!
//! Each call is read with the SOAP layer (`crate::soap`), dispatched on
//! the Body's operation element (a SOAPAction, when sent, must name the
//! same operation), and answered in the envelope style the real server
//! uses per service: the client service as WCF writes it (`s:` prefix, no
//! XML declaration), SimpleAuth and reporting as ASMX (`soap:`, with the
//! declaration). Failures are the faults of MS-WUSP 2.2.2.4.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::catalog::{Action, Audience, Catalog, Deployment, Kind, SyncQuery};
use super::cookie::{AuthState, ClientState, Keys};
use super::fragment::Document;
use crate::error::Result;
use crate::soap::xsd::parse_bool;
use crate::soap::{Element, Envelope, Fault, FaultCode, Limits, SoapVersion, XmlWriter};
use crate::store::Store;
use crate::store::UNASSIGNED_COMPUTERS;
use crate::store::content::wsus_rel_path;
use crate::store::wusp::{
    CONFIG_LAST_CHANGE, ClientComputer, EventRow, Registration, StatusChange, Targeting,
    UpdateState, now_millis,
};

/// Namespace of the client web service.
pub const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
/// Namespace of the SimpleAuth web service.
pub const SIMPLE_AUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
/// Namespace of the reporting web service.
pub const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

/// The endpoints, as clients send them (matched without regard to case).
pub const CLIENT_PATH: &str = "/ClientWebService/client.asmx";
pub const SIMPLE_AUTH_PATH: &str = "/SimpleAuthWebService/SimpleAuth.asmx";
pub const REPORTING_PATH: &str = "/ReportingWebService/ReportingWebService.asmx";
/// The reporting endpoint's address in its WSDL.
pub const REPORTING_WSDL_PATH: &str = "/ReportingWebService/WebService.asmx";

/// The protocol version GetConfig announces.
pub const PROTOCOL_VERSION: &str = "3.2";
/// `MaxExtendedUpdatesPerRequest` of GetConfig.
pub const MAX_EXTENDED_UPDATES: usize = 50;
/// Most `InstalledNonLeafUpdateIDs` a SyncUpdates may carry (real WSUS).
pub const MAX_INSTALLED_NON_LEAF: usize = 400;
/// Most `globalIDs` of a RefreshCache.
pub const MAX_REFRESH: usize = 10_000;
/// Most categories of a StartCategoryScan.
pub const MAX_CATEGORIES: usize = 200;

/// Which service a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Client,
    SimpleAuth,
    Reporting,
}

impl Endpoint {
    fn ns(self) -> &'static str {
        match self {
            Endpoint::Client => CLIENT_NS,
            Endpoint::SimpleAuth => SIMPLE_AUTH_NS,
            Endpoint::Reporting => REPORTING_NS,
        }
    }
    /// The SOAPAction prefix of the service's operations.
    fn action_prefix(self) -> &'static str {
        match self {
            Endpoint::Client => {
                "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService/"
            }
            Endpoint::SimpleAuth => {
                "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService/"
            }
            Endpoint::Reporting => "http://www.microsoft.com/SoftwareDistribution/",
        }
    }
}

/// Settings of the client protocol.
#[derive(Debug, Clone)]
pub struct WuspOptions {
    /// Client and authorization cookie lifetime (default 60 minutes).
    pub cookie_lifetime_secs: i64,
    /// NewUpdates per SyncUpdates answer (default 30, as WSUS 2025).
    pub page_size: usize,
    /// Events kept per computer (default 2,000).
    pub event_bound: usize,
}

impl Default for WuspOptions {
    fn default() -> Self {
        WuspOptions {
            cookie_lifetime_secs: 3600,
            page_size: 30,
            event_bound: 2000,
        }
    }
}

/// One call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    pub action: Option<&'a str>,
    /// `http://host:port` as the client used it.
    pub base_url: &'a str,
}

/// One answer: HTTP status, body, a line for the log.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub summary: String,
}

/// MS-WUSP ErrorCodes (2.2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidCookie,
    ServerChanged,
    CookieExpired,
    ConfigChanged,
    RegistrationRequired,
    InvalidParameters,
    InvalidAuthorizationCookie,
    InternalServerError,
}

impl FaultCode for ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCookie => "InvalidCookie",
            ErrorCode::ServerChanged => "ServerChanged",
            ErrorCode::CookieExpired => "CookieExpired",
            ErrorCode::ConfigChanged => "ConfigChanged",
            ErrorCode::RegistrationRequired => "RegistrationRequired",
            ErrorCode::InvalidParameters => "InvalidParameters",
            ErrorCode::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            ErrorCode::InternalServerError => "InternalServerError",
        }
    }
    fn blames_sender(self) -> bool {
        self != ErrorCode::InternalServerError
    }
}

/// A refused call: the fault and why (for the log).
#[derive(Debug)]
struct Fail {
    code: ErrorCode,
    message: String,
    why: String,
}

fn fail(code: ErrorCode, message: &str, why: impl Into<String>) -> Fail {
    Fail {
        code,
        message: message.to_string(),
        why: why.into(),
    }
}

fn invalid(message: &str, why: impl Into<String>) -> Fail {
    fail(ErrorCode::InvalidParameters, message, why)
}

impl From<crate::error::Error> for Fail {
    fn from(e: crate::error::Error) -> Fail {
        fail(ErrorCode::InternalServerError, "", e.to_string())
    }
}

type Outcome = std::result::Result<(String, String), Fail>;

/// The MS-WUSP server of one store.
pub struct Wusp {
    opts: WuspOptions,
    server_id: String,
    catalog: Mutex<Option<Arc<Catalog>>>,
    keys: Mutex<Option<(String, Arc<Keys>)>>,
}

impl std::fmt::Debug for Wusp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wusp({})", self.server_id)
    }
}

/// Unix milliseconds as an `xsd:dateTime` (UTC, `...Z`).
pub fn format_millis(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn parse_millis(s: &str) -> Option<i64> {
    let t = crate::soap::xsd::parse_datetime(s)?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Rule: a protocol version is `major.minor`, both decimal (2.90 > 2.4).
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Wusp {
    /// The server of `store` (creates its cookie key and configuration
    /// time on first use).
    pub fn open(store: &Store, opts: WuspOptions) -> Result<Wusp> {
        let w = Wusp {
            opts,
            server_id: store.info().server_id.to_string(),
            catalog: Mutex::new(None),
            keys: Mutex::new(None),
        };
        w.keys(store)?;
        w.config_change(store)?;
        Ok(w)
    }

    fn keys(&self, store: &Store) -> Result<Arc<Keys>> {
        let text = store
            .config_value(crate::store::wusp::COOKIE_KEYS)?
            .unwrap_or_default();
        if let Ok(slot) = self.keys.lock() {
            if let Some((t, k)) = slot.as_ref() {
                if *t == text {
                    return Ok(k.clone());
                }
            }
        }
        let k = Arc::new(Keys::load(store)?);
        let text = store
            .config_value(crate::store::wusp::COOKIE_KEYS)?
            .unwrap_or_default();
        if let Ok(mut slot) = self.keys.lock() {
            *slot = Some((text, k.clone()));
        }
        Ok(k)
    }

    fn config_change(&self, store: &Store) -> Result<i64> {
        let v = store.config_value_or_init(CONFIG_LAST_CHANGE, || now_millis().to_string())?;
        Ok(v.trim().parse().unwrap_or(0))
    }

    /// The catalog of the store's current generation (built when it
    /// changed).
    pub fn catalog(&self, store: &Store) -> Result<Arc<Catalog>> {
        let generation = store.wusp_generation()?;
        if let Ok(slot) = self.catalog.lock() {
            if let Some(c) = slot.as_ref() {
                if c.generation == generation {
                    return Ok(c.clone());
                }
            }
        }
        let missing = store.wusp_unrecorded_revisions()?;
        if !missing.is_empty() {
            let mut rows = Vec::with_capacity(missing.len());
            for rev in missing {
                let ed = store
                    .revision_xml(rev)
                    .ok()
                    .and_then(|x| Document::parse(&x).ok())
                    .is_some_and(|d| d.explicitly_deployable());
                rows.push((rev, ed));
            }
            store.wusp_record_revisions(&rows)?;
        }
        let c = Arc::new(Catalog::build(store.wusp_catalog_rows()?));
        if let Ok(mut slot) = self.catalog.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// Answers one call; every failure is a fault.
    pub fn handle(&self, store: &Store, call: &Call<'_>) -> Answer {
        let limits = Limits {
            max_bytes: call.body.len().max(Limits::REQUEST.max_bytes),
            ..Limits::REQUEST
        };
        let (op, outcome) = match Envelope::read(call.body, &limits) {
            Err(e) => (String::from("?"), Err(invalid("request", e.to_string()))),
            Ok(env) => {
                let op = env.body.name().to_string();
                let r = self.dispatch(store, call, &env.body);
                (op, r)
            }
        };
        match outcome {
            Ok((body, summary)) => Answer {
                status: 200,
                body,
                summary: format!("{op}: {summary}"),
            },
            Err(f) => {
                let method = format!("{}{op}", call.endpoint.action_prefix());
                let fault = Fault::new(f.code, f.message.clone()).with_method(Some(&method));
                Answer {
                    status: 500,
                    body: fault.to_envelope(SoapVersion::V11),
                    summary: format!(
                        "{op}: fault {} {} ({})",
                        f.code.as_str(),
                        fault.id.as_deref().unwrap_or(""),
                        f.why
                    ),
                }
            }
        }
    }

    fn dispatch(&self, store: &Store, call: &Call<'_>, body: &Element) -> Outcome {
        let op = body.name();
        if body.ns() != Some(call.endpoint.ns()) {
            return Err(invalid(
                "request",
                format!(
                    "{} is not an operation of this service",
                    body.qualified_name()
                ),
            ));
        }
        // Rule: a SOAPAction, when sent, names the operation of the Body
        // (SyncPrinterCatalog also under the spec's SyncUpdates action).
        if let Some(a) = call.action {
            let named = a.rsplit('/').next().unwrap_or("");
            if named != op && !(op == "SyncPrinterCatalog" && named == "SyncUpdates") {
                return Err(invalid(
                    "request",
                    format!("SOAPAction {a:?} does not name {op}"),
                ));
            }
        }
        match (call.endpoint, op) {
            (Endpoint::Client, "GetConfig") => self.get_config(store, call, body),
            (Endpoint::Client, "GetCookie") => self.get_cookie(store, body),
            (Endpoint::Client, "RegisterComputer") => self.register_computer(store, body),
            (Endpoint::Client, "StartCategoryScan") => self.start_category_scan(store, body),
            (Endpoint::Client, "SyncUpdates") => self.sync_updates(store, body),
            (Endpoint::Client, "GetExtendedUpdateInfo") => {
                self.get_extended(store, call, body, false)
            }
            (Endpoint::Client, "GetExtendedUpdateInfo2") => {
                self.get_extended(store, call, body, true)
            }
            (Endpoint::Client, "GetFileLocations") => self.get_file_locations(store, call, body),
            (Endpoint::Client, "RefreshCache") => self.refresh_cache(store, body),
            (Endpoint::Client, "SyncPrinterCatalog") => self.sync_printer_catalog(store, body),
            (Endpoint::SimpleAuth, "GetAuthorizationCookie") => {
                self.get_authorization_cookie(store, body)
            }
            (Endpoint::Reporting, "ReportEventBatch") => self.report_event_batch(store, body),
            _ => Err(invalid("request", format!("operation {op} is not served"))),
        }
    }

    // -----------------------------------------------------------------
    // Cookies
    // -----------------------------------------------------------------

    /// Rule (MS-WUSP 2.2.2.4): the client cookie opens under a key of this
    /// store (InvalidCookie), names this server and a catalog point it has
    /// reached (ServerChanged), has not expired (CookieExpired), and was
    /// issued under the current configuration (ConfigChanged).
    fn client_cookie(
        &self,
        store: &Store,
        body: &Element,
    ) -> std::result::Result<ClientState, Fail> {
        let data = body
            .child("cookie")
            .and_then(|c| c.child_text("EncryptedData"))
            .filter(|d| !d.is_empty())
            .ok_or_else(|| fail(ErrorCode::InvalidCookie, "cookie", "no cookie"))?;
        let raw = B64
            .decode(data)
            .map_err(|_| fail(ErrorCode::InvalidCookie, "cookie", "cookie is not base64"))?;
        let state = self.keys(store)?.open_client(&raw).ok_or_else(|| {
            fail(
                ErrorCode::InvalidCookie,
                "cookie",
                "cookie does not open under this store's keys",
            )
        })?;
        if state.server != self.server_id {
            return Err(fail(
                ErrorCode::ServerChanged,
                "cookie",
                "cookie of another server",
            ));
        }
        if state.mark > store.wusp_generation()? {
            return Err(fail(
                ErrorCode::ServerChanged,
                "cookie",
                "cookie mark ahead of the journal (store restored?)",
            ));
        }
        if state.expires <= now_millis() {
            return Err(fail(ErrorCode::CookieExpired, "cookie", "cookie expired"));
        }
        if state.config_change != self.config_change(store)? {
            return Err(fail(
                ErrorCode::ConfigChanged,
                "cookie",
                "configuration changed since the cookie was issued",
            ));
        }
        Ok(state)
    }

    fn write_cookie(
        &self,
        store: &Store,
        w: &mut XmlWriter,
        name: &str,
        state: &ClientState,
    ) -> Result<()> {
        let sealed = self.keys(store)?.seal_client(state);
        w.start(name)
            .elem("Expiration", &format_millis(state.expires))
            .elem("EncryptedData", &B64.encode(sealed))
            .end(name);
        Ok(())
    }

    /// The computer of a cookie, and whom its deployments are for.
    fn audience(
        &self,
        store: &Store,
        state: &ClientState,
        computer: Option<&ClientComputer>,
    ) -> std::result::Result<(Audience, String), Fail> {
        let optional_install = state.protocol >= (2, 0);
        let groups = match store.targeting()? {
            Targeting::Server => vec![
                computer
                    .map(|c| c.group_id.clone())
                    .unwrap_or_else(|| UNASSIGNED_COMPUTERS.0.to_string()),
            ],
            Targeting::Client => {
                let ids = store.wusp_group_ids(&state.groups)?;
                if ids.is_empty() {
                    vec![UNASSIGNED_COMPUTERS.0.to_string()]
                } else {
                    ids
                }
            }
        };
        let mut key = groups.clone();
        key.sort();
        Ok((
            Audience {
                groups,
                optional_install,
            },
            key.join(";"),
        ))
    }

    // -----------------------------------------------------------------
    // Operations
    // -----------------------------------------------------------------

    fn get_config(&self, store: &Store, call: &Call<'_>, body: &Element) -> Outcome {
        let v = body.child_text("protocolVersion").unwrap_or("");
        if parse_version(v).is_none() {
            return Err(invalid(
                "protocolVersion",
                format!("protocol version {v:?}"),
            ));
        }
        let host = call
            .base_url
            .split("://")
            .nth(1)
            .unwrap_or(call.base_url)
            .rsplit_once(':')
            .map_or(call.base_url, |(h, _)| h);
        let host = host.rsplit('/').next().unwrap_or(host);
        let mut w = XmlWriter::new();
        w.start_ns("GetConfigResponse", CLIENT_NS)
            .start("GetConfigResult")
            .elem("LastChange", &format_millis(self.config_change(store)?))
            .bool_elem("IsRegistrationRequired", true)
            .start("AuthInfo")
            .start("AuthPlugInInfo")
            .elem("PlugInID", "SimpleTargeting")
            .elem("ServiceUrl", "SimpleAuthWebService/SimpleAuth.asmx")
            .empty("Parameter")
            .end("AuthPlugInInfo")
            .end("AuthInfo")
            .start("Properties");
        for (k, v) in [
            (
                "MaxExtendedUpdatesPerRequest",
                MAX_EXTENDED_UPDATES.to_string(),
            ),
            (
                "PackageServerShare",
                format!("\\\\{host}\\UpdateServicesPackages"),
            ),
            ("ProtocolVersion", PROTOCOL_VERSION.to_string()),
            ("IsInventoryRequired", "0".to_string()),
            ("ClientReportingLevel", "2".to_string()),
        ] {
            w.start("ConfigurationProperty")
                .elem("Name", k)
                .elem("Value", &v)
                .end("ConfigurationProperty");
        }
        w.end("Properties")
            .end("GetConfigResult")
            .end("GetConfigResponse");
        Ok((client_envelope(w.as_str()), format!("client protocol {v}")))
    }

    fn get_authorization_cookie(&self, store: &Store, body: &Element) -> Outcome {
        // Rule (WSUS, MS-WUSP <50>, <51>): a missing or malformed client
        // id or DNS name is InternalServerError.
        let client_id = body
            .child_text("clientId")
            .and_then(|c| uuid::Uuid::parse_str(c).ok())
            .ok_or_else(|| {
                fail(
                    ErrorCode::InternalServerError,
                    "",
                    "clientId missing or not a GUID",
                )
            })?
            .to_string();
        let dns = body
            .child_text("dnsName")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| fail(ErrorCode::InternalServerError, "", "dnsName missing"))?;
        let groups: Vec<String> = body
            .child_text("targetGroupName")
            .map(|t| {
                t.split(';')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let state = AuthState {
            server: self.server_id.clone(),
            client_id: client_id.clone(),
            dns_name: dns.chars().take(255).collect(),
            groups,
            expires: now_millis() + self.opts.cookie_lifetime_secs * 1000,
        };
        let sealed = self.keys(store)?.seal_auth(&state);
        let mut w = XmlWriter::new();
        w.start_ns("GetAuthorizationCookieResponse", SIMPLE_AUTH_NS)
            .start("GetAuthorizationCookieResult")
            .elem("PlugInId", "SimpleTargeting")
            .elem("CookieData", &B64.encode(sealed))
            .end("GetAuthorizationCookieResult")
            .end("GetAuthorizationCookieResponse");
        Ok((
            crate::soap::envelope(SoapVersion::V11, w.as_str()),
            format!("client {client_id}"),
        ))
    }

    fn get_cookie(&self, store: &Store, body: &Element) -> Outcome {
        let keys = self.keys(store)?;
        let bad_auth = |why: &str| fail(ErrorCode::InvalidAuthorizationCookie, "authCookies", why);
        let cookies: Vec<&Element> = body
            .child("authCookies")
            .map(|a| a.children_named("AuthorizationCookie").collect())
            .unwrap_or_default();
        // Rule (3.1.5.4): exactly one authorization cookie, ours, unexpired.
        let [auth] = cookies.as_slice() else {
            return Err(bad_auth("not exactly one authorization cookie"));
        };
        if auth.child_text("PlugInId") != Some("SimpleTargeting") {
            return Err(bad_auth("not a SimpleTargeting cookie"));
        }
        let auth = auth
            .child_text("CookieData")
            .and_then(|d| B64.decode(d).ok())
            .and_then(|d| keys.open_auth(&d))
            .ok_or_else(|| {
                bad_auth("authorization cookie does not open under this store's keys")
            })?;
        if auth.server != self.server_id {
            return Err(bad_auth("authorization cookie of another server"));
        }
        if auth.expires <= now_millis() {
            return Err(bad_auth("authorization cookie expired"));
        }
        let current = self.config_change(store)?;
        if let Some(lc) = body.child_text("lastChange") {
            if parse_millis(lc) != Some(current) {
                return Err(fail(
                    ErrorCode::ConfigChanged,
                    "lastChange",
                    format!(
                        "client configuration of {lc}, current {}",
                        format_millis(current)
                    ),
                ));
            }
        }
        let pv = body.child_text("protocolVersion").unwrap_or("");
        let protocol = parse_version(pv)
            .ok_or_else(|| invalid("protocolVersion", format!("protocol version {pv:?}")))?;
        // Rule: an old cookie of this client carries its sync state over;
        // one that does not open is disregarded (MS-WUSP 3.1.5.4 MAY).
        let old = body
            .child("oldCookie")
            .and_then(|c| c.child_text("EncryptedData"))
            .and_then(|d| B64.decode(d).ok())
            .and_then(|d| keys.open_client(&d))
            .filter(|o| o.server == self.server_id && o.client_id == auth.client_id);
        let generation = store.wusp_generation()?;
        let state = ClientState {
            server: self.server_id.clone(),
            client_id: auth.client_id.clone(),
            groups: auth.groups,
            expires: now_millis() + self.opts.cookie_lifetime_secs * 1000,
            protocol,
            config_change: current,
            group: old.as_ref().and_then(|o| o.group.clone()),
            mark: old.map_or(0, |o| o.mark).min(generation),
        };
        let mut w = XmlWriter::new();
        w.start_ns("GetCookieResponse", CLIENT_NS);
        self.write_cookie(store, &mut w, "GetCookieResult", &state)?;
        w.end("GetCookieResponse");
        Ok((
            client_envelope(w.as_str()),
            format!("client {}", state.client_id),
        ))
    }

    fn register_computer(&self, store: &Store, body: &Element) -> Outcome {
        let state = self.client_cookie(store, body)?;
        let info = body
            .child("computerInfo")
            .ok_or_else(|| invalid("computerInfo", "no computerInfo"))?;
        let t = |n: &str| {
            info.child_text(n)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let os = match (t("OSMajorVersion"), t("OSMinorVersion"), t("OSBuildNumber")) {
            (Some(a), Some(b), Some(c)) => Some(format!("{a}.{b}.{c}")),
            _ => None,
        };
        let client_version = match (
            t("ClientVersionMajorNumber"),
            t("ClientVersionMinorNumber"),
            t("ClientVersionBuildNumber"),
            t("ClientVersionQfeNumber"),
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => Some(format!("{a}.{b}.{c}.{d}")),
            _ => None,
        };
        let reg = Registration {
            client_id: state.client_id.clone(),
            dns_name: t("DnsName").unwrap_or_default(),
            os_version: os,
            os_description: t("OSDescription"),
            arch: t("ProcessorArchitecture"),
            manufacturer: t("ComputerManufacturer"),
            model: t("ComputerModel"),
            client_version,
        };
        let c = store.wusp_register(&reg)?;
        if store.targeting()? == Targeting::Client {
            store
                .wusp_set_client_groups(&state.client_id, &store.wusp_group_ids(&state.groups)?)?;
        }
        let mut w = XmlWriter::new();
        w.empty_ns("RegisterComputerResponse", CLIENT_NS);
        Ok((
            client_envelope(w.as_str()),
            format!("computer {} ({})", c.name, c.computer_id),
        ))
    }

    fn start_category_scan(&self, store: &Store, body: &Element) -> Outcome {
        let req = body
            .child("requestedCategories")
            .filter(|r| !r.is_nil())
            .ok_or_else(|| invalid("requestedCategories", "no requestedCategories"))?;
        let rels: Vec<&Element> = req.children_named("CategoryRelationship").collect();
        if rels.len() >= MAX_CATEGORIES {
            return Err(invalid(
                "requestedCategories",
                format!(
                    "{} categories (fewer than {MAX_CATEGORIES} allowed)",
                    rels.len()
                ),
            ));
        }
        let catalog = self.catalog(store)?;
        let mut groups: Vec<(i64, Vec<String>)> = Vec::new();
        for r in rels {
            let idx: i64 = r
                .child_text("IndexOfAndGroup")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| invalid("requestedCategories", "IndexOfAndGroup is not a number"))?;
            let id = r
                .child_text("CategoryId")
                .filter(|i| uuid::Uuid::parse_str(i).is_ok())
                .ok_or_else(|| invalid("requestedCategories", "CategoryId is not a GUID"))?;
            match groups.iter_mut().find(|(i, _)| *i == idx) {
                Some((_, g)) => g.push(id.to_string()),
                None => groups.push((idx, vec![id.to_string()])),
            }
        }
        let mut preferred: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for (_, ids) in &groups {
            let types: Vec<Option<String>> = ids
                .iter()
                .map(|id| {
                    catalog
                        .by_update(id)
                        .filter(|&i| catalog.entry(i).kind == Kind::Category)
                        .map(|i| catalog.entry(i).category_type.clone().unwrap_or_default())
                })
                .collect();
            if types.iter().any(Option::is_none) {
                for (id, t) in ids.iter().zip(&types) {
                    if t.is_none() && !errors.contains(id) {
                        errors.push(id.clone());
                    }
                }
                continue;
            }
            let is = |t: &Option<String>, want: &str| {
                t.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(want))
            };
            let products: Vec<&String> = ids
                .iter()
                .zip(&types)
                .filter(|(_, t)| is(t, "Product"))
                .map(|(i, _)| i)
                .collect();
            let classes = types
                .iter()
                .filter(|t| is(t, "UpdateClassification"))
                .count();
            // Rule (3.1.5.6): a product alone, or a product with one
            // classification, adds the product; anything else empties the
            // preferred list.
            if products.len() == 1 && (ids.len() == 1 || (ids.len() == 2 && classes == 1)) {
                if !preferred.contains(products[0]) {
                    preferred.push(products[0].clone());
                }
            } else {
                preferred.clear();
                break;
            }
        }
        let mut w = XmlWriter::new();
        w.start_ns("StartCategoryScanResponse", CLIENT_NS).list(
            "preferredCategoryIds",
            &preferred,
            |w, g| {
                w.elem("guid", g);
            },
        );
        if !errors.is_empty() {
            w.list("requestedCategoryIdsInError", &errors, |w, g| {
                w.elem("guid", g);
            });
        }
        w.end("StartCategoryScanResponse");
        Ok((
            client_envelope(w.as_str()),
            format!("{} preferred, {} unknown", preferred.len(), errors.len()),
        ))
    }

    fn registered(
        &self,
        store: &Store,
        state: &ClientState,
    ) -> std::result::Result<ClientComputer, Fail> {
        let c = store.wusp_computer(&state.client_id)?.ok_or_else(|| {
            fail(
                ErrorCode::RegistrationRequired,
                "",
                "computer not registered",
            )
        })?;
        store.wusp_touch(&c.computer_id)?;
        Ok(c)
    }

    fn sync_updates(&self, store: &Store, body: &Element) -> Outcome {
        let mut state = self.client_cookie(store, body)?;
        let computer = self.registered(store, &state)?;
        let p = body
            .child("parameters")
            .filter(|p| !p.is_nil())
            .ok_or_else(|| invalid("parameters", "no parameters"))?;
        let flag = |n: &str| p.child_text(n).and_then(parse_bool).unwrap_or(false);
        let skip_software = flag("SkipSoftwareSync");
        let has_spec = p.child("SystemSpec").is_some_and(|s| !s.is_nil());
        if has_spec && !skip_software {
            return Err(invalid(
                "parameters.SystemSpec",
                "SystemSpec in a software pass",
            ));
        }
        let installed = ints(p, "InstalledNonLeafUpdateIDs")
            .map_err(|w| invalid("parameters.InstalledNonLeafUpdateIDs", w))?;
        if installed.len() > MAX_INSTALLED_NON_LEAF {
            return Err(invalid(
                "parameters.InstalledNonLeafUpdateIDs",
                format!(
                    "{} installed non-leaf ids (at most {MAX_INSTALLED_NON_LEAF})",
                    installed.len()
                ),
            ));
        }
        let other = ints(p, "OtherCachedUpdateIDs")
            .map_err(|w| invalid("parameters.OtherCachedUpdateIDs", w))?;
        let filter: Vec<String> = p
            .child("FilterCategoryIds")
            .map(|f| {
                f.children_named("CategoryIdentifier")
                    .filter_map(|c| c.child_text("Id"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let catalog = self.catalog(store)?;
        let (audience, group_key) = self.audience(store, &state, Some(&computer))?;
        let new_protocol = state.protocol >= (1, 7);
        let mut w = XmlWriter::new();
        w.start_ns("SyncUpdatesResponse", CLIENT_NS)
            .start("SyncUpdatesResult");
        let summary;
        if skip_software {
            // The driver pass: no driver matching; nothing is needed.
            let cached = ints(p, "CachedDriverIDs").unwrap_or_default();
            if !cached.is_empty() {
                w.list("OutOfScopeRevisionIDs", &cached, |w, r| {
                    w.elem("int", &r.to_string());
                });
            }
            w.bool_elem("Truncated", false);
            state.mark = catalog.generation;
            state.group = Some(group_key);
            self.write_cookie(store, &mut w, "NewCookie", &state)?;
            if new_protocol {
                w.bool_elem("DriverSyncNotNeeded", true);
            }
            summary = "driver pass: not needed".to_string();
        } else {
            let mark = if state.group.as_deref() == Some(group_key.as_str()) {
                state.mark
            } else {
                0
            };
            let sel = catalog.select(&SyncQuery {
                installed: &installed,
                other_cached: &other,
                filter: &filter,
                need_two_groups: flag("NeedTwoGroupOutOfScopeUpdates") && new_protocol,
                mark,
                page: self.opts.page_size.max(1),
            });
            let now = crate::store::now_rfc3339();
            if !sel.new.is_empty() {
                w.start("NewUpdates");
                for &i in &sel.new {
                    let e = catalog.entry(i);
                    let core = store
                        .revision_xml(e.rev_id)
                        .ok()
                        .and_then(|x| Document::parse(&x).ok())
                        .map(|d| d.core())
                        .ok_or_else(|| {
                            fail(
                                ErrorCode::InternalServerError,
                                "",
                                format!("revision {} cannot be cut", e.rev_id),
                            )
                        })?;
                    write_update_info(
                        &mut w,
                        e.rev_id,
                        &catalog.deployment(i, &audience, &now),
                        e.is_leaf,
                        Some(&core),
                        state.protocol,
                    );
                }
                w.end("NewUpdates");
            }
            if !sel.out_of_scope.is_empty() {
                w.list("OutOfScopeRevisionIDs", &sel.out_of_scope, |w, r| {
                    w.elem("int", &r.to_string());
                });
            }
            if !sel.changed.is_empty() {
                w.start("ChangedUpdates");
                for &i in &sel.changed {
                    let e = catalog.entry(i);
                    write_update_info(
                        &mut w,
                        e.rev_id,
                        &catalog.deployment(i, &audience, &now),
                        e.is_leaf,
                        None,
                        state.protocol,
                    );
                }
                w.end("ChangedUpdates");
            }
            w.bool_elem("Truncated", sel.truncated);
            state.mark = catalog.generation;
            state.group = Some(group_key);
            self.write_cookie(store, &mut w, "NewCookie", &state)?;
            if new_protocol && !sel.deployed_out_of_scope.is_empty() {
                w.list(
                    "DeployedOutOfScopeRevisionIds",
                    &sel.deployed_out_of_scope,
                    |w, r| {
                        w.elem("int", &r.to_string());
                    },
                );
            }
            if new_protocol {
                w.bool_elem("DriverSyncNotNeeded", !filter.is_empty());
            }
            summary = format!(
                "{} new{}, {} out of scope, {} changed, {} installed + {} cached",
                sel.new.len(),
                if sel.truncated { " (truncated)" } else { "" },
                sel.out_of_scope.len() + sel.deployed_out_of_scope.len(),
                sel.changed.len(),
                installed.len(),
                other.len()
            );
        }
        w.end("SyncUpdatesResult").end("SyncUpdatesResponse");
        Ok((client_envelope(w.as_str()), summary))
    }

    fn get_extended(&self, store: &Store, call: &Call<'_>, body: &Element, v2: bool) -> Outcome {
        let state = self.client_cookie(store, body)?;
        let computer = store.wusp_computer(&state.client_id)?;
        if let Some(c) = &computer {
            store.wusp_touch(&c.computer_id)?;
        }
        let catalog = self.catalog(store)?;
        // The asked revisions: ids (GetExtendedUpdateInfo) or update
        // identities (GetExtendedUpdateInfo2), each resolved to the current
        // revision in scope, or out of scope.
        let mut asked: Vec<Option<usize>> = Vec::new();
        let mut out_of_scope: Vec<i64> = Vec::new();
        if v2 {
            let ids: Vec<&Element> = body
                .child("updateIDs")
                .map(|u| u.children_named("UpdateIdentity").collect())
                .unwrap_or_default();
            if ids.len() > MAX_EXTENDED_UPDATES {
                return Err(invalid(
                    "updateIDs",
                    format!("{} updates (at most {MAX_EXTENDED_UPDATES})", ids.len()),
                ));
            }
            for id in ids {
                let found = id
                    .child_text("UpdateID")
                    .and_then(|u| catalog.by_update(u))
                    .filter(|&i| catalog.entry(i).in_scope);
                asked.push(found);
            }
        } else {
            let revs = ints(body, "revisionIDs").map_err(|w| invalid("revisionIDs", w))?;
            if revs.len() > MAX_EXTENDED_UPDATES {
                return Err(invalid(
                    "revisionIDs",
                    format!("{} revisions (at most {MAX_EXTENDED_UPDATES})", revs.len()),
                ));
            }
            for r in revs {
                match catalog.by_rev(r).filter(|&i| catalog.entry(i).in_scope) {
                    Some(i) => asked.push(Some(i)),
                    None => {
                        out_of_scope.push(r);
                        asked.push(None);
                    }
                }
            }
        }
        let types: Vec<String> = body
            .child("infoTypes")
            .map(|t| {
                t.children()
                    .iter()
                    .map(|c| c.text().trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if types.is_empty() {
            return Err(invalid("infoTypes", "no infoTypes"));
        }
        let locales: Vec<String> = body
            .child("locales")
            .map(|t| {
                t.children()
                    .iter()
                    .map(|c| c.text().trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if locales.is_empty()
            && types
                .iter()
                .any(|t| t == "LocalizedProperties" || t == "Eula")
        {
            return Err(invalid(
                "locales",
                "no locales for LocalizedProperties or Eula",
            ));
        }
        let mut langs: Vec<String> = Vec::new();
        for l in locales.iter().map(String::as_str).chain(["en"]) {
            if !langs.iter().any(|x| x.eq_ignore_ascii_case(l)) {
                langs.push(l.to_string());
            }
        }
        let mut docs: HashMap<usize, Document> = HashMap::new();
        for &i in asked.iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(v) = docs.entry(i) {
                let d = store
                    .revision_xml(catalog.entry(i).rev_id)
                    .ok()
                    .and_then(|x| Document::parse(&x).ok())
                    .ok_or_else(|| {
                        fail(
                            ErrorCode::InternalServerError,
                            "",
                            "a revision cannot be cut",
                        )
                    })?;
                v.insert(d);
            }
        }
        let mut updates: Vec<(i64, String)> = Vec::new();
        let mut file_urls = false;
        for t in &types {
            for &i in asked.iter().flatten() {
                let d = &docs[&i];
                let rev = catalog.entry(i).rev_id;
                match t.as_str() {
                    "Core" => updates.push((rev, d.core())),
                    "Extended" => updates.push((rev, d.extended())),
                    "LocalizedProperties" => {
                        let mut got: Vec<String> =
                            langs.iter().filter_map(|l| d.localized(l)).collect();
                        if got.is_empty() {
                            if let Some(f) = d.default_language().and_then(|l| d.localized(&l)) {
                                got.push(f);
                            }
                        }
                        updates.extend(got.into_iter().map(|x| (rev, x)));
                    }
                    "Eula" => {
                        for l in &langs {
                            updates.extend(d.eulas(l).into_iter().map(|x| (rev, x)));
                        }
                    }
                    "FileUrl" => file_urls = true,
                    _ => {}
                }
            }
        }
        // FileLocations: one per distinct file of the asked revisions
        // (GetExtendedUpdateInfo2: when FileUrl is asked).
        let mut locations: Vec<(Vec<u8>, String)> = Vec::new();
        if !v2 || file_urls {
            let mut seen = HashSet::new();
            for &i in asked.iter().flatten() {
                for (sha1, name) in store.wusp_files_of(catalog.entry(i).rev_id)? {
                    if seen.insert(sha1.clone()) {
                        if let Some(url) = file_url(call.base_url, &sha1, &name) {
                            locations.push((sha1, url));
                        }
                    }
                }
            }
        }
        let op = if v2 {
            "GetExtendedUpdateInfo2"
        } else {
            "GetExtendedUpdateInfo"
        };
        let mut w = XmlWriter::new();
        w.start_ns(&format!("{op}Response"), CLIENT_NS)
            .start(&format!("{op}Result"));
        if !updates.is_empty() || !v2 {
            w.list("Updates", &updates, |w, (rev, xml)| {
                w.start("Update")
                    .elem("ID", &rev.to_string())
                    .elem("Xml", xml)
                    .end("Update");
            });
        }
        if !locations.is_empty() {
            write_locations(&mut w, &locations);
        }
        if !v2 && !out_of_scope.is_empty() {
            w.list("OutOfScopeRevisionIDs", &out_of_scope, |w, r| {
                w.elem("int", &r.to_string());
            });
        }
        w.end(&format!("{op}Result")).end(&format!("{op}Response"));
        Ok((
            client_envelope(w.as_str()),
            format!(
                "{} fragments of {} revisions, {} files, {} out of scope",
                updates.len(),
                asked.len(),
                locations.len(),
                out_of_scope.len()
            ),
        ))
    }

    fn get_file_locations(&self, store: &Store, call: &Call<'_>, body: &Element) -> Outcome {
        let state = self.client_cookie(store, body)?;
        if let Some(c) = store.wusp_computer(&state.client_id)? {
            store.wusp_touch(&c.computer_id)?;
        }
        let digests: Vec<&Element> = body
            .child("fileDigests")
            .map(|d| d.children().iter().collect())
            .unwrap_or_default();
        let mut locations = Vec::new();
        for d in digests {
            // Rule (3.1.5.10): every digest is a 20-byte SHA-1.
            let raw = B64
                .decode(d.text().trim())
                .ok()
                .filter(|r| r.len() == 20)
                .ok_or_else(|| invalid("fileDigests", "a digest is not 20 bytes of base64"))?;
            if let Some(name) = store.wusp_file_name(&raw)? {
                if let Some(url) = file_url(call.base_url, &raw, &name) {
                    locations.push((raw, url));
                }
            }
        }
        let mut w = XmlWriter::new();
        w.start_ns("GetFileLocationsResponse", CLIENT_NS)
            .start("GetFileLocationsResult");
        write_locations(&mut w, &locations);
        self.write_cookie(store, &mut w, "NewCookie", &state)?;
        w.end("GetFileLocationsResult")
            .end("GetFileLocationsResponse");
        Ok((
            client_envelope(w.as_str()),
            format!("{} locations", locations.len()),
        ))
    }

    fn refresh_cache(&self, store: &Store, body: &Element) -> Outcome {
        let state = self.client_cookie(store, body)?;
        let computer = store.wusp_computer(&state.client_id)?;
        let ids: Vec<&Element> = body
            .child("globalIDs")
            .map(|g| g.children_named("UpdateIdentity").collect())
            .unwrap_or_default();
        if ids.len() > MAX_REFRESH {
            return Err(invalid(
                "globalIDs",
                format!("{} identities (at most {MAX_REFRESH})", ids.len()),
            ));
        }
        let catalog = self.catalog(store)?;
        let (audience, _) = self.audience(store, &state, computer.as_ref())?;
        let now = crate::store::now_rfc3339();
        let mut w = XmlWriter::new();
        w.start_ns("RefreshCacheResponse", CLIENT_NS)
            .start("RefreshCacheResult");
        let mut n = 0;
        for id in ids {
            let rev: Option<i32> = id.child_text("RevisionNumber").and_then(|r| r.parse().ok());
            let Some(i) = id
                .child_text("UpdateID")
                .and_then(|u| catalog.by_update(u))
                .filter(|&i| catalog.entry(i).in_scope && Some(catalog.entry(i).revision) == rev)
            else {
                continue;
            };
            let e = catalog.entry(i);
            n += 1;
            w.start("RefreshCacheResult")
                .elem("RevisionID", &e.rev_id.to_string())
                .start("GlobalID")
                .elem(
                    "UpdateID",
                    id.child_text("UpdateID").unwrap_or(&e.update_id),
                )
                .elem("RevisionNumber", &e.revision.to_string())
                .end("GlobalID")
                .bool_elem("IsLeaf", e.is_leaf);
            write_deployment(
                &mut w,
                &catalog.deployment(i, &audience, &now),
                state.protocol,
            );
            w.end("RefreshCacheResult");
        }
        w.end("RefreshCacheResult").end("RefreshCacheResponse");
        Ok((client_envelope(w.as_str()), format!("{n} revisions")))
    }

    fn sync_printer_catalog(&self, store: &Store, body: &Element) -> Outcome {
        let state = self.client_cookie(store, body)?;
        let mut w = XmlWriter::new();
        w.start_ns("SyncPrinterCatalogResponse", CLIENT_NS)
            .start("SyncPrinterCatalogResult")
            .bool_elem("Truncated", false);
        self.write_cookie(store, &mut w, "NewCookie", &state)?;
        w.end("SyncPrinterCatalogResult")
            .end("SyncPrinterCatalogResponse");
        Ok((client_envelope(w.as_str()), "no printer drivers".into()))
    }

    fn report_event_batch(&self, store: &Store, body: &Element) -> Outcome {
        let state = self.client_cookie(store, body)?;
        let computer = match store.wusp_computer(&state.client_id)? {
            Some(c) => c,
            None => store.wusp_register(&Registration {
                client_id: state.client_id.clone(),
                ..Registration::default()
            })?,
        };
        let mut events = Vec::new();
        let mut skipped = 0;
        if let Some(batch) = body.child("eventBatch") {
            for e in batch.children_named("ReportingEvent") {
                match read_event(e) {
                    Some(ev) => events.push(ev),
                    None => skipped += 1,
                }
            }
        }
        let catalog = self.catalog(store)?;
        let (audience, _) = self.audience(store, &state, Some(&computer))?;
        let before: HashMap<String, UpdateState> = store
            .wusp_status_of(&computer.computer_id)?
            .into_iter()
            .collect();
        let now = crate::store::now_rfc3339();
        let reportable: HashSet<usize> = catalog
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                e.in_scope
                    && !e.declined
                    && matches!(e.kind, Kind::Software | Kind::Driver)
                    && !matches!(
                        catalog.deployment(*i, &audience, &now).action,
                        Action::Bundle | Action::Evaluate
                    )
            })
            .map(|(i, _)| i)
            .collect();
        let stored = store.wusp_report(
            &computer.computer_id,
            &events,
            self.opts.event_bound,
            |fresh| derive_status(&catalog, &reportable, &events, fresh, before),
        )?;
        let mut w = XmlWriter::new();
        w.start_ns("ReportEventBatchResponse", REPORTING_NS)
            .bool_elem("ReportEventBatchResult", true)
            .end("ReportEventBatchResponse");
        Ok((
            crate::soap::envelope(SoapVersion::V11, w.as_str()),
            format!(
                "{} events, {stored} new{}",
                events.len(),
                if skipped > 0 {
                    format!(", {skipped} unreadable skipped")
                } else {
                    String::new()
                }
            ),
        ))
    }
}

/// The client service's envelope, as WCF writes it.
fn client_envelope(body: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body xmlns:xsi=\"{}\" xmlns:xsd=\"{}\">{body}</s:Body></s:Envelope>",
        crate::soap::SOAP11_ENV,
        crate::soap::XSI_NS,
        crate::soap::XSD_NS
    )
}

/// The `int` children of `parent/name`; absent or nil is empty.
fn ints(parent: &Element, name: &str) -> std::result::Result<Vec<i64>, String> {
    let Some(list) = parent.child(name).filter(|l| !l.is_nil()) else {
        return Ok(Vec::new());
    };
    list.children()
        .iter()
        .map(|c| {
            c.text().trim().parse::<i64>().map_err(|_| {
                format!(
                    "{name}: {:?} is not an int",
                    c.text().chars().take(40).collect::<String>()
                )
            })
        })
        .collect()
}

fn write_deployment(w: &mut XmlWriter, d: &Deployment, protocol: (u32, u32)) {
    w.start("Deployment")
        .elem("ID", &d.id.to_string())
        .elem("Action", d.action.as_str())
        .opt_elem("Deadline", d.deadline.as_deref())
        .bool_elem("IsAssigned", d.is_assigned)
        .elem("LastChangeTime", &d.last_change);
    // Rule (2.2.2.2.4): AutoSelect, AutoDownload and SupersedenceBehavior
    // only for clients of protocol 1.8 and later.
    if protocol >= (1, 8) {
        w.elem("AutoSelect", "0")
            .elem("AutoDownload", "0")
            .elem("SupersedenceBehavior", "0");
    }
    w.end("Deployment");
}

fn write_update_info(
    w: &mut XmlWriter,
    rev: i64,
    d: &Deployment,
    is_leaf: bool,
    xml: Option<&str>,
    protocol: (u32, u32),
) {
    w.start("UpdateInfo").elem("ID", &rev.to_string());
    write_deployment(w, d, protocol);
    w.bool_elem("IsLeaf", is_leaf);
    if let Some(x) = xml {
        w.elem("Xml", x);
    }
    w.end("UpdateInfo");
}

fn write_locations(w: &mut XmlWriter, locations: &[(Vec<u8>, String)]) {
    w.list("FileLocations", locations, |w, (sha1, url)| {
        w.start("FileLocation")
            .elem("FileDigest", &B64.encode(sha1))
            .elem("Url", url)
            .end("FileLocation");
    });
}

/// `<base>/Content/XX/<SHA-1>.ext` of a file.
fn file_url(base: &str, sha1: &[u8], name: &str) -> Option<String> {
    let sha1: [u8; 20] = sha1.try_into().ok()?;
    Some(format!("{base}/Content/{}", wsus_rel_path(&sha1, name)))
}

fn read_event(e: &Element) -> Option<EventRow> {
    let b = e.child("BasicData")?;
    let num = |n: &str| b.child_text(n).and_then(|v| v.parse::<i64>().ok());
    let instance_id = b
        .child_text("EventInstanceID")
        .and_then(|i| uuid::Uuid::parse_str(i).ok())?
        .to_string();
    let (update_id, revision) = match b.child("UpdateID") {
        Some(u) => {
            let id = u
                .child_text("UpdateID")
                .and_then(|i| uuid::Uuid::parse_str(i).ok())
                .filter(|i| !i.is_nil())
                .map(|i| i.to_string());
            let rev = u.child_text("RevisionNumber").and_then(|r| r.parse().ok());
            (id.clone(), id.and(rev))
        }
        None => (None, None),
    };
    let hresult = b
        .child_text("Win32HResult")
        .or_else(|| b.child_text("Win32Hresult"))
        .and_then(|h| h.parse::<i64>().ok())
        .unwrap_or(0);
    let strings = |n: &str| -> Vec<String> {
        e.child("ExtendedData")
            .and_then(|x| x.child(n))
            .map(|l| {
                l.children()
                    .iter()
                    .take(256)
                    .map(|s| s.text().chars().take(16 * 1024).collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(EventRow {
        instance_id,
        time_at_target: b
            .child_text("TimeAtTarget")
            .unwrap_or("")
            .chars()
            .take(64)
            .collect(),
        namespace_id: num("NamespaceID").unwrap_or(1),
        event_id: num("EventID")?,
        source_id: num("SourceID").unwrap_or(0),
        update_id,
        revision,
        hresult,
        app_name: b
            .child_text("AppName")
            .map(|a| a.chars().take(256).collect()),
        replacement: strings("ReplacementStrings"),
        misc: strings("MiscData"),
    })
}

/// The status changes of the new events of a batch, in order
/// (docs/protocol.md, MS-WUSP status rules).
fn derive_status(
    catalog: &Catalog,
    reportable: &HashSet<usize>,
    events: &[EventRow],
    fresh: &[bool],
    mut current: HashMap<String, UpdateState>,
) -> Vec<StatusChange> {
    let mut out = Vec::new();
    for (e, _) in events.iter().zip(fresh).filter(|(_, f)| **f) {
        if e.namespace_id != 1 {
            continue;
        }
        if e.event_id == 156 {
            let mut listed: HashMap<usize, UpdateState> = HashMap::new();
            // Later keys win: needed < downloaded < failed < installed.
            for (key, state) in [
                ("U", UpdateState::Needed),
                ("h", UpdateState::Downloaded),
                ("g", UpdateState::Failed),
                ("V", UpdateState::Installed),
                ("W", UpdateState::Installed),
            ] {
                for m in &e.misc {
                    let Some(list) = m.strip_prefix(key).and_then(|r| r.strip_prefix('=')) else {
                        continue;
                    };
                    for id in list.split(';') {
                        if let Some(i) = catalog
                            .by_update(id.trim())
                            .filter(|i| reportable.contains(i))
                        {
                            listed.insert(i, state);
                        }
                    }
                }
            }
            let mut rows: Vec<(String, UpdateState)> = reportable
                .iter()
                .map(|&i| {
                    (
                        catalog.entry(i).update_id.clone(),
                        listed
                            .get(&i)
                            .copied()
                            .unwrap_or(UpdateState::NotApplicable),
                    )
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            current = rows.iter().cloned().collect();
            out.push(StatusChange::Snapshot(rows));
            continue;
        }
        let Some(i) = e
            .update_id
            .as_deref()
            .and_then(|u| catalog.by_update(u))
            .filter(|i| reportable.contains(i))
        else {
            continue;
        };
        let u = catalog.entry(i).update_id.clone();
        let state = match e.event_id {
            183 | 190 | 197 | 203 | 184 | 191 | 199 => Some(UpdateState::Installed),
            201 if e.hresult >= 0 => Some(UpdateState::Installed),
            182 | 195 | 198 | 204 | 187 | 192 | 200 | 221 => Some(UpdateState::Failed),
            162 | 164 if current.get(&u) != Some(&UpdateState::Installed) => {
                Some(UpdateState::Downloaded)
            }
            222 | 224 => Some(UpdateState::Needed),
            _ => None,
        };
        if let Some(s) = state {
            current.insert(u.clone(), s);
            out.push(StatusChange::Set(u, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_times() {
        assert_eq!(parse_version("2.90"), Some((2, 90)));
        assert!(parse_version("2.90").unwrap() > parse_version("2.4").unwrap());
        for bad in ["", "2", "a.b", "1.2.3"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        let ms = 1_791_169_415_996;
        assert_eq!(parse_millis(&format_millis(ms)), Some(ms));
        assert_eq!(
            parse_millis("2026-10-04T13:17:07.59Z"),
            Some(1_791_119_827_590)
        );
    }

    #[test]
    fn int_lists_read_absent_and_nil_as_empty() {
        let e = crate::soap::xml::parse_str(
            "<p xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><A><int>1</int><int> 2 </int></A><N i:nil=\"true\"/><B><int>x</int></B></p>",
            &Limits::REQUEST,
        )
        .unwrap();
        assert_eq!(ints(&e, "A").unwrap(), [1, 2]);
        assert!(ints(&e, "N").unwrap().is_empty());
        assert!(ints(&e, "Z").unwrap().is_empty());
        assert!(ints(&e, "B").is_err());
    }
}
