//! Trust statements: signed instructions, carried in bundles, to trust
//! (`add`) or revoke a key. The rules an importer applies them by (on a
//! [`TrustView`]), and the exporter's queue of statements with the rules
//! that keep every destination's chain open.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{KeyId, PublicKey, SecretKey};
use super::minisign::{Minisig, verify};
use super::view::{TrustAdded, TrustView, TrustedKey, check_label, revoked_suffix};
use crate::error::{Error, Result};
use crate::store::{Store, now_rfc3339};

/// No trust statement body is larger than this.
const MAX_STATEMENT_BYTES: usize = 64 * 1024;

pub const STATEMENT_FORMAT: &str = "gapsync-trust-statement";
pub const STATEMENT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementAction {
    Add,
    Revoke,
}

impl StatementAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementAction::Add => "add",
            StatementAction::Revoke => "revoke",
        }
    }
}

/// A signed instruction, carried in bundles, to trust (`add`) or revoke a
/// key. Its body is this JSON; its signature a minisig by `issuer` with the
/// trusted comment `gapsync trust statement <action> <key_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStatement {
    pub format: String,
    pub version: u32,
    pub issued: String,
    pub issuer: KeyId,
    pub action: StatementAction,
    /// The minisign public key line of the key added (`add` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub key_id: KeyId,
    /// The added key's label (`add` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl TrustStatement {
    /// `issuer` introduces `new` under `label`.
    pub fn new_add(issuer: &SecretKey, new: &PublicKey, label: &str) -> Result<TrustStatement> {
        Ok(TrustStatement {
            format: STATEMENT_FORMAT.to_string(),
            version: STATEMENT_VERSION,
            issued: now_rfc3339(),
            issuer: issuer.id(),
            action: StatementAction::Add,
            key: Some(new.to_base64()),
            key_id: new.id,
            label: Some(check_label(label)?.to_string()),
        })
    }

    /// `issuer` revokes `key_id` (which may be its own).
    pub fn new_revoke(issuer: &SecretKey, key_id: &KeyId) -> TrustStatement {
        TrustStatement {
            format: STATEMENT_FORMAT.to_string(),
            version: STATEMENT_VERSION,
            issued: now_rfc3339(),
            issuer: issuer.id(),
            action: StatementAction::Revoke,
            key: None,
            key_id: *key_id,
            label: None,
        }
    }

    /// The trusted comment a statement's signature carries.
    pub fn trusted_comment(&self) -> String {
        format!(
            "gapsync trust statement {} {}",
            self.action.as_str(),
            self.key_id
        )
    }

    /// The body (JSON, verbatim bytes to carry) and its minisig by `issuer`.
    pub fn sign(&self, issuer: &SecretKey) -> Result<(Vec<u8>, String)> {
        if issuer.id() != self.issuer {
            return Err(Error::invalid(
                "trust statement",
                format!(
                    "issued by key {} but signed with key {}",
                    self.issuer,
                    issuer.id()
                ),
            ));
        }
        let mut body = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid("trust statement", e.to_string()))?;
        body.push(b'\n');
        let sig = issuer.sign(&body, &self.trusted_comment())?;
        Ok((body, sig))
    }
}

/// What [`apply_statement`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Applied {
    Added {
        key_id: KeyId,
        label: String,
        issuer: KeyId,
    },
    /// The key was already trusted (same public key); nothing changed.
    AlreadyTrusted { key_id: KeyId, issuer: KeyId },
    /// The key is now revoked. `known` is false when this server never held
    /// it (the revocation is recorded so it cannot be added later).
    Revoked {
        key_id: KeyId,
        issuer: KeyId,
        known: bool,
    },
    /// The key was already revoked; nothing changed.
    AlreadyRevoked { key_id: KeyId, issuer: KeyId },
    /// This exact statement (same body bytes) was applied before.
    AlreadyApplied { body_sha256: String },
}

impl TrustView {
    /// Applies a signed trust statement to this view, all or nothing (the
    /// view changes only when every rule passed). The rules, in order:
    /// 1. a body already applied (by SHA-256) is a no-op (`rule_statement_not_replayed`);
    /// 2. the signature file is well-formed ([`Minisig::parse`]);
    /// 3. its key is trusted and not revoked ([`TrustView::require_trusted`]);
    /// 4. the signature verifies over the body ([`verify`]);
    /// 5. the body is a version-1 statement (`rule_statement_format`);
    /// 6. its issuer is the key that signed (`rule_statement_issuer_is_signer`);
    /// 7. the trusted comment names its action and key (`rule_statement_comment`);
    /// 8. an add does not bring back a revoked key nor reuse a key id
    ///    (`rule_add_not_revoked`, `rule_add_same_key`).
    ///
    /// The replay check comes first: a statement already applied stays a no-op
    /// even after its signer was revoked (e.g. it revoked itself), so a later
    /// bundle carrying it again does not fail.
    pub fn apply_statement(&mut self, body: &[u8], minisig: &str) -> Result<Applied> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        let name = format!("trust statement sha256:{}", hex::encode(&digest[..8]));
        if let Some(applied) = rule_statement_not_replayed(self, &digest) {
            return Ok(applied);
        }
        let sig = Minisig::parse_named(&format!("{name} (signature)"), minisig)?;
        let issuer_pk = self.require_trusted(&sig.key_id())?;
        verify(&issuer_pk, body, &sig)?;
        let st = rule_statement_format(&name, body)?;
        rule_statement_issuer_is_signer(&name, &st, &sig)?;
        rule_statement_comment(&name, &st, &sig)?;
        let outcome = match st.action {
            StatementAction::Add => apply_add(self, &name, &st)?,
            StatementAction::Revoke => apply_revoke(self, &st),
        };
        self.record_applied(digest);
        Ok(outcome)
    }
}

/// Rule: each statement applies once: one whose body SHA-256 is in
/// `applied_statements` is a no-op.
fn rule_statement_not_replayed(view: &TrustView, digest: &[u8; 32]) -> Option<Applied> {
    view.is_applied(digest).then(|| Applied::AlreadyApplied {
        body_sha256: hex::encode(digest),
    })
}

/// Rule: the body is JSON of a `gapsync-trust-statement` version 1 with no
/// unknown fields, an RFC 3339 `issued`, and: for `add`, the key (whose id
/// is `key_id`) and a label; for `revoke`, neither.
fn rule_statement_format(name: &str, body: &[u8]) -> Result<TrustStatement> {
    let bad = |why: String| Error::verification("statement-format", format!("{name}: {why}"));
    if body.len() > MAX_STATEMENT_BYTES {
        return Err(bad(format!("larger than {MAX_STATEMENT_BYTES} bytes")));
    }
    let st: TrustStatement =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a trust statement: {e}")))?;
    if st.format != STATEMENT_FORMAT || st.version != STATEMENT_VERSION {
        return Err(bad(format!(
            "format {:?} version {}, expected {STATEMENT_FORMAT:?} version {STATEMENT_VERSION}",
            st.format, st.version
        )));
    }
    time::OffsetDateTime::parse(&st.issued, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(format!("issued {:?} is not an RFC 3339 time", st.issued)))?;
    match (st.action, &st.key, &st.label) {
        (StatementAction::Add, Some(key), Some(label)) => {
            let pk = PublicKey::parse_named(&format!("{name}: key"), key)?;
            if pk.id != st.key_id {
                return Err(bad(format!(
                    "key_id {} does not match the key's id {}",
                    st.key_id, pk.id
                )));
            }
            check_label(label).map_err(|e| bad(e.to_string()))?;
        }
        (StatementAction::Add, _, _) => {
            return Err(bad("an add statement needs \"key\" and \"label\"".into()));
        }
        (StatementAction::Revoke, None, None) => {}
        (StatementAction::Revoke, _, _) => {
            return Err(bad("a revoke statement has no \"key\" nor \"label\"".into()));
        }
    }
    Ok(st)
}

/// Rule: the statement's `issuer` is the key that signed it.
fn rule_statement_issuer_is_signer(name: &str, st: &TrustStatement, sig: &Minisig) -> Result<()> {
    if st.issuer == sig.key_id() {
        Ok(())
    } else {
        Err(Error::verification(
            "statement-issuer-mismatch",
            format!(
                "{name}: issuer {} but signed by key {}",
                st.issuer,
                sig.key_id()
            ),
        ))
    }
}

/// Rule: the signed trusted comment is `gapsync trust statement <action> <key_id>`.
fn rule_statement_comment(name: &str, st: &TrustStatement, sig: &Minisig) -> Result<()> {
    let expected = st.trusted_comment();
    if sig.trusted_comment() == expected {
        Ok(())
    } else {
        Err(Error::verification(
            "statement-comment-mismatch",
            format!(
                "{name}: trusted comment {:?}, expected {expected:?}",
                sig.trusted_comment().chars().take(200).collect::<String>()
            ),
        ))
    }
}

/// Rule: a statement cannot add a key this server holds as revoked (it
/// stays revoked until an administrator removes it).
fn rule_add_not_revoked(name: &str, existing: &TrustedKey) -> Result<()> {
    if existing.revoked {
        return Err(Error::verification(
            "revoked-key",
            format!(
                "{name}: adds key {}, which this server holds as revoked{}; an administrator must `trust remove {}` first",
                existing.key_id,
                revoked_suffix(existing),
                existing.key_id
            ),
        ));
    }
    Ok(())
}

/// Rule: a statement cannot add a key under an id this server holds with
/// another public key.
fn rule_add_same_key(name: &str, existing: &TrustedKey, pk: &PublicKey) -> Result<()> {
    if existing.public() != Some(pk) {
        return Err(Error::verification(
            "key-id-conflict",
            format!(
                "{name}: adds key id {} with a public key other than the one trusted as {:?}",
                pk.id, existing.label
            ),
        ));
    }
    Ok(())
}

fn apply_add(view: &mut TrustView, name: &str, st: &TrustStatement) -> Result<Applied> {
    let (Some(key), Some(label)) = (&st.key, &st.label) else {
        return Err(Error::verification(
            "statement-format",
            format!("{name}: an add statement needs \"key\" and \"label\""),
        ));
    };
    let pk = PublicKey::parse_named(&format!("{name}: key"), key)?;
    if let Some(existing) = view.key(&pk.id)? {
        rule_add_not_revoked(name, &existing)?;
        rule_add_same_key(name, &existing, &pk)?;
    }
    match view.add_key(&pk, label, &st.issuer.to_string())? {
        TrustAdded::Added(k) => Ok(Applied::Added {
            key_id: k.key_id,
            label: k.label,
            issuer: st.issuer,
        }),
        TrustAdded::AlreadyTrusted(k) => Ok(Applied::AlreadyTrusted {
            key_id: k.key_id,
            issuer: st.issuer,
        }),
    }
}

fn apply_revoke(view: &mut TrustView, st: &TrustStatement) -> Applied {
    match view.revoke(&st.key_id, &st.issuer) {
        None => Applied::AlreadyRevoked {
            key_id: st.key_id,
            issuer: st.issuer,
        },
        Some(known) => Applied::Revoked {
            key_id: st.key_id,
            issuer: st.issuer,
            known,
        },
    }
}

// ------------------------------------------------ the exporter's queue

/// What a queued statement says (`export` lists those it carries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementSummary {
    /// Its `stmt_seq` in the exporter's queue.
    pub seq: i64,
    pub action: StatementAction,
    pub key_id: KeyId,
    /// The added key's label (`add` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub issuer: KeyId,
}

impl StatementSummary {
    /// Summarises a queued statement's body.
    pub fn from_body(seq: i64, body: &[u8]) -> Result<StatementSummary> {
        let st = rule_statement_format(&format!("queued trust statement {seq}"), body)?;
        Ok(StatementSummary {
            seq,
            action: st.action,
            key_id: st.key_id,
            label: st.label,
            issuer: st.issuer,
        })
    }
}

/// A row of `trust statement --list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedStatement {
    #[serde(flatten)]
    pub summary: StatementSummary,
    pub created: String,
    /// Destinations a bundle has already carried it to (from the export
    /// ledger); every other destination gets it with its next bundle.
    pub sent_to: Vec<String>,
}

/// What [`queue_statement`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: i64,
    /// Destinations that received bundles but that this server has no
    /// record of trusting the statement's issuer (it signed no bundle to
    /// them and no statement introduced it): they apply the statement only
    /// if an administrator trusted the key there.
    pub issuer_unproven_at: Vec<String>,
}

/// Every queued statement, oldest first.
pub fn queued_statements(store: &Store) -> Result<Vec<QueuedStatement>> {
    let sent = store.statements_sent()?;
    let mut out = Vec::new();
    for row in store.queued_trust_statements()? {
        out.push(QueuedStatement {
            summary: StatementSummary::from_body(row.seq, &row.body)?,
            created: row.created,
            sent_to: sent
                .iter()
                .filter(|(_, last)| *last >= row.seq)
                .map(|(d, _)| d.clone())
                .collect(),
        });
    }
    Ok(out)
}

/// What the exporter knows of its destinations' trust: the keys each
/// destination is known to accept, and the keys the queue revokes.
///
/// A destination is known to accept the keys that signed the bundles
/// exported to it (the export history records each signer), and the keys
/// that queued statements add when their issuer is known there (statements
/// go to every destination, in queue order). A key a queued statement
/// revokes is known to be accepted nowhere from then on. Keys trusted by
/// hand on an importer (`trust add`) are not known here.
struct ChainKnowledge {
    /// Destination → keys it is known to accept.
    known: BTreeMap<String, BTreeSet<KeyId>>,
    /// Revoked key → the seq of the queued statement that revokes it.
    revoked: BTreeMap<KeyId, i64>,
}

impl ChainKnowledge {
    /// What the export history says, before any statement.
    fn from_history(store: &Store) -> Result<ChainKnowledge> {
        let mut known: BTreeMap<String, BTreeSet<KeyId>> = BTreeMap::new();
        for (dest, signer) in store.export_signers()? {
            // A damaged row proves nothing; it is not an error here.
            if let Ok(id) = signer.parse::<KeyId>() {
                known.entry(dest).or_default().insert(id);
            }
        }
        Ok(ChainKnowledge {
            known,
            revoked: BTreeMap::new(),
        })
    }

    /// Takes a statement (queued as `seq`) into account.
    fn apply(&mut self, seq: i64, st: &StatementSummary) {
        match st.action {
            StatementAction::Add => {
                for keys in self.known.values_mut() {
                    if keys.contains(&st.issuer) && !self.revoked.contains_key(&st.key_id) {
                        keys.insert(st.key_id);
                    }
                }
            }
            StatementAction::Revoke => {
                self.revoked.entry(st.key_id).or_insert(seq);
                for keys in self.known.values_mut() {
                    keys.remove(&st.key_id);
                }
            }
        }
    }

    /// The rules a statement must pass given the statements before it
    /// (those that depend on the queue, so they are checked again when a
    /// statement is cancelled).
    fn check(&self, st: &StatementSummary) -> Result<()> {
        rule_queue_issuer_not_revoked(self, st)?;
        rule_queue_add_not_revoked(self, st)?;
        rule_queue_keeps_a_known_key(self, st)?;
        Ok(())
    }
}

/// The queue's statements (all, or all but `skip`), oldest first.
fn queue_summaries(store: &Store, skip: Option<i64>) -> Result<Vec<StatementSummary>> {
    Ok(queued_statements(store)?
        .into_iter()
        .map(|q| q.summary)
        .filter(|s| Some(s.seq) != skip)
        .collect())
}

/// Rule: a key does not revoke itself. Importers apply a bundle's
/// statements before checking its signature, so a bundle carrying the
/// revocation of its own signer is refused (`revoked-key`), and so is
/// every later one it signs; another trusted key must sign the revocation.
fn rule_queue_not_self_revocation(st: &StatementSummary) -> Result<()> {
    if st.action == StatementAction::Revoke && st.key_id == st.issuer {
        return Err(Error::bad_argument(
            format!("--revoke {}", st.key_id),
            format!(
                "is the key signing the statement (--key), and a key cannot revoke itself: \
                 importers would refuse every later bundle it signs. Sign the revocation with \
                 another trusted key (to rotate: `trust statement --key OLD.key --add NEW.pub`, \
                 then `trust statement --key NEW.key --revoke {id}`)",
                id = st.key_id
            ),
        ));
    }
    Ok(())
}

/// Rule: the issuer is not revoked by a statement queued before: importers
/// apply statements in order and refuse one signed by a revoked key (and
/// the bundle carrying it).
fn rule_queue_issuer_not_revoked(k: &ChainKnowledge, st: &StatementSummary) -> Result<()> {
    if let Some(by) = k.revoked.get(&st.issuer) {
        return Err(Error::StatementQueue {
            rule: "issuer-revoked",
            detail: format!(
                "the signing key {} is revoked by queued trust statement {by}; importers refuse \
                 statements it signs (and the bundles carrying them): sign with a key that stays trusted",
                st.issuer
            ),
        });
    }
    Ok(())
}

/// Rule: an add does not name a key a statement queued before revokes (a
/// revoked key stays revoked; importers refuse the add and its bundle).
fn rule_queue_add_not_revoked(k: &ChainKnowledge, st: &StatementSummary) -> Result<()> {
    if st.action == StatementAction::Add
        && let Some(by) = k.revoked.get(&st.key_id)
    {
        return Err(Error::StatementQueue {
            rule: "add-revoked",
            detail: format!(
                "key {} is revoked by queued trust statement {by}; a revoked key stays revoked \
                 (importers refuse to add it again): introduce a new key instead",
                st.key_id
            ),
        });
    }
    Ok(())
}

/// Rule: a revocation does not take away the last key a destination is
/// known to accept (see [`ChainKnowledge`]): bundles to it could then be
/// signed only by keys it is not known to trust.
fn rule_queue_keeps_a_known_key(k: &ChainKnowledge, st: &StatementSummary) -> Result<()> {
    if st.action != StatementAction::Revoke {
        return Ok(());
    }
    for (dest, keys) in &k.known {
        if keys.len() == 1 && keys.contains(&st.key_id) {
            return Err(Error::StatementQueue {
                rule: "last-known-key",
                detail: format!(
                    "key {key} is the last key destination {dest:?} is known to trust (it signed \
                     the bundles exported there, or a statement introduced it); revoking it would \
                     leave {dest:?} no key known to sign bundles it accepts. Introduce another key \
                     first (`trust statement --key OLD.key --add NEW.pub`, signed by a key \
                     {dest:?} trusts), then revoke {key} with a statement signed by the new key",
                    key = st.key_id
                ),
            });
        }
    }
    Ok(())
}

/// Rule (export): the signing key is not revoked by a queued statement;
/// importers that apply it refuse every bundle the key signs.
pub fn check_export_signer(store: &Store, signer: &KeyId) -> Result<()> {
    for s in queue_summaries(store, None)? {
        if s.action == StatementAction::Revoke && s.key_id == *signer {
            return Err(Error::StatementQueue {
                rule: "export-signer-revoked",
                detail: format!(
                    "key {signer} is revoked by queued trust statement {} (signed by {}); importers \
                     that apply it refuse every bundle the key signs: sign with another trusted key",
                    s.seq, s.issuer
                ),
            });
        }
    }
    Ok(())
}

/// Queues a signed statement for the next bundles (the exporter's side).
/// Checks that the body is a well-formed statement and that the signature
/// is well-formed and by the statement's issuer (the full signature check
/// happens where it is applied), and that the statement cannot lock the
/// chain out: no self-revocation, nothing signed by or adding a key the
/// queue revokes, no revocation of a destination's last known key (the
/// `rule_queue_*` functions).
pub fn queue_statement(store: &Store, body: &[u8], minisig: &str) -> Result<Queued> {
    let name = "trust statement to queue";
    let st = rule_statement_format(name, body)?;
    let sig = Minisig::parse_named(&format!("{name} (signature)"), minisig)?;
    rule_statement_issuer_is_signer(name, &st, &sig)?;
    rule_statement_comment(name, &st, &sig)?;
    let summary = StatementSummary {
        seq: 0,
        action: st.action,
        key_id: st.key_id,
        label: st.label.clone(),
        issuer: st.issuer,
    };
    rule_queue_not_self_revocation(&summary)?;
    let mut k = ChainKnowledge::from_history(store)?;
    for q in queue_summaries(store, None)? {
        k.apply(q.seq, &q);
    }
    k.check(&summary)?;
    let issuer_unproven_at = k
        .known
        .iter()
        .filter(|(_, keys)| !keys.contains(&st.issuer))
        .map(|(d, _)| d.clone())
        .collect();
    let seq = store.queue_trust_statement(body, minisig, &now_rfc3339())?;
    Ok(Queued {
        seq,
        issuer_unproven_at,
    })
}

/// Cancels a queued statement no bundle has carried yet. Refused when a
/// bundle already carried it to some destination (it cannot be recalled
/// from there), and when a later queued statement depends on it.
pub fn cancel_statement(store: &Store, seq: i64) -> Result<QueuedStatement> {
    let all = queued_statements(store)?;
    let Some(target) = all.iter().find(|q| q.summary.seq == seq).cloned() else {
        return Err(Error::NoQueuedStatement(seq));
    };
    rule_cancel_not_sent(&target)?;
    // The later statements are checked again without it; only a failure
    // its absence causes refuses the cancellation.
    let mut with = ChainKnowledge::from_history(store)?;
    let mut without = ChainKnowledge::from_history(store)?;
    for q in &all {
        let s = &q.summary;
        if s.seq > seq
            && with.check(s).is_ok()
            && let Err(e) = without.check(s)
        {
            return Err(Error::StatementQueue {
                rule: "depended-on",
                detail: format!(
                    "cannot cancel trust statement {seq}: queued trust statement {} depends on it ({e})",
                    s.seq
                ),
            });
        }
        with.apply(s.seq, s);
        if s.seq != seq {
            without.apply(s.seq, s);
        }
    }
    store.delete_queued_statement(seq)?;
    Ok(target)
}

/// Rule: a statement a bundle already carried is not cancelled: an
/// importer may have applied it, and cancelling would only make the
/// destinations disagree. It is undone by a new statement (revoke an added
/// key) or, for a revocation, by hand on each importer.
fn rule_cancel_not_sent(q: &QueuedStatement) -> Result<()> {
    if q.sent_to.is_empty() {
        return Ok(());
    }
    let undo = match q.summary.action {
        StatementAction::Add => format!(
            "to undo it, queue a revocation: `trust statement --key KEY.key --revoke {}`",
            q.summary.key_id
        ),
        StatementAction::Revoke => format!(
            "a revocation is undone only by hand on each importer that applied it: \
             `gapsync trust remove {id}` then `gapsync trust add {id}.pub`",
            id = q.summary.key_id
        ),
    };
    Err(Error::StatementQueue {
        rule: "already-sent",
        detail: format!(
            "trust statement {} was already carried to {} and cannot be recalled; {undo}",
            q.summary.seq,
            q.sent_to
                .iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ledgers::ExportRecord;
    use crate::trust::tests_common::{rule_of, store};
    use crate::trust::view::{
        ADDED_BY_ADMIN, apply_statement, require_trusted, trust_add, trust_list, trust_remove,
        trusted_key,
    };

    fn trusted_store(issuer: &SecretKey) -> (tempfile::TempDir, Store) {
        let (d, s) = store();
        trust_add(&s, &issuer.public(), "root", ADDED_BY_ADMIN).unwrap();
        (d, s)
    }

    #[test]
    fn statement_add_and_revoke() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = &s;
        let (body, sig) = TrustStatement::new_add(&root, &next.public(), "site 2027")
            .unwrap()
            .sign(&root)
            .unwrap();
        assert_eq!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::Added {
                key_id: next.id(),
                label: "site 2027".into(),
                issuer: root.id()
            }
        );
        let k = trusted_key(c, &next.id()).unwrap().unwrap();
        assert_eq!(k.added_by, root.id().to_string());
        assert_eq!(require_trusted(c, &next.id()).unwrap(), next.public());
        // The new key revokes the old one.
        let (body, sig) = TrustStatement::new_revoke(&next, &root.id())
            .sign(&next)
            .unwrap();
        assert_eq!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::Revoked {
                key_id: root.id(),
                issuer: next.id(),
                known: true
            }
        );
        let k = trusted_key(c, &root.id()).unwrap().unwrap();
        assert!(k.revoked);
        assert_eq!(
            k.revoked_by.as_deref(),
            Some(next.id().to_string().as_str())
        );
        assert_eq!(
            rule_of(&require_trusted(c, &root.id()).unwrap_err()),
            "revoked-key"
        );
        // Revoking it again (another statement) changes nothing.
        let mut again = TrustStatement::new_revoke(&next, &root.id());
        again.issued = "2030-01-01T00:00:00Z".into();
        let (body, sig) = again.sign(&next).unwrap();
        assert_eq!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::AlreadyRevoked {
                key_id: root.id(),
                issuer: next.id()
            }
        );
        // A revoked key cannot be added back, by the admin or a statement...
        assert!(matches!(
            trust_add(c, &root.public(), "back", ADDED_BY_ADMIN).unwrap_err(),
            Error::KeyRevoked { key, .. } if key == root.id().to_string()
        ));
        let (body, sig) = TrustStatement::new_add(&next, &root.public(), "back")
            .unwrap()
            .sign(&next)
            .unwrap();
        assert_eq!(
            rule_of(&apply_statement(c, &body, &sig).unwrap_err()),
            "revoked-key"
        );
        // ... until the admin removes it.
        trust_remove(c, &root.id()).unwrap();
        assert!(matches!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::Added { .. }
        ));
    }

    #[test]
    fn statement_self_revoke_and_replay() {
        let root = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = &s;
        let (body, sig) = TrustStatement::new_revoke(&root, &root.id())
            .sign(&root)
            .unwrap();
        assert!(matches!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::Revoked { known: true, .. }
        ));
        assert_eq!(
            rule_of(&require_trusted(c, &root.id()).unwrap_err()),
            "revoked-key"
        );
        // Replayed: a no-op, even though its signer is now revoked.
        assert!(matches!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::AlreadyApplied { .. }
        ));
        // A new statement by the revoked key is refused.
        let other = SecretKey::generate().unwrap();
        let (body, sig) = TrustStatement::new_add(&root, &other.public(), "x")
            .unwrap()
            .sign(&root)
            .unwrap();
        assert_eq!(
            rule_of(&apply_statement(c, &body, &sig).unwrap_err()),
            "revoked-key"
        );
    }

    #[test]
    fn statement_replayed_add_is_noop() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = &s;
        let st = TrustStatement::new_add(&root, &next.public(), "n").unwrap();
        let (body, sig) = st.sign(&root).unwrap();
        apply_statement(c, &body, &sig).unwrap();
        assert!(matches!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::AlreadyApplied { .. }
        ));
        // A different statement adding an already trusted key is a no-op too.
        let mut st2 = st.clone();
        st2.issued = "2030-01-01T00:00:00Z".into();
        let (body2, sig2) = st2.sign(&root).unwrap();
        assert_eq!(
            apply_statement(c, &body2, &sig2).unwrap(),
            Applied::AlreadyTrusted {
                key_id: next.id(),
                issuer: root.id()
            }
        );
        assert_eq!(trust_list(c).unwrap().len(), 2);
    }

    #[test]
    fn statement_by_unknown_issuer_is_refused() {
        let root = SecretKey::generate().unwrap();
        let stranger = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let (body, sig) = TrustStatement::new_add(&stranger, &stranger.public(), "me")
            .unwrap()
            .sign(&stranger)
            .unwrap();
        let e = apply_statement(&s, &body, &sig).unwrap_err();
        assert_eq!(rule_of(&e), "unknown-key");
        assert!(e.to_string().contains(&stranger.id().to_string()));
        assert!(trusted_key(&s, &stranger.id()).unwrap().is_none());
    }

    #[test]
    fn tampered_statement_is_refused() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let evil = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = &s;
        let (body, sig) = TrustStatement::new_add(&root, &next.public(), "n")
            .unwrap()
            .sign(&root)
            .unwrap();
        // Swap the key in the body.
        let text = String::from_utf8(body.clone()).unwrap();
        let swapped = text
            .replace(&next.public().to_base64(), &evil.public().to_base64())
            .replace(&next.id().to_string(), &evil.id().to_string());
        assert_eq!(
            rule_of(&apply_statement(c, swapped.as_bytes(), &sig).unwrap_err()),
            "bad-signature"
        );
        // Change the label.
        let relabel = text.replace("\"n\"", "\"m\"");
        assert_eq!(
            rule_of(&apply_statement(c, relabel.as_bytes(), &sig).unwrap_err()),
            "bad-signature"
        );
        // A garbled signature.
        assert_eq!(
            rule_of(&apply_statement(c, &body, "untrusted comment: x\n").unwrap_err()),
            "malformed-signature"
        );
        // A body signed by a trusted key but with another issuer.
        let mut forged = TrustStatement::new_add(&root, &evil.public(), "e").unwrap();
        forged.issuer = next.id();
        let fbody = serde_json::to_vec(&forged).unwrap();
        let fsig = root.sign(&fbody, &forged.trusted_comment()).unwrap();
        assert_eq!(
            rule_of(&apply_statement(c, &fbody, &fsig).unwrap_err()),
            "statement-issuer-mismatch"
        );
        // A valid signature over a body with the wrong trusted comment.
        let ok = TrustStatement::new_add(&root, &evil.public(), "e").unwrap();
        let obody = serde_json::to_vec(&ok).unwrap();
        let osig = root
            .sign(&obody, "gapsync trust statement revoke X")
            .unwrap();
        assert_eq!(
            rule_of(&apply_statement(c, &obody, &osig).unwrap_err()),
            "statement-comment-mismatch"
        );
        // A signed body that is not a statement.
        let junk = br#"{"format":"other","version":1}"#;
        let jsig = root.sign(junk, "c").unwrap();
        assert_eq!(
            rule_of(&apply_statement(c, junk, &jsig).unwrap_err()),
            "statement-format"
        );
        // Nothing was applied.
        assert_eq!(trust_list(c).unwrap().len(), 1);
        assert_eq!(s.trust_rows().unwrap().applied.len(), 0);
    }

    #[test]
    fn statement_format_rules() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let base = TrustStatement::new_add(&root, &next.public(), "n").unwrap();
        let check = |st: &TrustStatement| {
            rule_statement_format("s", &serde_json::to_vec(st).unwrap()).map(|_| ())
        };
        check(&base).unwrap();
        let mut v2 = base.clone();
        v2.version = 2;
        let mut no_key = base.clone();
        no_key.key = None;
        let mut wrong_id = base.clone();
        wrong_id.key_id = root.id();
        let mut bad_time = base.clone();
        bad_time.issued = "yesterday".into();
        let mut revoke_with_key = base.clone();
        revoke_with_key.action = StatementAction::Revoke;
        for st in [v2, no_key, wrong_id, bad_time, revoke_with_key] {
            assert_eq!(
                rule_of(&check(&st).unwrap_err()),
                "statement-format",
                "{st:?}"
            );
        }
        let mut extra = serde_json::to_value(&base).unwrap();
        extra["extra"] = 1.into();
        assert_eq!(
            rule_of(&rule_statement_format("s", &serde_json::to_vec(&extra).unwrap()).unwrap_err()),
            "statement-format"
        );
        // The JSON carries the documented fields.
        let json = serde_json::to_value(&base).unwrap();
        assert_eq!(json["format"], "gapsync-trust-statement");
        assert_eq!(json["version"], 1);
        assert_eq!(json["action"], "add");
        assert_eq!(json["issuer"], root.id().to_string());
        assert_eq!(json["key_id"], next.id().to_string());
        assert_eq!(json["key"], next.public().to_base64());
        // Signing with another key than the issuer is refused.
        assert!(base.sign(&next).is_err());
    }

    #[test]
    fn revoke_of_unknown_key_is_recorded() {
        let root = SecretKey::generate().unwrap();
        let never = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = &s;
        let (body, sig) = TrustStatement::new_revoke(&root, &never.id())
            .sign(&root)
            .unwrap();
        assert!(matches!(
            apply_statement(c, &body, &sig).unwrap(),
            Applied::Revoked { known: false, .. }
        ));
        let k = trusted_key(c, &never.id()).unwrap().unwrap();
        assert!(k.revoked && k.public_key.is_none());
        assert_eq!(
            rule_of(&require_trusted(c, &never.id()).unwrap_err()),
            "revoked-key"
        );
        assert!(trust_add(c, &never.public(), "later", ADDED_BY_ADMIN).is_err());
    }

    /// A view's statements change no store until its changes are written,
    /// and they are written inside the caller's transaction: an import that
    /// fails later leaves nothing.
    #[test]
    fn apply_inside_a_callers_transaction() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, mut s) = trusted_store(&root);
        let (body, sig) = TrustStatement::new_add(&root, &next.public(), "n")
            .unwrap()
            .sign(&root)
            .unwrap();
        let mut view = TrustView::from_store(&s).unwrap();
        view.apply_statement(&body, &sig).unwrap();
        assert!(trusted_key(&s, &next.id()).unwrap().is_none());
        {
            let tx = s.begin_import().unwrap();
            tx.apply_trust_changes(view.changes()).unwrap();
            // The caller's import fails later: everything rolls back.
            drop(tx);
        }
        assert!(trusted_key(&s, &next.id()).unwrap().is_none());
        let tx = s.begin_import().unwrap();
        tx.apply_trust_changes(view.changes()).unwrap();
        tx.commit().unwrap();
        assert!(trusted_key(&s, &next.id()).unwrap().is_some());
        // Applied once: the same statement again is a no-op.
        assert!(matches!(
            apply_statement(&s, &body, &sig).unwrap(),
            Applied::AlreadyApplied { .. }
        ));
    }

    #[test]
    fn queue_and_list_statements() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, s) = store();
        let c = &s;
        let (b1, s1) = TrustStatement::new_add(&root, &next.public(), "n")
            .unwrap()
            .sign(&root)
            .unwrap();
        let (b2, s2) = TrustStatement::new_revoke(&next, &root.id())
            .sign(&next)
            .unwrap();
        let q1 = queue_statement(c, &b1, &s1).unwrap().seq;
        let q2 = queue_statement(c, &b2, &s2).unwrap().seq;
        assert!(q2 > q1);
        let after = |seq: i64| -> Vec<(i64, Vec<u8>, String)> {
            crate::store::trust::statements_after(s.conn(), seq)
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.body, r.minisig))
                .collect()
        };
        assert_eq!(
            after(0),
            vec![(q1, b1.clone(), s1.clone()), (q2, b2.clone(), s2.clone())]
        );
        assert_eq!(after(q1), vec![(q2, b2, s2)]);
        assert!(after(q2).is_empty());
        // A signature by someone else than the issuer is not queued.
        let wrong = next.sign(&b1, "gapsync trust statement add X").unwrap();
        assert!(queue_statement(c, &b1, &wrong).is_err());
        assert!(queue_statement(c, b"{}", &s1).is_err());
    }

    #[test]
    fn queue_rules_keep_the_chain_open() {
        let (_d, mut s) = store();
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let stranger = SecretKey::generate().unwrap();
        // root signed a bundle to plant: plant is known to trust root.
        let exported = |seq: u64, signer: &SecretKey| ExportRecord {
            destination: "plant",
            seq,
            bundle_id: "b",
            manifest_sha256: "m",
            full: seq == 1,
            from_anchor: None,
            to_anchor: "a",
            signer: signer.id().to_string(),
            filters: "{}",
            sent_sha1: &[],
            bytes: 0,
            expires: "2099-01-01T00:00:00Z",
        };
        s.record_export(&exported(1, &root))
            .unwrap()
            .commit()
            .unwrap();
        let c = &s;
        let queue = |issuer: &SecretKey, st: TrustStatement| {
            let (b, sig) = st.sign(issuer).unwrap();
            queue_statement(c, &b, &sig)
        };
        let add = |issuer: &SecretKey, new: &SecretKey| {
            queue(
                issuer,
                TrustStatement::new_add(issuer, &new.public(), "k").unwrap(),
            )
        };
        let revoke =
            |issuer: &SecretKey, id: &KeyId| queue(issuer, TrustStatement::new_revoke(issuer, id));
        let refused = |e: Error, needle: &str| {
            assert!(
                matches!(
                    e,
                    Error::StatementQueue { .. } | Error::NoQueuedStatement(_)
                ),
                "expected a refusal, got {e:?}"
            );
            assert!(e.to_string().contains(needle), "{e}");
        };
        // A key never revokes itself.
        assert!(revoke(&root, &root.id()).unwrap_err().is_usage());
        // An unproven key cannot revoke plant's only known key.
        refused(
            revoke(&next, &root.id()).unwrap_err(),
            "last key destination \"plant\"",
        );
        // Rotation: root introduces next, next revokes root.
        assert_eq!(
            add(&root, &next).unwrap().issuer_unproven_at,
            Vec::<String>::new()
        );
        revoke(&next, &root.id()).unwrap();
        // root signs nothing more, and cannot come back.
        refused(
            add(&root, &stranger).unwrap_err(),
            "revoked by queued trust statement 2",
        );
        refused(
            add(&next, &root).unwrap_err(),
            "revoked by queued trust statement 2",
        );
        refused(
            check_export_signer(c, &root.id()).unwrap_err(),
            "statement 2",
        );
        check_export_signer(c, &next.id()).unwrap();
        // A statement by a key plant is not known to trust is queued with a note.
        assert_eq!(
            add(&stranger, &SecretKey::generate().unwrap())
                .unwrap()
                .issuer_unproven_at,
            vec!["plant".to_string()]
        );
        assert_eq!(queued_statements(c).unwrap().len(), 3);
        // Nothing was sent: each can be cancelled, the dependent one first.
        refused(
            cancel_statement(c, 1).unwrap_err(),
            "statement 2 depends on it",
        );
        cancel_statement(c, 2).unwrap();
        cancel_statement(c, 1).unwrap();
        refused(
            cancel_statement(c, 1).unwrap_err(),
            "no queued trust statement 1",
        );
        // Sent to plant (its next bundle carries statement 3): not cancelled.
        assert!(queued_statements(&s).unwrap()[0].sent_to.is_empty());
        s.record_export(&exported(2, &next))
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(
            queued_statements(&s).unwrap()[0].sent_to,
            vec!["plant".to_string()]
        );
        let e = cancel_statement(&s, 3).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StatementQueue {
                    rule: "already-sent",
                    ..
                }
            ),
            "{e:?}"
        );
        refused(e, "already carried to \"plant\"");
    }
}
