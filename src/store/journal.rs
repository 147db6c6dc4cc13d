//! The change journal and sync anchors.
//!
//! Every change to replicated state is appended to the `journal` table in the
//! same SQLite transaction as the change itself, under a strictly increasing
//! sequence number (the table's INTEGER PRIMARY KEY, so "everything after
//! sequence N" is a range scan of the primary key).
//!
//! An anchor (`model::anchor`) names a point of one server's journal; the
//! store reads it back and refuses anchors of other servers
//! (`Error::ForeignAnchor`).

use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::model::anchor::{Anchor, parse_server_id};

/// The kinds of change the journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    RevisionAdded,
    GroupAdded,
    GroupRemoved,
    DeploymentCreated,
    DeploymentChanged,
    DeploymentRemoved,
    UpdateDeclined,
    ContentArrived,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::RevisionAdded,
        ChangeKind::GroupAdded,
        ChangeKind::GroupRemoved,
        ChangeKind::DeploymentCreated,
        ChangeKind::DeploymentChanged,
        ChangeKind::DeploymentRemoved,
        ChangeKind::UpdateDeclined,
        ChangeKind::ContentArrived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::RevisionAdded => "revision_added",
            ChangeKind::GroupAdded => "group_added",
            ChangeKind::GroupRemoved => "group_removed",
            ChangeKind::DeploymentCreated => "deployment_created",
            ChangeKind::DeploymentChanged => "deployment_changed",
            ChangeKind::DeploymentRemoved => "deployment_removed",
            ChangeKind::UpdateDeclined => "update_declined",
            ChangeKind::ContentArrived => "content_arrived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One journal entry. `subject` is what changed: `<update id>/<revision>`
/// for revisions, a group id, a deployment id, an update id, or the upper-case
/// SHA-1 of a content file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub subject: String,
    pub at: String,
}

/// Appends one entry; must run inside the transaction that makes the change.
pub(crate) fn record(
    tx: &rusqlite::Connection,
    kind: ChangeKind,
    subject: &str,
    at: &str,
) -> Result<i64> {
    let mut st =
        tx.prepare_cached("INSERT INTO journal (kind, subject, at) VALUES (?1, ?2, ?3)")?;
    st.execute(rusqlite::params![kind.as_str(), subject, at])?;
    Ok(tx.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kinds_round_trip() {
        for k in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
    }
}
