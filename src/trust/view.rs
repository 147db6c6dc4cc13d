//! The trust view: the keys a verifier or importer accepts (trusted,
//! revoked, and revocations of keys never held) and the digests of the
//! trust statements already applied, held in memory. It is built from a
//! store's trust tables or from `--trust` key files; administrators' adds
//! and removals and signed trust statements (`statements.rs`) change it,
//! and every change is recorded so that a store's caller writes exactly
//! those changes back ([`TrustView::changes`]). The rules are the same
//! whether a store is involved or not, and a verifier needs no database.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::keys::{KeyId, PublicKey, rule_public_key_point};
use crate::error::{Error, Result};
use crate::store::trust::{TrustChange, TrustKeyRow, TrustRows};
use crate::store::{Store, now_rfc3339};

/// The `added_by` of keys an administrator added.
pub const ADDED_BY_ADMIN: &str = "admin";

/// Where [`require_trusted`] looks, as its `unknown-key` message says it.
pub const THIS_TRUST_STORE: &str = "in this server's trust store";

/// A row of the trust store (`trust list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustedKey {
    pub key_id: KeyId,
    pub label: String,
    pub added: String,
    /// `admin`, or the key id of the trust statement's signer.
    pub added_by: String,
    pub revoked: bool,
    pub revoked_at: Option<String>,
    /// `admin` never revokes (it removes); the key id of the revoking statement's signer.
    pub revoked_by: Option<String>,
    /// The minisign public key line (base64); `None` for a revocation of a key
    /// this server never held.
    pub public_key: Option<String>,
    #[serde(skip)]
    key: Option<PublicKey>,
}

impl TrustedKey {
    /// The public key (`None` for a revocation of a key never held).
    pub fn public(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }
}

/// What [`TrustView::add_key`] (and [`trust_add`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAdded {
    Added(TrustedKey),
    /// The same key was already trusted; nothing changed.
    AlreadyTrusted(TrustedKey),
}

/// Reads a stored entry: parses its id and key (a damaged entry is an
/// error naming it).
fn finish_key(row: &TrustKeyRow) -> Result<TrustedKey> {
    let id: KeyId = row.key_id.parse().map_err(|_| {
        Error::verification(
            "malformed-key",
            format!("trust store entry {:?}: not a key id", row.key_id),
        )
    })?;
    let mut k = TrustedKey {
        key_id: id,
        label: row.label.clone(),
        added: row.added.clone(),
        added_by: row.added_by.clone(),
        revoked: row.revoked,
        revoked_at: row.revoked_at.clone(),
        revoked_by: row.revoked_by.clone(),
        public_key: None,
        key: None,
    };
    if !row.public_key.is_empty() {
        let name = format!("trust store entry {id}");
        let bytes: [u8; 32] = row.public_key.as_slice().try_into().map_err(|_| {
            Error::verification("malformed-key", format!("{name}: key is not 32 bytes"))
        })?;
        let pk = PublicKey {
            id,
            key: rule_public_key_point(&name, &id, &bytes)?,
        };
        k.public_key = Some(pk.to_base64());
        k.key = Some(pk);
    }
    Ok(k)
}

/// The keys a verifier or importer accepts, in memory (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct TrustView {
    /// Entries by key id as stored; a damaged one is reported when looked up.
    keys: BTreeMap<String, TrustKeyRow>,
    /// SHA-256 of the statement bodies already applied.
    applied: BTreeSet<Vec<u8>>,
    /// Where the keys came from, completing "key K is not ..." in an
    /// `unknown-key` failure.
    place: String,
    /// What changed since the view was built, in order.
    changes: Vec<TrustChange>,
}

impl TrustView {
    fn new(rows: TrustRows, place: String) -> TrustView {
        TrustView {
            keys: rows
                .keys
                .into_iter()
                .map(|k| (k.key_id.clone(), k))
                .collect(),
            applied: rows.applied.into_iter().collect(),
            place,
            changes: Vec::new(),
        }
    }

    /// Trusts exactly these keys (`verify --trust`).
    pub fn from_keys(keys: &[PublicKey]) -> Result<TrustView> {
        let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
        let mut v = TrustView::new(
            TrustRows::default(),
            format!("among the keys given with --trust ({})", ids.join(", ")),
        );
        for k in keys {
            v.add_key(k, "--trust", ADDED_BY_ADMIN)?;
        }
        v.changes.clear();
        Ok(v)
    }

    /// A copy of a store's trust store.
    pub fn from_store(store: &Store) -> Result<TrustView> {
        let dir = std::path::absolute(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
        let place = format!(
            "in the trust store of server {:?} ({})",
            store.info().name,
            dir.display()
        );
        Ok(TrustView::new(store.trust_rows()?, place))
    }

    /// A copy of a store's trust store whose `unknown-key` failures say
    /// [`THIS_TRUST_STORE`].
    fn of_this_store(store: &Store) -> Result<TrustView> {
        Ok(TrustView::new(
            store.trust_rows()?,
            THIS_TRUST_STORE.to_string(),
        ))
    }

    /// The changes made to the view since it was built, in order: what a
    /// store must write to hold the same trust.
    pub fn changes(&self) -> &[TrustChange] {
        &self.changes
    }

    /// The entry for `id`, if any.
    pub fn key(&self, id: &KeyId) -> Result<Option<TrustedKey>> {
        self.keys.get(&id.to_string()).map(finish_key).transpose()
    }

    /// Every entry (revoked ones included), by key id.
    pub fn keys(&self) -> Result<Vec<TrustedKey>> {
        self.keys.values().map(finish_key).collect()
    }

    /// Rule: the key that signed must be trusted (`unknown-key`) and not
    /// revoked (`revoked-key`). Returns its public key.
    pub fn require_trusted(&self, id: &KeyId) -> Result<PublicKey> {
        let k = self.key(id)?.ok_or_else(|| {
            Error::verification("unknown-key", format!("key {id} is not {}", self.place))
        })?;
        if k.revoked {
            return Err(Error::verification(
                "revoked-key",
                format!("key {id} ({:?}) was revoked{}", k.label, revoked_suffix(&k)),
            ));
        }
        k.key.ok_or_else(|| {
            Error::verification(
                "malformed-key",
                format!("trust store entry {id} has no public key"),
            )
        })
    }

    /// Trusts `pk`. An already trusted identical key is a no-op
    /// ([`TrustAdded::AlreadyTrusted`]). Refused: a revoked key (it stays
    /// revoked until an administrator removes its entry), and a key id
    /// already held with another public key.
    pub fn add_key(&mut self, pk: &PublicKey, label: &str, added_by: &str) -> Result<TrustAdded> {
        let label = check_label(label)?;
        if let Some(existing) = self.key(&pk.id)? {
            if existing.revoked {
                return Err(Error::KeyRevoked {
                    key: pk.id.to_string(),
                    when: revoked_suffix(&existing),
                });
            }
            if existing.key.as_ref() != Some(pk) {
                return Err(Error::KeyIdConflict {
                    key: pk.id.to_string(),
                    label: existing.label,
                });
            }
            return Ok(TrustAdded::AlreadyTrusted(existing));
        }
        let row = TrustKeyRow {
            key_id: pk.id.to_string(),
            public_key: pk.key.as_bytes().to_vec(),
            label: label.to_string(),
            added: now_rfc3339(),
            added_by: added_by.to_string(),
            revoked: false,
            revoked_at: None,
            revoked_by: None,
        };
        let added = finish_key(&row)?;
        self.change(TrustChange::AddKey(row));
        Ok(TrustAdded::Added(added))
    }

    /// Removes `id`'s entry (an administrator's act; it also clears a
    /// revocation, after which the key may be added again).
    pub fn remove_key(&mut self, id: &KeyId) -> Result<TrustedKey> {
        let existing = self
            .key(id)?
            .ok_or_else(|| Error::KeyNotTrusted(id.to_string()))?;
        self.change(TrustChange::RemoveKey(id.to_string()));
        Ok(existing)
    }

    /// Revokes `id` on behalf of `by` (a statement's issuer): an entry held
    /// becomes revoked; a key never held gets an entry without a public key,
    /// so it cannot be added later. Returns whether the key was held, or
    /// `None` when it was revoked already.
    pub(super) fn revoke(&mut self, id: &KeyId, by: &KeyId) -> Option<bool> {
        let now = now_rfc3339();
        let key_id = id.to_string();
        match self.keys.get(&key_id) {
            Some(k) if k.revoked => None,
            Some(_) => {
                self.change(TrustChange::Revoke {
                    key_id,
                    at: now,
                    by: by.to_string(),
                });
                Some(true)
            }
            None => {
                self.change(TrustChange::AddKey(TrustKeyRow {
                    key_id,
                    public_key: Vec::new(),
                    label: format!("revoked by {by} (key never held)"),
                    added: now.clone(),
                    added_by: by.to_string(),
                    revoked: true,
                    revoked_at: Some(now),
                    revoked_by: Some(by.to_string()),
                }));
                Some(false)
            }
        }
    }

    /// Whether a statement body with this SHA-256 was applied.
    pub(super) fn is_applied(&self, body_sha256: &[u8; 32]) -> bool {
        self.applied.contains(&body_sha256[..])
    }

    /// Records that a statement body was applied.
    pub(super) fn record_applied(&mut self, body_sha256: [u8; 32]) {
        self.change(TrustChange::StatementApplied {
            body_sha256,
            at: now_rfc3339(),
        });
    }

    /// Applies a change to the view and records it.
    fn change(&mut self, c: TrustChange) {
        match &c {
            TrustChange::AddKey(row) => {
                self.keys.insert(row.key_id.clone(), row.clone());
            }
            TrustChange::Revoke { key_id, at, by } => {
                if let Some(k) = self.keys.get_mut(key_id) {
                    k.revoked = true;
                    k.revoked_at = Some(at.clone());
                    k.revoked_by = Some(by.clone());
                }
            }
            TrustChange::RemoveKey(key_id) => {
                self.keys.remove(key_id);
            }
            TrustChange::StatementApplied { body_sha256, .. } => {
                self.applied.insert(body_sha256.to_vec());
            }
        }
        self.changes.push(c);
    }
}

pub(super) fn revoked_suffix(k: &TrustedKey) -> String {
    match (&k.revoked_at, &k.revoked_by) {
        (Some(at), Some(by)) => format!(" at {at} by {by}"),
        (Some(at), None) => format!(" at {at}"),
        (None, Some(by)) => format!(" by {by}"),
        (None, None) => String::new(),
    }
}

/// Labels are 1-256 printable characters (trimmed).
pub(super) fn check_label(label: &str) -> Result<&str> {
    let l = label.trim();
    if l.is_empty() || l.chars().count() > 256 || l.chars().any(char::is_control) {
        return Err(Error::invalid(
            "key label",
            format!(
                "{:?} must be 1-256 printable characters",
                label.chars().take(300).collect::<String>()
            ),
        ));
    }
    Ok(l)
}

// ------------------------------------------------- a store's trust store

/// Every key in a store's trust store (revoked ones included), by key id.
pub fn trust_list(store: &Store) -> Result<Vec<TrustedKey>> {
    TrustView::of_this_store(store)?.keys()
}

/// A store's trust store entry for `id`, if any.
pub fn trusted_key(store: &Store, id: &KeyId) -> Result<Option<TrustedKey>> {
    TrustView::of_this_store(store)?.key(id)
}

/// The import-time rule ([`TrustView::require_trusted`]) against a
/// store's trust store.
pub fn require_trusted(store: &Store, id: &KeyId) -> Result<PublicKey> {
    TrustView::of_this_store(store)?.require_trusted(id)
}

/// Adds `pk` to a store's trust store ([`TrustView::add_key`]).
pub fn trust_add(store: &Store, pk: &PublicKey, label: &str, added_by: &str) -> Result<TrustAdded> {
    let mut view = TrustView::of_this_store(store)?;
    let added = view.add_key(pk, label, added_by)?;
    store.apply_trust_changes(view.changes())?;
    Ok(added)
}

/// Removes `id`'s entry from a store's trust store ([`TrustView::remove_key`]).
pub fn trust_remove(store: &Store, id: &KeyId) -> Result<TrustedKey> {
    let mut view = TrustView::of_this_store(store)?;
    let removed = view.remove_key(id)?;
    store.apply_trust_changes(view.changes())?;
    Ok(removed)
}

/// Applies a signed trust statement to a store's trust store, all or
/// nothing (the rules: [`TrustView::apply_statement`]).
pub fn apply_statement(
    store: &Store,
    body: &[u8],
    minisig: &str,
) -> Result<super::statements::Applied> {
    let mut view = TrustView::of_this_store(store)?;
    let applied = view.apply_statement(body, minisig)?;
    store.apply_trust_changes(view.changes())?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::SecretKey;
    use crate::trust::tests_common::{rule_of, store};

    #[test]
    fn trust_store_add_list_remove() {
        let (_d, s) = store();
        let c = &s;
        let a = SecretKey::generate().unwrap().public();
        assert!(matches!(
            trust_add(c, &a, "hq 2026", ADDED_BY_ADMIN).unwrap(),
            TrustAdded::Added(_)
        ));
        assert!(matches!(
            trust_add(c, &a, "again", ADDED_BY_ADMIN).unwrap(),
            TrustAdded::AlreadyTrusted(k) if k.label == "hq 2026"
        ));
        let list = trust_list(c).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key_id, a.id);
        assert_eq!(list[0].public_key.as_deref(), Some(a.to_base64().as_str()));
        assert_eq!(list[0].added_by, "admin");
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(json["key_id"], a.id.to_string());
        assert_eq!(json["revoked"], false);
        assert!(json.get("key").is_none());
        assert_eq!(require_trusted(c, &a.id).unwrap(), a);
        // Same id, other key: refused.
        let other = PublicKey {
            id: a.id,
            key: SecretKey::generate().unwrap().public().key,
        };
        assert!(matches!(
            trust_add(c, &other, "x", ADDED_BY_ADMIN).unwrap_err(),
            Error::KeyIdConflict { key, label } if key == a.id.to_string() && label == "hq 2026"
        ));
        assert!(trust_add(c, &a, " ", ADDED_BY_ADMIN).is_err());
        assert_eq!(trust_remove(c, &a.id).unwrap().key_id, a.id);
        assert!(matches!(
            trust_remove(c, &a.id).unwrap_err(),
            Error::KeyNotTrusted(k) if k == a.id.to_string()
        ));
        assert_eq!(
            rule_of(&require_trusted(c, &a.id).unwrap_err()),
            "unknown-key"
        );
    }

    /// A view built from key files trusts exactly those keys and has
    /// nothing to write; a damaged store entry is named only when looked up.
    #[test]
    fn views_from_keys_and_damaged_entries() {
        let a = SecretKey::generate().unwrap().public();
        let b = SecretKey::generate().unwrap().public();
        let v = TrustView::from_keys(&[a, a]).unwrap();
        assert!(v.changes().is_empty());
        assert_eq!(v.require_trusted(&a.id).unwrap(), a);
        let e = v.require_trusted(&b.id).unwrap_err();
        assert_eq!(rule_of(&e), "unknown-key");
        assert!(
            e.to_string().contains(&format!(
                "among the keys given with --trust ({}, {})",
                a.id, a.id
            )),
            "{e}"
        );
        let damaged = TrustRows {
            keys: vec![TrustKeyRow {
                key_id: b.id.to_string(),
                public_key: vec![1, 2, 3],
                label: "short".into(),
                added: "now".into(),
                added_by: "admin".into(),
                revoked: false,
                revoked_at: None,
                revoked_by: None,
            }],
            applied: Vec::new(),
        };
        let mut v = TrustView::new(damaged, "here".into());
        v.add_key(&a, "a", ADDED_BY_ADMIN).unwrap();
        assert_eq!(v.require_trusted(&a.id).unwrap(), a);
        let e = v.require_trusted(&b.id).unwrap_err();
        assert_eq!(rule_of(&e), "malformed-key");
        assert!(e.to_string().contains("key is not 32 bytes"), "{e}");
    }
}
