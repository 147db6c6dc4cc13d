//! Target groups and computers (MS-WSUSOD 2.5.3.1–2.5.3.2).
//!
//! Groups form a tree under the built-in "All Computers"; "Unassigned
//! Computers" holds computers no group was chosen for. Group names are
//! unique without regard to case. Group changes are replicated state and
//! journaled; computers are local to a server and are not.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::state;
use crate::store::{ALL_COMPUTERS, Store, UNASSIGNED_COMPUTERS, now_rfc3339};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub builtin: bool,
    pub computers: i64,
}

/// What `groups remove` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupRemoval {
    pub id: String,
    pub name: String,
    /// Computers that were in the group (names), now in `computers_moved_to`.
    pub computers_moved: Vec<String>,
    pub computers_moved_to: String,
    /// The group's approvals, removed (kept as dead deployments).
    pub approvals_removed: Vec<RemovedApproval>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemovedApproval {
    pub deployment_id: String,
    pub update_id: String,
    pub revision: i32,
    pub action: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Computer {
    pub id: String,
    pub name: String,
    pub group: String,
    pub added: String,
    /// What a Windows client reported (RegisterComputer): OS
    /// `major.minor.build`, processor architecture; its last contact and
    /// last event report (MS-WUSP). None for a computer that never called.
    pub os: Option<String>,
    pub arch: Option<String>,
    pub last_sync: Option<String>,
    pub last_report: Option<String>,
}

impl Store {
    /// Resolves a group name (case-insensitive) or id to its id.
    pub fn group_id(&self, name: &str) -> Result<String> {
        let found: Option<String> = self
            .conn()
            .query_row(
                "SELECT group_id FROM groups WHERE name = ?1 COLLATE NOCASE OR group_id = lower(?1)",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        found.ok_or_else(|| Error::UnknownGroup(name.to_string()))
    }

    pub fn list_groups(&self) -> Result<Vec<Group>> {
        let mut st = self.conn().prepare(
            "SELECT g.group_id, g.name, p.name, g.builtin, \
             (SELECT COUNT(*) FROM computers c WHERE c.group_id = g.group_id) \
             FROM groups g LEFT JOIN groups p ON p.group_id = g.parent_id \
             ORDER BY g.builtin DESC, g.name COLLATE NOCASE",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Group {
                id: r.get(0)?,
                name: r.get(1)?,
                parent: r.get(2)?,
                builtin: r.get::<_, i64>(3)? != 0,
                computers: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Adds a group under `parent` (default "All Computers").
    pub fn add_group(&mut self, name: &str, parent: Option<&str>) -> Result<Group> {
        self.refuse_on_replica("groups")?;
        let name = name.trim();
        check_name("group name", name)?;
        if self.group_id(name).is_ok() {
            return Err(Error::GroupExists(name.to_string()));
        }
        let parent_id = match parent {
            Some(p) => self.group_id(p)?,
            None => ALL_COMPUTERS.0.to_string(),
        };
        if parent_id == UNASSIGNED_COMPUTERS.0 {
            return Err(Error::GroupUnderUnassigned);
        }
        let id = Uuid::new_v4().to_string();
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        state::write_group(&tx, &id, name, Some(&parent_id), false, &now)?;
        tx.commit()?;
        let parent_name: String = self.conn().query_row(
            "SELECT name FROM groups WHERE group_id = ?1",
            [&parent_id],
            |r| r.get(0),
        )?;
        Ok(Group {
            id,
            name: name.to_string(),
            parent: Some(parent_name),
            builtin: false,
            computers: 0,
        })
    }

    /// Removes a group: refused for built-in groups and groups with
    /// subgroups. Its computers move to "Unassigned Computers" and its
    /// approvals (live deployments) are removed (kept as dead deployments),
    /// all journaled; the report lists both.
    pub fn remove_group(&mut self, name: &str) -> Result<GroupRemoval> {
        self.refuse_on_replica("groups")?;
        let id = self.group_id(name)?;
        if id == ALL_COMPUTERS.0 || id == UNASSIGNED_COMPUTERS.0 {
            return Err(Error::BuiltinGroup(name.to_string()));
        }
        let children: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM groups WHERE parent_id = ?1",
            [&id],
            |r| r.get(0),
        )?;
        if children > 0 {
            return Err(Error::HasSubgroups {
                name: name.to_string(),
                subgroups: children as u64,
            });
        }
        let now = now_rfc3339();
        let tx = self.conn_mut().transaction()?;
        let group_name: String =
            tx.query_row("SELECT name FROM groups WHERE group_id = ?1", [&id], |r| {
                r.get(0)
            })?;
        let approvals: Vec<RemovedApproval> = {
            let mut st = tx.prepare(
                "SELECT deployment_id, update_id, revision, action FROM deployments \
                 WHERE group_id = ?1 AND removed = 0 ORDER BY update_id",
            )?;
            let rows = st.query_map([&id], |r| {
                Ok(RemovedApproval {
                    deployment_id: r.get(0)?,
                    update_id: r.get(1)?,
                    revision: r.get(2)?,
                    action: r.get(3)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for a in &approvals {
            state::remove_deployment(&tx, &a.deployment_id, &now)?;
        }
        let computers = state::remove_group(&tx, &id, &now)?;
        tx.commit()?;
        Ok(GroupRemoval {
            id,
            name: group_name,
            computers_moved: computers,
            computers_moved_to: UNASSIGNED_COMPUTERS.1.to_string(),
            approvals_removed: approvals,
        })
    }

    /// Adds a computer (to "Unassigned Computers" unless a group is named).
    pub fn add_computer(&mut self, name: &str, group: Option<&str>) -> Result<Computer> {
        let name = name.trim();
        check_name("computer name", name)?;
        let group_id = match group {
            Some(g) => self.group_id(g)?,
            None => UNASSIGNED_COMPUTERS.0.to_string(),
        };
        if group_id == ALL_COMPUTERS.0 {
            return Err(Error::ComputerInAllComputers);
        }
        let exists: Option<String> = self
            .conn()
            .query_row(
                "SELECT computer_id FROM computers WHERE name = ?1 COLLATE NOCASE",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(Error::ComputerExists(name.to_string()));
        }
        let id = Uuid::new_v4().to_string();
        let added = now_rfc3339();
        self.conn().execute(
            "INSERT INTO computers (computer_id, name, group_id, added) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, group_id, added],
        )?;
        let group: String = self.conn().query_row(
            "SELECT name FROM groups WHERE group_id = ?1",
            [&group_id],
            |r| r.get(0),
        )?;
        Ok(Computer {
            id,
            name: name.to_string(),
            group,
            added,
            os: None,
            arch: None,
            last_sync: None,
            last_report: None,
        })
    }

    pub fn list_computers(&self) -> Result<Vec<Computer>> {
        self.computers_where(None)
    }

    /// Moves a computer (id, or a name that names one computer) to a group
    /// (server-side targeting): any group but "All Computers".
    pub fn move_computer(&mut self, computer: &str, group: &str) -> Result<Computer> {
        let id = self.computer_id(computer)?;
        let group_id = self.group_id(group)?;
        if group_id == ALL_COMPUTERS.0 {
            return Err(Error::ComputerInAllComputers);
        }
        self.conn().execute(
            "UPDATE computers SET group_id = ?2 WHERE computer_id = ?1",
            params![id, group_id],
        )?;
        self.computers_where(Some(&id))?
            .pop()
            .ok_or_else(|| Error::UnknownComputer(computer.to_string()))
    }

    /// Every computer, or the one with id `id`, by name.
    fn computers_where(&self, id: Option<&str>) -> Result<Vec<Computer>> {
        let mut st = self.conn().prepare(
            "SELECT c.computer_id, c.name, g.name, c.added, c.os_version, c.arch, c.last_sync, c.last_report \
             FROM computers c JOIN groups g ON g.group_id = c.group_id \
             WHERE ?1 IS NULL OR c.computer_id = ?1 ORDER BY c.name COLLATE NOCASE, c.computer_id",
        )?;
        let rows = st.query_map([id], |r| {
            Ok(Computer {
                id: r.get(0)?,
                name: r.get(1)?,
                group: r.get(2)?,
                added: r.get(3)?,
                os: r.get(4)?,
                arch: r.get(5)?,
                last_sync: r.get(6)?,
                last_report: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// Rule: a group or computer name is 1-256 characters (after trimming)
/// that all show: no control character (Unicode Cc), no invisible
/// formatting or bidirectional-control character (Cf: zero-width spaces
/// and joiners, LRM/RLM, the LRE/RLE/PDF/LRO/RLO embeddings and overrides,
/// the LRI/RLI/FSI/PDI isolates, BOM, ...), no line or paragraph separator,
/// no Hangul filler. Such names pass for other names, or reorder the text
/// around them, wherever they are printed. A bad name is a usage error
/// (exit 2) naming the code point.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: String| Error::bad_argument(format!("{what} \"{}\"", visible(name)), why);
    if name.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    let n = name.chars().count();
    if n > 256 {
        return Err(bad(format!("{n} characters; at most 256")));
    }
    if let Some(c) = name.chars().find(|&c| invisible(c).is_some()) {
        let kind = invisible(c).unwrap_or_default();
        let label = char_name(c).map(|l| format!(" ({l})")).unwrap_or_default();
        return Err(bad(format!(
            "contains U+{:04X}{label}, {kind}; a name must be visible text",
            c as u32
        )));
    }
    Ok(())
}

/// The name with each character `check_name` refuses written as `<U+XXXX>`
/// (so a message quoting it cannot be reordered by it).
fn visible(name: &str) -> String {
    name.chars()
        .map(|c| match invisible(c) {
            Some(_) => format!("<U+{:04X}>", c as u32),
            None => c.to_string(),
        })
        .collect()
}

/// What kind of refused character `c` is, if it is one.
fn invisible(c: char) -> Option<&'static str> {
    let u = c as u32;
    if c.is_control() {
        return Some("a control character");
    }
    const BIDI: &[(u32, u32)] = &[
        (0x061C, 0x061C),
        (0x200E, 0x200F),
        (0x202A, 0x202E),
        (0x2066, 0x2069),
    ];
    // General category Cf (Unicode 15.1) besides the bidi controls above.
    const FORMAT: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200D),
        (0x2060, 0x2064),
        (0x206A, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    // Line and paragraph separators (Zl, Zp) and the Hangul fillers,
    // which render as nothing.
    const OTHER: &[(u32, u32)] = &[
        (0x2028, 0x2029),
        (0x115F, 0x1160),
        (0x3164, 0x3164),
        (0xFFA0, 0xFFA0),
    ];
    let within = |t: &[(u32, u32)]| t.iter().any(|&(a, b)| (a..=b).contains(&u));
    if within(BIDI) {
        Some("a bidirectional-control character")
    } else if within(FORMAT) || within(OTHER) {
        Some("an invisible character")
    } else {
        None
    }
}

/// The Unicode names of the refused characters one meets most.
fn char_name(c: char) -> Option<&'static str> {
    Some(match c as u32 {
        0x00AD => "SOFT HYPHEN",
        0x061C => "ARABIC LETTER MARK",
        0x200B => "ZERO WIDTH SPACE",
        0x200C => "ZERO WIDTH NON-JOINER",
        0x200D => "ZERO WIDTH JOINER",
        0x200E => "LEFT-TO-RIGHT MARK",
        0x200F => "RIGHT-TO-LEFT MARK",
        0x2028 => "LINE SEPARATOR",
        0x2029 => "PARAGRAPH SEPARATOR",
        0x202A => "LEFT-TO-RIGHT EMBEDDING",
        0x202B => "RIGHT-TO-LEFT EMBEDDING",
        0x202C => "POP DIRECTIONAL FORMATTING",
        0x202D => "LEFT-TO-RIGHT OVERRIDE",
        0x202E => "RIGHT-TO-LEFT OVERRIDE",
        0x2060 => "WORD JOINER",
        0x2066 => "LEFT-TO-RIGHT ISOLATE",
        0x2067 => "RIGHT-TO-LEFT ISOLATE",
        0x2068 => "FIRST STRONG ISOLATE",
        0x2069 => "POP DIRECTIONAL ISOLATE",
        0xFEFF => "ZERO WIDTH NO-BREAK SPACE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_invisible_or_bidi_characters_are_refused() {
        for (name, code) in [
            ("Pilot\u{202E}", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
            ("Pi\u{200B}lot", "U+200B (ZERO WIDTH SPACE)"),
            ("\u{2067}Pilot\u{2069}", "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
            ("Pilot\u{E0041}", "U+E0041"),
            ("Pilot\u{7}", "U+0007"),
            ("Pilot\u{2028}x", "U+2028 (LINE SEPARATOR)"),
        ] {
            let e = check_name("group name", name).unwrap_err();
            assert!(e.is_usage(), "{e}");
            let text = e.to_string();
            assert!(text.contains(code), "{text}");
            // The message itself carries no refused character.
            assert!(text.chars().all(|c| invisible(c).is_none()), "{text:?}");
        }
        for ok in ["Pilot", "Équipe Nord", "工作站", "שרתים", "Lab 2 (old)"] {
            check_name("group name", ok).unwrap();
        }
        assert!(check_name("group name", "").is_err());
        assert!(check_name("group name", &"x".repeat(257)).is_err());
        check_name("group name", &"é".repeat(256)).unwrap();
    }
}
