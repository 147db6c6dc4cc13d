//! Tamper suite: for generated bundles (full, incremental, multi-volume),
//! every kind of change — bytes flipped at many offsets of every file,
//! truncation, appended bytes, a file deleted or added, volumes swapped,
//! content files swapped, pack entries reordered, packs, content files or
//! volumes substituted from another bundle of the same exporter, a
//! signature by an untrusted key — is rejected by
//! `verify` and by `import`, and the importing store stays byte-for-byte
//! unchanged (its replicated state and its content tree). Bundles of the
//! current format and of format 1 (content in tar packs) are tampered.
//!
//! Runs in-process through the library for speed (hundreds of variants);
//! tests/bundle.rs covers the same rules through the binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use gapsync::airgap::format::Layout;
use gapsync::airgap::import::{ImportOptions, import};
use gapsync::airgap::verify::verify_bundle;
use gapsync::progress::Silent;
use gapsync::store::Store;
use gapsync::trust::PublicKey;
use gapsync::trust::TrustView;
use sha2::{Digest, Sha256};

/// A digest of everything replicated in a store: every table's rows in
/// key order, plus the content tree.
fn state_digest(dir: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("gapsync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut h = Sha256::new();
    let tables: Vec<String> = {
        let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    for t in tables {
        h.update(t.as_bytes());
        let mut st = conn
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1, 2"))
            .unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                h.update(format!("{:?}|", row.get_ref(i).unwrap()).as_bytes());
            }
        }
    }
    for (rel, data) in tree(&dir.join("content")) {
        h.update(rel.as_bytes());
        h.update(&data);
    }
    h.update(
        format!(
            "staging:{}",
            fs::read_dir(dir.join("staging")).unwrap().count()
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// The shared lab (60 updates, 6 MiB) and its bundles: to `a` a full
/// (single volume) and an incremental one; to `b` a full multi-volume one
/// and a second for substitutions.
struct Fixture {
    lab: Lab,
    pubkey: PublicKey,
    full: PathBuf,
    incr: PathBuf,
    multi: PathBuf,
    multi2: PathBuf,
    /// A full bundle in format 1 (to `c`).
    full_v1: PathBuf,
}

fn fixture() -> Fixture {
    let lab = Lab::new(60, "6M");
    gs(&lab.hq, &["groups", "add", "Pilot"]).ok();
    let full = lab.export("full", &["--to", "a"]);
    lab.generate(10, "1M", 2);
    let incr = lab.export("incr", &["--to", "a"]);
    let multi = lab.export("multi", &["--to", "b", "--volume-size", "3M"]);
    gs(&lab.hq, &["groups", "add", "Other"]).ok();
    let multi2 = lab.export("multi2", &["--to", "b", "--full", "--volume-size", "3M"]);
    let full_v1 = lab.export_format_1("full-v1", &["--to", "c"]);
    let pubkey = PublicKey::read_file(&lab.pubkey).unwrap();
    Fixture {
        full_v1,
        lab,
        pubkey,
        full,
        incr,
        multi,
        multi2,
    }
}

impl Fixture {
    /// Both verify and import must reject `bundle`; the store must not change.
    fn rejected(&self, bundle: &Path, what: &str) {
        let before = state_digest(&self.lab.plant);
        let layout = Layout::discover(bundle);
        let v = layout.as_ref().ok().map(|l| {
            verify_bundle(
                l,
                &mut TrustView::from_keys(std::slice::from_ref(&self.pubkey)).unwrap(),
                false,
                &Silent,
            )
        });
        assert!(!matches!(v, Some(Ok(_))), "{what}: verify accepted it");
        if let Ok(layout) = layout {
            let mut store = Store::open_writer(&self.lab.plant).unwrap();
            let r = import(
                &mut store,
                &ImportOptions {
                    layout,
                    dry_run: false,
                    plan_from_first_volume: false,
                    allow_expired: false,
                    rebase: false,
                    prompt: None,
                },
                &Silent,
            );
            assert!(r.is_err(), "{what}: import accepted it");
        }
        assert_eq!(
            state_digest(&self.lab.plant),
            before,
            "{what}: the store changed"
        );
    }

    fn variant(&self, from: &Path, name: &str) -> PathBuf {
        let p = self.lab.root.join("variants").join(name);
        let _ = fs::remove_dir_all(&p);
        copy_tree(from, &p);
        p
    }
}

fn files_of(bundle: &Path) -> Vec<String> {
    tree(bundle).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn every_tampering_is_rejected_and_changes_nothing() {
    let fx = fixture();
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    // The incremental bundle needs the full one applied first; tamper with
    // the full one against a fresh store, then apply it and tamper with the
    // incremental one.
    for (label, bundle) in [
        ("full", fx.full.clone()),
        ("multi", fx.multi.clone()),
        ("full-v1", fx.full_v1.clone()),
    ] {
        for rel in files_of(&bundle) {
            let len = fs::metadata(bundle.join(&rel)).unwrap().len() as usize;
            let mut offsets: Vec<usize> = vec![0, len / 2, len.saturating_sub(1)];
            for i in 1..8 {
                offsets.push(len * i / 8 + i * 7 % len.max(1));
            }
            offsets.sort();
            offsets.dedup();
            for off in offsets.into_iter().filter(|o| *o < len) {
                let v = fx.variant(&bundle, "flip");
                flip_byte(&v.join(&rel), off);
                fx.rejected(&v, &format!("{label}: {rel} byte {off} flipped"));
                *count.entry("byte flipped").or_default() += 1;
            }
            let v = fx.variant(&bundle, "trunc");
            let data = fs::read(v.join(&rel)).unwrap();
            fs::write(v.join(&rel), &data[..len / 2]).unwrap();
            fx.rejected(&v, &format!("{label}: {rel} truncated"));
            *count.entry("truncated").or_default() += 1;
            let v = fx.variant(&bundle, "append");
            let mut data = fs::read(v.join(&rel)).unwrap();
            data.extend_from_slice(b"\n");
            fs::write(v.join(&rel), data).unwrap();
            fx.rejected(&v, &format!("{label}: {rel} appended"));
            *count.entry("appended").or_default() += 1;
            let v = fx.variant(&bundle, "delete");
            fs::remove_file(v.join(&rel)).unwrap();
            fx.rejected(&v, &format!("{label}: {rel} deleted"));
            *count.entry("deleted").or_default() += 1;
        }
        for extra in [
            "extra.txt",
            "trust/0001.json",
            "content-009.tar",
            "content/00/0000000000000000000000000000000000000000.cab",
            "parts/00/0000000000000000000000000000000000000000.cab.part0002",
        ] {
            let v = fx.variant(&bundle, "add");
            let target = if label == "multi" {
                v.join("vol-001").join(extra)
            } else {
                v.join(extra)
            };
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::write(&target, b"{}").unwrap();
            fx.rejected(&v, &format!("{label}: {extra} added"));
            *count.entry("file added").or_default() += 1;
        }
    }
    // Volumes swapped, substituted, missing.
    let vols: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(&fx.multi)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vol-"))
            .collect();
        v.sort();
        v
    };
    assert!(vols.len() >= 3);
    let v = fx.variant(&fx.multi, "swap");
    fs::rename(v.join(&vols[1]), v.join("tmp")).unwrap();
    fs::rename(v.join(&vols[2]), v.join(&vols[1])).unwrap();
    fs::rename(v.join("tmp"), v.join(&vols[2])).unwrap();
    fx.rejected(&v, "two volumes swapped");
    *count.entry("volumes swapped").or_default() += 1;
    for vol in &vols {
        let v = fx.variant(&fx.multi, "subst-vol");
        fs::remove_dir_all(v.join(vol)).unwrap();
        if fx.multi2.join(vol).exists() {
            copy_tree(&fx.multi2.join(vol), &v.join(vol));
        }
        fx.rejected(&v, &format!("{vol} from another bundle"));
        *count.entry("volume substituted or missing").or_default() += 1;
        // A single pack from the other bundle.
        for (rel, _) in tree(&fx.multi.join(vol)) {
            if rel.ends_with(".tar")
                || rel.ends_with(".zst")
                || rel == "content.json"
                || rel.starts_with("content/")
                || rel.starts_with("parts/")
            {
                let other = fx.multi2.join(vol).join(&rel);
                if other.exists()
                    && fs::read(&other).unwrap() != fs::read(fx.multi.join(vol).join(&rel)).unwrap()
                {
                    let v = fx.variant(&fx.multi, "subst-pack");
                    fs::copy(&other, v.join(vol).join(&rel)).unwrap();
                    fx.rejected(&v, &format!("{vol}/{rel} from another bundle"));
                    *count.entry("pack substituted").or_default() += 1;
                }
            }
        }
    }
    // Two content files swapped (each under the other's name).
    let contents: Vec<String> = files_of(&fx.full)
        .into_iter()
        .filter(|r| r.starts_with("content/"))
        .collect();
    assert!(contents.len() >= 2);
    let v = fx.variant(&fx.full, "swap-files");
    fs::rename(v.join(&contents[0]), v.join("tmp")).unwrap();
    fs::rename(v.join(&contents[1]), v.join(&contents[0])).unwrap();
    fs::rename(v.join("tmp"), v.join(&contents[1])).unwrap();
    fx.rejected(&v, "content files swapped");
    *count.entry("content files swapped").or_default() += 1;
    // Entries reordered inside a pack of format 1 (tar rebuilt by an
    // attacker).
    let v = fx.variant(&fx.full_v1, "reorder");
    let pack = v.join("content-001.tar");
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let mut ar = tar::Archive::new(fs::File::open(&pack).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            entries.push((name, data));
        }
    }
    assert!(entries.len() >= 2);
    entries.reverse();
    {
        let mut b = tar::Builder::new(fs::File::create(&pack).unwrap());
        for (name, data) in &entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }
    fx.rejected(&v, "content entries reordered");
    *count.entry("entries reordered").or_default() += 1;
    // Signed by an untrusted key.
    let other = fx.lab.root.join("other");
    gs_plain(&["key", "generate", "--out", other.to_str().unwrap()]).ok();
    let v = fx.variant(&fx.full, "untrusted");
    resign(&v, &other.with_extension("key"), |m| {
        m.signer = gapsync::trust::SecretKey::read_file(&other.with_extension("key"))
            .unwrap()
            .id()
            .to_string()
    });
    fx.rejected(&v, "signed by an untrusted key");
    *count.entry("untrusted key").or_default() += 1;

    // The genuine bundles still import, in order; the incremental one is
    // then tampered with against the store that follows the chain.
    gs(&fx.lab.plant, &["import", fx.full.to_str().unwrap()]).ok();
    for rel in files_of(&fx.incr) {
        let len = fs::metadata(fx.incr.join(&rel)).unwrap().len() as usize;
        for off in [0, len / 3, len / 2, len.saturating_sub(1)] {
            let v = fx.variant(&fx.incr, "incr-flip");
            flip_byte(&v.join(&rel), off);
            fx.rejected(&v, &format!("incremental: {rel} byte {off} flipped"));
            *count.entry("byte flipped").or_default() += 1;
        }
    }
    gs(&fx.lab.plant, &["import", fx.incr.to_str().unwrap()]).ok();
    gs(&fx.lab.plant, &["check"]).ok();
    eprintln!("tamper variants rejected: {count:?}");
    assert!(count.values().sum::<usize>() > 150);
}
