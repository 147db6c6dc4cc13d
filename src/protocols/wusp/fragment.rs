//! The MS-WUSP metadata fragments (MS-WUSP 3.1.1.1), cut from a stored
//! update document exactly as Windows WSUS cuts them: the core fragment
//! (SyncUpdates `Xml`, GetExtendedUpdateInfo `Core`), the extended one,
//! one per language of `LocalizedProperties`, and one per `EulaFile`.
//!
//! Rules (each checked byte for byte against the fragments a real WSUS
//! sent for the same documents: `tests` below):
//! - Copy transform: element names by namespace URI: BaseApplicabilityRules
//!   → `b.`, MsiApplicabilityRules → `m.`, WindowsDriver handler → `d.`
//!   prefixed to the local name; every other namespace → the local name.
//!   `xmlns:p` declarations are dropped, a default `xmlns` survives unless
//!   it names an msus namespace; prefixed attributes lose their prefix
//!   (`xsi:type` → `type`); attribute values and text are copied byte for
//!   byte; `<x />` stays empty, `<x></x>` stays open/closed; comments,
//!   processing instructions and white space between elements are dropped.
//! - Core: `UpdateIdentity`; `Properties` re-written empty with only
//!   `UpdateType, ExplicitlyDeployable, AutoSelectOnWebSites, OSUpgrade,
//!   EulaID`, in that order, each when present and not `false`;
//!   `Relationships`; `ApplicabilityRules`.
//! - Extended: `Properties` renamed `ExtendedProperties` without the core
//!   and publishing attributes (and `PerUser`), with its children; `Files`;
//!   `HandlerSpecificData`.
//! - The result is not well-formed XML (several roots, prefixes in
//!   values): it is only ever sent as escaped text.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

/// Why a document cannot be cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("update document: {0}")]
pub struct CutError(String);

#[derive(Debug, Clone)]
enum Node {
    Element(El),
    Text(String),
}

#[derive(Debug, Clone)]
struct El {
    /// The local name.
    local: String,
    /// The output name (`b.`/`m.`/`d.` + local, or local).
    out: String,
    /// Attributes as written: (key, raw value), xmlns:p removed.
    attrs: Vec<(String, String)>,
    empty: bool,
    children: Vec<Node>,
}

impl El {
    fn child(&self, local: &str) -> Option<&El> {
        self.children.iter().find_map(|n| match n {
            Node::Element(e) if e.local == local => Some(e),
            _ => None,
        })
    }
    fn elements(&self) -> impl Iterator<Item = &El> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// The text content (raw, as written in the source).
    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }
}

const MSUS_PREFIX: &str = "http://schemas.microsoft.com/msus/";

/// Rule: the short element prefixes of MS-WUSP 3.1.1.1.
fn prefix_of(ns: &str) -> &'static str {
    match ns {
        "http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules" => "b.",
        "http://schemas.microsoft.com/msus/2002/12/MsiApplicabilityRules" => "m.",
        "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver" => "d.",
        _ => "",
    }
}

/// A parsed update document, ready to cut.
#[derive(Debug, Clone)]
pub struct Document {
    root: El,
}

/// Most nested elements in a document that is cut.
const MAX_DEPTH: usize = 256;

impl Document {
    /// Reads a stored update document (UTF-8 or UTF-16, as stored).
    pub fn parse(bytes: &[u8]) -> Result<Document, CutError> {
        let text =
            crate::model::metadata::decode_text(bytes).map_err(|e| CutError(e.to_string()))?;
        Self::parse_str(&text)
    }

    pub fn parse_str(text: &str) -> Result<Document, CutError> {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let mut reader = quick_xml::NsReader::from_str(text);
        let mut stack: Vec<El> = Vec::new();
        let mut root: Option<El> = None;
        let bad = |pos: u64, m: String| CutError(format!("malformed XML at byte {pos}: {m}"));
        loop {
            let event = reader
                .read_event()
                .map_err(|e| bad(reader.buffer_position(), e.to_string()))?;
            let pos = reader.buffer_position();
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(bad(pos, "elements nest too deep".into()));
                    }
                    let (ns, local) = reader.resolver().resolve_element(e.name());
                    let local = local.into_inner().to_string();
                    let prefix = match ns {
                        ResolveResult::Bound(Namespace(n)) => prefix_of(n),
                        ResolveResult::Unbound => "",
                        ResolveResult::Unknown(p) => {
                            return Err(bad(pos, format!("undeclared namespace prefix {p:?}")));
                        }
                    };
                    let mut attrs = Vec::new();
                    for a in e.attributes() {
                        let a = a.map_err(|err| bad(pos, err.to_string()))?;
                        let key = a.key.as_ref().to_string();
                        let value = a.value.to_string();
                        if key.starts_with("xmlns:") {
                            continue;
                        }
                        if key == "xmlns" {
                            if value.starts_with(MSUS_PREFIX) {
                                continue;
                            }
                            attrs.push((key, value));
                            continue;
                        }
                        let key = match key.rsplit_once(':') {
                            Some((_, l)) => l.to_string(),
                            None => key,
                        };
                        attrs.push((key, value));
                    }
                    let el = El {
                        out: format!("{prefix}{local}"),
                        local,
                        attrs,
                        empty: matches!(event, Event::Empty(_)),
                        children: Vec::new(),
                    };
                    if el.empty {
                        match stack.last_mut() {
                            Some(p) => p.children.push(Node::Element(el)),
                            None if root.is_none() => root = Some(el),
                            None => return Err(bad(pos, "two document elements".into())),
                        }
                    } else {
                        stack.push(el);
                    }
                }
                Event::End(_) => {
                    let done = stack
                        .pop()
                        .ok_or_else(|| bad(pos, "end tag without start".into()))?;
                    match stack.last_mut() {
                        Some(p) => p.children.push(Node::Element(done)),
                        None if root.is_none() => root = Some(done),
                        None => return Err(bad(pos, "two document elements".into())),
                    }
                }
                Event::Text(ref t) => {
                    if let Some(top) = stack.last_mut() {
                        top.children.push(Node::Text(t[..].to_string()));
                    }
                }
                Event::CData(ref t) => {
                    if let Some(top) = stack.last_mut() {
                        top.children
                            .push(Node::Text(format!("<![CDATA[{}]]>", &t[..])));
                    }
                }
                Event::GeneralRef(ref r) => {
                    if let Some(top) = stack.last_mut() {
                        top.children.push(Node::Text(format!("&{};", &r[..])));
                    }
                }
                Event::DocType(_) => return Err(CutError("DTDs are refused".into())),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(CutError("the document is truncated".into()));
        }
        let root = root.ok_or_else(|| CutError("no document element".into()))?;
        if root.local != "Update" {
            return Err(CutError(format!(
                "the document element is {}, not Update",
                root.local
            )));
        }
        Ok(Document { root })
    }

    fn properties(&self) -> Option<&El> {
        self.root.child("Properties")
    }

    /// `Properties/@ExplicitlyDeployable` is `true` (absent: false).
    pub fn explicitly_deployable(&self) -> bool {
        self.properties()
            .and_then(|p| p.attr("ExplicitlyDeployable"))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
    }

    /// The core fragment.
    pub fn core(&self) -> String {
        let mut out = String::new();
        if let Some(id) = self.root.child("UpdateIdentity") {
            write_el(&mut out, id);
        }
        out.push_str("<Properties");
        if let Some(p) = self.properties() {
            for key in CORE_ATTRS {
                if let Some(v) = p.attr(key).filter(|v| !v.eq_ignore_ascii_case("false")) {
                    let _ = write!(out, " {key}=\"{v}\"");
                }
            }
        }
        out.push_str(" />");
        for name in ["Relationships", "ApplicabilityRules"] {
            if let Some(e) = self.root.child(name) {
                write_el(&mut out, e);
            }
        }
        out
    }

    /// The extended fragment.
    pub fn extended(&self) -> String {
        let mut out = String::from("<ExtendedProperties");
        let empty = El {
            local: String::new(),
            out: String::new(),
            attrs: Vec::new(),
            empty: true,
            children: Vec::new(),
        };
        let p = self.properties().unwrap_or(&empty);
        for (k, v) in &p.attrs {
            if !EXTENDED_DROP.contains(&k.as_str()) {
                let _ = write!(out, " {k}=\"{v}\"");
            }
        }
        if p.elements().next().is_none() {
            out.push_str(" />");
        } else {
            out.push('>');
            write_children(&mut out, p);
            out.push_str("</ExtendedProperties>");
        }
        for name in ["Files", "HandlerSpecificData"] {
            if let Some(e) = self.root.child(name) {
                write_el(&mut out, e);
            }
        }
        out
    }

    /// The languages of the document's `LocalizedProperties`, in order.
    pub fn languages(&self) -> Vec<String> {
        self.localized_all()
            .filter_map(|lp| lp.child("Language").map(|l| l.text().trim().to_string()))
            .collect()
    }

    fn localized_all(&self) -> impl Iterator<Item = &El> {
        self.root
            .child("LocalizedPropertiesCollection")
            .into_iter()
            .flat_map(|c| c.elements().filter(|e| e.local == "LocalizedProperties"))
    }

    /// The `LocalizedProperties` fragment of `language` (compared without
    /// regard to case).
    pub fn localized(&self, language: &str) -> Option<String> {
        let lp = self.localized_all().find(|lp| {
            lp.child("Language")
                .is_some_and(|l| l.text().trim().eq_ignore_ascii_case(language))
        })?;
        let mut out = String::new();
        write_el(&mut out, lp);
        Some(out)
    }

    /// The `EulaFile` fragments whose `Language` is `language`.
    pub fn eulas(&self, language: &str) -> Vec<String> {
        self.root
            .child("LocalizedPropertiesCollection")
            .into_iter()
            .flat_map(|c| c.elements().filter(|e| e.local == "EulaFile"))
            .filter(|e| {
                e.attr("Language")
                    .is_some_and(|l| l.trim().eq_ignore_ascii_case(language))
            })
            .map(|e| {
                let mut out = String::new();
                write_el(&mut out, e);
                out
            })
            .collect()
    }

    /// `Properties/@DefaultPropertiesLanguage`.
    pub fn default_language(&self) -> Option<String> {
        self.properties()
            .and_then(|p| p.attr("DefaultPropertiesLanguage"))
            .map(|s| s.trim().to_string())
    }
}

/// Core `Properties` attributes, in the order they are written.
const CORE_ATTRS: [&str; 5] = [
    "UpdateType",
    "ExplicitlyDeployable",
    "AutoSelectOnWebSites",
    "OSUpgrade",
    "EulaID",
];

/// `Properties` attributes the extended fragment leaves out.
const EXTENDED_DROP: [&str; 12] = [
    "UpdateType",
    "ExplicitlyDeployable",
    "AutoSelectOnWebSites",
    "EulaID",
    "PublicationState",
    "PublisherID",
    "CreationDate",
    "IsPublic",
    "LegacyName",
    "DetectoidType",
    "OSUpgrade",
    "PerUser",
];

fn write_el(out: &mut String, e: &El) {
    out.push('<');
    out.push_str(&e.out);
    for (k, v) in &e.attrs {
        let _ = write!(out, " {k}=\"{v}\"");
    }
    if e.empty {
        out.push_str(" />");
        return;
    }
    out.push('>');
    write_children(out, e);
    let _ = write!(out, "</{}>", e.out);
}

/// Children of `e`; white space between elements is dropped.
fn write_children(out: &mut String, e: &El) {
    let has_elements = e.elements().next().is_some();
    for n in &e.children {
        match n {
            Node::Element(c) => write_el(out, c),
            Node::Text(t) if has_elements && t.trim().is_empty() => {}
            Node::Text(t) => out.push_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    const CWS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";

    fn captures() -> PathBuf {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/wsus-captures");
        assert!(
            p.is_dir(),
            "shared reference captures missing at {}",
            p.display()
        );
        p
    }

    /// (update id lower, revision, kind) → fragment, from the captured
    /// answers of the native client.
    fn captured() -> HashMap<(String, String, &'static str), String> {
        use crate::soap::{Envelope, Limits};
        let mut bodies = Vec::new();
        for dir in ["scan", "flow"] {
            let d = captures().join("wsus-m0-native").join(dir);
            let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let b = e.path().join("response.body");
                if b.is_file() {
                    bodies.push(std::fs::read(b).unwrap());
                }
            }
        }
        let mut rev2id = HashMap::new();
        let mut out = HashMap::new();
        let envs: Vec<_> = bodies
            .iter()
            .map(|b| Envelope::read(b, &Limits::ANSWER).unwrap())
            .collect();
        fn walk<'a>(
            e: &'a crate::soap::Element,
            name: &str,
            out: &mut Vec<&'a crate::soap::Element>,
        ) {
            for c in e.children() {
                if c.is(CWS, name) {
                    out.push(c);
                }
                walk(c, name, out);
            }
        }
        for env in &envs {
            let mut infos = Vec::new();
            walk(&env.body, "UpdateInfo", &mut infos);
            for u in infos {
                let x = u.text_of("Xml").unwrap().to_string();
                let at = x.find("UpdateID=\"").unwrap() + 10;
                let uid = x[at..at + 36].to_ascii_lowercase();
                let r = x.find("RevisionNumber=\"").unwrap() + 16;
                let rev: String = x[r..].chars().take_while(char::is_ascii_digit).collect();
                rev2id.insert(
                    u.child_text("ID").unwrap().to_string(),
                    (uid.clone(), rev.clone()),
                );
                out.insert((uid, rev, "core"), x);
            }
        }
        for env in &envs {
            let mut ups = Vec::new();
            walk(&env.body, "Update", &mut ups);
            for u in ups {
                let x = u.text_of("Xml").unwrap().to_string();
                let kind = if x.starts_with("<ExtendedProperties") {
                    "extended"
                } else {
                    "localized"
                };
                if let Some((uid, rev)) = rev2id.get(u.child_text("ID").unwrap()) {
                    out.insert((uid.clone(), rev.clone(), kind), x);
                }
            }
        }
        out
    }

    /// The 27 fragments (core, extended, `en` localized) of the 9 captured
    /// documents equal what the real WSUS sent, byte for byte (the
    /// capture's `LinkId` values were redacted: compared modulo that).
    #[test]
    fn fragments_equal_the_captured_ones_byte_for_byte() {
        let want = captured();
        let docs = captures().join("wsus-m0-wsusss/docs");
        let mut files: Vec<_> = std::fs::read_dir(&docs).unwrap().flatten().collect();
        files.sort_by_key(|e| e.path());
        let mut compared = 0;
        let mut diffs = Vec::new();
        for f in files {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".xml") else {
                continue;
            };
            let (uid, rev) = stem.rsplit_once("-r").unwrap();
            let doc = Document::parse(&std::fs::read(f.path()).unwrap()).unwrap();
            let mut localized = doc.localized("en").unwrap();
            while let Some(i) = localized.find("LinkId=") {
                let end = localized[i + 7..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(localized.len(), |e| i + 7 + e);
                if end == i + 7 {
                    break;
                }
                localized.replace_range(i + 7..end, "REDACTED");
            }
            for (kind, got) in [
                ("core", doc.core()),
                ("extended", doc.extended()),
                ("localized", localized),
            ] {
                let key = (uid.to_string(), rev.to_string(), kind);
                let w = want
                    .get(&key)
                    .unwrap_or_else(|| panic!("no captured {key:?}"));
                compared += 1;
                if *w != got {
                    diffs.push(format!("{key:?}\n want {w}\n got  {got}"));
                }
            }
        }
        assert_eq!(compared, 27);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }

    #[test]
    fn copy_transform_rules() {
        let doc = Document::parse_str(
            "<?xml version=\"1.0\"?><u:Update xmlns:u=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
             xmlns:b=\"http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules\">\n  \
             <u:UpdateIdentity UpdateID=\"x\" RevisionNumber=\"1\"/>\n  \
             <u:Properties UpdateType=\"Software\" AutoSelectOnWebSites=\"false\" EulaID=\"e\" ExplicitlyDeployable=\"true\" PerUser=\"true\" Handler=\"h\"><!-- c --><u:Language>en</u:Language></u:Properties>\n  \
             <u:ApplicabilityRules><u:IsInstalled><b:RegKeyExists Key=\"a&amp;b\" xmlns:q=\"urn:q\"></b:RegKeyExists></u:IsInstalled>\
             <u:Metadata><asm xmlns=\"urn:asm\" x:t=\"v\" xmlns:x=\"urn:x\">t &lt; u</asm></u:Metadata></u:ApplicabilityRules></u:Update>",
        )
        .unwrap();
        assert!(doc.explicitly_deployable());
        assert_eq!(
            doc.core(),
            "<UpdateIdentity UpdateID=\"x\" RevisionNumber=\"1\" /><Properties UpdateType=\"Software\" ExplicitlyDeployable=\"true\" EulaID=\"e\" />\
             <ApplicabilityRules><IsInstalled><b.RegKeyExists Key=\"a&amp;b\"></b.RegKeyExists></IsInstalled>\
             <Metadata><asm xmlns=\"urn:asm\" t=\"v\">t &lt; u</asm></Metadata></ApplicabilityRules>"
        );
        assert_eq!(
            doc.extended(),
            "<ExtendedProperties Handler=\"h\"><Language>en</Language></ExtendedProperties>"
        );
        assert_eq!(doc.localized("en"), None);
        for bad in ["", "<a/>", "<u:Update xmlns:u=\"urn:u\">", "<x:Update/>"] {
            assert!(Document::parse_str(bad).is_err(), "{bad:?}");
        }
    }
}
