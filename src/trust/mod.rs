//! Signing keys, minisign-compatible signatures, the trust store and trust
//! statements.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b256, Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::error::{Error, IoContext, Result};
use crate::store::now_rfc3339;

/// `untrusted comment: ` — first line of every minisign file.
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// `trusted comment: ` — third line of a signature file.
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// Signature algorithm of keys and of legacy (raw message) signatures.
const ALG_ED: [u8; 2] = *b"Ed";
/// Signature algorithm of prehashed (BLAKE2b-512) signatures.
const ALG_PREHASHED: [u8; 2] = *b"ED";
/// Key derivation id of an unencrypted secret key (`minisign -W`).
const KDF_NONE: [u8; 2] = [0, 0];
/// Key derivation id of a password-protected secret key (scrypt).
const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// Checksum algorithm id of secret keys (BLAKE2b-256).
const CHK_BLAKE2: [u8; 2] = *b"B2";
/// minisign's COMMENTMAXBYTES: the buffer its untrusted comment line is read into.
const COMMENT_MAX: usize = 1024;
/// minisign's TRUSTEDCOMMENTMAXBYTES less `sizeof "trusted comment: "`: a
/// trusted comment must be shorter than this.
const TRUSTED_COMMENT_LIMIT: usize = 8192 - (TRUSTED_PREFIX.len() + 1);
/// No key or signature file gapsync reads is larger than this.
const MAX_KEY_OR_SIG_FILE: u64 = 16 * 1024;
/// No trust statement body is larger than this.
const MAX_STATEMENT_BYTES: usize = 64 * 1024;

const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SIGNATURE_LEN: usize = 2 + 8 + 64;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;

/// The `added_by` of keys an administrator added.
pub const ADDED_BY_ADMIN: &str = "admin";

// ---------------------------------------------------------------------------
// Key ids
// ---------------------------------------------------------------------------

/// A minisign key id: 8 bytes as stored in key and signature files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// A fresh random key id.
    pub fn random() -> Result<KeyId> {
        let mut id = [0u8; 8];
        fill_random(&mut id)?;
        Ok(KeyId(id))
    }
}

/// 16 upper-case hex digits of the little-endian `u64`, as minisign prints it.
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Parses up to 16 hex digits (either case): the padded form `Display`
/// prints (as minisign 0.12 and later do), or minisign 0.11's, which drops
/// leading zeros (`%" PRIX64`).
impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<KeyId> {
        let t = s.trim();
        if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(
                "key id",
                format!(
                    "{:?} is not a key id (16 hex digits)",
                    s.chars().take(64).collect::<String>()
                ),
            ));
        }
        let v = u64::from_str_radix(t, 16)
            .map_err(|e| Error::invalid("key id", format!("{t:?}: {e}")))?;
        Ok(KeyId(v.to_le_bytes()))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::invalid("random number generator", e.to_string()))
}

// ---------------------------------------------------------------------------
// Reading key and signature files
// ---------------------------------------------------------------------------

/// Reads a key or signature file as text, bounded in size.
fn read_small_text(path: &Path, rule: &'static str) -> Result<String> {
    let f = fs::File::open(path).at(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_OR_SIG_FILE + 1)
        .read_to_end(&mut bytes)
        .at(path)?;
    if bytes.len() as u64 > MAX_KEY_OR_SIG_FILE {
        return Err(Error::verification(
            rule,
            format!(
                "{}: larger than {MAX_KEY_OR_SIG_FILE} bytes",
                path.display()
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::verification(rule, format!("{}: not UTF-8 text", path.display())))
}

/// A key file an administrator named that does not hold a key: the
/// `malformed-key` rule's finding, as a runtime error (the rule's name is
/// for keys that arrive inside bundles and statements).
fn key_file_error(e: Error) -> Error {
    match e {
        Error::Verification {
            rule: "malformed-key",
            detail,
        } => Error::MalformedKeyFile { detail },
        other => other,
    }
}

/// The lines of a minisign file: split at `\n`, a `\r` before it dropped,
/// trailing empty lines ignored.
fn file_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

fn decode_b64(line: &str) -> Option<Vec<u8>> {
    B64.decode(line.as_bytes()).ok()
}

// ---------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------

/// A minisign public key: its key id and Ed25519 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    pub id: KeyId,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// Parses a minisign public key: the two-line `.pub` file, or its base64
    /// line alone.
    pub fn parse(text: &str) -> Result<PublicKey> {
        Self::parse_named("public key", text)
    }

    /// [`PublicKey::parse`], naming the source (file, statement) in errors.
    pub fn parse_named(name: &str, text: &str) -> Result<PublicKey> {
        let line = rule_public_key_lines(name, text)?;
        let (id, bytes) = rule_public_key_encoding(name, line)?;
        let key = rule_public_key_point(name, &id, &bytes)?;
        Ok(PublicKey { id, key })
    }

    /// Reads a `.pub` file given by an administrator. A file that is not a
    /// public key is [`Error::MalformedKeyFile`] (a runtime error), not a
    /// failed verification.
    pub fn read_file(path: &Path) -> Result<PublicKey> {
        read_small_text(path, "malformed-key")
            .and_then(|text| Self::parse_named(&path.display().to_string(), &text))
            .map_err(key_file_error)
    }

    /// The base64 line: `"Ed"` ‖ key id ‖ public key.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_KEY_LEN);
        raw.extend_from_slice(&ALG_ED);
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The `.pub` file text, as `minisign -G` writes it.
    pub fn to_file_string(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.id,
            self.to_base64()
        )
    }
}

/// Rule: a public key is one base64 line, alone or after one
/// `untrusted comment: ` line (the comment is not trusted and not read).
fn rule_public_key_lines<'a>(name: &str, text: &'a str) -> Result<&'a str> {
    match file_lines(text).as_slice() {
        [key] => Ok(key),
        [comment, key] if comment.starts_with(UNTRUSTED_PREFIX) => Ok(key),
        [_, _] => Err(Error::verification(
            "malformed-key",
            format!("{name}: the first line does not start with {UNTRUSTED_PREFIX:?}"),
        )),
        _ => Err(Error::verification(
            "malformed-key",
            format!("{name}: a minisign public key is an untrusted comment line and a base64 line"),
        )),
    }
}

/// Rule: the base64 line decodes to 42 bytes: `"Ed"`, the 8-byte key id and
/// the 32-byte Ed25519 key.
fn rule_public_key_encoding(name: &str, line: &str) -> Result<(KeyId, [u8; 32])> {
    let raw = decode_b64(line).ok_or_else(|| {
        Error::verification(
            "malformed-key",
            format!("{name}: the key line is not base64"),
        )
    })?;
    if raw.len() != PUBLIC_KEY_LEN {
        return Err(Error::verification(
            "malformed-key",
            format!(
                "{name}: the key is {} bytes, a minisign public key is {PUBLIC_KEY_LEN}",
                raw.len()
            ),
        ));
    }
    let (alg, rest) = raw.split_at(2);
    let (id, key) = rest.split_at(8);
    if alg != ALG_ED {
        return Err(Error::verification(
            "malformed-key",
            format!("{name}: unsupported key algorithm {:?}", hex::encode(alg)),
        ));
    }
    let id = KeyId(id.try_into().map_err(|_| malformed_len(name))?);
    let key: [u8; 32] = key.try_into().map_err(|_| malformed_len(name))?;
    Ok((id, key))
}

fn malformed_len(name: &str) -> Error {
    Error::verification("malformed-key", format!("{name}: wrong field length"))
}

/// Rule: the 32 bytes are a valid Ed25519 point of large order (a small-order
/// "weak" key would verify signatures it never made).
fn rule_public_key_point(name: &str, id: &KeyId, bytes: &[u8; 32]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| {
        Error::verification(
            "malformed-key",
            format!("{name}: key {id} is not a valid Ed25519 public key"),
        )
    })?;
    if key.is_weak() {
        return Err(Error::verification(
            "malformed-key",
            format!("{name}: key {id} is a weak (small-order) Ed25519 key"),
        ));
    }
    Ok(key)
}

// ---------------------------------------------------------------------------
// Secret keys
// ---------------------------------------------------------------------------

/// A minisign secret key (unencrypted). Its `Debug` never shows the secret.
pub struct SecretKey {
    id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh key pair with a random key id (OS random source).
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        fill_random(&mut seed)?;
        let signing = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey {
            id: KeyId::random()?,
            signing,
        })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.signing.verifying_key(),
        }
    }

    /// Writes `PREFIX.key` (mode 0600 on unix, from its creation) and
    /// `PREFIX.pub`. Each is written to a temporary file in the same folder,
    /// fsynced and moved into place without replacing anything: an existing
    /// `PREFIX.key` or `PREFIX.pub` is refused.
    pub fn write_pair(&self, prefix: &Path) -> Result<(PathBuf, PathBuf)> {
        let key_path = with_suffix(prefix, ".key");
        let pub_path = with_suffix(prefix, ".pub");
        for p in [&key_path, &pub_path] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(Error::Refused(format!(
                    "{} already exists; a key file is never overwritten",
                    p.display()
                )));
            }
        }
        write_new_file(&key_path, self.to_file_string().as_bytes(), true)?;
        if let Err(e) = write_new_file(&pub_path, self.public().to_file_string().as_bytes(), false)
        {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        Ok((key_path, pub_path))
    }

    /// The `.key` file text in minisign's unencrypted layout.
    fn to_file_string(&self) -> String {
        let sk = self.signing.to_keypair_bytes();
        let mut raw = Vec::with_capacity(SECRET_KEY_LEN);
        raw.extend_from_slice(&ALG_ED);
        raw.extend_from_slice(&KDF_NONE);
        raw.extend_from_slice(&CHK_BLAKE2);
        raw.extend_from_slice(&[0u8; 32]); // kdf salt
        raw.extend_from_slice(&0u64.to_le_bytes()); // kdf opslimit
        raw.extend_from_slice(&0u64.to_le_bytes()); // kdf memlimit
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(&sk);
        raw.extend_from_slice(&secret_key_checksum(&self.id, &sk));
        let text = format!(
            "{UNTRUSTED_PREFIX}minisign encrypted secret key\n{}\n",
            B64.encode(&raw)
        );
        raw.fill(0);
        text
    }

    /// Reads a `.key` file written by gapsync or by `minisign -G -W`. A
    /// file that is not a secret key is [`Error::MalformedKeyFile`].
    pub fn read_file(path: &Path) -> Result<SecretKey> {
        read_small_text(path, "malformed-key")
            .and_then(|text| Self::parse_named(&path.display().to_string(), &text))
            .map_err(key_file_error)
    }

    /// Parses the text of an unencrypted minisign secret key file.
    pub fn parse_named(name: &str, text: &str) -> Result<SecretKey> {
        let line = rule_secret_key_lines(name, text)?;
        let mut raw = decode_b64(line)
            .filter(|r| r.len() == SECRET_KEY_LEN)
            .ok_or_else(|| {
                Error::verification(
                    "malformed-key",
                    format!("{name}: not a minisign secret key ({SECRET_KEY_LEN} bytes in base64)"),
                )
            })?;
        let parsed = parse_secret_key_bytes(name, &raw);
        raw.fill(0);
        parsed
    }

    /// Signs `message`: returns the whole `.minisig` text (prehashed
    /// `"ED"`), with `trusted_comment` signed by the global signature.
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Result<String> {
        self.sign_prehashed(&prehash(message), trusted_comment)
    }

    /// [`SecretKey::sign`] for a message already hashed with [`prehash`] or
    /// [`prehash_reader`] (large files).
    pub fn sign_prehashed(&self, digest: &[u8; 64], trusted_comment: &str) -> Result<String> {
        check_trusted_comment_to_sign(trusted_comment)?;
        let sig = self.signing.sign(digest);
        let mut global_msg = Vec::with_capacity(64 + trusted_comment.len());
        global_msg.extend_from_slice(&sig.to_bytes());
        global_msg.extend_from_slice(trusted_comment.as_bytes());
        let global = self.signing.sign(&global_msg);
        let mut sig_struct = Vec::with_capacity(SIGNATURE_LEN);
        sig_struct.extend_from_slice(&ALG_PREHASHED);
        sig_struct.extend_from_slice(&self.id.0);
        sig_struct.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{UNTRUSTED_PREFIX}signature from gapsync secret key {}\n{}\n{TRUSTED_PREFIX}{trusted_comment}\n{}\n",
            self.id,
            B64.encode(&sig_struct),
            B64.encode(global.to_bytes())
        ))
    }
}

/// A trusted comment must be one line (no CR or LF: minisign cuts the line
/// there) and shorter than minisign's limit.
fn check_trusted_comment_to_sign(c: &str) -> Result<()> {
    if c.contains(['\n', '\r']) {
        return Err(Error::invalid(
            "trusted comment",
            "must be a single line (no line breaks)",
        ));
    }
    if c.len() >= TRUSTED_COMMENT_LIMIT {
        return Err(Error::invalid(
            "trusted comment",
            format!("must be shorter than {TRUSTED_COMMENT_LIMIT} bytes"),
        ));
    }
    Ok(())
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn secret_key_checksum(id: &KeyId, sk: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(ALG_ED);
    h.update(id.0);
    h.update(sk);
    h.finalize().into()
}

/// Rule: a secret key file is one `untrusted comment: ` line and one base64 line.
fn rule_secret_key_lines<'a>(name: &str, text: &'a str) -> Result<&'a str> {
    match file_lines(text).as_slice() {
        [comment, key] if comment.starts_with(UNTRUSTED_PREFIX) => Ok(key),
        _ => Err(Error::verification(
            "malformed-key",
            format!("{name}: a minisign secret key is an untrusted comment line and a base64 line"),
        )),
    }
}

fn parse_secret_key_bytes(name: &str, raw: &[u8]) -> Result<SecretKey> {
    let field = |from: usize, len: usize| raw.get(from..from + len).unwrap_or_default();
    let alg = field(0, 2);
    let kdf = field(2, 2);
    let chk_alg = field(4, 2);
    let id = field(54, 8);
    let sk = field(62, 64);
    let chk = field(126, 32);
    rule_secret_key_algorithms(name, alg, kdf, chk_alg)?;
    let id = KeyId(id.try_into().map_err(|_| malformed_len(name))?);
    let mut sk: [u8; 64] = sk.try_into().map_err(|_| malformed_len(name))?;
    let checked = rule_secret_key_checksum(name, &id, &sk, chk);
    let signing = checked.and_then(|()| rule_secret_key_pair(name, &id, &sk));
    sk.fill(0);
    Ok(SecretKey {
        id,
        signing: signing?,
    })
}

/// Rule: a secret key is an Ed25519 key (`"Ed"`), not encrypted (kdf
/// `"\0\0"`; gapsync does not read password-protected keys), with a
/// BLAKE2b checksum (`"B2"`).
fn rule_secret_key_algorithms(name: &str, alg: &[u8], kdf: &[u8], chk_alg: &[u8]) -> Result<()> {
    if alg != ALG_ED || chk_alg != CHK_BLAKE2 {
        return Err(Error::verification(
            "malformed-key",
            format!("{name}: unsupported secret key algorithm"),
        ));
    }
    if kdf == KDF_SCRYPT {
        return Err(Error::invalid(
            "secret key",
            format!(
                "{name} is password-protected; gapsync reads unencrypted keys only \
                 (remove the password with `minisign -C -W -s {name}`)"
            ),
        ));
    }
    if kdf != KDF_NONE {
        return Err(Error::verification(
            "malformed-key",
            format!("{name}: unsupported key derivation {:?}", hex::encode(kdf)),
        ));
    }
    Ok(())
}

/// Rule: the checksum is BLAKE2b-256("Ed" ‖ key id ‖ secret key), or all
/// zeros (minisign -G -W does not fill it in for an unencrypted key).
fn rule_secret_key_checksum(name: &str, id: &KeyId, sk: &[u8; 64], chk: &[u8]) -> Result<()> {
    if chk.iter().all(|&b| b == 0) || chk == secret_key_checksum(id, sk) {
        Ok(())
    } else {
        Err(Error::verification(
            "malformed-key",
            format!("{name}: secret key {id} fails its checksum (damaged file?)"),
        ))
    }
}

/// Rule: the public half of the 64-byte secret key is the one its seed derives.
fn rule_secret_key_pair(name: &str, id: &KeyId, sk: &[u8; 64]) -> Result<SigningKey> {
    SigningKey::from_keypair_bytes(sk).map_err(|_| {
        Error::verification(
            "malformed-key",
            format!("{name}: secret key {id}: its public half does not match its seed"),
        )
    })
}

/// Writes a new file atomically without replacing an existing one: a temp
/// file in the same folder (mode 0600 from creation when `private`), fsync,
/// hard link to the final name (fails if it exists), remove the temp, fsync
/// the folder. Where hard links are unsupported, falls back to a rename after
/// an existence check.
fn write_new_file(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("key file name", format!("{}", path.display())))?;
    let mut nonce = [0u8; 8];
    fill_random(&mut nonce)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", hex::encode(nonce)));
    let tmp = dir.join(tmp_name);

    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    // Errors name the folder or the key file, never the temporary name.
    rule_key_folder_exists(&dir)?;
    let result = (|| {
        let mut f = opts.open(&tmp).at(&dir)?;
        f.write_all(contents).at(path)?;
        f.sync_all().at(path)?;
        drop(f);
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Refused(format!(
                    "{} already exists; a key file is never overwritten",
                    path.display()
                )))
            }
            Err(_) if fs::symlink_metadata(path).is_err() => fs::rename(&tmp, path).at(path),
            Err(e) => Err(Error::io(path, e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rule: key files are written into an existing folder (gapsync does not
/// create folders for secret keys); a missing one is named.
fn rule_key_folder_exists(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Refused(format!(
            "{}: not a folder; key files are written into an existing folder",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Refused(format!(
            "{}: no such folder; create it first (key files are written into an existing folder)",
            dir.display()
        ))),
        Err(e) => Err(Error::io(dir, e)),
    }
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// BLAKE2b-512 of a message: what a prehashed (`"ED"`) signature signs.
pub fn prehash(message: &[u8]) -> [u8; 64] {
    Blake2b512::digest(message).into()
}

/// [`prehash`] of everything `r` yields (streamed, for large files).
pub fn prehash_reader<R: Read>(mut r: R) -> std::io::Result<[u8; 64]> {
    let mut h = Blake2b512::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "reader overran its buffer")
        })?;
        h.update(chunk);
    }
    Ok(h.finalize().into())
}

/// A parsed minisign signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minisig {
    name: String,
    untrusted_comment: String,
    key_id: KeyId,
    signature: [u8; 64],
    trusted_comment: String,
    global_signature: [u8; 64],
}

impl Minisig {
    /// Parses the text of a `.minisig` file.
    pub fn parse(text: &str) -> Result<Minisig> {
        Self::parse_named("signature", text)
    }

    /// [`Minisig::parse`], naming the source in errors.
    pub fn parse_named(name: &str, text: &str) -> Result<Minisig> {
        let [l1, l2, l3, l4] = rule_signature_lines(name, text)?;
        let untrusted_comment = rule_untrusted_comment_line(name, l1)?;
        let (alg, key_id, signature) = rule_signature_line(name, l2)?;
        rule_prehashed_algorithm(name, &key_id, alg)?;
        let trusted_comment = rule_trusted_comment_line(name, l3)?;
        let global_signature = rule_global_signature_line(name, l4)?;
        Ok(Minisig {
            name: name.to_string(),
            untrusted_comment: untrusted_comment.to_string(),
            key_id,
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature,
        })
    }

    /// Reads a `.minisig` file.
    pub fn read_file(path: &Path) -> Result<Minisig> {
        let text = read_small_text(path, "malformed-signature")?;
        Self::parse_named(&path.display().to_string(), &text)
    }

    /// The id of the key that made the signature (not yet verified).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The trusted comment. Trust it only after [`verify`] succeeded.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// The untrusted comment (not covered by any signature).
    pub fn untrusted_comment(&self) -> &str {
        &self.untrusted_comment
    }

    /// The name errors use for this signature (its file, or "signature").
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Checks `sig` over `message` with `pk`: the key ids match, the prehashed
/// signature verifies, and the global signature over the trusted comment
/// verifies. Only then is [`Minisig::trusted_comment`] trustworthy.
pub fn verify(pk: &PublicKey, message: &[u8], sig: &Minisig) -> Result<()> {
    verify_prehashed(pk, &prehash(message), sig)
}

/// [`verify`] for a message hashed with [`prehash`] / [`prehash_reader`].
pub fn verify_prehashed(pk: &PublicKey, digest: &[u8; 64], sig: &Minisig) -> Result<()> {
    rule_signer_is_key(pk, sig)?;
    rule_signature_valid(pk, digest, sig)?;
    rule_trusted_comment_one_line(sig)?;
    rule_comment_signature_valid(pk, sig)?;
    Ok(())
}

/// Rule: a signature file is exactly four lines (trailing empty lines
/// aside; CRLF accepted): untrusted comment, signature, trusted comment,
/// global signature.
fn rule_signature_lines<'a>(name: &str, text: &'a str) -> Result<[&'a str; 4]> {
    let lines = file_lines(text);
    <[&str; 4]>::try_from(lines.as_slice()).map_err(|_| {
        Error::verification(
            "malformed-signature",
            format!(
                "{name}: a minisign signature is 4 lines, this has {}",
                lines.len()
            ),
        )
    })
}

/// Rule: line 1 starts with `untrusted comment: ` and fits minisign's
/// comment buffer.
fn rule_untrusted_comment_line<'a>(name: &str, line: &'a str) -> Result<&'a str> {
    let c = line.strip_prefix(UNTRUSTED_PREFIX).ok_or_else(|| {
        Error::verification(
            "malformed-signature",
            format!("{name}: line 1 does not start with {UNTRUSTED_PREFIX:?}"),
        )
    })?;
    if line.len() >= COMMENT_MAX - 1 {
        return Err(Error::verification(
            "malformed-signature",
            format!("{name}: the untrusted comment is longer than minisign reads"),
        ));
    }
    Ok(c)
}

/// Rule: line 2 is base64 of 74 bytes: algorithm (2), key id (8), Ed25519
/// signature (64).
fn rule_signature_line(name: &str, line: &str) -> Result<([u8; 2], KeyId, [u8; 64])> {
    let bad = || {
        Error::verification(
            "malformed-signature",
            format!("{name}: line 2 is not a base64 minisign signature ({SIGNATURE_LEN} bytes)"),
        )
    };
    let raw = decode_b64(line)
        .filter(|r| r.len() == SIGNATURE_LEN)
        .ok_or_else(bad)?;
    let alg: [u8; 2] = raw
        .get(0..2)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let id: [u8; 8] = raw
        .get(2..10)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let sig: [u8; 64] = raw
        .get(10..74)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    Ok((alg, KeyId(id), sig))
}

/// Rule: the signature is prehashed (`"ED"`, Ed25519 over BLAKE2b-512 of the
/// message). Legacy `"Ed"` signatures are refused (see the module docs).
fn rule_prehashed_algorithm(name: &str, key_id: &KeyId, alg: [u8; 2]) -> Result<()> {
    if alg == ALG_PREHASHED {
        Ok(())
    } else if alg == ALG_ED {
        Err(Error::verification(
            "legacy-signature",
            format!(
                "{name}: legacy (not prehashed) signature by key {key_id}; gapsync accepts prehashed signatures only (re-sign without `minisign -l`)"
            ),
        ))
    } else {
        Err(Error::verification(
            "malformed-signature",
            format!(
                "{name}: unsupported signature algorithm {:?}",
                hex::encode(alg)
            ),
        ))
    }
}

/// Rule: line 3 is `trusted comment: <text>`, the text one line (no CR),
/// shorter than minisign's limit.
fn rule_trusted_comment_line<'a>(name: &str, line: &'a str) -> Result<&'a str> {
    let c = line.strip_prefix(TRUSTED_PREFIX).ok_or_else(|| {
        Error::verification(
            "malformed-signature",
            format!("{name}: line 3 does not start with {TRUSTED_PREFIX:?}"),
        )
    })?;
    if c.contains(['\r', '\n']) {
        return Err(Error::verification(
            "malformed-signature",
            format!("{name}: the trusted comment holds a line break"),
        ));
    }
    if c.len() >= TRUSTED_COMMENT_LIMIT {
        return Err(Error::verification(
            "malformed-signature",
            format!("{name}: the trusted comment is longer than minisign allows"),
        ));
    }
    Ok(c)
}

/// Rule: line 4 is base64 of the 64-byte global signature.
fn rule_global_signature_line(name: &str, line: &str) -> Result<[u8; 64]> {
    decode_b64(line)
        .and_then(|r| <[u8; 64]>::try_from(r.as_slice()).ok())
        .ok_or_else(|| {
            Error::verification(
                "malformed-signature",
                format!("{name}: line 4 is not a base64 Ed25519 signature (64 bytes)"),
            )
        })
}

/// Rule: the key id in the signature is the id of the key it is checked with.
fn rule_signer_is_key(pk: &PublicKey, sig: &Minisig) -> Result<()> {
    if sig.key_id == pk.id {
        Ok(())
    } else {
        Err(Error::verification(
            "key-id-mismatch",
            format!(
                "{}: signed by key {}, expected key {}",
                sig.name, sig.key_id, pk.id
            ),
        ))
    }
}

/// Rule: the signature is a valid (strict: canonical, no small-order
/// components) Ed25519 signature by the key over BLAKE2b-512(message).
fn rule_signature_valid(pk: &PublicKey, digest: &[u8; 64], sig: &Minisig) -> Result<()> {
    pk.key
        .verify_strict(digest, &Signature::from_bytes(&sig.signature))
        .map_err(|_| {
            Error::verification(
                "bad-signature",
                format!(
                    "{}: the signature by key {} does not match the signed data",
                    sig.name, pk.id
                ),
            )
        })
}

/// Rule: the trusted comment is a single line (it is signed as the bytes
/// minisign reads, which stop at the first line break).
fn rule_trusted_comment_one_line(sig: &Minisig) -> Result<()> {
    if sig.trusted_comment.contains(['\r', '\n']) {
        return Err(Error::verification(
            "malformed-signature",
            format!("{}: the trusted comment holds a line break", sig.name),
        ));
    }
    Ok(())
}

/// Rule: the global signature is a valid Ed25519 signature by the key over
/// signature ‖ trusted comment, so the trusted comment is the signer's.
fn rule_comment_signature_valid(pk: &PublicKey, sig: &Minisig) -> Result<()> {
    let mut msg = Vec::with_capacity(64 + sig.trusted_comment.len());
    msg.extend_from_slice(&sig.signature);
    msg.extend_from_slice(sig.trusted_comment.as_bytes());
    pk.key
        .verify_strict(&msg, &Signature::from_bytes(&sig.global_signature))
        .map_err(|_| {
            Error::verification(
                "bad-comment-signature",
                format!(
                    "{}: the trusted comment {:?} was not signed by key {}",
                    sig.name,
                    sig.trusted_comment.chars().take(200).collect::<String>(),
                    pk.id
                ),
            )
        })
}

// ---------------------------------------------------------------------------
// The trust store
// ---------------------------------------------------------------------------

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

/// What [`trust_add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAdded {
    Added(TrustedKey),
    /// The same key was already trusted; nothing changed.
    AlreadyTrusted(TrustedKey),
}

const KEY_COLUMNS: &str =
    "key_id, public_key, label, added, added_by, revoked, revoked_at, revoked_by";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Vec<u8>, TrustedKey)> {
    let id_text: String = r.get(0)?;
    let blob: Vec<u8> = r.get(1)?;
    Ok((
        id_text,
        blob,
        TrustedKey {
            key_id: KeyId([0; 8]),
            label: r.get(2)?,
            added: r.get(3)?,
            added_by: r.get(4)?,
            revoked: r.get::<_, i64>(5)? != 0,
            revoked_at: r.get(6)?,
            revoked_by: r.get(7)?,
            public_key: None,
            key: None,
        },
    ))
}

/// Completes a row: parses its id and key (a damaged row is an error naming it).
fn finish_key((id_text, blob, mut k): (String, Vec<u8>, TrustedKey)) -> Result<TrustedKey> {
    let id: KeyId = id_text.parse().map_err(|_| {
        Error::verification(
            "malformed-key",
            format!("trust store entry {id_text:?}: not a key id"),
        )
    })?;
    k.key_id = id;
    if !blob.is_empty() {
        let name = format!("trust store entry {id}");
        let bytes: [u8; 32] = blob.as_slice().try_into().map_err(|_| {
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

/// Every key in the trust store (revoked ones included), by key id.
pub fn trust_list(conn: &Connection) -> Result<Vec<TrustedKey>> {
    let mut st = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM trusted_keys ORDER BY key_id"
    ))?;
    let rows = st.query_map([], key_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(finish_key(row?)?);
    }
    Ok(out)
}

/// The trust store's entry for `id`, if any.
pub fn trusted_key(conn: &Connection, id: &KeyId) -> Result<Option<TrustedKey>> {
    let row = conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM trusted_keys WHERE key_id = ?1"),
            [id.to_string()],
            key_from_row,
        )
        .optional()?;
    row.map(finish_key).transpose()
}

/// Adds `pk` to the trust store. An already trusted identical key is a
/// no-op ([`TrustAdded::AlreadyTrusted`]). Refused: a revoked key (it stays
/// revoked until an administrator removes its entry), and a key id already
/// held with another public key.
pub fn trust_add(
    conn: &Connection,
    pk: &PublicKey,
    label: &str,
    added_by: &str,
) -> Result<TrustAdded> {
    let label = check_label(label)?;
    if let Some(existing) = trusted_key(conn, &pk.id)? {
        if existing.revoked {
            return Err(Error::Refused(format!(
                "key {} was revoked{}; a revoked key stays revoked until an administrator removes it (`trust remove {}`)",
                pk.id,
                revoked_suffix(&existing),
                pk.id
            )));
        }
        if existing.key.as_ref() != Some(pk) {
            return Err(Error::Refused(format!(
                "key id {} is already trusted with a different public key ({:?})",
                pk.id, existing.label
            )));
        }
        return Ok(TrustAdded::AlreadyTrusted(existing));
    }
    let now = now_rfc3339();
    conn.execute(
        "INSERT INTO trusted_keys (key_id, public_key, label, added, added_by, revoked) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0)",
        params![
            pk.id.to_string(),
            pk.key.as_bytes().as_slice(),
            label,
            now,
            added_by
        ],
    )?;
    let added = trusted_key(conn, &pk.id)?
        .ok_or_else(|| Error::Refused(format!("key {} vanished while being added", pk.id)))?;
    Ok(TrustAdded::Added(added))
}

/// Removes `id`'s entry (an administrator's act; it also clears a
/// revocation, after which the key may be added again).
pub fn trust_remove(conn: &Connection, id: &KeyId) -> Result<TrustedKey> {
    let existing = trusted_key(conn, id)?
        .ok_or_else(|| Error::Refused(format!("key {id} is not in the trust store")))?;
    conn.execute(
        "DELETE FROM trusted_keys WHERE key_id = ?1",
        [id.to_string()],
    )?;
    Ok(existing)
}

/// Where [`require_trusted`] looks, as its `unknown-key` message says it.
pub const THIS_TRUST_STORE: &str = "in this server's trust store";

/// The import-time rule: the key that signed must be in the trust store
/// (`unknown-key`) and not revoked (`revoked-key`). Returns its public key.
pub fn require_trusted(conn: &Connection, id: &KeyId) -> Result<PublicKey> {
    require_trusted_in(conn, id, THIS_TRUST_STORE)
}

/// [`require_trusted`], saying where the keys came from in its
/// `unknown-key` message: `place` completes "key K is not ..." (e.g. "among
/// the keys given with --trust (K1, K2)").
pub fn require_trusted_in(conn: &Connection, id: &KeyId, place: &str) -> Result<PublicKey> {
    let k = trusted_key(conn, id)?
        .ok_or_else(|| Error::verification("unknown-key", format!("key {id} is not {place}")))?;
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

fn revoked_suffix(k: &TrustedKey) -> String {
    match (&k.revoked_at, &k.revoked_by) {
        (Some(at), Some(by)) => format!(" at {at} by {by}"),
        (Some(at), None) => format!(" at {at}"),
        (None, Some(by)) => format!(" by {by}"),
        (None, None) => String::new(),
    }
}

/// Labels are 1-256 printable characters (trimmed).
fn check_label(label: &str) -> Result<&str> {
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

// ---------------------------------------------------------------------------
// Trust statements
// ---------------------------------------------------------------------------

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

/// Applies a signed trust statement, all or nothing (inside a savepoint, so
/// it also runs inside a caller's transaction). The rules, in order:
/// 1. a body already applied (by SHA-256) is a no-op (`rule_statement_not_replayed`);
/// 2. the signature file is well-formed ([`Minisig::parse`]);
/// 3. its key is trusted and not revoked ([`require_trusted`]);
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
pub fn apply_statement(conn: &Connection, body: &[u8], minisig: &str) -> Result<Applied> {
    apply_statement_in(conn, body, minisig, THIS_TRUST_STORE)
}

/// [`apply_statement`], naming where the trusted keys came from (see
/// [`require_trusted_in`]).
pub fn apply_statement_in(
    conn: &Connection,
    body: &[u8],
    minisig: &str,
    place: &str,
) -> Result<Applied> {
    let digest: [u8; 32] = Sha256::digest(body).into();
    let name = format!("trust statement sha256:{}", hex::encode(&digest[..8]));
    if let Some(applied) = rule_statement_not_replayed(conn, &digest)? {
        return Ok(applied);
    }
    let sig = Minisig::parse_named(&format!("{name} (signature)"), minisig)?;
    let issuer_pk = require_trusted_in(conn, &sig.key_id(), place)?;
    verify(&issuer_pk, body, &sig)?;
    let st = rule_statement_format(&name, body)?;
    rule_statement_issuer_is_signer(&name, &st, &sig)?;
    rule_statement_comment(&name, &st, &sig)?;
    with_savepoint(conn, || {
        let outcome = match st.action {
            StatementAction::Add => apply_add(conn, &name, &st)?,
            StatementAction::Revoke => apply_revoke(conn, &st)?,
        };
        conn.execute(
            "INSERT INTO applied_statements (body_sha256, applied) VALUES (?1, ?2)",
            params![digest.as_slice(), now_rfc3339()],
        )?;
        Ok(outcome)
    })
}

/// Rule: each statement applies once: one whose body SHA-256 is in
/// `applied_statements` is a no-op.
fn rule_statement_not_replayed(conn: &Connection, digest: &[u8; 32]) -> Result<Option<Applied>> {
    let seen: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM applied_statements WHERE body_sha256 = ?1",
            [digest.as_slice()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seen.map(|_| Applied::AlreadyApplied {
        body_sha256: hex::encode(digest),
    }))
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

fn apply_add(conn: &Connection, name: &str, st: &TrustStatement) -> Result<Applied> {
    let (Some(key), Some(label)) = (&st.key, &st.label) else {
        return Err(Error::verification(
            "statement-format",
            format!("{name}: an add statement needs \"key\" and \"label\""),
        ));
    };
    let pk = PublicKey::parse_named(&format!("{name}: key"), key)?;
    if let Some(existing) = trusted_key(conn, &pk.id)? {
        rule_add_not_revoked(name, &existing)?;
        rule_add_same_key(name, &existing, &pk)?;
    }
    match trust_add(conn, &pk, label, &st.issuer.to_string())? {
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

fn apply_revoke(conn: &Connection, st: &TrustStatement) -> Result<Applied> {
    let now = now_rfc3339();
    let issuer = st.issuer.to_string();
    match trusted_key(conn, &st.key_id)? {
        Some(k) if k.revoked => Ok(Applied::AlreadyRevoked {
            key_id: st.key_id,
            issuer: st.issuer,
        }),
        Some(_) => {
            conn.execute(
                "UPDATE trusted_keys SET revoked = 1, revoked_at = ?2, revoked_by = ?3 WHERE key_id = ?1",
                params![st.key_id.to_string(), now, issuer],
            )?;
            Ok(Applied::Revoked {
                key_id: st.key_id,
                issuer: st.issuer,
                known: true,
            })
        }
        None => {
            conn.execute(
                "INSERT INTO trusted_keys (key_id, public_key, label, added, added_by, revoked, revoked_at, revoked_by) \
                 VALUES (?1, X'', ?2, ?3, ?4, 1, ?3, ?4)",
                params![
                    st.key_id.to_string(),
                    format!("revoked by {issuer} (key never held)"),
                    now,
                    issuer
                ],
            )?;
            Ok(Applied::Revoked {
                key_id: st.key_id,
                issuer: st.issuer,
                known: false,
            })
        }
    }
}

/// Runs `f` inside a SQLite savepoint: released on success, rolled back on
/// error. Works inside or outside a caller's transaction.
fn with_savepoint<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT gapsync_trust")?;
    match f() {
        Ok(v) => {
            conn.execute_batch("RELEASE gapsync_trust")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO gapsync_trust; RELEASE gapsync_trust");
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// The exporter's queue of statements
// ---------------------------------------------------------------------------

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
pub fn queued_statements(conn: &Connection) -> Result<Vec<QueuedStatement>> {
    let sent: Vec<(String, i64)> = {
        let mut st = conn
            .prepare("SELECT destination, last_stmt_seq FROM export_ledger ORDER BY destination")?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut st =
        conn.prepare("SELECT stmt_seq, body, created FROM trust_statements ORDER BY stmt_seq")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, body, created) = row?;
        out.push(QueuedStatement {
            summary: StatementSummary::from_body(seq, &body)?,
            created,
            sent_to: sent
                .iter()
                .filter(|(_, last)| *last >= seq)
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
    fn from_history(conn: &Connection) -> Result<ChainKnowledge> {
        let mut known: BTreeMap<String, BTreeSet<KeyId>> = BTreeMap::new();
        let mut st = conn.prepare(
            "SELECT DISTINCT destination, signer FROM export_history WHERE signer IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (dest, signer) = row?;
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
fn queue_summaries(conn: &Connection, skip: Option<i64>) -> Result<Vec<StatementSummary>> {
    Ok(queued_statements(conn)?
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
        return Err(Error::Refused(format!(
            "the signing key {} is revoked by queued trust statement {by}; importers refuse \
             statements it signs (and the bundles carrying them): sign with a key that stays trusted",
            st.issuer
        )));
    }
    Ok(())
}

/// Rule: an add does not name a key a statement queued before revokes (a
/// revoked key stays revoked; importers refuse the add and its bundle).
fn rule_queue_add_not_revoked(k: &ChainKnowledge, st: &StatementSummary) -> Result<()> {
    if st.action == StatementAction::Add
        && let Some(by) = k.revoked.get(&st.key_id)
    {
        return Err(Error::Refused(format!(
            "key {} is revoked by queued trust statement {by}; a revoked key stays revoked \
             (importers refuse to add it again): introduce a new key instead",
            st.key_id
        )));
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
            return Err(Error::Refused(format!(
                "key {key} is the last key destination {dest:?} is known to trust (it signed \
                 the bundles exported there, or a statement introduced it); revoking it would \
                 leave {dest:?} no key known to sign bundles it accepts. Introduce another key \
                 first (`trust statement --key OLD.key --add NEW.pub`, signed by a key \
                 {dest:?} trusts), then revoke {key} with a statement signed by the new key",
                key = st.key_id
            )));
        }
    }
    Ok(())
}

/// Rule (export): the signing key is not revoked by a queued statement;
/// importers that apply it refuse every bundle the key signs.
pub fn check_export_signer(conn: &Connection, signer: &KeyId) -> Result<()> {
    for s in queue_summaries(conn, None)? {
        if s.action == StatementAction::Revoke && s.key_id == *signer {
            return Err(Error::Refused(format!(
                "key {signer} is revoked by queued trust statement {} (signed by {}); importers \
                 that apply it refuse every bundle the key signs: sign with another trusted key",
                s.seq, s.issuer
            )));
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
pub fn queue_statement(conn: &Connection, body: &[u8], minisig: &str) -> Result<Queued> {
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
    let mut k = ChainKnowledge::from_history(conn)?;
    for q in queue_summaries(conn, None)? {
        k.apply(q.seq, &q);
    }
    k.check(&summary)?;
    let issuer_unproven_at = k
        .known
        .iter()
        .filter(|(_, keys)| !keys.contains(&st.issuer))
        .map(|(d, _)| d.clone())
        .collect();
    conn.execute(
        "INSERT INTO trust_statements (body, minisig, created) VALUES (?1, ?2, ?3)",
        params![body, minisig, now_rfc3339()],
    )?;
    Ok(Queued {
        seq: conn.last_insert_rowid(),
        issuer_unproven_at,
    })
}

/// Cancels a queued statement no bundle has carried yet. Refused when a
/// bundle already carried it to some destination (it cannot be recalled
/// from there), and when a later queued statement depends on it.
pub fn cancel_statement(conn: &Connection, seq: i64) -> Result<QueuedStatement> {
    let all = queued_statements(conn)?;
    let Some(target) = all.iter().find(|q| q.summary.seq == seq).cloned() else {
        return Err(Error::Refused(format!(
            "there is no queued trust statement {seq} (`trust statement --list` shows the queue)"
        )));
    };
    rule_cancel_not_sent(&target)?;
    // The later statements are checked again without it; only a failure
    // its absence causes refuses the cancellation.
    let mut with = ChainKnowledge::from_history(conn)?;
    let mut without = ChainKnowledge::from_history(conn)?;
    for q in &all {
        let s = &q.summary;
        if s.seq > seq
            && with.check(s).is_ok()
            && let Err(e) = without.check(s)
        {
            return Err(Error::Refused(format!(
                "cannot cancel trust statement {seq}: queued trust statement {} depends on it ({e})",
                s.seq
            )));
        }
        with.apply(s.seq, s);
        if s.seq != seq {
            without.apply(s.seq, s);
        }
    }
    conn.execute("DELETE FROM trust_statements WHERE stmt_seq = ?1", [seq])?;
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
    Err(Error::Refused(format!(
        "trust statement {} was already carried to {} and cannot be recalled; {undo}",
        q.summary.seq,
        q.sent_to
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Queued statements with `stmt_seq > after`, oldest first: (seq, body, minisig).
pub fn statements_after(conn: &Connection, after: i64) -> Result<Vec<(i64, Vec<u8>, String)>> {
    let mut st = conn.prepare(
        "SELECT stmt_seq, body, minisig FROM trust_statements WHERE stmt_seq > ?1 ORDER BY stmt_seq",
    )?;
    let rows = st.query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Mode, Store};

    fn rule_of(e: &Error) -> &'static str {
        match e {
            Error::Verification { rule, .. } => rule,
            other => panic!("expected a verification error, got {other:?}"),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("srv"), "t", Mode::Autonomous).unwrap();
        (dir, s)
    }

    #[test]
    fn sign_verify_round_trip() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.sign(b"hello bundle", "gapsync manifest 1").unwrap();
        let sig = Minisig::parse(&text).unwrap();
        assert_eq!(sig.key_id(), sk.id());
        assert_eq!(sig.trusted_comment(), "gapsync manifest 1");
        verify(&sk.public(), b"hello bundle", &sig).unwrap();
        // Streamed prehash gives the same answer.
        let d = prehash_reader(&b"hello bundle"[..]).unwrap();
        verify_prehashed(&sk.public(), &d, &sig).unwrap();
        // CRLF line endings are accepted.
        let crlf = text.replace('\n', "\r\n");
        verify(
            &sk.public(),
            b"hello bundle",
            &Minisig::parse(&crlf).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn tampered_message_fails() {
        let sk = SecretKey::generate().unwrap();
        let sig = Minisig::parse(&sk.sign(b"hello", "c").unwrap()).unwrap();
        let e = verify(&sk.public(), b"hellp", &sig).unwrap_err();
        assert_eq!(rule_of(&e), "bad-signature");
    }

    #[test]
    fn tampered_trusted_comment_fails() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.sign(b"hello", "seq 1").unwrap();
        let sig = Minisig::parse(&text.replace("seq 1", "seq 2")).unwrap();
        let e = verify(&sk.public(), b"hello", &sig).unwrap_err();
        assert_eq!(rule_of(&e), "bad-comment-signature");
    }

    #[test]
    fn wrong_key_fails() {
        let sk = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let sig = Minisig::parse(&sk.sign(b"hello", "c").unwrap()).unwrap();
        let e = verify(&other.public(), b"hello", &sig).unwrap_err();
        assert_eq!(rule_of(&e), "key-id-mismatch");
        assert!(e.to_string().contains(&sk.id().to_string()));
        // Another key under the same id: the signature itself fails.
        let impostor = PublicKey {
            id: sk.id(),
            key: other.public().key,
        };
        assert_eq!(
            rule_of(&verify(&impostor, b"hello", &sig).unwrap_err()),
            "bad-signature"
        );
    }

    #[test]
    fn malformed_signatures_fail() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.sign(b"m", "c").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let join = |l: &[&str]| l.join("\n") + "\n";
        let cases = [
            join(&lines[..3]),
            join(&[lines[0], lines[1], lines[2], lines[3], "extra"]),
            join(&["comment without prefix", lines[1], lines[2], lines[3]]),
            join(&[lines[0], "not base64!", lines[2], lines[3]]),
            join(&[lines[0], &lines[1][4..], lines[2], lines[3]]),
            join(&[lines[0], lines[1], "comment: c", lines[3]]),
            join(&[lines[0], lines[1], lines[2], "AAAA"]),
            join(&[lines[0], lines[1], "trusted comment: a\rb", lines[3]]),
            String::new(),
        ];
        for c in &cases {
            let e = Minisig::parse(c).unwrap_err();
            assert_eq!(rule_of(&e), "malformed-signature", "{c:?}: {e}");
        }
        // An unknown algorithm, and the legacy one.
        for (alg, rule) in [
            (*b"XX", "malformed-signature"),
            (ALG_ED, "legacy-signature"),
        ] {
            let mut raw = B64.decode(lines[1]).unwrap();
            raw[..2].copy_from_slice(&alg);
            let t = join(&[lines[0], &B64.encode(&raw), lines[2], lines[3]]);
            assert_eq!(rule_of(&Minisig::parse(&t).unwrap_err()), rule);
        }
    }

    #[test]
    fn trusted_comment_must_be_one_line() {
        let sk = SecretKey::generate().unwrap();
        assert!(matches!(
            sk.sign(b"m", "a\nb").unwrap_err(),
            Error::Invalid { .. }
        ));
        assert!(sk.sign(b"m", "a\rb").is_err());
        assert!(sk.sign(b"m", &"x".repeat(TRUSTED_COMMENT_LIMIT)).is_err());
        assert!(
            sk.sign(b"m", &"x".repeat(TRUSTED_COMMENT_LIMIT - 1))
                .is_ok()
        );
    }

    #[test]
    fn malformed_public_keys_fail() {
        let sk = SecretKey::generate().unwrap();
        let good = sk.public().to_file_string();
        assert_eq!(PublicKey::parse(&good).unwrap(), sk.public());
        assert_eq!(
            PublicKey::parse(&sk.public().to_base64()).unwrap(),
            sk.public()
        );
        let line = sk.public().to_base64();
        let mut raw = B64.decode(&line).unwrap();
        raw[0] = b'X';
        let bad_alg = B64.encode(&raw);
        let mut weak = B64.decode(&line).unwrap();
        weak[10..].copy_from_slice(&[0u8; 32]); // identity point: small order
        weak[10] = 1;
        let weak = B64.encode(&weak);
        for c in [
            "",
            "just a comment\nRWQ=\n",
            "untrusted comment: x\n!!!\n",
            &format!("untrusted comment: x\n{}\n", &line[..20]),
            &bad_alg,
            &weak,
            &format!("untrusted comment: x\n{line}\n{line}\n"),
        ] {
            let e = PublicKey::parse(c).unwrap_err();
            assert_eq!(rule_of(&e), "malformed-key", "{c:?}: {e}");
        }
    }

    #[test]
    fn key_id_formatting() {
        // minisign prints le64_load(keynum) with %016" PRIX64.
        let id = KeyId([0x79, 0xcc, 0xf0, 0x60, 0xaa, 0x82, 0x25, 0xd7]);
        assert_eq!(id.to_string(), "D72582AA60F0CC79");
        assert_eq!("D72582AA60F0CC79".parse::<KeyId>().unwrap(), id);
        assert_eq!("d72582aa60f0cc79".parse::<KeyId>().unwrap(), id);
        assert_eq!(
            KeyId([1, 0, 0, 0, 0, 0, 0, 0]).to_string(),
            "0000000000000001"
        );
        // minisign 0.11 prints ids without leading zeros.
        let small = KeyId([0x68, 0x07, 0x4f, 0xe5, 0x43, 0xa5, 0x53, 0x00]);
        assert_eq!(small.to_string(), "0053A543E54F0768");
        assert_eq!("53A543E54F0768".parse::<KeyId>().unwrap(), small);
        for bad in [
            "",
            "0x12345",
            "D72582AA60F0CC79A",
            "G72582AA60F0CC79",
            "+72582AA60F0CC79",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"D72582AA60F0CC79\"");
        // The .pub comment names the id as minisign writes it.
        let sk = SecretKey::generate().unwrap();
        assert!(sk.public().to_file_string().starts_with(&format!(
            "untrusted comment: minisign public key {}\n",
            sk.id()
        )));
    }

    #[test]
    fn secret_key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate().unwrap();
        let (key, pubf) = sk.write_pair(&dir.path().join("signer")).unwrap();
        assert_eq!(key, dir.path().join("signer.key"));
        assert_eq!(pubf, dir.path().join("signer.pub"));
        let back = SecretKey::read_file(&key).unwrap();
        assert_eq!(back.id(), sk.id());
        assert_eq!(back.public(), sk.public());
        assert_eq!(PublicKey::read_file(&pubf).unwrap(), sk.public());
        // Same key, same signature (Ed25519 is deterministic).
        assert_eq!(back.sign(b"x", "c").unwrap(), sk.sign(b"x", "c").unwrap());
        // Never overwritten.
        let again = SecretKey::generate().unwrap();
        assert!(matches!(
            again.write_pair(&dir.path().join("signer")).unwrap_err(),
            Error::Refused(_)
        ));
        assert_eq!(SecretKey::read_file(&key).unwrap().id(), sk.id());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn secret_key_damage_is_detected() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.to_file_string();
        let line = text.lines().nth(1).unwrap();
        let raw = B64.decode(line).unwrap();
        let reencode = |raw: &[u8]| format!("untrusted comment: k\n{}\n", B64.encode(raw));
        // Zeroed checksum (minisign -G -W) is accepted.
        let mut zeroed = raw.clone();
        zeroed[126..].fill(0);
        assert_eq!(
            SecretKey::parse_named("k", &reencode(&zeroed))
                .unwrap()
                .public(),
            sk.public()
        );
        // A flipped bit in the seed fails the checksum.
        let mut flipped = raw.clone();
        flipped[70] ^= 1;
        let e = SecretKey::parse_named("k", &reencode(&flipped)).unwrap_err();
        assert_eq!(rule_of(&e), "malformed-key");
        // ... and without a checksum, the public half no longer matches.
        flipped[126..].fill(0);
        let e = SecretKey::parse_named("k", &reencode(&flipped)).unwrap_err();
        assert_eq!(rule_of(&e), "malformed-key");
        // Encrypted keys are refused with a hint.
        let mut enc = raw.clone();
        enc[2..4].copy_from_slice(b"Sc");
        let e = SecretKey::parse_named("k", &reencode(&enc)).unwrap_err();
        assert!(e.to_string().contains("minisign -C -W"), "{e}");
        // Truncated.
        let e = SecretKey::parse_named("k", &reencode(&raw[..100])).unwrap_err();
        assert_eq!(rule_of(&e), "malformed-key");
        assert_eq!(
            rule_of(&SecretKey::parse_named("k", line).unwrap_err()),
            "malformed-key"
        );
        // Debug never shows the secret.
        assert!(!format!("{sk:?}").contains(&hex::encode(&raw[62..94])));
    }

    #[cfg(unix)]
    #[test]
    fn secret_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, pubf) = SecretKey::generate()
            .unwrap()
            .write_pair(&dir.path().join("k"))
            .unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The public key is readable and writable by no one but its owner.
        let pub_mode = fs::metadata(&pubf).unwrap().permissions().mode();
        assert_eq!(pub_mode & 0o600, 0o600);
        assert_eq!(pub_mode & 0o022, 0);
    }

    #[test]
    fn trust_store_add_list_remove() {
        let (_d, s) = store();
        let c = s.conn();
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
            Error::Refused(_)
        ));
        assert!(trust_add(c, &a, " ", ADDED_BY_ADMIN).is_err());
        assert_eq!(trust_remove(c, &a.id).unwrap().key_id, a.id);
        assert!(trust_remove(c, &a.id).is_err());
        assert_eq!(
            rule_of(&require_trusted(c, &a.id).unwrap_err()),
            "unknown-key"
        );
    }

    fn trusted_store(issuer: &SecretKey) -> (tempfile::TempDir, Store) {
        let (d, s) = store();
        trust_add(s.conn(), &issuer.public(), "root", ADDED_BY_ADMIN).unwrap();
        (d, s)
    }

    #[test]
    fn statement_add_and_revoke() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = s.conn();
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
            Error::Refused(_)
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
        let c = s.conn();
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
        let c = s.conn();
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
        let e = apply_statement(s.conn(), &body, &sig).unwrap_err();
        assert_eq!(rule_of(&e), "unknown-key");
        assert!(e.to_string().contains(&stranger.id().to_string()));
        assert!(trusted_key(s.conn(), &stranger.id()).unwrap().is_none());
    }

    #[test]
    fn tampered_statement_is_refused() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let evil = SecretKey::generate().unwrap();
        let (_d, s) = trusted_store(&root);
        let c = s.conn();
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
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM applied_statements", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
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
        let c = s.conn();
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

    #[test]
    fn apply_inside_a_callers_transaction() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, mut s) = trusted_store(&root);
        let (body, sig) = TrustStatement::new_add(&root, &next.public(), "n")
            .unwrap()
            .sign(&root)
            .unwrap();
        {
            let tx = s.conn_mut().transaction().unwrap();
            apply_statement(&tx, &body, &sig).unwrap();
            // The caller's import fails later: everything rolls back.
            drop(tx);
        }
        assert!(trusted_key(s.conn(), &next.id()).unwrap().is_none());
        let tx = s.conn_mut().transaction().unwrap();
        apply_statement(&tx, &body, &sig).unwrap();
        tx.commit().unwrap();
        assert!(trusted_key(s.conn(), &next.id()).unwrap().is_some());
    }

    #[test]
    fn queue_and_list_statements() {
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let (_d, s) = store();
        let c = s.conn();
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
        assert_eq!(
            statements_after(c, 0).unwrap(),
            vec![(q1, b1.clone(), s1.clone()), (q2, b2.clone(), s2.clone())]
        );
        assert_eq!(statements_after(c, q1).unwrap(), vec![(q2, b2, s2)]);
        assert!(statements_after(c, q2).unwrap().is_empty());
        // A signature by someone else than the issuer is not queued.
        let wrong = next.sign(&b1, "gapsync trust statement add X").unwrap();
        assert!(queue_statement(c, &b1, &wrong).is_err());
        assert!(queue_statement(c, b"{}", &s1).is_err());
    }

    #[test]
    fn key_file_errors_say_their_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let e = SecretKey::read_file(&missing).unwrap_err();
        // The I/O error is in the message, not repeated as a source.
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
        let bad = dir.path().join("bad.pub");
        fs::write(&bad, "untrusted comment: x\n!!\n").unwrap();
        let e = PublicKey::read_file(&bad).unwrap_err();
        assert!(matches!(e, Error::MalformedKeyFile { .. }), "{e:?}");
        assert!(
            !e.is_verification() && e.to_string().contains("bad.pub"),
            "{e}"
        );
        // The same text inside a statement or bundle stays a verification failure.
        assert_eq!(
            rule_of(&PublicKey::parse("!!").unwrap_err()),
            "malformed-key"
        );
    }

    #[test]
    fn queue_rules_keep_the_chain_open() {
        let (_d, s) = store();
        let c = s.conn();
        let root = SecretKey::generate().unwrap();
        let next = SecretKey::generate().unwrap();
        let stranger = SecretKey::generate().unwrap();
        // root signed a bundle to plant: plant is known to trust root.
        c.execute(
            "INSERT INTO export_history (destination, seq, bundle_id, manifest_sha256, kind, to_anchor, created, signer) \
             VALUES ('plant', 1, 'b', 'm', 'full', 'a', 'now', ?1)",
            [root.id().to_string()],
        )
        .unwrap();
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
        let refused = |e: Error, needle: &str| match e {
            Error::Refused(m) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
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
        // Sent to plant: not cancelled.
        c.execute(
            "INSERT INTO export_ledger (destination, last_seq, last_bundle_id, last_manifest_sha256, last_to_anchor, last_stmt_seq, filters, updated) \
             VALUES ('plant', 1, 'b', 'm', 'a', 3, '{}', 'now')",
            [],
        )
        .unwrap();
        assert_eq!(
            queued_statements(c).unwrap()[0].sent_to,
            vec!["plant".to_string()]
        );
        refused(
            cancel_statement(c, 3).unwrap_err(),
            "already carried to \"plant\"",
        );
    }
}
