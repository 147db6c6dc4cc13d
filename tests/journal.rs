//! The change journal: every kind of change gets a sequence number, and
//! "everything after anchor A" returns exactly the changes after A.

mod common;

use common::{FileSpec, noise, update_xml};
use gapsync::store::content::Expected;
use gapsync::store::deployments::{Action, Approval};
use gapsync::store::journal::{Anchor, ChangeKind};
use gapsync::store::{Mode, Store};
use sha1::Digest;

#[test]
fn range_queries_return_exactly_the_changes_after_each_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::init(&tmp.path().join("s"), "s", Mode::Autonomous).unwrap();
    let mut anchors: Vec<Anchor> = vec![store.anchor().unwrap()];
    let mut expected: Vec<ChangeKind> = Vec::new();

    let data = noise(10_000, 1);
    let id = "bbbbbbbb-0000-0000-0000-000000000001";
    let xml = update_xml(
        id,
        1,
        "Software",
        "t",
        &[],
        &[FileSpec {
            name: "a.cab",
            data: &data,
        }],
    );
    {
        let mut batch = store.catalog_batch().unwrap();
        batch.add_revision("a.xml", xml.as_bytes()).unwrap();
        let exp = Expected {
            sha1: sha1::Sha1::digest(&data).into(),
            sha256: None,
            size: Some(data.len() as u64),
        };
        let staged = batch
            .content()
            .stage(&mut &data[..], "a.cab", &exp)
            .unwrap();
        batch.add_content(staged);
        batch.commit().unwrap();
    }
    expected.extend([ChangeKind::RevisionAdded, ChangeKind::ContentArrived]);
    anchors.push(store.anchor().unwrap());

    store.add_group("G", None).unwrap();
    expected.push(ChangeKind::GroupAdded);
    anchors.push(store.anchor().unwrap());

    let approval = Approval {
        update_id: id,
        group: "G",
        action: Action::Install,
        deadline: None,
        admin_name: "t",
    };
    store.approve(&approval).unwrap();
    expected.push(ChangeKind::DeploymentCreated);
    anchors.push(store.anchor().unwrap());

    store
        .approve(&Approval {
            action: Action::Block,
            ..approval.clone()
        })
        .unwrap();
    expected.push(ChangeKind::DeploymentChanged);
    anchors.push(store.anchor().unwrap());

    store.unapprove(id, "G").unwrap();
    expected.push(ChangeKind::DeploymentRemoved);
    anchors.push(store.anchor().unwrap());

    store.approve(&approval).unwrap();
    expected.push(ChangeKind::DeploymentCreated);
    store.decline(id).unwrap();
    expected.extend([ChangeKind::DeploymentRemoved, ChangeKind::UpdateDeclined]);
    anchors.push(store.anchor().unwrap());

    store.add_group("H", None).unwrap();
    store.remove_group("H").unwrap();
    expected.extend([ChangeKind::GroupAdded, ChangeKind::GroupRemoved]);
    anchors.push(store.anchor().unwrap());

    // Every kind is covered.
    for k in ChangeKind::ALL {
        assert!(expected.contains(&k), "{k:?} not exercised");
    }
    let all = store.changes_since(&anchors[0]).unwrap();
    assert_eq!(all.iter().map(|c| c.kind).collect::<Vec<_>>(), expected);
    // Sequence numbers strictly increase.
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    for a in &anchors {
        let after = store.changes_since(a).unwrap();
        let want: Vec<i64> = all.iter().map(|c| c.seq).filter(|s| *s > a.seq).collect();
        assert_eq!(
            after.iter().map(|c| c.seq).collect::<Vec<_>>(),
            want,
            "after {a}"
        );
    }
    assert!(
        store
            .changes_since(anchors.last().unwrap())
            .unwrap()
            .is_empty()
    );

    // Subjects name what changed.
    assert_eq!(all[0].subject, format!("{id}/1"));
    assert_eq!(all[1].subject, common::sha1_hex_upper(&data));
    assert_eq!(all[8].subject, id);

    // Anchors round-trip through their string form; foreign and future ones are refused.
    let head = store.anchor().unwrap();
    assert_eq!(store.own_anchor(&head.to_string()).unwrap(), head);
    let foreign = Anchor {
        server_id: uuid::Uuid::new_v4(),
        seq: 1,
    };
    assert!(matches!(
        store.own_anchor(&foreign.to_string()),
        Err(gapsync::Error::ForeignAnchor { .. })
    ));
    let future = Anchor {
        seq: head.seq + 1,
        ..head
    };
    assert!(matches!(
        store.own_anchor(&future.to_string()),
        Err(gapsync::Error::BadAnchor { .. })
    ));
}

#[test]
fn failed_changes_leave_no_journal_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::init(&tmp.path().join("s"), "s", Mode::Autonomous).unwrap();
    let head = store.anchor().unwrap();
    assert!(store.add_group("All Computers", None).is_err());
    assert!(store.remove_group("nope").is_err());
    {
        let mut batch = store.catalog_batch().unwrap();
        batch
            .add_revision(
                "a.xml",
                update_xml(
                    "cccccccc-0000-0000-0000-000000000001",
                    1,
                    "Software",
                    "t",
                    &[],
                    &[],
                )
                .as_bytes(),
            )
            .unwrap();
        assert!(batch.add_revision("b.xml", b"<not-an-update/>").is_err());
        // dropped without commit: rolled back
    }
    assert_eq!(store.anchor().unwrap(), head);
    assert!(store.changes_since(&head).unwrap().is_empty());
}

#[test]
fn changes_since_is_an_indexed_range_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(&tmp.path().join("s"), "s", Mode::Autonomous).unwrap();
    let plan: Vec<String> = {
        let mut st = store
            .conn()
            .prepare("EXPLAIN QUERY PLAN SELECT seq, kind, subject, at FROM journal WHERE seq > ?1 ORDER BY seq")
            .unwrap();
        st.query_map([5], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let plan = plan.join(" | ");
    assert!(
        plan.contains("USING INTEGER PRIMARY KEY (rowid>?)"),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
}
