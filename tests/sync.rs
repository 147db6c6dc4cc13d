//! `sync`, the downstream (DSS) side of MS-WSUSSS:
//! - the real Windows Server 2025 WSUS answers in
//!   `wsus-captures/wsus-m0-wsusss/exchanges/` replayed by a small local
//!   server: every one is parsed through the client (the compressed blob
//!   decodes to the document in `docs/`; the faults lead to a stop, a
//!   retry without anchors, a bounded restart);
//! - a misbehaving upstream (a fake USS in this file): truncated and slow
//!   answers, a dropped content download resumed with Range, a wrong
//!   digest, a stalled server; the store holds the old or the completed
//!   new state;
//! - gapsync → gapsync over loopback (`gapsync serve` and `gapsync sync`).
//!
//! Every server here listens on 127.0.0.1 only, answers a bounded number of
//! requests and stops when its test ends.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use gapsync::airgap::format::ContentMode;
use gapsync::model::metadata;
use gapsync::progress::Silent;
use gapsync::protocols::wsusss::client::{
    self, BlobForm, Client, ClientOptions, FaultAction, FaultReaction as _, IdAndDelta, Operation,
    RevisionFilter, UpdateIdentity,
};
use gapsync::protocols::wsusss::downstream::{SyncOptions, SyncReport, sync};
use gapsync::store::{Mode, Store};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------

const EXCHANGES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/wsus-captures/wsus-m0-wsusss/exchanges"
);
const DOCS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/wsus-captures/wsus-m0-wsusss/docs"
);

/// A captured answer; its absence fails the test.
fn answer(n: u32) -> Vec<u8> {
    let p = format!("{EXCHANGES}/{n:06}/response.body");
    std::fs::read(&p).unwrap_or_else(|e| panic!("captured exchange {p} missing: {e}"))
}

/// A captured request body (to send exactly what the probe sent).
fn request_body(n: u32) -> Vec<u8> {
    let p = format!("{EXCHANGES}/{n:06}/request.body");
    std::fs::read(&p).unwrap_or_else(|e| panic!("captured exchange {p} missing: {e}"))
}

fn captured_meta(n: u32) -> serde_json::Value {
    let p = format!("{EXCHANGES}/{n:06}/meta.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p} missing: {e}")))
        .unwrap()
}

fn doc(name: &str) -> String {
    let p = format!("{DOCS}/{name}.xml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("captured document {p} missing: {e}"))
}

fn uid(id: &str, revision: i32) -> UpdateIdentity {
    UpdateIdentity {
        id: Uuid::parse_str(id).unwrap(),
        revision,
    }
}

const A2FEF: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
const LEAF: &str = "266f6222-c89d-43f2-9f8a-69340271e677";
const PLAIN: &str = "ccb78947-6453-4ecc-9de8-bc0305c98f2d";
const COMPANY: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 server (one request per connection)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn op(&self) -> Option<Operation> {
        self.header("SOAPAction")
            .and_then(Operation::from_soap_action)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn range_start(&self) -> Option<u64> {
        let r = self.header("Range")?.strip_prefix("bytes=")?;
        r.split('-').next()?.parse().ok()
    }
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Declares `declared` bytes, sends `body` (shorter), closes.
    Truncated { declared: usize, body: Vec<u8> },
    /// Sends nothing and closes.
    Drop,
    /// Waits, then answers.
    Slow(Duration, Box<Reply>),
}

fn soap(status: u16, body: Vec<u8>) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type".into(), "text/xml; charset=utf-8".into())],
        body,
    }
}

fn ok(body: Vec<u8>) -> Reply {
    soap(200, body)
}

fn status(code: u16) -> Reply {
    Reply::Full {
        status: code,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

struct TestServer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Req>>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let served = AtomicUsize::new(0);
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst)
                    || Instant::now() > deadline
                    || served.fetch_add(1, Ordering::SeqCst) > 2000
                {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, l) = (handler.clone(), log2.clone());
                std::thread::spawn(move || serve_one(conn, &*h, &l));
            }
        });
        TestServer {
            addr,
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn ops(&self) -> Vec<Operation> {
        self.requests().iter().filter_map(Req::op).collect()
    }

    fn count(&self, op: Operation) -> usize {
        self.ops().into_iter().filter(|o| *o == op).count()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
        if headers.len() > 100 {
            return None;
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(32 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

fn serve_one(mut conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    let reply = handler(&req);
    log.lock().unwrap().push(req);
    write_reply(&mut conn, reply);
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

fn write_reply(conn: &mut TcpStream, reply: Reply) {
    let reason = |s: u16| match s {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
        Reply::Truncated { declared, body } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
        Reply::Drop => {}
        Reply::Slow(d, inner) => {
            std::thread::sleep(d);
            write_reply(conn, *inner);
        }
    }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        attempts: 3,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

fn options(url: &str) -> SyncOptions {
    let mut o = SyncOptions::new(url);
    o.client = fast_options();
    o.account_name = Some("dss.test.invalid".into());
    o
}

// ---------------------------------------------------------------------------
// Replaying the captured Windows Server WSUS answers
// ---------------------------------------------------------------------------

/// Chooses the captured answer for a request, by SOAPAction and content.
fn captured_answer_for(req: &Req) -> Reply {
    let t = req.text();
    let n = match req.op() {
        Some(Operation::GetAuthConfig) => 1,
        Some(Operation::GetAuthorizationCookie) => 2,
        Some(Operation::GetCookie) => 3,
        Some(Operation::GetConfigData) if t.contains("<configAnchor>") => 4,
        Some(Operation::GetConfigData) => 5,
        Some(Operation::GetRevisionIdList) => {
            if !t.contains("<cookie>") {
                19
            } else if t.contains("<Anchor>garbage</Anchor>") {
                18
            } else if t.contains("<GetConfig>true</GetConfig>") {
                6
            } else if t.contains("<Anchor>") && !t.contains("<Categories>") {
                12
            } else if t.contains("<Anchor>") && t.contains("<Delta>true</Delta>") {
                11
            } else if t.contains("<Anchor>") {
                10
            } else if t.contains("e0789628-ce08-4437-be74-2495b842f43b") {
                9
            } else if t.contains("0fa1201d-4330-4fa8-8ae9-b877473b6441") {
                8
            } else {
                7
            }
        }
        Some(Operation::GetUpdateData) => {
            if t.contains(A2FEF) {
                13
            } else if t.contains(LEAF) {
                14
            } else if t.contains(PLAIN) {
                15
            } else if t.contains(COMPANY) {
                16
            } else {
                17
            }
        }
        _ => return status(404),
    };
    let status: u16 = captured_meta(n)["status"].as_u64().unwrap() as u16;
    soap(status, answer(n))
}

/// Every captured answer, fetched by the client from a replay server and
/// parsed: the handshake, both GetConfigData forms, all eight revision
/// lists, the four GetUpdateData forms (three Cabinet blobs and a plain
/// one, each equal to its document in docs/) and the three faults.
#[test]
fn every_captured_wsus_answer_parses_through_the_client() {
    let server = TestServer::start(captured_answer_for);
    let c = Client::new(&server.url(), fast_options()).unwrap();

    // 000001-000003: authorization.
    let cfg = c.get_auth_config().unwrap();
    assert_eq!(cfg.plugins[0].plugin_id, "DssTargeting");
    assert_eq!(cfg.last_change.as_deref(), Some("2026-10-04T13:16:35.433Z"));
    let auth = c
        .get_authorization_cookie(
            &cfg.plugins[0].service_url,
            "dss.test.invalid",
            &Uuid::new_v4(),
        )
        .unwrap();
    assert_eq!(auth.plugin_id, "DssTargeting");
    let cookie = c.get_cookie(&auth, None).unwrap();
    assert_eq!(cookie.expiration, "2026-10-04T20:33:26.65455Z");
    // The relative ServiceUrl was resolved against the upstream.
    let auth_req = server
        .requests()
        .into_iter()
        .find(|r| r.op() == Some(Operation::GetAuthorizationCookie))
        .unwrap();
    assert_eq!(auth_req.path, "/DssAuthWebService/DssAuthWebService.asmx");
    assert!(
        auth_req
            .text()
            .contains("<accountName>dss.test.invalid</accountName>")
    );

    // 000004/000005: configuration.
    let short = c
        .get_config_data(&cookie, Some("9438,2026-10-04 16:09:27.167"))
        .unwrap();
    assert!(short.languages.is_empty());
    let full = c.get_config_data(&cookie, None).unwrap();
    assert_eq!(full.max_updates_per_request, 100);
    assert_eq!(full.max_decryption_updates_per_request, 100);
    assert!(full.lazy_sync && !full.catalog_only_sync && !full.server_hosts_psf_files);
    assert_eq!(full.languages.len(), 39);

    // 000006-000012: revision lists.
    let config = c
        .get_revision_id_list(
            &cookie,
            &RevisionFilter {
                get_config: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(config.revisions.len(), 30);
    assert!(config.revisions.contains(&uid(COMPANY, 101)));
    assert_eq!(
        config.anchor.as_deref(),
        Some("9438,2026-10-04 16:33:26.671")
    );
    let product = Uuid::parse_str("8c3fcc84-7410-4a95-8b89-a166a0190486").unwrap();
    let class = |id: &str, delta| IdAndDelta {
        id: Uuid::parse_str(id).unwrap(),
        delta,
    };
    let filter = |anchor: Option<&str>, classes: Vec<IdAndDelta>, delta| RevisionFilter {
        anchor: anchor.map(str::to_string),
        get_config: false,
        categories: if classes.is_empty() && anchor.is_some() {
            vec![]
        } else {
            vec![IdAndDelta { id: product, delta }]
        },
        classifications: classes,
    };
    let sec = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
    let defs = "e0789628-ce08-4437-be74-2495b842f43b";
    let anchor = Some("9438,2026-10-04 16:09:27.371");
    for (f, expect) in [
        (filter(None, vec![], false), 0),                      // 000007
        (filter(None, vec![class(sec, false)], false), 0),     // 000008
        (filter(None, vec![class(defs, false)], false), 30),   // 000009
        (filter(anchor, vec![class(defs, false)], false), 30), // 000010
        (filter(anchor, vec![class(defs, true)], true), 0),    // 000011
        (filter(anchor, vec![], false), 0),                    // 000012
    ] {
        let l = c.get_revision_id_list(&cookie, &f).unwrap();
        assert_eq!(l.revisions.len(), expect, "{f:?}");
        assert!(l.anchor.is_some());
    }

    // 000013-000016: update data, compared with the documents.
    for (id, rev, form, files) in [
        (A2FEF, 200, BlobForm::Compressed, 0),
        (LEAF, 200, BlobForm::Compressed, 1),
        (PLAIN, 200, BlobForm::Text, 0),
        (COMPANY, 101, BlobForm::Compressed, 0),
    ] {
        let b = c.get_update_data(&cookie, &[uid(id, rev)]).unwrap();
        assert_eq!(b.updates.len(), 1);
        let u = &b.updates[0];
        assert_eq!(u.id, uid(id, rev));
        assert_eq!(u.form, form);
        assert_eq!(u.file_digests.len(), files);
        if form == BlobForm::Compressed {
            // The Cabinet member is the document in UTF-16LE.
            assert_eq!(&u.xml[..2], b"<\0", "{id}: UTF-16LE without a mark");
        }
        let text = metadata::decode_text(&u.xml).unwrap();
        assert_eq!(text, doc(&format!("{id}-r{rev}")), "{id}: same document");
        let m = metadata::parse(&u.xml).unwrap();
        assert_eq!(
            m,
            metadata::parse(doc(&format!("{id}-r{rev}")).as_bytes()).unwrap()
        );
        if files == 1 {
            assert_eq!(b.file_urls.len(), 1);
            assert_eq!(b.file_urls[0].digest, m.files[0].sha1);
            assert!(
                b.file_urls[0]
                    .mu_url
                    .as_deref()
                    .unwrap()
                    .starts_with("http://download.windowsupdate.com/")
            );
        }
    }

    // 000017-000019: faults.
    let e = c
        .get_update_data(&cookie, &[uid("00000000-0000-0000-0000-000000000001", 1)])
        .unwrap_err();
    let f = e.fault().expect("a fault");
    assert_eq!(f.error_code.as_deref(), Some("InternalServerError"));
    assert_eq!(f.action(), FaultAction::Stop);
    assert_eq!(
        f.id.as_deref(),
        Some("b6114a8d-9939-41e0-ad7f-0d9a72260804")
    );
    let e = c
        .get_revision_id_list(
            &cookie,
            &RevisionFilter {
                anchor: Some("garbage".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    let f = e.fault().unwrap();
    assert_eq!(
        (f.code(), f.message.as_str()),
        ("InvalidParameters", "filter")
    );
    assert_eq!(f.action(), FaultAction::InvalidParameters);
    // 000019 answers a request without a cookie.
    let body = String::from_utf8(request_body(19)).unwrap();
    assert!(!body.contains("<cookie>"));
    let raw = c
        .post(Operation::GetRevisionIdList, &c.sync_url(), &body)
        .unwrap();
    let f = client::read_envelope(Operation::GetRevisionIdList, &raw)
        .unwrap()
        .unwrap_err();
    assert_eq!(f.code(), "InvalidCookie");
    assert_eq!(f.action(), FaultAction::Restart);

    // Every exchange was served.
    assert_eq!(server.requests().len(), 19);
}

/// The replay server, driven by a scenario: the revision lists name the
/// captured documents (shaped like the captured empty list, 000007), the
/// first GetConfig list is refused with the captured InvalidCookie.
#[derive(Clone, Copy, Default)]
struct Scenario {
    /// The first N GetConfig lists are answered with 000019.
    config_faults: usize,
    /// The update list is answered with this captured fault...
    updates_fault: Option<u32>,
    /// ...only when the request carries an anchor.
    only_with_anchor: bool,
    /// GetUpdateData is answered with 000017.
    update_data_fault: bool,
}

fn scenario_server(sc: Scenario) -> TestServer {
    let Scenario {
        config_faults,
        updates_fault,
        only_with_anchor,
        update_data_fault,
    } = sc;
    let config_calls = AtomicUsize::new(0);
    TestServer::start(move |req| {
        let t = req.text();
        match req.op() {
            Some(Operation::GetRevisionIdList) if t.contains("<GetConfig>true</GetConfig>") => {
                if config_calls.fetch_add(1, Ordering::SeqCst) < config_faults {
                    return soap(500, answer(19));
                }
                ok(revision_list(
                    "9438,2026-10-04 16:33:26.734",
                    &[(COMPANY, 101)],
                ))
            }
            Some(Operation::GetRevisionIdList) => {
                if let Some(n) = updates_fault
                    && (!only_with_anchor || t.contains("<Anchor>"))
                {
                    return soap(500, answer(n));
                }
                if t.contains("<Anchor>") {
                    return ok(answer(12)); // nothing new
                }
                ok(revision_list(
                    "9438,2026-10-04 16:33:26.742",
                    &[(A2FEF, 200), (LEAF, 200), (PLAIN, 200)],
                ))
            }
            Some(Operation::GetUpdateData) if update_data_fault => soap(500, answer(17)),
            Some(Operation::DownloadFiles) => status(500),
            _ if req.method == "GET" => status(404),
            _ => captured_answer_for(req),
        }
    })
}

/// A revision list in the captured answer's shape.
fn revision_list(anchor: &str, ids: &[(&str, i32)]) -> Vec<u8> {
    let mut list = String::from("<NewRevisions>");
    for (id, rev) in ids {
        list.push_str(&format!(
            "<UpdateIdentity><UpdateID>{id}</UpdateID><RevisionNumber>{rev}</RevisionNumber></UpdateIdentity>"
        ));
    }
    list.push_str("</NewRevisions>");
    let base = String::from_utf8(answer(7)).unwrap();
    assert!(base.contains("<NewRevisions />"));
    base.replace("<NewRevisions />", &list)
        .replace("9438,2026-10-04 16:33:26.734", anchor)
        .into_bytes()
}

fn new_lib_store(mode: Mode) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dss");
    Store::init(&dir, "dss", mode).unwrap();
    (tmp, dir)
}

fn run_sync(dir: &Path, opts: &SyncOptions) -> gapsync::Result<SyncReport> {
    let mut store = open_writer(dir);
    sync(&mut store, opts, &Silent)
}

/// Opens a store for writing. Other tests of this process spawn the
/// binary; a child between fork and exec briefly holds a copy of every
/// descriptor, the lock file's included, so "locked" is retried briefly.
fn open_writer(dir: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_writer(dir) {
            Err(gapsync::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// A whole sync against captured answers: the InvalidCookie fault restarts
/// the protocol, every document is stored as its UTF-8 text (the Cabinet
/// members arrive in UTF-16LE), byte-identical to the document in docs/; the
/// one content file is not on the (lazy) upstream and is reported missing;
/// a second sync asks for no update data.
#[test]
fn sync_from_captured_wsus_answers() {
    let server = scenario_server(Scenario {
        config_faults: 1,
        ..Default::default()
    });
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&server.url());
    opts.max_updates_per_request = Some(1); // one captured answer per revision
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.restarts, 1, "{r:?}");
    assert_eq!(
        server.count(Operation::GetAuthConfig),
        2,
        "restarted from the beginning"
    );
    assert_eq!(r.revisions_added, 4);
    assert_eq!(r.update_data_requests, 4);
    assert!(r.lazy_sync);
    assert_eq!(
        r.content_missing, 1,
        "the delta file is not on the lazy upstream"
    );
    assert_eq!(r.content_files, 0);
    assert!(server.requests().iter().any(|q| {
        q.method == "GET"
            && q.path
                .starts_with("/Content/CD/87F5BD0469585006AA5D3A77D1C662FD2895DDCD")
    }));
    assert!(server.count(Operation::DownloadFiles) >= 1);

    let store = Store::open(&dir).unwrap();
    for (id, rev) in [(A2FEF, 200), (LEAF, 200), (PLAIN, 200), (COMPANY, 101)] {
        let d = store.update_detail(id).unwrap();
        assert_eq!(d.revision, rev);
        let xml = store.revision_xml(d.revision_id).unwrap();
        assert_eq!(
            xml,
            doc(&format!("{id}-r{rev}")).into_bytes(),
            "{id}: the document, byte for byte"
        );
        assert_eq!(
            d.metadata,
            metadata::parse(doc(&format!("{id}-r{rev}")).as_bytes()).unwrap()
        );
    }
    drop(store);

    // Nothing changed upstream: no update data.
    let before = server.count(Operation::GetUpdateData);
    let r2 = run_sync(&dir, &opts).unwrap();
    assert!(!r2.full);
    assert_eq!(r2.update_data_requests, 0);
    assert_eq!(server.count(Operation::GetUpdateData), before);
    let last_list = server
        .requests()
        .into_iter()
        .rfind(|q| q.op() == Some(Operation::GetRevisionIdList))
        .unwrap()
        .text();
    assert!(
        last_list.contains("<Anchor>9438,2026-10-04 16:33:26.734</Anchor>"),
        "{last_list}"
    );
    let cfg = server
        .requests()
        .into_iter()
        .rfind(|q| q.op() == Some(Operation::GetConfigData))
        .unwrap()
        .text();
    assert!(cfg.contains("<configAnchor>9438,2026-10-04 16:33:26.670</configAnchor>"));
}

/// 000017 InternalServerError: the DSS stops, names the fault, and the
/// store is unchanged.
#[test]
fn captured_internal_server_error_stops_the_sync() {
    let server = scenario_server(Scenario {
        update_data_fault: true,
        ..Default::default()
    });
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let before = snapshot(&dir);
    let e = run_sync(&dir, &options(&server.url())).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("InternalServerError"), "{msg}");
    assert!(
        msg.contains("b6114a8d-9939-41e0-ad7f-0d9a72260804"),
        "{msg}"
    );
    assert!(msg.contains("unchanged"), "{msg}");
    assert_eq!(
        server.count(Operation::GetUpdateData),
        1,
        "no retry of a stop fault"
    );
    assert_eq!(snapshot(&dir), before);
}

/// 000019 InvalidCookie every time: bounded restarts, then a clear error;
/// the store is unchanged.
#[test]
fn captured_invalid_cookie_restarts_a_bounded_number_of_times() {
    let server = scenario_server(Scenario {
        config_faults: usize::MAX,
        ..Default::default()
    });
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let before = snapshot(&dir);
    let e = run_sync(&dir, &options(&server.url())).unwrap_err();
    assert!(e.to_string().contains("InvalidCookie"), "{e}");
    assert!(e.to_string().contains("restarts"), "{e}");
    let restarts = gapsync::protocols::wsusss::downstream::MAX_RESTARTS as usize;
    assert_eq!(server.count(Operation::GetAuthConfig), restarts + 1);
    assert_eq!(server.count(Operation::GetRevisionIdList), restarts + 1);
    assert_eq!(snapshot(&dir), before);
}

/// 000018 InvalidParameters ("filter"): with stored anchors the DSS retries
/// once without them (a full, idempotent resync); without anchors it stops.
#[test]
fn captured_invalid_parameters_retries_without_anchors_then_stops() {
    // First a good sync stores anchors.
    let good = scenario_server(Scenario::default());
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&good.url());
    opts.content = ContentMode::None;
    opts.max_updates_per_request = Some(1);
    run_sync(&dir, &opts).unwrap();
    drop(good);

    // The upstream now refuses the anchors (000018 whenever one is sent).
    let picky = scenario_server(Scenario {
        updates_fault: Some(18),
        only_with_anchor: true,
        ..Default::default()
    });
    opts.upstream = picky.url();
    // A new URL has no anchors yet; copy the state over to this upstream.
    {
        let store = open_writer(&dir);
        store
            .conn()
            .execute("UPDATE upstream_state SET upstream_url = ?1", [picky.url()])
            .unwrap();
    }
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.anchors_reset, 1, "{r:?}");
    assert_eq!(r.update_data_requests, 0, "everything already held");
    let lists: Vec<String> = picky
        .requests()
        .iter()
        .filter(|q| q.op() == Some(Operation::GetRevisionIdList))
        .map(Req::text)
        .collect();
    assert!(lists.iter().any(|t| t.contains("<Anchor>")));
    assert!(
        !lists.last().unwrap().contains("<Anchor>"),
        "retried without anchors"
    );
    drop(picky);

    // Always refused: stop with the fault's code and parameter name.
    let stubborn = scenario_server(Scenario {
        updates_fault: Some(18),
        ..Default::default()
    });
    opts.upstream = stubborn.url();
    let before = snapshot(&dir);
    let e = run_sync(&dir, &opts).unwrap_err();
    assert!(e.to_string().contains("InvalidParameters: filter"), "{e}");
    assert_eq!(snapshot(&dir), before);
}

/// Forwards a request to another test server (a tiny proxy).
fn forward(base: &str, req: &Req) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{}", req.path);
    let mut rq = match req.method.as_str() {
        "POST" => {
            let mut b = agent.post(&url);
            for (k, v) in &req.headers {
                if k.eq_ignore_ascii_case("SOAPAction") || k.eq_ignore_ascii_case("Content-Type") {
                    b = b.header(k.as_str(), v.as_str());
                }
            }
            match b.send(&req.body[..]) {
                Ok(r) => r,
                Err(_) => return Reply::Drop,
            }
        }
        _ => {
            let mut b = agent.get(&url);
            if let Some(r) = req.header("Range") {
                b = b.header("Range", r);
            }
            match b.call() {
                Ok(r) => r,
                Err(_) => return Reply::Drop,
            }
        }
    };
    let st = rq.status().as_u16();
    let mut headers = Vec::new();
    for name in ["Content-Type", "Content-Range", "Accept-Ranges"] {
        if let Some(v) = rq.headers().get(name).and_then(|v| v.to_str().ok()) {
            headers.push((name.to_string(), v.to_string()));
        }
    }
    let body = rq
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .unwrap_or_default();
    Reply::Full {
        status: st,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------
// A misbehaving upstream
// ---------------------------------------------------------------------------

const PRODUCT: &str = "8c3fcc84-7410-4a95-8b89-a166a0190486";
const CLASSIFICATION: &str = "e0789628-ce08-4437-be74-2495b842f43b";
const BIG: &str = "11111111-2222-4333-8444-000000000001";
const SMALL: &str = "11111111-2222-4333-8444-000000000002";

/// How the fake USS misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Trouble {
    #[default]
    None,
    /// The first GET of the big file sends half its bytes and closes.
    DropFirstDownload,
    /// As above, and the resumed request is answered from byte 0 (Range
    /// ignored).
    DropAndIgnoreRange,
    /// The big file's bytes differ from its metadata (same size).
    WrongContent,
    /// The first GetUpdateData answer is cut short (Content-Length says
    /// more), the first update list arrives too late, the first
    /// GetConfigData is a ServerBusy fault.
    FlakySoap,
    /// GetConfigData never answers in time.
    Stalled,
    /// GetUpdateData sends the small update's document under the big
    /// update's identity.
    WrongIdentity,
}

struct FakeUss {
    docs: Vec<(String, i32, String, bool)>,
    files: HashMap<String, Vec<u8>>,
    big_path: String,
    trouble: Mutex<Trouble>,
    counts: Mutex<HashMap<String, usize>>,
}

impl FakeUss {
    fn new() -> Arc<FakeUss> {
        let big = noise(300_000, 7);
        let small = noise(20_000, 8);
        let docs = vec![
            (
                PRODUCT.to_string(),
                1,
                category_xml(PRODUCT, "Product", "Test Product"),
                true,
            ),
            (
                CLASSIFICATION.to_string(),
                1,
                category_xml(CLASSIFICATION, "UpdateClassification", "Definition Updates"),
                true,
            ),
            (
                BIG.to_string(),
                100,
                update_xml(
                    BIG,
                    100,
                    "Software",
                    "Big update",
                    &[PRODUCT, CLASSIFICATION],
                    &[FileSpec {
                        name: "big-update.cab",
                        data: &big,
                    }],
                ),
                false,
            ),
            (
                SMALL.to_string(),
                100,
                update_xml(
                    SMALL,
                    100,
                    "Software",
                    "Small update",
                    &[PRODUCT, CLASSIFICATION],
                    &[FileSpec {
                        name: "small.exe",
                        data: &small,
                    }],
                ),
                false,
            ),
        ];
        let path = |data: &[u8], ext: &str| {
            let hex = sha1_hex_upper(data);
            format!("/Content/{}/{hex}.{ext}", &hex[38..])
        };
        let big_path = path(&big, "cab");
        let mut files = HashMap::new();
        files.insert(big_path.clone(), big);
        files.insert(path(&small, "exe"), small);
        Arc::new(FakeUss {
            docs,
            files,
            big_path,
            trouble: Mutex::new(Trouble::None),
            counts: Mutex::new(HashMap::new()),
        })
    }

    fn set(&self, t: Trouble) {
        *self.trouble.lock().unwrap() = t;
        self.counts.lock().unwrap().clear();
    }

    /// How many times `key` was seen before (0 the first time).
    fn nth(&self, key: &str) -> usize {
        let mut c = self.counts.lock().unwrap();
        let n = c.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    }

    fn handle(&self, req: &Req) -> Reply {
        let trouble = *self.trouble.lock().unwrap();
        if req.method == "GET" {
            return self.content(req, trouble);
        }
        let t = req.text();
        match req.op() {
            Some(Operation::GetConfigData) => {
                if trouble == Trouble::Stalled {
                    return Reply::Slow(Duration::from_millis(1500), Box::new(ok(answer(5))));
                }
                if trouble == Trouble::FlakySoap && self.nth("config") == 0 {
                    return soap(500, fault("ServerBusy"));
                }
                ok(answer(5))
            }
            Some(Operation::GetRevisionIdList) => {
                let config = t.contains("<GetConfig>true</GetConfig>");
                let ids: Vec<(&str, i32)> = if t.contains("<Anchor>") {
                    Vec::new()
                } else {
                    self.docs
                        .iter()
                        .filter(|d| d.3 == config)
                        .map(|d| (d.0.as_str(), d.1))
                        .collect()
                };
                let body = revision_list("fake-anchor-1", &ids);
                if !config && trouble == Trouble::FlakySoap && self.nth("updates") == 0 {
                    return Reply::Slow(Duration::from_millis(1500), Box::new(ok(body)));
                }
                ok(body)
            }
            Some(Operation::GetUpdateData) => {
                let body = self.update_data(&t);
                if trouble == Trouble::FlakySoap && self.nth("data") == 0 {
                    return Reply::Truncated {
                        declared: body.len(),
                        body: body[..body.len() / 2].to_vec(),
                    };
                }
                ok(body)
            }
            Some(Operation::DownloadFiles) => ok(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><DownloadFilesResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution\" /></soap:Body></soap:Envelope>".into(),
            ),
            _ => captured_answer_for(req),
        }
    }

    fn update_data(&self, request: &str) -> Vec<u8> {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><GetUpdateDataResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution\"><GetUpdateDataResult><updates>",
        );
        let swap = *self.trouble.lock().unwrap() == Trouble::WrongIdentity;
        let small_xml = self
            .docs
            .iter()
            .find(|d| d.0 == SMALL)
            .map(|d| d.2.clone())
            .unwrap();
        for (id, rev, xml, _) in &self.docs {
            let xml = if swap && id == BIG { &small_xml } else { xml };
            if request.contains(id.as_str()) {
                s.push_str(&format!(
                    "<ServerSyncUpdateData><Id><UpdateID>{}</UpdateID><RevisionNumber>{rev}</RevisionNumber></Id><XmlUpdateBlob>{}</XmlUpdateBlob></ServerSyncUpdateData>",
                    id.to_uppercase(), // GUIDs in either case
                    gapsync::soap::escape(xml)
                ));
            }
        }
        s.push_str("</updates><fileUrls /></GetUpdateDataResult></GetUpdateDataResponse></soap:Body></soap:Envelope>");
        s.into_bytes()
    }

    fn content(&self, req: &Req, trouble: Trouble) -> Reply {
        let Some(data) = self.files.get(&req.path) else {
            return status(404);
        };
        let mut data = data.clone();
        let big = req.path == self.big_path;
        if big && trouble == Trouble::WrongContent {
            data[1000] ^= 0xff;
        }
        if big
            && matches!(
                trouble,
                Trouble::DropFirstDownload | Trouble::DropAndIgnoreRange
            )
            && self.nth("big") == 0
        {
            return Reply::Truncated {
                declared: data.len(),
                body: data[..data.len() / 2].to_vec(),
            };
        }
        match req.range_start() {
            Some(start)
                if trouble != Trouble::DropAndIgnoreRange && (start as usize) < data.len() =>
            {
                Reply::Full {
                    status: 206,
                    headers: vec![(
                        "Content-Range".into(),
                        format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
                    )],
                    body: data[start as usize..].to_vec(),
                }
            }
            _ => Reply::Full {
                status: 200,
                headers: Vec::new(),
                body: data,
            },
        }
    }
}

fn category_xml(id: &str, category_type: &str, title: &str) -> String {
    format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" xmlns:cat=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><upd:Properties UpdateType=\"Category\" /><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection><upd:HandlerSpecificData type=\"cat:Category\"><cat:CategoryInformation CategoryType=\"{category_type}\" ProhibitsSubcategories=\"true\" ProhibitsUpdates=\"false\" DisplayOrder=\"0\" ExcludedByDefault=\"false\" /></upd:HandlerSpecificData></upd:Update>"
    )
}

fn fault(code: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode>soap:Server</faultcode><faultstring>Fault occurred</faultstring><detail><ErrorCode>{code}</ErrorCode><Message></Message><ID>00000000-0000-0000-0000-00000000000f</ID></detail></soap:Fault></soap:Body></soap:Envelope>").into_bytes()
}

fn fake_server() -> (Arc<FakeUss>, TestServer) {
    let uss = FakeUss::new();
    let u2 = uss.clone();
    let server = TestServer::start(move |req| u2.handle(req));
    (uss, server)
}

fn staging_is_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir.join("staging")).unwrap().collect();
    assert!(left.is_empty(), "staging leftovers: {left:?}");
}

/// A download cut in the middle is resumed with a Range request from where
/// it stopped; the file arrives whole and verified.
#[test]
fn dropped_download_resumes_with_range() {
    let (uss, server) = fake_server();
    uss.set(Trouble::DropFirstDownload);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let r = run_sync(&dir, &options(&server.url())).unwrap();
    assert_eq!(r.content_files, 2, "{r:?}");
    assert!(r.content_resumed >= 1);
    let ranged: Vec<u64> = server
        .requests()
        .iter()
        .filter(|q| q.path == uss.big_path)
        .filter_map(Req::range_start)
        .collect();
    assert_eq!(ranged.len(), 1, "one resumed request");
    assert!(
        ranged[0] > 0 && ranged[0] <= 150_000,
        "resumed at {}",
        ranged[0]
    );
    content_files_are_whole(&dir);
    staging_is_empty(&dir);
    assert_eq!(tree(&dir.join("content")).len(), 2);
}

/// A server that ignores Range after a drop: the bytes already held are
/// skipped and the file still arrives whole.
#[test]
fn resume_against_a_server_that_ignores_range() {
    let (uss, server) = fake_server();
    uss.set(Trouble::DropAndIgnoreRange);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let r = run_sync(&dir, &options(&server.url())).unwrap();
    assert_eq!(r.content_files, 2);
    content_files_are_whole(&dir);
    staging_is_empty(&dir);
}

/// Content that does not match its metadata is a verification failure
/// naming the file; nothing of it is kept. The metadata step had committed
/// (documented), so a later sync against a repaired upstream fetches no
/// update data and only the content.
#[test]
fn wrong_content_digest_is_refused_and_a_later_sync_completes() {
    let (uss, server) = fake_server();
    uss.set(Trouble::WrongContent);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let e = run_sync(&dir, &options(&server.url())).unwrap_err();
    assert!(e.is_verification(), "{e}");
    assert!(e.to_string().contains(&uss.big_path), "{e}");
    assert!(e.to_string().contains("SHA-1"), "{e}");
    staging_is_empty(&dir);
    assert!(tree(&dir.join("content")).is_empty(), "no content was kept");
    {
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.status().unwrap().content_files, 0);
        assert_eq!(
            s.status().unwrap().updates.total,
            4,
            "metadata step committed"
        );
    }
    uss.set(Trouble::None);
    let r = run_sync(&dir, &options(&server.url())).unwrap();
    assert_eq!(r.update_data_requests, 0);
    assert_eq!(r.content_files, 2);
    content_files_are_whole(&dir);
}

/// A truncated SOAP answer, a late one and a ServerBusy fault are retried
/// with backoff; the sync completes and says how often it asked.
#[test]
fn truncated_slow_and_busy_answers_are_retried() {
    let (uss, server) = fake_server();
    uss.set(Trouble::FlakySoap);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&server.url());
    opts.client.read_timeout = Duration::from_millis(500);
    opts.content = ContentMode::None;
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.revisions_added, 4);
    assert_eq!(r.requests["GetConfigData"], 2, "{:?}", r.requests);
    assert_eq!(r.requests["GetRevisionIdList"], 3, "{:?}", r.requests);
    assert_eq!(r.requests["GetUpdateData"], 3, "{:?}", r.requests);
    // Only the first GetUpdateData was cut: the categories batch.
    assert_eq!(r.update_data_requests, 2);
}

/// An upstream that never answers in time: a clear error after the
/// bounded retries, and the store is unchanged.
#[test]
fn stalled_upstream_fails_clearly_and_changes_nothing() {
    let (uss, server) = fake_server();
    uss.set(Trouble::Stalled);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let before = snapshot(&dir);
    let mut opts = options(&server.url());
    opts.client.read_timeout = Duration::from_millis(300);
    opts.client.attempts = 2;
    let t = Instant::now();
    let e = run_sync(&dir, &opts).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10));
    let msg = e.to_string();
    assert!(msg.contains("GetConfigData"), "{msg}");
    assert!(msg.contains("2 attempt"), "{msg}");
    assert!(
        msg.to_lowercase().contains("timeout") || msg.contains("timed out"),
        "{msg}"
    );
    assert_eq!(snapshot(&dir), before);
}

/// Product and classification filters are sent as the protocol wants
/// (both lists; Delta true only for ids sent before, with an anchor) and
/// remembered per upstream.
#[test]
fn filters_are_sent_with_delta_and_remembered() {
    let (_uss, server) = fake_server();
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&server.url());
    opts.content = ContentMode::None;
    opts.products = vec![PRODUCT.to_uppercase()];
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.products, vec![PRODUCT.to_string()]);
    let list = |server: &TestServer| {
        server
            .requests()
            .into_iter()
            .rfind(|q| {
                q.op() == Some(Operation::GetRevisionIdList)
                    && q.text().contains("<GetConfig>false</GetConfig>")
            })
            .unwrap()
            .text()
    };
    let first = list(&server);
    assert!(
        first.contains(&format!(
            "<Categories><IdAndDelta><Id>{PRODUCT}</Id><Delta>false</Delta>"
        )),
        "{first}"
    );
    // No classification was given: every one the store knows is sent.
    assert!(
        first.contains(&format!(
            "<Classifications><IdAndDelta><Id>{CLASSIFICATION}</Id><Delta>false</Delta>"
        )),
        "{first}"
    );
    // Next time (filters remembered): with the anchor, Delta true.
    opts.products.clear();
    run_sync(&dir, &opts).unwrap();
    let second = list(&server);
    assert!(second.contains("<Anchor>fake-anchor-1</Anchor>"));
    assert!(
        second.contains(&format!("<Id>{PRODUCT}</Id><Delta>true</Delta>")),
        "{second}"
    );
}

/// `--replica` needs a replica store.
#[test]
fn replica_sync_into_an_autonomous_store_is_refused() {
    let (_uss, server) = fake_server();
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&server.url());
    opts.replica = true;
    let e = run_sync(&dir, &opts).unwrap_err();
    assert!(e.to_string().contains("init --mode replica"), "{e}");
    assert!(server.requests().is_empty());
}

// ---------------------------------------------------------------------------
// gapsync -> gapsync over loopback
// ---------------------------------------------------------------------------

/// `gapsync serve --listen 127.0.0.1:0` on a store; stopped (by its
/// process handle) when dropped.
struct Serve {
    child: std::process::Child,
    url: String,
}

impl Serve {
    fn start(store: &Path) -> Serve {
        Serve::start_with(store, &[])
    }

    fn start_with(store: &Path, extra: &[&str]) -> Serve {
        let mut child = std::process::Command::new(bin())
            .arg("--server")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("GAPSYNC_SERVER")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start gapsync serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("gapsync serve did not say where it listens")
            });
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of `gapsync serve` that cuts the first download of a
/// content file halfway (the connection drops).
fn cutting_proxy(upstream: &str) -> TestServer {
    let upstream = upstream.to_string();
    let cut = AtomicBool::new(false);
    TestServer::start(move |req| {
        let reply = forward(&upstream, req);
        if req.method == "GET"
            && req.path.starts_with("/Content/")
            && req.header("Range").is_none()
            && !cut.swap(true, Ordering::SeqCst)
            && let Reply::Full {
                status: 200, body, ..
            } = reply
        {
            return Reply::Truncated {
                declared: body.len(),
                body: body[..body.len() / 2].to_vec(),
            };
        }
        reply
    })
}

/// What must be equal between an upstream and its replica.
fn replicated_view(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for args in [
        &["updates", "list", "--json"][..],
        &["deployments", "list", "--json"],
        &["deployments", "list", "--removed", "--json"],
        &["groups", "list", "--json"],
    ] {
        out.push((args.join(" "), gs(dir, args).ok().stdout));
    }
    // Revisions byte for byte (the stored documents' digests).
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("gapsync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = conn
        .prepare("SELECT update_id, revision, hex(xml_sha256) FROM revisions ORDER BY 1, 2")
        .unwrap();
    let rows: Vec<String> = st
        .query_map([], |r| {
            Ok(format!(
                "{} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out.push(("revisions".into(), rows.join("\n")));
    let content: Vec<String> = tree(&dir.join("content"))
        .into_iter()
        .map(|(p, b)| format!("{p} {}", sha1_hex_upper(&b)))
        .collect();
    out.push(("content".into(), content.join("\n")));
    out
}

fn assert_same(a: &Path, b: &Path) {
    for ((what, x), (_, y)) in replicated_view(a).into_iter().zip(replicated_view(b)) {
        assert!(
            x == y,
            "{what} differs:\n{}\n---\n{}",
            a.display(),
            b.display()
        );
    }
}

fn sync_json(store: &Path, upstream: &str) -> serde_json::Value {
    gs(
        store,
        &["sync", "--upstream", upstream, "--replica", "--json"],
    )
    .ok()
    .json()
}

/// The Done-when loop: `gapsync serve` on a store with groups, approvals,
/// a decline and content; a replica syncs over loopback through a proxy
/// that drops the first content download (resumed with Range); the two
/// stores are equal (updates, deployments live and dead, groups, every
/// revision's bytes, the content tree); a second sync fetches no update
/// data; upstream changes arrive by an incremental sync; a bundle of the
/// upstream imported elsewhere gives the same state as the sync.
#[test]
fn gapsync_to_gapsync_over_loopback() {
    let (_t1, hq) = new_store("hq", "autonomous");
    gs(
        &hq,
        &[
            "catalog",
            "generate",
            "--updates",
            "60",
            "--content-bytes",
            "6M",
            "--seed",
            "5",
        ],
    )
    .ok();
    gs(&hq, &["groups", "add", "Workstations"]).ok();
    gs(&hq, &["groups", "add", "Pilot", "--parent", "Workstations"]).ok();
    let software: Vec<String> = gs(&hq, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert!(software.len() >= 6);
    gs(
        &hq,
        &[
            "approve",
            &software[0],
            "--group",
            "Pilot",
            "--deadline",
            "2026-12-01T18:00:00Z",
        ],
    )
    .ok();
    gs(
        &hq,
        &[
            "approve",
            &software[1],
            "--group",
            "Workstations",
            "--action",
            "block",
        ],
    )
    .ok();
    gs(&hq, &["approve", &software[5], "--group", "Pilot"]).ok();
    gs(&hq, &["decline", &software[2]]).ok();

    let serve = Serve::start(&hq);
    let proxy = cutting_proxy(&serve.url);
    let (_t2, plant) = new_store("plant", "replica");

    // Full sync, with a dropped and resumed content download.
    let r = sync_json(&plant, &proxy.url());
    assert_eq!(r["full"], true);
    assert!(r["content_resumed"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["deployments_created"], 3, "{r}");
    assert_eq!(r["groups_added"], 2);
    assert_eq!(r["updates_declined"], 1);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|q| q.method == "GET" && q.header("Range").is_some())
    );
    content_files_are_whole(&plant);
    assert_same(&hq, &plant);

    // Nothing changed upstream: no update data.
    let before = proxy.count(Operation::GetUpdateData);
    let r = sync_json(&plant, &proxy.url());
    assert_eq!(r["full"], false);
    assert_eq!(r["update_data_requests"], 0, "{r}");
    assert_eq!(r["revisions_added"], 0);
    assert_eq!(proxy.count(Operation::GetUpdateData), before);
    assert_same(&hq, &plant);

    // Upstream changes: a new update with content, approvals made and
    // removed, a new group, another decline.
    let files = tempfile::tempdir().unwrap();
    let data = noise(50_000, 99);
    let new_id = "22222222-3333-4444-8555-000000000001";
    std::fs::write(files.path().join("kb1.cab"), &data).unwrap();
    let xml = update_xml(
        new_id,
        200,
        "Software",
        "New update",
        &[],
        &[FileSpec {
            name: "kb1.cab",
            data: &data,
        }],
    );
    std::fs::write(files.path().join("new.xml"), xml).unwrap();
    gs(
        &hq,
        &[
            "catalog",
            "add",
            files.path().join("new.xml").to_str().unwrap(),
            "--content",
            files.path().to_str().unwrap(),
        ],
    )
    .ok();
    gs(&hq, &["groups", "add", "Lab"]).ok();
    gs(&hq, &["approve", new_id, "--group", "Pilot"]).ok();
    gs(&hq, &["approve", &software[3], "--group", "Lab"]).ok();
    gs(&hq, &["unapprove", &software[0], "--group", "Pilot"]).ok();
    gs(&hq, &["decline", &software[4]]).ok();
    let r = sync_json(&plant, &proxy.url());
    assert_eq!(r["full"], false);
    assert_eq!(r["revisions_added"], 1, "{r}");
    assert_eq!(r["update_data_requests"], 1, "{r}");
    assert_eq!(r["deployments_created"], 2, "{r}");
    assert_eq!(r["deployments_removed"], 1, "{r}");
    assert_eq!(r["groups_added"], 1, "{r}");
    assert_eq!(r["updates_declined"], 1, "{r}");
    assert_eq!(r["content_files"], 1, "{r}");
    assert_same(&hq, &plant);

    // Sync and bundle end up identical.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("hq");
    gs_plain(&["key", "generate", "--out", key.to_str().unwrap()]).ok();
    let bundle = keys.path().join("b-0001");
    gs(
        &hq,
        &[
            "export",
            "--key",
            key.with_extension("key").to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--to",
            "other",
        ],
    )
    .ok();
    let (_t3, other) = new_store("other", "replica");
    gs(
        &other,
        &["trust", "add", key.with_extension("pub").to_str().unwrap()],
    )
    .ok();
    gs(&other, &["import", bundle.to_str().unwrap()]).ok();
    assert_same(&plant, &other);
    drop(serve);
}

/// The upstream behind a URL is replaced by another server: it answers the
/// stored anchors with ServerChanged, and the DSS resets them and syncs in
/// full from the new server (groups it does not have are removed).
#[test]
fn server_changed_resets_anchors() {
    let (_t1, hq) = new_store("hq", "autonomous");
    gs(
        &hq,
        &["catalog", "generate", "--updates", "20", "--seed", "1"],
    )
    .ok();
    gs(&hq, &["groups", "add", "Old"]).ok();
    let (_t2, hq2) = new_store("hq2", "autonomous");
    gs(
        &hq2,
        &["catalog", "generate", "--updates", "30", "--seed", "2"],
    )
    .ok();
    let first = Serve::start(&hq);
    let second = Serve::start(&hq2);
    let target = Arc::new(Mutex::new(first.url.clone()));
    let t2 = target.clone();
    let proxy = TestServer::start(move |req| {
        let to = t2.lock().unwrap().clone();
        forward(&to, req)
    });
    let (_t3, plant) = new_store("plant", "replica");
    let r = sync_json(&plant, &proxy.url());
    assert_eq!(r["groups_added"], 1);
    *target.lock().unwrap() = second.url.clone();
    let r = sync_json(&plant, &proxy.url());
    assert_eq!(r["anchors_reset"], 1, "{r}");
    assert!(r["revisions_added"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["groups_removed"], 1, "{r}");
    let anchor = r["sync_anchor"].as_str().unwrap();
    let hq2_id = gs(&hq2, &["status", "--json"]).ok().json()["server_id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    assert!(anchor.contains(&hq2_id), "{anchor}");
}

/// An `https://` upstream that speaks plain HTTP (a real `gapsync serve`
/// without TLS) is named as such, with the `http://` URL to use, not with
/// TLS internals; nothing changes.
#[test]
fn https_to_a_plain_http_upstream_says_so() {
    let (_t1, hq) = new_store("hq", "autonomous");
    let upstream = Serve::start(&hq);
    let plain = upstream.url.clone();
    let https = plain.replacen("http://", "https://", 1);
    assert!(https.starts_with("https://127.0.0.1:"), "{https}");
    let (_t2, plant) = new_store("plant", "replica");
    let before = snapshot(&plant);
    let r = gs(&plant, &["sync", "--upstream", &https, "--replica"]).fails(
        1,
        &format!("the upstream answered in plain HTTP, not TLS; use {plain}"),
    );
    for internal in [
        "InvalidContentType",
        "corrupt message",
        "rustls",
        "GAPSYNC_UPSTREAM_CA",
    ] {
        assert!(!r.stderr.contains(internal), "{internal}: {}", r.stderr);
    }
    assert_eq!(r.stderr.matches("plain HTTP").count(), 1, "{}", r.stderr);
    assert_eq!(snapshot(&plant), before);
    // The URL it suggests works.
    sync_json(&plant, &plain);
}

/// A document that is not the revision it was sent as is refused; the
/// store is unchanged.
#[test]
fn document_under_another_identity_is_refused() {
    let (uss, server) = fake_server();
    uss.set(Trouble::WrongIdentity);
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let before = snapshot(&dir);
    let e = run_sync(&dir, &options(&server.url())).unwrap_err();
    assert!(e.is_verification(), "{e}");
    assert!(e.to_string().contains("identity-mismatch"), "{e}");
    assert_eq!(snapshot(&dir), before);
}

/// An answer larger than the bound is refused, not read whole.
#[test]
fn oversized_answer_is_refused() {
    let server = TestServer::start(|req| match req.op() {
        Some(Operation::GetAuthConfig) => ok(vec![b' '; 64 << 10]),
        _ => status(404),
    });
    let mut o = fast_options();
    o.max_response_bytes = 16 << 10;
    let c = Client::new(&server.url(), o).unwrap();
    let e = c.get_auth_config().unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
    assert_eq!(server.count(Operation::GetAuthConfig), 1, "not retried");
}

/// An https upstream with its own certificate: trusted through
/// GAPSYNC_UPSTREAM_CA; without it the sync fails at once, saying why.
#[test]
fn sync_over_https_with_the_upstreams_certificate() {
    let (_t1, hq) = new_store("hq", "autonomous");
    gs(
        &hq,
        &["catalog", "generate", "--updates", "10", "--seed", "4"],
    )
    .ok();
    let tls = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = tls.path().join("cert.pem");
    let key = tls.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let serve = Serve::start_with(
        &hq,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(serve.url.starts_with("https://"), "{}", serve.url);
    let (_t2, plant) = new_store("plant", "replica");
    let t = Instant::now();
    let r = gs(&plant, &["sync", "--upstream", &serve.url, "--replica"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("GAPSYNC_UPSTREAM_CA") || r.stderr.to_lowercase().contains("certificate"),
        "{}",
        r.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "no long retries of a certificate error"
    );
    let r = gs_env(
        &plant,
        &["sync", "--upstream", &serve.url, "--replica", "--json"],
        &[("GAPSYNC_UPSTREAM_CA", cert.to_str().unwrap())],
    )
    .ok()
    .json();
    assert!(r["revisions_added"].as_u64().unwrap() > 0, "{r}");
    assert_same(&hq, &plant);
}

/// `--content approved`: only files of updates approved for install here.
#[test]
fn approved_content_only() {
    let (_uss, server) = fake_server();
    let (_tmp, dir) = new_lib_store(Mode::Autonomous);
    let mut opts = options(&server.url());
    opts.content = ContentMode::Approved;
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.content_files, 0);
    {
        let mut s = open_writer(&dir);
        s.approve(&gapsync::store::deployments::Approval {
            update_id: SMALL,
            group: "All Computers",
            action: gapsync::store::deployments::Action::Install,
            deadline: None,
            admin_name: "test",
        })
        .unwrap();
    }
    let r = run_sync(&dir, &opts).unwrap();
    assert_eq!(r.content_files, 1, "{r:?}");
    assert_eq!(r.content_bytes, 20_000);
    assert_eq!(r.update_data_requests, 0);
}

/// A replica with a group of its own (as older gapsync let replicas make)
/// and an upstream that then adds a group of the same name: the sync
/// replaces the local group (which the upstream does not have) instead of
/// clashing with it for ever; the local group's computers move to
/// "Unassigned Computers" and the replica equals its upstream. A filter id
/// the upstream has no category for is warned about.
#[test]
fn a_local_group_on_a_replica_does_not_block_sync() {
    let (_t1, hq) = new_store("hq", "autonomous");
    gs(
        &hq,
        &[
            "catalog",
            "generate",
            "--updates",
            "30",
            "--content-bytes",
            "0",
            "--seed",
            "4",
        ],
    )
    .ok();
    let (_t2, plant) = new_store("plant", "replica");
    // The local group, written as an older gapsync's `groups add` did.
    {
        let c = rusqlite::Connection::open(plant.join("gapsync.db")).unwrap();
        c.execute_batch(
            "INSERT INTO journal (kind, subject, at) VALUES ('group_added', '99999999-0000-4000-8000-000000000009', '2026-01-01T00:00:00Z');
             INSERT INTO groups (group_id, name, parent_id, builtin, seq)
             VALUES ('99999999-0000-4000-8000-000000000009', 'Pilot', 'a0a08746-4dbe-4a37-9adf-9e7652c0b421', 0, last_insert_rowid());",
        )
        .unwrap();
    }
    gs(&plant, &["computers", "add", "ws-1", "--group", "Pilot"]).ok();
    gs(&hq, &["groups", "add", "pilot"]).ok();
    // (Computers are local; one in Unassigned Computers upstream too, so
    // the group lists with their computer counts compare equal.)
    gs(&hq, &["computers", "add", "ws-9"]).ok();
    let software: Vec<String> = gs(&hq, &["updates", "list", "--kind", "software", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    gs(&hq, &["approve", &software[0], "--group", "pilot"]).ok();
    let serve = Serve::start(&hq);
    let j = sync_json(&plant, &serve.url);
    assert_eq!(
        (j["groups_added"].as_u64(), j["groups_removed"].as_u64()),
        (Some(1), Some(1)),
        "{j}"
    );
    assert_same(&hq, &plant);
    let computers = gs(&plant, &["computers", "list", "--json"]).ok().json();
    assert_eq!(computers[0]["group"], "Unassigned Computers");
    let check = gs(&plant, &["check"]).ok();
    assert!(check.stdout.contains(": clean"), "{}", check.stdout);

    // A filter naming a category the upstream does not have is warned
    // about after the sync (the upstream's categories are known then).
    let (_t3, other) = new_store("other", "autonomous");
    let unknown = "0b5bb2a6-0c5c-4c5b-9a3b-000000000002";
    let r = gs(
        &other,
        &["sync", "--upstream", &serve.url, "--product", unknown],
    )
    .ok();
    assert!(
        r.stderr.contains(&format!(
            "warning: --product {unknown}: not a category in this store"
        )),
        "{}",
        r.stderr
    );
    drop(serve);
}
