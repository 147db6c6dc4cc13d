//! `sync`: this server as a downstream server (DSS) of an upstream WSUS or
//! gapsync server, over MS-WSUSSS (sequence of MS-WSUSSS 3.2.4 and
//! MS-WSUSOD 3.1–3.2).
//!
//! Order of work:
//! 1. Authorization: GetAuthConfig, GetAuthorizationCookie (DSS
//!    Authorization Web Service), GetCookie. The cookie is renewed when it
//!    expires (by the local clock, unless it arrived already expired, i.e.
//!    the clocks disagree) and after InvalidCookie faults.
//! 2. Configuration: GetConfigData with the stored config anchor.
//! 3. Categories, classifications, detectoids: GetRevisionIdList with
//!    `GetConfig` true and the stored sync anchor, then GetUpdateData in
//!    batches of at most MaxNumberOfUpdatesPerRequest for the revisions this
//!    store does not hold yet. Each document is stored as its text in UTF-8
//!    ([`canonical_xml`]: a UTF-16 Cabinet member is converted, UTF-8 is
//!    kept byte for byte), checked against the identity it was sent under.
//! 4. Updates: GetRevisionIdList with `GetConfig` false, filtered by the
//!    selected products and classifications (`Delta` true for those sent in
//!    the previous sync), then GetUpdateData in batches.
//! 5. GetUpdateDecryptionData for new revisions with a secured fragment.
//! 6. Replica only: GetDeployments with the stored deployment anchor; the
//!    groups, deployments, dead deployments and hidden (declined) updates are
//!    applied by `import::apply_state`, exactly as a bundle's state is.
//!    Revisions that deployments name and the store lacks are fetched.
//! 7. COMMIT of steps 2–6 and of the new anchors (one SQLite transaction).
//! 8. Content (`--content all|approved|none`): every file the metadata
//!    references and the store lacks is downloaded from the upstream's
//!    `/Content/XX/FILE` (or the `MUUrl` when the upstream is catalog-only),
//!    resuming with HTTP Range after a dropped connection, streamed into
//!    `staging/` while hashed, checked against the metadata's size, SHA-1
//!    and SHA-256, then renamed into `content/` and recorded in a second
//!    transaction. Files the upstream does not have (404) are asked for
//!    with DownloadFiles and reported missing; a later sync fetches them.
//!
//! Failure leaves either the old state or a completed step 7 (metadata,
//! deployments and anchors) with the content of before; a sync after that
//! lists nothing new and only downloads the missing content.
//!
//! Faults (MS-WSUSSS 2.2.9.3): InvalidCookie, InvalidAuthorizationCookie
//! and FileDigestsMissing restart the sequence from authorization (at most
//! [`MAX_RESTARTS`] times); ServerChanged resets the three anchors and
//! starts again (once); InvalidParameters while stored anchors were sent is
//! retried once without anchors (a full, idempotent resync), else stops;
//! ServerBusy is retried with backoff; everything else stops the sync with
//! the fault's code, message and id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::airgap::format::{ContentMode, DeploymentRecord, GroupRecord, State};
use crate::error::{Error, Result};
use crate::model::metadata;
use crate::progress::Progress;
use crate::protocols::wsusss::client::{
    self, Client, ClientError, ClientOptions, Cookie, Download, FaultAction, FaultReaction as _,
    IdAndDelta, Operation, RevisionFilter, UpdateIdentity,
};
use crate::store::content::{ContentStore, Expected, Staged};
use crate::store::syncing::{self, NeededContent, SyncTxn, UpstreamRecord};
use crate::store::{ALL_COMPUTERS, Added, Mode, Store, UNASSIGNED_COMPUTERS, now_rfc3339};

/// Restarts of the whole sequence after InvalidCookie-like faults.
pub const MAX_RESTARTS: u32 = 3;

/// What to sync from where.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `http(s)://host[:port]` of the upstream server.
    pub upstream: String,
    /// Take groups, deployments and declines from the upstream (the store
    /// must be a replica).
    pub replica: bool,
    /// Product category ids; empty: as stored for this upstream (none at
    /// first: every update).
    pub products: Vec<String>,
    /// Classification ids; empty: as stored for this upstream.
    pub classifications: Vec<String>,
    pub content: ContentMode,
    /// The name this server gives the upstream (an FQDN; the binary passes
    /// the host name); default: the store's name. Limited to the characters
    /// RFC 1035 allows.
    pub account_name: Option<String>,
    pub client: ClientOptions,
    /// Cap on revisions per GetUpdateData, below the upstream's own limit.
    pub max_updates_per_request: Option<u32>,
    /// After the sync, roll computers and status up to the upstream
    /// (`protocols::wsusss::rollup`).
    pub rollup: bool,
}

impl SyncOptions {
    pub fn new(upstream: &str) -> Self {
        SyncOptions {
            upstream: upstream.to_string(),
            replica: false,
            products: Vec::new(),
            classifications: Vec::new(),
            content: ContentMode::All,
            account_name: None,
            client: ClientOptions::default(),
            max_updates_per_request: None,
            rollup: false,
        }
    }
}

/// `sync --json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub upstream: String,
    pub replica: bool,
    /// No anchors were stored for this upstream (a full sync).
    pub full: bool,
    pub restarts: u32,
    pub anchors_reset: u32,
    pub products: Vec<String>,
    pub classifications: Vec<String>,
    pub catalog_only_sync: bool,
    pub lazy_sync: bool,
    pub max_updates_per_request: u32,
    /// Revisions GetRevisionIdList named (categories etc. / updates).
    pub config_revisions_listed: u64,
    pub update_revisions_listed: u64,
    pub update_data_requests: u64,
    pub revisions_requested: u64,
    pub revisions_added: u64,
    pub revisions_already_present: u64,
    pub updates_added: u64,
    pub decryption_data_requests: u64,
    pub decryption_keys: u64,
    /// Groups, deployments and declines applied (replicas).
    #[serde(flatten)]
    pub state: crate::model::state::StateChanges,
    /// Deployments of updates outside this store's filters, or with an
    /// action gapsync does not keep (Scan).
    pub deployments_skipped: u64,
    pub content_files: u64,
    pub content_bytes: u64,
    pub content_resumed: u64,
    /// Referenced content the upstream does not have (asked for with
    /// DownloadFiles; a later sync fetches it).
    pub content_missing: u64,
    pub config_anchor: Option<String>,
    pub sync_anchor: Option<String>,
    pub deployment_anchor: Option<String>,
    /// This store's anchor after the sync.
    pub anchor: String,
    /// Requests sent per operation (retries included).
    pub requests: BTreeMap<String, u64>,
    /// What the rollup after the sync sent (when asked for and done).
    pub rollup: Option<super::rollup::RollupReport>,
    /// Why the rollup failed (the sync itself succeeded and is committed).
    pub rollup_error: Option<String>,
}

/// The filters remembered per upstream (`upstream_state.filters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct StoredFilters {
    products: Vec<String>,
    classifications: Vec<String>,
    /// The Categories and Classifications last sent (for `Delta`).
    sent_categories: Vec<String>,
    sent_classifications: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct UpstreamState {
    config_anchor: Option<String>,
    sync_anchor: Option<String>,
    deployment_anchor: Option<String>,
    replica: bool,
    filters: StoredFilters,
}

impl UpstreamState {
    fn reset_anchors(&mut self) {
        self.config_anchor = None;
        self.sync_anchor = None;
        self.deployment_anchor = None;
        self.filters.sent_categories.clear();
        self.filters.sent_classifications.clear();
    }
    fn has_anchors(&self) -> bool {
        self.config_anchor.is_some()
            || self.sync_anchor.is_some()
            || self.deployment_anchor.is_some()
    }
}

fn load_state(store: &Store, url: &str) -> Result<Option<UpstreamState>> {
    Ok(
        syncing::upstream_record(store, url)?.map(|r| UpstreamState {
            config_anchor: r.config_anchor,
            sync_anchor: r.sync_anchor,
            deployment_anchor: r.deployment_anchor,
            replica: r.replica,
            // Unreadable filters are forgotten: the next sync is a full one.
            filters: serde_json::from_str(&r.filters).unwrap_or_default(),
        }),
    )
}

fn save_state(tx: &SyncTxn<'_>, url: &str, st: &UpstreamState, now: &str) -> Result<()> {
    let filters = serde_json::to_string(&st.filters)
        .map_err(|e| Error::invalid("upstream filters", e.to_string()))?;
    tx.save_upstream(
        url,
        &UpstreamRecord {
            config_anchor: st.config_anchor.clone(),
            sync_anchor: st.sync_anchor.clone(),
            deployment_anchor: st.deployment_anchor.clone(),
            replica: st.replica,
            filters,
        },
        now,
    )
}

/// The name given to GetAuthorizationCookie: `name` limited to the
/// characters RFC 1035 allows (letters, digits, `-`, `.`; 253 at most).
fn account_name(name: &str) -> String {
    let clean: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(253)
        .collect();
    if clean.is_empty() {
        "gapsync".to_string()
    } else {
        clean
    }
}

fn canonical_ids(what: &str, ids: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in ids {
        let id = crate::store::canonical_guid(s.trim_start_matches('{').trim_end_matches('}'))
            .ok_or_else(|| Error::invalid(what, format!("{s:?} is not a GUID")))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// How a failed step ends.
enum Step {
    Fault(Operation, Box<client::Fault>),
    Fail(Error),
}

impl From<Error> for Step {
    fn from(e: Error) -> Self {
        Step::Fail(e)
    }
}

fn upstream_error(url: &str, e: ClientError) -> Error {
    match e {
        ClientError::Local(e) => e,
        other => Error::Upstream {
            url: url.to_string(),
            detail: other.to_string(),
        },
    }
}

/// One authorization with the upstream: the cookie and what it learnt.
struct Session<'c> {
    client: &'c Client,
    account_name: String,
    account_guid: Uuid,
    cookie: Option<Cookie>,
    /// Local time after which the cookie is renewed (None: trust faults).
    renew_at: Option<time::OffsetDateTime>,
    /// MUUrl per content SHA-1, as GetUpdateData gave them this sync.
    mu_urls: HashMap<[u8; 20], String>,
    catalog_only_sync: bool,
}

impl Session<'_> {
    fn wrap<T>(&self, r: std::result::Result<T, ClientError>) -> std::result::Result<T, Step> {
        r.map_err(|e| match e {
            ClientError::Fault { op, fault } => Step::Fault(op, fault),
            other => Step::Fail(upstream_error(self.client.base(), other)),
        })
    }

    fn forget_cookie(&mut self) {
        self.cookie = None;
        self.renew_at = None;
    }

    /// The current cookie, authorizing first when there is none or it
    /// expired (MS-WSUSSS 3.2.4.1).
    fn cookie(&mut self) -> std::result::Result<Cookie, Step> {
        let now = time::OffsetDateTime::now_utc();
        if let Some(c) = &self.cookie
            && self.renew_at.is_none_or(|t| now < t)
        {
            return Ok(c.clone());
        }
        let cfg = self.wrap(self.client.get_auth_config())?;
        let plugin = cfg
            .plugins
            .iter()
            .find(|p| p.plugin_id.eq_ignore_ascii_case(client::DSS_PLUGIN_ID))
            .ok_or_else(|| {
                Step::Fail(Error::Upstream {
                    url: self.client.base().to_string(),
                    detail: format!(
                        "GetAuthConfig offers no {} authorization plug-in",
                        client::DSS_PLUGIN_ID
                    ),
                })
            })?;
        let auth = self.wrap(self.client.get_authorization_cookie(
            &plugin.service_url,
            &self.account_name,
            &self.account_guid,
        ))?;
        let old = self.cookie.take();
        let cookie = self.wrap(self.client.get_cookie(&auth, old.as_ref()))?;
        self.renew_at = cookie.expires_at().and_then(|t| {
            let renew = t - time::Duration::seconds(60);
            // Already expired by our clock: the clocks disagree; rely on
            // the upstream's InvalidCookie instead.
            (renew > now).then_some(renew)
        });
        self.cookie = Some(cookie.clone());
        Ok(cookie)
    }
}

/// Synchronizes `store` from the upstream server.
pub fn sync(store: &mut Store, opts: &SyncOptions, progress: &dyn Progress) -> Result<SyncReport> {
    let client = Client::new(&opts.upstream, opts.client.clone())
        .map_err(|e| upstream_error(&opts.upstream, e))?;
    let url = client.base().to_string();
    let info = store.info().clone();
    if opts.replica && info.mode != Mode::Replica {
        return Err(Error::NotAReplica {
            url,
            mode: info.mode.as_str().to_string(),
        });
    }
    let products = canonical_ids("product id", &opts.products)?;
    let classifications = canonical_ids("classification id", &opts.classifications)?;
    let prev = load_state(store, &url)?;
    let mut st = prev.clone().unwrap_or_default();
    if !products.is_empty() || !classifications.is_empty() {
        st.filters.products = products;
        st.filters.classifications = classifications;
    }
    if opts.replica && !st.replica {
        // Deployments were not taken before: all of them now.
        st.deployment_anchor = None;
    }
    st.replica = opts.replica;
    let mut report = SyncReport {
        upstream: url.clone(),
        replica: opts.replica,
        full: !st.has_anchors(),
        products: st.filters.products.clone(),
        classifications: st.filters.classifications.clone(),
        ..Default::default()
    };
    let mut session = Session {
        client: &client,
        account_name: account_name(opts.account_name.as_deref().unwrap_or(&info.name)),
        account_guid: info.server_id,
        cookie: None,
        renew_at: None,
        mu_urls: HashMap::new(),
        catalog_only_sync: false,
    };
    let now = now_rfc3339();

    // ---- metadata and deployments: one transaction
    {
        let tx = SyncTxn::begin(store)?;
        let mut invalid_parameters_retried = false;
        loop {
            let mut attempt = st.clone();
            match run_protocol(
                &mut session,
                &tx,
                &now,
                &mut attempt,
                opts,
                &mut report,
                progress,
            ) {
                Ok(()) => {
                    st = attempt;
                    break;
                }
                Err(Step::Fail(e)) => return Err(e),
                Err(Step::Fault(op, fault)) => {
                    let stop = |why: &str| Error::Upstream {
                        url: url.clone(),
                        detail: format!(
                            "{op}: {fault}; {why}; the sync stopped and the store is unchanged"
                        ),
                    };
                    match fault.action() {
                        FaultAction::Restart if report.restarts < MAX_RESTARTS => {
                            report.restarts += 1;
                            session.forget_cookie();
                        }
                        FaultAction::Restart => {
                            return Err(stop(&format!(
                                "still refused after {MAX_RESTARTS} restarts of the protocol"
                            )));
                        }
                        FaultAction::ResetAnchors if report.anchors_reset == 0 => {
                            report.anchors_reset += 1;
                            st.reset_anchors();
                            session.forget_cookie();
                        }
                        FaultAction::InvalidParameters
                            if st.has_anchors() && !invalid_parameters_retried =>
                        {
                            // The stored anchors may no longer be valid
                            // upstream (a rebuilt server): full resync.
                            invalid_parameters_retried = true;
                            report.anchors_reset += 1;
                            st.reset_anchors();
                        }
                        FaultAction::Retry => {
                            return Err(stop("the upstream stayed busy"));
                        }
                        _ => return Err(stop("MS-WSUSSS 2.2.9.3 requires the DSS to stop")),
                    }
                }
            }
        }
        save_state(&tx, &url, &st, &now)?;
        crate::failpoint::hit("sync-before-commit");
        tx.commit()?;
    }
    report.config_anchor = st.config_anchor.clone();
    report.sync_anchor = st.sync_anchor.clone();
    report.deployment_anchor = st.deployment_anchor.clone();

    // ---- content: a second transaction
    if opts.content != ContentMode::None {
        sync_content(
            store,
            &mut session,
            opts.content,
            &now,
            &mut report,
            progress,
        )?;
    }
    if opts.rollup {
        let me = super::rollup::Identity {
            server_id: info.server_id,
            name: info.name.clone(),
            replica: opts.replica,
            last_sync: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
        };
        match super::rollup::rollup(store, &client, &me) {
            Ok(r) => report.rollup = Some(r),
            Err(super::rollup::RollupError::Store(e)) => return Err(e),
            Err(super::rollup::RollupError::Upstream(e)) => {
                report.rollup_error = Some(upstream_error(&url, e).to_string());
            }
        }
    }
    report.anchor = store.anchor()?.to_string();
    report.requests = client
        .calls()
        .into_iter()
        .map(|(op, n)| (op.name().to_string(), n))
        .collect();
    Ok(report)
}

fn revision_present(tx: &SyncTxn<'_>, u: &UpdateIdentity) -> Result<bool> {
    tx.revision_present(&u.id.to_string(), u.revision)
}

#[allow(clippy::too_many_arguments)]
fn run_protocol(
    s: &mut Session<'_>,
    tx: &SyncTxn<'_>,
    now: &str,
    st: &mut UpstreamState,
    opts: &SyncOptions,
    report: &mut SyncReport,
    progress: &dyn Progress,
) -> std::result::Result<(), Step> {
    // 1-2. authorization, configuration
    let cookie = s.cookie()?;
    let config = s.wrap(
        s.client
            .get_config_data(&cookie, st.config_anchor.as_deref()),
    )?;
    report.catalog_only_sync = config.catalog_only_sync;
    report.lazy_sync = config.lazy_sync;
    s.catalog_only_sync = config.catalog_only_sync;
    let mut batch = config.max_updates_per_request.max(1) as u32;
    if let Some(cap) = opts.max_updates_per_request {
        batch = batch.min(cap.max(1));
    }
    report.max_updates_per_request = batch;
    let decryption_batch = config.max_decryption_updates_per_request.max(1) as usize;

    // 3. categories, classifications, detectoids
    let cookie = s.cookie()?;
    let config_list = s.wrap(s.client.get_revision_id_list(
        &cookie,
        &RevisionFilter {
            anchor: st.sync_anchor.clone(),
            get_config: true,
            ..Default::default()
        },
    ))?;
    report.config_revisions_listed = config_list.revisions.len() as u64;
    let mut added: Vec<UpdateIdentity> = Vec::new();
    fetch_revisions(
        s,
        tx,
        now,
        &config_list.revisions,
        batch as usize,
        report,
        progress,
        "categories",
        &mut added,
    )?;

    // 4. updates, filtered
    let (categories, classifications) = effective_filter(tx, &st.filters)?;
    let first = st.sync_anchor.is_none();
    let delta = |id: &String, sent: &[String]| !first && sent.contains(id);
    let mut filter = RevisionFilter {
        anchor: st.sync_anchor.clone(),
        get_config: false,
        ..Default::default()
    };
    for (list, sent, out) in [
        (
            &categories,
            &st.filters.sent_categories,
            &mut filter.categories,
        ),
        (
            &classifications,
            &st.filters.sent_classifications,
            &mut filter.classifications,
        ),
    ] {
        for id in list {
            let Ok(uuid) = Uuid::parse_str(id) else {
                continue;
            };
            out.push(IdAndDelta {
                id: uuid,
                delta: delta(id, sent),
            });
        }
    }
    let cookie = s.cookie()?;
    let update_list = s.wrap(s.client.get_revision_id_list(&cookie, &filter))?;
    report.update_revisions_listed = update_list.revisions.len() as u64;
    fetch_revisions(
        s,
        tx,
        now,
        &update_list.revisions,
        batch as usize,
        report,
        progress,
        "updates",
        &mut added,
    )?;

    // 5. decryption data for new revisions with a secured fragment
    let mut secured: Vec<UpdateIdentity> = Vec::new();
    for u in &added {
        if tx.revision_secured(&u.id.to_string(), u.revision)? {
            secured.push(*u);
        }
    }
    for chunk in secured.chunks(decryption_batch) {
        let cookie = s.cookie()?;
        let keys = s.wrap(s.client.get_update_decryption_data(&cookie, chunk))?;
        report.decryption_data_requests += 1;
        report.decryption_keys += keys.iter().filter(|k| k.key.is_some()).count() as u64;
    }

    // 6. deployments (replica)
    // The list anchors are opaque; the one of the first list is kept (the
    // earlier point in time), so nothing that changed between the two
    // lists is ever skipped.
    let new_sync_anchor = config_list.anchor.clone().or(update_list.anchor.clone());
    if opts.replica {
        let sync_anchor = update_list
            .anchor
            .clone()
            .or(new_sync_anchor.clone())
            .unwrap_or_default();
        let cookie = s.cookie()?;
        let res = s.wrap(s.client.get_deployments(
            &cookie,
            st.deployment_anchor.as_deref(),
            &sync_anchor,
        ))?;
        apply_deployments(s, tx, now, &res, batch as usize, report, progress)?;
        st.deployment_anchor = res.anchor.clone();
    }

    // 7. the new anchors (committed by the caller)
    st.config_anchor = config.new_config_anchor.clone();
    st.sync_anchor = new_sync_anchor;
    let grew = categories
        .iter()
        .any(|c| !st.filters.sent_categories.contains(c))
        || classifications
            .iter()
            .any(|c| !st.filters.sent_classifications.contains(c));
    if grew && !first && opts.replica {
        // Updates that just came into scope may have deployments that were
        // skipped before: take all deployments next time.
        st.deployment_anchor = None;
    }
    st.filters.sent_categories = categories;
    st.filters.sent_classifications = classifications;
    Ok(())
}

/// The Categories and Classifications to send. A product filter without
/// classifications means every classification this store knows (the
/// protocol needs both lists to filter), and the other way round.
fn effective_filter(tx: &SyncTxn<'_>, f: &StoredFilters) -> Result<(Vec<String>, Vec<String>)> {
    if f.products.is_empty() && f.classifications.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let all_of = |category_type: &str| tx.category_ids(category_type);
    let products = if f.products.is_empty() {
        all_of("Product")?
    } else {
        f.products.clone()
    };
    let classifications = if f.classifications.is_empty() {
        all_of("UpdateClassification")?
    } else {
        f.classifications.clone()
    };
    Ok((products, classifications))
}

/// GetUpdateData for the listed revisions this store does not hold, in
/// batches; each document is parsed, checked against the identity it was
/// sent under and inserted.
#[allow(clippy::too_many_arguments)]
fn fetch_revisions(
    s: &mut Session<'_>,
    tx: &SyncTxn<'_>,
    now: &str,
    listed: &[UpdateIdentity],
    batch: usize,
    report: &mut SyncReport,
    progress: &dyn Progress,
    phase: &str,
    added: &mut Vec<UpdateIdentity>,
) -> std::result::Result<(), Step> {
    let mut needed: Vec<UpdateIdentity> = Vec::new();
    let mut seen: BTreeSet<UpdateIdentity> = BTreeSet::new();
    for u in listed {
        if seen.insert(*u) && !revision_present(tx, u)? {
            needed.push(*u);
        }
    }
    if needed.is_empty() {
        return Ok(());
    }
    let url = s.client.base().to_string();
    progress.phase(phase, Some(needed.len() as u64), "revisions");
    for chunk in needed.chunks(batch.max(1)) {
        let cookie = s.cookie()?;
        let data = s.wrap(s.client.get_update_data(&cookie, chunk))?;
        report.update_data_requests += 1;
        report.revisions_requested += chunk.len() as u64;
        let wanted: BTreeSet<UpdateIdentity> = chunk.iter().copied().collect();
        let mut got: BTreeSet<UpdateIdentity> = BTreeSet::new();
        for u in &data.updates {
            let name = format!("{url} {}-r{}", u.id.id, u.id.revision);
            if !wanted.contains(&u.id) || !got.insert(u.id) {
                return Err(Step::Fail(Error::verification(
                    "unexpected-revision",
                    format!(
                        "{name}: GetUpdateData answered with a revision that was not asked for (or twice)"
                    ),
                )));
            }
            let xml = canonical_xml(&u.xml).map_err(|error| Error::Metadata {
                name: name.clone(),
                error,
            })?;
            let meta = metadata::parse(&xml).map_err(|error| Error::Metadata {
                name: name.clone(),
                error,
            })?;
            if meta.id != u.id.id || meta.revision != u.id.revision {
                return Err(Step::Fail(Error::verification(
                    "identity-mismatch",
                    format!(
                        "{name}: the document is update {} revision {}",
                        meta.id, meta.revision
                    ),
                )));
            }
            let existed = tx.update_known(&meta.id.to_string())?;
            match tx.insert_revision(now, &name, &xml, &meta)? {
                Added::New(_) => {
                    report.revisions_added += 1;
                    if !existed {
                        report.updates_added += 1;
                    }
                    added.push(u.id);
                }
                Added::AlreadyPresent(_) => report.revisions_already_present += 1,
            }
            progress.advance(1);
        }
        if got.len() != wanted.len() {
            let missing: Vec<String> = wanted
                .difference(&got)
                .take(5)
                .map(|u| u.to_string())
                .collect();
            return Err(Step::Fail(Error::Upstream {
                url: url.to_string(),
                detail: format!(
                    "GetUpdateData returned no metadata for {} of {} requested revisions (e.g. {})",
                    wanted.len() - got.len(),
                    wanted.len(),
                    missing.join(", ")
                ),
            }));
        }
        for f in data.file_urls {
            if let Some(mu) = f.mu_url {
                s.mu_urls.insert(f.digest, mu);
            }
        }
    }
    progress.finish();
    Ok(())
}

/// The bytes a synced revision is stored as: the document's text in UTF-8
/// without a byte-order mark. The transport encoding is not part of the
/// document: Windows WSUS sends the same document as UTF-16LE inside a
/// Cabinet or as XML text, gapsync's USS sends UTF-16LE Cabinets for long
/// documents, and a bundle or `catalog add` carries the UTF-8 form. Storing
/// one form makes a revision that arrives by sync, by bundle or from a
/// file byte-identical (the same digest, never a revision conflict).
/// Documents that are UTF-8 already are kept byte for byte.
pub fn canonical_xml(bytes: &[u8]) -> std::result::Result<Vec<u8>, metadata::MetadataError> {
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Ok(metadata::decode_text(rest)?.into_owned().into_bytes()),
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] | [b'<', 0x00, ..] | [0x00, b'<', ..] => {
            Ok(metadata::decode_text(bytes)?.into_owned().into_bytes())
        }
        _ => Ok(bytes.to_vec()),
    }
}

/// `Deadline`/`GoLiveTime` as the store keeps them (RFC 3339, UTC).
fn wire_time(what: &str, s: &str) -> Result<String> {
    let t = crate::soap::xsd::parse_datetime(s)
        .ok_or_else(|| Error::invalid(what, format!("{s:?} is not an xsd:dateTime")))?;
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::invalid(what, e.to_string()))
}

fn action_name(wire: i32) -> Option<&'static str> {
    match wire {
        0 => Some("install"),
        1 => Some("uninstall"),
        3 => Some("block"),
        _ => None,
    }
}

/// Applies a GetDeployments answer (MS-WSUSSS 3.2.4.3) through
/// `import::apply_state`, so synced and imported state are identical.
#[allow(clippy::too_many_arguments)]
fn apply_deployments(
    s: &mut Session<'_>,
    tx: &SyncTxn<'_>,
    now: &str,
    res: &client::DeploymentResult,
    batch: usize,
    report: &mut SyncReport,
    progress: &dyn Progress,
) -> std::result::Result<(), Step> {
    let builtin = |id: &str| id == ALL_COMPUTERS.0 || id == UNASSIGNED_COMPUTERS.0;
    let mut state = State::default();

    // Groups: the answer is the full list. Parents before children.
    let mut pending: Vec<GroupRecord> = res
        .groups
        .iter()
        .filter(|g| !g.builtin && !builtin(&g.id.to_string()))
        .map(|g| GroupRecord {
            id: g.id.to_string(),
            name: g.name.clone(),
            parent_id: g.parent_id.map(|p| p.to_string()),
        })
        .collect();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for g in pending {
            let parent_ready = match &g.parent_id {
                None => true,
                Some(p) => {
                    builtin(p)
                        || placed.contains(p)
                        || !res.groups.iter().any(|x| &x.id.to_string() == p)
                }
            };
            if parent_ready {
                placed.insert(g.id.clone());
                state.groups.push(g);
            } else {
                rest.push(g);
            }
        }
        if rest.len() == before {
            return Err(Step::Fail(Error::verification(
                "malformed-state",
                format!(
                    "upstream {}: GetDeployments names groups whose parents form a cycle",
                    s.client.base()
                ),
            )));
        }
        pending = rest;
    }
    let upstream_groups: BTreeSet<String> = res.groups.iter().map(|g| g.id.to_string()).collect();
    state.removed_groups = tx
        .local_group_ids()?
        .into_iter()
        .filter(|g| !upstream_groups.contains(g))
        .collect();

    // Deployments: the revisions they name must be here.
    let mut missing: Vec<UpdateIdentity> = Vec::new();
    let mut live: Vec<&client::SyncDeployment> = Vec::new();
    for d in &res.deployments {
        if action_name(d.action).is_none() || !tx.update_known(&d.update.id.to_string())? {
            report.deployments_skipped += 1;
            continue;
        }
        if !revision_present(tx, &d.update)? {
            missing.push(d.update);
        }
        live.push(d);
    }
    if !missing.is_empty() {
        let mut added = Vec::new();
        fetch_revisions(
            s,
            tx,
            now,
            &missing,
            batch,
            report,
            progress,
            "deployed revisions",
            &mut added,
        )?;
    }
    let mut in_answer: BTreeSet<String> = BTreeSet::new();
    for d in live {
        let action = action_name(d.action).unwrap_or("install");
        let deadline = if d.deadline.trim().starts_with(client::NO_DEADLINE_DATE) {
            None
        } else {
            Some(wire_time("deployment deadline", &d.deadline)?)
        };
        in_answer.insert(d.deployment_id.to_string());
        state.deployments.push(DeploymentRecord {
            deployment_id: d.deployment_id.to_string(),
            update_id: d.update.id.to_string(),
            revision: d.update.revision,
            group_id: d.group_id.to_string(),
            action: action.to_string(),
            admin_name: d.admin_name.clone(),
            deadline,
            go_live: wire_time("deployment go-live time", &d.go_live)?,
            download_priority: d.download_priority,
            is_assigned: d.is_assigned,
            removed: false,
        });
    }
    // Dead deployments, and live ones to removed groups (3.2.4.3: removed
    // with their group), as removed records built from the local rows.
    let removed_groups: BTreeSet<&String> = state.removed_groups.iter().collect();
    let mut dead_ids: Vec<String> = res.dead_deployments.iter().map(|d| d.to_string()).collect();
    for (id, group) in tx.live_deployment_groups()? {
        if removed_groups.contains(&group) && !in_answer.contains(&id) {
            dead_ids.push(id);
        }
    }
    let mut dead_seen: BTreeSet<String> = BTreeSet::new();
    for id in dead_ids {
        if in_answer.contains(&id) || !dead_seen.insert(id.clone()) {
            continue;
        }
        if let Some(d) = tx.removal_of(&id)? {
            state.deployments.push(d);
        }
    }
    // Hidden updates are declined ones (a full list); updates outside this
    // store's filters are not here to decline.
    for u in &res.hidden_updates {
        let id = u.to_string();
        if tx.update_known(&id)? {
            state.declined.push(id);
        }
    }
    progress.phase(
        "deployments",
        Some(state.deployments.len() as u64),
        "deployments",
    );
    report.state += tx.apply_state(now, &state)?;
    progress.advance(state.deployments.len() as u64);
    progress.finish();
    Ok(())
}

/// Content files moved into place whose transaction has not committed.
struct Placed(Vec<PathBuf>);

impl Drop for Placed {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sync_content(
    store: &mut Store,
    s: &mut Session<'_>,
    mode: ContentMode,
    now: &str,
    report: &mut SyncReport,
    progress: &dyn Progress,
) -> Result<()> {
    let needed: Vec<NeededContent> = match mode {
        ContentMode::None => Vec::new(),
        ContentMode::All => syncing::needed_content(store, false)?,
        ContentMode::Approved => syncing::needed_content(store, true)?,
    };
    if needed.is_empty() {
        return Ok(());
    }
    let root = store.root().to_path_buf();
    let total: u64 = needed.iter().map(|n| n.size).sum();
    let free = fs4::available_space(&root).unwrap_or(u64::MAX);
    if total > free {
        return Err(Error::DiskFull {
            path: root,
            what: "the upstream's content (metadata was synced; sync again with more space or --content none)"
                .to_string(),
            need: total,
            free,
        });
    }
    let content_store = ContentStore::new(
        root.join(crate::store::CONTENT_DIR),
        root.join(crate::store::STAGING_DIR),
    );
    let url = s.client.base().to_string();
    let mut staged: Vec<Staged> = Vec::new();
    let mut not_found: Vec<[u8; 20]> = Vec::new();
    progress.phase("content", Some(total), "bytes");
    for n in &needed {
        let rel_path = crate::store::content::wsus_rel_path(&n.sha1, &n.file_name);
        let source = if s.catalog_only_sync {
            s.mu_urls.get(&n.sha1).cloned()
        } else {
            Some(s.client.content_url(&rel_path))
        };
        let Some(source) = source else {
            not_found.push(n.sha1);
            continue;
        };
        let mut w = content_store.begin_stage(&n.file_name)?;
        let advance = |k: u64| progress.advance(k);
        match s
            .client
            .download(&source, &mut w, n.size, &advance)
            .map_err(|e| upstream_error(&url, e))?
        {
            Download::NotFound => not_found.push(n.sha1),
            Download::Complete { resumed } => {
                report.content_resumed += u64::from(resumed);
                let expected = Expected {
                    sha1: n.sha1,
                    sha256: n.sha256,
                    size: Some(n.size),
                };
                let f = w.finish(Some(&expected)).map_err(|e| match e {
                    Error::DigestMismatch {
                        what,
                        expected,
                        actual,
                        ..
                    } => Error::verification(
                        "content-mismatch",
                        format!(
                            "{source}: {what} is {actual}, the update metadata says {expected}; nothing of this download was kept"
                        ),
                    ),
                    other => other,
                })?;
                staged.push(f);
            }
        }
    }
    progress.finish();
    report.content_missing = not_found.len() as u64;
    if !not_found.is_empty() && !s.catalog_only_sync {
        // Ask the upstream to fetch them (3.2.4.4); best effort.
        for chunk in not_found.chunks(client::MAX_DOWNLOAD_FILES_DIGESTS) {
            let Ok(cookie) = s.cookie() else { break };
            if s.client.download_files(&cookie, chunk).is_err() {
                break;
            }
        }
    }
    let tx = SyncTxn::begin(store)?;
    let mut placed = Placed(Vec::new());
    for f in staged {
        if tx.content_present(&f.file.sha1)? {
            continue;
        }
        let file = content_store.commit(f)?;
        placed.0.push(content_store.path_of(&file.rel_path));
        tx.record_content(now, &file)?;
        report.content_files += 1;
        report.content_bytes += file.size;
    }
    crate::failpoint::hit("sync-content-before-commit");
    tx.commit()?;
    placed.0.clear();
    Ok(())
}
