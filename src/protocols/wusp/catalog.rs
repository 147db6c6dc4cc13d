//! The catalog as MS-WUSP clients see it, built once per catalog
//! generation (journal sequence, `content_arrived` aside) and shared by
//! every request: scope, IsLeaf, prerequisite clauses, effective
//! deployments per group, and the SyncUpdates selection.
//!
//! Rules (docs/protocol.md, MS-WUSP):
//! - Scope: the current revision of every update that is not declined, not
//!   `Expired`, and a software update, category or detectoid; plus every
//!   update such an update names as a prerequisite or bundle member,
//!   recursively. One revision per update, the current one.
//! - IsLeaf: no current revision in the store names the update in its
//!   prerequisites (bare or `AtLeastOne`, category or not).
//! - Deliverable: every prerequisite clause has an alternative whose
//!   current revision id the client reported installed.
//! - Action: category/detectoid → Evaluate; the effective deployment (the
//!   nearest up the group tree, live since its go-live) Install →
//!   Install (OptionalInstall when not assigned), Uninstall → Uninstall,
//!   Block → PreDeploymentCheck; no deployment: `ExplicitlyDeployable` →
//!   PreDeploymentCheck, else Bundle.

use std::collections::{HashMap, HashSet};

use crate::store::ALL_COMPUTERS;
use crate::store::wusp::CatalogRows;

/// A client action (MS-WUSP 2.2.2.2.4 `Deployment/Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Install,
    Uninstall,
    PreDeploymentCheck,
    Bundle,
    Evaluate,
    OptionalInstall,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "Install",
            Action::Uninstall => "Uninstall",
            Action::PreDeploymentCheck => "PreDeploymentCheck",
            Action::Bundle => "Bundle",
            Action::Evaluate => "Evaluate",
            Action::OptionalInstall => "OptionalInstall",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Software,
    Driver,
    Category,
    Detectoid,
}

/// One update's current revision.
#[derive(Debug, Clone)]
pub struct Entry {
    pub update_id: String,
    pub kind: Kind,
    /// `CategoryType` of a category (Company, Product, ...).
    pub category_type: Option<String>,
    pub rev_id: i64,
    pub revision: i32,
    pub declined: bool,
    pub explicitly_deployable: bool,
    /// `YYYY-MM-DD` of the revision's arrival.
    pub arrived: String,
    /// Prerequisite clauses (CNF) as entry indexes; an empty clause names
    /// only updates the store does not hold (never satisfied).
    pub clauses: Vec<Vec<usize>>,
    /// Every update named in a prerequisite (for the category filter).
    pub prereq_targets: Vec<usize>,
    pub bundled: Vec<usize>,
    pub is_leaf: bool,
    /// Journal sequence of the last change a cached client must hear of
    /// (deployment, decline, IsLeaf).
    pub changed_seq: i64,
    pub in_scope: bool,
}

/// The deployment a client is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: i32,
    pub action: Action,
    pub deadline: Option<String>,
    pub is_assigned: bool,
    /// `YYYY-MM-DD`.
    pub last_change: String,
}

#[derive(Debug, Clone)]
struct Explicit {
    id: i32,
    action: &'static str,
    deadline: Option<String>,
    is_assigned: bool,
    go_live: String,
    last_change: String,
}

/// The client view of one catalog generation.
#[derive(Debug, Default)]
pub struct Catalog {
    pub generation: i64,
    pub entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
    by_rev: HashMap<i64, usize>,
    parent: HashMap<String, Option<String>>,
    /// update index → (group id → explicit deployment).
    explicit: HashMap<usize, HashMap<String, Explicit>>,
}

/// Whom a request is for: the groups whose deployments apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// Server-side targeting: one group; client-side: the client's groups.
    pub groups: Vec<String>,
    /// The client understands OptionalInstall (protocol 2.0 and later).
    pub optional_install: bool,
}

fn date(s: &str) -> String {
    s.get(..10).unwrap_or("1970-01-01").to_string()
}

/// Rule: a deployment's id is a stable positive `int`: explicit ones from
/// their DeploymentID (30 bits), implicit ones from the revision id and the
/// action, above 2^30 so the two never meet.
fn explicit_id(deployment_id: &str) -> i32 {
    let u = uuid::Uuid::parse_str(deployment_id).unwrap_or_default();
    let b = u.as_bytes();
    (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x3FFF_FFFF) as i32
}

fn implicit_id(rev_id: i64, action: Action) -> i32 {
    let k = match action {
        Action::Evaluate => 0,
        Action::PreDeploymentCheck => 1,
        _ => 2,
    };
    (((rev_id.wrapping_mul(4) + k) & 0x3FFF_FFFF) | 0x4000_0000) as i32
}

impl Catalog {
    pub fn build(rows: CatalogRows) -> Catalog {
        let mut c = Catalog {
            generation: rows.generation,
            ..Catalog::default()
        };
        let mut seq_of: Vec<i64> = Vec::with_capacity(rows.updates.len());
        for r in rows.updates {
            let kind = match r.kind.as_str() {
                "driver" => Kind::Driver,
                "category" => Kind::Category,
                "detectoid" => Kind::Detectoid,
                _ => Kind::Software,
            };
            let expired = r
                .publication_state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("Expired"));
            let i = c.entries.len();
            c.by_id.insert(r.update_id.to_ascii_lowercase(), i);
            c.by_rev.insert(r.rev_id, i);
            seq_of.push(r.seq);
            c.entries.push(Entry {
                update_id: r.update_id,
                kind,
                category_type: r.category_type,
                rev_id: r.rev_id,
                revision: r.revision,
                declined: r.declined || expired,
                explicitly_deployable: r.explicitly_deployable.unwrap_or(false),
                arrived: date(&r.arrived),
                clauses: Vec::new(),
                prereq_targets: Vec::new(),
                bundled: Vec::new(),
                is_leaf: true,
                changed_seq: 0,
                in_scope: false,
            });
        }
        // Relationships of current revisions.
        let mut groups_of: HashMap<(usize, i64), Vec<usize>> = HashMap::new();
        let mut required: Vec<(usize, Option<usize>)> = Vec::new();
        for rel in &rows.relations {
            let Some(&i) = c.by_rev.get(&rel.rev_id) else {
                continue;
            };
            let target = c.by_id.get(&rel.target_id.to_ascii_lowercase()).copied();
            if rel.rel == "bundled" {
                if let Some(t) = target {
                    c.entries[i].bundled.push(t);
                }
                continue;
            }
            if let Some(t) = target {
                c.entries[i].prereq_targets.push(t);
            }
            if rel.grp == 0 {
                required.push((i, target));
            } else {
                let g = groups_of.entry((i, rel.grp)).or_default();
                if let Some(t) = target {
                    g.push(t);
                }
            }
        }
        for (i, t) in required {
            c.entries[i].clauses.push(t.into_iter().collect());
        }
        let mut keys: Vec<_> = groups_of.into_iter().collect();
        keys.sort_by_key(|((i, g), _)| (*i, *g));
        for ((i, _), alts) in keys {
            c.entries[i].clauses.push(alts);
        }
        // IsLeaf over the whole store; the change of IsLeaf dates from the
        // newest revision naming the update.
        for i in 0..c.entries.len() {
            let targets = c.entries[i].prereq_targets.clone();
            for t in targets {
                c.entries[t].is_leaf = false;
                c.entries[t].changed_seq = c.entries[t].changed_seq.max(seq_of[i]);
            }
        }
        for (u, seq) in &rows.changed {
            if let Some(&i) = c.by_id.get(&u.to_ascii_lowercase()) {
                c.entries[i].changed_seq = c.entries[i].changed_seq.max(*seq);
            }
        }
        // Scope: the roots, then their dependency closure.
        let mut stack: Vec<usize> = Vec::new();
        for (i, e) in c.entries.iter_mut().enumerate() {
            if !e.declined && e.kind != Kind::Driver {
                e.in_scope = true;
                stack.push(i);
            }
        }
        while let Some(i) = stack.pop() {
            let deps: Vec<usize> = c.entries[i]
                .prereq_targets
                .iter()
                .chain(&c.entries[i].bundled)
                .copied()
                .collect();
            for d in deps {
                if !c.entries[d].in_scope {
                    c.entries[d].in_scope = true;
                    stack.push(d);
                }
            }
        }
        for (g, p) in rows.groups {
            c.parent.insert(g, p);
        }
        for d in rows.deployments {
            let Some(&i) = c.by_id.get(&d.update_id.to_ascii_lowercase()) else {
                continue;
            };
            let action = match d.action.as_str() {
                "install" => "install",
                "uninstall" => "uninstall",
                _ => "block",
            };
            c.explicit.entry(i).or_default().insert(
                d.group_id.clone(),
                Explicit {
                    id: explicit_id(&d.deployment_id),
                    action,
                    deadline: d.deadline,
                    is_assigned: d.is_assigned,
                    go_live: d.go_live,
                    last_change: date(&d.last_change_at),
                },
            );
        }
        c
    }

    pub fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    /// The entry of a current revision id.
    pub fn by_rev(&self, rev_id: i64) -> Option<usize> {
        self.by_rev.get(&rev_id).copied()
    }

    /// The entry of an update id (any case).
    pub fn by_update(&self, update_id: &str) -> Option<usize> {
        self.by_id.get(&update_id.to_ascii_lowercase()).copied()
    }

    /// The group and its ancestors, nearest first (cycles cut).
    fn chain(&self, group: &str) -> Vec<String> {
        let mut out = vec![group.to_string()];
        let mut at = group.to_string();
        while let Some(Some(p)) = self.parent.get(&at) {
            if out.contains(p) || out.len() > 64 {
                break;
            }
            out.push(p.clone());
            at = p.clone();
        }
        if !out.iter().any(|g| g == ALL_COMPUTERS.0) {
            out.push(ALL_COMPUTERS.0.to_string());
        }
        out
    }

    /// The effective explicit deployment of entry `i` for `audience` at
    /// `now` (RFC 3339): per group the nearest up the tree; across several
    /// groups (client-side targeting) a Block wins, else the first.
    fn effective(&self, i: usize, audience: &Audience, now: &str) -> Option<&Explicit> {
        let deps = self.explicit.get(&i)?;
        let mut found: Vec<&Explicit> = Vec::new();
        for g in &audience.groups {
            for link in self.chain(g) {
                if let Some(d) = deps.get(&link) {
                    if d.go_live.as_str() <= now {
                        found.push(d);
                        break;
                    }
                }
            }
        }
        found
            .iter()
            .find(|d| d.action == "block")
            .or_else(|| found.first())
            .copied()
    }

    /// The deployment entry `i` is sent with.
    pub fn deployment(&self, i: usize, audience: &Audience, now: &str) -> Deployment {
        let e = &self.entries[i];
        if matches!(e.kind, Kind::Category | Kind::Detectoid) {
            return self.implicit(e, Action::Evaluate);
        }
        if let Some(d) = self.effective(i, audience, now) {
            let (action, is_assigned) = match (d.action, d.is_assigned) {
                ("install", true) => (Action::Install, true),
                ("install", false) if audience.optional_install => (Action::OptionalInstall, false),
                ("install", false) => (Action::Install, false),
                ("uninstall", a) => (Action::Uninstall, a),
                _ => (Action::PreDeploymentCheck, true),
            };
            return Deployment {
                id: d.id,
                action,
                deadline: d
                    .deadline
                    .clone()
                    .filter(|_| action != Action::PreDeploymentCheck),
                is_assigned,
                last_change: d.last_change.clone(),
            };
        }
        if e.explicitly_deployable {
            self.implicit(e, Action::PreDeploymentCheck)
        } else {
            self.implicit(e, Action::Bundle)
        }
    }

    fn implicit(&self, e: &Entry, action: Action) -> Deployment {
        Deployment {
            id: implicit_id(e.rev_id, action),
            action,
            deadline: None,
            is_assigned: true,
            last_change: e.arrived.clone(),
        }
    }

    /// Entries related to the categories `filter` (MS-WUSP 2.2.2.2.4
    /// FilterCategoryIds): the categories, every update naming one of them
    /// as a prerequisite, and the dependency closure of those.
    pub fn filter_scope(&self, filter: &[String]) -> HashSet<usize> {
        let cats: HashSet<usize> = filter.iter().filter_map(|f| self.by_update(f)).collect();
        let mut out: HashSet<usize> = HashSet::new();
        let mut stack: Vec<usize> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if cats.contains(&i) || e.prereq_targets.iter().any(|t| cats.contains(t)) {
                stack.push(i);
            }
        }
        while let Some(i) = stack.pop() {
            if out.insert(i) {
                stack.extend(self.entries[i].prereq_targets.iter().copied());
                stack.extend(self.entries[i].bundled.iter().copied());
            }
        }
        out
    }

    /// Whether every prerequisite clause of entry `i` is met by `installed`
    /// (entry indexes whose current revision the client reported installed).
    pub fn deliverable(&self, i: usize, installed: &HashSet<usize>) -> bool {
        self.entries[i]
            .clauses
            .iter()
            .all(|clause| clause.iter().any(|a| installed.contains(a)))
    }
}

/// What a SyncUpdates software pass answers.
#[derive(Debug, Default)]
pub struct Selection {
    /// Entry indexes to send as NewUpdates (one page).
    pub new: Vec<usize>,
    pub truncated: bool,
    pub out_of_scope: Vec<i64>,
    pub deployed_out_of_scope: Vec<i64>,
    /// Entry indexes to send as ChangedUpdates.
    pub changed: Vec<usize>,
}

/// A SyncUpdates software-pass question.
#[derive(Debug, Default)]
pub struct SyncQuery<'a> {
    pub installed: &'a [i64],
    pub other_cached: &'a [i64],
    pub filter: &'a [String],
    pub need_two_groups: bool,
    pub mark: i64,
    pub page: usize,
}

impl Catalog {
    /// MS-WUSP 3.1.5.7 for one software pass (docs/protocol.md).
    pub fn select(&self, q: &SyncQuery<'_>) -> Selection {
        let installed: HashSet<usize> =
            q.installed.iter().filter_map(|r| self.by_rev(*r)).collect();
        let cached: HashSet<i64> = q.installed.iter().chain(q.other_cached).copied().collect();
        let filter = (!q.filter.is_empty()).then(|| self.filter_scope(q.filter));
        let mut new = Vec::new();
        let mut in_n: HashSet<i64> = HashSet::new();
        let mut in_unfiltered: HashSet<i64> = HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.in_scope || !self.deliverable(i, &installed) {
                continue;
            }
            in_unfiltered.insert(e.rev_id);
            if filter.as_ref().is_some_and(|f| !f.contains(&i)) {
                continue;
            }
            in_n.insert(e.rev_id);
            if !cached.contains(&e.rev_id) {
                new.push(i);
            }
        }
        new.sort_by_key(|&i| (self.entries[i].is_leaf, self.entries[i].rev_id));
        let truncated = new.len() > q.page;
        new.truncate(q.page);
        let mut sel = Selection {
            new,
            truncated,
            ..Selection::default()
        };
        let mut cached_sorted: Vec<i64> = cached.into_iter().collect();
        cached_sorted.sort_unstable();
        for r in cached_sorted {
            if in_n.contains(&r) {
                if let Some(i) = self.by_rev(r) {
                    if self.entries[i].changed_seq > q.mark {
                        sel.changed.push(i);
                    }
                }
            } else if filter.is_some() && q.need_two_groups && in_unfiltered.contains(&r) {
                sel.deployed_out_of_scope.push(r);
            } else {
                sel.out_of_scope.push(r);
            }
        }
        sel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wusp::{CatalogRow, DeploymentRow, RelationRow};

    fn row(id: &str, kind: &str, rev: i64, ed: bool) -> CatalogRow {
        CatalogRow {
            update_id: id.into(),
            kind: kind.into(),
            category_type: None,
            rev_id: rev,
            revision: 1,
            declined: false,
            publication_state: None,
            explicitly_deployable: Some(ed),
            arrived: "2026-10-04T12:00:00Z".into(),
            seq: rev,
        }
    }

    fn rel(rev: i64, rel: &str, grp: i64, t: &str) -> RelationRow {
        RelationRow {
            rev_id: rev,
            rel: rel.into(),
            grp,
            target_id: t.into(),
        }
    }

    fn audience() -> Audience {
        Audience {
            groups: vec!["g".into()],
            optional_install: true,
        }
    }

    /// company ← product ← leaf bundle (explicitly deployable) ⊃ member;
    /// a declined update; a prerequisite the store lacks.
    fn catalog(deployments: Vec<DeploymentRow>) -> Catalog {
        Catalog::build(CatalogRows {
            generation: 10,
            updates: vec![
                row("company", "category", 1, false),
                row("product", "category", 2, false),
                row("bundle", "software", 3, true),
                row("member", "software", 4, false),
                CatalogRow {
                    declined: true,
                    ..row("declined", "software", 5, true)
                },
                row("orphan", "software", 6, true),
            ],
            relations: vec![
                rel(2, "prerequisite", 1, "company"),
                rel(3, "prerequisite", 1, "product"),
                rel(3, "bundled", 0, "member"),
                rel(4, "prerequisite", 1, "product"),
                rel(6, "prerequisite", 0, "missing"),
            ],
            deployments,
            changed: vec![],
            groups: vec![
                (ALL_COMPUTERS.0.into(), None),
                ("g".into(), Some(ALL_COMPUTERS.0.into())),
            ],
        })
    }

    fn ids(c: &Catalog, v: &[usize]) -> Vec<String> {
        v.iter().map(|&i| c.entry(i).update_id.clone()).collect()
    }

    #[test]
    fn rounds_follow_the_installed_non_leaf_set() {
        let c = catalog(vec![]);
        let q = |installed: &[i64], other: &[i64]| {
            let s = c.select(&SyncQuery {
                installed,
                other_cached: other,
                page: 30,
                ..SyncQuery::default()
            });
            ids(&c, &s.new)
        };
        assert_eq!(q(&[], &[]), ["company"]);
        assert_eq!(q(&[1], &[]), ["product"]);
        assert_eq!(q(&[1, 2], &[]), ["bundle", "member"]);
        assert_eq!(q(&[1, 2], &[3, 4]), Vec::<String>::new());
        assert!(!c.entry(2).is_leaf || c.entry(2).update_id != "product");
        assert!(
            !c.entry(0).is_leaf && !c.entry(1).is_leaf && c.entry(2).is_leaf && c.entry(3).is_leaf
        );
        // A declined cached revision, or an unknown one, leaves the scope.
        let s = c.select(&SyncQuery {
            installed: &[1, 2],
            other_cached: &[5, 99],
            page: 30,
            ..SyncQuery::default()
        });
        assert_eq!(s.out_of_scope, [5, 99]);
    }

    #[test]
    fn actions_and_paging() {
        let c = catalog(vec![]);
        let a = audience();
        let action = |i| c.deployment(i, &a, "2030").action;
        assert_eq!(action(0), Action::Evaluate);
        assert_eq!(action(2), Action::PreDeploymentCheck);
        assert_eq!(action(3), Action::Bundle);
        let s = c.select(&SyncQuery {
            installed: &[1, 2],
            page: 1,
            ..SyncQuery::default()
        });
        assert!(s.truncated);
        assert_eq!(s.new.len(), 1);
        let d =
            |id: &str, group: &str, action: &str, assigned: bool, go_live: &str| DeploymentRow {
                deployment_id: id.into(),
                update_id: "bundle".into(),
                group_id: group.into(),
                action: action.into(),
                deadline: Some("2027-01-15T18:00:00Z".into()),
                go_live: go_live.into(),
                is_assigned: assigned,
                last_change_seq: 9,
                last_change_at: "2026-10-05T00:00:00Z".into(),
            };
        let all = ALL_COMPUTERS.0;
        let id1 = "00000001-0000-0000-0000-000000000000";
        let c = catalog(vec![d(id1, all, "install", true, "2026")]);
        let got = c.deployment(2, &a, "2030");
        assert_eq!(got.action, Action::Install);
        assert_eq!(got.deadline.as_deref(), Some("2027-01-15T18:00:00Z"));
        assert_eq!(got.last_change, "2026-10-05");
        assert_eq!(got.id, 1);
        // Not yet live: as if unapproved.
        assert_eq!(
            c.deployment(2, &a, "2025").action,
            Action::PreDeploymentCheck
        );
        // A nearer block overrides; an optional install.
        let c = catalog(vec![
            d(id1, all, "install", true, "2026"),
            d(id1, "g", "block", true, "2026"),
        ]);
        assert_eq!(
            c.deployment(2, &a, "2030").action,
            Action::PreDeploymentCheck
        );
        let c = catalog(vec![d(id1, "g", "install", false, "2026")]);
        assert_eq!(c.deployment(2, &a, "2030").action, Action::OptionalInstall);
        let old = Audience {
            optional_install: false,
            ..a.clone()
        };
        let got = c.deployment(2, &old, "2030");
        assert_eq!((got.action, got.is_assigned), (Action::Install, false));
        assert!(implicit_id(3, Action::Bundle) > 1 << 30);
    }

    #[test]
    fn a_filtered_scan_keeps_other_cached_updates_apart() {
        let c = catalog(vec![]);
        let scan = |filter: &str, need_two_groups: bool| {
            c.select(&SyncQuery {
                installed: &[1, 2],
                other_cached: &[3, 4, 5],
                filter: &[filter.to_string()],
                need_two_groups,
                page: 30,
                ..SyncQuery::default()
            })
        };
        // "member": itself and its prerequisite chain; the bundle is still
        // deployed, only outside the filter; the declined one is gone.
        let s = scan("member", true);
        assert_eq!(s.deployed_out_of_scope, [3]);
        assert_eq!(s.out_of_scope, [5]);
        assert!(s.new.is_empty());
        let s = scan("member", false);
        assert_eq!(s.out_of_scope, [3, 5]);
        assert!(s.deployed_out_of_scope.is_empty());
        // "company": the updates naming it (product) and their closure.
        let s = scan("company", true);
        assert_eq!(s.deployed_out_of_scope, [3, 4]);
        let orphan = c.by_update("orphan").unwrap();
        assert!(
            !c.deliverable(orphan, &HashSet::new()),
            "an unsatisfiable clause"
        );
        assert!(
            c.filter_scope(&["company".into()])
                .contains(&c.by_update("product").unwrap())
        );
    }
}
