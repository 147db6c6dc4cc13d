//! Helpers shared by the integration tests: run the real binary on real
//! temporary directories, find the shared reference data, build documents.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gapsync")
}

/// The shared reference folder; its absence fails the test (never skips).
pub fn reference() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    assert!(
        p.join("wsus-captures").is_dir(),
        "shared reference data missing at {} (CI must provide ../shared beside the checkout)",
        p.display()
    );
    p
}

pub fn captured_docs() -> PathBuf {
    reference().join("wsus-captures/wsus-m0-wsusss/docs")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `gapsync --server DIR args...`.
/// Set to `1`, makes the binary write bundle format version 1 (2 with
/// equivalent links), for tests of the readers of those versions.
pub const FORMAT_1_ENV: &str = "GAPSYNC_TEST_BUNDLE_FORMAT";

pub fn gs(server: &Path, args: &[&str]) -> Run {
    gs_env(server, args, &[])
}

pub fn gs_env(server: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .env_remove("GAPSYNC_FAILPOINT")
        .env_remove(FORMAT_1_ENV);
    for (k, v) in env {
        c.env(k, v);
    }
    finish(c.output().expect("run gapsync"))
}

/// Runs `gapsync args...` without --server.
pub fn gs_plain(args: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .output()
        .expect("run gapsync");
    finish(out)
}

/// A new store in a fresh temp dir.
pub fn new_store(name: &str, mode: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(name);
    gs_plain(&[
        "init",
        dir.to_str().expect("utf8"),
        "--name",
        name,
        "--mode",
        mode,
    ])
    .ok();
    (tmp, dir)
}

/// Every file under a folder with its bytes, sorted: a digest of a tree.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if dir.exists() {
        for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let e = e.expect("walk");
            if e.file_type().is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .expect("prefix")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(e.path()).expect("read")));
            }
        }
    }
    out
}

/// The replicated state as the CLI reports it: status (minus nothing),
/// updates, deployments, groups and the journal. Used to prove a failed
/// command changed nothing.
pub fn snapshot(server: &Path) -> String {
    let mut s = snapshot_db(server);
    let content: Vec<String> = tree(&server.join("content"))
        .into_iter()
        .map(|(p, b)| format!("{p}:{}", b.len()))
        .collect();
    s.push_str(&content.join("\n"));
    s
}

/// The replicated state as the CLI reports it, without the content tree.
pub fn snapshot_db(server: &Path) -> String {
    let mut s = String::new();
    for args in [
        &["status", "--json"][..],
        &["updates", "list", "--json"],
        &["deployments", "list", "--json"],
        &["deployments", "list", "--removed", "--json"],
        &["groups", "list", "--json"],
        &["journal", "--json"],
        &["trust", "list", "--json"],
    ] {
        s.push_str(&gs(server, args).ok().stdout);
    }
    s
}

/// Every file under content/ is complete: its name is the SHA-1 of its bytes.
pub fn content_files_are_whole(server: &Path) {
    for (rel, data) in tree(&server.join("content")) {
        let name = rel.rsplit('/').next().unwrap();
        assert!(
            name.starts_with(&sha1_hex_upper(&data)),
            "{rel} is not whole"
        );
    }
}

pub struct FileSpec<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// A minimal but real-shaped update document.
pub fn update_xml(
    id: &str,
    revision: i32,
    kind: &str,
    title: &str,
    categories: &[&str],
    files: &[FileSpec<'_>],
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut x = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"{revision}\" /><upd:Properties UpdateType=\"{kind}\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" CreationDate=\"2026-10-01T00:00:00.000Z\"></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>"
    );
    if !categories.is_empty() {
        x.push_str("<upd:Relationships><upd:Prerequisites>");
        for c in categories {
            x.push_str(&format!("<upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{c}\" /></upd:AtLeastOne>"));
        }
        x.push_str("</upd:Prerequisites></upd:Relationships>");
    }
    if !files.is_empty() {
        x.push_str("<upd:Files>");
        for f in files {
            x.push_str(&format!(
                "<upd:File Digest=\"{}\" DigestAlgorithm=\"SHA1\" FileName=\"{}\" Size=\"{}\" Modified=\"2026-10-01T00:00:00Z\"><upd:AdditionalDigest Algorithm=\"SHA256\">{}</upd:AdditionalDigest></upd:File>",
                b64.encode(Sha1::digest(f.data)),
                f.name,
                f.data.len(),
                b64.encode(Sha256::digest(f.data))
            ));
        }
        x.push_str("</upd:Files>");
    }
    x.push_str("</upd:Update>");
    x
}

pub fn sha1_hex_upper(data: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(data))
}

/// Pseudo-random incompressible bytes (xorshift; tests only).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Re-signs a single-volume bundle after a test changed it, as a trusted
/// but misbehaving exporter would: `edit` may change the manifest; pack
/// digests, SHA256SUMS and the signature are recomputed with `key`.
pub fn resign(dir: &Path, key: &Path, edit: impl FnOnce(&mut gapsync::airgap::format::Manifest)) {
    resign_json(dir, key, |v| {
        let mut m: gapsync::airgap::format::Manifest =
            serde_json::from_value(v.clone()).expect("manifest");
        edit(&mut m);
        *v = serde_json::to_value(&m).unwrap();
    });
}

/// Like `resign`, editing the manifest as JSON (for fields or versions
/// this gapsync does not know).
pub fn resign_json(dir: &Path, key: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    use gapsync::airgap::format;
    let key = gapsync::trust::SecretKey::read_file(key).expect("key");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format::MANIFEST)).unwrap()).unwrap();
    edit(&mut m);
    if let Some(packs) = m["packs"].as_array_mut() {
        for p in packs {
            let data = std::fs::read(dir.join(p["name"].as_str().unwrap())).unwrap();
            p["size"] = serde_json::json!(data.len());
            p["sha256"] = serde_json::json!(hex::encode(Sha256::digest(&data)));
        }
    }
    let mbytes = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(dir.join(format::MANIFEST), &mbytes).unwrap();
    let mut sums = std::collections::BTreeMap::new();
    for (rel, data) in tree(dir) {
        if rel != format::SUMS && rel != format::SUMS_SIG {
            sums.insert(rel, hex::encode(Sha256::digest(&data)));
        }
    }
    let text = format::format_sums(&sums);
    std::fs::write(dir.join(format::SUMS), &text).unwrap();
    let comment = format!(
        "gapsync bundle {} seq {} volume 1/{} source {}",
        m["bundle_id"].as_str().unwrap(),
        m["seq"],
        m["volumes"],
        m["source"]["server_id"].as_str().unwrap()
    );
    let sig = key.sign(text.as_bytes(), &comment).unwrap();
    std::fs::write(dir.join(format::SUMS_SIG), sig).unwrap();
}

/// Flips one byte of a file.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut data = std::fs::read(path).unwrap();
    let i = offset.min(data.len() - 1);
    data[i] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

/// Copies a folder tree (a store or a bundle).
pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A path as the `&str` an argument list takes.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

/// A fresh replica store `root/dir` named `name` that trusts `pubkey`
/// (label `hq`).
pub fn replica_trusting(root: &Path, dir: &str, name: &str, pubkey: &Path) -> PathBuf {
    let d = root.join(dir);
    gs_plain(&["init", p(&d), "--name", name, "--mode", "replica"]).ok();
    gs(&d, &["trust", "add", p(pubkey), "--label", "hq"]).ok();
    d
}

/// The scene the air-gap tests start from, written once: a connected
/// store `hq` (autonomous) with a generated catalog, a signing key pair,
/// and a disconnected replica `plant` that trusts the key. Everything lives
/// in one temporary folder (`root`), removed when the lab is dropped.
pub struct Lab {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    /// The connected store.
    pub hq: PathBuf,
    /// The disconnected replica, trusting `pubkey`, nothing imported.
    pub plant: PathBuf,
    /// The secret key file (`PREFIX.key`) exports sign with.
    pub key: PathBuf,
    /// Its public key file (`PREFIX.pub`).
    pub pubkey: PathBuf,
}

impl Lab {
    /// A lab whose hq holds `updates` generated updates (seed 1) with
    /// `content` bytes of content (`"0"`, `"2M"`...).
    pub fn new(updates: u32, content: &str) -> Lab {
        let (tmp, hq) = new_store("hq", "autonomous");
        let root = tmp.path().to_path_buf();
        let prefix = root.join("signing");
        gs_plain(&["key", "generate", "--out", p(&prefix)]).ok();
        let pubkey = prefix.with_extension("pub");
        let plant = replica_trusting(&root, "plant", "plant", &pubkey);
        let lab = Lab {
            _tmp: tmp,
            root,
            hq,
            plant,
            key: prefix.with_extension("key"),
            pubkey,
        };
        lab.generate(updates, content, 1);
        lab
    }

    /// Adds generated updates to hq (another `seed` gives other updates).
    pub fn generate(&self, updates: u32, content: &str, seed: u64) {
        let (updates, seed) = (updates.to_string(), seed.to_string());
        gs(
            &self.hq,
            &[
                "catalog",
                "generate",
                "--updates",
                &updates,
                "--content-bytes",
                content,
                "--seed",
                &seed,
            ],
        )
        .ok();
    }

    /// Exports hq into `root/out`, signed with the lab's key, with `extra`
    /// flags; the export must succeed.
    pub fn export(&self, out: &str, extra: &[&str]) -> PathBuf {
        let dir = self.root.join(out);
        let mut args = vec!["export", "--key", p(&self.key), "--out", p(&dir)];
        args.extend_from_slice(extra);
        gs(&self.hq, &args).ok();
        dir
    }

    /// Like `export`, in bundle format version 1 (the writer kept for
    /// tests of the version 1 and 2 readers).
    pub fn export_format_1(&self, out: &str, extra: &[&str]) -> PathBuf {
        let dir = self.root.join(out);
        let mut args = vec!["export", "--key", p(&self.key), "--out", p(&dir)];
        args.extend_from_slice(extra);
        gs_env(&self.hq, &args, &[(FORMAT_1_ENV, "1")]).ok();
        dir
    }

    /// Another fresh replica `root/dir` (server name `name`) trusting the
    /// lab's key.
    pub fn replica(&self, dir: &str, name: &str) -> PathBuf {
        replica_trusting(&self.root, dir, name, &self.pubkey)
    }
}
