//! `key generate` and `trust add | list | remove | statement`. Human
//! output is one line per action; `--json` prints one JSON document.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use super::failure::usage;
use super::{Ctx, print_json};

use gapsync::store::Store;
use gapsync::trust::{
    self, ADDED_BY_ADMIN, KeyId, PublicKey, SecretKey, StatementAction, StatementSummary,
    TrustAdded, TrustStatement, TrustedKey,
};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Write a new Ed25519 key pair: PREFIX.key (secret) and PREFIX.pub.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TrustCmd {
    /// Trust a public key (PREFIX.pub).
    Add {
        public_key: PathBuf,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key (by key id).
    Remove {
        #[arg(value_parser = key_id_arg)]
        key_id: KeyId,
    },
    /// Issue a signed statement (carried in the next bundles) that adds or
    /// revokes a key on the importing servers; list or cancel queued ones.
    #[command(group(
        clap::ArgGroup::new("what")
            .required(true)
            .args(["add", "revoke", "list", "cancel"])
    ))]
    Statement {
        /// The currently trusted key that signs the statement (with --add
        /// or --revoke).
        #[arg(
            long,
            value_name = "SIGNER.key",
            required_unless_present_any = ["list", "cancel"],
            conflicts_with_all = ["list", "cancel"]
        )]
        key: Option<PathBuf>,
        /// Public key to introduce.
        #[arg(long, value_name = "NEW.pub")]
        add: Option<PathBuf>,
        /// Label of the key introduced (default: its file name).
        #[arg(long, requires = "add")]
        label: Option<String>,
        /// Key id to revoke (not the signing key's own).
        #[arg(long, value_name = "KEYID", value_parser = key_id_arg)]
        revoke: Option<KeyId>,
        /// List the queued statements and the destinations each went to.
        #[arg(long)]
        list: bool,
        /// Cancel a queued statement that no bundle has carried yet.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
        cancel: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

/// `key ...`.
pub fn key(cmd: KeyCmd) -> Result<()> {
    let KeyCmd::Generate { out, json } = cmd;
    key_generate(&out, json)
}

/// `trust ...`.
pub fn trust(ctx: &Ctx, cmd: TrustCmd) -> Result<()> {
    let server = ctx.server()?;
    match cmd {
        TrustCmd::Add {
            public_key,
            label,
            json,
        } => trust_add(server, &public_key, label.as_deref(), json),
        TrustCmd::List { json } => trust_list(server, json),
        TrustCmd::Remove { key_id } => trust_remove(server, &key_id),
        TrustCmd::Statement {
            key,
            add,
            label,
            revoke,
            list,
            cancel,
            json,
        } => match (list, cancel, key) {
            (true, _, _) => statement_list(server, json),
            (false, Some(seq), _) => statement_cancel(server, seq, json),
            (false, None, Some(key)) => trust_statement(
                server,
                &key,
                add.as_deref(),
                label.as_deref(),
                revoke.as_ref(),
                json,
            ),
            (false, None, None) => Err(usage!("--add and --revoke need --key SIGNER.key")),
        },
    }
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
fn key_generate(out: &Path, json: bool) -> Result<()> {
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
fn trust_add(server: &Path, pub_path: &Path, label: Option<&str>, json: bool) -> Result<()> {
    let pk = PublicKey::read_file(pub_path)?;
    let label = label
        .map(str::to_string)
        .unwrap_or_else(|| default_label(pub_path, &pk));
    let store = Store::open_writer(server)?;
    let added = trust::trust_add(&store, &pk, &label, ADDED_BY_ADMIN)?;
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
fn trust_list(server: &Path, json: bool) -> Result<()> {
    let store = Store::open(server)?;
    let keys = trust::trust_list(&store)?;
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

/// clap value parser for key ids (`trust remove`, `--revoke`): a bad one
/// is a usage error naming the flag, before any work.
pub fn key_id_arg(s: &str) -> Result<KeyId, String> {
    s.parse::<KeyId>().map_err(|_| {
        format!(
            "{:?} is not a key id (1-16 hex digits, as `trust list` shows them)",
            s.chars().take(64).collect::<String>()
        )
    })
}

/// `gapsync trust remove KEYID`: deletes the key's entry (also clears a
/// revocation, so the key could be added again).
fn trust_remove(server: &Path, id: &KeyId) -> Result<()> {
    let store = Store::open_writer(server)?;
    let k = trust::trust_remove(&store, id)?;
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
struct QueuedOut<'a> {
    stmt_seq: i64,
    statement: &'a TrustStatement,
    minisig: &'a str,
    /// Destinations with no record of trusting the issuer (see `Queued`).
    issuer_unproven_at: &'a [String],
}

/// `gapsync trust statement --key SIGNER.key (--add NEW.pub [--label L] |
/// --revoke KEYID)`: signs a trust statement and queues it in `server`'s
/// store; it travels in the next bundle to every destination.
fn trust_statement(
    server: &Path,
    signer_key: &Path,
    add: Option<&Path>,
    label: Option<&str>,
    revoke: Option<&KeyId>,
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
            TrustStatement::new_revoke(&signer, id)
        }
        _ => {
            return Err(usage!(
                "a trust statement either adds a key (--add FILE.pub) or revokes one (--revoke KEYID)"
            ));
        }
    };
    let (body, minisig) = statement.sign(&signer)?;
    let store = Store::open_writer(server)?;
    let queued = trust::queue_statement(&store, &body, &minisig)?;
    if json {
        print_json(&QueuedOut {
            stmt_seq: queued.seq,
            statement: &statement,
            minisig: &minisig,
            issuer_unproven_at: &queued.issuer_unproven_at,
        })?;
    } else {
        let what = match statement.action {
            StatementAction::Add => format!(
                "adds key {} ({:?})",
                statement.key_id,
                statement.label.as_deref().unwrap_or_default()
            ),
            StatementAction::Revoke => format!("revokes key {}", statement.key_id),
        };
        println!(
            "queued trust statement {}: key {} {what}; it goes out in the next bundle to each destination",
            queued.seq, statement.issuer
        );
    }
    if !queued.issuer_unproven_at.is_empty() {
        eprintln!(
            "gapsync: note: no bundle to {} was signed by key {} and no statement introduced it there; \
             those importers apply this statement only if an administrator trusted the key (`trust add`)",
            quoted_list(&queued.issuer_unproven_at),
            statement.issuer
        );
    }
    Ok(())
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a statement reads in listings: `add KEY "label"` or `revoke KEY`,
/// and its signer.
pub fn describe(s: &StatementSummary) -> String {
    match &s.label {
        Some(l) => format!(
            "{:<6} {} {l:?} (signed by {})",
            s.action.as_str(),
            s.key_id,
            s.issuer
        ),
        None => format!(
            "{:<6} {} (signed by {})",
            s.action.as_str(),
            s.key_id,
            s.issuer
        ),
    }
}

/// `gapsync trust statement --list`: the queue, oldest first, with the
/// destinations each statement has gone to.
fn statement_list(server: &Path, json: bool) -> Result<()> {
    let store = Store::open(server)?;
    let list = trust::queued_statements(&store)?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no trust statements are queued");
    }
    for q in list {
        let sent = if q.sent_to.is_empty() {
            "not sent yet".to_string()
        } else {
            format!("sent to {}", quoted_list(&q.sent_to))
        };
        println!(
            "{:>4}  {}  created {}; {sent}",
            q.summary.seq,
            describe(&q.summary),
            q.created
        );
    }
    Ok(())
}

/// `gapsync trust statement --cancel SEQ`: removes a queued statement that
/// no bundle has carried yet.
fn statement_cancel(server: &Path, seq: i64, json: bool) -> Result<()> {
    let store = Store::open_writer(server)?;
    let q = trust::cancel_statement(&store, seq)?;
    if json {
        print_json(&q)?;
    } else {
        println!(
            "cancelled trust statement {}: {}; no bundle carried it, none will",
            q.summary.seq,
            describe(&q.summary)
        );
    }
    Ok(())
}
