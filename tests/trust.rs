//! Interoperability of gapsync's keys and signatures with stock `minisign`
//! (the Debian/Ubuntu `minisign` package; CI installs it). These tests run
//! the real tool and FAIL, never skip, when it is not on PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gapsync::Error;
use gapsync::store::{Mode, Store};
use gapsync::trust::{
    self, Applied, Minisig, PublicKey, SecretKey, TrustStatement, prehash_reader, verify,
    verify_prehashed,
};

/// The `minisign` binary; its absence is a failure with instructions.
fn minisign() -> &'static str {
    let ok = Command::new("minisign")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "stock `minisign` is required by tests/trust.rs and was not found on PATH: \
         install it (Debian/Ubuntu: `apt-get install -y minisign`)"
    );
    "minisign"
}

fn run(args: &[&str]) -> Output {
    Command::new(minisign())
        .args(args)
        .output()
        .expect("run minisign")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "minisign {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str], needle: &str) {
    let o = run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "minisign {args:?} should have failed\nstdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr.contains(needle),
        "minisign {args:?}: expected {needle:?} in stderr: {stderr}"
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn rule_of(e: &Error) -> &'static str {
    match e {
        Error::Verification { rule, .. } => rule,
        other => panic!("expected a verification error, got {other:?}"),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Fixture { _dir: dir, root }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, data).unwrap();
        path
    }
}

/// (a) A signature made by gapsync verifies with `minisign -V`, which prints
/// our trusted comment.
#[test]
fn our_signature_verifies_with_stock_minisign() {
    let f = Fixture::new();
    let sk = SecretKey::generate().unwrap();
    let (_key, pubf) = sk.write_pair(&f.path("signer")).unwrap();
    let data = b"gapsync bundle manifest\n{\"seq\": 7}\n";
    let file = f.write("manifest.json", data);
    let comment = "gapsync bundle 7 from hq\tto site";
    f.write(
        "manifest.json.minisig",
        sk.sign(data, comment).unwrap().as_bytes(),
    );

    // Default signature path (FILE.minisig).
    let out = ok(&["-V", "-p", p(&pubf), "-m", p(&file)]);
    assert!(
        out.contains("Signature and comment signature verified"),
        "{out}"
    );
    assert!(
        out.contains(&format!("Trusted comment: {comment}\n")),
        "{out}"
    );
    // -Q prints the trusted comment alone: exactly ours.
    let out = ok(&["-V", "-Q", "-p", p(&pubf), "-m", p(&file)]);
    assert_eq!(out, format!("{comment}\n"));
    // An explicit -x, -H (prehashed required) and -P (key as base64).
    let sig = f.write("other.sig", sk.sign(data, "c2").unwrap().as_bytes());
    let pk_line = sk.public().to_base64();
    let out = ok(&[
        "-V",
        "-H",
        "-Q",
        "-P",
        &pk_line,
        "-m",
        p(&file),
        "-x",
        p(&sig),
    ]);
    assert_eq!(out, "c2\n");
    // minisign -R rebuilds our public key from our .key (the key line byte
    // for byte; minisign 0.11 writes the id in the comment without leading
    // zeros, so the comment is compared as an id).
    let rebuilt = f.path("rebuilt.pub");
    ok(&["-R", "-s", p(&f.path("signer.key")), "-p", p(&rebuilt)]);
    let rebuilt_text = fs::read_to_string(&rebuilt).unwrap();
    let ours_text = fs::read_to_string(&pubf).unwrap();
    assert_eq!(rebuilt_text.lines().nth(1), ours_text.lines().nth(1));
    assert_eq!(PublicKey::read_file(&rebuilt).unwrap(), sk.public());
    let printed = rebuilt_text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("untrusted comment: minisign public key "))
        .unwrap_or_else(|| panic!("unexpected .pub comment: {rebuilt_text}"));
    assert_eq!(printed.parse::<gapsync::trust::KeyId>().unwrap(), sk.id());
}

/// A large file hashed as a stream gives signatures minisign accepts.
#[test]
fn streamed_prehash_matches_minisign() {
    let f = Fixture::new();
    let sk = SecretKey::generate().unwrap();
    let (_key, pubf) = sk.write_pair(&f.path("k")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = f.write("big.bin", &data);
    let digest = prehash_reader(fs::File::open(&file).unwrap()).unwrap();
    f.write(
        "big.bin.minisig",
        sk.sign_prehashed(&digest, "big").unwrap().as_bytes(),
    );
    let out = ok(&["-V", "-Q", "-p", p(&pubf), "-m", p(&file)]);
    assert_eq!(out, "big\n");
    let sig = Minisig::read_file(&f.path("big.bin.minisig")).unwrap();
    verify(&sk.public(), &data, &sig).unwrap();
    verify_prehashed(&sk.public(), &digest, &sig).unwrap();
}

/// (b) Keys made by `minisign -G -W` are read by gapsync, and files signed
/// with `minisign -S` verify with gapsync.
#[test]
fn stock_minisign_keys_and_signatures_work_with_us() {
    let f = Fixture::new();
    let (pubf, keyf) = (f.path("x.pub"), f.path("x.key"));
    ok(&["-G", "-W", "-p", p(&pubf), "-s", p(&keyf)]);
    let sk = SecretKey::read_file(&keyf).unwrap();
    let pk = PublicKey::read_file(&pubf).unwrap();
    assert_eq!(sk.public(), pk);
    // Our key id is the one minisign printed in the .pub comment. minisign
    // 0.11 prints it without leading zeros (`%" PRIX64`), later versions and
    // gapsync pad it to 16 digits; either form parses to the same id.
    let pub_text = fs::read_to_string(&pubf).unwrap();
    let mut lines = pub_text.lines();
    let printed = lines
        .next()
        .and_then(|l| l.strip_prefix("untrusted comment: minisign public key "))
        .unwrap_or_else(|| panic!("unexpected .pub comment: {pub_text}"));
    assert_eq!(printed.parse::<gapsync::trust::KeyId>().unwrap(), pk.id);
    assert_eq!(format!("{printed:0>16}"), pk.id.to_string());
    assert_eq!(lines.next(), Some(pk.to_base64().as_str()));

    let data = b"content signed by stock minisign";
    let file = f.write("doc.txt", data);
    ok(&["-S", "-s", p(&keyf), "-m", p(&file), "-t", "site bundle 12"]);
    let sig = Minisig::read_file(&f.path("doc.txt.minisig")).unwrap();
    assert_eq!(sig.key_id(), pk.id);
    verify(&pk, data, &sig).unwrap();
    assert_eq!(sig.trusted_comment(), "site bundle 12");

    // Signing with minisign's key through gapsync: minisign verifies it.
    f.write(
        "doc.txt.minisig",
        sk.sign(data, "signed by gapsync").unwrap().as_bytes(),
    );
    let out = ok(&["-V", "-Q", "-p", p(&pubf), "-m", p(&file)]);
    assert_eq!(out, "signed by gapsync\n");
}

/// Our `.key` files are usable by `minisign -S`.
#[test]
fn stock_minisign_signs_with_our_secret_key() {
    let f = Fixture::new();
    let sk = SecretKey::generate().unwrap();
    let (keyf, pubf) = sk.write_pair(&f.path("ours")).unwrap();
    let file = f.write("f.bin", b"\x00\x01binary\xff");
    ok(&["-S", "-s", p(&keyf), "-m", p(&file), "-t", "from minisign"]);
    let sig = Minisig::read_file(&f.path("f.bin.minisig")).unwrap();
    verify(&sk.public(), b"\x00\x01binary\xff", &sig).unwrap();
    assert_eq!(sig.trusted_comment(), "from minisign");
    ok(&["-V", "-p", p(&pubf), "-m", p(&file)]);
}

/// (c) Tampering makes stock minisign fail as it makes gapsync fail.
#[test]
fn tampering_fails_in_both() {
    let f = Fixture::new();
    let sk = SecretKey::generate().unwrap();
    let (_key, pubf) = sk.write_pair(&f.path("k")).unwrap();
    let data = b"approved: KB5031356 for Pilot";
    let file = f.write("m.txt", data);
    let sig_text = sk.sign(data, "seq 3").unwrap();
    let sigf = f.write("m.txt.minisig", sig_text.as_bytes());
    ok(&["-V", "-p", p(&pubf), "-m", p(&file)]);

    // The signed file changed.
    let tampered = b"approved: KB5031356 for All Computers";
    fs::write(&file, tampered).unwrap();
    fails(
        &["-V", "-p", p(&pubf), "-m", p(&file)],
        "Signature verification failed",
    );
    let sig = Minisig::read_file(&sigf).unwrap();
    assert_eq!(
        rule_of(&verify(&sk.public(), tampered, &sig).unwrap_err()),
        "bad-signature"
    );
    fs::write(&file, data).unwrap();

    // The trusted comment changed.
    fs::write(&sigf, sig_text.replace("seq 3", "seq 4")).unwrap();
    fails(
        &["-V", "-p", p(&pubf), "-m", p(&file)],
        "Comment signature verification failed",
    );
    let sig = Minisig::read_file(&sigf).unwrap();
    assert_eq!(
        rule_of(&verify(&sk.public(), data, &sig).unwrap_err()),
        "bad-comment-signature"
    );

    // Another key.
    fs::write(&sigf, &sig_text).unwrap();
    let other = SecretKey::generate().unwrap();
    let (_k2, other_pub) = other.write_pair(&f.path("other")).unwrap();
    fails(
        &["-V", "-p", p(&other_pub), "-m", p(&file)],
        "Signature key id",
    );
    let sig = Minisig::read_file(&sigf).unwrap();
    assert_eq!(
        rule_of(&verify(&other.public(), data, &sig).unwrap_err()),
        "key-id-mismatch"
    );

    // A damaged signature line.
    let mut lines: Vec<String> = sig_text.lines().map(str::to_string).collect();
    lines[1].replace_range(4..8, "!!!!");
    fs::write(&sigf, lines.join("\n") + "\n").unwrap();
    fails(&["-V", "-p", p(&pubf), "-m", p(&file)], "base64");
    let e = Minisig::read_file(&sigf).unwrap_err();
    assert_eq!(rule_of(&e), "malformed-signature");
    assert!(e.to_string().contains("m.txt.minisig"), "{e}");
}

/// Legacy (non-prehashed, `minisign -l`) signatures are refused by gapsync;
/// stock minisign refuses them too when asked to require prehashing (-H).
#[test]
fn legacy_signatures_are_refused() {
    let f = Fixture::new();
    let (pubf, keyf) = (f.path("x.pub"), f.path("x.key"));
    ok(&["-G", "-W", "-p", p(&pubf), "-s", p(&keyf)]);
    let file = f.write("l.txt", b"legacy");
    ok(&["-S", "-l", "-s", p(&keyf), "-m", p(&file), "-t", "old"]);
    fails(
        &["-V", "-H", "-p", p(&pubf), "-m", p(&file)],
        "Legacy (non-prehashed) signature found",
    );
    let e = Minisig::read_file(&f.path("l.txt.minisig")).unwrap_err();
    assert_eq!(rule_of(&e), "legacy-signature");
}

/// A trust statement can be signed with stock minisign (the documented
/// trusted comment) and is applied by gapsync.
#[test]
fn trust_statement_signed_by_stock_minisign() {
    let f = Fixture::new();
    let (pubf, keyf) = (f.path("root.pub"), f.path("root.key"));
    ok(&["-G", "-W", "-p", p(&pubf), "-s", p(&keyf)]);
    let root = SecretKey::read_file(&keyf).unwrap();
    let next = SecretKey::generate().unwrap();
    let st = TrustStatement::new_add(&root, &next.public(), "next").unwrap();
    let (body, _ours) = st.sign(&root).unwrap();
    let bodyf = f.write("stmt.json", &body);
    ok(&[
        "-S",
        "-s",
        p(&keyf),
        "-m",
        p(&bodyf),
        "-t",
        &st.trusted_comment(),
    ]);
    let minisig = fs::read_to_string(f.path("stmt.json.minisig")).unwrap();

    let store = Store::init(&f.path("srv"), "site", Mode::Replica).unwrap();
    let c = &store;
    assert_eq!(
        rule_of(&trust::apply_statement(c, &body, &minisig).unwrap_err()),
        "unknown-key"
    );
    trust::trust_add(
        c,
        &PublicKey::read_file(&pubf).unwrap(),
        "root",
        trust::ADDED_BY_ADMIN,
    )
    .unwrap();
    assert!(matches!(
        trust::apply_statement(c, &body, &minisig).unwrap(),
        Applied::Added { .. }
    ));
    assert_eq!(
        trust::require_trusted(c, &next.id()).unwrap(),
        next.public()
    );
}
