//! Which updates a product / classification / language filter selects:
//! the rule written once, for bundles (`export --product ...`), the
//! upstream role (GetRevisionIdList's Categories and Classifications) and
//! the downstream role.
//!
//! Rule: a software or driver update is selected when its current
//! revision names, among its prerequisites, one of the wanted products
//! (when products are given) and one of the wanted classifications (when
//! classifications are given) — with or without `IsCategory="true"`,
//! since real documents such as the Defender installer bundles name them
//! in plain `AtLeastOne` groups, as Windows WSUS also accepts — plus every
//! update such an update bundles.
//!
//! Rule (approved content): the content a server holds or sends "for
//! approved updates" is that of the updates with a live Install
//! deployment and of the updates their current revisions bundle — one
//! rule for `export --content approved` and `sync --content approved`
//! ([`fill_approved`]).
//!
//! The selections are temp tables of the connection, read by the store's
//! own queries right after (within one transaction or read snapshot).

use rusqlite::{Connection, params};

use crate::error::Result;

/// A wanted category and MS-WSUSSS's `Delta` flag for it (true: only
/// revisions added after the anchor are wanted; bundles pass false).
pub type CategoryPick = (String, bool);

/// Fills `temp.picked(update_id, delta_only)` by the module's rule.
/// `None` puts no condition on that kind of category. An update picked
/// through several (product, classification) pairs is `delta_only` only
/// when every pair is.
pub(crate) fn pick_by_categories(
    conn: &Connection,
    products: Option<&[CategoryPick]>,
    classifications: Option<&[CategoryPick]>,
) -> Result<()> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS picked (update_id TEXT PRIMARY KEY, delta_only INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS wanted_cats (kind TEXT NOT NULL, id TEXT NOT NULL, delta INTEGER NOT NULL);
         DELETE FROM temp.picked; DELETE FROM temp.wanted_cats;",
    )?;
    {
        let mut st = conn
            .prepare_cached("INSERT INTO temp.wanted_cats (kind, id, delta) VALUES (?1, ?2, ?3)")?;
        for (kind, list) in [("p", products), ("c", classifications)] {
            for (id, delta) in list.unwrap_or_default() {
                st.execute(params![kind, id, delta])?;
            }
        }
    }
    let mut joins = String::new();
    let mut delta = Vec::new();
    for (alias, kind, given) in [
        ("p", "p", products.is_some()),
        ("c", "c", classifications.is_some()),
    ] {
        if given {
            joins.push_str(&format!(
                " JOIN relationships x{alias} ON x{alias}.rev_id = u.current_rev AND x{alias}.rel = 'prerequisite' \
                 JOIN temp.wanted_cats {alias} ON {alias}.kind = '{kind}' AND {alias}.id = x{alias}.target_id"
            ));
            delta.push(format!("{alias}.delta"));
        }
    }
    let delta_only = if delta.is_empty() {
        "0".to_string()
    } else {
        format!("MIN({})", delta.join(" AND "))
    };
    conn.execute(
        &format!(
            "INSERT INTO temp.picked (update_id, delta_only) SELECT u.update_id, {delta_only} FROM updates u{joins} \
             WHERE u.kind IN ('software', 'driver') GROUP BY u.update_id"
        ),
        [],
    )?;
    // The updates the picked ones bundle.
    conn.execute(
        "INSERT INTO temp.picked (update_id, delta_only) \
         SELECT x.target_id, MIN(s.delta_only) FROM temp.picked s \
         JOIN updates u ON u.update_id = s.update_id \
         JOIN relationships x ON x.rev_id = u.current_rev AND x.rel = 'bundled' \
         WHERE x.target_id IN (SELECT update_id FROM updates) GROUP BY x.target_id \
         ON CONFLICT (update_id) DO UPDATE SET delta_only = MIN(delta_only, excluded.delta_only)",
        [],
    )?;
    Ok(())
}

/// Fills `temp.scope(update_id)` with what a bundle filtered so carries:
/// with no product and no classification, every update; otherwise every
/// category and detectoid (the catalog's structure) and the updates
/// [`pick_by_categories`] picks. Then `--language`: software and driver
/// updates that declare the languages they are for (`Properties/Language`)
/// leave the scope unless one of them is wanted; language-neutral updates
/// (no declaration) always stay.
pub(crate) fn fill_scope(
    conn: &Connection,
    products: &[String],
    classifications: &[String],
    languages: &[String],
) -> Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.scope; CREATE TEMP TABLE scope (update_id TEXT PRIMARY KEY) WITHOUT ROWID;",
    )?;
    if products.is_empty() && classifications.is_empty() {
        conn.execute("INSERT INTO temp.scope SELECT update_id FROM updates", [])?;
    } else {
        conn.execute(
            "INSERT INTO temp.scope SELECT update_id FROM updates WHERE kind IN ('category', 'detectoid')",
            [],
        )?;
        let picks = |ids: &[String]| -> Option<Vec<CategoryPick>> {
            (!ids.is_empty()).then(|| ids.iter().map(|i| (i.clone(), false)).collect())
        };
        pick_by_categories(
            conn,
            picks(products).as_deref(),
            picks(classifications).as_deref(),
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO temp.scope SELECT update_id FROM temp.picked",
            [],
        )?;
    }
    if languages.is_empty() {
        return Ok(());
    }
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.wanted_langs; CREATE TEMP TABLE wanted_langs (language TEXT PRIMARY KEY) WITHOUT ROWID;",
    )?;
    for l in languages {
        conn.execute(
            "INSERT OR IGNORE INTO temp.wanted_langs VALUES (lower(?1))",
            [l],
        )?;
    }
    conn.execute(
        "DELETE FROM temp.scope WHERE update_id IN (SELECT u.update_id FROM updates u \
         WHERE u.kind IN ('software', 'driver') \
         AND EXISTS (SELECT 1 FROM revision_languages l WHERE l.rev_id = u.current_rev) \
         AND NOT EXISTS (SELECT 1 FROM revision_languages l JOIN temp.wanted_langs w ON w.language = l.language WHERE l.rev_id = u.current_rev))",
        [],
    )?;
    Ok(())
}

/// The ids of the category updates of one category type (`Product`,
/// `UpdateClassification`, ...), sorted.
pub(crate) fn category_ids(conn: &Connection, category_type: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT update_id FROM updates WHERE kind = 'category' AND category_type = ?1 ORDER BY update_id",
    )?;
    let rows = st.query_map([category_type], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Fills `temp.approved(update_id)` by the approved-content rule of the
/// module: the updates with a live Install deployment (with `in_scope`,
/// only those in `temp.scope`, see [`fill_scope`]) and the updates their
/// current revisions bundle.
pub(crate) fn fill_approved(conn: &Connection, in_scope: bool) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.approved; CREATE TEMP TABLE approved (update_id TEXT PRIMARY KEY) WITHOUT ROWID;",
    )?;
    let scope_join = if in_scope {
        "JOIN temp.scope s ON s.update_id = d.update_id"
    } else {
        ""
    };
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO temp.approved SELECT DISTINCT d.update_id FROM deployments d {scope_join} \
             WHERE d.removed = 0 AND d.action = 'install'"
        ),
        [],
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO temp.approved SELECT DISTINCT x.target_id FROM relationships x \
         JOIN updates u ON u.current_rev = x.rev_id JOIN temp.approved a ON a.update_id = u.update_id \
         WHERE x.rel = 'bundled'",
        [],
    )?;
    Ok(())
}
