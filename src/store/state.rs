//! Replicated administrative state in the store: target groups,
//! deployments (approvals) and declines. The one place that writes them:
//! local administration (`approve`, `decline`, `groups add`...), bundle
//! import and replica sync all go through the writers here, each change
//! with its journal entry in the caller's transaction.
//!
//! [`apply_state`] applies a whole [`State`] (a bundle's `state.json`, or a
//! GetDeployments answer) all or nothing.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::model::state::{DeploymentRecord, State, StateChanges};
use crate::store::deployments::{Action, normalise_deadline};
use crate::store::journal::{self, ChangeKind};
use crate::store::{ALL_COMPUTERS, UNASSIGNED_COMPUTERS, canonical_guid};

// ---------------------------------------------------------------------------
// Writers: each change and its journal entry, in the caller's transaction.
// ---------------------------------------------------------------------------

/// A group's name and parent, if the group exists.
pub(crate) fn group_exists(tx: &Connection, id: &str) -> Result<Option<(String, Option<String>)>> {
    Ok(tx
        .query_row(
            "SELECT name, parent_id FROM groups WHERE group_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Adds a group, or changes its name and parent.
pub(crate) fn write_group(
    tx: &Connection,
    id: &str,
    name: &str,
    parent: Option<&str>,
    exists: bool,
    now: &str,
) -> Result<()> {
    let seq = journal::record(tx, ChangeKind::GroupAdded, id, now)?;
    if exists {
        tx.execute(
            "UPDATE groups SET name = ?2, parent_id = ?3, seq = ?4 WHERE group_id = ?1",
            params![id, name, parent, seq],
        )?;
    } else {
        tx.execute(
            "INSERT INTO groups (group_id, name, parent_id, builtin, seq) VALUES (?1, ?2, ?3, 0, ?4)",
            params![id, name, parent, seq],
        )?;
    }
    Ok(())
}

/// Removes a group that has no live deployments left: its computers move
/// to Unassigned Computers, its subgroups lose their parent, its name is
/// remembered for the removed deployments that still name it. Returns the
/// names of the computers moved.
pub(crate) fn remove_group(tx: &Connection, id: &str, now: &str) -> Result<Vec<String>> {
    let computers: Vec<String> = {
        let mut st = tx.prepare(
            "SELECT name FROM computers WHERE group_id = ?1 ORDER BY name COLLATE NOCASE",
        )?;
        let rows = st.query_map([id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.execute(
        "UPDATE computers SET group_id = ?2 WHERE group_id = ?1",
        params![id, UNASSIGNED_COMPUTERS.0],
    )?;
    tx.execute(
        "UPDATE groups SET parent_id = NULL WHERE parent_id = ?1",
        [id],
    )?;
    journal::record(tx, ChangeKind::GroupRemoved, id, now)?;
    tx.execute(
        "INSERT OR REPLACE INTO removed_groups (group_id, name, removed) \
         SELECT group_id, name, ?2 FROM groups WHERE group_id = ?1",
        params![id, now],
    )?;
    tx.execute("DELETE FROM groups WHERE group_id = ?1", [id])?;
    Ok(computers)
}

/// Live deployments (ids) to a group.
pub(crate) fn live_deployments_to_group(tx: &Connection, group_id: &str) -> Result<Vec<String>> {
    let mut st = tx.prepare_cached(
        "SELECT deployment_id FROM deployments WHERE group_id = ?1 AND removed = 0 ORDER BY update_id",
    )?;
    let rows = st.query_map([group_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The live deployment of an update to a group, if any.
pub(crate) fn live_deployment(
    tx: &Connection,
    update_id: &str,
    group_id: &str,
) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached(
            "SELECT deployment_id FROM deployments WHERE update_id = ?1 AND group_id = ?2 AND removed = 0",
        )?
        .query_row(params![update_id, group_id], |r| r.get(0))
        .optional()?)
}

/// Marks a deployment removed (it stays as a dead deployment).
pub(crate) fn remove_deployment(tx: &Connection, deployment_id: &str, now: &str) -> Result<()> {
    let seq = journal::record(tx, ChangeKind::DeploymentRemoved, deployment_id, now)?;
    tx.execute(
        "UPDATE deployments SET removed = 1, last_change_seq = ?2 WHERE deployment_id = ?1",
        params![deployment_id, seq],
    )?;
    Ok(())
}

/// Creates or replaces a deployment row as `d` says (ids canonical), with
/// the journal entry `kind`.
pub(crate) fn write_deployment(
    tx: &Connection,
    d: &DeploymentRecord,
    kind: ChangeKind,
    now: &str,
) -> Result<()> {
    let seq = journal::record(tx, kind, &d.deployment_id, now)?;
    tx.execute(
        "INSERT INTO deployments (deployment_id, update_id, revision, group_id, action, admin_name, deadline, go_live, download_priority, is_assigned, last_change_seq, removed) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (deployment_id) DO UPDATE SET \
         update_id = excluded.update_id, revision = excluded.revision, group_id = excluded.group_id, action = excluded.action, \
         admin_name = excluded.admin_name, deadline = excluded.deadline, go_live = excluded.go_live, \
         download_priority = excluded.download_priority, is_assigned = excluded.is_assigned, \
         last_change_seq = excluded.last_change_seq, removed = excluded.removed",
        params![
            d.deployment_id,
            d.update_id,
            d.revision,
            d.group_id,
            d.action,
            d.admin_name,
            d.deadline,
            d.go_live,
            d.download_priority,
            d.is_assigned,
            seq,
            d.removed
        ],
    )?;
    Ok(())
}

/// A deployment as a record (live or removed), if it exists.
pub(crate) fn deployment_record(tx: &Connection, id: &str) -> Result<Option<DeploymentRecord>> {
    Ok(tx
        .prepare_cached(
            "SELECT deployment_id, update_id, revision, group_id, action, admin_name, deadline, go_live, \
             download_priority, is_assigned, removed FROM deployments WHERE deployment_id = ?1",
        )?
        .query_row([id], deployment_from_row)
        .optional()?)
}

/// A record from a row whose first eleven columns are `deployment_id,
/// update_id, revision, group_id, action, admin_name, deadline, go_live,
/// download_priority, is_assigned, removed`.
pub(crate) fn deployment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        deployment_id: r.get(0)?,
        update_id: r.get(1)?,
        revision: r.get(2)?,
        group_id: r.get(3)?,
        action: r.get(4)?,
        admin_name: r.get(5)?,
        deadline: r.get(6)?,
        go_live: r.get(7)?,
        download_priority: r.get(8)?,
        is_assigned: r.get::<_, i64>(9)? != 0,
        removed: r.get::<_, i64>(10)? != 0,
    })
}

/// Marks an update declined (its deployments are the caller's to remove).
pub(crate) fn decline_update(tx: &Connection, update_id: &str, now: &str) -> Result<()> {
    journal::record(tx, ChangeKind::UpdateDeclined, update_id, now)?;
    tx.execute(
        "UPDATE updates SET declined = 1 WHERE update_id = ?1",
        [update_id],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// A whole State, from a bundle or an upstream.
// ---------------------------------------------------------------------------

/// Where replicated state comes from: named in the messages of
/// `apply_state`, which both a bundle import and a sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    Import,
    Sync,
}

impl StateSource {
    /// "import: group "X" in the bundle", "sync: group "X" from the upstream server".
    fn group(self, name: &str) -> String {
        match self {
            StateSource::Import => format!("import: group {name:?} in the bundle"),
            StateSource::Sync => format!("sync: group {name:?} from the upstream server"),
        }
    }
}

/// A state that does not hold together: the verification rule
/// `malformed-state`.
fn malformed(detail: impl Into<String>) -> Error {
    Error::verification("malformed-state", detail)
}

/// Applies groups, removed groups, deployments and declines, journaling
/// each change on this server. Order: removed deployments, removed groups,
/// groups (renames first, through a placeholder name, so that names
/// swapped or reused upstream never clash with themselves), live
/// deployments, declines; all inside the caller's transaction. With
/// `rebase` (a full bundle replacing the chain), live deployments the state
/// does not carry are removed.
pub fn apply_state(
    tx: &Connection,
    now: &str,
    state: &State,
    rebase: bool,
    source: StateSource,
) -> Result<StateChanges> {
    let mut changes = StateChanges::default();
    let groups = checked_groups(state)?;
    let removed_groups = checked_removed_groups(state)?;
    let mut in_state: BTreeSet<String> = BTreeSet::new();

    // 1. Removed deployments first: a removed group must have none live.
    for d in state.deployments.iter().filter(|d| d.removed) {
        in_state.insert(canonical_guid(&d.deployment_id).unwrap_or_default());
        apply_deployment(tx, now, d, &mut changes)?;
    }
    // 2. Removed groups before added ones, so that a group the source no
    //    longer has cannot block one of the same name it has now.
    remove_groups(tx, now, &removed_groups, &mut changes)?;
    // 3-4. Groups renamed, added or changed.
    write_groups(tx, now, &groups, source, &mut changes)?;
    // 5. Live deployments.
    for d in state.deployments.iter().filter(|d| !d.removed) {
        in_state.insert(canonical_guid(&d.deployment_id).unwrap_or_default());
        apply_deployment(tx, now, d, &mut changes)?;
    }
    // 6. A full bundle replaces the chain: live deployments it does not
    //    carry are removed.
    if rebase {
        for d in live_deployment_ids(tx)? {
            if !in_state.contains(&d) {
                remove_deployment(tx, &d, now)?;
                changes.deployments_removed += 1;
            }
        }
    }
    // 7. Declines.
    apply_declines(tx, now, &state.declined, &mut changes)?;
    Ok(changes)
}

/// Step 2 of [`apply_state`]: removes the groups the source removed.
/// Rule: a removed group has no live deployment left in the state.
fn remove_groups(
    tx: &Connection,
    now: &str,
    removed: &[String],
    changes: &mut StateChanges,
) -> Result<()> {
    for id in removed {
        if group_exists(tx, id)?.is_some() {
            let live = live_deployments_to_group(tx, id)?.len();
            if live > 0 {
                return Err(malformed(format!(
                    "bundle removes group {id} but keeps {} to it",
                    crate::model::units::count(live as u64, "deployment")
                )));
            }
            remove_group(tx, id, now)?;
            changes.groups_removed += 1;
        }
    }
    Ok(())
}

/// Steps 3-4 of [`apply_state`]. 3: groups renamed by the source first
/// take a placeholder name (no valid group name holds a control
/// character), so a name that moves from one group to another within one
/// change applies in any order. 4: groups added or changed, each checked
/// against the tree rules and for a name clash with another group.
fn write_groups(
    tx: &Connection,
    now: &str,
    groups: &[(String, Option<String>, String)],
    source: StateSource,
    changes: &mut StateChanges,
) -> Result<()> {
    let mut before: Vec<Option<(String, Option<String>)>> = Vec::new();
    for (id, _, name) in groups {
        let existing = group_exists(tx, id)?;
        if let Some((old, _)) = &existing
            && old != name
        {
            tx.execute(
                "UPDATE groups SET name = ?2 WHERE group_id = ?1",
                params![id, format!("\u{1}renaming {id}")],
            )?;
        }
        before.push(existing);
    }
    for ((id, parent, name), existing) in groups.iter().zip(before) {
        rule_group_tree(tx, id, parent.as_deref(), name)?;
        rule_group_name_free(tx, id, name, source)?;
        match existing {
            Some((n, p)) if n == *name && p == *parent => {}
            existing => {
                write_group(tx, id, name, parent.as_deref(), existing.is_some(), now)?;
                if existing.is_some() {
                    changes.groups_changed += 1;
                } else {
                    changes.groups_added += 1;
                }
            }
        }
    }
    Ok(())
}

/// Rule: a group's name is not another group's (names compare without
/// case, as WSUS compares them).
fn rule_group_name_free(tx: &Connection, id: &str, name: &str, source: StateSource) -> Result<()> {
    let clash: Option<(String, String)> = tx
        .query_row(
            "SELECT group_id, name FROM groups WHERE name = ?1 COLLATE NOCASE AND group_id <> ?2",
            params![name, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match clash {
        Some((other, other_name)) => Err(Error::GroupClash {
            what: source.group(name),
            id: id.to_string(),
            other,
            other_name,
        }),
        None => Ok(()),
    }
}

/// The ids of every live deployment.
fn live_deployment_ids(tx: &Connection) -> Result<Vec<String>> {
    let mut st = tx.prepare("SELECT deployment_id FROM deployments WHERE removed = 0")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Step 7 of [`apply_state`]: declines. Rule: a declined update is one the
/// store holds.
fn apply_declines(
    tx: &Connection,
    now: &str,
    declined: &[String],
    changes: &mut StateChanges,
) -> Result<()> {
    for u in declined {
        let Some(id) = canonical_guid(u) else {
            return Err(malformed(format!("declined update id {u:?}")));
        };
        let state: Option<i64> = tx
            .query_row(
                "SELECT declined FROM updates WHERE update_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()?;
        match state {
            None => return Err(malformed(format!("bundle declines unknown update {id}"))),
            Some(1) => {}
            Some(_) => {
                decline_update(tx, &id, now)?;
                changes.updates_declined += 1;
            }
        }
    }
    Ok(())
}

/// The state's groups with canonical ids: (id, parent, name). Rule: the
/// built-in groups are the same on every server; a state cannot redefine
/// them.
fn checked_groups(state: &State) -> Result<Vec<(String, Option<String>, String)>> {
    let mut out = Vec::new();
    for g in &state.groups {
        let id = canonical_guid(&g.id).ok_or_else(|| malformed(format!("group id {:?}", g.id)))?;
        let parent = match &g.parent_id {
            Some(p) => {
                Some(canonical_guid(p).ok_or_else(|| malformed(format!("group parent {p:?}")))?)
            }
            None => None,
        };
        if id == ALL_COMPUTERS.0 || id == UNASSIGNED_COMPUTERS.0 {
            return Err(malformed(format!(
                "a bundle cannot redefine the built-in group {id}"
            )));
        }
        out.push((id, parent, g.name.clone()));
    }
    Ok(out)
}

/// The state's removed groups with canonical ids. Rule: a built-in group
/// is never removed.
fn checked_removed_groups(state: &State) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for g in &state.removed_groups {
        let Some(id) = canonical_guid(g) else {
            return Err(malformed(format!("removed group id {g:?}")));
        };
        if id == ALL_COMPUTERS.0 || id == UNASSIGNED_COMPUTERS.0 {
            return Err(malformed("a bundle cannot remove a built-in group"));
        }
        out.push(id);
    }
    Ok(out)
}

/// Rule: groups form a tree: a group's parent exists and is neither the
/// group itself nor one of its descendants.
fn rule_group_tree(tx: &Connection, id: &str, parent: Option<&str>, name: &str) -> Result<()> {
    let Some(p) = parent else { return Ok(()) };
    let mut cur = Some(p.to_string());
    let mut steps = 0;
    while let Some(c) = cur {
        if c == id || steps > 10_000 {
            return Err(malformed(format!(
                "group {name:?} would become its own ancestor"
            )));
        }
        cur = group_exists(tx, &c)?.and_then(|(_, p)| p);
        steps += 1;
    }
    if group_exists(tx, p)?.is_none() {
        return Err(malformed(format!("group {name:?} has unknown parent {p}")));
    }
    Ok(())
}

/// Applies one deployment record: created, changed or removed; the same
/// record again changes nothing. Upstream wins: a different live deployment
/// of the same update to the same group (made locally) is removed.
fn apply_deployment(
    tx: &Connection,
    now: &str,
    d: &DeploymentRecord,
    changes: &mut StateChanges,
) -> Result<()> {
    let bad = |why: String| malformed(format!("deployment {}: {why}", d.deployment_id));
    let id = canonical_guid(&d.deployment_id).ok_or_else(|| bad("id is not a GUID".into()))?;
    let update_id =
        canonical_guid(&d.update_id).ok_or_else(|| bad("update id is not a GUID".into()))?;
    let group_id =
        canonical_guid(&d.group_id).ok_or_else(|| bad("group id is not a GUID".into()))?;
    if Action::parse(&d.action).is_none() {
        return Err(bad(format!("unknown action {:?}", d.action)));
    }
    if let Some(dl) = &d.deadline {
        normalise_deadline(dl).map_err(|_| bad(format!("deadline {dl:?}")))?;
    }
    let rev_known: bool = tx
        .prepare_cached("SELECT 1 FROM revisions WHERE update_id = ?1 AND revision = ?2")?
        .query_row(params![update_id, d.revision], |_| Ok(()))
        .optional()?
        .is_some();
    if !rev_known {
        return Err(bad(format!(
            "references update {update_id} revision {} that neither the bundle nor this store holds",
            d.revision
        )));
    }
    if !d.removed && group_exists(tx, &group_id)?.is_none() {
        return Err(bad(format!("targets unknown group {group_id}")));
    }
    let new = DeploymentRecord {
        deployment_id: id.clone(),
        update_id: update_id.clone(),
        group_id: group_id.clone(),
        ..d.clone()
    };
    let existing = deployment_record(tx, &id)?;
    if existing.as_ref() == Some(&new) {
        return Ok(());
    }
    let kind = match (&existing, d.removed) {
        (_, true) => ChangeKind::DeploymentRemoved,
        (None, false) => ChangeKind::DeploymentCreated,
        (Some(_), false) => ChangeKind::DeploymentChanged,
    };
    if !d.removed
        && let Some(other) = live_deployment(tx, &update_id, &group_id)?
        && other != id
    {
        remove_deployment(tx, &other, now)?;
        changes.deployments_removed += 1;
    }
    write_deployment(tx, &new, kind, now)?;
    match kind {
        ChangeKind::DeploymentCreated => changes.deployments_created += 1,
        ChangeKind::DeploymentChanged => changes.deployments_changed += 1,
        _ => {
            if existing.as_ref().is_some_and(|e| !e.removed) {
                changes.deployments_removed += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::GroupRecord;
    use crate::store::{Mode, Store};

    fn group(id: &str, name: &str) -> GroupRecord {
        GroupRecord {
            id: id.to_string(),
            name: name.to_string(),
            parent_id: None,
        }
    }

    fn names(store: &Store) -> Vec<(String, String)> {
        let mut st = store
            .conn()
            .prepare("SELECT group_id, name FROM groups WHERE builtin = 0 ORDER BY group_id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
    const C: &str = "cccccccc-0000-4000-8000-000000000003";

    fn apply(store: &mut Store, state: &State, source: StateSource) -> Result<StateChanges> {
        let tx = store.conn_mut().transaction()?;
        let changes = apply_state(&tx, "2026-01-01T00:00:00Z", state, false, source)?;
        tx.commit()?;
        Ok(changes)
    }

    /// A group of this server that the state neither carries nor removes
    /// blocks a group of the same name: the message says which operation
    /// (sync or import) brought it, and nothing is applied.
    #[test]
    fn a_clash_names_the_operation() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::init(&tmp.path().join("s"), "s", Mode::Replica).unwrap();
        // A local group, as an older gapsync let a replica make.
        store
            .conn()
            .execute(
                "INSERT INTO groups (group_id, name, parent_id, builtin, seq) VALUES (?1, 'Pilot', NULL, 0, 0)",
                [C],
            )
            .unwrap();
        let state = State {
            groups: vec![group(B, "Lab"), group(A, "PILOT")],
            ..State::default()
        };
        for (source, says) in [
            (
                StateSource::Sync,
                "sync: group \"PILOT\" from the upstream server",
            ),
            (StateSource::Import, "import: group \"PILOT\" in the bundle"),
        ] {
            let e = apply(&mut store, &state, source).unwrap_err().to_string();
            assert!(e.starts_with(says), "{e}");
            assert!(
                e.contains(&format!("clashes with group \"Pilot\" ({C})")),
                "{e}"
            );
            assert_eq!(names(&store), [(C.to_string(), "Pilot".to_string())]);
        }
        // The same state removing the local group applies: removals first.
        let state = State {
            removed_groups: vec![C.to_string()],
            ..state
        };
        let plan = apply(&mut store, &state, StateSource::Sync).unwrap();
        assert_eq!((plan.groups_added, plan.groups_removed), (2, 1));
        assert_eq!(
            names(&store),
            [
                (A.to_string(), "PILOT".to_string()),
                (B.to_string(), "Lab".to_string())
            ]
        );
        let kept: String = store
            .conn()
            .query_row(
                "SELECT name FROM removed_groups WHERE group_id = ?1",
                [C],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, "Pilot");
    }

    /// Names swapped between two groups, or moved from a renamed group to
    /// a new one, apply in any order.
    #[test]
    fn renames_that_reuse_names_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::init(&tmp.path().join("s"), "s", Mode::Replica).unwrap();
        let first = State {
            groups: vec![group(A, "Pilot"), group(B, "Lab")],
            ..State::default()
        };
        apply(&mut store, &first, StateSource::Sync).unwrap();
        let swapped = State {
            groups: vec![group(C, "Pilot"), group(B, "Old pilot"), group(A, "Lab")],
            ..State::default()
        };
        let plan = apply(&mut store, &swapped, StateSource::Sync).unwrap();
        assert_eq!((plan.groups_added, plan.groups_changed), (1, 2));
        assert_eq!(
            names(&store),
            [
                (A.to_string(), "Lab".to_string()),
                (B.to_string(), "Old pilot".to_string()),
                (C.to_string(), "Pilot".to_string())
            ]
        );
    }
}
