//! Trust statements, key files and `verify`'s trust source, through the
//! real binary: the statements that would lock a chain out are refused (and
//! change nothing), the queue can be listed and cancelled, `export` says
//! which statements it carries, key files that are not keys are runtime
//! errors said once, and `verify --trust` wins over `GAPSYNC_SERVER`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A connected server `hq` with a small catalog and a key `k1`, and a
/// disconnected replica `plant` that trusts `k1`.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    hq: PathBuf,
    plant: PathBuf,
    n: u32,
}

impl Site {
    fn new() -> Site {
        let (tmp, hq) = new_store("hq", "autonomous");
        let root = tmp.path().to_path_buf();
        let plant = root.join("plant");
        gs_plain(&["init", s(&plant), "--name", "plant", "--mode", "replica"]).ok();
        gs(
            &hq,
            &[
                "catalog",
                "generate",
                "--updates",
                "20",
                "--content-bytes",
                "256K",
                "--seed",
                "3",
            ],
        )
        .ok();
        let site = Site {
            _tmp: tmp,
            root,
            hq,
            plant,
            n: 0,
        };
        site.key("k1");
        gs(&site.plant, &["trust", "add", s(&site.pubkey("k1"))]).ok();
        site
    }

    /// Generates `NAME.key` / `NAME.pub`; returns the key id.
    fn key(&self, name: &str) -> String {
        let r = gs_plain(&[
            "key",
            "generate",
            "--out",
            s(&self.root.join(name)),
            "--json",
        ])
        .ok()
        .json();
        r["key_id"].as_str().unwrap().to_string()
    }

    fn seckey(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.key"))
    }

    fn pubkey(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.pub"))
    }

    /// `export --key NAME.key --to plant` into a new folder.
    fn export(&mut self, key: &str, extra: &[&str]) -> (PathBuf, Run) {
        self.n += 1;
        let out = self.root.join(format!("b-{}", self.n));
        let key = self.seckey(key);
        let mut args = vec![
            "export",
            "--key",
            s(&key),
            "--out",
            s(&out),
            "--to",
            "plant",
        ];
        args.extend_from_slice(extra);
        let run = gs(&self.hq, &args);
        (out, run)
    }

    fn statement(&self, args: &[&str]) -> Run {
        let mut all = vec!["trust", "statement"];
        all.extend_from_slice(args);
        gs(&self.hq, &all)
    }

    fn queue(&self) -> serde_json::Value {
        self.statement(&["--list", "--json"]).ok().json()
    }

    /// Everything a refused trust command must leave as it was.
    fn state(&self) -> String {
        let mut st = snapshot_db(&self.hq);
        st.push_str(&self.statement(&["--list", "--json"]).ok().stdout);
        st.push_str(&gs(&self.hq, &["exports", "list", "--json"]).ok().stdout);
        st
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `gapsync ARGS` with `GAPSYNC_SERVER` set in the environment (as the
/// README tour does) and no `--server`.
fn gs_with_env_server(server: &Path, args: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(args)
        .env("GAPSYNC_SERVER", server)
        .env_remove("GAPSYNC_FAILPOINT")
        .output()
        .expect("run gapsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_key_cannot_queue_its_own_revocation() {
    let site = Site::new();
    let k1 = site.key("k1-again");
    let before = site.state();
    let r = site
        .statement(&["--key", s(&site.seckey("k1-again")), "--revoke", &k1])
        .fails(2, "cannot revoke itself");
    assert!(r.stderr.contains(&format!("--revoke {k1}")), "{}", r.stderr);
    assert_eq!(site.state(), before, "a refused statement changes nothing");
    assert_eq!(site.queue(), serde_json::json!([]));
    // The key id in either case and without leading zeros is the same key.
    site.statement(&[
        "--key",
        s(&site.seckey("k1-again")),
        "--revoke",
        &k1.to_lowercase(),
    ])
    .fails(2, "cannot revoke itself");
    // Not a key id at all: a usage error naming the flag.
    site.statement(&["--key", s(&site.seckey("k1")), "--revoke", "not-hex"])
        .fails(2, "--revoke");
    assert_eq!(site.state(), before);
}

#[test]
fn the_last_key_a_destination_knows_cannot_be_revoked() {
    let mut site = Site::new();
    let (b1, r) = site.export("k1", &[]);
    r.ok();
    gs(&site.plant, &["import", s(&b1)]).ok();
    let k1 = gs_plain(&["verify", s(&b1), "--trust", s(&site.pubkey("k1")), "--json"])
        .ok()
        .json()["signer"]
        .as_str()
        .unwrap()
        .to_string();
    // k2 is new: plant is not known to trust it. Revoking k1 with it would
    // leave plant no key it is known to accept.
    let k2 = site.key("k2");
    let before = site.state();
    site.statement(&["--key", s(&site.seckey("k2")), "--revoke", &k1])
        .fails(
            1,
            &format!("key {k1} is the last key destination \"plant\""),
        );
    assert_eq!(site.state(), before);

    // The rotation: k1 introduces k2, then k2 revokes k1.
    let r = site
        .statement(&[
            "--key",
            s(&site.seckey("k1")),
            "--add",
            s(&site.pubkey("k2")),
            "--label",
            "k2",
        ])
        .ok();
    assert!(
        r.stdout.contains("queued trust statement 1"),
        "{}",
        r.stdout
    );
    site.statement(&["--key", s(&site.seckey("k2")), "--revoke", &k1])
        .ok();

    // Nothing may be signed by k1 any more, nor may k1 come back.
    let before = site.state();
    let k3 = site.key("k3");
    site.statement(&[
        "--key",
        s(&site.seckey("k1")),
        "--add",
        s(&site.pubkey("k3")),
    ])
    .fails(1, "revoked by queued trust statement 2");
    site.statement(&[
        "--key",
        s(&site.seckey("k2")),
        "--add",
        s(&site.pubkey("k1")),
    ])
    .fails(1, "revoked by queued trust statement 2");
    let (refused, r) = site.export("k1", &[]);
    r.fails(
        1,
        &format!("key {k1} is revoked by queued trust statement 2"),
    );
    assert!(!refused.exists());
    assert_eq!(site.state(), before, "refusals change nothing");

    // k2 signs the next bundle, which carries both statements; plant
    // applies them and ends up trusting k2 only.
    gs(&site.hq, &["groups", "add", "Before"]).ok();
    let (b2, r) = site.export("k2", &[]);
    let out = r.ok().stdout;
    assert!(out.contains("trust statements carried (2):"), "{out}");
    assert!(
        out.contains(&format!("add    {k2} \"k2\" (signed by {k1})")),
        "{out}"
    );
    assert!(
        out.contains(&format!("revoke {k1} (signed by {k2})")),
        "{out}"
    );
    gs(&site.plant, &["import", s(&b2)]).ok();
    let keys = gs(&site.plant, &["trust", "list", "--json"]).ok().json();
    let state = |id: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == id)
            .map(|k| k["revoked"].as_bool().unwrap())
    };
    assert_eq!(state(&k1), Some(true));
    assert_eq!(state(&k2), Some(false));
    assert_eq!(state(&k3), None);
    // And the chain goes on with k2.
    gs(&site.hq, &["groups", "add", "After"]).ok();
    let (b3, r) = site.export("k2", &[]);
    r.ok();
    gs(&site.plant, &["import", s(&b3)]).ok();
}

#[test]
fn statements_can_be_listed_and_cancelled_until_sent() {
    let mut site = Site::new();
    site.key("k2");
    site.key("k3");
    let r = site
        .statement(&[
            "--key",
            s(&site.seckey("k1")),
            "--add",
            s(&site.pubkey("k2")),
        ])
        .ok();
    assert!(
        r.stdout.contains("queued trust statement 1"),
        "{}",
        r.stdout
    );
    let q = site.queue();
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["seq"], 1);
    assert_eq!(q[0]["action"], "add");
    assert_eq!(q[0]["label"], "k2");
    assert_eq!(q[0]["sent_to"], serde_json::json!([]));
    assert!(q[0]["issuer"].is_string() && q[0]["created"].is_string());
    let human = site.statement(&["--list"]).ok().stdout;
    assert!(human.contains("not sent yet"), "{human}");

    // Cancelled before any export: the next bundle does not carry it.
    let r = site.statement(&["--cancel", "1"]).ok();
    assert!(
        r.stdout.contains("cancelled trust statement 1"),
        "{}",
        r.stdout
    );
    assert_eq!(site.queue(), serde_json::json!([]));
    assert!(
        site.statement(&["--list"])
            .ok()
            .stdout
            .contains("no trust statements are queued")
    );
    let (b1, r) = site.export("k1", &["--json"]);
    let report = r.ok().json();
    assert_eq!(report["trust_statements"], serde_json::json!([]));
    assert_eq!(report["counts"]["trust_statements"], 0);
    assert!(!b1.join("trust").exists());
    gs(&site.plant, &["import", s(&b1)]).ok();

    // Queued again (seq 2: numbers are never reused), carried, then listed
    // as sent; it can no longer be cancelled.
    site.statement(&[
        "--key",
        s(&site.seckey("k1")),
        "--add",
        s(&site.pubkey("k2")),
    ])
    .ok();
    gs(&site.hq, &["groups", "add", "G"]).ok();
    let (b2, r) = site.export("k1", &["--json"]);
    let report = r.ok().json();
    let carried = report["trust_statements"].as_array().unwrap();
    assert_eq!(carried.len(), 1, "{report}");
    assert_eq!(carried[0]["seq"], 2);
    assert_eq!(carried[0]["action"], "add");
    assert!(b2.join("trust/0001.json").is_file());
    let q = site.queue();
    assert_eq!(q[0]["sent_to"], serde_json::json!(["plant"]));
    assert!(
        site.statement(&["--list"])
            .ok()
            .stdout
            .contains("sent to \"plant\"")
    );
    let before = site.state();
    site.statement(&["--cancel", "2"])
        .fails(1, "already carried to \"plant\" and cannot be recalled");
    site.statement(&["--cancel", "99"])
        .fails(1, "no queued trust statement 99");
    site.statement(&["--cancel", "0"]).fails(2, "--cancel");
    site.statement(&["--cancel", "2", "--key", s(&site.seckey("k1"))])
        .fails(2, "--key");
    site.statement(&["--list", "--cancel", "2"])
        .fails(2, "--list");
    assert_eq!(site.state(), before);
}

#[test]
fn a_statement_a_later_one_depends_on_is_not_cancelled_alone() {
    let mut site = Site::new();
    let (b1, r) = site.export("k1", &["--json"]);
    r.ok();
    gs(&site.plant, &["import", s(&b1)]).ok();
    let k1 = gs_plain(&["verify", s(&b1), "--trust", s(&site.pubkey("k1")), "--json"])
        .ok()
        .json()["signer"]
        .as_str()
        .unwrap()
        .to_string();
    site.key("k2");
    site.statement(&[
        "--key",
        s(&site.seckey("k1")),
        "--add",
        s(&site.pubkey("k2")),
    ])
    .ok();
    site.statement(&["--key", s(&site.seckey("k2")), "--revoke", &k1])
        .ok();
    // Without statement 1, statement 2 would revoke the last key plant is
    // known to trust.
    let before = site.state();
    site.statement(&["--cancel", "1"])
        .fails(1, "queued trust statement 2 depends on it");
    assert_eq!(site.state(), before);
    // Cancelled in the other order, both go.
    site.statement(&["--cancel", "2"]).ok();
    site.statement(&["--cancel", "1"]).ok();
    assert_eq!(site.queue(), serde_json::json!([]));
    gs(&site.hq, &["groups", "add", "G"]).ok();
    let (b2, r) = site.export("k1", &[]);
    let out = r.ok().stdout;
    assert!(!out.contains("trust statements carried"), "{out}");
    assert!(!b2.join("trust").exists());
}

/// A key FILE that is not a key, given on the command line, is a runtime
/// error (exit 1) naming the file; exit 3 is for keys that parse but are not
/// trusted. Missing files are said once.
#[test]
fn malformed_or_missing_key_files_are_runtime_errors_said_once() {
    let mut site = Site::new();
    let (b1, r) = site.export("k1", &[]);
    r.ok();
    let bad = site.root.join("bad.pub");
    fs::write(&bad, "untrusted comment: x\nnot base64 at all!\n").unwrap();
    let bad_key = site.root.join("bad.key");
    fs::write(&bad_key, "untrusted comment: x\nAAAA\n").unwrap();
    let before = site.state();
    gs_plain(&["verify", s(&b1), "--trust", s(&bad)]).fails(1, "malformed key file");
    gs(&site.plant, &["trust", "add", s(&bad)]).fails(1, "bad.pub");
    site.statement(&["--key", s(&site.seckey("k1")), "--add", s(&bad)])
        .fails(1, "malformed key file");
    site.statement(&["--key", s(&bad_key), "--add", s(&site.pubkey("k1"))])
        .fails(1, "bad.key");
    gs(
        &site.hq,
        &[
            "export",
            "--key",
            s(&bad_key),
            "--out",
            s(&site.root.join("x")),
        ],
    )
    .fails(1, "malformed key file");
    // With --json the failure is a JSON object without a rule name.
    let r = gs(
        &site.hq,
        &[
            "export",
            "--key",
            s(&bad_key),
            "--out",
            s(&site.root.join("x")),
            "--json",
        ],
    )
    .fails(1, "bad.key");
    let j = r.json();
    assert_eq!(j["error"]["code"], 1);
    assert!(j["error"]["rule"].is_null(), "{j}");

    // A missing key file: its path and the cause, once.
    let missing = site.root.join("missing.key");
    for r in [
        gs(
            &site.hq,
            &[
                "export",
                "--key",
                s(&missing),
                "--out",
                s(&site.root.join("y")),
            ],
        ),
        site.statement(&["--key", s(&missing), "--add", s(&site.pubkey("k1"))]),
        gs_plain(&[
            "verify",
            s(&b1),
            "--trust",
            s(&site.root.join("missing.pub")),
        ]),
    ] {
        let r = r.fails(1, "missing.");
        assert_eq!(
            r.stderr.matches("No such file or directory").count(),
            1,
            "the cause is said once: {}",
            r.stderr
        );
    }
    assert!(!site.root.join("x").exists() && !site.root.join("y").exists());
    assert_eq!(site.state(), before);
}

#[test]
fn key_generate_names_a_missing_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("no-such-folder").join("k");
    let r = gs_plain(&["key", "generate", "--out", s(&out)]).fails(1, "no-such-folder");
    assert!(r.stderr.contains("no such folder"), "{}", r.stderr);
    // Not the temporary file (`.k.key.<random>.tmp`) nor the key file.
    assert!(!r.stderr.contains("k.key"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // A file where the folder should be.
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    gs_plain(&["key", "generate", "--out", s(&file.join("k"))]).fails(1, "not a folder");
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "nothing written"
    );
}

/// A key inside a bundle (here in a trust statement validly signed by the
/// trusted key) that is malformed stays a verification failure (exit 3).
#[test]
fn a_malformed_key_inside_a_bundle_fails_verification() {
    let mut site = Site::new();
    site.key("k2");
    site.statement(&[
        "--key",
        s(&site.seckey("k1")),
        "--add",
        s(&site.pubkey("k2")),
    ])
    .ok();
    let (b1, r) = site.export("k1", &[]);
    r.ok();
    let body_path = b1.join("trust/0001.json");
    let mut body: serde_json::Value =
        serde_json::from_slice(&fs::read(&body_path).unwrap()).unwrap();
    body["key"] = serde_json::json!("bm90IGEga2V5");
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap();
    bytes.push(b'\n');
    let signer = gapsync::trust::SecretKey::read_file(&site.seckey("k1")).unwrap();
    let comment = format!(
        "gapsync trust statement add {}",
        body["key_id"].as_str().unwrap()
    );
    fs::write(&body_path, &bytes).unwrap();
    fs::write(
        b1.join("trust/0001.json.minisig"),
        signer.sign(&bytes, &comment).unwrap(),
    )
    .unwrap();
    gs_plain(&["verify", s(&b1), "--trust", s(&site.pubkey("k1"))]).fails(3, "[malformed-key]");
    let before = snapshot_db(&site.plant);
    gs(&site.plant, &["import", s(&b1)]).fails(3, "[malformed-key]");
    assert_eq!(snapshot_db(&site.plant), before);
}

#[test]
fn verify_trust_wins_over_the_environment_server() {
    let mut site = Site::new();
    let (b1, r) = site.export("k1", &[]);
    r.ok();
    let k1 = s(&site.pubkey("k1")).to_string();
    // As in the README tour: GAPSYNC_SERVER exported, --trust given.
    let r = gs_with_env_server(&site.plant, &["verify", s(&b1), "--trust", &k1]).ok();
    assert!(r.stdout.contains("verified"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("chain position"),
        "--trust alone: {}",
        r.stdout
    );
    // The environment's server alone: its trust store and chain.
    let r = gs_with_env_server(&site.plant, &["verify", s(&b1)]).ok();
    assert!(r.stdout.contains("chain position"), "{}", r.stdout);
    // --server given on the command line with --trust: a usage error.
    gs(&site.plant, &["verify", s(&b1), "--trust", &k1]).fails(2, "not both");
    gs_with_env_server(
        &site.plant,
        &["--server", s(&site.plant), "verify", s(&b1), "--trust", &k1],
    )
    .fails(2, "not both");

    // A signer that is not among the --trust keys: said so.
    let other_id = site.key("other");
    let r = gs_with_env_server(
        &site.plant,
        &["verify", s(&b1), "--trust", s(&site.pubkey("other"))],
    )
    .fails(3, "[unknown-key]");
    assert!(
        r.stderr.contains(&format!(
            "is not among the keys given with --trust ({other_id})"
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("trust store"), "{}", r.stderr);
    // Against a server that does not trust it: that server is named.
    let lab = site.root.join("lab");
    gs_plain(&["init", s(&lab), "--name", "lab"]).ok();
    let r = gs(&lab, &["verify", s(&b1)]).fails(3, "[unknown-key]");
    assert!(
        r.stderr
            .contains("is not in the trust store of server \"lab\""),
        "{}",
        r.stderr
    );
}
