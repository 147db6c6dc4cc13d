//! The library's error type. Every variant names what was wrong (file, entry,
//! update id, group, key) so the binary can print it as is.

use std::path::PathBuf;

use crate::model::metadata::MetadataError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The causes of `Io` and `Metadata` are part of their message and not
    // their `source()` (a field named `source` would be one, and a chain
    // printed whole, as anyhow's `{:#}` does, would say the cause twice).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("store database: {0}")]
    Db(rusqlite::Error),
    /// A database error with the operation that failed ("reading the
    /// export ledger"); see [`DbContext::during`].
    #[error("store database: {during}: {error}")]
    Database {
        during: &'static str,
        error: rusqlite::Error,
    },
    /// A row of the store that cannot be what the schema says (a damaged
    /// database); `check` examines the store.
    #[error("store database: {0}; run `gapsync check`")]
    Corrupt(String),
    #[error("{path}: not a gapsync server store ({why})")]
    NotAStore { path: PathBuf, why: String },
    #[error(
        "{path}: store schema version {found} is newer than this gapsync supports ({supported}); upgrade gapsync"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A key file given on the command line (`--key`, `--trust`, `trust
    /// add`, `trust statement --add`) that is not a key: a runtime error
    /// (exit 1), unlike a key inside a bundle, which fails verification.
    #[error("malformed key file {detail}")]
    MalformedKeyFile { detail: String },
    #[error(
        "{path}: this user may not write the store ({why}); writing commands need write access to the store folder and its files (reading commands do not)"
    )]
    NotWritable { path: PathBuf, why: String },
    #[error("{path}: already holds a gapsync server store")]
    AlreadyAStore { path: PathBuf },
    #[error("cannot listen on {addr}: {why}")]
    CannotListen { addr: String, why: String },
    #[error("{path}: the store is locked by another gapsync process (writers are exclusive)")]
    Locked { path: PathBuf },
    #[error("{name}: {error}")]
    Metadata { name: String, error: MetadataError },
    #[error(
        "{name}: update {id} revision {revision} is already stored with different XML; a revision never changes"
    )]
    RevisionConflict {
        name: String,
        id: String,
        revision: i32,
    },
    #[error("unknown update {0}")]
    UnknownUpdate(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("group {0:?} already exists")]
    GroupExists(String),
    #[error("no console password is set for the store in {}: run `gapsync console passwd` first", .0.display())]
    NoConsolePassword(std::path::PathBuf),
    #[error("unknown computer {0:?} (neither a computer id nor a computer name)")]
    UnknownComputer(String),
    #[error("{name:?} names several computers ({ids}); name one by its id")]
    AmbiguousComputer { name: String, ids: String },
    #[error(
        "unknown site {0:?} (neither a site's server id nor its name; `gapsync sites list` shows them)"
    )]
    UnknownSite(String),
    #[error("{name:?} names several sites ({ids}); name one by its server id")]
    AmbiguousSite { name: String, ids: String },
    #[error("computer {0:?} already exists")]
    ComputerExists(String),
    /// A group of a bundle or an upstream has the name of another group of
    /// this server (names are unique).
    #[error(
        "{what} ({id}) clashes with group {other_name:?} ({other}) of this server: group names are unique; nothing was applied"
    )]
    GroupClash {
        what: String,
        id: String,
        other: String,
        other_name: String,
    },
    /// An upstream server (MS-WSUSSS) failed, refused or answered what a
    /// sync cannot use; the store is unchanged by the failed step.
    #[error("upstream {url}: {detail}")]
    Upstream { url: String, detail: String },
    /// `sync --replica` into a store that is not a replica.
    #[error(
        "--replica takes groups and approvals from {url}, but this store is {mode}: create the replica with `gapsync init --mode replica`"
    )]
    NotAReplica { url: String, mode: String },
    /// The file system has less room than content about to be written needs.
    #[error(
        "not enough space in {}: {what} needs {}, {} free",
        path.display(),
        crate::model::units::human_bytes(*need),
        crate::model::units::human_bytes(*free)
    )]
    DiskFull {
        path: PathBuf,
        what: String,
        need: u64,
        free: u64,
    },
    // ---- store
    /// `init DIR` where DIR lies inside another store.
    #[error(
        "{}: inside the gapsync server store {}; a store cannot hold another one (choose a folder outside it)",
        path.display(),
        store.display()
    )]
    InsideAStore { path: PathBuf, store: PathBuf },
    /// `init DIR` where a store lies in DIR's folders.
    #[error(
        "{}: holds the gapsync server store {}; a store cannot hold another one (choose a folder that holds no store)",
        path.display(),
        store.display()
    )]
    HoldsAStore { path: PathBuf, store: PathBuf },
    /// `init DIR` where DIR is a file.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `init DIR` where DIR holds a `gapsync.db` that is not a store.
    #[error("{}: not a gapsync server store ({why}); init does not replace it", path.display())]
    ForeignDatabase { path: PathBuf, why: String },
    /// A read-only open of a store whose WAL files this user may not create.
    #[error(
        "{}: cannot read the store read-only ({why}): SQLite reads a WAL database only with {db}-wal and {db}-shm beside it, which this user may not create; run any gapsync command on the store once as a user who may write it (they are kept from then on)",
        path.display(),
        db = crate::store::DB_FILE
    )]
    NoWalFiles { path: PathBuf, why: String },
    /// A read-only open of a store of an older schema by a user who may
    /// not write it (the upgrade writes).
    #[error(
        "{}: the store has schema version {found} and this gapsync uses {}; the upgrade writes the store, which this user may not do ({why}): run any gapsync command on it once as a user who may write it",
        path.display(),
        crate::store::SCHEMA_VERSION
    )]
    UpgradeNeedsWriter {
        path: PathBuf,
        found: i64,
        why: String,
    },
    /// A local change a replica takes only from its upstream.
    #[error(
        "this server is a replica: {what} come from its upstream server, not from local administration"
    )]
    ReplicaRefuses { what: String },
    /// Approving or declining a category or detectoid.
    #[error("update {update_id} is a {kind}; only software and driver updates are {what}")]
    NotSoftware {
        update_id: String,
        kind: String,
        what: &'static str,
    },
    #[error("update {0} is declined and cannot be approved")]
    UpdateDeclined(String),
    #[error("update {update_id} is not approved for group {group:?}")]
    NotApproved { update_id: String, group: String },
    #[error("group {0:?} is built in and cannot be removed")]
    BuiltinGroup(String),
    #[error("group {name:?} has {}; remove them first", crate::model::units::count(*subgroups, "subgroup"))]
    HasSubgroups { name: String, subgroups: u64 },
    #[error("groups cannot be created under \"Unassigned Computers\"")]
    GroupUnderUnassigned,
    #[error("computers belong to a group under \"All Computers\", not to it directly")]
    ComputerInAllComputers,
    // ---- export
    /// An incremental export whose filters differ from the chain's.
    #[error(
        "the filters differ from those of the chain to {destination:?} ({chain_filters}); export with --full to start over with the new filters"
    )]
    ChainFilterMismatch {
        destination: String,
        chain_filters: String,
    },
    /// `export --since` to a destination no bundle was exported to.
    #[error(
        "no bundle was exported to {destination:?} yet: its first bundle must be a full one (export without --since)"
    )]
    NoChain { destination: String },
    /// `export --since ANCHOR` where no exported link ended at ANCHOR.
    #[error(
        "no bundle exported to {destination:?} ended at anchor {anchor}; `gapsync exports list` shows the links, `gapsync imports list` on the disconnected server the last one it applied"
    )]
    UnknownLink { destination: String, anchor: String },
    /// An incremental export with no change and no trust statement.
    #[error(
        "nothing to export to {destination:?}: no change since {since} and no trust statement queued; pass --allow-empty to write an empty bundle anyway"
    )]
    NothingToExport { destination: String, since: String },
    // ---- import
    /// A dry run of a multi-volume bundle without all its volumes.
    #[error(
        "dry run: {missing} of this {total}-volume bundle not given; give every volume (--volumes DIR1 ... DIR{total}), or add --plan-from-first-volume to plan from volume 1 alone"
    )]
    VolumesNotGiven { missing: String, total: u32 },
    // ---- keys and trust
    /// A key file `key generate` would write exists already.
    #[error("{} already exists; a key file is never overwritten", .0.display())]
    KeyFileExists(PathBuf),
    /// The folder key files are to be written into is missing or a file.
    #[error("{}: {why}", path.display())]
    NoKeyFolder { path: PathBuf, why: &'static str },
    /// `trust add` of a key this server holds as revoked.
    #[error(
        "key {key} was revoked{when}; a revoked key stays revoked until an administrator removes it (`trust remove {key}`)"
    )]
    KeyRevoked { key: String, when: String },
    /// `trust add` of a key id this server trusts with another public key.
    #[error("key id {key} is already trusted with a different public key ({label:?})")]
    KeyIdConflict { key: String, label: String },
    /// A key id that is not in the trust store (`trust remove`).
    #[error("key {0} is not in the trust store")]
    KeyNotTrusted(String),
    /// `trust statement --cancel SEQ` of no queued statement.
    #[error("there is no queued trust statement {0} (`trust statement --list` shows the queue)")]
    NoQueuedStatement(i64),
    /// A trust statement the exporter's queue refuses (`rule` names which
    /// `rule_queue_*` or cancellation rule).
    #[error("{detail}")]
    StatementQueue { rule: &'static str, detail: String },
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
    /// An option the caller passed is out of range or contradicts another
    /// (the binary exits 2 for these: a usage error).
    #[error("{what}: {why}")]
    BadArgument { what: String, why: String },
    #[error("{name}: {what} mismatch: metadata says {expected}, file has {actual}")]
    DigestMismatch {
        name: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// A named verification rule failed (signature, hash, chain, expiry...).
    #[error("verification failed [{rule}]: {detail}")]
    Verification { rule: &'static str, detail: String },
    #[error("anchor {anchor:?}: {why}")]
    BadAnchor { anchor: String, why: String },
    #[error("anchor {anchor:?} belongs to server {other}, not to this server ({this})")]
    ForeignAnchor {
        anchor: String,
        other: String,
        this: String,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    pub fn verification(rule: &'static str, detail: impl Into<String>) -> Self {
        Error::Verification {
            rule,
            detail: detail.into(),
        }
    }

    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }

    pub fn bad_argument(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::BadArgument {
            what: what.into(),
            why: why.into(),
        }
    }

    /// True when the error is a bad option given by the caller (the binary
    /// exits 2: usage).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::BadArgument { .. })
    }

    /// True when the error is a failed verification (a digest, size or
    /// signature that does not match): the binary exits 3 for these.
    pub fn is_verification(&self) -> bool {
        matches!(
            self,
            Error::DigestMismatch { .. } | Error::Verification { .. }
        )
    }
}

// Not `#[from]` (which would also make it the error's source and have
// anyhow print the message twice).
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

/// Names the operation a database error happened in: every store function
/// wraps its statements with it, so that a failure says what was being
/// done ("store database: reading the export ledger: database is locked").
pub(crate) trait DbContext<T> {
    fn during(self, operation: &'static str) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn during(self, operation: &'static str) -> Result<T> {
        self.map_err(|error| Error::Database {
            during: operation,
            error,
        })
    }
}

/// Adds the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: a database error names the operation, then the cause, once.
    #[test]
    fn database_errors_name_the_operation() {
        let e = Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
            .during("reading the export ledger")
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("store database: reading the export ledger: "),
            "{text}"
        );
        assert_eq!(
            text.matches(&rusqlite::Error::QueryReturnedNoRows.to_string())
                .count(),
            1,
            "{text}"
        );
    }

    /// Rule: named refusals carry their counts and names in words, as the
    /// messages they replace did.
    #[test]
    fn named_refusals_say_what_and_how_many() {
        let one = Error::HasSubgroups {
            name: "Pilot".into(),
            subgroups: 1,
        };
        let two = Error::HasSubgroups {
            name: "Pilot".into(),
            subgroups: 2,
        };
        assert!(
            one.to_string().contains("\"Pilot\" has 1 subgroup;"),
            "{one}"
        );
        assert!(
            two.to_string().contains("\"Pilot\" has 2 subgroups;"),
            "{two}"
        );
        let wal = Error::NoWalFiles {
            path: "srv".into(),
            why: "unable to open".into(),
        }
        .to_string();
        assert!(wal.contains("(unable to open)"), "{wal}");
        assert!(
            wal.contains(&format!("{0}-wal and {0}-shm", crate::store::DB_FILE)),
            "{wal}"
        );
        let upgrade = Error::UpgradeNeedsWriter {
            path: "srv".into(),
            found: 1,
            why: "read-only".into(),
        }
        .to_string();
        assert!(
            upgrade.contains(&format!(
                "schema version 1 and this gapsync uses {}",
                crate::store::SCHEMA_VERSION
            )),
            "{upgrade}"
        );
    }

    /// Every cause in the chain of `e`, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push(c.to_string());
            cur = c.source();
        }
        out
    }

    /// Rule: the library error says each cause once, whether it is printed
    /// alone or with its whole chain.
    #[test]
    fn each_cause_is_said_once() {
        let missing =
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let cases = [
            Error::io("missing.xml", missing),
            Error::Metadata {
                name: "bad.xml".into(),
                error: MetadataError::Xml {
                    position: 3,
                    message: "tag not closed".into(),
                },
            },
            Error::Metadata {
                name: "big.xml".into(),
                error: MetadataError::TooLarge,
            },
            Error::from(rusqlite::Error::InvalidQuery),
            Err::<(), _>(rusqlite::Error::InvalidQuery)
                .during("reading the export ledger")
                .unwrap_err(),
        ];
        for e in &cases {
            let all = chain(e).join(": ");
            let first = chain(e)[0].clone();
            assert_eq!(all, first, "a cause is repeated in the chain of {e}");
        }
    }
}
