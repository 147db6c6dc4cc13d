//! The simulated Windows Update Agent (`gapsync::protocols::wusp::client`)
//! against the real `gapsync serve`: over generated catalogs with bundles,
//! detectoids, prerequisites, supersedence and declines, the cache and the
//! needed and installed sets the client ends with equal an oracle computed
//! here directly from the stored update XML (not from the server's
//! catalog); approvals, installs and declines reach the store's status;
//! across the air gap a site client installs what HQ approved; clients
//! recover from expired cookies, a changed server and another server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gapsync::protocols::wusp::client::{Machine, Wua, WuaOptions};
use gapsync::store::Store;
use gapsync::store::wusp::UpdateState;

use common::{Lab, gs, new_store, p};

/// A running `gapsync serve`; killed on drop.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(store: &Path) -> Served {
        let mut child = Command::new(common::bin())
            .arg("--server")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("GAPSYNC_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gapsync serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("serve printed no address")
            });
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Served { child, url }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------
// The oracle: read from the stored XML, independent of the server.
// ---------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Doc {
    id: String,
    kind: String,
    declined: bool,
    explicitly_deployable: bool,
    clauses: Vec<Vec<String>>,
    bundled: Vec<String>,
    superseded: Vec<String>,
    files: usize,
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .map(|a| a.value.to_string())
}

fn parse_doc(xml: &[u8], declined: bool) -> Doc {
    use quick_xml::events::Event;
    let text = String::from_utf8_lossy(xml);
    let mut r = quick_xml::Reader::from_str(&text);
    let mut path: Vec<String> = Vec::new();
    let mut d = Doc {
        declined,
        ..Doc::default()
    };
    loop {
        let ev = r.read_event().expect("stored XML reads");
        let (e, empty) = match &ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = e.local_name().as_ref().to_string();
        let at: Vec<&str> = path.iter().map(String::as_str).collect();
        let id = || attr(e, "UpdateID").map(|s| s.to_ascii_lowercase());
        match (at.as_slice(), name.as_str()) {
            ([_], "UpdateIdentity") => d.id = id().unwrap(),
            ([_], "Properties") => {
                d.kind = attr(e, "UpdateType").unwrap_or_default();
                d.explicitly_deployable =
                    attr(e, "ExplicitlyDeployable").as_deref() == Some("true");
                if attr(e, "PublicationState").as_deref() == Some("Expired") {
                    d.declined = true;
                }
            }
            ([_, "Relationships", "Prerequisites"], "UpdateIdentity") => {
                d.clauses.push(vec![id().unwrap()])
            }
            ([_, "Relationships", "Prerequisites"], "AtLeastOne") => d.clauses.push(vec![]),
            ([_, "Relationships", "Prerequisites", "AtLeastOne"], "UpdateIdentity") => {
                d.clauses.last_mut().unwrap().push(id().unwrap())
            }
            ([_, "Relationships", "BundledUpdates", ..], "UpdateIdentity") => {
                d.bundled.push(id().unwrap())
            }
            ([_, "Relationships", "SupersededUpdates", ..], "UpdateIdentity") => {
                d.superseded.push(id().unwrap())
            }
            ([_, "Files"], "File") => d.files += 1,
            _ => {}
        }
        if !empty {
            path.push(name);
        }
    }
    d
}

/// Every current revision of the store, by update id.
fn docs(dir: &Path) -> BTreeMap<String, Doc> {
    let s = Store::open_read_only(dir).unwrap();
    s.list_updates(&Default::default())
        .unwrap()
        .into_iter()
        .map(|u| {
            let d = parse_doc(&s.revision_xml(u.revision_id).unwrap(), u.declined);
            assert_eq!(d.id, u.id.to_ascii_lowercase());
            (d.id.clone(), d)
        })
        .collect()
}

/// What a client of the machine model ends with, from the XML:
/// `approved` are the updates approved for install for its group.
struct Oracle {
    cache: BTreeSet<String>,
    needed: BTreeSet<String>,
}

fn oracle(
    docs: &BTreeMap<String, Doc>,
    approved: &BTreeSet<String>,
    installed: &BTreeSet<String>,
    not_applicable: &BTreeSet<String>,
) -> Oracle {
    // Scope: not declined, not a driver, plus what those name.
    let mut scope: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = docs
        .values()
        .filter(|d| !d.declined && d.kind != "Driver")
        .map(|d| d.id.clone())
        .collect();
    while let Some(id) = stack.pop() {
        if !docs.contains_key(&id) || !scope.insert(id.clone()) {
            continue;
        }
        let d = &docs[&id];
        stack.extend(d.clauses.iter().flatten().cloned());
        stack.extend(d.bundled.iter().cloned());
    }
    let met = |d: &Doc, yes: &BTreeSet<String>| {
        d.clauses.iter().all(|c| c.iter().any(|a| yes.contains(a)))
    };
    // Fixpoint: the cache is what is deliverable with the installed set;
    // the installed set is what the machine evaluates installed in it.
    let mut evaluated: BTreeSet<String> = BTreeSet::new();
    loop {
        let cache: BTreeSet<String> = scope
            .iter()
            .filter(|id| met(&docs[*id], &evaluated))
            .cloned()
            .collect();
        let next: BTreeSet<String> = cache
            .iter()
            .filter(|id| {
                let d = &docs[*id];
                let own = match d.kind.as_str() {
                    "Category" | "Detectoid" => !not_applicable.contains(*id),
                    "Software" => installed.contains(*id),
                    _ => false,
                };
                own && met(d, &evaluated)
            })
            .cloned()
            .collect();
        if next == evaluated {
            let superseded: BTreeSet<&String> = cache
                .iter()
                .filter(|id| installed.contains(*id))
                .flat_map(|id| &docs[id].superseded)
                .collect();
            let action_bundle = |d: &Doc| !approved.contains(&d.id) && !d.explicitly_deployable;
            let needed = cache
                .iter()
                .filter(|id| {
                    let d = &docs[*id];
                    d.kind == "Software"
                        && !action_bundle(d)
                        && !installed.contains(*id)
                        && !not_applicable.contains(*id)
                        && !superseded.contains(id)
                })
                .cloned()
                .collect();
            return Oracle { cache, needed };
        }
        evaluated = next;
    }
}

fn cache_ids(w: &Wua) -> BTreeSet<String> {
    w.cache().values().map(|c| c.update_id.clone()).collect()
}

fn computer_status(dir: &Path, client_id: &str) -> BTreeMap<String, UpdateState> {
    let s = Store::open_read_only(dir).unwrap();
    let c = s
        .wusp_computer(client_id)
        .unwrap()
        .expect("the client is registered");
    s.wusp_status_of(&c.computer_id)
        .unwrap()
        .into_iter()
        .map(|(u, st)| (u.to_ascii_lowercase(), st))
        .collect()
}

/// A software update with its own prerequisites (`prereq`, bare) and a
/// category clause, explicitly deployable, with a file: non-leaf
/// software prerequisites, which the generator does not make.
fn chain_doc(id: &str, category: &str, prereq: Option<&str>, file: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pre = prereq
        .map(|p| format!("<upd:UpdateIdentity UpdateID=\"{p}\" />"))
        .unwrap_or_default();
    format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><upd:Properties UpdateType=\"Software\" ExplicitlyDeployable=\"true\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" CreationDate=\"2026-10-01T00:00:00.000Z\"></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>chain {id}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection><upd:Relationships><upd:Prerequisites>{pre}<upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{category}\" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships><upd:Files><upd:File Digest=\"{}\" DigestAlgorithm=\"SHA1\" FileName=\"chain-{id}.cab\" Size=\"{}\" Modified=\"2026-10-01T00:00:00Z\"><upd:AdditionalDigest Algorithm=\"SHA256\">{}</upd:AdditionalDigest></upd:File></upd:Files></upd:Update>",
        b64.encode(sha1::Sha1::digest(file)),
        file.len(),
        b64.encode(sha2::Sha256::digest(file))
    )
}

const CHAIN_A: &str = "0a11ce00-0000-4000-8000-00000000000a";
const CHAIN_B: &str = "0a11ce00-0000-4000-8000-00000000000b";

/// A store with a generated catalog (`updates`, `content` bytes, seed
/// 7) and the chain A ← B (B requires the software update A); the
/// content of A and B lies beside the documents.
fn catalog_store(updates: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = new_store("site", "autonomous");
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            updates,
            "--content-bytes",
            content,
            "--seed",
            "7",
        ],
    )
    .ok();
    let d = docs(&dir);
    let product = d
        .values()
        .find(|x| x.kind == "Category" && !x.clauses.is_empty())
        .expect("a product category")
        .id
        .clone();
    let chain = tmp.path().join("chain");
    let files = tmp.path().join("chain-content");
    std::fs::create_dir_all(&chain).unwrap();
    std::fs::create_dir_all(&files).unwrap();
    for (id, pre, seed) in [(CHAIN_A, None, 11), (CHAIN_B, Some(CHAIN_A), 12)] {
        let data = common::noise(2_500_000, seed);
        std::fs::write(
            chain.join(format!("{id}.xml")),
            chain_doc(id, &product, pre, &data),
        )
        .unwrap();
        std::fs::write(files.join(format!("chain-{id}.cab")), &data).unwrap();
    }
    gs(&dir, &["catalog", "add", p(&chain), "--content", p(&files)]).ok();
    (tmp, dir)
}

/// Bundles (not declined) whose members carry files, sorted.
fn bundles_with_files(d: &BTreeMap<String, Doc>) -> Vec<String> {
    d.values()
        .filter(|x| {
            !x.declined
                && !x.bundled.is_empty()
                && x.bundled
                    .iter()
                    .any(|m| d.get(m).is_some_and(|m| m.files > 0))
        })
        .map(|x| x.id.clone())
        .collect()
}

fn approve(dir: &Path, id: &str, deadline: Option<&str>) {
    let mut a = vec!["approve", id, "--group", "All Computers"];
    if let Some(dl) = deadline {
        a.extend(["--deadline", dl]);
    }
    gs(dir, &a).ok();
}

fn machine(n: u32) -> Machine {
    Machine::new(
        &format!("5eed0000-0000-4000-8000-{n:012}"),
        &format!("pc{n}.lab.invalid"),
    )
}

/// Over a generated catalog with bundles, detectoids (one false on this
/// machine), prerequisites (categories, and a software chain A ← B),
/// supersedence and declines, the client's cache and needed set equal
/// the oracle at every step: first scan, no-change rescan, install of the
/// approved updates (files downloaded in 1 MiB shuffled ranges, digests
/// checked), the rescan that brings B once A is installed, and B's
/// install. The store's status follows (183 → installed).
#[test]
fn a_simulated_client_ends_with_the_oracle_of_the_xml() {
    let (_tmp, dir) = catalog_store("160", "24M");
    let d = docs(&dir);
    // Declines: two bundles and a standalone leaf.
    let bundles = bundles_with_files(&d);
    assert!(bundles.len() >= 4, "{bundles:?}");
    let declined: Vec<String> = d
        .values()
        .filter(|x| !x.bundled.is_empty() && !bundles.contains(&x.id))
        .take(2)
        .map(|x| x.id.clone())
        .collect();
    for id in &declined {
        gs(&dir, &["decline", id]).ok();
    }
    let approved: BTreeSet<String> = bundles
        .iter()
        .take(3)
        .cloned()
        .chain([CHAIN_A.to_string()])
        .collect();
    for id in &approved {
        approve(&dir, id, Some("2027-03-01T12:00:00Z"));
    }
    let d = docs(&dir);
    assert!(d.values().any(|x| !x.superseded.is_empty()), "supersedence");
    let detectoids: Vec<&Doc> = d.values().filter(|x| x.kind == "Detectoid").collect();
    assert!(detectoids.len() > 1);
    // The detectoid the most updates require evaluates false here.
    let count = |id: &str| {
        d.values()
            .filter(|x| x.clauses.iter().any(|c| c.len() == 1 && c[0] == id))
            .count()
    };
    let off = detectoids
        .iter()
        .max_by_key(|x| (count(&x.id), x.id.clone()))
        .unwrap()
        .id
        .clone();
    assert!(count(&off) > 0);
    let srv = Served::start(&dir);
    let mut m = machine(1);
    m.not_applicable.insert(off.clone());
    let mut w = Wua::new(&srv.url, m, WuaOptions::default());

    let none = BTreeSet::new();
    let na: BTreeSet<String> = [off.clone()].into();
    let first = w.scan().expect("first scan");
    let want = oracle(&d, &approved, &none, &na);
    assert_eq!(cache_ids(&w), want.cache, "cache after the first scan");
    assert_eq!(
        w.needed().into_iter().collect::<BTreeSet<_>>(),
        want.needed,
        "needed after the first scan"
    );
    assert!(first.passes >= 3, "a category chain takes a pass per level");
    for id in &declined {
        assert!(!want.cache.contains(id), "declined {id} is out of scope");
    }
    assert!(!want.cache.contains(CHAIN_B), "B waits for A");
    assert!(want.cache.contains(CHAIN_A));
    // Every update requiring the false detectoid stays away.
    assert!(
        d.values()
            .filter(|x| x.kind == "Software" && x.clauses.iter().any(|c| c == &vec![off.clone()]))
            .all(|x| !want.cache.contains(&x.id))
    );

    // A rescan with nothing changed: nothing new, nothing changed.
    let again = w.scan().expect("rescan");
    assert_eq!((again.new, again.changed, again.out_of_scope), (0, 0, 0));
    assert_eq!(cache_ids(&w), want.cache);

    // Install what is approved: downloads, digests, events.
    let done = w.install().expect("install");
    let installed_ids: BTreeSet<String> = done.iter().map(|i| i.update_id.clone()).collect();
    let expect_install: BTreeSet<String> = want
        .needed
        .iter()
        .filter(|id| approved.contains(*id))
        .cloned()
        .collect();
    assert_eq!(installed_ids, expect_install);
    assert!(
        done.iter().all(|i| i.ok && i.files > 0 && i.bytes > 0),
        "{done:?}"
    );
    assert!(
        done.iter()
            .all(|i| i.deadline.as_deref() == Some("2027-03-01T12:00:00Z"))
    );
    assert!(
        w.stats().range_requests as usize > done.len(),
        "ranged pieces"
    );
    let mut installed: BTreeSet<String> = expect_install.clone();
    for id in &expect_install {
        installed.extend(d[id].bundled.iter().cloned());
    }
    assert_eq!(w.machine.installed, installed);
    let status = computer_status(&dir, &w.machine.client_id);
    for id in &expect_install {
        assert_eq!(status.get(id), Some(&UpdateState::Installed), "{id}");
    }
    // Updates the installed bundles supersede are no longer needed.
    // (B is not cached before the next scan.)
    let after: BTreeSet<String> = oracle(&d, &approved, &installed, &na)
        .needed
        .intersection(&cache_ids(&w))
        .cloned()
        .collect();
    assert_eq!(w.needed().into_iter().collect::<BTreeSet<_>>(), after);
    assert!(!after.is_empty());
    for id in &after {
        assert_eq!(status.get(id), Some(&UpdateState::Needed), "{id}");
    }

    // A is installed: the next scan brings B (its prerequisite is met).
    let third = w.scan().expect("scan after the install");
    let want = oracle(&d, &approved, &installed, &na);
    assert!(want.cache.contains(CHAIN_B));
    assert_eq!(cache_ids(&w), want.cache);
    assert_eq!(w.needed().into_iter().collect::<BTreeSet<_>>(), want.needed);
    assert!(third.new >= 1);
    approve(&dir, CHAIN_B, None);
    let fourth = w.scan().expect("scan after approving B");
    assert_eq!(
        (fourth.new, fourth.changed),
        (0, 1),
        "B's deployment changed"
    );
    let done = w.install().expect("install B");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].update_id, CHAIN_B);
    assert_eq!(
        computer_status(&dir, &w.machine.client_id).get(CHAIN_B),
        Some(&UpdateState::Installed)
    );
    let mut approved = approved;
    approved.insert(CHAIN_B.into());
    installed.insert(CHAIN_B.into());
    let want = oracle(&d, &approved, &installed, &na);
    assert_eq!(w.needed().into_iter().collect::<BTreeSet<_>>(), want.needed);
}

/// Approve → rescan (ChangedUpdates: Install) → install → 183 → the
/// store says installed, and `computers list` shows the machine; a
/// decline → the update leaves the client's scope on the next scan.
#[test]
fn approvals_reach_the_client_and_declines_take_updates_away() {
    let (_tmp, dir) = catalog_store("60", "8M");
    let srv = Served::start(&dir);
    let mut w = Wua::new(&srv.url, machine(2), WuaOptions::default());
    w.scan().expect("first scan");
    let d = docs(&dir);
    let target = bundles_with_files(&d)
        .into_iter()
        .find(|b| w.cached(b).is_some())
        .expect("a cached bundle with files");
    assert_eq!(
        w.cached(&target).unwrap().deployment.action,
        "PreDeploymentCheck",
        "not approved yet"
    );
    assert!(w.needed().contains(&target));
    w.report_status().expect("status report");
    assert_eq!(
        computer_status(&dir, &w.machine.client_id).get(&target),
        Some(&UpdateState::Needed)
    );
    assert!(w.install().expect("nothing approved").is_empty());

    approve(&dir, &target, Some("2027-02-01T08:00:00Z"));
    let r = w.scan().expect("rescan");
    assert_eq!((r.new, r.changed), (0, 1));
    let c = w.cached(&target).unwrap();
    assert_eq!(c.deployment.action, "Install");
    assert_eq!(
        c.deployment.deadline.as_deref(),
        Some("2027-02-01T08:00:00Z")
    );
    let done = w.install().expect("install");
    assert_eq!(done.len(), 1);
    assert!(done[0].ok && done[0].files > 0);
    assert_eq!(
        computer_status(&dir, &w.machine.client_id).get(&target),
        Some(&UpdateState::Installed)
    );
    let list = gs(&dir, &["computers", "list", "--json"]).ok().json();
    let rows = list.as_array().expect("rows");
    let row = rows
        .iter()
        .find(|r| r["name"] == "pc2.lab.invalid")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(row["arch"], "AMD64", "{row}");
    assert!(row["last_report"].is_string(), "{row}");

    // Decline another cached, reportable update: it leaves the scope.
    let gone = w
        .needed()
        .into_iter()
        .find(|u| {
            *u != target
                && d.values()
                    .all(|x| !x.clauses.iter().flatten().any(|c| c == u))
        })
        .expect("another needed update that nothing requires");
    let rev = w.cached(&gone).unwrap().rev_id;
    gs(&dir, &["decline", &gone]).ok();
    let r = w.scan().expect("scan after the decline");
    assert!(r.out_of_scope >= 1, "{r:?}");
    assert!(!w.cache().contains_key(&rev));
    assert!(!w.needed().contains(&gone));
}

/// HQ approves with a deadline → export → the site imports → a client
/// at the site scans, gets the update with Install and the deadline,
/// downloads it (digests checked), reports it installed; the site's store
/// says installed.
#[test]
fn across_the_gap_a_site_client_installs_what_hq_approved() {
    let lab = Lab::new(60, "8M");
    let d = docs(&lab.hq);
    let target = bundles_with_files(&d)
        .into_iter()
        .next()
        .expect("a bundle with files");
    approve(&lab.hq, &target, Some("2027-04-01T00:00:00Z"));
    let bundle = lab.export("b1", &[]);
    gs(&lab.plant, &["import", p(&bundle)]).ok();
    let srv = Served::start(&lab.plant);
    let mut w = Wua::new(&srv.url, machine(3), WuaOptions::default());
    w.scan().expect("scan at the site");
    let c = w
        .cached(&target)
        .expect("the approved update reached the client");
    assert_eq!(c.deployment.action, "Install");
    assert_eq!(
        c.deployment.deadline.as_deref(),
        Some("2027-04-01T00:00:00Z")
    );
    let done = w.install().expect("install at the site");
    let mine: Vec<_> = done.iter().filter(|i| i.update_id == target).collect();
    assert_eq!(mine.len(), 1, "{done:?}");
    assert!(mine[0].ok && mine[0].files > 0 && mine[0].bytes > 0);
    assert_eq!(
        computer_status(&lab.plant, &w.machine.client_id).get(&target),
        Some(&UpdateState::Installed)
    );
    // HQ's store knows nothing of the site's computers.
    assert!(
        Store::open_read_only(&lab.hq)
            .unwrap()
            .wusp_computer(&w.machine.client_id)
            .unwrap()
            .is_none()
    );
}

/// A server in this process (for options `serve` has no flag for).
fn serve_in_process(dir: &Path, cookie_secs: i64) -> String {
    let mut opts = gapsync::http::ServeOptions {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    opts.wusp.cookie_lifetime_secs = cookie_secs;
    let srv = gapsync::http::Server::bind(dir, opts).expect("bind");
    let url = format!("{}://{}", srv.scheme(), srv.local_addr().unwrap());
    std::thread::spawn(move || srv.run());
    url
}

/// CookieExpired → a new cookie, the scan goes on with nothing new;
/// ServerChanged (the store restored from an older copy: the cookie's
/// mark is ahead) and InvalidCookie (another store) → the handshake
/// again and RefreshCache; each time the client ends with the oracle of
/// the server it talks to.
#[test]
fn clients_recover_from_expired_cookies_and_changed_servers() {
    let (tmp, dir) = catalog_store("40", "0");
    let none = BTreeSet::new();
    // An expired cookie.
    let url = serve_in_process(&dir, 2);
    let mut w = Wua::new(&url, machine(4), WuaOptions::default());
    w.scan().expect("scan");
    let want = oracle(&docs(&dir), &none, &none, &none);
    assert_eq!(cache_ids(&w), want.cache);
    std::thread::sleep(Duration::from_millis(2_600));
    let r = w.scan().expect("scan with an expired cookie");
    assert_eq!(w.stats().recoveries.get("CookieExpired"), Some(&1));
    assert_eq!((r.new, r.out_of_scope), (0, 0));
    assert_eq!(cache_ids(&w), want.cache);

    // The store restored from an older copy: its journal is behind the
    // client's mark.
    let old = tmp.path().join("old");
    common::copy_tree(&dir, &old);
    gs(
        &dir,
        &[
            "catalog",
            "generate",
            "--updates",
            "20",
            "--content-bytes",
            "0",
            "--seed",
            "8",
        ],
    )
    .ok();
    let srv = Served::start(&dir);
    w.set_server(&srv.url);
    w.scan().expect("scan of the grown catalog");
    let grown = oracle(&docs(&dir), &none, &none, &none);
    assert_eq!(cache_ids(&w), grown.cache);
    assert!(grown.cache.len() > want.cache.len());
    let restored = Served::start(&old);
    w.set_server(&restored.url);
    w.scan().expect("scan of the restored store");
    assert_eq!(w.stats().recoveries.get("ServerChanged"), Some(&1));
    assert!(w.stats().refreshed > 0);
    assert_eq!(
        cache_ids(&w),
        oracle(&docs(&old), &none, &none, &none).cache
    );

    // Another store: its keys do not open the cookie.
    let (_t2, other) = catalog_store("30", "0");
    let srv2 = Served::start(&other);
    w.set_server(&srv2.url);
    w.scan().expect("scan of another store");
    assert_eq!(w.stats().recoveries.get("InvalidCookie"), Some(&1));
    assert_eq!(
        cache_ids(&w),
        oracle(&docs(&other), &none, &none, &none).cache
    );
    let again = w.scan().expect("rescan");
    assert_eq!((again.new, again.out_of_scope), (0, 0));
}

#[cfg(target_os = "linux")]
#[path = "../examples/wua_bench/bench.rs"]
mod bench;

/// The scan benchmark (`examples/wua_bench`, numbers in
/// docs/performance.md) in small: every client's first scan and no-change
/// rescan succeed, the rescans get nothing new in one software and one
/// driver pass, every client's scope is the same in both catalogs, and
/// the table is printed. Asserts behaviours, never a time.
#[cfg(target_os = "linux")]
#[test]
fn scan_benchmark_smoke_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = bench::Config {
        gapsync: common::bin().into(),
        work: tmp.path().join("bench"),
        catalogs: vec![120, 600],
        applicable: 12,
        clients: 8,
        concurrent: 3,
    };
    let rows = bench::run(&cfg).unwrap_or_else(|e| panic!("bench: {e}"));
    let table = bench::table(&cfg, &rows);
    eprintln!("{table}");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(r.first.errors.is_empty(), "{:?}", r.first.errors);
        assert!(r.rescan.errors.is_empty(), "{:?}", r.rescan.errors);
        assert_eq!((r.first.scans, r.rescan.scans), (8, 8));
        assert_eq!(r.rescan.new, 0, "a no-change rescan gets nothing new");
        assert_eq!(r.rescan.requests, 16, "one software and one driver pass");
        assert_eq!(r.first.new, 8 * r.scope);
        assert!(r.peak_rss_kib > 0);
    }
    assert_eq!(rows[0].scope, rows[1].scope, "the same scope in both");
    assert!(
        rows[0].scope > 12,
        "applicable updates, categories, detectoids"
    );
    for needle in [
        "| catalog |",
        "no-change rescan CPU, 600 / 120 updates",
        "peak RSS",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
}

/// Regression: clients registering while others scan made the server
/// answer RegisterComputer with InternalServerError ("database is
/// locked": a registration's transaction read before another connection
/// wrote). Many first scans at once now need no retry at all.
#[test]
fn concurrent_first_scans_register_without_server_errors() {
    let (_tmp, dir) = catalog_store("30", "0");
    let srv = Served::start(&dir);
    let clients: Vec<Wua> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let url = srv.url.clone();
                s.spawn(move || {
                    (0..5)
                        .map(|k| {
                            let mut w =
                                Wua::new(&url, machine(100 + t * 10 + k), WuaOptions::default());
                            w.scan().expect("first scan");
                            w
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert_eq!(clients.len(), 30);
    let retries: u64 = clients.iter().map(|w| w.stats().retries).sum();
    assert_eq!(retries, 0, "operations retried after server errors");
    let s = Store::open_read_only(&dir).unwrap();
    for w in &clients {
        assert!(s.wusp_computer(&w.machine.client_id).unwrap().is_some());
    }
}
