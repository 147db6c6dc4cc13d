//! Deterministic crash points for crash-safety tests.
//!
//! A caller arms one named point ([`arm`]; the binary does so from
//! `GAPSYNC_FAILPOINT=<name>`), and the process aborts when it reaches it,
//! as a crash or a SIGKILL would end it: no destructors, no cleanup.
//! Unarmed, a failpoint costs one atomic load. The library itself reads no
//! environment and prints nothing: the announcement before the abort is
//! the caller's hook. The names in use are listed in docs/architecture.md.

use std::sync::OnceLock;

struct Armed {
    name: String,
    announce: fn(&str),
}

static ARMED: OnceLock<Armed> = OnceLock::new();

/// Arms the failpoint `name`: reaching it calls `announce(name)`, then
/// aborts the process. Only the first call of a process takes effect; an
/// empty name arms nothing.
pub fn arm(name: &str, announce: fn(&str)) {
    if !name.is_empty() {
        let _ = ARMED.set(Armed {
            name: name.to_string(),
            announce,
        });
    }
}

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if let Some(armed) = ARMED.get()
        && armed.name == name
    {
        (armed.announce)(name);
        std::process::abort();
    }
}
