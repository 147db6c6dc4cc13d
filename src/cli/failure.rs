//! How a failed command ends: one message on stderr (each cause said once),
//! the exit code of its class, and with `--json` the same failure as a JSON
//! object on stdout.
//!
//! Exit codes are one contract (README, `--help`):
//! - 0 ok;
//! - 1 runtime error: I/O, lock, network, not found, a malformed key file;
//! - 2 usage: any bad flag value or combination (clap's or ours);
//! - 3 verification failure: signature, digest, size, chain rule, trust.

use std::fmt;
use std::process::ExitCode;

use serde::Serialize;

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_VERIFICATION: u8 = 3;

/// A bad flag value or combination, found by our own validation (clap's
/// own refusals exit 2 before `run`). Names the flag, the value given and
/// what is allowed.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `Err(usage!(...))`: a usage error (exit 2) with a formatted message.
macro_rules! usage {
    ($($arg:tt)*) => {
        anyhow::Error::new($crate::cli::failure::Usage(format!($($arg)*)))
    };
}
pub(crate) use usage;

/// The class of a failure: its exit code and, for a failed verification,
/// the name of the rule.
pub fn classify(e: &anyhow::Error) -> (u8, Option<&'static str>) {
    for cause in e.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return (EXIT_USAGE, None);
        }
        if let Some(g) = cause.downcast_ref::<gapsync::Error>() {
            if let gapsync::Error::Verification { rule, .. } = g {
                return (EXIT_VERIFICATION, Some(rule));
            }
            if g.is_verification() {
                return (EXIT_VERIFICATION, None);
            }
            if g.is_usage() {
                return (EXIT_USAGE, None);
            }
        }
    }
    (EXIT_RUNTIME, None)
}

/// The message: the outermost context first, then each cause whose text
/// the message does not already carry (so no cause is said twice).
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    error: JsonError<'a>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    code: u8,
    rule: Option<&'a str>,
    message: &'a str,
}

/// Prints the failure (stderr; and stdout as JSON when `json`) and returns
/// the exit code of its class.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    if stdout_closed(e) {
        // The reader of our output stopped early (`gapsync updates list |
        // head`): that is its choice, not a failure to report.
        return ExitCode::SUCCESS;
    }
    let (code, rule) = classify(e);
    let msg = message(e);
    eprintln!("gapsync: error: {msg}");
    if json {
        print_json_failure(code, rule, &msg);
    }
    ExitCode::from(code)
}

/// Whether the failure is a write to a closed pipe.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The JSON failure object on stdout.
pub fn print_json_failure(code: u8, rule: Option<&str>, message: &str) {
    let v = JsonFailure {
        error: JsonError {
            code,
            rule,
            message,
        },
    };
    if let Ok(s) = serde_json::to_string_pretty(&v) {
        println!("{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("k.key: No such file");
        assert_eq!(message(&e), "k.key: No such file");
        let e: anyhow::Error = Err::<(), _>(anyhow::anyhow!("disk full"))
            .context("import failed")
            .unwrap_err();
        assert_eq!(message(&e), "import failed: disk full");
    }

    #[test]
    fn classes() {
        assert_eq!(classify(&usage!("--x 1: bad")).0, EXIT_USAGE);
        let v = anyhow::Error::new(gapsync::Error::verification("gap", "x"));
        assert_eq!(classify(&v), (EXIT_VERIFICATION, Some("gap")));
        let v = v.context("import failed");
        assert_eq!(classify(&v), (EXIT_VERIFICATION, Some("gap")));
        assert_eq!(classify(&anyhow::anyhow!("x")).0, EXIT_RUNTIME);
    }
}
