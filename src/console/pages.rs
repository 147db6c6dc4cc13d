//! The console's pages, rendered from the store on each request.

use std::fmt::Write;

use super::html::{STATES, csrf_field, esc, or_dash, state_bar, url};
use crate::error::Result;
use crate::model::units::{count, human_bytes};
use crate::store::Store;
use crate::store::console::{ApprovalFilter, UpdateQuery};

/// Rows per page of the update list.
pub const PAGE_SIZE: u64 = 50;

/// Query parameters, in order.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(q: &str) -> Params {
        Params(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }
    /// The first non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub fn login(csrf: &str, message: Option<&str>) -> String {
    let mut s = String::from("<section class=\"login\">\n<h1>Log in</h1>\n");
    if let Some(m) = message {
        let _ = writeln!(s, "<p class=\"error\" role=\"alert\">{}</p>", esc(m));
    }
    let _ = write!(
        s,
        "<form method=\"post\" action=\"/login\">\n{}\n\
         <label for=\"password\">Console password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <button type=\"submit\" id=\"login\">Log in</button>\n</form>\n\
         <p class=\"hint\">Set with <code>gapsync console passwd</code> on the server.</p>\n</section>\n",
        csrf_field(csrf)
    );
    s
}

pub fn overview(store: &Store) -> Result<String> {
    let st = store.status()?;
    let mut s = String::new();
    let _ = write!(
        s,
        "<h1>Overview</h1>\n<section aria-labelledby=\"h-id\">\n<h2 id=\"h-id\">Server</h2>\n<dl class=\"facts\">\n\
         <dt>Name</dt><dd>{}</dd>\n<dt>Server id</dt><dd><code>{}</code></dd>\n<dt>Mode</dt><dd>{}</dd>\n\
         <dt>Anchor</dt><dd><code id=\"anchor\">{}</code></dd>\n\
         <dt>Updates</dt><dd>{} software, {} driver, {} declined</dd>\n\
         <dt>Groups / computers</dt><dd>{} / {}</dd>\n<dt>Approvals</dt><dd>{}</dd>\n\
         <dt>Content</dt><dd>{}, {}</dd>\n",
        esc(&st.name),
        esc(&st.server_id),
        st.mode.as_str(),
        esc(&st.anchor),
        st.updates.software,
        st.updates.driver,
        st.declined,
        st.groups,
        st.computers,
        st.deployments,
        count(st.content_files as u64, "file"),
        human_bytes(st.content_bytes as u64)
    );
    let imports = crate::airgap::import::ledger(store)?;
    let last_import = imports.iter().map(|l| l.imported.clone()).max();
    let last_export = crate::airgap::export::history(store)?
        .into_iter()
        .map(|l| l.created)
        .max();
    let last_change = store.last_journal_time(&[
        "revision_added",
        "deployment_changed",
        "deployment_created",
        "deployment_removed",
        "update_declined",
    ])?;
    let last_check = crate::store::check::last_recorded(store)?;
    let syncs = store.sync_times()?;
    let sync = |t: &Option<(String, String)>, what: &str| {
        t.as_ref()
            .map(|(who, at)| format!("{} ({what} {})", esc(at), esc(who)))
            .unwrap_or_else(|| "&#8212;".into())
    };
    let _ = write!(
        s,
        "<dt>Last catalog or approval change</dt><dd>{}</dd>\n<dt>Last sync from upstream</dt><dd>{}</dd>\n\
         <dt>Last sync by a downstream server</dt><dd>{}</dd>\n<dt>Last import</dt><dd>{}</dd>\n<dt>Last export</dt><dd>{}</dd>\n\
         <dt>Last full check</dt><dd id=\"last-check\">{}</dd>\n</dl>\n</section>\n",
        or_dash(last_change.as_deref()),
        sync(&syncs.from_upstream, "from"),
        sync(&syncs.by_downstream, "by"),
        or_dash(last_import.as_deref()),
        or_dash(last_export.as_deref()),
        check_summary(last_check.as_ref())
    );
    s.push_str("<section aria-labelledby=\"h-chains\">\n<h2 id=\"h-chains\">Destinations</h2>\n");
    let chains = store.chain_rows()?;
    if chains.is_empty() {
        s.push_str("<p>No bundle exported yet.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Last bundle (seq)</th><th scope=\"col\">Up to anchor</th><th scope=\"col\">Changes since</th><th scope=\"col\">Site reported applied</th><th scope=\"col\">Exported</th></tr></thead>\n<tbody>\n");
        for c in &chains {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.destination),
                c.last_seq,
                esc(&c.last_to_anchor),
                c.changes_behind
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "&#8212;".into()),
                sites_applied(&c.sites),
                esc(&c.updated)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</section>\n<section aria-labelledby=\"h-problems\">\n<h2 id=\"h-problems\">Pending problems</h2>\n<ul class=\"problems\">\n");
    let mut problems = 0;
    if let Some(c) = last_check.as_ref().filter(|c| !c.problems.is_empty()) {
        for f in &c.problems {
            problems += 1;
            let _ = writeln!(
                s,
                "<li>Check of {}: <code>{}</code> {}</li>",
                esc(&c.at),
                esc(&f.rule),
                esc(&f.detail)
            );
        }
    }
    for p in validity_problems(&chains, &imports, time::OffsetDateTime::now_utc()) {
        problems += 1;
        let _ = writeln!(s, "<li>{p}</li>");
    }
    let missing = store.approved_content_missing()?;
    if missing > 0 {
        problems += 1;
        let _ = writeln!(
            s,
            "<li>{} of approved updates not in the store (import or sync the content)</li>",
            count(missing as u64, "content file")
        );
    }
    let keys = store.trusted_key_rows()?;
    let live = keys.iter().filter(|k| !k.revoked).count();
    if st.mode == crate::store::Mode::Replica && live == 0 {
        problems += 1;
        s.push_str("<li>No trusted key: this replica accepts no bundle (<code>gapsync trust add KEY.pub</code>)</li>\n");
    }
    let failed = store.search_updates(&UpdateQuery {
        status: Some("failed".into()),
        limit: 1,
        ..UpdateQuery::default()
    })?;
    if failed.total > 0 {
        problems += 1;
        let _ = writeln!(
            s,
            "<li><a href=\"/updates?status=failed\">{} failed on at least one computer</a></li>",
            count(failed.total, "update")
        );
    }
    if problems == 0 {
        s.push_str("<li>None found.</li>\n");
    }
    s.push_str("</ul>\n<p class=\"hint\">A full check of the database and every content digest (its result shows here): <code>gapsync check</code>.</p>\n</section>\n");
    s.push_str("<section aria-labelledby=\"h-keys\">\n<h2 id=\"h-keys\">Trusted keys</h2>\n");
    if keys.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Key id</th><th scope=\"col\">Label</th><th scope=\"col\">Added</th><th scope=\"col\">State</th></tr></thead>\n<tbody>\n");
        for k in keys {
            let _ = writeln!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.key_id),
                esc(&k.label),
                esc(&k.added),
                if k.revoked { "revoked" } else { "trusted" }
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</section>\n");
    Ok(s)
}

/// How long before a bundle's validity period ends the overview warns.
const EXPIRY_NOTICE: time::Duration = time::Duration::days(7);

/// Pending problems of validity periods (keys carry none: a key is trusted
/// until revoked, docs/security.md): on the exporting side, a
/// destination's last bundle that no site report shows applied and whose
/// period is over or ends within `EXPIRY_NOTICE` (after it, the importer
/// refuses it); on the importing side, a source whose newest applied
/// bundle's period is over, so the next one is overdue (a withheld bundle
/// looks like this, docs/security.md §4.6). Unknown or unreadable times
/// (ledgers before schema v12) give no finding.
fn validity_problems(
    chains: &[crate::store::console::ChainRow],
    imports: &[crate::airgap::import::AppliedBundle],
    now: time::OffsetDateTime,
) -> Vec<String> {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let mut out = Vec::new();
    for c in chains {
        let applied = c.sites.iter().any(|a| a.seq >= c.last_seq);
        let Some(expires) = parse(&c.last_expires).filter(|_| !applied) else {
            continue;
        };
        let when = if expires <= now {
            "expired on"
        } else if expires - now <= EXPIRY_NOTICE {
            "expires on"
        } else {
            continue;
        };
        out.push(format!(
            "The last bundle to {} (seq {}) {when} {} and no site report shows it applied: after that its importer refuses it (export again: <code>gapsync export --to {} --since ANCHOR</code>)",
            esc(&c.destination),
            c.last_seq,
            esc(c.last_expires.as_deref().unwrap_or_default()),
            esc(&c.destination)
        ));
    }
    let mut newest: Vec<&crate::airgap::import::AppliedBundle> = Vec::new();
    for l in imports {
        match newest
            .iter_mut()
            .find(|n| n.source_server_id == l.source_server_id)
        {
            Some(n) if n.seq < l.seq => *n = l,
            Some(_) => {}
            None => newest.push(l),
        }
    }
    for l in newest {
        if parse(&l.expires).is_some_and(|e| e <= now) {
            out.push(format!(
                "No bundle from <code>{}</code> since seq {}, whose validity period ended on {}: the next bundle is overdue",
                esc(&l.source_server_id),
                l.seq,
                esc(l.expires.as_deref().unwrap_or_default())
            ));
        }
    }
    out
}

/// The Destinations cell: per site reporting on the chain, the seq it
/// applied and how many bundles it is behind.
fn sites_applied(sites: &[crate::store::console::SiteApplied]) -> String {
    if sites.is_empty() {
        return "&#8212; (no site report yet)".into();
    }
    sites
        .iter()
        .map(|a| {
            format!(
                "{}: seq {} ({})",
                esc(&a.site),
                a.seq,
                if a.behind == 0 {
                    "up to date".to_string()
                } else {
                    format!("{} behind", count(a.behind.max(0) as u64, "bundle"))
                }
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The overview's line on the last recorded `check`.
fn check_summary(c: Option<&crate::store::check::RecordedCheck>) -> String {
    let Some(c) = c else {
        return "never recorded (run <code>gapsync check</code>)".into();
    };
    let verdict = if c.problems.is_empty() {
        "clean".to_string()
    } else {
        format!(
            "<strong>{}</strong> (below)",
            count(c.problems.len() as u64, "problem")
        )
    };
    format!(
        "{}: {verdict}; {} and {} ({}) examined{}",
        esc(&c.at),
        count(c.revisions_checked, "revision"),
        count(c.content_files_checked, "content file"),
        human_bytes(c.content_bytes_checked),
        if c.repair { ", with --repair" } else { "" }
    )
}

fn select(
    s: &mut String,
    name: &str,
    label: &str,
    options: &[(String, String)],
    cur: Option<&str>,
) {
    let _ = write!(
        s,
        "<label for=\"f-{name}\">{label}</label>\n<select id=\"f-{name}\" name=\"{name}\">\n<option value=\"\">Any</option>\n"
    );
    for (v, text) in options {
        let sel = if Some(v.as_str()) == cur {
            " selected"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(v),
            esc(text)
        );
    }
    s.push_str("</select>\n");
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The approval form for the selected updates, or one update (`ids`).
fn action_form(s: &mut String, store: &Store, csrf: &str, ids: &[&str], back: &str) -> Result<()> {
    let groups = store.list_groups()?;
    let _ = write!(
        s,
        "<fieldset class=\"actions\">\n<legend>Approve, unapprove or decline</legend>\n{}\n<input type=\"hidden\" name=\"back\" value=\"{}\">\n",
        csrf_field(csrf),
        esc(back)
    );
    for id in ids {
        let _ = writeln!(
            s,
            "<input type=\"hidden\" name=\"id\" value=\"{}\">",
            esc(id)
        );
    }
    s.push_str("<label for=\"a-group\">Group</label>\n<select id=\"a-group\" name=\"group\">\n");
    for g in &groups {
        let _ = writeln!(
            s,
            "<option value=\"{}\">{}</option>",
            esc(&g.name),
            esc(&g.name)
        );
    }
    s.push_str(
        "</select>\n<label for=\"a-action\">Action</label>\n<select id=\"a-action\" name=\"action\">\n\
         <option value=\"install\">Install</option>\n<option value=\"uninstall\">Uninstall</option>\n<option value=\"block\">Block</option>\n</select>\n\
         <label for=\"a-deadline\">Deadline (UTC, optional)</label>\n\
         <input id=\"a-deadline\" name=\"deadline\" type=\"text\" placeholder=\"2027-01-15T18:00:00Z\" \
         pattern=\"\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}(:\\d{2})?(Z|[+\\-]\\d{2}:\\d{2})?\">\n\
         <span class=\"buttons\">\n\
         <button type=\"submit\" name=\"op\" value=\"approve\" id=\"do-approve\">Approve</button>\n\
         <button type=\"submit\" name=\"op\" value=\"unapprove\" id=\"do-unapprove\">Unapprove</button>\n\
         <button type=\"submit\" name=\"op\" value=\"decline\" id=\"do-decline\" class=\"danger\">Decline</button>\n\
         </span>\n</fieldset>\n",
    );
    Ok(())
}

pub fn updates(store: &Store, p: &Params, csrf: &str) -> Result<String> {
    let page: u64 = p
        .get("page")
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let approval = match p.get("approval") {
        Some("approved") => ApprovalFilter::Approved,
        Some("unapproved") => ApprovalFilter::Unapproved,
        Some("declined") => ApprovalFilter::Declined,
        _ => ApprovalFilter::Any,
    };
    let kind = p
        .get("kind")
        .filter(|k| ["software", "driver", "category", "detectoid"].contains(k));
    let status = p
        .get("status")
        .filter(|k| STATES.iter().any(|(c, _)| c == k && *k != "unknown"));
    let q = UpdateQuery {
        text: p.get("q").unwrap_or("").chars().take(200).collect(),
        kind: kind.map(str::to_string),
        product: p.get("product").and_then(crate::store::canonical_guid),
        classification: p
            .get("classification")
            .and_then(crate::store::canonical_guid),
        approval,
        status: status.map(str::to_string),
        offset: (page - 1).saturating_mul(PAGE_SIZE),
        limit: PAGE_SIZE,
    };
    let res = store.search_updates(&q)?;
    let mut s = String::from(
        "<h1>Updates</h1>\n<form method=\"get\" action=\"/updates\" class=\"filters\" role=\"search\">\n",
    );
    let _ = write!(
        s,
        "<label for=\"f-q\">Search title, KB or id</label>\n<input id=\"f-q\" name=\"q\" type=\"search\" value=\"{}\">\n",
        esc(&q.text)
    );
    select(
        &mut s,
        "kind",
        "Kind",
        &pairs(&[
            ("software", "Software"),
            ("driver", "Driver"),
            ("category", "Category"),
            ("detectoid", "Detectoid"),
        ]),
        kind,
    );
    select(
        &mut s,
        "product",
        "Product",
        &store.categories_of_type("Product")?,
        q.product.as_deref(),
    );
    select(
        &mut s,
        "classification",
        "Classification",
        &store.categories_of_type("UpdateClassification")?,
        q.classification.as_deref(),
    );
    select(
        &mut s,
        "approval",
        "Approval",
        &pairs(&[
            ("approved", "Approved"),
            ("unapproved", "Not approved"),
            ("declined", "Declined"),
        ]),
        p.get("approval"),
    );
    select(
        &mut s,
        "status",
        "Computer status",
        &pairs(&[
            ("needed", "Needed"),
            ("failed", "Failed"),
            ("downloaded", "Downloaded"),
            ("installed", "Installed"),
            ("not_applicable", "Not applicable"),
        ]),
        status,
    );
    s.push_str("<button type=\"submit\" id=\"search\">Search</button>\n</form>\n");
    let pages = res.total.div_ceil(PAGE_SIZE).max(1);
    let _ = writeln!(
        s,
        "<p class=\"count\" id=\"result-count\">{} matching; page {page} of {pages}</p>",
        count(res.total, "update")
    );
    // The list's own query string, for paging links and the way back.
    let mut keep: Vec<(String, String)> =
        p.0.iter()
            .filter(|(k, v)| k != "page" && !v.is_empty())
            .cloned()
            .collect();
    let qs = |keep: &Vec<(String, String)>, page: u64| -> String {
        let mut parts: Vec<String> = keep
            .iter()
            .map(|(k, v)| format!("{}={}", url(k), url(v)))
            .collect();
        parts.push(format!("page={page}"));
        format!("/updates?{}", parts.join("&"))
    };
    let back = qs(&keep, page);
    s.push_str("<form method=\"post\" action=\"/updates/action\">\n<table class=\"updates\">\n<thead><tr><th scope=\"col\"><span class=\"sr\">Select</span></th><th scope=\"col\">Title</th><th scope=\"col\">KB</th><th scope=\"col\">Kind</th><th scope=\"col\">Created</th><th scope=\"col\">Approved for</th></tr></thead>\n<tbody>\n");
    for r in &res.rows {
        let _ = writeln!(
            s,
            "<tr><td><input type=\"checkbox\" name=\"id\" value=\"{id}\" aria-label=\"Select {t}\"></td>\
             <td><a href=\"/updates/{id}\">{t}</a>{d}</td><td>{kb}</td><td>{k}</td><td>{c}</td><td class=\"num\">{a}</td></tr>",
            id = esc(&r.id),
            t = esc(&r.title),
            d = if r.declined {
                " <span class=\"badge declined\">declined</span>"
            } else {
                ""
            },
            kb = r
                .kb_article
                .as_deref()
                .map(|k| format!("KB{}", esc(k)))
                .unwrap_or_default(),
            k = esc(&r.kind),
            c = or_dash(r.creation_date.as_deref().map(|d| d.get(..10).unwrap_or(d))),
            a = count(r.approvals as u64, "group"),
        );
    }
    s.push_str("</tbody>\n</table>\n");
    action_form(&mut s, store, csrf, &[], &back)?;
    s.push_str("</form>\n<nav class=\"pager\" aria-label=\"Pages\">\n");
    if page > 1 {
        let _ = writeln!(
            s,
            "<a href=\"{}\" rel=\"prev\">Previous</a>",
            esc(&qs(&keep, page - 1))
        );
    }
    if page < pages {
        let _ = writeln!(
            s,
            "<a href=\"{}\" rel=\"next\">Next</a>",
            esc(&qs(&keep, page + 1))
        );
    }
    keep.clear();
    s.push_str("</nav>\n");
    Ok(s)
}

pub fn update_detail(store: &Store, id: &str, csrf: &str) -> Result<String> {
    let d = store.update_detail(id)?;
    let mut s = String::new();
    let _ = write!(
        s,
        "<h1>{}</h1>\n<dl class=\"facts\">\n<dt>Update id</dt><dd><code>{}</code></dd>\n<dt>Revision</dt><dd>{}</dd>\n\
         <dt>Kind</dt><dd>{}</dd>\n<dt>KB</dt><dd>{}</dd>\n<dt>Created</dt><dd>{}</dd>\n<dt>State</dt><dd id=\"update-state\">{}</dd>\n</dl>\n",
        esc(&d.title),
        esc(&d.id),
        d.revision,
        esc(&d.kind),
        or_dash(d.metadata.kb_article_id.as_deref()),
        or_dash(d.metadata.creation_date.as_deref()),
        if d.declined { "declined" } else { "active" }
    );
    s.push_str("<section aria-labelledby=\"h-appr\">\n<h2 id=\"h-appr\">Approvals</h2>\n");
    let approvals: Vec<_> = store
        .list_deployments()?
        .into_iter()
        .filter(|a| a.update_id == d.id)
        .collect();
    if approvals.is_empty() {
        s.push_str("<p id=\"approvals-none\">Not approved for any group.</p>\n");
    } else {
        s.push_str("<table id=\"approvals\">\n<thead><tr><th scope=\"col\">Group</th><th scope=\"col\">Action</th><th scope=\"col\">Deadline</th><th scope=\"col\">By</th><th scope=\"col\">Since</th></tr></thead>\n<tbody>\n");
        for a in &approvals {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.group),
                esc(&a.action),
                or_dash(a.deadline.as_deref()),
                esc(&a.admin_name),
                esc(&a.go_live)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("<form method=\"post\" action=\"/updates/action\">\n");
    let back = format!("/updates/{}", d.id);
    action_form(&mut s, store, csrf, &[&d.id], &back)?;
    s.push_str("</form>\n</section>\n");
    let c = store.update_state_counts(&d.id)?;
    s.push_str(
        "<section aria-labelledby=\"h-status\">\n<h2 id=\"h-status\">Status on computers</h2>\n",
    );
    s.push_str(&state_bar(&c, "Computers by status"));
    s.push_str("\n<ul class=\"legend\">\n");
    let vals = [c.installed, c.needed, c.failed, c.not_applicable, c.unknown];
    for ((cls, name), v) in STATES.iter().zip(vals) {
        let _ = writeln!(
            s,
            "<li><span class=\"key s-{cls}\"></span>{name}: <strong>{v}</strong></li>"
        );
    }
    s.push_str("</ul>\n</section>\n<section aria-labelledby=\"h-sup\">\n<h2 id=\"h-sup\">Supersedence</h2>\n<ul>\n");
    let mut any = false;
    for sup in &d.metadata.superseded {
        any = true;
        let id = sup.to_string();
        let title = store.update_title(&id)?;
        let _ = writeln!(
            s,
            "<li>Supersedes <a href=\"/updates/{}\">{}</a></li>",
            esc(&id),
            esc(title.as_deref().unwrap_or(&id))
        );
    }
    for by in &d.superseded_by {
        any = true;
        let title = store.update_title(by)?;
        let _ = writeln!(
            s,
            "<li>Superseded by <a href=\"/updates/{}\">{}</a></li>",
            esc(by),
            esc(title.as_deref().unwrap_or(by))
        );
    }
    if !any {
        s.push_str("<li>None.</li>\n");
    }
    s.push_str(
        "</ul>\n</section>\n<section aria-labelledby=\"h-files\">\n<h2 id=\"h-files\">Files</h2>\n",
    );
    if d.files.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">File</th><th scope=\"col\">Size</th><th scope=\"col\">SHA-1</th><th scope=\"col\">In the store</th></tr></thead>\n<tbody>\n");
        for f in &d.files {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&f.file_name),
                human_bytes(f.size),
                esc(&f.sha1),
                if f.content_path.is_some() {
                    "yes"
                } else {
                    "missing"
                }
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</section>\n");
    Ok(s)
}

fn counts_cells(c: &crate::store::reports::StatusCounts) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        c.installed, c.needed, c.failed, c.not_applicable
    )
}

pub fn computers(store: &Store, p: &Params) -> Result<String> {
    let groups = store.list_groups()?;
    let held = store.group_computer_counts()?;
    let cur = p
        .get("group")
        .and_then(|g| groups.iter().find(|x| x.id == g));
    let mut s =
        String::from("<h1>Computers</h1>\n<nav class=\"groups\" aria-label=\"Groups\">\n<ul>\n");
    let _ = writeln!(
        s,
        "<li><a href=\"/computers\"{}>All</a></li>",
        if cur.is_none() {
            " aria-current=\"page\""
        } else {
            ""
        }
    );
    for g in &groups {
        let _ = writeln!(
            s,
            "<li><a href=\"/computers?group={}\"{}>{} ({})</a></li>",
            esc(&g.id),
            if cur.map(|c| &c.id) == Some(&g.id) {
                " aria-current=\"page\""
            } else {
                ""
            },
            esc(&g.name),
            held.get(&g.id).copied().unwrap_or(0)
        );
    }
    s.push_str("</ul>\n</nav>\n");
    let rows = store.computer_rows(cur.map(|g| g.id.as_str()))?;
    let _ = writeln!(
        s,
        "<p class=\"count\">{} in {}</p>",
        count(rows.len() as u64, "computer"),
        esc(cur.map(|g| g.name.as_str()).unwrap_or("all groups"))
    );
    if !rows.is_empty() {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Group</th><th scope=\"col\">Operating system</th><th scope=\"col\">Last contact</th><th scope=\"col\">Installed</th><th scope=\"col\">Needed</th><th scope=\"col\">Failed</th><th scope=\"col\">Not applicable</th></tr></thead>\n<tbody>\n");
        for c in &rows {
            let _ = writeln!(
                s,
                "<tr><td><a href=\"/computers/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                esc(&c.id),
                esc(&c.name),
                esc(&c.group),
                or_dash(c.os.as_deref()),
                or_dash(c.last_sync.as_deref().or(c.last_report.as_deref())),
                counts_cells(&c.counts)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    Ok(s)
}

pub fn computer(store: &Store, id: &str) -> Result<Option<String>> {
    let Some(c) = store.computer_row(id)? else {
        return Ok(None);
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<h1>{}</h1>\n<dl class=\"facts\">\n<dt>Group</dt><dd><a href=\"/computers?group={}\">{}</a></dd>\n\
         <dt>Operating system</dt><dd>{}</dd>\n<dt>Added</dt><dd>{}</dd>\n<dt>Last contact</dt><dd>{}</dd>\n<dt>Last report</dt><dd>{}</dd>\n</dl>\n",
        esc(&c.name),
        esc(&c.group_id),
        esc(&c.group),
        or_dash(c.os.as_deref()),
        esc(&c.added),
        or_dash(c.last_sync.as_deref()),
        or_dash(c.last_report.as_deref())
    );
    s.push_str("<section aria-labelledby=\"h-st\">\n<h2 id=\"h-st\">Updates</h2>\n");
    let lines = store.computer_status_lines(&c.id)?;
    if lines.is_empty() {
        s.push_str("<p>No status reported yet.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Update</th><th scope=\"col\">Status</th><th scope=\"col\">Since</th></tr></thead>\n<tbody>\n");
        for l in &lines {
            let _ = writeln!(
                s,
                "<tr><td><a href=\"/updates/{}\">{}</a></td><td><span class=\"key s-{}\"></span>{}</td><td>{}</td></tr>",
                esc(&l.update_id),
                esc(l.title.as_deref().unwrap_or(&l.update_id)),
                esc(&l.state),
                esc(&l.state.replace('_', " ")),
                esc(&l.changed)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str(
        "</section>\n<section aria-labelledby=\"h-ev\">\n<h2 id=\"h-ev\">Recent events</h2>\n",
    );
    let events = store.computer_events(&c.id, 50)?;
    if events.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Event</th><th scope=\"col\">Update</th><th scope=\"col\">Result</th></tr></thead>\n<tbody>\n");
        for e in &events {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>0x{:08X}</code></td></tr>",
                esc(&e.time_at_target),
                e.event_id,
                or_dash(e.title.as_deref().or(e.update_id.as_deref())),
                e.hresult as u32
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</section>\n");
    Ok(Some(s))
}

pub fn compliance(store: &Store) -> Result<String> {
    let rows = store.group_compliance()?;
    let mut s = String::from(
        "<h1>Compliance</h1>\n<p>Per group: each computer of the group times each update approved for install for the group (or a group above it), by the status the computer reported. \
         Per site: each computer of the site times each of the site's reportable updates, from the site's latest report (by media or rollup).</p>\n<p><a href=\"/compliance.csv\" download>Download as CSV</a></p>\n\
         <ul class=\"legend\">\n",
    );
    for (cls, name) in STATES {
        let _ = writeln!(s, "<li><span class=\"key s-{cls}\"></span>{name}</li>");
    }
    s.push_str("</ul>\n<table class=\"compliance\">\n<thead><tr><th scope=\"col\">Group</th><th scope=\"col\">Computers</th><th scope=\"col\">Approved updates</th><th scope=\"col\">Chart</th><th scope=\"col\">Installed</th><th scope=\"col\">Needed</th><th scope=\"col\">Failed</th><th scope=\"col\">Not applicable</th><th scope=\"col\">No status</th><th scope=\"col\">Compliant</th></tr></thead>\n<tbody>\n");
    for g in &rows {
        let c = &g.counts;
        let _ = writeln!(
            s,
            "<tr><th scope=\"row\"><a href=\"/computers?group={}\">{}</a></th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"chart\">{}</td>{}<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&g.group_id),
            esc(&g.group),
            g.computers,
            g.approved_updates,
            state_bar(c, &g.group),
            counts_cells(c),
            c.unknown,
            percent(c)
        );
    }
    s.push_str("</tbody>\n</table>\n");
    let sites = store.site_compliance()?;
    s.push_str("<h2 id=\"h-sites\">Per site</h2>\n");
    if sites.is_empty() {
        s.push_str("<p>No site has reported yet (<code>gapsync import</code> a site's report bundle, or a replica's <code>sync</code> rolls up).</p>\n");
        return Ok(s);
    }
    s.push_str("<table class=\"compliance\" aria-labelledby=\"h-sites\">\n<thead><tr><th scope=\"col\">Site</th><th scope=\"col\">Computers</th><th scope=\"col\">Last report</th><th scope=\"col\">Chart</th><th scope=\"col\">Installed</th><th scope=\"col\">Needed</th><th scope=\"col\">Failed</th><th scope=\"col\">Not applicable</th><th scope=\"col\">No status</th><th scope=\"col\">Compliant</th></tr></thead>\n<tbody>\n");
    for site in &sites {
        let c = &site.counts;
        let _ = writeln!(
            s,
            "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td><td>{}</td><td class=\"chart\">{}</td>{}<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&site.site),
            site.computers,
            esc(&site.last_report),
            state_bar(c, &site.site),
            counts_cells(c),
            c.unknown,
            percent(c)
        );
    }
    s.push_str("</tbody>\n</table>\n");
    Ok(s)
}

/// Installed or not applicable, of all pairs; a dash with none.
fn percent(c: &crate::store::reports::StatusCounts) -> String {
    let t = c.total();
    if t == 0 {
        "&#8212;".into()
    } else {
        format!(
            "{:.1}%",
            (c.installed + c.not_applicable) as f64 * 100.0 / t as f64
        )
    }
}

fn csv_field(s: &str) -> String {
    // Rule: a field that a spreadsheet would read as a formula is quoted
    // with a leading apostrophe.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn compliance_csv(store: &Store) -> Result<String> {
    let mut s = String::from(
        "kind,id,name,computers,approved_updates,installed,needed,failed,not_applicable,no_status\r\n",
    );
    for g in store.group_compliance()? {
        let c = g.counts;
        let _ = write!(
            s,
            "group,{},{},{},{},{},{},{},{},{}\r\n",
            g.group_id,
            csv_field(&g.group),
            g.computers,
            g.approved_updates,
            c.installed,
            c.needed,
            c.failed,
            c.not_applicable,
            c.unknown
        );
    }
    for site in store.site_compliance()? {
        let c = site.counts;
        let _ = write!(
            s,
            "site,{},{},{},,{},{},{},{},{}\r\n",
            site.server_id,
            csv_field(&site.site),
            site.computers,
            c.installed,
            c.needed,
            c.failed,
            c.not_applicable,
            c.unknown
        );
    }
    Ok(s)
}

/// A ledger's bundle size; a dash where it was not recorded (before
/// schema v12).
fn size_cell(bytes: Option<u64>) -> String {
    bytes.map(human_bytes).unwrap_or_else(|| "&#8212;".into())
}

/// A signing key id; a dash where it was not recorded.
fn key_cell(key: Option<&str>) -> String {
    key.map(|k| format!("<code>{}</code>", esc(k)))
        .unwrap_or_else(|| "&#8212;".into())
}

pub fn bundles(store: &Store) -> Result<String> {
    let mut s = String::from(
        "<h1>Bundles</h1>\n<section aria-labelledby=\"h-ex\">\n<h2 id=\"h-ex\">Exported</h2>\n",
    );
    let exports = crate::airgap::export::history(store)?;
    if exports.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Seq</th><th scope=\"col\">Kind</th><th scope=\"col\">From anchor</th><th scope=\"col\">To anchor</th><th scope=\"col\">Size</th><th scope=\"col\">Manifest SHA-256</th><th scope=\"col\">Signed by</th><th scope=\"col\">Created</th></tr></thead>\n<tbody>\n");
        for e in &exports {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td><code class=\"hash\">{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&e.destination),
                e.seq,
                esc(&e.kind),
                e.from_anchor
                    .as_deref()
                    .map(|a| format!("<code>{}</code>", esc(a)))
                    .unwrap_or_else(|| "(full)".into()),
                esc(&e.to_anchor),
                size_cell(e.bytes),
                esc(&e.manifest_sha256),
                key_cell(e.signer.as_deref()),
                esc(&e.created)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</section>\n<section aria-labelledby=\"h-im\">\n<h2 id=\"h-im\">Imported</h2>\n");
    let imports = crate::airgap::import::ledger(store)?;
    if imports.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table>\n<thead><tr><th scope=\"col\">Source server</th><th scope=\"col\">Seq</th><th scope=\"col\">Kind</th><th scope=\"col\">To anchor</th><th scope=\"col\">Local anchor after</th><th scope=\"col\">Size</th><th scope=\"col\">Manifest SHA-256</th><th scope=\"col\">Signed by</th><th scope=\"col\">Imported</th></tr></thead>\n<tbody>\n");
        for l in &imports {
            let _ = writeln!(
                s,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td class=\"num\">{}</td><td><code class=\"hash\">{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&l.source_server_id),
                l.seq,
                if l.full { "full" } else { "incremental" },
                esc(&l.to_anchor),
                esc(&l.local_anchor),
                size_cell(l.bytes),
                esc(&l.manifest_sha256),
                key_cell(l.signer.as_deref()),
                esc(&l.imported)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str(
        "</section>\n<section aria-labelledby=\"h-verify\">\n<h2 id=\"h-verify\">Verify a bundle with stock tools</h2>\n\
         <p>Anyone, anywhere, with the signer's public key (no gapsync needed): the signature over the sums, then every file against them.</p>\n\
         <pre><code>minisign -Vm BUNDLE/SHA256SUMS -p SIGNER.pub &amp;&amp; (cd BUNDLE &amp;&amp; sha256sum -c --quiet SHA256SUMS)</code></pre>\n\
         <p>For a bundle in volumes, run it in each volume folder. With gapsync: <code>gapsync verify BUNDLE --trust SIGNER.pub</code>; against this server's trust and chain: <code>gapsync --server DIR verify BUNDLE</code>.</p>\n</section>\n",
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::airgap::import::AppliedBundle;
    use crate::store::console::ChainRow;

    fn chain(seq: i64, expires: Option<&str>, site_seq: Option<i64>) -> ChainRow {
        ChainRow {
            destination: "plant".into(),
            last_seq: seq,
            last_to_anchor: "a".into(),
            updated: "2026-01-01T00:00:00Z".into(),
            changes_behind: None,
            sites: site_seq
                .map(|seq| crate::store::console::SiteApplied {
                    site: "plant-1".into(),
                    seq,
                    behind: 0,
                })
                .into_iter()
                .collect(),
            last_expires: expires.map(str::to_string),
        }
    }

    fn applied(source: &str, seq: i64, expires: Option<&str>) -> AppliedBundle {
        AppliedBundle {
            source_server_id: source.into(),
            seq,
            bundle_id: "b".into(),
            full: seq == 1,
            from_anchor: None,
            to_anchor: "a".into(),
            manifest_sha256: "m".into(),
            imported: "2026-01-01T00:00:00Z".into(),
            local_anchor: "l".into(),
            signer: None,
            bytes: None,
            expires: expires.map(str::to_string),
        }
    }

    #[test]
    fn validity_problems_name_expired_and_expiring_bundles_only() {
        let now = time::macros::datetime!(2026-06-10 12:00 UTC);
        let found = |chains: &[ChainRow], imports: &[AppliedBundle]| {
            validity_problems(chains, imports, now)
        };
        // Exporting side: expired, expiring within 7 days, or far off;
        // applied by a site; unknown.
        let p = found(&[chain(4, Some("2026-06-01T00:00:00Z"), None)], &[]);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("(seq 4) expired on 2026-06-01T00:00:00Z"),
            "{p:?}"
        );
        let p = found(&[chain(4, Some("2026-06-15T00:00:00Z"), Some(3))], &[]);
        assert!(
            p.len() == 1 && p[0].contains("expires on 2026-06-15"),
            "{p:?}"
        );
        assert!(found(&[chain(4, Some("2026-07-01T00:00:00Z"), None)], &[]).is_empty());
        assert!(found(&[chain(4, Some("2026-06-01T00:00:00Z"), Some(4))], &[]).is_empty());
        assert!(
            found(
                &[chain(4, None, None), chain(5, Some("garbage"), None)],
                &[]
            )
            .is_empty()
        );
        // Importing side: only each source's newest bundle counts.
        let imports = [
            applied("s1", 1, Some("2026-05-01T00:00:00Z")),
            applied("s1", 2, Some("2026-07-01T00:00:00Z")),
            applied("s2", 7, Some("2026-06-09T00:00:00Z")),
            applied("s2", 6, Some("2026-08-09T00:00:00Z")),
            applied("s3", 1, None),
        ];
        let p = found(&[], &imports);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("<code>s2</code> since seq 7"), "{p:?}");
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("Pilot"), "Pilot");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn params_take_the_first_non_empty_value() {
        let p = Params::parse("q=&q=KB12+34&id=a&id=b&x=%3Cy%3E");
        assert_eq!(p.get("q"), Some("KB12 34"));
        assert_eq!(p.all("id"), vec!["a", "b"]);
        assert_eq!(p.get("x"), Some("<y>"));
        assert_eq!(p.get("missing"), None);
    }
}
