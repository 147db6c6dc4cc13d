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
    #[error("{0}")]
    Refused(String),
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
        ];
        for e in &cases {
            let all = chain(e).join(": ");
            let first = chain(e)[0].clone();
            assert_eq!(all, first, "a cause is repeated in the chain of {e}");
        }
    }
}
