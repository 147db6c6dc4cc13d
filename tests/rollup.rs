//! Online rollup (MS-WSUSSS reporting web service, 3.1.4.13-3.1.4.17 and
//! 3.2.4.5): a replica's `sync` rolls its computers and their status up to
//! the upstream `serve`, which shows the replica as a site exactly as a
//! report bundle would; python zeep, loaded with the protocol's WSDL,
//! rolls up as a Windows downstream server does; a server that never
//! authorized is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};
use serde_json::Value;

use common::{gs, new_store, reference};

/// `serve` in this process on a free port; returns its URL.
fn serve(dir: &Path) -> String {
    let opts = gapsync::http::ServeOptions {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let srv = gapsync::http::Server::bind(dir, opts).expect("bind");
    let url = format!("{}://{}", srv.scheme(), srv.local_addr().expect("address"));
    std::thread::spawn(move || srv.run());
    url
}

/// An upstream with a generated catalog and install approvals for All
/// Computers of a few software updates; returns them.
fn upstream() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (tmp, hq) = new_store("hq", "autonomous");
    gs(
        &hq,
        &[
            "catalog",
            "generate",
            "--updates",
            "60",
            "--content-bytes",
            "2M",
            "--seed",
            "5",
        ],
    )
    .ok();
    let list = gs(&hq, &["updates", "list", "--json", "--kind", "software"])
        .ok()
        .json();
    let ids: Vec<String> = list
        .as_array()
        .expect("updates")
        .iter()
        .filter(|u| u["declined"] != Value::Bool(true))
        .filter_map(|u| u["id"].as_str().map(String::from))
        .take(6)
        .collect();
    assert_eq!(ids.len(), 6);
    for id in &ids {
        gs(&hq, &["approve", id, "--group", "All Computers"]).ok();
    }
    (tmp, hq, ids)
}

fn machine(n: u32) -> Machine {
    Machine::new(
        &format!("70110000-0000-4000-8000-{n:012}"),
        &format!("pc{n}.plant.invalid"),
    )
}

fn sync(replica: &Path, url: &str) -> Value {
    gs(replica, &["sync", "--upstream", url, "--replica", "--json"])
        .ok()
        .json()
}

/// The rows of a report without the fields whose spelling differs by
/// path (times: the rollup carries them as xsd:dateTime seconds).
fn rows(v: Value) -> Vec<Value> {
    let mut out: Vec<Value> = v.as_array().expect("rows").clone();
    for r in &mut out {
        if let Some(o) = r.as_object_mut() {
            o.remove("last_report");
            o.remove("site");
        }
    }
    out
}

#[test]
fn a_replica_rolls_its_clients_up_and_the_upstream_shows_it_as_a_site() {
    let (_t1, hq, _) = upstream();
    let hq_url = serve(&hq);
    let (_t2, plant) = new_store("plant", "replica");
    let first = sync(&plant, &hq_url);
    assert_eq!(first["rollup"]["computers"], 0, "{first}");
    assert_eq!(first["rollup_error"], Value::Null, "{first}");

    // Clients at the replica: scan, install what is approved, report.
    let plant_url = serve(&plant);
    for n in 1..=2 {
        let mut w = Wua::new(&plant_url, machine(n), WuaOptions::default());
        w.scan().expect("scan");
        let done = w.install().expect("install");
        assert!(done.iter().any(|i| i.ok), "{done:?}");
    }
    let second = sync(&plant, &hq_url);
    let ru = &second["rollup"];
    assert_eq!(ru["computers"], 2, "{second}");
    assert_eq!(ru["details"], 2, "{second}");
    assert_eq!(ru["status_full"], 2, "{second}");
    assert!(ru["status_rows"].as_u64().unwrap_or(0) > 0, "{second}");

    // The upstream shows the replica as a site, with the replica's own
    // numbers.
    let sites = gs(&hq, &["sites", "list", "--json"]).ok().json();
    let site = sites
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["site"] == "plant")
        .unwrap_or_else(|| panic!("no site plant in {sites}"))
        .clone();
    assert_eq!(site["computers"], 2, "{site}");
    assert!(site["installed"].as_i64().unwrap_or(0) > 0, "{site}");
    let local = gs(&plant, &["report", "updates", "--json"]).ok().json();
    let remote = gs(&hq, &["report", "updates", "--site", "plant", "--json"])
        .ok()
        .json();
    assert_eq!(rows(remote), rows(local));
    let local = gs(&plant, &["report", "computers", "--json"]).ok().json();
    let remote = gs(&hq, &["report", "computers", "--site", "plant", "--json"])
        .ok()
        .json();
    assert_eq!(rows(remote), rows(local.clone()));

    // The console's per-site compliance shows the same numbers.
    let hq_store = gapsync::store::Store::open_read_only(&hq).expect("open");
    let per_site = hq_store.site_compliance().expect("site compliance");
    let mut sums = serde_json::Map::new();
    for row in local.as_array().expect("rows") {
        for k in ["installed", "needed", "failed", "not_applicable", "unknown"] {
            let v = sums.get(k).and_then(Value::as_i64).unwrap_or(0) + row[k].as_i64().unwrap_or(0);
            sums.insert(k.into(), v.into());
        }
    }
    assert_eq!(per_site.len(), 1);
    assert_eq!(
        serde_json::to_value(per_site[0].counts).unwrap(),
        Value::Object(sums)
    );
    let page = gapsync::console::pages::compliance(&hq_store).expect("page");
    assert!(
        page.contains("<th scope=\"row\">plant</th><td class=\"num\">2</td>"),
        "{page}"
    );
    drop(hq_store);

    // Nothing changed: no status is sent again. A new client: only its
    // status, in full.
    let third = sync(&plant, &hq_url);
    assert_eq!(third["rollup"]["status_computers"], 0, "{third}");
    assert_eq!(third["rollup"]["details"], 0, "{third}");
    let mut w = Wua::new(&plant_url, machine(3), WuaOptions::default());
    w.scan().expect("scan");
    w.install().expect("install");
    let fourth = sync(&plant, &hq_url);
    assert_eq!(fourth["rollup"]["details"], 1, "{fourth}");
    assert_eq!(fourth["rollup"]["status_full"], 1, "{fourth}");
    let local = gs(&plant, &["report", "updates", "--json"]).ok().json();
    let remote = gs(&hq, &["report", "updates", "--site", "plant", "--json"])
        .ok()
        .json();
    assert_eq!(rows(remote), rows(local));

    // --no-rollup sends nothing.
    let quiet = gs(
        &plant,
        &[
            "sync",
            "--upstream",
            &hq_url,
            "--replica",
            "--no-rollup",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(quiet["rollup"], Value::Null, "{quiet}");
    assert!(
        quiet["requests"].get("GetRollupConfiguration").is_none(),
        "{quiet}"
    );
}

/// A server that never authorized with the upstream is refused, and the
/// upstream records nothing.
#[test]
fn a_rollup_from_an_unknown_server_is_refused() {
    let (_t1, hq, _) = upstream();
    let url = serve(&hq);
    let body = format!(
        "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <RollupDownstreamServers xmlns=\"http://www.microsoft.com/SoftwareDistribution\">\
         <cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData /></cookie>\
         <clientTime>2026-12-01T00:00:00Z</clientTime><downstreamServers><DownstreamServerRollupInfo>\
         <ServerId>{}</ServerId><FullDomainName>intruder</FullDomainName><LastSyncTime>2026-12-01T00:00:00Z</LastSyncTime>\
         <ParentServerId>00000000-0000-0000-0000-000000000000</ParentServerId><Version>1.0</Version>\
         <IsReplica>true</IsReplica><LastRollupTime>1753-01-01T00:00:00</LastRollupTime>\
         </DownstreamServerRollupInfo></downstreamServers></RollupDownstreamServers></soap:Body></soap:Envelope>",
        uuid::Uuid::new_v4()
    );
    let resp = ureq::post(format!(
        "{url}/ReportingWebService/ReportingWebService.asmx"
    ))
    .header("Content-Type", "text/xml; charset=utf-8")
    .header(
        "SOAPAction",
        "\"http://www.microsoft.com/SoftwareDistribution/RollupDownstreamServers\"",
    )
    .config()
    .http_status_as_error(false)
    .build()
    .send(body.as_bytes())
    .expect("post");
    assert_eq!(resp.status().as_u16(), 500);
    let text = resp.into_body().read_to_string().expect("body");
    assert!(
        text.contains("InvalidParameters") && text.contains("ServerId"),
        "{text}"
    );
    let sites = gs(&hq, &["sites", "list", "--json"]).ok().json();
    assert_eq!(sites, serde_json::json!([]));
}

/// python zeep with `specs/wsusss_dssauth.wsdl` and
/// `specs/wsusss_reporting.wsdl` rolls a server, a computer (NewParent
/// first, then with details) and its status up over SOAP 1.1 and 1.2; the
/// upstream then lists it as a site with that computer installed.
#[test]
fn zeep_rolls_up_as_a_windows_downstream_server() {
    let (_t1, hq, approved) = upstream();
    let url = serve(&hq);
    let specs = reference().join("specs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zeep_rollup.py");
    for binding in ["11", "12"] {
        let out = Command::new("python3")
            .arg(&script)
            .arg(&url)
            .arg(specs.join("wsusss_dssauth.wsdl"))
            .arg(specs.join("wsusss_reporting.wsdl"))
            .arg(&approved[0])
            .arg(binding)
            .output()
            .unwrap_or_else(|e| panic!("python3 is needed for this test ({e}): install Python 3, then `pip install zeep`"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(3),
            "the python module zeep is missing: run `pip install zeep` (.ci/run does)\n{stderr}"
        );
        assert!(out.status.success(), "the zeep rollup failed: {stderr}");
        let r: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
        let site = r["site"].as_str().expect("site");
        let computers = gs(&hq, &["report", "computers", "--site", site, "--json"])
            .ok()
            .json();
        let c = &computers.as_array().expect("rows")[0];
        assert_eq!(c["computer_id"], r["computer"], "{computers}");
        assert_eq!(c["name"], "pc-7.zeep.example", "{computers}");
        assert_eq!(c["installed"], 1, "{computers}");
    }
}
