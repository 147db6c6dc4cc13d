//! `gapsync serve`, the upstream (USS) role of MS-WSUSSS, driven through
//! the real binary on loopback: every captured real request against the
//! captured real response's structure, an independent SOAP client (python
//! zeep with the protocol's WSDLs), faults for bad input with the server
//! still serving, slow clients, content with ranges, TLS, and incremental
//! revision and deployment lists.
//!
//! Servers listen on 127.0.0.1 port 0 (the binary prints the port it got)
//! and are killed when their handle drops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use gapsync::soap::{Element, Limits, parse_document};

use common::{gs, new_store, reference};

const SSS: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
const AUTH: &str = "/DssAuthWebService/DssAuthWebService.asmx";
const ACTION: &str = "http://www.microsoft.com/SoftwareDistribution/";
const AUTH_ACTION: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService/GetAuthorizationCookie";

// ---------------------------------------------------------------------------
// Servers and a raw HTTP client
// ---------------------------------------------------------------------------

/// A running `gapsync serve`; killed on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Served {
    fn start(store: &Path, env: &[(&str, &str)]) -> Served {
        Self::start_args(store, &[], env)
    }

    fn start_args(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let log = store.with_extension(format!("serve-{}.log", uuid::Uuid::new_v4().simple()));
        let mut c = Command::new(common::bin());
        c.arg("--server")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("GAPSYNC_SERVER")
            .env_remove("GAPSYNC_SERVE_COOKIE_LIFETIME")
            .env_remove("GAPSYNC_SERVE_REQUEST_TIMEOUT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")));
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start gapsync serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "serve printed no address; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "unexpected first line {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr: SocketAddr = url
            .split("://")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .expect("address in the first line");
        Served { child, addr, log }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs a SOAP 1.1 message.
    fn soap(&self, path: &str, action: &str, body: &str) -> Resp {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        http(self.addr, req.as_bytes())
    }

    fn op(&self, op: &str, body: &str) -> Resp {
        self.soap(SSS, &format!("{ACTION}{op}"), body)
    }

    fn get(&self, path: &str, extra_headers: &str) -> Resp {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra_headers}Connection: close\r\n\r\n",
            self.addr
        );
        http(self.addr, req.as_bytes())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The text of the first element with this local name.
    fn field(&self, name: &str) -> Option<String> {
        let t = self.text();
        let open = format!("<{name}>");
        let start = t.find(&open)? + open.len();
        let end = t[start..].find(&format!("</{name}>"))? + start;
        Some(
            quick_xml::escape::unescape(&t[start..end])
                .ok()?
                .into_owned(),
        )
    }
    fn fields(&self, name: &str) -> Vec<String> {
        let t = self.text();
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let mut out = Vec::new();
        let mut rest = t.as_str();
        while let Some(i) = rest.find(&open) {
            rest = &rest[i + open.len()..];
            let Some(j) = rest.find(&close) else { break };
            out.push(rest[..j].to_string());
            rest = &rest[j..];
        }
        out
    }
    /// (ErrorCode, Message) of a fault.
    fn fault(&self) -> (String, String) {
        assert_eq!(
            self.status,
            500,
            "expected a fault, got {}: {}",
            self.status,
            self.text()
        );
        (
            self.field("ErrorCode").unwrap_or_default(),
            self.field("Message").unwrap_or_default(),
        )
    }
    fn ok(self) -> Resp {
        assert_eq!(self.status, 200, "expected 200: {}", self.text());
        self
    }
}

/// Sends a whole request and reads the response until the server closes.
fn http(addr: SocketAddr, req: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>{inner}</soap:Body></soap:Envelope>"
    )
}

fn cookie_xml(encrypted: &str) -> String {
    format!(
        "<cookie><Expiration>2099-01-01T00:00:00Z</Expiration><EncryptedData>{encrypted}</EncryptedData></cookie>"
    )
}

/// GetAuthorizationCookie then GetCookie: the cookie's EncryptedData.
fn login(srv: &Served, dss: &str) -> String {
    let ac = srv
        .soap(
            AUTH,
            AUTH_ACTION,
            &envelope(&format!(
                "<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>test.lab.invalid</accountName><accountGuid>{dss}</accountGuid></GetAuthorizationCookie>"
            )),
        )
        .ok();
    let data = ac.field("CookieData").expect("CookieData");
    let c = srv.op("GetCookie", &get_cookie_xml(&data)).ok();
    c.field("EncryptedData").expect("EncryptedData")
}

fn get_cookie_xml(cookie_data: &str) -> String {
    envelope(&format!(
        "<GetCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution\"><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId><CookieData>{cookie_data}</CookieData></AuthorizationCookie></authCookies><protocolVersion>1.20</protocolVersion></GetCookie>"
    ))
}

fn revision_list_xml(cookie: &str, filter: &str) -> String {
    envelope(&format!(
        "<GetRevisionIdList xmlns=\"http://www.microsoft.com/SoftwareDistribution\">{}<filter>{filter}</filter></GetRevisionIdList>",
        cookie_xml(cookie)
    ))
}

/// (UpdateID/RevisionNumber) pairs of a GetRevisionIdList answer.
fn identities(r: &Resp) -> Vec<String> {
    let ids = r.fields("UpdateID");
    let revs = r.fields("RevisionNumber");
    assert_eq!(ids.len(), revs.len());
    ids.into_iter()
        .zip(revs)
        .map(|(i, r)| format!("{i}/{r}"))
        .collect()
}

/// A store with the captured update documents, a small generated catalog
/// with content, a group, two approvals (one with a deadline) and a
/// declined update. Returns (tempdir, store, approved id, declined id).
fn populated_store() -> (tempfile::TempDir, PathBuf, String, String) {
    let (tmp, dir) = new_store("hq", "autonomous");
    let docs = common::captured_docs();
    gs(&dir, &["catalog", "add", docs.to_str().unwrap()]).ok();
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "40",
            "--content-bytes",
            "1M",
            "--seed",
            "1",
        ],
    )
    .ok();
    gs(&dir, &["groups", "add", "Pilot"]).ok();
    let list = gs(&dir, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    let approved = ids[3].clone();
    let declined = ids[4].clone();
    gs(
        &dir,
        &[
            "approve",
            &approved,
            "--group",
            "Pilot",
            "--deadline",
            "2026-12-01T18:00:00Z",
        ],
    )
    .ok();
    gs(&dir, &["approve", &ids[5], "--group", "Pilot"]).ok();
    gs(&dir, &["decline", &declined]).ok();
    (tmp, dir, approved, declined)
}

// ---------------------------------------------------------------------------
// 1. Structure of every captured exchange
// ---------------------------------------------------------------------------

/// A SOAP message's element tree, read with gapsync's SOAP layer.
fn structure(xml: &[u8]) -> Element {
    parse_document(xml, &Limits::ANSWER).expect("well-formed XML")
}

/// Collapses runs of same-named siblings to their first element (lists
/// are compared by their items' shape, not their length).
fn collapse(children: &[Element]) -> Vec<&Element> {
    let mut out: Vec<&Element> = Vec::new();
    for c in children {
        if out
            .last()
            .is_none_or(|l| l.qualified_name() != c.qualified_name())
        {
            out.push(c);
        }
    }
    out
}

/// Every difference of element structure between the real response and
/// gapsync's, with its path (a namespace is shown where it changes).
fn compare(real: &Element, ours: &Element, path: &str, parent_ns: &str, diffs: &mut Vec<String>) {
    let (real_name, our_name) = (real.qualified_name(), ours.qualified_name());
    let here = format!("{path}/{}", short(&real_name, parent_ns));
    if real_name != our_name {
        diffs.push(format!(
            "{path}: real has {real_name}, gapsync has {our_name}"
        ));
        return;
    }
    let ns = namespace(&real_name);
    let a = collapse(real.children());
    let b = collapse(ours.children());
    let names = |v: &[&Element]| {
        v.iter()
            .map(|n| short(&n.qualified_name(), ns))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if a.len() != b.len()
        || a.iter()
            .zip(&b)
            .any(|(x, y)| x.qualified_name() != y.qualified_name())
    {
        diffs.push(format!(
            "{here}: real children [{}], gapsync children [{}]",
            names(&a),
            names(&b)
        ));
        return;
    }
    for (x, y) in a.iter().zip(&b) {
        compare(x, y, &here, ns, diffs);
    }
}

fn namespace(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.split_once('}'))
        .map(|(ns, _)| ns)
        .unwrap_or("")
}

/// `local`, or `{ns}local` when the namespace is not the parent's.
fn short(name: &str, parent_ns: &str) -> String {
    let local = name.rsplit_once('}').map(|(_, l)| l).unwrap_or(name);
    if namespace(name) == parent_ns {
        local.to_string()
    } else {
        format!("{{{}}}{local}", namespace(name))
    }
}

/// Replaces the text of every `<tag>` element for which `want` says so.
fn replace_text(xml: &str, tag: &str, mut with: impl FnMut(&str) -> Option<String>) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let start = i + open.len();
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        out.push_str(&rest[..start]);
        let old = &rest[start..start + len];
        out.push_str(&with(old).unwrap_or_else(|| old.to_string()));
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

struct Exchange {
    name: String,
    path: String,
    action: String,
    status: u16,
    request: String,
    response: Vec<u8>,
}

fn exchanges() -> Vec<Exchange> {
    let dir = reference().join("wsus-captures/wsus-m0-wsusss/exchanges");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("meta.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 19,
        "expected the 19 captured exchanges in {}",
        dir.display()
    );
    names
        .into_iter()
        .map(|name| {
            let d = dir.join(&name);
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("meta.json")).unwrap()).unwrap();
            Exchange {
                path: meta["path"].as_str().expect("path").to_string(),
                action: meta["soap_action"]
                    .as_str()
                    .expect("soap_action")
                    .to_string(),
                status: meta["status"].as_u64().expect("status") as u16,
                request: std::fs::read_to_string(d.join("request.body")).unwrap(),
                response: std::fs::read(d.join("response.body")).unwrap(),
                name,
            }
        })
        .collect()
}

/// For every captured request body, `gapsync serve` answers with the
/// captured real response's status and element structure (names, nesting,
/// namespaces; values and list lengths may differ).
///
/// The captures' cookies are redacted (all-'A' base64) and their anchors
/// are the Windows server's, so before sending, the test substitutes
/// values this server issued, as a real downstream server would hold them:
/// - `CookieData` (GetCookie): the authorization cookie gapsync returned
///   for the captured GetAuthorizationCookie request;
/// - `EncryptedData` (every cookie): the cookie gapsync returned for the
///   captured GetCookie request (after the substitution above);
/// - `configAnchor`: gapsync's `NewConfigAnchor`;
/// - a filter `Anchor` in the Windows format (`9438,2026-...`): gapsync's
///   anchor from a first GetRevisionIdList. The deliberately bad anchor
///   `garbage` (exchange 000018) is sent as captured.
#[test]
fn every_captured_request_gets_a_response_of_the_captured_structure() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &["catalog", "add", common::captured_docs().to_str().unwrap()],
    )
    .ok();
    let srv = Served::start(&dir, &[]);
    let all = exchanges();
    let by_action = |a: &str| all.iter().find(|x| x.action.ends_with(a)).expect(a);

    let auth = by_action("/GetAuthorizationCookie");
    let r = srv.soap(&auth.path, &auth.action, &auth.request).ok();
    let cookie_data = r.field("CookieData").expect("CookieData");
    let gc = by_action("/GetCookie");
    let gc_req = replace_text(&gc.request, "CookieData", |_| Some(cookie_data.clone()));
    let r = srv.soap(&gc.path, &gc.action, &gc_req).ok();
    let encrypted = r.field("EncryptedData").expect("EncryptedData");
    let with_cookie = |req: &str| replace_text(req, "EncryptedData", |_| Some(encrypted.clone()));
    let cfg = all
        .iter()
        .find(|x| x.action.ends_with("/GetConfigData") && !x.request.contains("configAnchor"))
        .unwrap();
    let r = srv
        .soap(&cfg.path, &cfg.action, &with_cookie(&cfg.request))
        .ok();
    let config_anchor = r.field("NewConfigAnchor").expect("NewConfigAnchor");
    let list = all
        .iter()
        .find(|x| {
            x.action.ends_with("/GetRevisionIdList") && x.request.contains("<GetConfig>false")
        })
        .unwrap();
    let r = srv
        .soap(&list.path, &list.action, &with_cookie(&list.request))
        .ok();
    let anchor = r.field("Anchor").expect("Anchor");

    let mut diffs = Vec::new();
    for x in &all {
        let mut req = with_cookie(&x.request);
        if x.action.ends_with("/GetCookie") {
            req = gc_req.clone();
        }
        req = replace_text(&req, "configAnchor", |_| Some(config_anchor.clone()));
        req = replace_text(&req, "Anchor", |old| {
            let windows = old
                .split_once(',')
                .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()));
            windows.then(|| anchor.clone())
        });
        let r = srv.soap(&x.path, &x.action, &req);
        if r.status != x.status {
            diffs.push(format!(
                "{}: real status {}, gapsync {}: {}",
                x.name,
                x.status,
                r.status,
                r.text()
            ));
            continue;
        }
        let real = structure(&x.response);
        let ours = structure(&r.body);
        let before = diffs.len();
        compare(&real, &ours, "", "", &mut diffs);
        for d in &mut diffs[before..] {
            *d = format!(
                "{} ({}): {d}",
                x.name,
                x.action.rsplit('/').next().unwrap_or("")
            );
        }
    }
    assert!(
        diffs.is_empty(),
        "{} structure differences:\n{}\nserver log:\n{}",
        diffs.len(),
        diffs.join("\n"),
        srv.log()
    );
}

// ---------------------------------------------------------------------------
// 2. An independent client: python zeep with the protocol's WSDLs
// ---------------------------------------------------------------------------

/// python zeep, loaded with `specs/wsusss_serversync.wsdl` and
/// `specs/wsusss_dssauth.wsdl` (service addresses overridden), runs
/// GetAuthConfig → GetAuthorizationCookie → GetCookie → GetConfigData →
/// GetRevisionIdList → GetUpdateData → GetDeployments over SOAP 1.1 and
/// SOAP 1.2 and finds real content in every answer.
#[test]
fn zeep_client_completes_the_downstream_sequence() {
    let (_tmp, dir, approved, declined) = populated_store();
    let srv = Served::start(&dir, &[]);
    let specs = reference().join("specs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zeep_client.py");
    let expect = serde_json::json!({"approved": approved, "group": "Pilot", "declined": declined});
    let out = Command::new("python3")
        .arg(&script)
        .arg(srv.base())
        .arg(specs.join("wsusss_serversync.wsdl"))
        .arg(specs.join("wsusss_dssauth.wsdl"))
        .arg(expect.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is needed for this test ({e}): install Python 3, then `pip install zeep`"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "the python module zeep is missing: run `pip install zeep` (.ci/run does)\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the zeep client failed: {stderr}\nserver log:\n{}",
        srv.log()
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let results = results.as_array().expect("one summary per binding");
    assert_eq!(results.len(), 2);
    for r in results {
        for key in [
            "categories",
            "revisions",
            "blobs",
            "compressed_blobs",
            "file_urls",
            "deployments",
            "hidden",
        ] {
            assert!(r[key].as_u64().unwrap_or(0) > 0, "{key} in {r}");
        }
        assert_eq!(r["groups"].as_u64(), Some(3), "{r}");
    }
}

// ---------------------------------------------------------------------------
// 3. Bad input: faults, and the server keeps serving
// ---------------------------------------------------------------------------

const DSS1: &str = "6f1c2f6e-3f0b-4d3a-9b1e-0d2f6a1c5e12";
const SSS_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

fn server_id(dir: &Path) -> String {
    gs(dir, &["status", "--json"]).ok().json()["server_id"]
        .as_str()
        .unwrap()
        .replace('-', "")
}

/// Malformed, oversized, unknown, forged or out-of-place requests get the
/// spec's faults (ErrorCode, and the parameter's name as Message for
/// InvalidParameters), change nothing, and a normal request succeeds after
/// each of them.
#[test]
fn bad_requests_get_the_spec_faults_and_the_server_keeps_serving() {
    let (_tmp, dir, _, _) = populated_store();
    let before = common::snapshot_db(&dir);
    let srv = Served::start(&dir, &[]);
    let cookie = login(&srv, DSS1);
    let still_serving = |after: &str| {
        let r = srv.op(
            "GetRevisionIdList",
            &revision_list_xml(&cookie, "<GetConfig>true</GetConfig>"),
        );
        assert_eq!(r.status, 200, "after {after}: {}", r.text());
        assert!(!identities(&r).is_empty(), "after {after}");
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forged = b64.decode(&cookie).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = b64.encode(forged);
    let own = server_id(&dir);

    let faults: Vec<(&str, Resp, &str, &str)> = vec![
        (
            "no cookie",
            srv.op("GetRevisionIdList", &envelope(&format!("<GetRevisionIdList xmlns=\"{SSS_NS}\"><filter><GetConfig>true</GetConfig></filter></GetRevisionIdList>"))),
            "InvalidCookie",
            "",
        ),
        (
            "forged cookie",
            srv.op("GetRevisionIdList", &revision_list_xml(&forged, "<GetConfig>true</GetConfig>")),
            "InvalidCookie",
            "",
        ),
        (
            "cookie not base64",
            srv.op("GetConfigData", &envelope(&format!("<GetConfigData xmlns=\"{SSS_NS}\">{}</GetConfigData>", cookie_xml("%%%")))),
            "InvalidCookie",
            "",
        ),
        (
            "malformed anchor",
            srv.op("GetRevisionIdList", &revision_list_xml(&cookie, "<Anchor>garbage</Anchor><GetConfig>false</GetConfig>")),
            "InvalidParameters",
            "filter",
        ),
        (
            "another server's anchor",
            srv.op("GetRevisionIdList", &revision_list_xml(&cookie, &format!("<Anchor>gapsync1:{}:3</Anchor><GetConfig>false</GetConfig>", "ab".repeat(16)))),
            "ServerChanged",
            "",
        ),
        (
            "anchor ahead of the journal",
            srv.op("GetRevisionIdList", &revision_list_xml(&cookie, &format!("<Anchor>gapsync1:{own}:99999999</Anchor><GetConfig>false</GetConfig>"))),
            "ServerChanged",
            "",
        ),
        (
            "no filter",
            srv.op("GetRevisionIdList", &envelope(&format!("<GetRevisionIdList xmlns=\"{SSS_NS}\">{}</GetRevisionIdList>", cookie_xml(&cookie)))),
            "InvalidParameters",
            "filter",
        ),
        (
            "bad category id",
            srv.op("GetRevisionIdList", &revision_list_xml(&cookie, "<GetConfig>false</GetConfig><Categories><IdAndDelta><Id>nope</Id><Delta>false</Delta></IdAndDelta></Categories>")),
            "InvalidParameters",
            "filter",
        ),
        ("truncated XML", srv.op("GetConfigData", "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><GetConfigData"), "InvalidParameters", "request"),
        ("not XML", srv.op("GetConfigData", "hello, world"), "InvalidParameters", "request"),
        (
            "a DTD",
            srv.op("GetConfigData", "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>&b;</soap:Body></soap:Envelope>"),
            "InvalidParameters",
            "request",
        ),
        (
            "deep nesting",
            srv.op("GetConfigData", &envelope(&format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000)))),
            "InvalidParameters",
            "request",
        ),
        (
            "unknown operation",
            srv.op("Frobnicate", &envelope(&format!("<Frobnicate xmlns=\"{SSS_NS}\"/>"))),
            "InvalidParameters",
            "operation",
        ),
        (
            "operation of the other service",
            srv.soap(AUTH, &format!("{ACTION}GetCookie"), &get_cookie_xml("AAAA")),
            "InvalidParameters",
            "operation",
        ),
        (
            "SOAPAction of another operation",
            srv.op("GetCookie", &envelope(&format!("<GetConfigData xmlns=\"{SSS_NS}\">{}</GetConfigData>", cookie_xml(&cookie)))),
            "InvalidParameters",
            "SOAPAction",
        ),
        ("forged authorization cookie", srv.op("GetCookie", &get_cookie_xml(&forged)), "InvalidAuthorizationCookie", ""),
        (
            "two authorization cookies",
            srv.op("GetCookie", &envelope(&format!("<GetCookie xmlns=\"{SSS_NS}\"><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId><CookieData>AAAA</CookieData></AuthorizationCookie><AuthorizationCookie><PlugInId>DssTargeting</PlugInId><CookieData>AAAA</CookieData></AuthorizationCookie></authCookies><protocolVersion>1.20</protocolVersion></GetCookie>"))),
            "InvalidParameters",
            "authCookies",
        ),
        (
            "GetUpdateData of an unknown revision",
            srv.op("GetUpdateData", &envelope(&format!("<GetUpdateData xmlns=\"{SSS_NS}\">{}<updateIds><UpdateIdentity><UpdateID>00000000-0000-0000-0000-000000000001</UpdateID><RevisionNumber>1</RevisionNumber></UpdateIdentity></updateIds></GetUpdateData>", cookie_xml(&cookie)))),
            "InternalServerError",
            "",
        ),
        (
            "GetUpdateData of too many revisions",
            srv.op("GetUpdateData", &envelope(&format!("<GetUpdateData xmlns=\"{SSS_NS}\">{}<updateIds>{}</updateIds></GetUpdateData>", cookie_xml(&cookie), "<UpdateIdentity><UpdateID>00000000-0000-0000-0000-000000000001</UpdateID><RevisionNumber>1</RevisionNumber></UpdateIdentity>".repeat(101)))),
            "InvalidParameters",
            "updateIds",
        ),
        (
            "GetUpdateData without revisions",
            srv.op("GetUpdateData", &envelope(&format!("<GetUpdateData xmlns=\"{SSS_NS}\">{}<updateIds/></GetUpdateData>", cookie_xml(&cookie)))),
            "InvalidParameters",
            "updateIds",
        ),
        (
            "GetDeployments without a sync anchor",
            srv.op("GetDeployments", &envelope(&format!("<GetDeployments xmlns=\"{SSS_NS}\">{}</GetDeployments>", cookie_xml(&cookie)))),
            "InvalidParameters",
            "syncAnchor",
        ),
        (
            "DownloadFiles of an unknown digest",
            srv.op("DownloadFiles", &envelope(&format!("<DownloadFiles xmlns=\"{SSS_NS}\">{}<fileDigestList><base64Binary>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</base64Binary></fileDigestList></DownloadFiles>", cookie_xml(&cookie)))),
            "FileDigestsMissing",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        (
            "a bad account GUID",
            srv.soap(AUTH, AUTH_ACTION, &envelope("<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>a.b</accountName><accountGuid>x</accountGuid></GetAuthorizationCookie>")),
            "InvalidParameters",
            "accountGuid",
        ),
        (
            "a bad account name",
            srv.soap(AUTH, AUTH_ACTION, &envelope(&format!("<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>bad name!</accountName><accountGuid>{DSS1}</accountGuid></GetAuthorizationCookie>"))),
            "InvalidParameters",
            "accountName",
        ),
    ];
    for (what, r, code, message) in faults {
        let (c, m) = r.fault();
        assert_eq!(
            (c.as_str(), m.as_str()),
            (code, message),
            "{what}: {}",
            r.text()
        );
        assert!(r.text().contains("<ID>"), "{what}: fault ID");
        still_serving(what);
    }

    // Protocol versions in GetCookie.
    let ac = srv
        .soap(AUTH, AUTH_ACTION, &envelope(&format!("<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>a.b</accountName><accountGuid>{DSS1}</accountGuid></GetAuthorizationCookie>")))
        .ok()
        .field("CookieData")
        .unwrap();
    for (version, code, message) in [
        ("2.0", "IncompatibleProtocolVersion", ""),
        ("one", "InvalidParameters", "protocolVersion"),
    ] {
        let body = get_cookie_xml(&ac).replace(
            "<protocolVersion>1.20<",
            &format!("<protocolVersion>{version}<"),
        );
        let (c, m) = srv.op("GetCookie", &body).fault();
        assert_eq!(
            (c.as_str(), m.as_str()),
            (code, message),
            "protocol version {version}"
        );
    }

    // A cookie of another gapsync server is not valid here.
    let (_tmp2, other) = new_store("other", "autonomous");
    let srv2 = Served::start(&other, &[]);
    let foreign = login(&srv2, DSS1);
    let (c, _) = srv
        .op(
            "GetRevisionIdList",
            &revision_list_xml(&foreign, "<GetConfig>true</GetConfig>"),
        )
        .fault();
    assert_eq!(c, "InvalidCookie");

    // Oversized body: refused before it is read.
    let req = format!(
        "POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetConfigData\"\r\nContent-Length: {}\r\n\r\n<soap:Envelope",
        64 * 1024 * 1024
    );
    let r = http(srv.addr, req.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("InvalidParameters"));
    still_serving("an oversized body");
    // No Content-Length (chunked): 411.
    let req = format!(
        "POST {SSS} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(http(srv.addr, req.as_bytes()).status, 411);
    // Not POST.
    assert_eq!(srv.get(SSS, "").status, 405);
    // A malformed request head.
    assert_eq!(http(srv.addr, b"NOT HTTP AT ALL\r\n\r\n").status, 400);
    // Unknown paths (the reporting path is MS-WUSP's now: SOAP, so POST).
    assert_eq!(srv.get("/ApiRemoting30/WebService.asmx", "").status, 404);
    assert_eq!(
        srv.get("/ReportingWebService/ReportingWebService.asmx", "")
            .status,
        405
    );
    still_serving("bad HTTP");

    // SOAP 1.2: a fault with an unqualified Detail (MS-WSUSSS 2.2.9.2).
    let body12 = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap12:Envelope xmlns:soap12=\"http://www.w3.org/2003/05/soap-envelope\"><soap12:Body><GetConfigData xmlns=\"{SSS_NS}\"/></soap12:Body></soap12:Envelope>"
    );
    let req = format!(
        "POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml; charset=utf-8; action=\"{ACTION}GetConfigData\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body12}",
        body12.len()
    );
    let r = http(srv.addr, req.as_bytes());
    assert_eq!(r.status, 500);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/soap+xml")
    );
    let t = r.text();
    assert!(
        t.contains("<soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code>"),
        "{t}"
    );
    assert!(
        t.contains("<Detail><ErrorCode>InvalidCookie</ErrorCode>"),
        "{t}"
    );

    // A doubled leading slash reaches the services, as Windows WSUS sends.
    assert_eq!(srv.soap(&format!("/{AUTH}"), AUTH_ACTION, &envelope(&format!("<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>a.b</accountName><accountGuid>{DSS1}</accountGuid></GetAuthorizationCookie>"))).status, 200);
    assert_eq!(
        srv.op(
            "GetAuthConfig",
            &envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"))
        )
        .status,
        200
    );

    drop(srv);
    drop(srv2);
    assert_eq!(
        common::snapshot_db(&dir),
        before,
        "bad requests changed the store"
    );
}

/// Cookies expire: after the lifetime (`GAPSYNC_SERVE_COOKIE_LIFETIME`,
/// seconds) a cookie is InvalidCookie and the authorization cookie
/// InvalidAuthorizationCookie; a new login works.
#[test]
fn expired_cookies_are_refused() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[("GAPSYNC_SERVE_COOKIE_LIFETIME", "2")]);
    let ac = srv
        .soap(AUTH, AUTH_ACTION, &envelope(&format!("<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\"><accountName>a.b</accountName><accountGuid>{DSS1}</accountGuid></GetAuthorizationCookie>")))
        .ok()
        .field("CookieData")
        .unwrap();
    let cookie = srv
        .op("GetCookie", &get_cookie_xml(&ac))
        .ok()
        .field("EncryptedData")
        .unwrap();
    let config = |c: &str| {
        srv.op(
            "GetConfigData",
            &envelope(&format!(
                "<GetConfigData xmlns=\"{SSS_NS}\">{}</GetConfigData>",
                cookie_xml(c)
            )),
        )
    };
    config(&cookie).ok();
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(config(&cookie).fault().0, "InvalidCookie");
    assert_eq!(
        srv.op("GetCookie", &get_cookie_xml(&ac)).fault().0,
        "InvalidAuthorizationCookie"
    );
    let fresh = login(&srv, DSS1);
    config(&fresh).ok();
}

/// A client that trickles its request neither blocks other clients nor
/// holds its connection past the request deadline
/// (`GAPSYNC_SERVE_REQUEST_TIMEOUT`, seconds), whether it is slow in the
/// head or in the body.
#[test]
fn slow_clients_neither_block_others_nor_hold_on() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[("GAPSYNC_SERVE_REQUEST_TIMEOUT", "2")]);
    let addr = srv.addr;
    let trickle = |prefix: Vec<u8>, filler: u8| {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            s.write_all(&prefix).unwrap();
            let start = Instant::now();
            let mut answer = Vec::new();
            while start.elapsed() < Duration::from_secs(10) {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        break;
                    }
                    Err(_) => {}
                }
                if s.write_all(&[filler]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(80));
            }
            (
                start.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        })
    };
    let slow_head = trickle(
        format!("POST {SSS} HTTP/1.1\r\nHost: x\r\nX-Slow: ").into_bytes(),
        b'a',
    );
    let slow_body = trickle(
        format!("POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 100000\r\n\r\n").into_bytes(),
        b' ',
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t = Instant::now();
        srv.op(
            "GetAuthConfig",
            &envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>")),
        )
        .ok();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a normal request took {:?}",
            t.elapsed()
        );
    }
    for (what, h) in [("head", slow_head), ("body", slow_body)] {
        let (held, answer) = h.join().unwrap();
        assert!(
            held < Duration::from_secs(6),
            "a slow {what} held its connection for {held:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "slow {what}: {answer}"
        );
    }
    srv.op(
        "GetAuthConfig",
        &envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>")),
    )
    .ok();
}

/// How many HTTP responses a raw answer holds.
fn responses_in(raw: &[u8]) -> usize {
    String::from_utf8_lossy(raw).matches("HTTP/1.1 ").count()
}

/// Sends raw bytes; the whole answer until the server closes.
fn raw_exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw
}

/// Request smuggling (RFC 9112 6.3): a request whose body length a proxy
/// in front could read otherwise gets 400 and the connection is closed, so
/// the bytes after it are never served as another request; identical
/// repeated Content-Lengths are one.
#[test]
fn ambiguous_framing_gets_400_and_the_connection_closes() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[]);
    let body = envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"));
    let len = body.len();
    let post = |extra: &str, version: &str| {
        format!(
            "POST {SSS} {version}\r\nHost: x\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetAuthConfig\"\r\n{extra}\r\n{body}"
        )
    };
    // What a proxy that reads the other length would take for a second
    // request on the same connection.
    let smuggled = "GET /Content/../gapsync.db HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        (
            "two different Content-Lengths",
            post(
                &format!(
                    "Content-Length: {len}\r\nContent-Length: {}\r\n",
                    len + smuggled.len()
                ),
                "HTTP/1.1",
            ) + smuggled,
        ),
        (
            "a Content-Length list with different values",
            post(
                &format!("Content-Length: {len}, {}\r\n", len + 1),
                "HTTP/1.1",
            ),
        ),
        (
            "Transfer-Encoding and Content-Length",
            post(
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {len}\r\n"),
                "HTTP/1.1",
            ) + smuggled,
        ),
        (
            "a Content-Length that is not a number",
            post(&format!("Content-Length: +{len}\r\n"), "HTTP/1.1"),
        ),
        (
            "a Content-Length beyond any number",
            post("Content-Length: 99999999999999999999999\r\n", "HTTP/1.1"),
        ),
        (
            "a final coding other than chunked",
            format!(
                "GET /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{smuggled}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            post("Transfer-Encoding: chunked\r\n", "HTTP/1.0"),
        ),
    ];
    for (what, req) in cases {
        let raw = raw_exchange(srv.addr, req.as_bytes());
        let r = parse_response(&raw);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert_eq!(responses_in(&raw), 1, "{what}: one answer, then closed");
    }
    // Identical repeats are refused too (RFC 9110 8.6 allows either; a
    // proxy in front may not have collapsed them).
    let r = http(
        srv.addr,
        post(
            &format!("Content-Length: {len}\r\nContent-Length: {len}\r\nConnection: close\r\n"),
            "HTTP/1.1",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // The server still serves after all of these.
    let r = http(
        srv.addr,
        post(
            &format!("Content-Length: {len}\r\nConnection: close\r\n"),
            "HTTP/1.1",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<PlugInID>DssTargeting</PlugInID>"));
    let log = srv.log();
    assert!(log.contains("duplicate Content-Length"), "{log}");
}

/// The request head limit of docs/protocol.md: 16 KiB for the request line,
/// the headers and the empty line together (so also for one line), 64
/// headers; beyond it 431 and the connection closed, however the bytes
/// arrive.
#[test]
fn request_heads_over_16_kib_get_431() {
    const LIMIT: usize = 16 * 1024;
    assert_eq!(
        gapsync::http::ServeOptions::default().max_head,
        LIMIT,
        "the documented limit"
    );
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[]);
    // A GET of an unknown path whose head is exactly `size` bytes.
    let head_of = |size: usize| {
        let start = "GET /nope HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let end = "\r\n\r\n";
        let pad = size - start.len() - end.len();
        format!("{start}{}{end}", "a".repeat(pad))
    };
    assert_eq!(head_of(LIMIT).len(), LIMIT);
    assert_eq!(
        http(srv.addr, head_of(LIMIT).as_bytes()).status,
        404,
        "at the limit"
    );
    let r = http(srv.addr, head_of(LIMIT + 1).as_bytes());
    assert_eq!(r.status, 431, "one byte over: {}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    // One 24 KB header, sent at once.
    let one = format!(
        "GET /nope HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(24_000)
    );
    assert_eq!(
        http(srv.addr, one.as_bytes()).status,
        431,
        "one 24 KB header"
    );
    // Many small headers adding up to 20 KB (fewer than 64).
    let many = format!(
        "GET /nope HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..20)
            .map(|i| format!("X-H{i}: {}\r\n", "c".repeat(1000)))
            .collect::<String>()
    );
    assert_eq!(
        http(srv.addr, many.as_bytes()).status,
        431,
        "20 KB of headers"
    );
    // A line that never ends.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(format!("GET /{} HTTP/1.1", "d".repeat(LIMIT + 100)).as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 431, "an unfinished line");
    // More than 64 headers.
    let too_many = format!(
        "GET /nope HTTP/1.1\r\n{}\r\n",
        (0..65)
            .map(|i| format!("X-H{i}: 1\r\n"))
            .collect::<String>()
    );
    assert_eq!(
        http(srv.addr, too_many.as_bytes()).status,
        431,
        "65 headers"
    );
    srv.op(
        "GetAuthConfig",
        &envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>")),
    )
    .ok();
}

/// Every log line starts with a UTC timestamp (RFC 3339) and the client's
/// address (`-` where there is none).
#[test]
fn log_lines_carry_utc_time_and_the_client_address() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[]);
    let started = time::OffsetDateTime::now_utc();
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /nope-logged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 404);
    http(srv.addr, b"NOT HTTP AT ALL\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.log().contains("malformed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let mut words = line.splitn(3, ' ');
        let (Some(ts), Some(client), Some(_)) = (words.next(), words.next(), words.next()) else {
            panic!("log line {line:?}");
        };
        assert!(ts.ends_with('Z'), "UTC: {line:?}");
        let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            (t - started).abs() < time::Duration::minutes(2),
            "a current time: {line:?}"
        );
        assert!(
            client == "-" || client.parse::<SocketAddr>().is_ok(),
            "a client address: {line:?}"
        );
    }
    let request = lines
        .iter()
        .find(|l| l.contains("GET /nope-logged"))
        .unwrap_or_else(|| panic!("request logged: {log}"));
    assert_eq!(
        request.split(' ').nth(1),
        Some(me.to_string().as_str()),
        "{request}"
    );
    assert!(request.contains("-> 404"), "{request}");
    let bad = lines.iter().find(|l| l.contains("malformed")).unwrap();
    assert!(
        bad.split(' ').nth(1).unwrap().starts_with("127.0.0.1:"),
        "{bad}"
    );
}

/// `--listen`: an address that does not parse is a usage error (exit 2)
/// named before anything starts; a busy port is a runtime error (exit 1)
/// said once.
#[test]
fn listen_address_errors_are_said_once_with_their_exit_code() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    for bad in [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:99999",
        "127.0.0.1:http",
        "bad host:80",
    ] {
        let r = gs(&dir, &["serve", "--listen", bad]);
        let r = r.fails(2, "--listen");
        assert!(r.stderr.contains(bad), "{bad}: {}", r.stderr);
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = gs(&dir, &["serve", "--listen", &addr]).fails(1, "already in use");
    assert_eq!(
        r.stderr.matches("already in use").count(),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.matches(addr.as_str()).count(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains("os error"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    drop(taken);
}

// ---------------------------------------------------------------------------
// 4. Content
// ---------------------------------------------------------------------------

/// `/Content/XX/FILE`: GET and HEAD, single ranges (first bytes, middle,
/// suffix, open-ended; 416 beyond the end), whole file for several ranges
/// or a malformed Range, 404 for files the store does not hold, and
/// nothing outside the content tree whatever the path says.
#[test]
fn content_is_served_with_ranges_and_never_outside_the_store() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "20",
            "--content-bytes",
            "600K",
            "--seed",
            "3",
        ],
    )
    .ok();
    let (rel, data) = common::tree(&dir.join("content"))
        .into_iter()
        .max_by_key(|(_, d)| d.len())
        .expect("content files");
    assert!(data.len() > 4096, "a content file of some size");
    let size = data.len();
    let srv = Served::start(&dir, &[]);
    let path = format!("/Content/{rel}");

    let r = srv.get(&path, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    let etag = r.header("etag").unwrap().to_string();

    let head = http(
        srv.addr,
        format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());

    for (range, start, end) in [
        ("bytes=0-99".to_string(), 0, 99),
        ("bytes=1000-1999".to_string(), 1000, 1999),
        ("bytes=-100".to_string(), size - 100, size - 1),
        (format!("bytes={}-", size - 10), size - 10, size - 1),
        (format!("bytes=10-{}", size * 2), 10, size - 1),
    ] {
        let r = srv.get(&path, &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &data[start..=end], "{range}");
    }
    let r = srv.get(&path, &format!("Range: bytes={size}-\r\n"));
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    for (range, why) in [
        ("bytes=0-1,5-6", "several ranges"),
        ("bytes=abc", "malformed"),
        ("items=0-1", "another unit"),
    ] {
        let r = srv.get(&path, &format!("Range: {range}\r\n"));
        assert_eq!((r.status, r.body.len()), (200, size), "{why}");
    }
    let r = srv.get(&path, "Range: bytes=0-9\r\nIf-Range: \"0000\"\r\n");
    assert_eq!(r.status, 200, "If-Range with another validator");
    let r = srv.get(&path, &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"));
    assert_eq!(r.status, 206, "If-Range with this file's validator");

    // Case and a doubled slash as Windows clients send them.
    assert_eq!(
        srv.get(&format!("/content/{}", rel.to_ascii_lowercase()), "")
            .status,
        200
    );
    assert_eq!(srv.get(&format!("/{path}"), "").status, 200);

    // Two requests on one keep-alive connection.
    let two = format!(
        "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(two.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.contains("HTTP/1.1 206"), "{text}");

    let (xx, name) = rel.split_once('/').unwrap();
    let (hex, ext) = name.split_once('.').unwrap_or((name, ""));
    let db = std::fs::read(dir.join("gapsync.db")).unwrap();
    for bad in [
        format!("/Content/{xx}/{hex}.zip"),
        format!("/Content/{xx}/{}{}", "0".repeat(38), xx),
        "/Content/../gapsync.db".to_string(),
        "/Content/%2e%2e/gapsync.db".to_string(),
        "/Content/..%2Fgapsync.db".to_string(),
        format!("/Content/{xx}/../../gapsync.db"),
        format!("/Content/{xx}/%2e%2e%2f%2e%2e%2fgapsync.db"),
        format!("/Content/{xx}/{name}/../../../gapsync.db"),
        format!("/Content/{xx}/{hex}%00.{ext}"),
        format!("/Content/{xx}/{hex}.{ext}%2f..%2f..%2fgapsync.db"),
        "/Content/..\\..\\gapsync.db".to_string(),
        "/content/../../etc/passwd".to_string(),
        "/gapsync.db".to_string(),
        "/content".to_string(),
    ] {
        let r = srv.get(&bad, "");
        assert!(matches!(r.status, 400 | 404), "{bad}: {}", r.status);
        assert!(
            !r.body.starts_with(b"SQLite format") && r.body != db,
            "{bad} leaked the database"
        );
    }
    let r = http(
        srv.addr,
        b"GET http://x/Content/../gapsync.db HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(matches!(r.status, 400 | 404));
    let r = http(
        srv.addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 405);
}

// ---------------------------------------------------------------------------
// 5. Incremental revision lists; deployments; the DSS table
// ---------------------------------------------------------------------------

/// Every `update/revision` the journal records after `since`, split into
/// (categories and detectoids, software and drivers), in journal order.
fn journal_revisions(dir: &Path, since: Option<&str>) -> (Vec<String>, Vec<String>) {
    let kinds: std::collections::HashMap<String, String> = gs(dir, &["updates", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut args = vec!["journal", "--json"];
    if let Some(a) = since {
        args.extend(["--since", a]);
    }
    let j = gs(dir, &args).ok().json();
    let entries = j
        .as_array()
        .cloned()
        .unwrap_or_else(|| j["changes"].as_array().cloned().unwrap_or_default());
    let (mut config, mut updates) = (Vec::new(), Vec::new());
    for e in entries {
        if e["kind"] != "revision_added" {
            continue;
        }
        let subject = e["subject"].as_str().unwrap().to_string();
        let id = subject.split('/').next().unwrap();
        match kinds.get(id).map(String::as_str) {
            Some("category" | "detectoid") => config.push(subject),
            _ => updates.push(subject),
        }
    }
    (config, updates)
}

/// GetRevisionIdList follows the journal: from the start it lists every
/// revision; with the anchor it returned it lists nothing; after more
/// revisions arrive (while serving, and after a restart) it lists exactly
/// those. Category/classification filters: both are needed, Delta false
/// lists a matching update's revisions regardless of the anchor.
#[test]
fn revision_lists_are_incremental_by_anchor() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    gs(
        &dir,
        &["catalog", "generate", "--updates", "30", "--seed", "1"],
    )
    .ok();
    let mut srv = Served::start(&dir, &[]);
    let cookie = login(&srv, DSS1);
    let list = |srv: &Served, config: bool, anchor: Option<&str>, extra: &str| {
        let a = anchor
            .map(|a| format!("<Anchor>{a}</Anchor>"))
            .unwrap_or_default();
        let r = srv
            .op(
                "GetRevisionIdList",
                &revision_list_xml(
                    &cookie,
                    &format!("{a}<GetConfig>{config}</GetConfig>{extra}"),
                ),
            )
            .ok();
        (r.field("Anchor").unwrap(), identities(&r))
    };
    let (all_config, all_updates) = journal_revisions(&dir, None);
    let (a1, cats) = list(&srv, true, None, "");
    let (a1b, revs) = list(&srv, false, None, "");
    assert_eq!(a1, a1b);
    assert_eq!(cats, all_config);
    assert_eq!(revs, all_updates);
    assert_eq!(list(&srv, false, Some(&a1), ""), (a1.clone(), vec![]));
    assert_eq!(list(&srv, true, Some(&a1), ""), (a1.clone(), vec![]));

    // Filters: a product and a classification that updates carry.
    let cats_json = gs(&dir, &["updates", "list", "--kind", "category", "--json"])
        .ok()
        .json();
    let of_type = |t: &str| -> Vec<String> {
        cats_json
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["category_type"] == t)
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let products = of_type("Product");
    let classes = of_type("UpdateClassification");
    let ids = |v: &[String], delta: bool| {
        v.iter()
            .map(|i| format!("<IdAndDelta><Id>{i}</Id><Delta>{delta}</Delta></IdAndDelta>"))
            .collect::<String>()
    };
    let filter = |delta: bool| {
        format!(
            "<Categories>{}</Categories><Classifications>{}</Classifications>",
            ids(&products, delta),
            ids(&classes, delta)
        )
    };
    let (_, filtered) = list(&srv, false, None, &filter(false));
    assert!(!filtered.is_empty() && filtered.iter().all(|r| all_updates.contains(r)));
    assert_eq!(
        list(
            &srv,
            false,
            None,
            &format!("<Categories>{}</Categories>", ids(&products, false))
        )
        .1,
        Vec::<String>::new(),
        "categories alone select nothing"
    );
    assert_eq!(
        list(&srv, false, Some(&a1), &filter(true)).1,
        Vec::<String>::new()
    );
    assert_eq!(
        list(&srv, false, Some(&a1), &filter(false)).1,
        filtered,
        "Delta false ignores the anchor"
    );

    // More revisions while serving.
    gs(
        &dir,
        &["catalog", "generate", "--updates", "30", "--seed", "2"],
    )
    .ok();
    let (new_config, new_updates) = journal_revisions(&dir, Some(&a1));
    assert!(!new_updates.is_empty());
    let (a2, revs) = list(&srv, false, Some(&a1), "");
    assert_ne!(a2, a1);
    assert_eq!(revs, new_updates);
    assert_eq!(list(&srv, true, Some(&a1), "").1, new_config);
    let (_, delta) = list(&srv, false, Some(&a1), &filter(true));
    let (_, full) = list(&srv, false, Some(&a1), &filter(false));
    let expect: Vec<String> = full
        .iter()
        .filter(|r| new_updates.contains(r))
        .cloned()
        .collect();
    assert_eq!(delta, expect, "Delta true lists only what is new");
    assert_eq!(list(&srv, false, Some(&a2), ""), (a2.clone(), vec![]));

    // After a restart: same anchors, same cookie (the secret is kept).
    drop(srv);
    srv = Served::start(&dir, &[]);
    assert_eq!(list(&srv, false, Some(&a1), "").1, new_updates);
    assert_eq!(list(&srv, false, Some(&a2), "").1, Vec::<String>::new());
}

/// GetDeployments: all groups (parents first, the top one's parent all
/// zeros), the deployments changed between the deployment anchor and the
/// sync anchor (changes after the sync anchor wait for the next sync),
/// removals as dead deployments, declined updates as hidden. The DSS
/// table records the DSS, its last sync and that it is a replica.
#[test]
fn deployments_follow_their_anchors_and_the_dss_is_recorded() {
    let (_tmp, dir, approved, declined) = populated_store();
    let srv = Served::start(&dir, &[]);
    let cookie = login(&srv, DSS1);
    let sync = |anchor: Option<&str>| {
        let a = anchor
            .map(|a| format!("<Anchor>{a}</Anchor>"))
            .unwrap_or_default();
        srv.op(
            "GetRevisionIdList",
            &revision_list_xml(&cookie, &format!("{a}<GetConfig>false</GetConfig>")),
        )
        .ok()
        .field("Anchor")
        .unwrap()
    };
    let deployments = |from: Option<&str>, to: &str| {
        let from = from
            .map(|a| format!("<deploymentAnchor>{a}</deploymentAnchor>"))
            .unwrap_or_default();
        srv.op(
            "GetDeployments",
            &envelope(&format!("<GetDeployments xmlns=\"{SSS_NS}\">{}{from}<syncAnchor>{to}</syncAnchor></GetDeployments>", cookie_xml(&cookie))),
        )
        .ok()
    };
    let s1 = sync(None);
    let d = deployments(None, &s1);
    let d1 = d.field("Anchor").unwrap();
    assert_eq!(d1, s1);
    let groups = d.fields("Name");
    assert_eq!(
        groups[..2],
        [
            "All Computers".to_string(),
            "Unassigned Computers".to_string()
        ]
    );
    assert!(groups.contains(&"Pilot".to_string()));
    assert_eq!(
        d.fields("ParentGroupId")[0],
        "00000000-0000-0000-0000-000000000000"
    );
    let listed = d.fields("UpdateId");
    assert_eq!(listed.len(), 2, "{}", d.text());
    assert!(listed.contains(&approved));
    assert!(
        d.fields("Deadline")
            .contains(&"9999-12-31T23:59:59.9999999".to_string())
    );
    assert!(
        d.fields("Deadline")
            .contains(&"2026-12-01T18:00:00Z".to_string())
    );
    assert!(d.text().contains(&format!(
        "<HiddenUpdates><guid>{declined}</guid></HiddenUpdates>"
    )));
    assert!(d.text().contains("<DeadDeployments />"));

    let d = deployments(Some(&d1), &s1);
    assert!(
        d.text().contains("<Deployments />") && d.text().contains("<DeadDeployments />"),
        "{}",
        d.text()
    );

    let live = gs(&dir, &["deployments", "list", "--json"]).ok().json();
    let removed_id = live
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["update_id"] == approved.as_str())
        .unwrap()["deployment_id"]
        .as_str()
        .unwrap()
        .to_string();
    gs(&dir, &["unapprove", &approved, "--group", "Pilot"]).ok();
    let other = gs(&dir, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json()[8]["id"]
        .as_str()
        .unwrap()
        .to_string();
    gs(
        &dir,
        &["approve", &other, "--group", "Unassigned Computers"],
    )
    .ok();

    let d = deployments(Some(&d1), &s1);
    assert!(
        d.text().contains("<Deployments />"),
        "changes after the sync anchor wait: {}",
        d.text()
    );
    let s2 = sync(Some(&s1));
    let d = deployments(Some(&d1), &s2);
    assert_eq!(d.fields("UpdateId"), vec![other.clone()]);
    assert_eq!(
        d.field("DeadDeployments").unwrap(),
        format!("<guid>{removed_id}</guid>")
    );
    assert_eq!(d.field("Anchor").unwrap(), s2);

    let (c, m) = srv
        .op("GetDeployments", &envelope(&format!("<GetDeployments xmlns=\"{SSS_NS}\">{}<syncAnchor>nonsense</syncAnchor></GetDeployments>", cookie_xml(&cookie))))
        .fault();
    assert_eq!(
        (c.as_str(), m.as_str()),
        ("InvalidParameters", "syncAnchor")
    );

    drop(srv);
    let conn = rusqlite::Connection::open(dir.join("gapsync.db")).unwrap();
    let (fqdn, replica, last_sync, last_anchor): (String, i64, Option<String>, Option<String>) = conn
        .query_row(
            "SELECT fqdn, replica, last_sync, last_anchor FROM downstream_servers WHERE server_id = ?1",
            [DSS1],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(fqdn, "test.lab.invalid");
    assert_eq!(replica, 1);
    assert!(last_sync.is_some());
    assert_eq!(last_anchor.as_deref(), Some(s2.as_str()));
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// With `--tls-cert` and `--tls-key` the same services answer over HTTPS;
/// a plain-HTTP client on the TLS port is dropped and the server goes on;
/// unreadable TLS files are named in the error.
#[test]
fn https_with_the_given_certificate() {
    let (tmp, dir) = new_store("hq", "autonomous");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let srv = Served::start_args(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = |body: &str| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config.clone()), name).unwrap();
        let tcp = TcpStream::connect(srv.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let req = format!(
            "POST {SSS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetAuthConfig\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        parse_response(&raw)
    };
    let body = envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"));
    let r = https(&body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<PlugInID>DssTargeting</PlugInID>"));
    // Plain HTTP on the TLS port: dropped.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"));
    assert_eq!(https(&body).status, 200, "still serving");

    let r = gs(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            tmp.path().join("nope.pem").to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    r.fails(1, "nope.pem");
    let r = gs(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0, "--tls-cert without --tls-key is refused");
    assert!(r.stderr.contains("tls-key"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// Limits of the HTTP layer, over real sockets
// ---------------------------------------------------------------------------

/// Sends raw bytes on a fresh connection and returns everything the server
/// sent until it closed (or 10 s passed).
fn raw(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Ambiguous framing is refused with 400 and the connection closed, even
/// where hyper alone would accept it (agreeing duplicate lengths;
/// Transfer-Encoding with Content-Length); heads beyond 16 KiB or 64
/// fields get 431; the server goes on serving; its log lines carry a UTC
/// timestamp and the client's address.
#[test]
fn ambiguous_framing_and_oversized_heads_are_refused() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start(&dir, &[]);
    let body = envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"));
    let post = |lengths: &str, extra: &str| {
        format!(
            "POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetAuthConfig\"\r\n{lengths}{extra}\r\n{body}"
        )
    };
    let n = body.len();
    for (what, req) in [
        (
            "two equal Content-Length",
            post(
                &format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
                "",
            ),
        ),
        (
            "two different Content-Length",
            post(
                &format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 1),
                "",
            ),
        ),
        (
            "a Content-Length list",
            post(&format!("Content-Length: {n}, {n}\r\n"), ""),
        ),
        (
            "Content-Length then Transfer-Encoding",
            post(
                &format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
                "",
            ),
        ),
        (
            "Transfer-Encoding then Content-Length",
            post(
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
                "",
            ),
        ),
    ] {
        let answer = raw(srv.addr, req.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: closed after"
        );
    }
    // The same request with one length is served, also pipelined behind
    // a request with a body.
    let one = post(&format!("Content-Length: {n}\r\n"), "");
    let answer = raw(
        srv.addr,
        format!(
            "{one}{}",
            one.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
        )
        .as_bytes(),
    );
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");

    let big = format!(
        "GET /Content/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(24 * 1024)
    );
    let answer = raw(srv.addr, big.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "24 KB header: {answer}"
    );
    let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        srv.addr,
        format!("GET /Content/x HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431 "), "70 headers: {answer}");
    let fits: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        srv.addr,
        format!("GET /nothing HTTP/1.1\r\nHost: x\r\n{fits}Connection: close\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 404 "), "40 headers: {answer}");
    assert_eq!(srv.op("GetAuthConfig", &body).status, 200, "still serving");

    let log = srv.log();
    let line = log
        .lines()
        .find(|l| l.contains("GET /nothing"))
        .unwrap_or_else(|| panic!("no log line of the request:\n{log}"));
    let stamp = line.split_whitespace().next().unwrap_or("");
    assert!(
        stamp.len() >= 20
            && stamp.ends_with('Z')
            && stamp.as_bytes()[4] == b'-'
            && stamp.as_bytes()[10] == b'T',
        "UTC timestamp first: {line}"
    );
    assert!(
        line.contains("127.0.0.1:") && line.contains("-> 404"),
        "{line}"
    );
}

/// Beyond `--max-connections`, a new connection gets 503 with
/// `Retry-After` and a ServerBusy fault at once, while the open ones are
/// served; once one closes, new connections are served again.
#[test]
fn connections_beyond_the_limit_get_503_at_once() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start_args(&dir, &["--max-connections", "3"], &[]);
    let body = envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"));
    let keep_alive = format!(
        "POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetAuthConfig\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(keep_alive.as_bytes()).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
            s
        })
        .collect();
    let t = Instant::now();
    let r = srv.op("GetAuthConfig", &body);
    assert!(t.elapsed() < Duration::from_secs(5), "answered at once");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        r.text().contains("<ErrorCode>ServerBusy</ErrorCode>"),
        "{}",
        r.text()
    );
    // The open connections are still served.
    held[0].write_all(keep_alive.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = held[0].read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    // One closes: room again.
    drop(held.pop());
    let served = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        srv.op("GetAuthConfig", &body).status == 200
    });
    assert!(served, "a connection closed makes room");
    assert!(srv.log().contains("refused"), "{}", srv.log());
}

/// A keep-alive connection may idle longer than the header timeout (its
/// own clock, `--idle-timeout`) and is closed after that; a request head
/// must be complete within the header timeout of its first byte; a new
/// connection that sends nothing is closed after the header timeout.
#[test]
fn idle_connections_and_slow_heads_have_their_own_clocks() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    let srv = Served::start_args(&dir, &["--header-timeout", "2", "--idle-timeout", "5"], &[]);
    let body = envelope(&format!("<GetAuthConfig xmlns=\"{SSS_NS}\"/>"));
    let req = format!(
        "POST {SSS} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nSOAPAction: \"{ACTION}GetAuthConfig\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let ask = |s: &mut TcpStream| -> bool {
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 4096];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200 "))
    };
    let closed_within = |s: &mut TcpStream, limit: Duration| -> Option<Duration> {
        let t = Instant::now();
        s.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) | Err(_) if t.elapsed() < limit => Some(t.elapsed()),
            _ => None,
        }
    };
    let slow_head = std::thread::spawn({
        let addr = srv.addr;
        move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /Content/x HTTP/1.1\r\nX-Slow: ").unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if s.write_all(b"a").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            t.elapsed()
        }
    });
    let mut silent = TcpStream::connect(srv.addr).unwrap();
    let mut idle = TcpStream::connect(srv.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(ask(&mut idle));
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        closed_within(&mut silent, Duration::from_millis(200)).is_some(),
        "a silent new connection is closed after the header timeout"
    );
    assert!(
        ask(&mut idle),
        "idle 3.5 s (beyond the header timeout): still served"
    );
    let closed = closed_within(&mut idle, Duration::from_secs(9));
    assert!(
        closed.is_some_and(|d| d > Duration::from_secs(4)),
        "idle connection closed after the idle timeout: {closed:?}"
    );
    let held = slow_head.join().unwrap();
    assert!(
        held < Duration::from_secs(5),
        "a slow head held its connection for {held:?}"
    );
}

/// Out-of-range limits are usage errors (exit 2) naming the flag or the
/// variable, before anything is bound.
#[test]
fn bad_limits_are_usage_errors() {
    let (_tmp, dir) = new_store("hq", "autonomous");
    for (args, needle) in [
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--header-timeout", "0"][..], "--header-timeout"),
        (&["--max-head", "10"][..], "--max-head"),
        (&["--max-body", "1T"][..], "--max-body"),
        (&["--store-workers", "1000"][..], "--store-workers"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        gs(&dir, &all).fails(2, needle);
    }
    common::gs_env(
        &dir,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("GAPSYNC_SERVE_REQUEST_TIMEOUT", "soon")],
    )
    .fails(2, "GAPSYNC_SERVE_REQUEST_TIMEOUT");
}
