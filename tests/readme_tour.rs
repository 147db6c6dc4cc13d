//! The README is executable: its tour ("## A short tour") runs here, line by
//! line, in order, on temporary folders. Only what the README itself says
//! may change is substituted: the `/srv`, `/media` and `/mnt` folders, the
//! example input folders, the host names, and the `<placeholders>`, each
//! found the way its comment in the README says.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The command lines of the tour: indented code lines between the tour's
/// heading and the next heading, comments and blank lines left out.
fn tour_lines(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## A short tour")
        .expect("README has a '## A short tour' section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A shell command without its trailing `# comment`.
fn strip_comment(line: &str) -> &str {
    match line.find("  #") {
        Some(i) => line[..i].trim_end(),
        None => line,
    }
}

struct Tour {
    tmp: tempfile::TempDir,
    bin_dir: PathBuf,
    env: BTreeMap<String, String>,
    port: u16,
    background: Vec<Child>,
    /// The anchor the tour's last `gapsync status` printed.
    status_anchor: Option<String>,
}

impl Drop for Tour {
    fn drop(&mut self) {
        for c in &mut self.background {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Tour {
    fn new() -> Tour {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin_dir = tmp.path().join("bin");
        std::fs::create_dir_all(&bin_dir).expect("bin dir");
        #[cfg(unix)]
        std::os::unix::fs::symlink(bin(), bin_dir.join("gapsync")).expect("symlink gapsync");
        #[cfg(not(unix))]
        std::fs::copy(bin(), bin_dir.join("gapsync.exe")).expect("copy gapsync");
        for d in ["work", "srv", "media", "mnt", "wsus-content"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("dir");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Tour {
            tmp,
            bin_dir,
            env: BTreeMap::new(),
            port,
            background: Vec::new(),
            status_anchor: None,
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The README's paths and hosts, made to point into this tour.
    fn substitute_paths(&self, line: &str) -> String {
        let root = self.root().display().to_string();
        let docs = captured_docs().display().to_string();
        let addr = format!("127.0.0.1:{}", self.port);
        line.replace("./update-xml/", &format!("{docs}/"))
            .replace("./wsus-content/", &format!("{root}/wsus-content/"))
            .replace(" /srv/", &format!(" {root}/srv/"))
            .replace("=/srv/", &format!("={root}/srv/"))
            .replace(" /media/", &format!(" {root}/media/"))
            .replace(" /mnt/", &format!(" {root}/mnt/"))
            .replace("0.0.0.0:8530", &addr)
            .replace("wsus.corp:8530", &addr)
            .replace("hq:8530", &addr)
    }

    /// Runs `gapsync ARGS` with the tour's environment; stdout.
    fn gapsync(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .args(args)
            .envs(&self.env)
            .current_dir(self.root().join("work"))
            .output()
            .expect("run gapsync");
        assert!(
            out.status.success(),
            "gapsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.gapsync(args)).expect("JSON")
    }

    /// The value of a placeholder, found where the README's comment says.
    fn placeholder(&self, name: &str) -> String {
        match name {
            // "the one status printed"
            "anchor" => self
                .status_anchor
                .clone()
                .expect("the tour ran `gapsync status` before using <anchor>"),
            // "the to_anchor of the last bundle the plant applied (imports list)"
            "to_anchor" => {
                let plant = self.root().join("srv/gapsync/plant");
                let list = self.json(&[
                    "--server",
                    plant.to_str().expect("utf8"),
                    "imports",
                    "list",
                    "--json",
                ]);
                list.as_array()
                    .and_then(|a| a.last())
                    .and_then(|l| l["to_anchor"].as_str())
                    .expect("imports list has a to_anchor")
                    .to_string()
            }
            other => panic!("the tour uses a placeholder <{other}> this test does not know"),
        }
    }

    fn substitute_placeholders(&self, line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else { break };
            let name = &rest[i + 1..i + j];
            out.push_str(&rest[..i]);
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !name.is_empty() {
                out.push_str(&self.placeholder(name));
            } else {
                out.push_str(&rest[i..=i + j]);
            }
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        out
    }

    fn shell(&self, cmd: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(cmd)
            .env("PATH", path)
            .env_remove("GAPSYNC_SERVER")
            .envs(&self.env)
            .current_dir(self.root().join("work"));
        c
    }

    fn run(&mut self, line: &str) {
        let cmd = strip_comment(line);
        if let Some(assign) = cmd.strip_prefix("export ") {
            let (k, v) = assign.split_once('=').expect("export VAR=VALUE");
            let v = self.substitute_paths(&format!("={v}"));
            self.env
                .insert(k.to_string(), v.trim_start_matches('=').to_string());
            return;
        }
        let cmd = self.substitute_placeholders(&self.substitute_paths(cmd));
        if let Some(bg) = cmd.strip_suffix('&') {
            self.start_server(bg.trim(), line);
            return;
        }
        if cmd == "gapsync status" {
            let anchor = self.json(&["status", "--json"])["anchor"]
                .as_str()
                .map(str::to_string);
            self.status_anchor = anchor;
        }
        let out = self.shell(&cmd).output().expect("run bash");
        assert!(
            out.status.success(),
            "README tour line failed (exit {:?}):\n  {line}\nran: {cmd}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `... serve ... &` line: started in the background; the tour goes
    /// on once it says where it listens.
    fn start_server(&mut self, cmd: &str, line: &str) {
        let mut child = self
            .shell(&format!("exec {cmd}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if l.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        assert!(
            rx.recv_timeout(deadline - Instant::now()).is_ok(),
            "README tour line never said 'listening on': {line}"
        );
        self.background.push(child);
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let lines = tour_lines(&readme);
    assert!(
        lines.len() > 20,
        "the tour has {} command lines",
        lines.len()
    );
    let mut tour = Tour::new();
    for line in &lines {
        tour.run(line);
    }
    // The disconnected store ends clean and holds what the tour approved.
    let plant = tour.root().join("srv/gapsync/plant");
    let plant = plant.to_str().expect("utf8");
    tour.gapsync(&["--server", plant, "check"]);
    let hq = tour.json(&["deployments", "list", "--json"]);
    let at_plant = tour.json(&["--server", plant, "deployments", "list", "--json"]);
    assert_eq!(hq, at_plant, "the plant holds HQ's approvals");
}

#[test]
fn tour_lines_are_the_indented_commands_of_the_section() {
    let md = "# x\n\n## A short tour\n\ntext\n\n    gapsync a   # c\n    # only a comment\n\n    gapsync b\n\n## Next\n\n    gapsync z\n";
    assert_eq!(tour_lines(md), vec!["gapsync a   # c", "gapsync b"]);
    assert_eq!(strip_comment("gapsync a   # c"), "gapsync a");
}
