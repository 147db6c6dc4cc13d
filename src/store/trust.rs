//! The trust tables: trusted keys (with revocations), the digests of the
//! trust statements applied on import, and the exporter's queue of signed
//! statements. Rows only: the rules that decide what changes are in
//! `crate::trust`, which reads these rows into a `TrustView` and hands
//! back the changes it made ([`TrustChange`]) to be written here.

use rusqlite::{Connection, params};

use crate::error::{DbContext, Result};
use crate::store::Store;

/// A row of `trusted_keys`, as stored (the key id as its text, the public
/// key as its bytes: `crate::trust` parses them and names a damaged row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustKeyRow {
    pub key_id: String,
    /// 32 bytes; empty for a revocation of a key this server never held.
    pub public_key: Vec<u8>,
    pub label: String,
    pub added: String,
    pub added_by: String,
    pub revoked: bool,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

/// The trust tables an importer or verifier reads.
#[derive(Debug, Clone, Default)]
pub struct TrustRows {
    pub keys: Vec<TrustKeyRow>,
    /// SHA-256 of every applied statement body.
    pub applied: Vec<Vec<u8>>,
}

/// One change to the trust tables, made by `crate::trust` on a view and
/// written by [`Store::apply_trust_changes`] or an import's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChange {
    /// A new entry (a trusted key, or the revocation of a key never held).
    AddKey(TrustKeyRow),
    /// An entry becomes revoked.
    Revoke {
        key_id: String,
        at: String,
        by: String,
    },
    /// An entry is removed (an administrator's `trust remove`).
    RemoveKey(String),
    /// A statement's body was applied (it applies once).
    StatementApplied { body_sha256: [u8; 32], at: String },
}

/// A statement in the exporter's queue (`trust_statements`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRow {
    pub seq: i64,
    pub body: Vec<u8>,
    pub minisig: String,
    pub created: String,
}

fn key_rows(conn: &Connection) -> rusqlite::Result<Vec<TrustKeyRow>> {
    let mut st = conn.prepare(
        "SELECT key_id, public_key, label, added, added_by, revoked, revoked_at, revoked_by \
         FROM trusted_keys ORDER BY key_id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(TrustKeyRow {
            key_id: r.get(0)?,
            public_key: r.get(1)?,
            label: r.get(2)?,
            added: r.get(3)?,
            added_by: r.get(4)?,
            revoked: r.get::<_, i64>(5)? != 0,
            revoked_at: r.get(6)?,
            revoked_by: r.get(7)?,
        })
    })?;
    rows.collect()
}

fn applied_digests(conn: &Connection) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut st = conn.prepare("SELECT body_sha256 FROM applied_statements")?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Writes `changes` in order inside the caller's transaction.
pub(crate) fn write_changes(conn: &Connection, changes: &[TrustChange]) -> Result<()> {
    for c in changes {
        match c {
            TrustChange::AddKey(k) => conn
                .execute(
                    "INSERT INTO trusted_keys (key_id, public_key, label, added, added_by, revoked, revoked_at, revoked_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        k.key_id,
                        k.public_key,
                        k.label,
                        k.added,
                        k.added_by,
                        k.revoked,
                        k.revoked_at,
                        k.revoked_by
                    ],
                )
                .during("adding a trusted key")?,
            TrustChange::Revoke { key_id, at, by } => conn
                .execute(
                    "UPDATE trusted_keys SET revoked = 1, revoked_at = ?2, revoked_by = ?3 WHERE key_id = ?1",
                    params![key_id, at, by],
                )
                .during("revoking a trusted key")?,
            TrustChange::RemoveKey(key_id) => conn
                .execute("DELETE FROM trusted_keys WHERE key_id = ?1", [key_id])
                .during("removing a trusted key")?,
            TrustChange::StatementApplied { body_sha256, at } => conn
                .execute(
                    "INSERT INTO applied_statements (body_sha256, applied) VALUES (?1, ?2)",
                    params![&body_sha256[..], at],
                )
                .during("recording an applied trust statement")?,
        };
    }
    Ok(())
}

/// Queued statements with `stmt_seq > after`, oldest first.
pub(crate) fn statements_after(conn: &Connection, after: i64) -> Result<Vec<QueuedRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT stmt_seq, body, minisig, created FROM trust_statements WHERE stmt_seq > ?1 ORDER BY stmt_seq",
        )
        .during("reading the queued trust statements")?;
    let rows = st
        .query_map([after], |r| {
            Ok(QueuedRow {
                seq: r.get(0)?,
                body: r.get(1)?,
                minisig: r.get(2)?,
                created: r.get(3)?,
            })
        })
        .during("reading the queued trust statements")?;
    rows.collect::<rusqlite::Result<_>>()
        .during("reading the queued trust statements")
}

impl Store {
    /// Every trusted key (revoked ones included, by key id) and the digests
    /// of the applied trust statements.
    pub fn trust_rows(&self) -> Result<TrustRows> {
        Ok(TrustRows {
            keys: key_rows(self.conn()).during("reading the trusted keys")?,
            applied: applied_digests(self.conn()).during("reading the applied trust statements")?,
        })
    }

    /// Writes changes a trust view made, in one transaction.
    pub fn apply_trust_changes(&self, changes: &[TrustChange]) -> Result<()> {
        let tx = self
            .conn()
            .unchecked_transaction()
            .during("changing the trust store")?;
        write_changes(&tx, changes)?;
        tx.commit().during("changing the trust store")
    }

    /// Appends a signed statement to the exporter's queue; returns its seq.
    pub fn queue_trust_statement(&self, body: &[u8], minisig: &str, created: &str) -> Result<i64> {
        self.conn()
            .execute(
                "INSERT INTO trust_statements (body, minisig, created) VALUES (?1, ?2, ?3)",
                params![body, minisig, created],
            )
            .during("queueing a trust statement")?;
        Ok(self.conn().last_insert_rowid())
    }

    /// The exporter's queue, oldest first.
    pub fn queued_trust_statements(&self) -> Result<Vec<QueuedRow>> {
        statements_after(self.conn(), 0)
    }

    /// Removes a queued statement.
    pub fn delete_queued_statement(&self, seq: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM trust_statements WHERE stmt_seq = ?1", [seq])
            .during("cancelling a queued trust statement")?;
        Ok(())
    }
}
