//! The MS-WUSP services (`gapsync::protocols::wusp`) through the routing
//! table, on hostile requests to a store with a generated catalog, one
//! approval and a registered client. The first byte picks the operation
//! (and SOAP 1.2 or 1.1, or the whole input sent raw); the rest is the
//! request element's content, in which `$C` becomes a valid client cookie
//! and `$A` a valid authorization cookie, so the fuzzer reaches the
//! handlers' own readers. Rules: never a panic; every answer is 200 or a
//! fault; a hostile request is never an InternalServerError (the fault
//! blames the request, not the server), except where Windows WSUS answers
//! one (GetAuthorizationCookie's malformed clientId or dnsName). The store lives in `/dev/shm` where
//! there is one (a tmpfs: its fsyncs cost nothing, so the run measures the
//! handlers rather than the disk).
#![no_main]
use std::sync::{Mutex, OnceLock};

use gapsync::http::{Routes, SoapReply, SoapRequest};
use gapsync::soap::{Envelope, Limits, SoapVersion};
use gapsync::store::{Mode, Store};
use libfuzzer_sys::fuzz_target;

const CLIENT: &str = "/ClientWebService/client.asmx";
const AUTH: &str = "/SimpleAuthWebService/SimpleAuth.asmx";
const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const CWS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
const SAWS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
const RWS: &str = "http://www.microsoft.com/SoftwareDistribution";

const OPS: [(&str, &str, &str); 12] = [
    (CLIENT, CWS, "GetConfig"),
    (CLIENT, CWS, "GetCookie"),
    (CLIENT, CWS, "RegisterComputer"),
    (CLIENT, CWS, "StartCategoryScan"),
    (CLIENT, CWS, "SyncUpdates"),
    (CLIENT, CWS, "GetExtendedUpdateInfo"),
    (CLIENT, CWS, "GetExtendedUpdateInfo2"),
    (CLIENT, CWS, "GetFileLocations"),
    (CLIENT, CWS, "RefreshCache"),
    (CLIENT, CWS, "SyncPrinterCatalog"),
    (AUTH, SAWS, "GetAuthorizationCookie"),
    (REPORTING, RWS, "ReportEventBatch"),
];

struct Lab {
    store: Store,
    routes: Routes,
    cookie: String,
    auth: String,
}

fn envelope(version: SoapVersion, ns: &str, op: &str, inner: &str) -> String {
    format!(
        "<e:Envelope xmlns:e=\"{}\"><e:Body><{op} xmlns=\"{ns}\">{inner}</{op}></e:Body></e:Envelope>",
        version.envelope_ns()
    )
}

fn call(lab: &Lab, path: &'static str, body: &[u8]) -> SoapReply {
    lab.routes.answer(
        &lab.store,
        &SoapRequest {
            path,
            body,
            action: None,
            base_url: "http://fuzz",
            limits: Limits::REQUEST,
        },
    )
}

fn text_of(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.split(&open)
        .nth(1)
        .and_then(|r| r.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .to_string()
}

fn lab() -> &'static Mutex<Lab> {
    static LAB: OnceLock<Mutex<Lab>> = OnceLock::new();
    LAB.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("gapsync-fuzz-wusp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::init(&dir, "fuzz", Mode::Autonomous).expect("store");
        let opts = gapsync::seed::generate::GenerateOptions {
            updates: 40,
            content_bytes: 0,
            seed: 7,
        };
        gapsync::seed::generate::generate(&mut store, &opts, &gapsync::progress::Silent)
            .expect("catalog");
        let routes = gapsync::protocols::wusp::routes(&store, Default::default()).expect("routes");
        let mut lab = Lab {
            store,
            routes,
            cookie: String::new(),
            auth: String::new(),
        };
        let v = SoapVersion::V11;
        let a = call(&lab, AUTH, envelope(v, SAWS, "GetAuthorizationCookie",
            "<clientId>5f0c0a1e-2b3c-4d5e-8f90-a1b2c3d4e5f6</clientId><targetGroupName></targetGroupName><dnsName>fuzz.invalid</dnsName>").as_bytes());
        lab.auth = text_of(&a.body, "CookieData");
        // GetCookie's lastChange must be the configuration time GetConfig gives.
        let g = call(&lab, CLIENT, envelope(v, CWS, "GetConfig", "<protocolVersion>1.0</protocolVersion>").as_bytes());
        let last_change = text_of(&g.body, "LastChange");
        assert!(!last_change.is_empty(), "no LastChange: {}", g.body);
        let inner = format!("<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId><CookieData>{}</CookieData></AuthorizationCookie></authCookies><oldCookie><Expiration>2026-10-04T15:03:36Z</Expiration></oldCookie><lastChange>{last_change}</lastChange><currentTime>2026-10-04T15:03:36Z</currentTime><protocolVersion>2.90</protocolVersion>", lab.auth);
        let c = call(&lab, CLIENT, envelope(v, CWS, "GetCookie", &inner).as_bytes());
        lab.cookie = text_of(&c.body, "EncryptedData");
        assert!(!lab.cookie.is_empty(), "no cookie: {}", c.body);
        let reg = format!("<cookie><Expiration>2099-01-01T00:00:00Z</Expiration><EncryptedData>{}</EncryptedData></cookie><computerInfo><DnsName>fuzz.invalid</DnsName><OSMajorVersion>10</OSMajorVersion><OSMinorVersion>0</OSMinorVersion><OSBuildNumber>26200</OSBuildNumber><ProcessorArchitecture>AMD64</ProcessorArchitecture></computerInfo>", lab.cookie);
        let r = call(&lab, CLIENT, envelope(v, CWS, "RegisterComputer", &reg).as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        Mutex::new(lab)
    })
}

/// Rule: an answer is 200, or a fault that reads back and does not blame
/// the server; except that GetAuthorizationCookie answers a malformed
/// clientId or dnsName with InternalServerError, as Windows WSUS does
/// (MS-WUSP <50>, <51>).
fn check(reply: &SoapReply, op: &str) {
    match reply.status {
        200 => {}
        500 => {
            let env = Envelope::read(reply.body.as_bytes(), &Limits::ANSWER).expect("fault reads");
            let f = env.fault().expect("a fault");
            if op != "GetAuthorizationCookie" {
                assert_ne!(
                    f.error_code.as_deref(),
                    Some("InternalServerError"),
                    "{}",
                    reply.summary
                );
            }
        }
        s => panic!("status {s}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(lab) = lab().lock() else { return };
    let (path, ns, op) = OPS[usize::from(pick & 0x0f) % OPS.len()];
    let reply = if pick >= 0xf0 {
        call(&lab, path, rest)
    } else {
        let version = if pick & 0x10 != 0 { SoapVersion::V12 } else { SoapVersion::V11 };
        let inner = String::from_utf8_lossy(rest)
            .replace("$C", &lab.cookie)
            .replace("$A", &lab.auth);
        call(&lab, path, envelope(version, ns, op, &inner).as_bytes())
    };
    check(&reply, op);
});
