//! minisign signatures: prehash (BLAKE2b-512), signing, the `.minisig`
//! file and its trusted comment, and verification (see the formats in the
//! `trust` module documentation).

use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer};

use super::keys::{
    ALG_ED, KeyId, PublicKey, SecretKey, UNTRUSTED_PREFIX, decode_b64, file_lines, read_small_text,
};
use crate::error::{Error, Result};

/// `trusted comment: ` — third line of a signature file.
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// Signature algorithm of prehashed (BLAKE2b-512) signatures.
const ALG_PREHASHED: [u8; 2] = *b"ED";
/// minisign's COMMENTMAXBYTES: the buffer its untrusted comment line is read into.
const COMMENT_MAX: usize = 1024;
/// minisign's TRUSTEDCOMMENTMAXBYTES less `sizeof "trusted comment: "`: a
/// trusted comment must be shorter than this.
pub(super) const TRUSTED_COMMENT_LIMIT: usize = 8192 - (TRUSTED_PREFIX.len() + 1);

const SIGNATURE_LEN: usize = 2 + 8 + 64;

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

impl SecretKey {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tests_common::rule_of;

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
}
