//! Signing keys, minisign-compatible signatures, the trust view and trust
//! statements: `keys` (key ids, public and secret keys and their files),
//! `minisign` (signatures, prehash, trusted comments), `view` (the keys a
//! verifier or importer accepts, in memory; a store's trust tables are read
//! into it and its changes written back by `store::trust`) and `statements`
//! (the rules trust statements apply by, and the exporter's queue).
//!
//! # Formats (minisign's; tested against stock minisign 0.11)
//!
//! - **Key id**: 8 random bytes. Shown as minisign shows it: the bytes read
//!   as a little-endian `u64`, printed as 16 upper-case hex digits
//!   (`printf("%016" PRIX64, le64_load(keynum))`, current minisign; 0.11
//!   printed it without leading zeros, and both forms parse).
//! - **Public key file** (`.pub`): `untrusted comment: minisign public key
//!   <KEY ID>` then base64(`"Ed"` ‖ key id ‖ Ed25519 public key (32)).
//! - **Secret key file** (`.key`): `untrusted comment: minisign encrypted
//!   secret key` then base64(`"Ed"` ‖ kdf `"\0\0"` ‖ checksum alg `"B2"` ‖
//!   salt (32) ‖ opslimit u64le ‖ memlimit u64le ‖ key id (8) ‖ secret key (64)
//!   (seed ‖ public key) ‖ checksum (32)), the layout `minisign -G -W` writes
//!   (kdf `"\0\0"` = not encrypted). The checksum is BLAKE2b-256(`"Ed"` ‖ key
//!   id ‖ secret key); gapsync writes it, and accepts it zeroed as well
//!   because `minisign -G -W` leaves it zeroed. Password-protected keys
//!   (kdf `"Sc"`) are refused: remove the password with `minisign -C -W`.
//! - **Signature file** (`.minisig`): four lines: `untrusted comment: ...`;
//!   base64(`"ED"` ‖ key id ‖ Ed25519(BLAKE2b-512(message))); `trusted
//!   comment: <text>`; base64(Ed25519(signature ‖ text)) — the "global"
//!   signature that binds the trusted comment to the signature.
//!
//! Legacy `"Ed"` signatures (Ed25519 over the raw message) are **refused**
//! (rule `legacy-signature`): gapsync never makes them, and the algorithm
//! bytes are not covered by any signature, so accepting both forms lets a
//! prehashed signature over M pass as a legacy signature over the 64-byte
//! message BLAKE2b-512(M).
//!
//! # Trust
//!
//! A server accepts bundles signed by keys in its trust store
//! (`trusted_keys`). Keys enter it by an administrator's `trust add` or by a
//! signed trust statement carried in a bundle from an already trusted key.
//! **A revoked key stays revoked**: neither an administrator's add nor a
//! statement can trust it again until an administrator removes its entry
//! (`trust remove`). A revocation of a key this server never held is still
//! recorded (an entry without a public key), so that key can never be added
//! later by accident.
//!
//! Every check that fails is an [`Error::Verification`] naming its rule
//! (kebab-case, stable) and the file or key. The rules are written beside
//! the function that enforces each one (`rule_*`).

pub mod keys;
pub mod minisign;
pub mod statements;
pub mod view;

pub use keys::{KeyId, PublicKey, SecretKey};
pub use minisign::{Minisig, prehash, prehash_reader, verify, verify_prehashed};
pub use statements::{
    Applied, Queued, QueuedStatement, STATEMENT_FORMAT, STATEMENT_VERSION, StatementAction,
    StatementSummary, TrustStatement, cancel_statement, check_export_signer, queue_statement,
    queued_statements,
};
pub use view::{
    ADDED_BY_ADMIN, THIS_TRUST_STORE, TrustAdded, TrustView, TrustedKey, apply_statement,
    require_trusted, trust_add, trust_list, trust_remove, trusted_key,
};

#[cfg(test)]
pub(crate) mod tests_common {
    use crate::error::Error;
    use crate::store::{Mode, Store};

    pub fn rule_of(e: &Error) -> &'static str {
        match e {
            Error::Verification { rule, .. } => rule,
            other => panic!("expected a verification error, got {other:?}"),
        }
    }

    pub fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("srv"), "t", Mode::Autonomous).unwrap();
        (dir, s)
    }
}
