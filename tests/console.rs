//! `gapsync console`: the command line (listen rules, password), the HTTP
//! rules (sessions, CSRF, rate limit, policy headers, valid HTML), and the
//! pages in a real headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{gs, new_store};

const PASSWORD: &str = "correct horse battery";

/// `gapsync console passwd` with the password on stdin.
fn set_password(server: &Path, pw: &str) -> common::Run {
    let mut c = Command::new(common::bin())
        .arg("--server")
        .arg(server)
        .args(["console", "passwd"])
        .env_remove("GAPSYNC_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start passwd");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{pw}\n").as_bytes())
        .expect("write password");
    let out = c.wait_with_output().expect("passwd");
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A store with a catalog, groups, a computer, a bundle exported and a
/// console password.
fn console_store() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &["catalog", "generate", "--updates", "300", "--seed", "1"],
    )
    .ok();
    gs(&dir, &["groups", "add", "Workstations"]).ok();
    gs(
        &dir,
        &["groups", "add", "Pilot", "--parent", "Workstations"],
    )
    .ok();
    gs(&dir, &["computers", "add", "ws-001", "--group", "Pilot"]).ok();
    gs(
        &dir,
        &["computers", "add", "ws-002", "--group", "Workstations"],
    )
    .ok();
    let key = tmp.path().join("k");
    common::gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    export_metadata(&dir, tmp.path(), "b-0001", "plant", &[]).ok();
    set_password(&dir, PASSWORD).ok();
    (tmp, dir)
}

/// `export --content none` to `dest`, signed with `keys/k.key`, into
/// `keys/out`; `extra` flags appended.
fn export_metadata(
    server: &Path,
    keys: &Path,
    out: &str,
    dest: &str,
    extra: &[&str],
) -> common::Run {
    let (key, out) = (keys.join("k.key"), keys.join(out));
    let mut args = vec!["export", "--key", common::p(&key), "--out", common::p(&out)];
    args.extend_from_slice(&["--to", dest, "--content", "none"]);
    args.extend_from_slice(extra);
    gs(server, &args)
}

/// A running console, stopped on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(server: &Path, log: PathBuf) -> Running {
        let mut child = Command::new(common::bin())
            .arg("--server")
            .arg(server)
            .args(["console", "--listen", "127.0.0.1:0"])
            .env_remove("GAPSYNC_SERVER")
            .env("GAPSYNC_ADMIN", "console-test")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .spawn()
            .expect("start console");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Running { child, addr, log },
            None => {
                let _ = child.kill();
                panic!(
                    "console printed {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find(|(_, v)| v.starts_with(&format!("{name}=")))
            .map(|(_, v)| v.clone())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A GET with a session cookie.
fn get(addr: SocketAddr, session: &str, path: &str) -> Resp {
    http(addr, "GET", path, &[("Cookie", session)], "")
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

/// The value of the first `name="csrf"` hidden field.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Logs in over plain HTTP: the session cookie (`name=value`) and its
/// CSRF token.
fn login(addr: SocketAddr) -> (String, String) {
    let page = http(addr, "GET", "/login", &[], "");
    let pre = cookie_value(&page.set_cookie("gapsync_login").expect("login cookie"));
    let csrf = csrf_of(&page.body);
    let r = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", &pre)],
        &format!("csrf={csrf}&password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let session = cookie_value(&r.set_cookie("gapsync_session").expect("session cookie"));
    let home = get(addr, &session, "/");
    assert_eq!(home.status, 200);
    (session, csrf_of(&home.body))
}

fn software_update_with_kb(server: &Path) -> (String, String, String) {
    let list = gs(server, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json();
    let u = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["kb_article"].is_string())
        .expect("a software update with a KB number");
    (
        u["id"].as_str().unwrap().to_string(),
        u["kb_article"].as_str().unwrap().to_string(),
        u["title"].as_str().unwrap().to_string(),
    )
}

fn deployments(server: &Path) -> Vec<serde_json::Value> {
    gs(server, &["deployments", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn console_command_line_rules() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    // No password yet: the console does not start.
    gs(&dir, &["console", "--listen", "127.0.0.1:0"]).fails(1, "console passwd");
    // A non-loopback address without TLS: a usage error, before any work.
    gs(&dir, &["console", "--listen", "0.0.0.0:0"]).fails(2, "--tls-cert");
    gs(&dir, &["console", "--listen", "nonsense"]).fails(2, "--listen");
    gs(
        &dir,
        &[
            "console",
            "--insecure-http",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
    )
    .fails(2, "--insecure-http");
    // Passwords: too short is refused and sets nothing.
    set_password(&dir, "short").fails(2, "8 to 1024");
    gs(&dir, &["console", "--listen", "127.0.0.1:0"]).fails(1, "console passwd");
    set_password(&dir, PASSWORD).ok();
}

#[test]
fn console_http_sessions_csrf_and_limits() {
    let (tmp, dir) = console_store();
    let c = Running::start(&dir, tmp.path().join("console.log"));
    let addr = c.addr;
    // Not logged in: pages send to the login page; actions are refused.
    let r = http(addr, "GET", "/updates", &[], "");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let page = http(addr, "GET", "/login", &[], "");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let pre_set = page.set_cookie("gapsync_login").expect("login cookie");
    assert!(
        pre_set.contains("HttpOnly") && pre_set.contains("SameSite=Strict"),
        "{pre_set}"
    );
    assert!(
        !pre_set.contains("Secure"),
        "plain HTTP: no Secure flag: {pre_set}"
    );
    let pre = cookie_value(&pre_set);
    let csrf = csrf_of(&page.body);
    // Wrong password: 401, no session.
    let r = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", &pre)],
        &format!("csrf={csrf}&password=wrong+one"),
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong password"));
    assert!(r.set_cookie("gapsync_session").is_none());
    // Right password without the form's token: 403.
    let r = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", &pre)],
        "password=correct+horse+battery",
    );
    assert_eq!(r.status, 403);
    assert!(r.set_cookie("gapsync_session").is_none());
    let (session, csrf) = login(addr);
    // An action without the CSRF token (or with another) changes nothing.
    let (id, _, _) = software_update_with_kb(&dir);
    for token in ["", "csrf=0000&"] {
        let r = http(
            addr,
            "POST",
            "/updates/action",
            &[("Cookie", &session)],
            &format!("{token}op=approve&group=Pilot&id={id}"),
        );
        assert_eq!(r.status, 403, "{token:?}");
    }
    assert!(deployments(&dir).is_empty());
    // With it, the approval is made through the library, as the CLI's.
    let r = http(
        addr,
        "POST",
        "/updates/action",
        &[("Cookie", &session)],
        &format!(
            "csrf={csrf}&op=approve&group=Pilot&action=install&deadline=2027-01-15+18%3A00&id={id}&back=%2Fupdates"
        ),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/updates")));
    let d = deployments(&dir);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["update_id"], id.as_str());
    assert_eq!(d[0]["group"], "Pilot");
    assert_eq!(d[0]["deadline"], "2027-01-15T18:00:00Z");
    assert_eq!(d[0]["admin_name"], "console-test");
    let journal = gs(&dir, &["journal", "--json"]).ok().json();
    assert!(
        journal
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "deployment_created"),
        "the approval is journaled"
    );
    // The flash says what was done, once.
    let after = get(addr, &session, "/updates");
    assert!(
        after.body.contains("Approved 1 update for Pilot"),
        "{}",
        after.body
    );
    // A page for a name rebound to 127.0.0.1 is refused.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /login HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 421"), "{raw}");
    // CSV export.
    let csv = get(addr, &session, "/compliance.csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let pilot = csv
        .body
        .lines()
        .find(|l| l.contains(",Pilot,"))
        .expect("Pilot row");
    // kind,id,name,computers,approved_updates,installed,...,no_status
    let f: Vec<&str> = pilot.split(',').collect();
    assert_eq!(
        (f[0], f[3], f[4], f[9]),
        ("group", "1", "1", "1"),
        "{pilot}"
    );
    // Logging out ends the session.
    let r = http(
        addr,
        "POST",
        "/logout",
        &[("Cookie", &session)],
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 303);
    assert_eq!(get(addr, &session, "/").status, 303);
    // Rate limit: after 5 failures a 6th attempt is 429, even with the right password.
    for _ in 0..5 {
        let r = http(
            addr,
            "POST",
            "/login",
            &[("Cookie", &pre)],
            &format!(
                "csrf={csrf_pre}&password=nope+nope",
                csrf_pre = csrf_of(&page.body)
            ),
        );
        assert_eq!(r.status, 401);
    }
    let r = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", &pre)],
        &format!(
            "csrf={}&password=correct+horse+battery",
            csrf_of(&page.body)
        ),
    );
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(
        std::fs::read_to_string(&c.log)
            .unwrap()
            .contains("wrong password")
    );
}

/// Whether `tidy` reports neither errors nor warnings on `html`.
fn tidy(name: &str, html: &str) {
    let mut c = Command::new("tidy")
        .args([
            "-q",
            "-e",
            "--show-warnings",
            "yes",
            "--drop-empty-elements",
            "no",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidy (apt-get install tidy)");
    c.stdin.take().unwrap().write_all(html.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    // Tidy 5.6 (Debian's) predates WAI-ARIA 1.1's `aria-current`, which it
    // calls proprietary; every other warning or error fails.
    let report = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.contains("proprietary attribute \"aria-current\""))
        .collect();
    assert!(
        problems.is_empty() && out.status.code().is_some_and(|c| c <= 1),
        "tidy on {name}: {report}"
    );
}

#[test]
fn console_pages_are_valid_html_without_inline_script() {
    let (tmp, dir) = console_store();
    let c = Running::start(&dir, tmp.path().join("console.log"));
    let (session, csrf) = login(c.addr);
    let (id, kb, _) = software_update_with_kb(&dir);
    http(
        c.addr,
        "POST",
        "/updates/action",
        &[("Cookie", &session)],
        &format!("csrf={csrf}&op=approve&group=Workstations&id={id}"),
    );
    let computers = gs(&dir, &["computers", "list", "--json"]).ok().json();
    let ws = computers[0]["id"].as_str().unwrap().to_string();
    let pages = [
        "/login".to_string(),
        "/".into(),
        "/updates".into(),
        format!("/updates?q=KB{kb}"),
        "/updates?approval=approved&page=1".into(),
        "/updates?page=2".into(),
        format!("/updates/{id}"),
        "/computers".into(),
        format!("/computers/{ws}"),
        "/compliance".into(),
        "/bundles".into(),
    ];
    for p in &pages {
        let r = get(c.addr, &session, p);
        assert_eq!(r.status, 200, "{p}");
        assert!(r.header("content-security-policy").is_some(), "{p}");
        tidy(p, &r.body);
        let lower = r.body.to_ascii_lowercase();
        assert_eq!(
            lower.matches("<script").count(),
            lower.matches("<script src=\"/assets/").count(),
            "{p}: inline or foreign script"
        );
        for bad in [
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "http://",
            "https://",
        ] {
            assert!(!lower.contains(bad), "{p} contains {bad:?}");
        }
    }
    // The search finds the update by its KB number, on the server.
    let r = get(c.addr, &session, &format!("/updates?q=KB{kb}"));
    assert!(r.body.contains(&id), "KB{kb} search");
    // All Computers lists the computers of its subgroups (every computer
    // here is in Workstations or Pilot below it).
    let r = get(
        c.addr,
        &session,
        "/computers?group=a0a08746-4dbe-4a37-9adf-9e7652c0b421",
    );
    assert!(r.body.contains(&format!("/computers/{ws}")), "{}", r.body);
    let n = computers.as_array().unwrap().len();
    assert!(n >= 2);
    assert!(
        r.body.contains(&format!("All Computers ({n})")),
        "{}",
        r.body
    );
    // The Bundles page names the key that signed each export.
    let exports = gs(&dir, &["exports", "list", "--json"]).ok().json();
    let signer = exports[0]["signer"].as_str().expect("signer").to_string();
    assert!(!signer.is_empty());
    let r = get(c.addr, &session, "/bundles");
    assert!(
        r.body.contains(&format!("<code>{signer}</code>")),
        "{}",
        r.body
    );
    // Unknown ids are 404s, not errors.
    let r = get(
        c.addr,
        &session,
        "/updates/00000000-0000-0000-0000-000000000001",
    );
    assert_eq!(r.status, 404);
    let r = get(c.addr, &session, "/computers/nope");
    assert_eq!(r.status, 404);
}

/// The overview shows the last recorded `check` (clean, then its
/// problems); the Bundles page shows each bundle's size and signing key,
/// on the exporting side and on the side that imported it.
#[test]
fn console_shows_the_last_check_and_bundle_sizes_and_keys() {
    use gapsync::model::units::human_bytes;
    let (tmp, dir) = console_store();
    let c = Running::start(&dir, tmp.path().join("console.log"));
    let (session, _) = login(c.addr);
    let home = || get(c.addr, &session, "/").body;
    assert!(home().contains("never recorded"), "{}", home());

    gs(&dir, &["check"]).ok();
    let page = home();
    let fact = page
        .split("<dd id=\"last-check\">")
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .expect("the last check on the overview");
    assert!(
        fact.contains(": clean;") && fact.contains("revisions"),
        "{fact}"
    );

    // A damaged revision: `check` fails (exit 3), and its finding is a
    // pending problem on the overview, named by its rule.
    let db = rusqlite::Connection::open(dir.join("gapsync.db")).unwrap();
    db.execute(
        "UPDATE revisions SET xml = x'00' WHERE rev_id = (SELECT MIN(rev_id) FROM revisions)",
        [],
    )
    .unwrap();
    drop(db);
    let r = gs(&dir, &["check"]).fails(3, "1 problem found");
    assert!(r.stdout.contains("revision-digest"), "{}", r.stdout);
    let page = home();
    assert!(page.contains("<strong>1 problem</strong>"), "{page}");
    assert!(
        page.contains("<code>revision-digest</code>") && page.contains("does not match"),
        "{page}"
    );
    tidy("/ with a check problem", &page);

    // A bundle whose validity period ends within a week, and no site report
    // shows it applied: a pending problem.
    export_metadata(&dir, tmp.path(), "lab-0001", "lab", &["--expires", "2d"]).ok();
    let page = home();
    assert!(
        page.contains("The last bundle to lab (seq 1) expires on"),
        "{page}"
    );
    assert!(!page.contains("The last bundle to plant"), "{page}");

    // Sizes and keys: the export ledger and the import ledger record the
    // same size and signer for the same bundle.
    let exports = gs(&dir, &["exports", "list", "--json"]).ok().json();
    let plant_export = exports
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["destination"] == "plant")
        .expect("the export to plant");
    let signer = plant_export["signer"].as_str().expect("signer").to_string();
    let bytes = plant_export["bytes"].as_u64().expect("bytes");
    assert!(bytes > 0);
    let r = get(c.addr, &session, "/bundles");
    assert!(r.body.contains(&human_bytes(bytes)), "{}", r.body);

    let (_ptmp, plant) = new_store("plant", "replica");
    gs(
        &plant,
        &["trust", "add", tmp.path().join("k.pub").to_str().unwrap()],
    )
    .ok();
    gs(
        &plant,
        &["import", tmp.path().join("b-0001").to_str().unwrap()],
    )
    .ok();
    let imports = gs(&plant, &["imports", "list", "--json"]).ok().json();
    assert_eq!(imports[0]["signer"].as_str(), Some(signer.as_str()));
    assert_eq!(imports[0]["bytes"].as_u64(), Some(bytes));
    // The text listings show the size too.
    let text = gs(&plant, &["imports", "list"]).ok().stdout;
    assert!(text.contains(&human_bytes(bytes)), "{text}");
    let text = gs(&dir, &["exports", "list"]).ok().stdout;
    assert!(text.contains(&human_bytes(bytes)), "{text}");
    set_password(&plant, PASSWORD).ok();
    let p = Running::start(&plant, tmp.path().join("plant-console.log"));
    let (psession, _) = login(p.addr);
    let r = get(p.addr, &psession, "/bundles");
    let imported = r
        .body
        .split("id=\"h-im\"")
        .nth(1)
        .expect("the Imported section");
    assert!(
        imported.contains(&format!("<code>{signer}</code>"))
            && imported.contains(&human_bytes(bytes)),
        "{imported}"
    );
    tidy("/bundles of the plant", &r.body);
}

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver)");
    let d = Driver { child, port };
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

/// Whether a PNG screenshot shows a page: several colours, and enough
/// pixels that are not the background.
fn assert_not_blank(path: &Path) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().expect("PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let bpp = info.color_type.samples();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp).collect();
    let bg = px[px.len() - 1];
    let other = px.iter().filter(|p| p[..3] != bg[..3]).count();
    let mut colours: Vec<[u8; 3]> = px.iter().map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() >= 8 && other * 100 >= px.len() * 2,
        "{} looks blank: {} colours, {other} of {} pixels differ from the background",
        path.display(),
        colours.len(),
        px.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    let (tmp, dir) = console_store();
    let c = Running::start(&dir, tmp.path().join("console.log"));
    let base = c.base();
    let (id, kb, title) = software_update_with_kb(&dir);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let driver = start_driver();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                // The network is closed but for the console: every host name
                // but 127.0.0.1 fails to resolve, and other traffic goes to a
                // proxy that is not there (loopback bypasses it).
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9"
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let b = fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("WebDriver session");
    let result = browse(&b, &base, &dir, &shots, &id, &kb, &title).await;
    let _ = b.close().await;
    drop(driver);
    result.unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(&shots).unwrap() {
        assert_not_blank(&e.unwrap().path());
        n += 1;
    }
    assert_eq!(n, 7, "one screenshot per page");
}

async fn shot(
    b: &fantoccini::Client,
    shots: &Path,
    name: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let png = b.screenshot().await?;
    std::fs::write(shots.join(format!("{name}.png")), png).unwrap();
    Ok(())
}

/// Every request the page made (the document, styles, scripts, images)
/// went to the console.
/// The page's flash message once it contains `want` (the page before the
/// action may still show an older one), or the last one seen after 30 s.
async fn flash_with(
    b: &fantoccini::Client,
    want: &str,
) -> Result<String, fantoccini::error::CmdError> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < until {
        if let Ok(e) = b.find(fantoccini::Locator::Css("p.flash")).await
            && let Ok(t) = e.text().await
        {
            if t.contains(want) {
                return Ok(t);
            }
            seen = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(seen)
}

async fn only_local(b: &fantoccini::Client, base: &str) -> Result<(), fantoccini::error::CmdError> {
    let v = b
        .execute(
            "return performance.getEntries().map(e => e.name).filter(n => n.startsWith('http'));",
            vec![],
        )
        .await?;
    let urls: Vec<String> = serde_json::from_value(v).unwrap();
    assert!(!urls.is_empty());
    for u in &urls {
        assert!(u.starts_with(base), "a request left the console: {u}");
    }
    Ok(())
}

async fn browse(
    b: &fantoccini::Client,
    base: &str,
    dir: &Path,
    shots: &Path,
    id: &str,
    kb: &str,
    title: &str,
) -> Result<(), fantoccini::error::CmdError> {
    use fantoccini::Locator;
    use fantoccini::key::Key;

    // Log in: a wrong password first.
    b.goto(&format!("{base}/updates")).await?;
    assert_eq!(b.current_url().await?.path(), "/login");
    b.find(Locator::Id("password"))
        .await?
        .send_keys("not it")
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    let err = b
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("p.error"))
        .await?
        .text()
        .await?;
    assert!(err.contains("Wrong password"), "{err}");
    shot(b, shots, "1-login").await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys(&char::from(Key::Enter).to_string())
        .await?;
    b.wait().for_element(Locator::Id("anchor")).await?;
    assert_eq!(b.current_url().await?.path(), "/");
    // The stylesheet loaded under the policy (the header is coloured).
    let bg = b
        .execute(
            "return getComputedStyle(document.querySelector('header.top')).backgroundColor;",
            vec![],
        )
        .await?;
    assert_eq!(bg, serde_json::json!("rgb(29, 78, 137)"));
    // Keyboard: the first Tab reaches the skip link.
    {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let tab = char::from(Key::Tab);
        b.perform_actions(
            KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: tab })
                .then(KeyAction::Up { value: tab }),
        )
        .await?;
    }
    let active = b
        .execute("return document.activeElement.className;", vec![])
        .await?;
    assert_eq!(active, serde_json::json!("skip"));
    only_local(b, base).await?;
    shot(b, shots, "2-overview").await?;

    // Search the update by KB number.
    b.find(Locator::LinkText("Updates")).await?.click().await?;
    b.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("f-q"))
        .await?
        .send_keys(&format!("KB{kb}"))
        .await?;
    b.find(Locator::Id("search")).await?.click().await?;
    let count = b
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("result-count"))
        .await?
        .text()
        .await?;
    assert!(count.contains("matching; page 1 of 1"), "{count}");
    let rows = b.find_all(Locator::Css("table.updates tbody tr")).await?;
    assert!(
        !rows.is_empty() && rows.len() < 50,
        "KB{kb}: {} rows",
        rows.len()
    );
    for r in rows {
        let t = r.text().await?;
        assert!(t.contains(&format!("KB{kb}")) || t.contains(kb), "{t}");
    }
    // The script loaded too: it adds "select all" to the list.
    b.find(Locator::Css("table.updates thead input[type=checkbox]"))
        .await?;
    shot(b, shots, "3-updates").await?;
    b.find(Locator::LinkText(title)).await?.click().await?;
    assert_eq!(b.current_url().await?.path(), format!("/updates/{id}"));

    // Approve for Pilot with a deadline.
    b.find(Locator::Css("#a-group option[value=Pilot]"))
        .await?
        .click()
        .await?;
    b.find(Locator::Id("a-deadline"))
        .await?
        .send_keys("2027-01-15T18:00:00Z")
        .await?;
    b.find(Locator::Id("do-approve")).await?.click().await?;
    let flash = flash_with(b, "Approved 1 update for Pilot").await?;
    assert!(flash.contains("Approved 1 update for Pilot"), "{flash}");
    let table = b.find(Locator::Id("approvals")).await?.text().await?;
    assert!(
        table.contains("Pilot") && table.contains("2027-01-15T18:00:00Z"),
        "{table}"
    );
    shot(b, shots, "4-update").await?;
    let d = deployments(dir);
    assert!(
        d.iter().any(|x| x["update_id"] == id
            && x["group"] == "Pilot"
            && x["deadline"] == "2027-01-15T18:00:00Z"),
        "{d:?}"
    );

    // Decline (the script asks first).
    b.find(Locator::Id("do-decline")).await?.click().await?;
    b.accept_alert().await?;
    // The approval's flash is still on the page until the answer loads.
    let flash = flash_with(b, "Declined 1 update").await?;
    assert!(flash.contains("Declined 1 update"), "{flash}");
    assert_eq!(
        b.find(Locator::Id("update-state")).await?.text().await?,
        "declined"
    );
    assert!(!deployments(dir).iter().any(|x| x["update_id"] == id));
    let shown = gs(dir, &["updates", "show", id, "--json"]).ok().json();
    assert_eq!(shown["declined"], true);

    // The other pages.
    b.find(Locator::LinkText("Computers"))
        .await?
        .click()
        .await?;
    b.find(Locator::LinkText("ws-001")).await?;
    shot(b, shots, "5-computers").await?;
    b.find(Locator::LinkText("Compliance"))
        .await?
        .click()
        .await?;
    b.find(Locator::Css("svg.bar")).await?;
    shot(b, shots, "6-compliance").await?;
    b.find(Locator::LinkText("Bundles")).await?.click().await?;
    let text = b.find(Locator::Css("main")).await?.text().await?;
    assert!(
        text.contains("plant") && text.contains("minisign -Vm"),
        "{text}"
    );
    shot(b, shots, "7-bundles").await?;
    only_local(b, base).await?;
    Ok(())
}
