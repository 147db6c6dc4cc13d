//! Exit codes are one contract (README, `--help`): 0 ok, 1 runtime error,
//! 2 usage, 3 verification failure. One table of real cases, each run
//! through the binary; with `--json` each failure is also a JSON error
//! object on stdout carrying the same code (and the rule, when a named
//! verification rule failed). Every refused command leaves the stores as
//! they were and `check` clean.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The shared lab (40 updates, 2 MiB of content) with, to `plant`: a
/// signed full bundle, a tampered copy, and a bundle that would leave a gap
/// (seq 3, whose seq 2 the plant never gets); a malformed `bad.pub`.
struct Fixture {
    lab: Lab,
    bundle: PathBuf,
    tampered: PathBuf,
    gap: PathBuf,
}

fn lab() -> Fixture {
    let lab = Lab::new(40, "2M");
    let bundle = lab.export("b1", &["--to", "plant"]);
    let tampered = lab.root.join("b1-tampered");
    copy_tree(&bundle, &tampered);
    flip_byte(&tampered.join("metadata.tar.zst"), 100);
    gs(&lab.hq, &["groups", "add", "G"]).ok();
    lab.export("b2", &["--to", "plant"]);
    gs(&lab.hq, &["groups", "add", "H"]).ok();
    let gap = lab.export("b3", &["--to", "plant"]);
    std::fs::write(
        lab.root.join("bad.pub"),
        "untrusted comment: x\nnot base64 at all\n",
    )
    .expect("write");
    Fixture {
        lab,
        bundle,
        tampered,
        gap,
    }
}

/// Runs `gapsync ARGS` (no GAPSYNC_SERVER from the environment).
fn run(args: &[String]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("GAPSYNC_SERVER")
        .output()
        .expect("run gapsync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_class_of_failure_has_its_exit_code_and_a_json_error() {
    let l = lab();
    let hq = p(&l.lab.hq).to_string();
    let plant = p(&l.lab.plant).to_string();
    let key = p(&l.lab.key).to_string();
    let pubkey = p(&l.lab.pubkey).to_string();
    let r = |name: &str| p(&l.lab.root.join(name)).to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    // (exit code, rule for --json, words stderr must contain, arguments)
    let cases: Vec<(i32, Option<&str>, &str, Vec<String>)> = vec![
        // 0: ok
        (0, None, "", s(&["--server", &hq, "status"])),
        // 2: usage, by clap or by our own validation
        (2, None, "--nope", s(&["--server", &hq, "status", "--nope"])),
        (2, None, "no server store selected", s(&["status"])),
        (
            2,
            None,
            "--expires",
            s(&[
                "--server",
                &hq,
                "export",
                "--key",
                &key,
                "--out",
                &r("x1"),
                "--expires",
                "99999999w",
            ]),
        ),
        (
            2,
            None,
            "--volume-size",
            s(&[
                "--server",
                &hq,
                "export",
                "--key",
                &key,
                "--out",
                &r("x2"),
                "--volume-size",
                "1K",
            ]),
        ),
        (
            2,
            None,
            "not-a-guid",
            s(&["--server", &hq, "approve", "not-a-guid", "--group", "G"]),
        ),
        (
            2,
            None,
            "--deadline",
            s(&[
                "--server",
                &hq,
                "approve",
                "0fa1201d-4330-4fa8-8ae9-b877473b6441",
                "--group",
                "G",
                "--deadline",
                "tomorrow",
            ]),
        ),
        (
            2,
            None,
            "--since",
            s(&["--server", &hq, "journal", "--since", "gapsync1:nope:1"]),
        ),
        (2, None, "--trust", s(&["verify", p(&l.bundle)])),
        (
            2,
            None,
            "not both",
            s(&[
                "--server",
                &plant,
                "verify",
                p(&l.bundle),
                "--trust",
                &pubkey,
            ]),
        ),
        // 1: runtime: not found, I/O, a malformed key file, network, a store that is not one
        (
            1,
            None,
            "missing-bundle",
            s(&["--server", &plant, "import", &r("missing-bundle")]),
        ),
        (
            1,
            None,
            "missing-bundle",
            s(&["verify", &r("missing-bundle"), "--trust", &pubkey]),
        ),
        (
            1,
            None,
            "unknown update",
            s(&[
                "--server",
                &hq,
                "approve",
                "11111111-2222-3333-4444-555555555555",
                "--group",
                "G",
            ]),
        ),
        (
            1,
            None,
            "bad.pub",
            s(&["verify", p(&l.bundle), "--trust", &r("bad.pub")]),
        ),
        (
            1,
            None,
            "no-such.key",
            s(&[
                "--server",
                &hq,
                "export",
                "--key",
                &r("no-such.key"),
                "--out",
                &r("x3"),
            ]),
        ),
        (
            1,
            None,
            "not a gapsync server store",
            s(&["--server", &pubkey, "status"]),
        ),
        (
            1,
            None,
            "127.0.0.1:9",
            s(&[
                "--server",
                &plant,
                "sync",
                "--upstream",
                "http://127.0.0.1:9",
            ]),
        ),
        // 3: verification: digest, trust, chain
        (
            3,
            Some("hash-mismatch"),
            "metadata.tar.zst",
            s(&["--server", &plant, "import", p(&l.tampered)]),
        ),
        (
            3,
            Some("hash-mismatch"),
            "metadata.tar.zst",
            s(&["verify", p(&l.tampered), "--trust", &pubkey]),
        ),
        (
            3,
            Some("unknown-key"),
            "not in the trust store",
            s(&["--server", &hq, "verify", p(&l.bundle)]),
        ),
        (
            3,
            Some("gap"),
            "import its full bundle first",
            s(&["--server", &plant, "import", p(&l.gap)]),
        ),
    ];
    let before_hq = snapshot(&l.lab.hq);
    let before_plant = snapshot(&l.lab.plant);
    let mut wrong = Vec::new();
    for (code, rule, needle, args) in &cases {
        let (got, _, stderr) = run(args);
        if got != *code || !stderr.contains(needle) {
            wrong.push(format!(
                "{args:?}: exit {got} (want {code}), stderr {stderr:?} (want {needle:?})"
            ));
        }
        if *code == 0 {
            continue;
        }
        // The same failure with --json: an error object with the same code.
        let mut json_args = args.clone();
        json_args.push("--json".into());
        let (got, stdout, stderr) = run(&json_args);
        let v: serde_json::Value = match serde_json::from_str(&stdout) {
            Ok(v) => v,
            Err(e) => {
                wrong.push(format!(
                    "{json_args:?}: stdout is not JSON ({e}): {stdout:?}"
                ));
                continue;
            }
        };
        let e = &v["error"];
        if got != *code
            || e["code"].as_i64() != Some(i64::from(*code))
            || e["rule"].as_str() != *rule
            || !e["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty() && stderr.contains(m))
        {
            wrong.push(format!(
                "{json_args:?}: exit {got}, JSON {v} (want code {code}, rule {rule:?}, the stderr message)"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "exit-code contract broken:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        before_hq,
        snapshot(&l.lab.hq),
        "a refused command changed hq"
    );
    assert_eq!(
        before_plant,
        snapshot(&l.lab.plant),
        "a refused command changed plant"
    );
    gs(&l.lab.hq, &["check"]).ok();
    gs(&l.lab.plant, &["check"]).ok();
    for x in ["x1", "x2", "x3"] {
        assert!(!l.lab.root.join(x).exists(), "{x} was written");
    }
}

#[test]
fn help_states_the_exit_code_contract() {
    let (code, stdout, _) = run(&["--help".to_string()]);
    assert_eq!(code, 0);
    for words in [
        "Exit codes",
        "0 ok",
        "1 runtime error",
        "2 usage",
        "3 verification failure",
    ] {
        assert!(stdout.contains(words), "--help lacks {words:?}:\n{stdout}");
    }
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let (_tmp, dir) = new_store("s", "autonomous");
    gs(&dir, &["catalog", "generate", "--updates", "200"]).ok();
    let mut child = Command::new(bin())
        .args(["--server", p(&dir), "updates", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // as `| head` does once it has enough
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
