//! The element tree of a SOAP message, its bounded reader, and the text
//! writer.
//!
//! Rules (each a function below):
//! - A message is UTF-8, or UTF-16 as `metadata::decode_text` accepts; a
//!   byte-order mark is dropped.
//! - DTDs (and so entity declarations) are refused; only the five XML
//!   entities and character references are resolved.
//! - Size, nesting depth and element count are bounded by [`Limits`],
//!   chosen per direction: [`Limits::REQUEST`] for what a server reads
//!   from any client, [`Limits::ANSWER`] for what the downstream client
//!   reads from its upstream (a real revision list holds hundreds of
//!   thousands of elements).
//! - XML 1.0 characters only: the layer neither writes nor reads the
//!   characters XML 1.0 forbids (U+0000-U+0008, U+000B, U+000C,
//!   U+000E-U+001F, U+FFFE, U+FFFF). [`escape`] drops them (stored text
//!   that holds one is still answered, without it); the reader refuses a
//!   message that holds one, literally or as a character reference.
//! - Attributes: `xsi:nil` is read into [`Element::is_nil`]; attributes
//!   without a namespace prefix are kept as read ([`Element::attr`]: the
//!   MS-WSUSSS rollup messages carry their fields in attributes); other
//!   namespaced attributes are dropped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

use super::XSI_NS;

/// Bounds on one message read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in bytes as received.
    pub max_bytes: usize,
    /// Deepest element nesting (the envelope is depth 1).
    pub max_depth: usize,
    /// Most elements in the message.
    pub max_elements: usize,
}

impl Limits {
    /// A request a server reads from any client: 4 MiB, 64 deep, 500,000
    /// elements (a GetUpdateData request of 100 revisions has about 400).
    /// The HTTP server replaces `max_bytes` with its `--max-body`.
    pub const REQUEST: Limits = Limits {
        max_bytes: 4 << 20,
        max_depth: 64,
        max_elements: 500_000,
    };
    /// An answer the downstream client reads from its upstream: 128 MiB
    /// (a GetUpdateData batch of 100 large documents stays well below),
    /// 64 deep, 4 Mi elements (a revision list that fills 128 MiB holds
    /// about 1 M revisions of 3 elements each).
    pub const ANSWER: Limits = Limits {
        max_bytes: 128 << 20,
        max_depth: 64,
        max_elements: 4 << 20,
    };
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the message is {size} bytes, more than {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("text encoding: {0}")]
    Encoding(String),
    #[error("DTDs are refused in SOAP messages")]
    Dtd,
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("malformed XML at byte {position}: character U+{code:04X} is not allowed in XML 1.0")]
    ForbiddenCharacter { position: u64, code: u32 },
    #[error("elements nest deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("the message ends before its elements are closed (truncated?)")]
    Truncated,
    #[error("the message holds no element")]
    Empty,
}

/// One element: namespace, local name, its text (concatenated, untrimmed,
/// line ends normalized as XML 1.0 says), whether it is `xsi:nil`, its
/// unprefixed attributes (values normalized as XML 1.0 says), and its
/// child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    ns: Option<Arc<str>>,
    name: Arc<str>,
    text: String,
    nil: bool,
    attrs: Box<[(Arc<str>, String)]>,
    children: Vec<Element>,
}

impl Element {
    /// An element of namespace `ns` without text or children (for tests
    /// and writers of trees).
    pub fn new(ns: Option<&str>, name: &str) -> Element {
        Element {
            ns: ns.map(Arc::from),
            name: Arc::from(name),
            ..Element::default()
        }
    }
    pub fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// True when the element has this namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns() == Some(ns) && self.name() == name
    }
    /// `{namespace}local`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{{{}}}{}", self.ns().unwrap_or(""), self.name())
    }
    /// The text as read (untrimmed).
    pub fn text(&self) -> &str {
        &self.text
    }
    /// Whether the element carries `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.nil
    }
    /// The value of the unprefixed attribute `name`, as read.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }
    /// No child elements and no text but white space (a nil or empty
    /// item of a list).
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.text.trim().is_empty()
    }
    pub fn children(&self) -> &[Element] {
        &self.children
    }
    pub fn into_children(self) -> Vec<Element> {
        self.children
    }
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name() == name)
    }
    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name() == name)
    }
    /// The text of the first child with this local name, as read.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(Element::text)
    }
    /// The trimmed text of the first child with this local name; `None`
    /// when the child is absent or `xsi:nil`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).filter(|c| !c.nil).map(|c| c.text.trim())
    }
    /// A descendant (depth first) with this local name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.name() == name {
                return Some(c);
            }
            if let Some(f) = c.find(name) {
                return Some(f);
            }
        }
        None
    }
}

/// Rule: XML 1.0 `Char` (2.2): tab, LF, CR, U+0020-U+D7FF,
/// U+E000-U+FFFD, U+10000-U+10FFFF (Rust strings hold no surrogates).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// The first character of `text` that XML 1.0 forbids, with its byte
/// offset. Forbidden characters are single ASCII control bytes in UTF-8,
/// or U+FFFE/U+FFFF (EF BF BE/BF).
fn forbidden_char(text: &str) -> Option<(usize, u32)> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            0x00..=0x08 | 0x0B | 0x0C | 0x0E..=0x1F => return Some((i, u32::from(b[i]))),
            0xEF if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) => {
                return Some((i, 0xFFFE + u32::from(b[i + 2] - 0xBE)));
            }
            _ => i += 1,
        }
    }
    None
}

/// Names and namespaces of one message, shared between its elements.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(s.to_string(), a.clone());
        a
    }
}

/// Reads a whole XML document (UTF-8, or UTF-16 with a byte-order mark or
/// starting with `<`) within `limits` and returns its document element.
pub fn parse_document(bytes: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    if bytes.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = crate::model::metadata::decode_text(bytes)
        .map_err(|e| XmlError::Encoding(e.to_string()))?;
    parse_str(&text, limits)
}

/// [`parse_document`] for text that is already decoded.
pub fn parse_str(text: &str, limits: &Limits) -> Result<Element, XmlError> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if let Some((at, code)) = forbidden_char(text) {
        return Err(XmlError::ForbiddenCharacter {
            position: at as u64,
            code,
        });
    }
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut xml_version = XmlVersion::Implicit1_0;
    let mut names = Names::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let malformed = |position: u64, message: String| XmlError::Malformed { position, message };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(reader.buffer_position(), e.to_string()))?;
        let pos = reader.buffer_position();
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Decl(ref d) => {
                xml_version = d.xml_version().map_err(|e| malformed(pos, e.to_string()))?;
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(malformed(pos, "content after the document element".into()));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let ns = match ns {
                    ResolveResult::Bound(Namespace(n)) => Some(names.get(n)),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(p) => {
                        return Err(malformed(pos, format!("undeclared namespace prefix {p:?}")));
                    }
                };
                let mut nil = false;
                let mut attrs: Vec<(Arc<str>, String)> = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|err| malformed(pos, err.to_string()))?;
                    if a.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
                    let local = alocal.into_inner();
                    let is_nil = local == "nil"
                        && matches!(ans, ResolveResult::Bound(Namespace(n)) if n == XSI_NS);
                    let plain = matches!(ans, ResolveResult::Unbound);
                    if !is_nil && !plain {
                        continue;
                    }
                    let v = a
                        .normalized_value(xml_version)
                        .map_err(|err| malformed(pos, err.to_string()))?;
                    if let Some(c) = v.chars().find(|&c| !is_xml_char(c)) {
                        return Err(XmlError::ForbiddenCharacter {
                            position: pos,
                            code: u32::from(c),
                        });
                    }
                    if is_nil {
                        nil = matches!(v.trim(), "true" | "1");
                    } else {
                        let name = names.get(local);
                        if attrs.iter().any(|(k, _)| *k == name) {
                            return Err(malformed(pos, format!("attribute {name} given twice")));
                        }
                        attrs.push((name, v.into_owned()));
                    }
                }
                let element = Element {
                    ns,
                    name: names.get(local.into_inner()),
                    text: String::new(),
                    nil,
                    attrs: attrs.into_boxed_slice(),
                    children: Vec::new(),
                };
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| malformed(pos, "end tag without a start tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(ref t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(malformed(pos, "text outside the document element".into())),
                }
            }
            Event::CData(ref t) => {
                let Some(top) = stack.last_mut() else {
                    return Err(malformed(pos, "CDATA outside the document element".into()));
                };
                top.text.push_str(&t.xml10_content());
            }
            Event::GeneralRef(ref r) => {
                let Some(top) = stack.last_mut() else {
                    return Err(malformed(
                        pos,
                        "a reference outside the document element".into(),
                    ));
                };
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => top.text.push(c),
                        Ok(Some(c)) => {
                            return Err(XmlError::ForbiddenCharacter {
                                position: pos,
                                code: u32::from(c),
                            });
                        }
                        _ => {
                            return Err(malformed(
                                pos,
                                format!("bad character reference &{};", &**r),
                            ));
                        }
                    }
                } else {
                    let Some(v) = quick_xml::escape::resolve_xml_entity(r) else {
                        return Err(malformed(pos, format!("undefined entity &{};", &**r)));
                    };
                    top.text.push_str(v);
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Truncated);
    }
    root.ok_or(XmlError::Empty)
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Escapes text for element content: `&`, `<`, `>` (as .NET and so Windows
/// WSUS write them; quotes stay as they are in content), and CR as
/// `&#xD;`, so no parser's line-end normalization alters the text (update
/// documents travel verbatim). Characters XML 1.0 forbids are dropped.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '\r') || !is_xml_char(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for an attribute value in double quotes: also `"`, and tab
/// and LF as references (attribute values are normalized otherwise).
pub fn escape_attribute(s: &str) -> Cow<'_, str> {
    let e = escape(s);
    if !e.contains(['"', '\t', '\n']) {
        return e;
    }
    Cow::Owned(
        e.replace('"', "&quot;")
            .replace('\t', "&#x9;")
            .replace('\n', "&#xA;"),
    )
}

/// A writer for the elements of a message body: the operation element
/// with its namespace as default namespace, and unqualified children
/// below it (the shape .NET web services, and so Windows WSUS, write).
#[derive(Debug, Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::default()
    }
    /// `<name xmlns="ns">`.
    pub fn start_ns(&mut self, name: &str, ns: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} xmlns=\"{}\">", escape_attribute(ns));
        self
    }
    /// `<name xmlns="ns" />`.
    pub fn empty_ns(&mut self, name: &str, ns: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} xmlns=\"{}\" />", escape_attribute(ns));
        self
    }
    /// `<name a="v" ...>` (values escaped).
    pub fn start_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open_attrs(name, attrs);
        self.buf.push('>');
        self
    }
    /// `<name a="v" ... />` (values escaped).
    pub fn empty_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open_attrs(name, attrs);
        self.buf.push_str(" />");
        self
    }
    fn open_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let _ = write!(self.buf, "<{name}");
        for (k, v) in attrs {
            let _ = write!(self.buf, " {k}=\"{}\"", escape_attribute(v));
        }
    }
    /// `<name>`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>");
        self
    }
    /// `</name>`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "</{name}>");
        self
    }
    /// `<name>text</name>` (escaped).
    pub fn elem(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>{}</{name}>", escape(text));
        self
    }
    /// `<name>text</name>` when `text` is given; nothing otherwise.
    pub fn opt_elem(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.elem(name, t);
        }
        self
    }
    /// `<name>true</name>` or `<name>false</name>`.
    pub fn bool_elem(&mut self, name: &str, value: bool) -> &mut Self {
        self.elem(name, super::xsd::format_bool(value))
    }
    /// `<name />`.
    pub fn empty(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} />");
        self
    }
    /// `<name />` when `items` is empty, else `<name>` ... `</name>` around
    /// what `each` writes for every item.
    pub fn list<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return self.empty(name);
        }
        self.start(name);
        for item in items {
            each(self, item);
        }
        self.end(name)
    }
    pub fn as_str(&self) -> &str {
        &self.buf
    }
    pub fn into_string(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Element, XmlError> {
        parse_str(s, &Limits::REQUEST)
    }

    #[test]
    fn reads_a_tree_with_namespaces_text_and_nil() {
        let e = parse(
            "<?xml version=\"1.0\"?><a xmlns=\"urn:x\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <b> t &amp; &#x41;<![CDATA[<c>]]></b><n i:nil=\"true\"/><b/></a>",
        )
        .unwrap();
        assert!(e.is("urn:x", "a"));
        assert_eq!(e.children().len(), 3);
        assert_eq!(e.text_of("b"), Some(" t & A<c>"));
        assert_eq!(e.child_text("b"), Some("t & A<c>"));
        assert!(e.child("n").unwrap().is_nil());
        assert_eq!(e.child_text("n"), None);
        assert_eq!(e.children_named("b").count(), 2);
        assert_eq!(e.child("b").unwrap().ns(), Some("urn:x"));
        assert_eq!(e.find("n").map(Element::name), Some("n"));
    }

    #[test]
    fn keeps_unprefixed_attributes_and_writes_them_back() {
        let e = parse(
            "<a xmlns=\"urn:x\" xmlns:p=\"urn:p\" Id=\"1 &amp; &#x41;\" p:Other=\"no\" Tab=\"a&#9;b\"><b Id='2'/></a>",
        )
        .unwrap();
        assert_eq!(e.attr("Id"), Some("1 & A"));
        assert_eq!(e.attr("Other"), None, "namespaced attributes are dropped");
        assert_eq!(
            e.attr("xmlns"),
            None,
            "namespace declarations are not attributes"
        );
        assert_eq!(e.attr("Tab"), Some("a\tb"));
        assert_eq!(e.child("b").unwrap().attr("Id"), Some("2"));
        assert!(matches!(
            parse("<a Id=\"1\" Id=\"2\"/>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse("<a Id=\"&#1;\"/>"),
            Err(XmlError::ForbiddenCharacter { code: 1, .. }) | Err(XmlError::Malformed { .. })
        ));
        let mut w = XmlWriter::new();
        w.start_attrs("r", &[("V", "x\"<&\ty")])
            .empty_attrs("c", &[("A", "1"), ("B", "")])
            .end("r");
        let back = parse(w.as_str()).unwrap();
        assert_eq!(back.attr("V"), Some("x\"<&\ty"));
        assert_eq!(back.child("c").unwrap().attr("B"), Some(""));
    }

    #[test]
    fn refuses_bad_documents_with_the_reason() {
        for (doc, want) in [
            ("", XmlError::Empty),
            ("<a>", XmlError::Truncated),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", XmlError::Dtd),
        ] {
            assert_eq!(parse(doc).unwrap_err(), want, "{doc:?}");
        }
        for doc in [
            "<a>&foo;</a>",
            "<x:a/>",
            "<a/><b/>",
            "text<a/>",
            "<a></b>",
            "</a>",
            "<a>&#xD800;</a>",
        ] {
            assert!(
                matches!(parse(doc), Err(XmlError::Malformed { .. })),
                "{doc:?}: {:?}",
                parse(doc)
            );
        }
    }

    #[test]
    fn limits_are_per_direction() {
        let deep = format!("{}{}", "<a>".repeat(65), "</a>".repeat(65));
        assert_eq!(parse(&deep).unwrap_err(), XmlError::TooDeep(64));
        let wide = format!("<a>{}</a>", "<b/>".repeat(500_000));
        assert_eq!(
            parse(&wide).unwrap_err(),
            XmlError::TooManyElements(500_000)
        );
        // An answer may hold far more elements than a request.
        assert_eq!(
            parse_str(&wide, &Limits::ANSWER).unwrap().children().len(),
            500_000
        );
        let small = Limits {
            max_bytes: 10,
            ..Limits::REQUEST
        };
        assert_eq!(
            parse_document(b"<a>0123456789</a>", &small).unwrap_err(),
            XmlError::TooLarge {
                size: 17,
                limit: 10
            }
        );
    }

    #[test]
    fn utf16_and_byte_order_marks() {
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("<a>é</a>".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(
            parse_document(&utf16, &Limits::REQUEST).unwrap().text(),
            "é"
        );
        assert_eq!(
            parse_document(b"\xEF\xBB\xBF<a>x</a>", &Limits::REQUEST)
                .unwrap()
                .text(),
            "x"
        );
        assert!(matches!(
            parse_document(b"<a>\xff</a>", &Limits::REQUEST),
            Err(XmlError::Encoding(_))
        ));
    }

    /// Rule: no character XML 1.0 forbids is written or read.
    #[test]
    fn xml10_characters_only() {
        assert_eq!(escape("a<b&\u{1}c\"'\u{B}\u{FFFE}>"), "a&lt;b&amp;c\"'&gt;");
        assert_eq!(escape("plain \u{85} \u{7F} é"), "plain \u{85} \u{7F} é");
        assert_eq!(escape_attribute("a\"b\tc"), "a&quot;b&#x9;c");
        for bad in [
            "<a>\u{1}</a>",
            "<a>&#1;</a>",
            "<a>&#x1F;</a>",
            "<a>\u{FFFF}</a>",
            "<a\u{C}/>",
        ] {
            assert!(
                matches!(parse(bad), Err(XmlError::ForbiddenCharacter { .. })),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert_eq!(parse("<a>&#9;&#xA;&#xD;</a>").unwrap().text(), "\t\n\r");
        // Whatever `escape` writes reads back, without the forbidden ones.
        let all: String = (0u32..0x300)
            .chain([0xFFFD, 0xFFFE, 0xFFFF, 0x1F600])
            .filter_map(char::from_u32)
            .collect();
        let doc = format!("<a>{}</a>", escape(&all));
        let back = parse(&doc).unwrap();
        let want: String = all.chars().filter(|&c| is_xml_char(c)).collect();
        assert_eq!(back.text(), want);
    }

    #[test]
    fn text_survives_a_round_trip_verbatim() {
        let text = "<upd:Update>\r\n\ta &amp; b\r</upd:Update>\n";
        let mut w = XmlWriter::new();
        w.start_ns("X", "urn:x")
            .elem("T", text)
            .list("L", ["1", "2"], |w, v| {
                w.elem("i", v);
            })
            .list("E", Vec::<&str>::new(), |_, _| {})
            .end("X");
        let e = parse(w.as_str()).unwrap();
        assert_eq!(e.text_of("T"), Some(text));
        assert_eq!(e.child("L").unwrap().children().len(), 2);
        assert!(e.child("E").unwrap().is_empty());
    }
}
