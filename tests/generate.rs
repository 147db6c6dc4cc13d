//! The synthetic catalog generator, end to end through the real parser and
//! store: determinism, content digests, structure, and a larger run.

use std::collections::{BTreeMap, BTreeSet};

use gapsync::progress::Silent;
use gapsync::seed::generate::{
    FIXED_CATEGORIES, FIXED_DETECTOIDS, GenerateOptions, GenerateReport, Plan, generate,
};
use gapsync::store::content::hash_file;
use gapsync::store::{Mode, Store};

const FIXED: u64 = FIXED_CATEGORIES + FIXED_DETECTOIDS;

/// (file name, size, SHA-1, SHA-256) of a `files` row.
type FileRow = (String, i64, Vec<u8>, Option<Vec<u8>>);

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store"), "gen-test", Mode::Autonomous).unwrap();
    (dir, store)
}

fn run(store: &mut Store, updates: u64, content_bytes: u64, seed: u64) -> GenerateReport {
    generate(
        store,
        &GenerateOptions {
            updates,
            content_bytes,
            seed,
        },
        &Silent,
    )
    .unwrap()
}

fn strings(store: &Store, sql: &str) -> Vec<String> {
    let mut st = store.conn().prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// (id, revision, SHA-256 of the XML) of every revision.
fn revisions(store: &Store) -> Vec<String> {
    strings(
        store,
        "SELECT update_id || '/' || revision || '/' || hex(xml_sha256) FROM revisions ORDER BY update_id, revision",
    )
}

/// (SHA-1, SHA-256, size, path) of every content file, with the SHA-256 of
/// the bytes on disk.
fn content(store: &Store) -> Vec<(String, String)> {
    let rows = strings(
        store,
        "SELECT hex(sha1) || '/' || hex(sha256) || '/' || size || '/' || rel_path FROM content ORDER BY sha1",
    );
    rows.into_iter()
        .map(|row| {
            let rel = row.rsplit('/').take(2).collect::<Vec<_>>();
            let path = store.content().path_of(&format!("{}/{}", rel[1], rel[0]));
            let (_, sha256, _) = hash_file(&path).unwrap();
            (row, hex::encode_upper(sha256))
        })
        .collect()
}

fn check_report(r: &GenerateReport, plan: &Plan) {
    assert_eq!(r.categories, FIXED_CATEGORIES);
    assert_eq!(r.detectoids, FIXED_DETECTOIDS);
    assert_eq!(r.bundles, plan.bundles);
    assert_eq!(r.drivers, plan.drivers);
    assert_eq!(r.software, plan.bundles + plan.leaves);
    assert_eq!(r.software + r.drivers, plan.updates());
    assert_eq!(
        r.revisions_added + r.revisions_already_present,
        plan.total_revisions()
    );
}

#[test]
fn same_seed_is_byte_identical_and_another_seed_adds_new_updates() {
    let (n, bytes) = (120, (13 << 20) + 12_345);
    let plan = Plan::new(n, bytes).unwrap();
    let (_da, mut a) = fresh();
    let (_db, mut b) = fresh();
    let ra = run(&mut a, n, bytes, 7);
    let rb = run(&mut b, n, bytes, 7);
    check_report(&ra, &plan);
    assert_eq!(ra.revisions_added, plan.total_revisions());
    assert_eq!(ra.revisions_already_present, 0);
    assert_eq!(
        serde_json::to_string(&ra).unwrap(),
        serde_json::to_string(&rb).unwrap()
    );
    assert_eq!(revisions(&a), revisions(&b));
    assert_eq!(revisions(&a).len() as u64, plan.total_revisions());
    let (ca, cb) = (content(&a), content(&b));
    assert_eq!(ca, cb);
    assert_eq!(ca.len() as u64, plan.content_files);
    assert!(ca.len() >= 3, "{ca:?}");

    // The same run again: everything is already there.
    let again = run(&mut a, n, bytes, 7);
    assert_eq!(again.revisions_added, 0);
    assert_eq!(again.revisions_already_present, plan.total_revisions());
    assert_eq!(revisions(&a), revisions(&b));
    assert_eq!(content(&a), cb);

    // Another seed: the fixed categories and detectoids come back as
    // already present, every update is new.
    let other = run(&mut a, n, 0, 8);
    assert_eq!(other.revisions_already_present, FIXED);
    assert_eq!(
        other.revisions_added,
        Plan::new(n, 0).unwrap().total_revisions() - FIXED
    );
    let status = a.status().unwrap();
    assert_eq!(status.updates.total as u64, FIXED + 2 * n);
    assert_eq!(status.updates.category as u64, FIXED_CATEGORIES);
    assert_eq!(status.updates.detectoid as u64, FIXED_DETECTOIDS);
    assert_eq!(status.content_files as u64, plan.content_files);
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM revisions") as u64,
        2 * plan.total_revisions() - FIXED
    );
}

#[test]
fn file_digests_match_the_stored_content() {
    let (n, bytes) = (40, (21 << 20) + 777);
    let plan = Plan::new(n, bytes).unwrap();
    let (_d, mut s) = fresh();
    let r = run(&mut s, n, bytes, 42);
    check_report(&r, &plan);
    assert_eq!(r.content_bytes, bytes);
    assert_eq!(r.content_files, plan.content_files);
    assert_eq!(plan.content_files, 5);

    // Every File of every revision, as parsed from the XML.
    let mut st = s
        .conn()
        .prepare(
            "SELECT DISTINCT f.file_name, f.size, f.sha1, f.sha256 FROM files f ORDER BY f.sha1",
        )
        .unwrap();
    let files: Vec<FileRow> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(files.len() as u64, plan.content_files);
    let mut total = 0u64;
    let mut sizes = BTreeSet::new();
    for (name, size, sha1, sha256) in &files {
        let sha1: [u8; 20] = sha1.as_slice().try_into().unwrap();
        let stored = s.content_file(&sha1).unwrap().expect("content file stored");
        let (d1, d256, len) = hash_file(&s.content().path_of(&stored.rel_path)).unwrap();
        assert_eq!(d1, sha1, "{name}: SHA-1 of the file on disk");
        assert_eq!(
            Some(&d256[..]),
            sha256.as_deref(),
            "{name}: SHA-256 of the file on disk"
        );
        assert_eq!(len, *size as u64, "{name}: size");
        assert!(len >= 64 << 10, "{name}: {len}");
        let ext = name.rsplit('.').next().unwrap();
        assert!(["cab", "msu", "exe"].contains(&ext), "{name}");
        assert!(name.contains(&format!("_{}.", hex::encode(sha1))), "{name}");
        assert!(name.contains("-kb"), "{name}");
        assert!(
            stored.rel_path.ends_with(&format!(".{ext}")),
            "{}",
            stored.rel_path
        );
        total += len;
        sizes.insert(len);
    }
    assert_eq!(total, bytes);
    assert_eq!(sizes.len(), files.len(), "sizes vary: {sizes:?}");
    // Incompressible-looking bytes: all 256 values in the first KiB.
    let first = &files[0];
    let stored = s
        .content_file(&first.2.as_slice().try_into().unwrap())
        .unwrap()
        .unwrap();
    let bytes_on_disk = std::fs::read(s.content().path_of(&stored.rel_path)).unwrap();
    let distinct: BTreeSet<u8> = bytes_on_disk[..4096].iter().copied().collect();
    assert!(distinct.len() > 250);
    // Nothing left behind in staging.
    assert_eq!(std::fs::read_dir(s.content().staging()).unwrap().count(), 0);
    // Files sit on leaves only (software updates that bundle nothing).
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM files f JOIN revisions r ON r.rev_id = f.rev_id \
             WHERE r.kind <> 'software' OR EXISTS (SELECT 1 FROM relationships x WHERE x.rev_id = f.rev_id AND x.rel = 'bundled')"
        ),
        0
    );
}

#[test]
fn catalog_structure() {
    let n = 400;
    let plan = Plan::new(n, 0).unwrap();
    let (_d, mut s) = fresh();
    let r = run(&mut s, n, 0, 3);
    check_report(&r, &plan);
    assert_eq!((plan.bundles, plan.drivers, plan.leaves), (100, 16, 284));
    let st = s.status().unwrap();
    assert_eq!(st.updates.software as u64, plan.bundles + plan.leaves);
    assert_eq!(st.updates.driver as u64, plan.drivers);
    assert_eq!(st.updates.category as u64, FIXED_CATEGORIES);
    assert_eq!(st.updates.detectoid as u64, FIXED_DETECTOIDS);
    assert_eq!(st.revisions as u64, plan.total_revisions());
    assert_eq!(st.content_files, 0);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM files"), 0);

    // Category tree: one company, families under it, products under families.
    let by_type = |t: &str| {
        count(
            &s,
            &format!(
                "SELECT COUNT(*) FROM updates WHERE kind = 'category' AND category_type = '{t}'"
            ),
        )
    };
    assert_eq!(by_type("Company"), 1);
    assert_eq!(by_type("ProductFamily"), 3);
    assert!(by_type("Product") >= 6);
    assert_eq!(by_type("UpdateClassification"), 7);
    for (id, title) in [
        ("0fa1201d-4330-4fa8-8ae9-b877473b6441", "Security Updates"),
        ("e6cf1350-c01b-414d-a61f-263d14d133b4", "Critical Updates"),
        ("e0789628-ce08-4437-be74-2495b842f43b", "Definition Updates"),
        ("cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83", "Updates"),
        ("28bc880e-0592-4cbf-8f95-c79b17911d5f", "Update Rollups"),
        ("b54e7d24-7add-428f-8b75-90a396fa584f", "Feature Packs"),
        ("ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0", "Drivers"),
    ] {
        let row = strings(
            &s,
            &format!(
                "SELECT r.category_type || '/' || r.revision || '/' || r.title FROM revisions r WHERE r.update_id = '{id}'"
            ),
        );
        assert_eq!(row, vec![format!("UpdateClassification/1/{title}")]);
    }
    let parent_of = |child: &str, parent: &str| {
        count(
            &s,
            &format!(
                "SELECT COUNT(*) FROM updates u WHERE u.category_type = '{child}' AND NOT EXISTS \
                 (SELECT 1 FROM relationships x JOIN updates p ON p.update_id = x.target_id \
                  WHERE x.rev_id = u.current_rev AND x.rel = 'prerequisite' AND x.is_category = 1 \
                  AND p.category_type = '{parent}')"
            ),
        )
    };
    assert_eq!(parent_of("ProductFamily", "Company"), 0);
    assert_eq!(parent_of("Product", "ProductFamily"), 0);

    // Every software and driver update: a product and a classification
    // (IsCategory prerequisites on existing categories) and a required
    // detectoid.
    let missing = |what: &str| {
        count(
            &s,
            &format!(
                "SELECT COUNT(*) FROM updates u WHERE u.kind IN ('software', 'driver') AND NOT EXISTS \
                 (SELECT 1 FROM relationships x JOIN updates c ON c.update_id = x.target_id \
                  WHERE x.rev_id = u.current_rev AND x.rel = 'prerequisite' AND {what})"
            ),
        )
    };
    assert_eq!(
        missing("x.is_category = 1 AND c.category_type = 'Product'"),
        0
    );
    assert_eq!(
        missing("x.is_category = 1 AND c.category_type = 'UpdateClassification'"),
        0
    );
    assert_eq!(
        missing("x.is_category = 0 AND x.grp = 0 AND c.kind = 'detectoid'"),
        0
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM relationships x WHERE x.rel = 'prerequisite' \
             AND NOT EXISTS (SELECT 1 FROM updates c WHERE c.update_id = x.target_id)"
        ),
        0,
        "every prerequisite exists"
    );
    // Drivers are in the Drivers classification.
    assert_eq!(
        s.list_updates(&gapsync::store::UpdateFilter {
            classification: Some("ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0".into()),
            ..Default::default()
        })
        .unwrap()
        .len() as u64,
        plan.drivers
    );

    // Bundles: 1–3 leaves each, pinned to revisions that exist; every
    // bundled leaf is a software update that bundles nothing itself.
    let bundles = strings(
        &s,
        "SELECT DISTINCT u.update_id FROM updates u JOIN relationships x ON x.rev_id = u.current_rev \
         WHERE x.rel = 'bundled'",
    );
    assert_eq!(bundles.len() as u64, plan.bundles);
    let per_bundle = strings(
        &s,
        "SELECT COUNT(*) || '' FROM relationships x JOIN updates u ON u.current_rev = x.rev_id \
         WHERE x.rel = 'bundled' GROUP BY x.rev_id",
    );
    let sizes: BTreeSet<String> = per_bundle.into_iter().collect();
    assert!(
        sizes.iter().all(|k| ["1", "2", "3"].contains(&k.as_str())),
        "{sizes:?}"
    );
    assert!(sizes.len() >= 2, "varied bundle sizes: {sizes:?}");
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM relationships x WHERE x.rel = 'bundled' AND NOT EXISTS \
             (SELECT 1 FROM revisions r WHERE r.update_id = x.target_id AND r.revision = x.target_revision \
              AND r.kind = 'software')"
        ),
        0,
        "bundled revisions exist"
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM relationships x WHERE x.rel = 'bundled' AND x.target_revision <> \
             (SELECT MAX(r.revision) FROM revisions r WHERE r.update_id = x.target_id)"
        ),
        0,
        "bundles name their leaves' newest revision"
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(DISTINCT target_id) FROM relationships WHERE rel = 'bundled'"
        ) as u64,
        plan.bundled_leaves
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM relationships WHERE rel = 'bundled' AND target_revision = 101"
        ) > 0,
        "a bundle names a leaf's second revision"
    );

    // Supersedence: bundles supersede earlier bundles of the same product,
    // in chains.
    let superseding: BTreeMap<String, String> = strings(
        &s,
        "SELECT u.update_id || ' ' || x.target_id FROM relationships x JOIN updates u ON u.current_rev = x.rev_id \
         WHERE x.rel = 'superseded'",
    )
    .into_iter()
    .map(|l| {
        let (a, b) = l.split_once(' ').unwrap();
        (a.to_string(), b.to_string())
    })
    .collect();
    assert!(!superseding.is_empty());
    let bundle_set: BTreeSet<&String> = bundles.iter().collect();
    for (newer, older) in &superseding {
        assert!(bundle_set.contains(newer) && bundle_set.contains(older));
        let product = |id: &str| {
            strings(
                &s,
                &format!(
                    "SELECT x.target_id FROM relationships x JOIN updates u ON u.current_rev = x.rev_id \
                     JOIN updates c ON c.update_id = x.target_id WHERE u.update_id = '{id}' \
                     AND c.category_type = 'Product'"
                ),
            )
        };
        assert_eq!(product(newer), product(older));
        let created = |id: &str| {
            strings(
                &s,
                &format!(
                    "SELECT creation_date FROM revisions WHERE update_id = '{id}' AND revision = 100"
                ),
            )
        };
        assert!(created(newer) > created(older));
    }
    let chain = superseding
        .values()
        .any(|older| superseding.contains_key(older));
    assert!(chain, "a supersedence chain of at least three bundles");
    assert_eq!(
        s.superseded_by(superseding.values().next().unwrap())
            .unwrap()
            .len(),
        1
    );

    // Second revisions: every 20th update, with a changed title.
    let twice = strings(
        &s,
        "SELECT update_id FROM revisions GROUP BY update_id HAVING COUNT(*) = 2 ORDER BY update_id",
    );
    assert_eq!(twice.len() as u64, plan.second_revisions);
    for id in &twice {
        let revs = s.revisions_of(id).unwrap();
        assert_eq!(revs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![100, 101]);
        let titles = strings(
            &s,
            &format!("SELECT title FROM revisions WHERE update_id = '{id}' ORDER BY revision"),
        );
        assert_ne!(titles[0], titles[1]);
        let current: i64 = count(
            &s,
            &format!("SELECT current_rev FROM updates WHERE update_id = '{id}'"),
        );
        assert_eq!(current, revs[1].0, "the newest revision is current");
    }
    let in_twice = twice
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    let twice_bundles = count(
        &s,
        &format!(
            "SELECT COUNT(DISTINCT u.update_id) FROM updates u JOIN relationships x ON x.rev_id = u.current_rev \
             WHERE x.rel = 'bundled' AND u.update_id IN ({in_twice})"
        ),
    );
    assert!(
        twice_bundles > 0 && (twice_bundles as u64) < plan.second_revisions,
        "bundles and leaves get them"
    );

    // Languages: bundles carry en, de, fr, ja (and es), with non-ASCII text.
    let langs = strings(
        &s,
        "SELECT DISTINCT l.language FROM localized l JOIN relationships x ON x.rev_id = l.rev_id \
         WHERE x.rel = 'bundled' ORDER BY 1",
    );
    for l in ["de", "en", "fr", "ja"] {
        assert!(langs.contains(&l.to_string()), "{langs:?}");
    }
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM localized WHERE language = 'ja' AND title LIKE '%用%'"
        ) > 0
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM localized WHERE language = 'fr' AND description LIKE '%à%'"
        ) > 0
    );
    // KB articles on bundles; HIDDEN titles on bundled leaves; escaped names
    // come back unescaped.
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(DISTINCT r.update_id) FROM revisions r JOIN relationships x ON x.rev_id = r.rev_id WHERE x.rel = 'bundled' AND r.kb_article IS NOT NULL"
        ) as u64,
        plan.bundles
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM revisions WHERE title LIKE 'HIDDEN: %'"
        ) as u64
            >= plan.bundled_leaves
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM revisions WHERE title LIKE '%Apps & Tools <LTSC>%'"
        ) > 0
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM revisions WHERE kind = 'driver' AND title LIKE '%&%'"
        ) > 0
            || plan.drivers < 10
    );
    // Update XML uses the real namespace and prefix.
    let xml = s
        .revision_xml(count(&s, "SELECT MAX(rev_id) FROM revisions"))
        .unwrap();
    let xml = String::from_utf8(xml).unwrap();
    assert!(xml.starts_with("<upd:Update "), "{xml}");
    assert!(xml.contains("xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\""));
}

#[test]
fn edge_cases() {
    let (_d, mut s) = fresh();
    let r = run(&mut s, 0, 0, 1);
    assert_eq!(r.revisions_added, FIXED);
    assert_eq!((r.software, r.drivers, r.content_files), (0, 0, 0));
    // Content needs leaves to carry it.
    let err = generate(
        &mut s,
        &GenerateOptions {
            updates: 0,
            content_bytes: 10,
            seed: 1,
        },
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("content"), "{err}");
    // Tiny content: one file holding all of it.
    let r = run(&mut s, 3, 1000, 1);
    assert_eq!((r.software, r.content_files, r.content_bytes), (3, 1, 1000));
    assert_eq!(r.revisions_already_present, FIXED);
    assert_eq!(s.status().unwrap().content_bytes, 1000);
}

#[test]
fn larger_run_completes() {
    let n = 5_000;
    let plan = Plan::new(n, 0).unwrap();
    let (_d, mut s) = fresh();
    let r = run(&mut s, n, 0, 99);
    check_report(&r, &plan);
    assert_eq!(r.revisions_added, plan.total_revisions());
    assert_eq!(s.status().unwrap().updates.total as u64, FIXED + n);
}
