//! Progress without a terminal: plain lines on stderr while a phase runs,
//! at least every interval (10 s; `GAPSYNC_PROGRESS_INTERVAL_MS` shortens
//! it for tests), and one when it ends; nothing with `--quiet`.

mod common;

use common::{gs_env, new_store};

const GENERATE: &[&str] = &[
    "catalog",
    "generate",
    "--updates",
    "1500",
    "--content-bytes",
    "1M",
    "--seed",
    "3",
];

/// `(done, total)` of a line `generate: DONE of TOTAL updates (P%), ...`.
fn intermediate(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("generate: ")?;
    let (done, rest) = rest.split_once(" of ")?;
    let (total, rest) = rest.split_once(" updates (")?;
    rest.contains("%), ")
        .then(|| Some((done.parse().ok()?, total.parse().ok()?)))
        .flatten()
}

#[test]
fn a_long_operation_prints_intermediate_lines_without_a_terminal() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    // stderr is a pipe here, not a terminal.
    let r = gs_env(&dir, GENERATE, &[("GAPSYNC_PROGRESS_INTERVAL_MS", "10")]).ok();
    let lines: Vec<(u64, u64)> = r.stderr.lines().filter_map(intermediate).collect();
    assert!(
        lines.len() >= 2,
        "intermediate progress lines expected:\n{}",
        r.stderr
    );
    let total = lines[0].1;
    assert!(total >= 1500, "{}", r.stderr);
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0) && lines.iter().all(|l| l.0 <= total),
        "counts only grow, never past the total:\n{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("generate: ") && l.contains(" updates in ")),
        "the phase's end line:\n{}",
        r.stderr
    );

    let (_tmp2, quiet) = new_store("quiet", "autonomous");
    let mut args = GENERATE.to_vec();
    args.push("--quiet");
    let r = gs_env(&quiet, &args, &[("GAPSYNC_PROGRESS_INTERVAL_MS", "10")]).ok();
    assert!(r.stderr.is_empty(), "--quiet: {}", r.stderr);
}

#[test]
fn a_bad_interval_hook_is_named_and_the_default_kept() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let r = gs_env(
        &dir,
        &["status"],
        &[("GAPSYNC_PROGRESS_INTERVAL_MS", "soon")],
    )
    .ok();
    assert!(
        r.stderr.contains("GAPSYNC_PROGRESS_INTERVAL_MS") && r.stderr.contains("\"soon\""),
        "{}",
        r.stderr
    );
}
