//! Deterministic crash points for crash-safety tests.
//!
//! `GAPSYNC_FAILPOINT=<name>` makes the process abort (as a crash or a
//! SIGKILL would end it: no destructors, no cleanup) when it reaches the
//! named point. Unset, a failpoint costs one cached environment lookup.
//! The names in use are listed in docs/architecture.md.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var("GAPSYNC_FAILPOINT")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("gapsync: failpoint {name} reached, aborting");
        std::process::abort();
    }
}
