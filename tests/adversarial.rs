//! Adversarial archives from a trusted-but-hostile exporter: the bundle is
//! validly signed, but its metadata pack holds entries with `..`, absolute
//! paths, links, devices, FIFOs, duplicate or case-variant names, enormous
//! sizes, decompression bombs, oversized manifests, XML with DTDs or deep
//! nesting; or its content index and content tree hold unsafe or wrong
//! names, links, folders, unlisted files or sizes the metadata denies.
//! Each gets a clear error naming the problem, the store is unchanged, and
//! nothing is written outside the staging area.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::*;

/// Tar entries as (raw header, data).
type Entries = Vec<(tar::Header, Vec<u8>)>;

/// The shared lab (20 updates, 1 MiB of content) and a genuine full bundle.
struct Case {
    lab: Lab,
    bundle: PathBuf,
}

fn setup() -> Case {
    let lab = Lab::new(20, "1M");
    let bundle = lab.export("genuine", &[]);
    Case { lab, bundle }
}

/// The entries of the genuine metadata pack.
fn metadata_entries(bundle: &Path) -> Vec<(String, Vec<u8>)> {
    let f = fs::File::open(bundle.join("metadata.tar.zst")).unwrap();
    let mut ar = tar::Archive::new(zstd::stream::read::Decoder::new(f).unwrap());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// A raw tar header: any name bytes, any type, any declared size.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, link: Option<&[u8]>) -> tar::Header {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// Writes a metadata pack from (header, data) pairs, zstd-compressed.
fn write_metadata(bundle: &Path, entries: &[(tar::Header, Vec<u8>)]) {
    let f = fs::File::create(bundle.join("metadata.tar.zst")).unwrap();
    let enc = zstd::stream::write::Encoder::new(f, 3).unwrap();
    let mut b = tar::Builder::new(enc);
    for (h, data) in entries {
        b.append(h, &data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn regular(name: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    (
        raw_header(
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            None,
        ),
        data.to_vec(),
    )
}

impl Case {
    fn variant(&self, name: &str) -> PathBuf {
        let p = self.lab.root.join(name);
        copy_tree(&self.bundle, &p);
        p
    }

    /// Import must fail mentioning `needle`; nothing changes; nothing is
    /// written outside the store's staging area.
    fn refused(&self, bundle: &Path, needle: &str) {
        let before = snapshot(&self.lab.plant);
        let outside_before = tree(&self.lab.root).len();
        let r = gs(&self.lab.plant, &["import", bundle.to_str().unwrap()]);
        assert_ne!(r.code, 0, "{needle}: accepted");
        assert!(
            r.stderr.contains(needle),
            "expected {needle:?} in: {}",
            r.stderr
        );
        assert_eq!(snapshot(&self.lab.plant), before, "{needle}: store changed");
        assert_eq!(
            tree(&self.lab.root).len(),
            outside_before,
            "{needle}: files appeared"
        );
        assert!(!self.lab.root.join("evil").exists() && !Path::new("/tmp/gapsync-evil").exists());
    }
}

#[test]
fn hostile_metadata_entries_are_refused() {
    let c = setup();
    let genuine = metadata_entries(&c.bundle);
    let state = genuine[0].1.clone();
    let xml = genuine[1].1.clone();
    let xml_name = genuine[1].0.clone();
    let cases: Vec<(&str, Entries, &str)> = vec![
        ("dotdot", vec![regular("state.json", &state), regular("../../evil", &xml)], "unsafe"),
        ("absolute", vec![regular("state.json", &state), regular("/tmp/gapsync-evil", &xml)], "unsafe"),
        ("symlink", vec![regular("state.json", &state), (raw_header(b"revisions/x-r1.xml", tar::EntryType::Symlink, 0, Some(b"/etc/passwd")), vec![])], "not a regular file"),
        ("hardlink", vec![regular("state.json", &state), (raw_header(b"revisions/x-r1.xml", tar::EntryType::Link, 0, Some(b"state.json")), vec![])], "not a regular file"),
        ("device", vec![regular("state.json", &state), (raw_header(b"revisions/x-r1.xml", tar::EntryType::Char, 0, None), vec![])], "not a regular file"),
        ("fifo", vec![regular("state.json", &state), (raw_header(b"revisions/x-r1.xml", tar::EntryType::Fifo, 0, None), vec![])], "not a regular file"),
        ("duplicate", vec![regular("state.json", &state), regular(&xml_name, &xml), regular(&xml_name, &xml)], "appears twice"),
        ("case-variant", vec![regular("state.json", &state), regular(&xml_name.to_uppercase().replace("REVISIONS/", "revisions/").replace(".XML", ".xml"), &xml)], "entry-identity-mismatch"),
        ("unicode-variant", vec![regular("state.json", &state), regular("revisions/\u{0065}\u{0301}-r1.xml", &xml)], "unsafe"),
        ("state-not-first", vec![regular(&xml_name, &xml), regular("state.json", &state)], "expected state.json"),
        ("huge-size", vec![regular("state.json", &state), (raw_header(xml_name.as_bytes(), tar::EntryType::Regular, 1 << 40, None), vec![])], "oversized"),
        ("dtd", vec![regular("state.json", &state), regular(&xml_name, format!("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>{}", String::from_utf8_lossy(&xml)).as_bytes())], "DTD"),
        ("deep", vec![regular("state.json", &state), regular(&xml_name, format!("<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\">{}{}</upd:Update>", "<a>".repeat(100_000), "</a>".repeat(100_000)).as_bytes())], "deeper"),
        ("bad-state", vec![regular("state.json", b"{\"groups\": 5}")], "malformed-state"),
    ];
    for (name, entries, needle) in cases {
        let v = c.variant(name);
        write_metadata(&v, &entries);
        resign(&v, &c.lab.key, |m| {
            m.counts.revisions = (entries.len() as u64).saturating_sub(1)
        });
        c.refused(&v, needle);
    }
}

#[test]
fn decompression_bombs_and_oversized_files_are_refused() {
    let c = setup();
    // 600 MiB of zeros as state.json: compresses to a few KiB.
    let v = c.variant("bomb");
    {
        let f = fs::File::create(v.join("metadata.tar.zst")).unwrap();
        let enc = zstd::stream::write::Encoder::new(f, 19).unwrap();
        let mut b = tar::Builder::new(enc);
        let size = 600u64 << 20;
        let h = raw_header(b"state.json", tar::EntryType::Regular, size, None);
        b.append(&h, std::io::repeat(0).take(size)).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    assert!(fs::metadata(v.join("metadata.tar.zst")).unwrap().len() < 1 << 20);
    resign(&v, &c.lab.key, |_| {});
    c.refused(&v, "oversized");
    // Valid revisions of 14 MiB each (whitespace in a title), each under the
    // per-document limit, together over the decompression limit: stopped
    // by the ratio/cap rule.
    let v = c.variant("bomb2");
    {
        let genuine = metadata_entries(&c.bundle);
        let f = fs::File::create(v.join("metadata.tar.zst")).unwrap();
        let enc = zstd::stream::write::Encoder::new(f, 19).unwrap();
        let mut b = tar::Builder::new(enc);
        b.append(
            &raw_header(
                b"state.json",
                tar::EntryType::Regular,
                genuine[0].1.len() as u64,
                None,
            ),
            &genuine[0].1[..],
        )
        .unwrap();
        for i in 0..6 {
            let id = format!("{i:08}-0000-0000-0000-000000000000");
            let doc = format!(
                "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><upd:Properties UpdateType=\"Software\" /><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection></upd:Update>",
                " ".repeat(14 << 20)
            );
            let name = format!("revisions/{id}-r1.xml");
            b.append(
                &raw_header(
                    name.as_bytes(),
                    tar::EntryType::Regular,
                    doc.len() as u64,
                    None,
                ),
                doc.as_bytes(),
            )
            .unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    resign(&v, &c.lab.key, |m| m.counts.revisions = 6);
    c.refused(&v, "[decompression-limit]");
    // An oversized manifest.
    let v = c.variant("big-manifest");
    let mut m = fs::read(v.join("manifest.json")).unwrap();
    m.extend(std::iter::repeat_n(b' ', 17 << 20));
    fs::write(v.join("manifest.json"), m).unwrap();
    c.refused(&v, "oversized");
}

/// Format 3: a trusted-but-hostile exporter's content index and content
/// tree (re-signed, so every digest in SHA256SUMS is right).
#[test]
fn hostile_content_entries_are_refused() {
    let c = setup();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(c.bundle.join("content.json")).unwrap()).unwrap();
    let first = index[0]["parts"][0]["file"].as_str().unwrap().to_string();
    // An edited content index, re-signed.
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let v = c.variant(name);
        let mut idx = index.clone();
        edit(&mut idx);
        fs::write(v.join("content.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
        resign(&v, &c.lab.key, |_| {});
        v
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            edited("c-dotdot", &|i| {
                i[0]["parts"][0]["file"] = serde_json::json!("content/../../evil/x.cab")
            }),
            "unsafe",
        ),
        (
            edited("c-abs", &|i| {
                i[0]["path"] = serde_json::json!("/tmp/gapsync-evil")
            }),
            "unsafe",
        ),
        (
            edited("c-other-name", &|i| {
                let path = i[0]["path"].as_str().unwrap().to_string();
                i[0]["parts"][0]["file"] = serde_json::json!(format!("parts/{path}.part0001"))
            }),
            "malformed-content-index",
        ),
        (
            edited("c-volume", &|i| {
                i[0]["parts"][0]["volume"] = serde_json::json!(2)
            }),
            "malformed-content-index",
        ),
        (
            edited("c-twice", &|i| {
                let r = i[0].clone();
                i.as_array_mut().unwrap().push(r)
            }),
            "malformed-content-index",
        ),
        (
            edited("c-unlisted", &|i| {
                i.as_array_mut().unwrap().remove(0);
            }),
            "extra-file",
        ),
        (
            // Smaller than the metadata says (and the file cut to match).
            {
                let v = c.variant("c-lies");
                let data = fs::read(v.join(&first)).unwrap();
                let half = &data[..data.len() / 2];
                fs::write(v.join(&first), half).unwrap();
                let digest = {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(half))
                };
                let mut idx = index.clone();
                idx[0]["size"] = serde_json::json!(half.len());
                idx[0]["sha256"] = serde_json::json!(digest);
                idx[0]["parts"][0]["size"] = serde_json::json!(half.len());
                idx[0]["parts"][0]["sha256"] = serde_json::json!(digest);
                fs::write(v.join("content.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
                resign(&v, &c.lab.key, |_| {});
                v
            },
            "content-mismatch",
        ),
        (
            // An extra file in the content tree.
            {
                let v = c.variant("c-unknown");
                fs::write(
                    v.join("content")
                        .join(first.split('/').nth(1).unwrap())
                        .join("0000000000000000000000000000000000000000.cab"),
                    b"x",
                )
                .unwrap();
                resign(&v, &c.lab.key, |_| {});
                v
            },
            "extra-file",
        ),
    ];
    for (v, needle) in cases {
        c.refused(&v, needle);
    }
    // A content file that is a link, or a folder, where SHA256SUMS lists a
    // file.
    #[cfg(unix)]
    {
        let v = c.variant("c-symlink");
        fs::remove_file(v.join(&first)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", v.join(&first)).unwrap();
        c.refused(&v, "not a regular file");
    }
    let v = c.variant("c-folder");
    fs::remove_file(v.join(&first)).unwrap();
    fs::create_dir_all(v.join(&first)).unwrap();
    c.refused(&v, "missing-file");
    // The genuine bundle still imports.
    gs(&c.lab.plant, &["import", c.bundle.to_str().unwrap()]).ok();
}
