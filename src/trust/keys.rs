//! Key ids, public and secret keys in minisign's formats, and the key
//! files (see the formats in the `trust` module documentation).

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b256, Digest};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, IoContext, Result};

/// `untrusted comment: ` — first line of every minisign file.
pub(super) const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// Signature algorithm of keys and of legacy (raw message) signatures.
pub(super) const ALG_ED: [u8; 2] = *b"Ed";
/// Key derivation id of an unencrypted secret key (`minisign -W`).
const KDF_NONE: [u8; 2] = [0, 0];
/// Key derivation id of a password-protected secret key (scrypt).
const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// Checksum algorithm id of secret keys (BLAKE2b-256).
const CHK_BLAKE2: [u8; 2] = *b"B2";
/// No key or signature file gapsync reads is larger than this.
const MAX_KEY_OR_SIG_FILE: u64 = 16 * 1024;

const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;

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
pub(super) fn read_small_text(path: &Path, rule: &'static str) -> Result<String> {
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
pub(super) fn file_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

pub(super) fn decode_b64(line: &str) -> Option<Vec<u8>> {
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
pub(super) fn rule_public_key_point(
    name: &str,
    id: &KeyId,
    bytes: &[u8; 32],
) -> Result<VerifyingKey> {
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
    pub(super) id: KeyId,
    pub(super) signing: SigningKey,
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
                return Err(Error::KeyFileExists(p.to_path_buf()));
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
                Err(Error::KeyFileExists(path.to_path_buf()))
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
        Ok(_) => Err(Error::NoKeyFolder {
            path: dir.to_path_buf(),
            why: "not a folder; key files are written into an existing folder",
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoKeyFolder {
            path: dir.to_path_buf(),
            why: "no such folder; create it first (key files are written into an existing folder)",
        }),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tests_common::rule_of;

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
            Error::KeyFileExists(p) if p == dir.path().join("signer.key")
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
}
