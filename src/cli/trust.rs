//! `key generate` and `trust add | list | remove | statement`: the command
//! bodies (clap parsing lives in `cli/mod.rs`). Human output is one line per
//! action; `--json` prints one JSON document.

use std::path::Path;

use super::failure::usage;
use anyhow::Result;
use serde::Serialize;

use gapsync::store::Store;
use gapsync::trust::{
    self, ADDED_BY_ADMIN, KeyId, PublicKey, SecretKey, StatementAction, TrustAdded, TrustStatement,
    TrustedKey,
};

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The label a key gets when none is given: its `.pub` file's name without
/// the extension (`hq-2026.pub` → `hq-2026`), else its key id.
fn default_label(pub_path: &Path, pk: &PublicKey) -> String {
    pub_path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| pk.id.to_string())
}

#[derive(Serialize)]
struct Generated {
    key_id: KeyId,
    secret_key: String,
    public_key: String,
    /// The minisign public key line (what `minisign -P` takes).
    public_key_base64: String,
}

/// `gapsync key generate OUT`: writes `OUT.key` (secret, mode 0600) and
/// `OUT.pub`, refusing to overwrite either.
pub fn key_generate(out: &Path, json: bool) -> Result<()> {
    let sk = SecretKey::generate()?;
    let (key_path, pub_path) = sk.write_pair(out)?;
    if json {
        print_json(&Generated {
            key_id: sk.id(),
            secret_key: key_path.display().to_string(),
            public_key: pub_path.display().to_string(),
            public_key_base64: sk.public().to_base64(),
        })?;
    } else {
        println!(
            "generated key {}: secret key {} (keep it private), public key {}",
            sk.id(),
            key_path.display(),
            pub_path.display()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct AddOutcome<'a> {
    outcome: &'a str,
    key: &'a TrustedKey,
}

/// `gapsync trust add FILE.pub [--label L]`: trusts a minisign public key
/// for bundles imported into `server`.
pub fn trust_add(server: &Path, pub_path: &Path, label: Option<&str>, json: bool) -> Result<()> {
    let pk = PublicKey::read_file(pub_path)?;
    let label = label
        .map(str::to_string)
        .unwrap_or_else(|| default_label(pub_path, &pk));
    let store = Store::open_writer(server)?;
    let added = trust::trust_add(store.conn(), &pk, &label, ADDED_BY_ADMIN)?;
    let (outcome, key) = match &added {
        TrustAdded::Added(k) => ("added", k),
        TrustAdded::AlreadyTrusted(k) => ("already_trusted", k),
    };
    if json {
        print_json(&AddOutcome { outcome, key })?;
    } else if outcome == "added" {
        println!("trusted key {} ({:?})", key.key_id, key.label);
    } else {
        println!(
            "key {} was already trusted ({:?}); nothing changed",
            key.key_id, key.label
        );
    }
    Ok(())
}

/// `gapsync trust list`: every key, revoked ones included.
pub fn trust_list(server: &Path, json: bool) -> Result<()> {
    let store = Store::open(server)?;
    let keys = trust::trust_list(store.conn())?;
    if json {
        return print_json(&keys);
    }
    for k in keys {
        let state = if k.revoked {
            format!(
                "revoked {} by {}",
                k.revoked_at.as_deref().unwrap_or("-"),
                k.revoked_by.as_deref().unwrap_or("-")
            )
        } else {
            "trusted".to_string()
        };
        println!(
            "{}  {:<30} added {} by {}; {}",
            k.key_id, k.label, k.added, k.added_by, state
        );
    }
    Ok(())
}

/// `gapsync trust remove KEYID`: deletes the key's entry (also clears a
/// revocation, so the key could be added again).
pub fn trust_remove(server: &Path, key_id: &str) -> Result<()> {
    let id: KeyId = key_id.parse()?;
    let store = Store::open_writer(server)?;
    let k = trust::trust_remove(store.conn(), &id)?;
    println!(
        "removed key {} ({:?}) from the trust store{}",
        k.key_id,
        k.label,
        if k.revoked {
            " (its revocation is forgotten)"
        } else {
            ""
        }
    );
    Ok(())
}

#[derive(Serialize)]
struct Queued<'a> {
    stmt_seq: i64,
    statement: &'a TrustStatement,
    minisig: &'a str,
}

/// `gapsync trust statement --key SIGNER.key (--add NEW.pub [--label L] |
/// --revoke KEYID)`: signs a trust statement and queues it in `server`'s
/// store; it travels in the next bundle to every destination.
pub fn trust_statement(
    server: &Path,
    signer_key: &Path,
    add: Option<&Path>,
    label: Option<&str>,
    revoke: Option<&str>,
    json: bool,
) -> Result<()> {
    let signer = SecretKey::read_file(signer_key)?;
    let statement = match (add, revoke) {
        (Some(pub_path), None) => {
            let pk = PublicKey::read_file(pub_path)?;
            let label = label
                .map(str::to_string)
                .unwrap_or_else(|| default_label(pub_path, &pk));
            TrustStatement::new_add(&signer, &pk, &label)?
        }
        (None, Some(id)) => {
            if label.is_some() {
                return Err(usage!("--label goes with --add, not with --revoke"));
            }
            TrustStatement::new_revoke(&signer, &id.parse()?)
        }
        _ => {
            return Err(usage!(
                "a trust statement either adds a key (--add FILE.pub) or revokes one (--revoke KEYID)"
            ));
        }
    };
    let (body, minisig) = statement.sign(&signer)?;
    let store = Store::open_writer(server)?;
    let seq = trust::queue_statement(store.conn(), &body, &minisig)?;
    if json {
        print_json(&Queued {
            stmt_seq: seq,
            statement: &statement,
            minisig: &minisig,
        })?;
    } else {
        let what = match statement.action {
            StatementAction::Add => format!(
                "adds key {} ({:?})",
                statement.key_id,
                statement.label.as_deref().unwrap_or_default()
            ),
            StatementAction::Revoke if statement.key_id == statement.issuer => {
                format!("revokes key {} (itself)", statement.key_id)
            }
            StatementAction::Revoke => format!("revokes key {}", statement.key_id),
        };
        println!(
            "queued trust statement {seq}: key {} {what}; it goes out in the next bundle to each destination",
            statement.issuer
        );
    }
    Ok(())
}
