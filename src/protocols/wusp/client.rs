//! A simulated Windows Update Agent (WUA): the client side of MS-WUSP, as
//! a real Windows client drives a WSUS (`wusp-notes.md`, the captures in
//! `wsus-m0-native/`), over a modelled machine. Tests, the scan benchmark
//! (`examples/wua_bench.rs`) and `gapsync demo` use it against `serve`.
//! Blocking (`ureq`); one [`Wua`] is one client.
//!
//! # What it does
//! - **Handshake**: GetConfig (kept: `LastChange`, the auth plug-in's
//!   relative service URL), GetAuthorizationCookie (SimpleAuth), GetCookie
//!   (the first time with an `oldCookie` holding only an `Expiration`, as
//!   the captured client; later with the previous cookie), RegisterComputer.
//! - **Scan** ([`Wua::scan`]): SyncUpdates software passes: each sends the
//!   revision ids of the cached non-leaf updates the machine evaluates as
//!   installed (`InstalledNonLeafUpdateIDs`) and every other cached id
//!   (`OtherCachedUpdateIDs`); NewUpdates are added to the cache (their
//!   core fragment parsed: identity, type, prerequisites, bundled and
//!   superseded updates), ChangedUpdates replace deployments and IsLeaf,
//!   out-of-scope ids leave the cache. Passes repeat while an answer was
//!   truncated, brought anything new, or the installed non-leaf set grew
//!   (a category chain arrives one level per pass), then a driver pass
//!   (`SkipSoftwareSync`, a small `SystemSpec`). The cache persists across
//!   scans: a rescan with nothing changed gets nothing new.
//! - **Faults** (MS-WUSP 2.2.2.4): InvalidCookie and ServerChanged →
//!   GetConfig, GetAuthorizationCookie, GetCookie, RefreshCache of the
//!   cached identities (entries it does not return leave the cache, the
//!   others take the returned revision ids), then the operation again;
//!   CookieExpired → GetAuthorizationCookie, GetCookie (with the old
//!   cookie); ConfigChanged → GetConfig, GetAuthorizationCookie, GetCookie;
//!   RegistrationRequired → RegisterComputer. At most [`MAX_RECOVERIES`]
//!   recoveries per operation; every recovery is counted in [`Stats`].
//!   InternalServerError, ServerBusy and HTTP 503: the same request again
//!   after 50 ms, 100 ms... at most [`RETRIES`] times ("SHOULD try the
//!   failed operation again later").
//! - **Install** ([`Wua::install`]): every *needed* update whose action is
//!   `Install`, with its bundled updates: GetExtendedUpdateInfo (Extended
//!   fragments: files with SHA-1 `Digest`, SHA-256 `AdditionalDigest`,
//!   `Size`; and `FileLocations`), GetFileLocations for the digests, then
//!   the content: HTTP `Range` GETs of [`WuaOptions::piece`] bytes (1 MiB),
//!   all pieces of all files in shuffled order, over
//!   [`WuaOptions::connections`] connections at once; each file's length,
//!   SHA-1 and SHA-256 (when given) must match. Then events 167, 162 (with
//!   `B=` bytes), 181 and 183 (or 182 for an update the machine fails), and
//!   a 156 status event, in one ReportEventBatch.
//! - **Status** ([`Wua::report_status`]): event 156 with `U=` (needed) and
//!   `V=` (installed or not applicable) lists of reportable updates.
//!
//! # The machine model ([`Machine`])
//! Kept simple and deterministic; the test oracles re-derive it from the
//! update XML:
//! - a **category** evaluates installed; a **detectoid** evaluates
//!   installed unless listed in `Machine::not_applicable`; a **software**
//!   update is installed when in `Machine::installed`; drivers never (no
//!   driver matching). An update counts as installed only when every
//!   prerequisite clause has an alternative that counts as installed.
//! - **needed**: a cached software update whose action is not `Bundle` or
//!   `Evaluate`, whose prerequisites are met, that is not installed, not in
//!   `not_applicable`, and not superseded by an installed update.
//! - **reportable** (lists of event 156): cached software updates whose
//!   action is not `Bundle` or `Evaluate`; those not needed are `V`.
//! - installing an update installs its bundled updates too; an update in
//!   `Machine::failing` fails to install (event 182) and stays needed.
//!
//! No answer of a server makes it panic: every malformed answer, fault it
//! cannot recover from, or transport failure is a [`WuaError`] naming the
//! operation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::soap::{Element, Envelope, Limits, XmlWriter, xml::escape};

use super::server::{
    CLIENT_NS, CLIENT_PATH, MAX_EXTENDED_UPDATES, MAX_REFRESH, REPORTING_NS, REPORTING_PATH,
    SIMPLE_AUTH_NS, SIMPLE_AUTH_PATH,
};

/// The protocol version the client announces (the captured Windows 11).
pub const CLIENT_PROTOCOL: &str = "2.90";
/// Recoveries (handshakes) at most per operation before giving up.
pub const MAX_RECOVERIES: u32 = 3;
/// Times an operation is tried again after InternalServerError or
/// ServerBusy.
pub const RETRIES: u32 = 5;
/// SyncUpdates passes at most per scan.
pub const MAX_PASSES: u32 = 1_000;
/// Largest SOAP answer read.
const MAX_ANSWER: u64 = 256 << 20;
/// Most content bytes one install downloads (held in memory).
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// What went wrong, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum WuaError {
    /// A SOAP fault the client does not recover from (or recovered from
    /// too often).
    #[error("{op}: server fault {code}: {message}")]
    Fault {
        op: String,
        code: String,
        message: String,
    },
    /// An answer that is not the operation's response.
    #[error("{op}: malformed answer: {why}")]
    Malformed { op: String, why: String },
    /// Transport failure or an unusable HTTP status.
    #[error("{op} {url}: {why}")]
    Http {
        op: String,
        url: String,
        why: String,
    },
    /// Downloaded content that does not match its metadata.
    #[error("download of {file}: {why}")]
    Content { file: String, why: String },
    /// The scan did not converge.
    #[error("SyncUpdates: {0}")]
    Scan(String),
}

type Result<T> = std::result::Result<T, WuaError>;
/// Files of each revision id.
type FilesByRev = HashMap<i64, Vec<FileMeta>>;
/// URL of each SHA-1.
type Locations = HashMap<Vec<u8>, String>;

fn malformed(op: &str, why: impl Into<String>) -> WuaError {
    WuaError::Malformed {
        op: op.to_string(),
        why: why.into(),
    }
}

/// The modelled machine (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// WUA's client id (a GUID).
    pub client_id: String,
    pub dns_name: String,
    /// `major.minor.build`, e.g. `10.0.26200`.
    pub os_version: String,
    pub os_description: String,
    /// `AMD64`, `ARM64`...
    pub arch: String,
    pub manufacturer: String,
    pub model: String,
    /// Installed software updates (lower-case update ids).
    pub installed: BTreeSet<String>,
    /// Detectoids that evaluate false and updates that are not applicable
    /// (lower-case update ids).
    pub not_applicable: BTreeSet<String>,
    /// Updates whose installation fails (lower-case update ids).
    pub failing: BTreeSet<String>,
    /// Client-side targeting: the group names sent in
    /// GetAuthorizationCookie.
    pub target_groups: Vec<String>,
}

impl Machine {
    /// A Windows 11 x64 machine named `name` with client id `client_id`.
    pub fn new(client_id: &str, name: &str) -> Machine {
        Machine {
            client_id: client_id.to_ascii_lowercase(),
            dns_name: name.to_string(),
            os_version: "10.0.26200".into(),
            os_description: "Windows 11 Pro".into(),
            arch: "AMD64".into(),
            manufacturer: "gapsync".into(),
            model: "Simulated PC".into(),
            ..Machine::default()
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct WuaOptions {
    /// Connections downloading content at once (Delivery Optimization
    /// uses up to 7).
    pub connections: usize,
    /// Bytes per Range request (1 MiB).
    pub piece: u64,
    /// Locales asked for LocalizedProperties.
    pub locales: Vec<String>,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Seed of the piece shuffle.
    pub seed: u64,
}

impl Default for WuaOptions {
    fn default() -> Self {
        WuaOptions {
            connections: 4,
            piece: 1 << 20,
            locales: vec!["en-US".into(), "en".into()],
            timeout: Duration::from_secs(60),
            seed: 1,
        }
    }
}

/// A deployment as the client keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: i64,
    pub action: String,
    pub deadline: Option<String>,
    pub is_assigned: bool,
    pub last_change: String,
}

/// One cached revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub rev_id: i64,
    /// Lower case.
    pub update_id: String,
    pub revision: i32,
    /// `Properties/@UpdateType`: Software, Driver, Category, Detectoid.
    pub kind: String,
    pub is_leaf: bool,
    pub deployment: Deployment,
    /// Prerequisite clauses (each: alternatives, lower-case update ids).
    pub prerequisites: Vec<Vec<String>>,
    pub bundled: Vec<String>,
    pub superseded: Vec<String>,
}

/// Counters of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub sync_passes: u64,
    /// Faults recovered from, by ErrorCode.
    pub recoveries: BTreeMap<String, u64>,
    pub refreshed: u64,
    /// Operations tried again after InternalServerError or ServerBusy.
    pub retries: u64,
    pub downloaded_bytes: u64,
    pub range_requests: u64,
}

/// What one scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub passes: u32,
    /// Revisions received as NewUpdates.
    pub new: usize,
    pub changed: usize,
    pub out_of_scope: usize,
    /// Needed updates after the scan (lower-case ids, sorted).
    pub needed: Vec<String>,
}

/// One installed (or failed) update.
#[derive(Debug, Clone)]
pub struct Installed {
    pub update_id: String,
    pub action: String,
    pub deadline: Option<String>,
    /// Files downloaded and verified for it (and its bundled updates).
    pub files: usize,
    pub bytes: u64,
    pub ok: bool,
}

/// A file to fetch, from an Extended fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub sha1: Vec<u8>,
    pub sha256: Option<Vec<u8>>,
    pub name: String,
    pub size: u64,
}

/// A parsed core fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Core {
    pub update_id: String,
    pub revision: i32,
    pub kind: String,
    pub prerequisites: Vec<Vec<String>>,
    pub bundled: Vec<String>,
    pub superseded: Vec<String>,
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().as_ref() == name)
            .then(|| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            })
            .flatten()
    })
}

/// Parses a core fragment (a sequence of elements, prefixes already
/// replaced by the server: not a document on its own).
pub fn parse_core(xml: &str) -> std::result::Result<Core, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut core = Core::default();
    loop {
        let ev = r.read_event().map_err(|e| e.to_string())?;
        let (e, empty) = match &ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = e.local_name().as_ref().to_string();
        let at: Vec<&str> = path.iter().map(String::as_str).collect();
        let id = || attr(e, "UpdateID").map(|s| s.to_ascii_lowercase());
        match (at.as_slice(), name.as_str()) {
            ([], "UpdateIdentity") => {
                core.update_id = id().ok_or("UpdateIdentity without UpdateID")?;
                core.revision = attr(e, "RevisionNumber")
                    .and_then(|r| r.parse().ok())
                    .ok_or("UpdateIdentity without a RevisionNumber")?;
            }
            ([], "Properties") => core.kind = attr(e, "UpdateType").unwrap_or_default(),
            (["Relationships", "Prerequisites"], "UpdateIdentity") => {
                core.prerequisites.extend(id().map(|i| vec![i]));
            }
            (["Relationships", "Prerequisites"], "AtLeastOne") => core.prerequisites.push(vec![]),
            (["Relationships", "Prerequisites", "AtLeastOne"], "UpdateIdentity") => {
                if let (Some(c), Some(i)) = (core.prerequisites.last_mut(), id()) {
                    c.push(i);
                }
            }
            (["Relationships", "BundledUpdates", ..], "UpdateIdentity") => {
                core.bundled.extend(id());
            }
            (["Relationships", "SupersededUpdates", ..], "UpdateIdentity") => {
                core.superseded.extend(id());
            }
            _ => {}
        }
        if !empty {
            path.push(name);
        }
        if path.len() > 64 {
            return Err("nested too deep".into());
        }
    }
    if core.update_id.is_empty() {
        return Err("no UpdateIdentity".into());
    }
    Ok(core)
}

/// The files of an Extended fragment.
pub fn parse_files(xml: &str) -> std::result::Result<Vec<FileMeta>, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out: Vec<FileMeta> = Vec::new();
    let mut in_sha256 = false;
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "File" => {
                let sha1 = attr(&e, "Digest")
                    .and_then(|d| B64.decode(d.trim()).ok())
                    .filter(|d| d.len() == 20)
                    .ok_or("File without a SHA-1 Digest")?;
                out.push(FileMeta {
                    sha1,
                    sha256: None,
                    name: attr(&e, "FileName").unwrap_or_default(),
                    size: attr(&e, "Size")
                        .and_then(|s| s.parse().ok())
                        .ok_or("File without a Size")?,
                });
            }
            Event::Start(e) if e.local_name().as_ref() == "AdditionalDigest" => {
                in_sha256 = attr(&e, "Algorithm").is_some_and(|a| a.eq_ignore_ascii_case("SHA256"));
            }
            Event::Text(t) if in_sha256 => {
                let d = B64
                    .decode(t.xml10_content().trim())
                    .ok()
                    .filter(|d| d.len() == 32)
                    .ok_or("AdditionalDigest is not a SHA-256")?;
                if let Some(f) = out.last_mut() {
                    f.sha256 = Some(d);
                }
                in_sha256 = false;
            }
            Event::End(_) => in_sha256 = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// A client session: the machine, its cache and its cookies.
pub struct Wua {
    base: String,
    agent: ureq::Agent,
    opts: WuaOptions,
    pub machine: Machine,
    cache: BTreeMap<i64, Cached>,
    last_change: Option<String>,
    auth_url: String,
    cookie: Option<(String, String)>,
    registered: bool,
    stats: Stats,
}

impl std::fmt::Debug for Wua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wua({} at {})", self.machine.dns_name, self.base)
    }
}

/// An operation's answer: the response element, or a fault (code,
/// message).
enum Answer {
    Ok(Element),
    Fault(String, String),
}

impl Wua {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, machine: Machine, opts: WuaOptions) -> Wua {
        Wua {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(&opts),
            opts,
            machine,
            cache: BTreeMap::new(),
            last_change: None,
            auth_url: String::new(),
            cookie: None,
            registered: false,
            stats: Stats::default(),
        }
    }

    /// Points the client at another server (the cache is kept: the next
    /// operation meets InvalidCookie or ServerChanged and recovers).
    pub fn set_server(&mut self, base: &str) {
        self.base = base.trim_end_matches('/').to_string();
        self.agent = agent(&self.opts);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The cached revisions by revision id.
    pub fn cache(&self) -> &BTreeMap<i64, Cached> {
        &self.cache
    }

    /// The cached entry of an update id (any case).
    pub fn cached(&self, update_id: &str) -> Option<&Cached> {
        let u = update_id.to_ascii_lowercase();
        self.cache.values().find(|c| c.update_id == u)
    }

    // -----------------------------------------------------------------
    // Transport
    // -----------------------------------------------------------------

    /// [`Self::post_once`], tried again after InternalServerError and
    /// ServerBusy faults and HTTP 503 ("the client SHOULD try the failed
    /// operation again later", MS-WUSP 2.2.2.4): at most [`RETRIES`]
    /// times, waiting 50 ms, 100 ms, 200 ms...
    fn post(&mut self, path: &str, ns: &str, op: &str, inner: &str) -> Result<Answer> {
        let mut attempt = 0;
        loop {
            let r = self.post_once(path, ns, op, inner);
            let again = match &r {
                Ok(Answer::Fault(code, _)) => code == "InternalServerError" || code == "ServerBusy",
                Err(WuaError::Http { why, .. }) => why == "HTTP 503",
                _ => false,
            };
            if !again || attempt >= RETRIES {
                return r;
            }
            attempt += 1;
            self.stats.retries += 1;
            std::thread::sleep(Duration::from_millis(50 << (attempt - 1).min(6)));
        }
    }

    fn post_once(&mut self, path: &str, ns: &str, op: &str, inner: &str) -> Result<Answer> {
        let action_base = if ns == REPORTING_NS {
            "http://www.microsoft.com/SoftwareDistribution/".to_string()
        } else {
            format!("{ns}/")
        };
        let body = format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><{op} xmlns=\"{ns}\">{inner}</{op}></s:Body></s:Envelope>"
        );
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.stats.requests += 1;
        let http = |why: String| WuaError::Http {
            op: op.to_string(),
            url: url.clone(),
            why,
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action_base}{op}\""))
            .send(body.as_bytes())
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| http(e.to_string()))?;
        if status != 200 && status != 500 {
            return Err(http(format!("HTTP {status}")));
        }
        let env =
            Envelope::read(&bytes, &Limits::ANSWER).map_err(|e| malformed(op, e.to_string()))?;
        if let Some(f) = env.fault() {
            return Ok(Answer::Fault(
                f.error_code.unwrap_or_else(|| "(no ErrorCode)".into()),
                f.message,
            ));
        }
        if status != 200 {
            return Err(http(format!("HTTP {status} without a fault")));
        }
        let want = format!("{op}Response");
        if env.body.name() != want {
            return Err(malformed(
                op,
                format!("answer element {}, expected {want}", env.body.name()),
            ));
        }
        Ok(Answer::Ok(env.body))
    }

    fn cookie_xml(&self) -> String {
        match &self.cookie {
            Some((exp, data)) => format!(
                "<cookie><Expiration>{}</Expiration><EncryptedData>{}</EncryptedData></cookie>",
                escape(exp),
                escape(data)
            ),
            None => String::new(),
        }
    }

    fn take_cookie(&mut self, op: &str, parent: &Element, name: &str) -> Result<()> {
        let c = parent
            .child(name)
            .ok_or_else(|| malformed(op, format!("no {name}")))?;
        let exp = c.child_text("Expiration").unwrap_or("").to_string();
        let data = c
            .child_text("EncryptedData")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| malformed(op, format!("{name} without EncryptedData")))?;
        self.cookie = Some((exp, data.to_string()));
        Ok(())
    }

    /// A client-service operation with the cookie, recovering from the
    /// cookie faults (module doc). `inner` builds the body after the
    /// cookie (it is rebuilt after a RefreshCache changed revision ids).
    fn call(
        &mut self,
        path: &str,
        ns: &str,
        op: &str,
        inner: &dyn Fn(&Wua) -> String,
    ) -> Result<Element> {
        if self.cookie.is_none() {
            self.handshake(false)?;
        }
        let mut recoveries = 0;
        loop {
            let body = format!("{}{}", self.cookie_xml(), inner(self));
            match self.post(path, ns, op, &body)? {
                Answer::Ok(e) => return Ok(e),
                Answer::Fault(code, message) => {
                    recoveries += 1;
                    let recoverable = matches!(
                        code.as_str(),
                        "InvalidCookie"
                            | "ServerChanged"
                            | "CookieExpired"
                            | "ConfigChanged"
                            | "RegistrationRequired"
                    );
                    if !recoverable || recoveries > MAX_RECOVERIES {
                        return Err(WuaError::Fault {
                            op: op.to_string(),
                            code,
                            message,
                        });
                    }
                    *self.stats.recoveries.entry(code.clone()).or_insert(0) += 1;
                    match code.as_str() {
                        "InvalidCookie" | "ServerChanged" => {
                            self.cookie = None;
                            self.handshake(true)?;
                            self.refresh_cache()?;
                        }
                        "CookieExpired" => self.renew_cookie()?,
                        "ConfigChanged" => {
                            self.cookie = None;
                            self.handshake(false)?;
                        }
                        _ => self.register()?,
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // Handshake
    // -----------------------------------------------------------------

    fn get_config(&mut self) -> Result<()> {
        let op = "GetConfig";
        let inner = format!("<protocolVersion>{CLIENT_PROTOCOL}</protocolVersion>");
        let e = match self.post(CLIENT_PATH, CLIENT_NS, op, &inner)? {
            Answer::Ok(e) => e,
            Answer::Fault(code, message) => {
                return Err(WuaError::Fault {
                    op: op.into(),
                    code,
                    message,
                });
            }
        };
        let r = e
            .child("GetConfigResult")
            .ok_or_else(|| malformed(op, "no GetConfigResult"))?;
        let last_change = r
            .child_text("LastChange")
            .ok_or_else(|| malformed(op, "no LastChange"))?;
        // Rule (wusp-notes): clients refuse a configuration without these.
        let props: HashMap<&str, &str> = r
            .child("Properties")
            .map(|p| {
                p.children_named("ConfigurationProperty")
                    .filter_map(|c| Some((c.child_text("Name")?, c.child_text("Value")?)))
                    .collect()
            })
            .unwrap_or_default();
        for need in [
            "MaxExtendedUpdatesPerRequest",
            "ProtocolVersion",
            "IsInventoryRequired",
            "ClientReportingLevel",
            "PackageServerShare",
        ] {
            if !props.contains_key(need) {
                return Err(malformed(op, format!("no {need} property")));
            }
        }
        let url = r
            .child("AuthInfo")
            .and_then(|a| a.children_named("AuthPlugInInfo").next())
            .filter(|p| p.child_text("PlugInID") == Some("SimpleTargeting"))
            .and_then(|p| p.child_text("ServiceUrl"))
            .ok_or_else(|| malformed(op, "no SimpleTargeting plug-in"))?;
        self.auth_url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("/{}", url.trim_start_matches('/'))
        };
        self.last_change = Some(last_change.to_string());
        Ok(())
    }

    fn authorization_cookie(&mut self) -> Result<String> {
        let op = "GetAuthorizationCookie";
        let mut inner = format!(
            "<clientId>{}</clientId><dnsName>{}</dnsName>",
            escape(&self.machine.client_id),
            escape(&self.machine.dns_name)
        );
        if !self.machine.target_groups.is_empty() {
            inner.push_str(&format!(
                "<targetGroupName>{}</targetGroupName>",
                escape(&self.machine.target_groups.join(";"))
            ));
        }
        let url = if self.auth_url.is_empty() {
            SIMPLE_AUTH_PATH.to_string()
        } else {
            self.auth_url.clone()
        };
        match self.post(&url, SIMPLE_AUTH_NS, op, &inner)? {
            Answer::Ok(e) => e
                .child("GetAuthorizationCookieResult")
                .and_then(|r| r.child_text("CookieData"))
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .ok_or_else(|| malformed(op, "no CookieData")),
            Answer::Fault(code, message) => Err(WuaError::Fault {
                op: op.into(),
                code,
                message,
            }),
        }
    }

    fn get_cookie(&mut self, auth: &str) -> Result<()> {
        let op = "GetCookie";
        let old = match &self.cookie {
            Some(_) => self
                .cookie_xml()
                .replace("<cookie>", "<oldCookie>")
                .replace("</cookie>", "</oldCookie>"),
            None => format!(
                "<oldCookie><Expiration>{}</Expiration></oldCookie>",
                crate::store::now_rfc3339()
            ),
        };
        let inner = format!(
            "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId><CookieData>{}</CookieData></AuthorizationCookie></authCookies>{old}<lastChange>{}</lastChange><currentTime>{}</currentTime><protocolVersion>{CLIENT_PROTOCOL}</protocolVersion>",
            escape(auth),
            escape(self.last_change.as_deref().unwrap_or("")),
            crate::store::now_rfc3339()
        );
        match self.post(CLIENT_PATH, CLIENT_NS, op, &inner)? {
            Answer::Ok(e) => self.take_cookie(op, &e, "GetCookieResult"),
            Answer::Fault(code, message) => Err(WuaError::Fault {
                op: op.into(),
                code,
                message,
            }),
        }
    }

    /// GetConfig (when `config` or never fetched), GetAuthorizationCookie,
    /// GetCookie; RegisterComputer the first time. A ConfigChanged on
    /// GetCookie fetches the configuration once more.
    fn handshake(&mut self, config: bool) -> Result<()> {
        if config || self.last_change.is_none() {
            self.get_config()?;
        }
        let auth = self.authorization_cookie()?;
        match self.get_cookie(&auth) {
            Err(WuaError::Fault { code, .. }) if code == "ConfigChanged" => {
                *self.stats.recoveries.entry(code).or_insert(0) += 1;
                self.get_config()?;
                let auth = self.authorization_cookie()?;
                self.get_cookie(&auth)?;
            }
            other => other?,
        }
        if !self.registered {
            self.register()?;
        }
        Ok(())
    }

    fn renew_cookie(&mut self) -> Result<()> {
        let auth = self.authorization_cookie()?;
        self.get_cookie(&auth)
    }

    fn register(&mut self) -> Result<()> {
        let m = &self.machine;
        let mut v = m.os_version.split('.');
        let (a, b, c) = (
            v.next().unwrap_or("10"),
            v.next().unwrap_or("0"),
            v.next().unwrap_or("0"),
        );
        let info = format!(
            "<computerInfo><DnsName>{}</DnsName><OSMajorVersion>{}</OSMajorVersion><OSMinorVersion>{}</OSMinorVersion><OSBuildNumber>{}</OSBuildNumber><OSServicePackMajorNumber>0</OSServicePackMajorNumber><OSServicePackMinorNumber>0</OSServicePackMinorNumber><OSLocale>en-US</OSLocale><ComputerManufacturer>{}</ComputerManufacturer><ComputerModel>{}</ComputerModel><ProcessorArchitecture>{}</ProcessorArchitecture><ClientVersionMajorNumber>1507</ClientVersionMajorNumber><ClientVersionMinorNumber>2601</ClientVersionMinorNumber><ClientVersionBuildNumber>30012</ClientVersionBuildNumber><ClientVersionQfeNumber>0</ClientVersionQfeNumber><OSDescription>{}</OSDescription></computerInfo>",
            escape(&m.dns_name),
            escape(a),
            escape(b),
            escape(c),
            escape(&m.manufacturer),
            escape(&m.model),
            escape(&m.arch),
            escape(&m.os_description)
        );
        let body = format!("{}{info}", self.cookie_xml());
        match self.post(CLIENT_PATH, CLIENT_NS, "RegisterComputer", &body)? {
            Answer::Ok(_) => {
                self.registered = true;
                Ok(())
            }
            Answer::Fault(code, message) => Err(WuaError::Fault {
                op: "RegisterComputer".into(),
                code,
                message,
            }),
        }
    }

    /// RefreshCache of every cached identity: the returned revision ids
    /// replace the cached ones; entries not returned leave the cache.
    fn refresh_cache(&mut self) -> Result<()> {
        let op = "RefreshCache";
        let entries: Vec<Cached> = std::mem::take(&mut self.cache).into_values().collect();
        let mut by_identity: HashMap<(String, i32), Cached> = entries
            .into_iter()
            .map(|c| ((c.update_id.clone(), c.revision), c))
            .collect();
        let keys: Vec<(String, i32)> = by_identity.keys().cloned().collect();
        for chunk in keys.chunks(MAX_REFRESH) {
            let mut ids = String::from("<globalIDs>");
            for (u, r) in chunk {
                ids.push_str(&format!(
                    "<UpdateIdentity><UpdateID>{}</UpdateID><RevisionNumber>{r}</RevisionNumber></UpdateIdentity>",
                    escape(u)
                ));
            }
            ids.push_str("</globalIDs>");
            let body = format!("{}{ids}", self.cookie_xml());
            let e = match self.post(CLIENT_PATH, CLIENT_NS, op, &body)? {
                Answer::Ok(e) => e,
                Answer::Fault(code, message) => {
                    return Err(WuaError::Fault {
                        op: op.into(),
                        code,
                        message,
                    });
                }
            };
            let r = e
                .child("RefreshCacheResult")
                .ok_or_else(|| malformed(op, "no RefreshCacheResult"))?;
            for item in r.children_named("RefreshCacheResult") {
                let rev: i64 = item
                    .child_text("RevisionID")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| malformed(op, "RevisionID is not an int"))?;
                let g = item
                    .child("GlobalID")
                    .ok_or_else(|| malformed(op, "no GlobalID"))?;
                let key = (
                    g.child_text("UpdateID").unwrap_or("").to_ascii_lowercase(),
                    g.child_text("RevisionNumber")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1),
                );
                let Some(mut c) = by_identity.remove(&key) else {
                    continue;
                };
                c.rev_id = rev;
                if let Some(l) = item
                    .child_text("IsLeaf")
                    .and_then(crate::soap::xsd::parse_bool)
                {
                    c.is_leaf = l;
                }
                if let Some(d) = item.child("Deployment") {
                    c.deployment = parse_deployment(op, d)?;
                }
                self.stats.refreshed += 1;
                self.cache.insert(rev, c);
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // The machine model
    // -----------------------------------------------------------------

    /// Cached updates that evaluate installed (lower-case ids).
    pub fn evaluated_installed(&self) -> HashSet<String> {
        let mut installed: HashSet<String> = HashSet::new();
        loop {
            let mut grew = false;
            for c in self.cache.values() {
                if installed.contains(&c.update_id) {
                    continue;
                }
                let own = match c.kind.as_str() {
                    "Category" => !self.machine.not_applicable.contains(&c.update_id),
                    "Detectoid" => !self.machine.not_applicable.contains(&c.update_id),
                    "Software" => self.machine.installed.contains(&c.update_id),
                    _ => false,
                };
                if own && prereqs_met(c, &installed) {
                    installed.insert(c.update_id.clone());
                    grew = true;
                }
            }
            if !grew {
                return installed;
            }
        }
    }

    /// Revision ids of the cached non-leaf updates that evaluate
    /// installed, sorted.
    fn installed_non_leaf(&self) -> Vec<i64> {
        let installed = self.evaluated_installed();
        let mut v: Vec<i64> = self
            .cache
            .values()
            .filter(|c| !c.is_leaf && installed.contains(&c.update_id))
            .map(|c| c.rev_id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Needed updates (module doc), sorted.
    pub fn needed(&self) -> Vec<String> {
        let installed = self.evaluated_installed();
        let superseded: HashSet<&String> = self
            .cache
            .values()
            .filter(|c| self.machine.installed.contains(&c.update_id))
            .flat_map(|c| &c.superseded)
            .collect();
        let mut out: Vec<String> = self
            .cache
            .values()
            .filter(|c| {
                reportable(c)
                    && prereqs_met(c, &installed)
                    && !self.machine.installed.contains(&c.update_id)
                    && !self.machine.not_applicable.contains(&c.update_id)
                    && !superseded.contains(&c.update_id)
            })
            .map(|c| c.update_id.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    // -----------------------------------------------------------------
    // Scan
    // -----------------------------------------------------------------

    /// One scan: software passes until nothing is new, then the driver
    /// pass.
    pub fn scan(&mut self) -> Result<ScanReport> {
        let op = "SyncUpdates";
        let mut report = ScanReport::default();
        loop {
            if report.passes >= MAX_PASSES {
                return Err(WuaError::Scan(format!("no end after {MAX_PASSES} passes")));
            }
            report.passes += 1;
            self.stats.sync_passes += 1;
            let sent = self.installed_non_leaf();
            let build = |w: &Wua| {
                let installed = w.evaluated_installed();
                let mut non_leaf = Vec::new();
                let mut other = Vec::new();
                for c in w.cache.values() {
                    if !c.is_leaf && installed.contains(&c.update_id) {
                        non_leaf.push(c.rev_id);
                    } else {
                        other.push(c.rev_id);
                    }
                }
                format!(
                    "<parameters><ExpressQuery>false</ExpressQuery>{}{}<SkipSoftwareSync>false</SkipSoftwareSync><NeedTwoGroupOutOfScopeUpdates>true</NeedTwoGroupOutOfScopeUpdates><AlsoPerformRegularSync>false</AlsoPerformRegularSync></parameters>",
                    int_list("InstalledNonLeafUpdateIDs", &non_leaf),
                    int_list("OtherCachedUpdateIDs", &other)
                )
            };
            let e = self.call(CLIENT_PATH, CLIENT_NS, op, &build)?;
            let r = e
                .child("SyncUpdatesResult")
                .ok_or_else(|| malformed(op, "no SyncUpdatesResult"))?;
            let mut new = 0;
            if let Some(n) = r.child("NewUpdates") {
                for u in n.children_named("UpdateInfo") {
                    let (rev, d, leaf) = update_info(op, u)?;
                    let xml = u
                        .child_text("Xml")
                        .ok_or_else(|| malformed(op, format!("NewUpdates {rev} without Xml")))?;
                    let core = parse_core(xml)
                        .map_err(|w| malformed(op, format!("core fragment of {rev}: {w}")))?;
                    self.cache.insert(
                        rev,
                        Cached {
                            rev_id: rev,
                            update_id: core.update_id,
                            revision: core.revision,
                            kind: core.kind,
                            is_leaf: leaf,
                            deployment: d,
                            prerequisites: core.prerequisites,
                            bundled: core.bundled,
                            superseded: core.superseded,
                        },
                    );
                    new += 1;
                }
            }
            if let Some(c) = r.child("ChangedUpdates") {
                for u in c.children_named("UpdateInfo") {
                    let (rev, d, leaf) = update_info(op, u)?;
                    if let Some(c) = self.cache.get_mut(&rev) {
                        c.deployment = d;
                        c.is_leaf = leaf;
                        report.changed += 1;
                    }
                }
            }
            for list in ["OutOfScopeRevisionIDs"] {
                if let Some(l) = r.child(list) {
                    for i in l.children() {
                        let rev: i64 = i
                            .text()
                            .trim()
                            .parse()
                            .map_err(|_| malformed(op, format!("{list} holds a non-int")))?;
                        if self.cache.remove(&rev).is_some() {
                            report.out_of_scope += 1;
                        }
                    }
                }
            }
            let truncated = r
                .child_text("Truncated")
                .and_then(crate::soap::xsd::parse_bool)
                .ok_or_else(|| malformed(op, "no Truncated"))?;
            self.take_cookie(op, r, "NewCookie")?;
            report.new += new;
            // Another pass while the answer was cut, brought something,
            // or the machine now evaluates more non-leaf updates installed.
            if !truncated && new == 0 && self.installed_non_leaf() == sent {
                break;
            }
        }
        self.driver_pass()?;
        report.needed = self.needed();
        Ok(report)
    }

    fn driver_pass(&mut self) -> Result<()> {
        let op = "SyncUpdates";
        let spec = "<SystemSpec><Device><HardwareIDs><string>PCI\\VEN_1234&amp;DEV_1111</string></HardwareIDs><DeviceFlags>1</DeviceFlags></Device></SystemSpec>";
        let build = |w: &Wua| {
            let installed = w.evaluated_installed();
            let non_leaf: Vec<i64> = w
                .cache
                .values()
                .filter(|c| !c.is_leaf && installed.contains(&c.update_id))
                .map(|c| c.rev_id)
                .collect();
            format!(
                "<parameters><ExpressQuery>false</ExpressQuery>{}{spec}<SkipSoftwareSync>true</SkipSoftwareSync></parameters>",
                int_list("InstalledNonLeafUpdateIDs", &non_leaf)
            )
        };
        self.stats.sync_passes += 1;
        let e = self.call(CLIENT_PATH, CLIENT_NS, op, &build)?;
        let r = e
            .child("SyncUpdatesResult")
            .ok_or_else(|| malformed(op, "no SyncUpdatesResult"))?;
        self.take_cookie(op, r, "NewCookie")
    }

    // -----------------------------------------------------------------
    // Install and report
    // -----------------------------------------------------------------

    /// Files of the given cached revisions (GetExtendedUpdateInfo,
    /// Extended + LocalizedProperties) and their locations.
    fn extended(&mut self, revs: &[i64]) -> Result<(FilesByRev, Locations)> {
        let op = "GetExtendedUpdateInfo";
        let mut files: HashMap<i64, Vec<FileMeta>> = HashMap::new();
        let mut urls: HashMap<Vec<u8>, String> = HashMap::new();
        for chunk in revs.chunks(MAX_EXTENDED_UPDATES) {
            let locales: String = self
                .opts
                .locales
                .iter()
                .map(|l| format!("<string>{}</string>", escape(l)))
                .collect();
            let chunk = chunk.to_vec();
            let build = move |_: &Wua| {
                format!(
                    "{}<infoTypes><XmlUpdateFragmentType>Extended</XmlUpdateFragmentType><XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType></infoTypes><locales>{locales}</locales>",
                    int_list("revisionIDs", &chunk)
                )
            };
            let e = self.call(CLIENT_PATH, CLIENT_NS, op, &build)?;
            let r = e
                .child("GetExtendedUpdateInfoResult")
                .ok_or_else(|| malformed(op, "no GetExtendedUpdateInfoResult"))?;
            if let Some(u) = r.child("Updates") {
                for up in u.children_named("Update") {
                    let rev: i64 = up
                        .child_text("ID")
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| malformed(op, "Update ID is not an int"))?;
                    let xml = up.child_text("Xml").unwrap_or("");
                    let f = parse_files(xml)
                        .map_err(|w| malformed(op, format!("fragment of {rev}: {w}")))?;
                    files.entry(rev).or_default().extend(f);
                }
            }
            read_locations(op, r, &mut urls)?;
        }
        Ok((files, urls))
    }

    fn file_locations(
        &mut self,
        digests: &[Vec<u8>],
        urls: &mut HashMap<Vec<u8>, String>,
    ) -> Result<()> {
        let op = "GetFileLocations";
        for chunk in digests.chunks(100) {
            let list: String = chunk
                .iter()
                .map(|d| format!("<base64Binary>{}</base64Binary>", B64.encode(d)))
                .collect();
            let build = move |_: &Wua| format!("<fileDigests>{list}</fileDigests>");
            let e = self.call(CLIENT_PATH, CLIENT_NS, op, &build)?;
            let r = e
                .child("GetFileLocationsResult")
                .ok_or_else(|| malformed(op, "no GetFileLocationsResult"))?;
            read_locations(op, r, urls)?;
            self.take_cookie(op, r, "NewCookie")?;
        }
        Ok(())
    }

    /// Downloads and verifies `files` (see the module doc); their bytes
    /// in order.
    pub fn download(&mut self, files: &[(FileMeta, String)]) -> Result<Vec<Vec<u8>>> {
        let piece = self.opts.piece.max(1);
        let mut pieces: Vec<(usize, u64, u64)> = Vec::new();
        let mut bufs: Vec<Mutex<Vec<u8>>> = Vec::new();
        let mut total: u64 = 0;
        for (i, (f, _)) in files.iter().enumerate() {
            total = total.saturating_add(f.size);
            if total > MAX_DOWNLOAD {
                return Err(WuaError::Content {
                    file: f.name.clone(),
                    why: format!(
                        "{total} bytes in one install is more than this client holds ({MAX_DOWNLOAD})"
                    ),
                });
            }
            bufs.push(Mutex::new(vec![0u8; f.size as usize]));
            let mut at = 0;
            while at < f.size {
                let len = piece.min(f.size - at);
                pieces.push((i, at, len));
                at += len;
            }
        }
        shuffle(&mut pieces, self.opts.seed ^ fnv(&self.machine.client_id));
        let queue = Mutex::new(pieces);
        let errors: Mutex<Vec<WuaError>> = Mutex::new(Vec::new());
        let ranges = std::sync::atomic::AtomicU64::new(0);
        let agent = &self.agent;
        std::thread::scope(|s| {
            for _ in 0..self.opts.connections.max(1) {
                s.spawn(|| {
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop());
                        let Some((i, at, len)) = next else { break };
                        let Some((f, url)) = files.get(i) else { break };
                        ranges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match fetch_range(agent, url, at, len, f.size) {
                            Ok(bytes) => {
                                if let Some(Ok(mut b)) = bufs.get(i).map(Mutex::lock) {
                                    let end = (at + len) as usize;
                                    if let Some(dst) = b.get_mut(at as usize..end) {
                                        dst.copy_from_slice(&bytes);
                                    }
                                }
                            }
                            Err(why) => {
                                if let Ok(mut e) = errors.lock() {
                                    e.push(WuaError::Content {
                                        file: f.name.clone(),
                                        why,
                                    });
                                }
                                if let Ok(mut q) = queue.lock() {
                                    q.clear();
                                }
                            }
                        }
                    }
                });
            }
        });
        self.stats.range_requests += ranges.into_inner();
        if let Some(e) = errors.into_inner().ok().and_then(|mut v| v.pop()) {
            return Err(e);
        }
        let mut out = Vec::with_capacity(files.len());
        for ((f, _), b) in files.iter().zip(bufs) {
            let data = b.into_inner().unwrap_or_default();
            check_digests(f, &data)?;
            self.stats.downloaded_bytes += data.len() as u64;
            out.push(data);
        }
        Ok(out)
    }

    /// Installs every needed update whose action is Install (module doc)
    /// and reports the events and the status.
    pub fn install(&mut self) -> Result<Vec<Installed>> {
        let needed = self.needed();
        let to_install: Vec<Cached> = needed
            .iter()
            .filter_map(|u| self.cached(u).cloned())
            .filter(|c| c.deployment.action == "Install")
            .collect();
        let mut done = Vec::new();
        let mut events = Vec::new();
        if to_install.is_empty() {
            self.report_status()?;
            return Ok(done);
        }
        // The revisions whose files are needed: each update and its
        // bundled updates (cached).
        let mut revs_of: Vec<(Cached, Vec<i64>)> = Vec::new();
        let mut all_revs: BTreeSet<i64> = BTreeSet::new();
        for c in to_install {
            let mut revs = vec![c.rev_id];
            for b in &c.bundled {
                if let Some(m) = self.cached(b) {
                    revs.push(m.rev_id);
                }
            }
            all_revs.extend(revs.iter().copied());
            revs_of.push((c, revs));
        }
        let all: Vec<i64> = all_revs.into_iter().collect();
        let (files, mut urls) = self.extended(&all)?;
        let digests: Vec<Vec<u8>> = files
            .values()
            .flatten()
            .map(|f| f.sha1.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.file_locations(&digests, &mut urls)?;
        for (c, revs) in revs_of {
            let mut list: Vec<(FileMeta, String)> = Vec::new();
            let mut seen = HashSet::new();
            for r in &revs {
                for f in files.get(r).into_iter().flatten() {
                    if !seen.insert(f.sha1.clone()) {
                        continue;
                    }
                    let url = urls
                        .get(&f.sha1)
                        .cloned()
                        .ok_or_else(|| WuaError::Content {
                            file: f.name.clone(),
                            why: "the server gave no location".into(),
                        })?;
                    list.push((f.clone(), url));
                }
            }
            let update = (c.update_id.clone(), c.revision);
            events.push(event(167, &update, 0, vec![]));
            let data = self.download(&list)?;
            let bytes: u64 = data.iter().map(|d| d.len() as u64).sum();
            events.push(event(162, &update, 0, vec![format!("B={bytes}")]));
            events.push(event(181, &update, 0, vec![]));
            let ok = !self.machine.failing.contains(&c.update_id);
            if ok {
                self.machine.installed.insert(c.update_id.clone());
                for b in &c.bundled {
                    self.machine.installed.insert(b.clone());
                }
                events.push(event(183, &update, 0, vec![]));
            } else {
                // 0x80070643: fatal error during installation.
                events.push(event(182, &update, -2_147_023_293, vec![]));
            }
            done.push(Installed {
                update_id: c.update_id.clone(),
                action: c.deployment.action.clone(),
                deadline: c.deployment.deadline.clone(),
                files: list.len(),
                bytes,
                ok,
            });
        }
        events.push(self.status_event());
        self.report(&events)?;
        Ok(done)
    }

    fn status_event(&self) -> EventXml {
        let needed: BTreeSet<String> = self.needed().into_iter().collect();
        let mut u = Vec::new();
        let mut v = Vec::new();
        for c in self.cache.values().filter(|c| reportable(c)) {
            let id = c.update_id.to_ascii_uppercase();
            if needed.contains(&c.update_id) {
                u.push(id);
            } else {
                v.push(id);
            }
        }
        u.sort();
        u.dedup();
        v.sort();
        v.dedup();
        event(
            156,
            &("00000000-0000-0000-0000-000000000000".into(), 0),
            0,
            vec![format!("U={}", u.join(";")), format!("V={}", v.join(";"))],
        )
    }

    /// Reports the client status (event 156).
    pub fn report_status(&mut self) -> Result<()> {
        let e = self.status_event();
        self.report(&[e])
    }

    fn report(&mut self, events: &[EventXml]) -> Result<()> {
        let op = "ReportEventBatch";
        let client = self.machine.client_id.clone();
        let batch: String = events.iter().map(|e| e.xml(&client)).collect();
        let build = move |_: &Wua| {
            format!(
                "<clientTime>{}</clientTime><eventBatch>{batch}</eventBatch>",
                crate::store::now_rfc3339()
            )
        };
        let e = self.call(REPORTING_PATH, REPORTING_NS, op, &build)?;
        match e
            .child_text("ReportEventBatchResult")
            .and_then(crate::soap::xsd::parse_bool)
        {
            Some(true) => Ok(()),
            _ => Err(malformed(op, "ReportEventBatchResult is not true")),
        }
    }
}

/// The HTTP agent of a client: statuses are answers, not errors; keeps a
/// connection per download connection.
fn agent(opts: &WuaOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.timeout))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_per_read(Some(opts.timeout))
        .max_idle_connections_per_host(opts.connections.max(1) + 2)
        .user_agent(
            "Windows-Update-Agent/1507.2601.30012.0 Client-Protocol/2.90 (gapsync simulated)",
        )
        .build()
        .into()
}

/// Every prerequisite clause has an alternative in `installed`.
fn prereqs_met(c: &Cached, installed: &HashSet<String>) -> bool {
    c.prerequisites
        .iter()
        .all(|clause| clause.iter().any(|a| installed.contains(a)))
}

/// Software updates the client reports on: not bundle members, not
/// categories or detectoids.
fn reportable(c: &Cached) -> bool {
    c.kind == "Software" && c.deployment.action != "Bundle" && c.deployment.action != "Evaluate"
}

fn int_list(name: &str, ids: &[i64]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let mut s = format!("<{name}>");
    for i in ids {
        s.push_str("<int>");
        s.push_str(&i.to_string());
        s.push_str("</int>");
    }
    s.push_str(&format!("</{name}>"));
    s
}

fn parse_deployment(op: &str, d: &Element) -> Result<Deployment> {
    Ok(Deployment {
        id: d
            .child_text("ID")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed(op, "Deployment ID is not an int"))?,
        action: d
            .child_text("Action")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| malformed(op, "Deployment without an Action"))?
            .to_string(),
        deadline: d.child_text("Deadline").map(str::to_string),
        is_assigned: d
            .child_text("IsAssigned")
            .and_then(crate::soap::xsd::parse_bool)
            .unwrap_or(false),
        last_change: d.child_text("LastChangeTime").unwrap_or("").to_string(),
    })
}

fn update_info(op: &str, u: &Element) -> Result<(i64, Deployment, bool)> {
    let rev: i64 = u
        .child_text("ID")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| malformed(op, "UpdateInfo ID is not an int"))?;
    // Rule (wusp-notes): every UpdateInfo carries a Deployment.
    let d = u
        .child("Deployment")
        .ok_or_else(|| malformed(op, format!("UpdateInfo {rev} without a Deployment")))?;
    let leaf = u
        .child_text("IsLeaf")
        .and_then(crate::soap::xsd::parse_bool)
        .ok_or_else(|| malformed(op, format!("UpdateInfo {rev} without IsLeaf")))?;
    Ok((rev, parse_deployment(op, d)?, leaf))
}

fn read_locations(op: &str, r: &Element, urls: &mut HashMap<Vec<u8>, String>) -> Result<()> {
    if let Some(l) = r.child("FileLocations") {
        for f in l.children_named("FileLocation") {
            let d = f
                .child_text("FileDigest")
                .and_then(|d| B64.decode(d).ok())
                .ok_or_else(|| malformed(op, "FileDigest is not base64"))?;
            let u = f
                .child_text("Url")
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .ok_or_else(|| malformed(op, "FileLocation without an http(s) Url"))?;
            urls.insert(d, u.to_string());
        }
    }
    Ok(())
}

/// Rule: a file is whole when its length is the metadata's `Size`, its
/// SHA-1 the `Digest` and, when given, its SHA-256 the `AdditionalDigest`.
fn check_digests(f: &FileMeta, data: &[u8]) -> Result<()> {
    let bad = |why: String| WuaError::Content {
        file: f.name.clone(),
        why,
    };
    if data.len() as u64 != f.size {
        return Err(bad(format!(
            "{} bytes, metadata says {}",
            data.len(),
            f.size
        )));
    }
    if Sha1::digest(data).as_slice() != f.sha1.as_slice() {
        return Err(bad("SHA-1 does not match the Digest".into()));
    }
    if let Some(s) = &f.sha256
        && Sha256::digest(data).as_slice() != s.as_slice()
    {
        return Err(bad("SHA-256 does not match the AdditionalDigest".into()));
    }
    Ok(())
}

/// One Range GET: exactly `len` bytes at `at` (206 with the matching
/// Content-Range, or 200 with the whole file when it is one piece).
fn fetch_range(
    agent: &ureq::Agent,
    url: &str,
    at: u64,
    len: u64,
    size: u64,
) -> std::result::Result<Vec<u8>, String> {
    let end = at + len - 1;
    let mut resp = agent
        .get(url)
        .header("Range", format!("bytes={at}-{end}"))
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let range = resp
        .headers()
        .get("Content-Range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .with_config()
        .limit(len + 1)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    match status {
        206 => {
            let want = format!("bytes {at}-{end}/{size}");
            if range.as_deref() != Some(want.as_str()) {
                return Err(format!("Content-Range {range:?}, asked {want}"));
            }
        }
        200 if at == 0 && len == size => {}
        s => return Err(format!("{url}: HTTP {s} for bytes {at}-{end}")),
    }
    if body.len() as u64 != len {
        return Err(format!("{} bytes for a range of {len}", body.len()));
    }
    Ok(body)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fisher-Yates with xorshift (deterministic per seed).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// A reporting event to send.
#[derive(Debug, Clone)]
struct EventXml {
    id: u32,
    update: (String, i32),
    hresult: i64,
    misc: Vec<String>,
}

fn event(id: u32, update: &(String, i32), hresult: i64, misc: Vec<String>) -> EventXml {
    EventXml {
        id,
        update: update.clone(),
        hresult,
        misc,
    }
}

impl EventXml {
    fn xml(&self, client: &str) -> String {
        let mut w = XmlWriter::new();
        let now = crate::store::now_rfc3339();
        w.start("ReportingEvent")
            .start("BasicData")
            .start("TargetID")
            .elem("Sid", client)
            .end("TargetID")
            .elem("SequenceNumber", "0")
            .elem("TimeAtTarget", &now)
            .elem("EventInstanceID", &uuid::Uuid::new_v4().to_string())
            .elem("NamespaceID", "1")
            .elem("EventID", &self.id.to_string())
            .elem("SourceID", "101")
            .start("UpdateID")
            .elem("UpdateID", &self.update.0)
            .elem("RevisionNumber", &self.update.1.to_string())
            .end("UpdateID")
            .elem("Win32HResult", &self.hresult.to_string())
            .elem("AppName", "gapsync simulated WUA")
            .end("BasicData")
            .start("ExtendedData")
            .list("MiscData", &self.misc, |w, m| {
                w.elem("string", m);
            })
            .end("ExtendedData")
            .end("ReportingEvent");
        w.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_fragments_give_identity_prerequisites_bundles_and_supersedence() {
        let x = "<UpdateIdentity UpdateID=\"AAAA0000-0000-0000-0000-000000000001\" RevisionNumber=\"101\" /><Properties UpdateType=\"Software\" ExplicitlyDeployable=\"true\" /><Relationships><Prerequisites><UpdateIdentity UpdateID=\"d1\" /><AtLeastOne IsCategory=\"true\"><UpdateIdentity UpdateID=\"c1\" /><UpdateIdentity UpdateID=\"c2\" /></AtLeastOne></Prerequisites><BundledUpdates><AtLeastOne><UpdateIdentity UpdateID=\"m1\" RevisionNumber=\"100\" /></AtLeastOne></BundledUpdates><SupersededUpdates><UpdateIdentity UpdateID=\"old\" /></SupersededUpdates></Relationships><ApplicabilityRules><IsInstalled><b.WindowsVersion Comparison=\"GreaterThanOrEqualTo\" /></IsInstalled></ApplicabilityRules>";
        let c = parse_core(x).unwrap();
        assert_eq!(c.update_id, "aaaa0000-0000-0000-0000-000000000001");
        assert_eq!((c.revision, c.kind.as_str()), (101, "Software"));
        assert_eq!(
            c.prerequisites,
            vec![vec!["d1".to_string()], vec!["c1".into(), "c2".into()]]
        );
        assert_eq!(c.bundled, ["m1"]);
        assert_eq!(c.superseded, ["old"]);
        for bad in [
            "",
            "<Properties/>",
            "<UpdateIdentity UpdateID=\"x\" />",
            "<a><b></a>",
        ] {
            assert!(parse_core(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extended_fragments_give_files_and_both_digests() {
        let sha1 = B64.encode([7u8; 20]);
        let sha256 = B64.encode([9u8; 32]);
        let x = format!(
            "<ExtendedProperties /><Files><File Digest=\"{sha1}\" DigestAlgorithm=\"SHA1\" FileName=\"a.cab\" Size=\"5\"><AdditionalDigest Algorithm=\"SHA256\">{sha256}</AdditionalDigest></File><File Digest=\"{sha1}\" FileName=\"b.cab\" Size=\"6\" /></Files>"
        );
        let f = parse_files(&x).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].name.as_str(), f[0].size), ("a.cab", 5));
        assert_eq!(f[0].sha256.as_deref(), Some(&[9u8; 32][..]));
        assert_eq!(f[1].sha256, None);
        assert!(parse_files("<Files><File Digest=\"AAEC\" Size=\"1\"/></Files>").is_err());
        assert!(parse_files(&format!("<Files><File Digest=\"{sha1}\" /></Files>")).is_err());
        let data = b"hello";
        let meta = FileMeta {
            sha1: Sha1::digest(data).to_vec(),
            sha256: Some(Sha256::digest(data).to_vec()),
            name: "h".into(),
            size: 5,
        };
        assert!(check_digests(&meta, data).is_ok());
        assert!(check_digests(&meta, b"hellp").is_err());
        assert!(check_digests(&meta, b"hell").is_err());
        let wrong256 = FileMeta {
            sha256: Some(vec![0; 32]),
            ..meta
        };
        assert!(check_digests(&wrong256, data).is_err());
    }

    #[test]
    fn the_machine_model_needs_what_is_applicable_and_not_installed() {
        let mut w = Wua::new(
            "http://127.0.0.1:1",
            Machine::new("c", "m"),
            WuaOptions::default(),
        );
        let dep = |a: &str| Deployment {
            id: 1,
            action: a.into(),
            deadline: None,
            is_assigned: true,
            last_change: String::new(),
        };
        let mut add = |rev: i64, id: &str, kind: &str, action: &str, pre: &[&str], sup: &[&str]| {
            w.cache.insert(
                rev,
                Cached {
                    rev_id: rev,
                    update_id: id.into(),
                    revision: 1,
                    kind: kind.into(),
                    is_leaf: kind == "Software",
                    deployment: dep(action),
                    prerequisites: pre.iter().map(|p| vec![p.to_string()]).collect(),
                    bundled: vec![],
                    superseded: sup.iter().map(|s| s.to_string()).collect(),
                },
            );
        };
        add(1, "cat", "Category", "Evaluate", &[], &[]);
        add(2, "det", "Detectoid", "Evaluate", &["cat"], &[]);
        add(3, "a", "Software", "Install", &["det"], &[]);
        add(4, "b", "Software", "PreDeploymentCheck", &["det"], &["a"]);
        add(5, "member", "Software", "Bundle", &["det"], &[]);
        add(6, "other", "Software", "Install", &["det2"], &[]);
        assert_eq!(w.needed(), ["a", "b"]);
        w.machine.installed.insert("b".into());
        assert_eq!(w.needed(), Vec::<String>::new(), "b supersedes a");
        w.machine.installed.clear();
        w.machine.not_applicable.insert("det".into());
        assert_eq!(w.needed(), Vec::<String>::new(), "the detectoid is false");
    }
}
