//! The WSUS update metadata model: a parser for update XML documents
//! (namespace `http://schemas.microsoft.com/msus/2002/12/Update`).
//!
//! The original XML bytes stay the source of truth (the store keeps them
//! verbatim); this module only extracts the fields gapsync indexes, following
//! the XPATH table of MS-WSUSSS 3.1.1.1 and the prerequisite rules of
//! MS-WUSP 3.1.1.
//!
//! [`parse`] takes the bytes (UTF-8 or UTF-16, see [`decode_text`]),
//! [`parse_str`] text that is already decoded.
//!
//! Hostile input: documents with a DTD (and so any entity declaration) are
//! rejected, nesting depth and document size are bounded, and every error
//! names what was wrong.

use std::borrow::Cow;

use base64::Engine as _;
use quick_xml::XmlVersion;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of the `Update` document element.
pub const UPDATE_NS: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
/// Largest update document accepted (real ones are at most a few hundred KiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Deepest element nesting accepted (real documents nest about 15 deep).
pub const MAX_DEPTH: usize = 256;

/// `/Update/Properties/@UpdateType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    Software,
    Driver,
    Category,
    Detectoid,
}

impl UpdateKind {
    /// The lower-case name used in the store and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Software => "software",
            UpdateKind::Driver => "driver",
            UpdateKind::Category => "category",
            UpdateKind::Detectoid => "detectoid",
        }
    }
    /// Parses either the WSUS spelling (`Software`) or the lower-case one.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "software" => Some(UpdateKind::Software),
            "driver" => Some(UpdateKind::Driver),
            "category" => Some(UpdateKind::Category),
            "detectoid" => Some(UpdateKind::Detectoid),
            _ => None,
        }
    }
}

/// `/Update/HandlerSpecificData/CategoryInformation/@CategoryType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CategoryType {
    Company,
    ProductFamily,
    Product,
    UpdateClassification,
}

impl CategoryType {
    pub fn as_str(self) -> &'static str {
        match self {
            CategoryType::Company => "Company",
            CategoryType::ProductFamily => "ProductFamily",
            CategoryType::Product => "Product",
            CategoryType::UpdateClassification => "UpdateClassification",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Company" => Some(CategoryType::Company),
            "ProductFamily" => Some(CategoryType::ProductFamily),
            "Product" => Some(CategoryType::Product),
            "UpdateClassification" => Some(CategoryType::UpdateClassification),
            _ => None,
        }
    }
}

/// A reference to another update, optionally pinned to one revision
/// (`BundledUpdates` carry revisions, prerequisites and supersedence do not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRef {
    pub id: Uuid,
    pub revision: Option<i32>,
}

/// One entry of `/Update/Relationships/Prerequisites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prerequisite {
    /// A bare `UpdateIdentity`: this update must be installed.
    Required(Uuid),
    /// `AtLeastOne`: one of these must be installed. With `is_category` the
    /// ids are categories (product, classification) the update belongs to.
    AtLeastOne { is_category: bool, ids: Vec<Uuid> },
}

/// One `LocalizedProperties` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Localized {
    pub language: String,
    pub title: String,
    pub description: Option<String>,
}

/// One `/Update/Files/File`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    pub file_name: String,
    pub size: u64,
    pub modified: Option<String>,
    /// `@Digest` (base64 in XML; `@DigestAlgorithm` must be SHA1 or absent).
    pub sha1: [u8; 20],
    /// `AdditionalDigest[@Algorithm="SHA256"]`, when present.
    pub sha256: Option<[u8; 32]>,
    pub patching_type: Option<String>,
    pub is_encrypted: bool,
}

/// What gapsync extracts from one update revision's XML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateMetadata {
    /// `/Update/UpdateIdentity/@UpdateID` (GUIDs compare case-insensitively;
    /// `Uuid` normalises them).
    pub id: Uuid,
    /// `/Update/UpdateIdentity/@RevisionNumber`.
    pub revision: i32,
    pub kind: UpdateKind,
    pub category_type: Option<CategoryType>,
    pub default_language: Option<String>,
    pub kb_article_id: Option<String>,
    pub creation_date: Option<String>,
    pub publication_state: Option<String>,
    pub eula_id: Option<Uuid>,
    /// `/Update/Properties/SecuredFragment` is present (content is encrypted
    /// and needs GetUpdateDecryptionData).
    pub secured_fragment: bool,
    /// `/Update/Properties/Language`: the languages a language-specific
    /// update is for (empty for language-neutral updates, most of them).
    #[serde(default)]
    pub languages: Vec<String>,
    pub localized: Vec<Localized>,
    pub prerequisites: Vec<Prerequisite>,
    /// `BundledUpdates//UpdateIdentity`, in document order.
    pub bundled: Vec<UpdateRef>,
    /// `SupersededUpdates/UpdateIdentity`, in document order.
    pub superseded: Vec<Uuid>,
    pub files: Vec<UpdateFile>,
}

impl UpdateMetadata {
    /// The title in `lang`, else in the default language, else the first one.
    pub fn title(&self, lang: &str) -> Option<&str> {
        let pick = |l: &str| {
            self.localized
                .iter()
                .find(|p| p.language.eq_ignore_ascii_case(l))
        };
        pick(lang)
            .or_else(|| self.default_language.as_deref().and_then(pick))
            .or_else(|| self.localized.first())
            .map(|p| p.title.as_str())
    }

    /// Categories this revision belongs to (`AtLeastOne IsCategory="true"`).
    pub fn category_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.prerequisites
            .iter()
            .flat_map(|p| match p {
                Prerequisite::AtLeastOne {
                    is_category: true,
                    ids,
                } => ids.as_slice(),
                _ => &[],
            })
            .copied()
    }
}

/// Why a document was rejected. The caller adds the file or entry name.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("text encoding: {0}")]
    Encoding(String),
    #[error("document has a DTD (DOCTYPE); DTDs and entity declarations are refused")]
    Dtd,
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("elements nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("document element is {found}, expected Update in namespace {UPDATE_NS}")]
    WrongRoot { found: String },
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("bad {what} value {value:?}")]
    BadValue { what: &'static str, value: String },
    #[error("document ends before the Update element is closed (truncated?)")]
    Truncated,
    #[error("{0} occurs more than once")]
    Duplicate(&'static str),
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes an update document to text.
///
/// * UTF-8, with or without a byte-order mark (the mark is dropped);
/// * UTF-16 LE or BE with a byte-order mark;
/// * UTF-16 without a mark when the document starts with `<` (XML 1.0
///   Appendix F: `3C 00` is little-endian, `00 3C` big-endian; a UTF-8 XML
///   document can never start that way because NUL is not an XML character).
///
/// UTF-32, invalid UTF-8, odd-length UTF-16, unpaired surrogates and NUL
/// characters are refused with [`MetadataError::Encoding`]. Borrows when the
/// input is already UTF-8.
pub fn decode_text(bytes: &[u8]) -> Result<Cow<'_, str>, MetadataError> {
    let text = match bytes {
        [0xFF, 0xFE, 0x00, 0x00, ..] | [0x00, 0x00, 0xFE, 0xFF, ..] => {
            return Err(MetadataError::Encoding(
                "UTF-32 documents are not supported".into(),
            ));
        }
        [0xEF, 0xBB, 0xBF, rest @ ..] => decode_utf8(rest, 3)?,
        [0xFF, 0xFE, rest @ ..] => decode_utf16(rest, u16::from_le_bytes)?,
        [0xFE, 0xFF, rest @ ..] => decode_utf16(rest, u16::from_be_bytes)?,
        [b'<', 0x00, ..] => decode_utf16(bytes, u16::from_le_bytes)?,
        [0x00, b'<', ..] => decode_utf16(bytes, u16::from_be_bytes)?,
        _ => decode_utf8(bytes, 0)?,
    };
    if text.contains('\0') {
        return Err(MetadataError::Encoding(
            "document contains NUL characters (UTF-16 without a byte-order mark?)".into(),
        ));
    }
    Ok(text)
}

fn decode_utf8(bytes: &[u8], offset: usize) -> Result<Cow<'_, str>, MetadataError> {
    std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
        MetadataError::Encoding(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to().saturating_add(offset)
        ))
    })
}

fn decode_utf16(
    bytes: &[u8],
    unit: fn([u8; 2]) -> u16,
) -> Result<Cow<'static, str>, MetadataError> {
    let (units, rest) = bytes.as_chunks::<2>();
    if !rest.is_empty() {
        return Err(MetadataError::Encoding(
            "UTF-16 document has an odd number of bytes".into(),
        ));
    }
    let mut text = String::with_capacity(units.len().saturating_add(units.len() / 2));
    for c in char::decode_utf16(units.iter().map(|u| unit(*u))) {
        match c {
            Ok(c) => text.push(c),
            Err(e) => {
                return Err(MetadataError::Encoding(format!(
                    "unpaired UTF-16 surrogate {:#06x}",
                    e.unpaired_surrogate()
                )));
            }
        }
    }
    Ok(Cow::Owned(text))
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses one update document (see [`decode_text`] for the accepted
/// encodings) and extracts the indexed fields.
pub fn parse(bytes: &[u8]) -> Result<UpdateMetadata, MetadataError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let text = decode_text(bytes)?;
    parse_str(&text)
}

/// [`parse`] for a document that is already text.
pub fn parse_str(text: &str) -> Result<UpdateMetadata, MetadataError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut stack: Vec<Tag> = Vec::with_capacity(32);
    let mut b = Builder::default();
    let mut root_seen = false;
    let mut root_closed = false;

    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => return Err(quick_xml_error(&reader, &e)),
        };
        b.pos = reader.buffer_position();
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if stack.len() >= MAX_DEPTH {
                    return Err(MetadataError::TooDeep);
                }
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let local = local.into_inner();
                let in_update_ns = match ns {
                    ResolveResult::Bound(Namespace(ns)) => ns == UPDATE_NS,
                    ResolveResult::Unbound => false,
                    ResolveResult::Unknown(prefix) => {
                        return Err(b.xml(format!("undeclared namespace prefix {prefix:?}")));
                    }
                };
                let tag = match stack.last() {
                    Some(parent) => classify(*parent, in_update_ns, local),
                    None => {
                        if root_seen {
                            return Err(b.xml("more than one document element".into()));
                        }
                        if !(in_update_ns && local == "Update") {
                            let found = match reader.resolver().resolve_element(e.name()).0 {
                                ResolveResult::Bound(Namespace(ns)) => format!("{{{ns}}}{local}"),
                                _ => local.to_owned(),
                            };
                            return Err(MetadataError::WrongRoot { found });
                        }
                        root_seen = true;
                        Tag::Update
                    }
                };
                b.check_attributes(e)?;
                let tag = b.open(tag, e)?;
                if empty {
                    b.close(tag)?;
                    if stack.is_empty() {
                        root_closed = true;
                    }
                } else {
                    stack.push(tag);
                }
            }
            Event::End(_) => {
                // The reader checks that end tags match start tags, so the
                // stack mirrors the document.
                let Some(tag) = stack.pop() else {
                    return Err(b.xml("end tag without a start tag".into()));
                };
                b.close(tag)?;
                if stack.is_empty() {
                    root_closed = true;
                }
            }
            Event::Text(ref t) => match stack.last() {
                None => {
                    if !t.trim_matches(is_xml_ws).is_empty() {
                        return Err(b.xml("text outside the document element".into()));
                    }
                }
                Some(top) if top.captures_text() => b.text.push_str(&t.xml10_content()),
                Some(_) => {}
            },
            Event::CData(ref t) => match stack.last() {
                None => return Err(b.xml("CDATA outside the document element".into())),
                Some(top) if top.captures_text() => b.text.push_str(&t.xml10_content()),
                Some(_) => {}
            },
            Event::GeneralRef(ref r) => {
                if stack.is_empty() {
                    return Err(b.xml("entity reference outside the document element".into()));
                }
                let capture = stack.last().is_some_and(|t| t.captures_text());
                if r.is_char_ref() {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c,
                        _ => {
                            return Err(b.xml(format!("bad character reference &{};", &**r)));
                        }
                    };
                    if capture {
                        b.text.push(c);
                    }
                } else {
                    let Some(value) = quick_xml::escape::resolve_xml_entity(r) else {
                        return Err(b.xml(format!("undefined entity &{};", &**r)));
                    };
                    if capture {
                        b.text.push_str(value);
                    }
                }
            }
            Event::Decl(ref d) => {
                b.version = d.xml_version().map_err(|e| b.xml(e.to_string()))?;
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| b.xml(e.to_string()))?;
                    if !is_unicode_encoding_label(&enc) {
                        return Err(MetadataError::Encoding(format!(
                            "declared encoding {enc:?} is not supported"
                        )));
                    }
                }
            }
            Event::DocType(_) => return Err(MetadataError::Dtd),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }

    if !root_seen {
        return Err(b.xml("no document element".into()));
    }
    if !root_closed {
        return Err(MetadataError::Truncated);
    }
    b.finish()
}

fn quick_xml_error<R>(reader: &quick_xml::NsReader<R>, e: &quick_xml::Error) -> MetadataError {
    let position = match reader.error_position() {
        0 => reader.buffer_position(),
        p => p,
    };
    MetadataError::Xml {
        position,
        message: e.to_string(),
    }
}

const fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Labels a decoded document may still declare (it is text by now, so any
/// Unicode form is fine; legacy code pages would have been misread as UTF-8).
fn is_unicode_encoding_label(label: &str) -> bool {
    [
        "utf-8", "utf8", "utf-16", "utf-16le", "utf-16be", "unicode", "us-ascii", "ascii",
    ]
    .iter()
    .any(|l| label.trim_matches(is_xml_ws).eq_ignore_ascii_case(l))
}

/// What an open element is, by its position. Everything not on one of the
/// extracted paths is `Other`, and so is all of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Update,
    Identity,
    Properties,
    KbArticleId,
    SecuredFragment,
    PropertiesLanguage,
    LocalizedCollection,
    Localized,
    Language,
    Title,
    Description,
    Relationships,
    Prerequisites,
    PrerequisiteIdentity,
    PrerequisiteAtLeastOne,
    AtLeastOneIdentity,
    Bundled,
    BundledInner,
    BundledIdentity,
    Superseded,
    SupersededIdentity,
    Files,
    File,
    /// `AdditionalDigest` before its `Algorithm` is known.
    AdditionalDigest,
    Sha256Digest,
    HandlerSpecificData,
    CategoryInformation,
    Other,
}

impl Tag {
    fn captures_text(self) -> bool {
        matches!(
            self,
            Tag::KbArticleId
                | Tag::PropertiesLanguage
                | Tag::Language
                | Tag::Title
                | Tag::Description
                | Tag::Sha256Digest
        )
    }
}

/// The tag of a child element, from its parent's tag and its own name.
fn classify(parent: Tag, in_update_ns: bool, local: &str) -> Tag {
    if !in_update_ns {
        return match (parent, local) {
            // CategoryInformation lives in the Category handler's namespace.
            (Tag::HandlerSpecificData, "CategoryInformation") => Tag::CategoryInformation,
            (Tag::Bundled | Tag::BundledInner, _) => Tag::BundledInner,
            _ => Tag::Other,
        };
    }
    match (parent, local) {
        (Tag::Update, "UpdateIdentity") => Tag::Identity,
        (Tag::Update, "Properties") => Tag::Properties,
        (Tag::Update, "LocalizedPropertiesCollection") => Tag::LocalizedCollection,
        (Tag::Update, "Relationships") => Tag::Relationships,
        (Tag::Update, "Files") => Tag::Files,
        (Tag::Update, "HandlerSpecificData") => Tag::HandlerSpecificData,
        (Tag::Properties, "KBArticleID") => Tag::KbArticleId,
        (Tag::Properties, "SecuredFragment") => Tag::SecuredFragment,
        (Tag::Properties, "Language") => Tag::PropertiesLanguage,
        (Tag::LocalizedCollection, "LocalizedProperties") => Tag::Localized,
        (Tag::Localized, "Language") => Tag::Language,
        (Tag::Localized, "Title") => Tag::Title,
        (Tag::Localized, "Description") => Tag::Description,
        (Tag::Relationships, "Prerequisites") => Tag::Prerequisites,
        (Tag::Relationships, "BundledUpdates") => Tag::Bundled,
        (Tag::Relationships, "SupersededUpdates") => Tag::Superseded,
        (Tag::Prerequisites, "UpdateIdentity") => Tag::PrerequisiteIdentity,
        (Tag::Prerequisites, "AtLeastOne") => Tag::PrerequisiteAtLeastOne,
        (Tag::PrerequisiteAtLeastOne, "UpdateIdentity") => Tag::AtLeastOneIdentity,
        (Tag::Bundled | Tag::BundledInner, "UpdateIdentity") => Tag::BundledIdentity,
        (Tag::Bundled | Tag::BundledInner, _) => Tag::BundledInner,
        (Tag::Superseded, "UpdateIdentity") => Tag::SupersededIdentity,
        (Tag::Files, "File") => Tag::File,
        (Tag::File, "AdditionalDigest") => Tag::AdditionalDigest,
        (Tag::HandlerSpecificData, "CategoryInformation") => Tag::CategoryInformation,
        _ => Tag::Other,
    }
}

#[derive(Default)]
struct LocalizedBuilder {
    language: Option<String>,
    title: Option<String>,
    description: Option<String>,
}

struct Builder {
    /// Byte offset of the event being handled (for error messages).
    pos: u64,
    version: XmlVersion,
    /// Text of the innermost capturing element (reused between elements).
    text: String,
    identity: Option<(Uuid, i32)>,
    properties_seen: bool,
    kind: Option<UpdateKind>,
    category_seen: bool,
    category_type: Option<CategoryType>,
    default_language: Option<String>,
    kb_article_id: Option<String>,
    kb_seen: bool,
    creation_date: Option<String>,
    publication_state: Option<String>,
    eula_id: Option<Uuid>,
    secured_fragment: bool,
    languages: Vec<String>,
    localized: Vec<Localized>,
    current_localized: Option<LocalizedBuilder>,
    prerequisites: Vec<Prerequisite>,
    current_at_least_one: Option<(bool, Vec<Uuid>)>,
    bundled: Vec<UpdateRef>,
    superseded: Vec<Uuid>,
    files: Vec<UpdateFile>,
    current_file: Option<UpdateFile>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            pos: 0,
            version: XmlVersion::Implicit1_0,
            text: String::new(),
            identity: None,
            properties_seen: false,
            kind: None,
            category_seen: false,
            category_type: None,
            default_language: None,
            kb_article_id: None,
            kb_seen: false,
            creation_date: None,
            publication_state: None,
            eula_id: None,
            secured_fragment: false,
            languages: Vec::new(),
            localized: Vec::new(),
            current_localized: None,
            prerequisites: Vec::new(),
            current_at_least_one: None,
            bundled: Vec::new(),
            superseded: Vec::new(),
            files: Vec::new(),
            current_file: None,
        }
    }
}

impl Builder {
    fn xml(&self, message: String) -> MetadataError {
        MetadataError::Xml {
            position: self.pos,
            message,
        }
    }

    /// Checks that the attribute values of any element, extracted or not,
    /// use only predefined entities and valid character references. (Full
    /// attribute syntax and duplicate names are checked on extracted elements
    /// by [`Builder::attributes`]; checking every attribute of every element
    /// costs a third of the parse time, so it is done only where a value
    /// holds a reference.)
    fn check_attributes(&self, e: &BytesStart) -> Result<(), MetadataError> {
        if !e.attributes_raw().contains('&') {
            return Ok(());
        }
        for a in e.attributes().with_checks(false) {
            let a: Attribute = a.map_err(|err| self.xml(err.to_string()))?;
            if a.value.contains('&') {
                a.normalized_value(self.version)
                    .map_err(|err| self.xml(err.to_string()))?;
            }
        }
        Ok(())
    }

    /// Calls `f` with the name and normalized value of each unprefixed
    /// attribute of `e` (prefixed ones, such as `xsi:type`, are skipped).
    fn attributes(
        &self,
        e: &BytesStart,
        mut f: impl FnMut(&str, Cow<'_, str>) -> Result<(), MetadataError>,
    ) -> Result<(), MetadataError> {
        for a in e.attributes() {
            let a: Attribute = a.map_err(|err| self.xml(err.to_string()))?;
            let key = a.key.into_inner();
            if key.contains(':') || key == "xmlns" {
                continue;
            }
            let value = a
                .normalized_value(self.version)
                .map_err(|err| self.xml(err.to_string()))?;
            f(key, value)?;
        }
        Ok(())
    }

    /// Handles a start (or empty-element) tag and returns the tag to push.
    fn open(&mut self, tag: Tag, e: &BytesStart) -> Result<Tag, MetadataError> {
        match tag {
            Tag::Identity => {
                if self.identity.is_some() {
                    return Err(MetadataError::Duplicate("UpdateIdentity"));
                }
                let (mut id, mut revision) = (None, None);
                self.attributes(e, |k, v| {
                    match k {
                        "UpdateID" => id = Some(parse_guid("UpdateIdentity/@UpdateID", &v)?),
                        "RevisionNumber" => {
                            revision = Some(parse_num("UpdateIdentity/@RevisionNumber", &v)?)
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                let id = id.ok_or(MetadataError::Missing("UpdateIdentity/@UpdateID"))?;
                let revision =
                    revision.ok_or(MetadataError::Missing("UpdateIdentity/@RevisionNumber"))?;
                self.identity = Some((id, revision));
            }
            Tag::Properties => {
                if self.properties_seen {
                    return Err(MetadataError::Duplicate("Properties"));
                }
                self.properties_seen = true;
                let (mut kind, mut lang, mut created, mut state, mut eula) =
                    (None, None, None, None, None);
                self.attributes(e, |k, v| {
                    match k {
                        "UpdateType" => {
                            kind = Some(
                                UpdateKind::parse(v.trim_matches(is_xml_ws))
                                    .ok_or_else(|| bad_value("Properties/@UpdateType", &v))?,
                            )
                        }
                        "DefaultPropertiesLanguage" => lang = Some(v.into_owned()),
                        "CreationDate" => created = Some(v.into_owned()),
                        "PublicationState" => state = Some(v.into_owned()),
                        "EulaID" => eula = Some(parse_guid("Properties/@EulaID", &v)?),
                        _ => {}
                    }
                    Ok(())
                })?;
                self.kind = Some(kind.ok_or(MetadataError::Missing("Properties/@UpdateType"))?);
                self.default_language = lang;
                self.creation_date = created;
                self.publication_state = state;
                self.eula_id = eula;
            }
            Tag::KbArticleId => {
                if self.kb_seen {
                    return Err(MetadataError::Duplicate("Properties/KBArticleID"));
                }
                self.kb_seen = true;
                self.text.clear();
            }
            Tag::SecuredFragment => self.secured_fragment = true,
            Tag::PropertiesLanguage => self.text.clear(),
            Tag::Localized => self.current_localized = Some(LocalizedBuilder::default()),
            Tag::Language | Tag::Title | Tag::Description => self.text.clear(),
            Tag::PrerequisiteIdentity => {
                let id = self.required_guid(e, "Prerequisites/UpdateIdentity/@UpdateID")?;
                self.prerequisites.push(Prerequisite::Required(id));
            }
            Tag::PrerequisiteAtLeastOne => {
                let mut is_category = false;
                self.attributes(e, |k, v| {
                    if k == "IsCategory" {
                        is_category = parse_bool("Prerequisites/AtLeastOne/@IsCategory", &v)?;
                    }
                    Ok(())
                })?;
                self.current_at_least_one = Some((is_category, Vec::new()));
            }
            Tag::AtLeastOneIdentity => {
                let id =
                    self.required_guid(e, "Prerequisites/AtLeastOne/UpdateIdentity/@UpdateID")?;
                if let Some((_, ids)) = self.current_at_least_one.as_mut() {
                    ids.push(id);
                }
            }
            Tag::BundledIdentity => {
                let (mut id, mut revision) = (None, None);
                self.attributes(e, |k, v| {
                    match k {
                        "UpdateID" => {
                            id = Some(parse_guid("BundledUpdates//UpdateIdentity/@UpdateID", &v)?)
                        }
                        "RevisionNumber" => {
                            revision = Some(parse_num(
                                "BundledUpdates//UpdateIdentity/@RevisionNumber",
                                &v,
                            )?)
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                let id = id.ok_or(MetadataError::Missing(
                    "BundledUpdates//UpdateIdentity/@UpdateID",
                ))?;
                self.bundled.push(UpdateRef { id, revision });
            }
            Tag::SupersededIdentity => {
                let id = self.required_guid(e, "SupersededUpdates/UpdateIdentity/@UpdateID")?;
                self.superseded.push(id);
            }
            Tag::File => self.current_file = Some(self.file(e)?),
            Tag::AdditionalDigest => {
                let mut sha256 = false;
                self.attributes(e, |k, v| {
                    if k == "Algorithm" {
                        sha256 = v.trim_matches(is_xml_ws) == "SHA256";
                    }
                    Ok(())
                })?;
                if !sha256 {
                    return Ok(Tag::Other);
                }
                if self
                    .current_file
                    .as_ref()
                    .is_some_and(|f| f.sha256.is_some())
                {
                    return Err(MetadataError::Duplicate(
                        "File/AdditionalDigest[@Algorithm=\"SHA256\"]",
                    ));
                }
                self.text.clear();
                return Ok(Tag::Sha256Digest);
            }
            Tag::CategoryInformation => {
                if self.category_seen {
                    return Err(MetadataError::Duplicate(
                        "HandlerSpecificData/CategoryInformation",
                    ));
                }
                self.category_seen = true;
                let mut category = None;
                self.attributes(e, |k, v| {
                    if k == "CategoryType" {
                        category =
                            Some(CategoryType::parse(v.trim_matches(is_xml_ws)).ok_or_else(
                                || bad_value("CategoryInformation/@CategoryType", &v),
                            )?);
                    }
                    Ok(())
                })?;
                self.category_type = Some(category.ok_or(MetadataError::Missing(
                    "HandlerSpecificData/CategoryInformation/@CategoryType",
                ))?);
            }
            Tag::Update
            | Tag::LocalizedCollection
            | Tag::Relationships
            | Tag::Prerequisites
            | Tag::Bundled
            | Tag::BundledInner
            | Tag::Superseded
            | Tag::Files
            | Tag::Sha256Digest
            | Tag::HandlerSpecificData
            | Tag::Other => {}
        }
        Ok(tag)
    }

    /// Handles the end of an element opened with `tag`.
    fn close(&mut self, tag: Tag) -> Result<(), MetadataError> {
        match tag {
            Tag::PropertiesLanguage => {
                let l = self.text.trim_matches(is_xml_ws).to_ascii_lowercase();
                if !l.is_empty() && !self.languages.contains(&l) {
                    self.languages.push(l);
                }
            }
            Tag::KbArticleId => {
                let kb = self.text.trim_matches(is_xml_ws);
                self.kb_article_id = (!kb.is_empty()).then(|| kb.to_owned());
            }
            Tag::Language => {
                let language = self.text.trim_matches(is_xml_ws).to_owned();
                self.set_localized(language, "LocalizedProperties/Language", |l| {
                    &mut l.language
                })?;
            }
            Tag::Title => {
                let title = std::mem::take(&mut self.text);
                self.set_localized(title, "LocalizedProperties/Title", |l| &mut l.title)?;
            }
            Tag::Description => {
                let description = std::mem::take(&mut self.text);
                self.set_localized(description, "LocalizedProperties/Description", |l| {
                    &mut l.description
                })?;
            }
            Tag::Localized => {
                if let Some(l) = self.current_localized.take() {
                    self.localized.push(Localized {
                        language: l
                            .language
                            .ok_or(MetadataError::Missing("LocalizedProperties/Language"))?,
                        title: l
                            .title
                            .ok_or(MetadataError::Missing("LocalizedProperties/Title"))?,
                        description: l.description,
                    });
                }
            }
            Tag::PrerequisiteAtLeastOne => {
                if let Some((is_category, ids)) = self.current_at_least_one.take() {
                    self.prerequisites
                        .push(Prerequisite::AtLeastOne { is_category, ids });
                }
            }
            Tag::File => {
                if let Some(file) = self.current_file.take() {
                    self.files.push(file);
                }
            }
            Tag::Sha256Digest => {
                let digest = decode_digest::<32>(
                    "File/AdditionalDigest[@Algorithm=\"SHA256\"]",
                    &self.text,
                )?;
                if let Some(file) = self.current_file.as_mut() {
                    file.sha256 = Some(digest);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn set_localized(
        &mut self,
        value: String,
        what: &'static str,
        field: impl FnOnce(&mut LocalizedBuilder) -> &mut Option<String>,
    ) -> Result<(), MetadataError> {
        if let Some(l) = self.current_localized.as_mut() {
            let slot = field(l);
            if slot.is_some() {
                return Err(MetadataError::Duplicate(what));
            }
            *slot = Some(value);
        }
        Ok(())
    }

    fn required_guid(&self, e: &BytesStart, what: &'static str) -> Result<Uuid, MetadataError> {
        let mut id = None;
        self.attributes(e, |k, v| {
            if k == "UpdateID" {
                id = Some(parse_guid(what, &v)?);
            }
            Ok(())
        })?;
        id.ok_or(MetadataError::Missing(what))
    }

    fn file(&self, e: &BytesStart) -> Result<UpdateFile, MetadataError> {
        let (mut name, mut size, mut modified, mut digest, mut algorithm) =
            (None, None, None, None, None);
        let (mut patching_type, mut is_encrypted) = (None, false);
        self.attributes(e, |k, v| {
            match k {
                "FileName" => name = Some(v.into_owned()),
                "Size" => size = Some(parse_num::<u64>("File/@Size", &v)?),
                "Modified" => modified = Some(v.into_owned()),
                "Digest" => digest = Some(v.into_owned()),
                "DigestAlgorithm" => algorithm = Some(v.into_owned()),
                "PatchingType" => patching_type = Some(v.into_owned()),
                "IsEncrypted" => is_encrypted = parse_bool("File/@IsEncrypted", &v)?,
                _ => {}
            }
            Ok(())
        })?;
        if let Some(algorithm) = algorithm
            && algorithm.trim_matches(is_xml_ws) != "SHA1"
        {
            return Err(bad_value("File/@DigestAlgorithm", &algorithm));
        }
        let digest = digest.ok_or(MetadataError::Missing("File/@Digest"))?;
        Ok(UpdateFile {
            file_name: name.ok_or(MetadataError::Missing("File/@FileName"))?,
            size: size.ok_or(MetadataError::Missing("File/@Size"))?,
            modified,
            sha1: decode_digest::<20>("File/@Digest", &digest)?,
            sha256: None,
            patching_type,
            is_encrypted,
        })
    }

    fn finish(self) -> Result<UpdateMetadata, MetadataError> {
        let (id, revision) = self
            .identity
            .ok_or(MetadataError::Missing("UpdateIdentity"))?;
        Ok(UpdateMetadata {
            id,
            revision,
            kind: self
                .kind
                .ok_or(MetadataError::Missing("Properties/@UpdateType"))?,
            category_type: self.category_type,
            default_language: self.default_language,
            kb_article_id: self.kb_article_id,
            creation_date: self.creation_date,
            publication_state: self.publication_state,
            eula_id: self.eula_id,
            secured_fragment: self.secured_fragment,
            languages: self.languages,
            localized: self.localized,
            prerequisites: self.prerequisites,
            bundled: self.bundled,
            superseded: self.superseded,
            files: self.files,
        })
    }
}

/// A `BadValue` error, with the value cut to a readable length.
fn bad_value(what: &'static str, value: &str) -> MetadataError {
    const SHOWN: usize = 100;
    let value = match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", value.get(..cut).unwrap_or_default()),
        None => value.to_owned(),
    };
    MetadataError::BadValue { what, value }
}

fn parse_guid(what: &'static str, value: &str) -> Result<Uuid, MetadataError> {
    Uuid::parse_str(value.trim_matches(is_xml_ws)).map_err(|_| bad_value(what, value))
}

fn parse_num<T: std::str::FromStr>(what: &'static str, value: &str) -> Result<T, MetadataError> {
    value
        .trim_matches(is_xml_ws)
        .parse()
        .map_err(|_| bad_value(what, value))
}

fn parse_bool(what: &'static str, value: &str) -> Result<bool, MetadataError> {
    match value.trim_matches(is_xml_ws) {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad_value(what, value)),
    }
}

/// Decodes a base64 digest (XML `base64Binary`: whitespace allowed) of
/// exactly `N` bytes.
fn decode_digest<const N: usize>(
    what: &'static str,
    value: &str,
) -> Result<[u8; N], MetadataError> {
    let trimmed = value.trim_matches(is_xml_ws);
    let compact: Cow<'_, str> = if trimmed.contains(is_xml_ws) {
        Cow::Owned(trimmed.chars().filter(|c| !is_xml_ws(*c)).collect())
    } else {
        Cow::Borrowed(trimmed)
    };
    // 64 base64 characters decode to at most 48 bytes; digests are shorter.
    let mut buf = [0u8; 48];
    if compact.len() > 64 {
        return Err(bad_value(what, value));
    }
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(compact.as_bytes(), &mut buf)
        .map_err(|_| bad_value(what, value))?;
    buf.get(..n)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or_else(|| bad_value(what, value))
}

#[cfg(test)]
mod tests {

    #[test]
    fn language_specific_updates_declare_their_languages() {
        let doc = r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update"><upd:UpdateIdentity UpdateID="12345678-1234-1234-1234-123456789abc" RevisionNumber="3" /><upd:Properties UpdateType="Software"><upd:Language>de</upd:Language><upd:Language> FR </upd:Language><upd:Language>de</upd:Language></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>t</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection></upd:Update>"#;
        let m = parse(doc.as_bytes()).unwrap();
        assert_eq!(m.languages, ["de", "fr"]);
        assert_eq!(m.localized[0].language, "en");
    }
    use super::*;
    use proptest::prelude::*;

    /// A synthetic document exercising every extracted path, with decoys
    /// (identities and properties in the wrong place or namespace) and
    /// entities, character references and CDATA in the text.
    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- synthetic test document -->
<u:Update xmlns:u="http://schemas.microsoft.com/msus/2002/12/Update" xmlns:x="urn:example:other" xmlns:cat="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category">
  <x:UpdateIdentity UpdateID="00000000-0000-0000-0000-000000000001" RevisionNumber="1"/>
  <u:ApplicabilityRules>
    <u:UpdateIdentity UpdateID="00000000-0000-0000-0000-000000000002" RevisionNumber="2"/>
    <u:Properties UpdateType="Driver"/>
  </u:ApplicabilityRules>
  <u:UpdateIdentity UpdateID="1b2f7e44-8a3c-4d2e-9f10-0123456789ab" RevisionNumber="204"/>
  <x:Properties UpdateType="Detectoid"/>
  <u:Properties UpdateType="Software" DefaultPropertiesLanguage="en" CreationDate="2026-10-04T12:00:58.381Z" PublicationState="Published" EulaID="5c2a0b3e-0d3f-4b4e-8a1c-abcdefabcdef" PublisherID="bccf8ca0-2819-4598-8d15-c1506e363e92">
    <u:SupportUrl>https://example.invalid/support?a=1&amp;b=2</u:SupportUrl>
    <u:KBArticleID> 5001234 </u:KBArticleID>
    <u:SecuredFragment/>
  </u:Properties>
  <u:LocalizedPropertiesCollection>
    <u:LocalizedProperties>
      <u:Language>en</u:Language>
      <u:Title>Fish &amp; Chips &lt;2&gt; &#233;t&#xE9; "quoted" 'single'</u:Title>
      <u:Description><![CDATA[<b>bold</b> & raw]]> tail</u:Description>
    </u:LocalizedProperties>
    <u:LocalizedProperties>
      <u:Language>de</u:Language>
      <u:Title>Fisch</u:Title>
    </u:LocalizedProperties>
  </u:LocalizedPropertiesCollection>
  <u:Relationships>
    <u:Prerequisites>
      <u:UpdateIdentity UpdateID="aaaaaaaa-0000-0000-0000-000000000001"/>
      <u:AtLeastOne IsCategory="true">
        <u:UpdateIdentity UpdateID="aaaaaaaa-0000-0000-0000-000000000002"/>
        <u:UpdateIdentity UpdateID="aaaaaaaa-0000-0000-0000-000000000003"/>
      </u:AtLeastOne>
      <u:AtLeastOne>
        <u:UpdateIdentity UpdateID="aaaaaaaa-0000-0000-0000-000000000004"/>
      </u:AtLeastOne>
      <u:AtLeastOne IsCategory="false">
        <u:UpdateIdentity UpdateID="aaaaaaaa-0000-0000-0000-000000000005"/>
      </u:AtLeastOne>
    </u:Prerequisites>
    <u:BundledUpdates>
      <u:UpdateIdentity UpdateID="bbbbbbbb-0000-0000-0000-000000000001" RevisionNumber="3"/>
      <u:AtLeastOne>
        <u:UpdateIdentity UpdateID="bbbbbbbb-0000-0000-0000-000000000002" RevisionNumber="200"/>
        <u:UpdateIdentity UpdateID="bbbbbbbb-0000-0000-0000-000000000003"/>
      </u:AtLeastOne>
    </u:BundledUpdates>
    <u:SupersededUpdates>
      <u:UpdateIdentity UpdateID="cccccccc-0000-0000-0000-000000000001"/>
      <u:UpdateIdentity UpdateID="cccccccc-0000-0000-0000-000000000002"/>
    </u:SupersededUpdates>
  </u:Relationships>
  <u:Files>
    <u:File Digest="AAECAwQFBgcICQoLDA0ODxAREhM=" DigestAlgorithm="SHA1" FileName="a&amp;b.exe" Size="11606440" Modified="2026-10-04T09:39:26Z" PatchingType="Express" IsEncrypted="true">
      <u:AdditionalDigest Algorithm="SHA512">not even base64</u:AdditionalDigest>
      <u:AdditionalDigest Algorithm="SHA256">AAECAwQFBgcICQoL
        DA0ODxAREhMUFRYXGBkaGxwdHh8=</u:AdditionalDigest>
    </u:File>
    <u:File Digest="//////////////////////////8=" FileName="second.cab" Size="0"/>
  </u:Files>
  <u:HandlerSpecificData xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="cat:Category">
    <cat:CategoryInformation CategoryType="UpdateClassification" ProhibitsSubcategories="false"/>
  </u:HandlerSpecificData>
</u:Update>"#;

    fn id(s: &str) -> Uuid {
        Uuid::parse_str(s).expect("test GUID")
    }

    /// `SAMPLE` with `from` replaced by `to` (which must occur).
    fn variant(from: &str, to: &str) -> String {
        assert!(SAMPLE.contains(from), "{from:?} not in SAMPLE");
        SAMPLE.replacen(from, to, 1)
    }

    fn sample_expected() -> UpdateMetadata {
        UpdateMetadata {
            id: id("1b2f7e44-8a3c-4d2e-9f10-0123456789ab"),
            revision: 204,
            kind: UpdateKind::Software,
            category_type: Some(CategoryType::UpdateClassification),
            default_language: Some("en".into()),
            kb_article_id: Some("5001234".into()),
            creation_date: Some("2026-10-04T12:00:58.381Z".into()),
            publication_state: Some("Published".into()),
            eula_id: Some(id("5c2a0b3e-0d3f-4b4e-8a1c-abcdefabcdef")),
            secured_fragment: true,
            languages: vec![],
            localized: vec![
                Localized {
                    language: "en".into(),
                    title: "Fish & Chips <2> été \"quoted\" 'single'".into(),
                    description: Some("<b>bold</b> & raw tail".into()),
                },
                Localized {
                    language: "de".into(),
                    title: "Fisch".into(),
                    description: None,
                },
            ],
            prerequisites: vec![
                Prerequisite::Required(id("aaaaaaaa-0000-0000-0000-000000000001")),
                Prerequisite::AtLeastOne {
                    is_category: true,
                    ids: vec![
                        id("aaaaaaaa-0000-0000-0000-000000000002"),
                        id("aaaaaaaa-0000-0000-0000-000000000003"),
                    ],
                },
                Prerequisite::AtLeastOne {
                    is_category: false,
                    ids: vec![id("aaaaaaaa-0000-0000-0000-000000000004")],
                },
                Prerequisite::AtLeastOne {
                    is_category: false,
                    ids: vec![id("aaaaaaaa-0000-0000-0000-000000000005")],
                },
            ],
            bundled: vec![
                UpdateRef {
                    id: id("bbbbbbbb-0000-0000-0000-000000000001"),
                    revision: Some(3),
                },
                UpdateRef {
                    id: id("bbbbbbbb-0000-0000-0000-000000000002"),
                    revision: Some(200),
                },
                UpdateRef {
                    id: id("bbbbbbbb-0000-0000-0000-000000000003"),
                    revision: None,
                },
            ],
            superseded: vec![
                id("cccccccc-0000-0000-0000-000000000001"),
                id("cccccccc-0000-0000-0000-000000000002"),
            ],
            files: vec![
                UpdateFile {
                    file_name: "a&b.exe".into(),
                    size: 11_606_440,
                    modified: Some("2026-10-04T09:39:26Z".into()),
                    sha1: std::array::from_fn(|i| i as u8),
                    sha256: Some(std::array::from_fn(|i| i as u8)),
                    patching_type: Some("Express".into()),
                    is_encrypted: true,
                },
                UpdateFile {
                    file_name: "second.cab".into(),
                    size: 0,
                    modified: None,
                    sha1: [0xFF; 20],
                    sha256: None,
                    patching_type: None,
                    is_encrypted: false,
                },
            ],
        }
    }

    fn real_document(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/reference/wsus-captures/wsus-m0-wsusss/docs/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (captures must be present)"))
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in text.encode_utf16() {
            out.extend_from_slice(&if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }

    #[test]
    fn sample_extracts_every_field_and_ignores_decoys() {
        assert_eq!(parse(SAMPLE.as_bytes()).unwrap(), sample_expected());
    }

    #[test]
    fn prefix_choice_and_default_namespace_do_not_matter() {
        let default_ns = SAMPLE
            .replace("<u:", "<")
            .replace("</u:", "</")
            .replace("xmlns:u=", "xmlns=");
        assert_eq!(parse(default_ns.as_bytes()).unwrap(), sample_expected());
        let other_prefix = SAMPLE
            .replace("<u:", "<upd:")
            .replace("</u:", "</upd:")
            .replace("xmlns:u=", "xmlns:upd=");
        assert_eq!(parse(other_prefix.as_bytes()).unwrap(), sample_expected());
    }

    #[test]
    fn rejects_billion_laughs_doctype() {
        let doc = format!(
            r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<upd:Update xmlns:upd="{UPDATE_NS}"><upd:UpdateIdentity UpdateID="1b2f7e44-8a3c-4d2e-9f10-0123456789ab" RevisionNumber="1"/><upd:Properties UpdateType="Software"/><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>&lol3;</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection></upd:Update>"#
        );
        assert!(matches!(parse(doc.as_bytes()), Err(MetadataError::Dtd)));
        // Any DOCTYPE, even without declarations.
        let doc = variant("<!-- synthetic", "<!DOCTYPE u:Update>\n<!-- synthetic");
        assert!(matches!(parse(doc.as_bytes()), Err(MetadataError::Dtd)));
    }

    #[test]
    fn rejects_undefined_entity() {
        let doc = variant("<u:Title>Fisch", "<u:Title>&lol3;Fisch");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        // Also outside the extracted elements, and in attribute values.
        let doc = variant("https://example.invalid/support", "&nbsp;");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        let doc = variant("FileName=\"second.cab\"", "FileName=\"&nbsp;\"");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        let doc = variant(
            "<u:Properties UpdateType=\"Driver\"/>",
            "<u:Properties UpdateType=\"&bogus;\"/>",
        );
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        // Character references to non-characters.
        let doc = variant("<u:Title>Fisch", "<u:Title>&#0;Fisch");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
    }

    #[test]
    fn rejects_wrong_root_or_namespace() {
        let doc = SAMPLE.replacen(
            UPDATE_NS,
            "http://schemas.microsoft.com/msus/2002/12/Update2",
            1,
        );
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::WrongRoot { found }) if found.contains("Update2")
        ));
        let no_ns = r#"<Update><UpdateIdentity UpdateID="1b2f7e44-8a3c-4d2e-9f10-0123456789ab" RevisionNumber="1"/><Properties UpdateType="Software"/></Update>"#;
        assert!(matches!(
            parse(no_ns.as_bytes()),
            Err(MetadataError::WrongRoot { .. })
        ));
        let wrong_name = format!(r#"<u:Updates xmlns:u="{UPDATE_NS}"/>"#);
        assert!(matches!(
            parse(wrong_name.as_bytes()),
            Err(MetadataError::WrongRoot { .. })
        ));
        let undeclared = r#"<u:Update/>"#;
        assert!(matches!(
            parse(undeclared.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        assert!(matches!(parse(b""), Err(MetadataError::Xml { .. })));
    }

    #[test]
    fn rejects_missing_identity_and_type() {
        let real = r#"<u:UpdateIdentity UpdateID="1b2f7e44-8a3c-4d2e-9f10-0123456789ab" RevisionNumber="204"/>"#;
        assert!(matches!(
            parse(variant(real, "").as_bytes()),
            Err(MetadataError::Missing("UpdateIdentity"))
        ));
        assert!(matches!(
            parse(variant(real, r#"<u:UpdateIdentity RevisionNumber="204"/>"#).as_bytes()),
            Err(MetadataError::Missing("UpdateIdentity/@UpdateID"))
        ));
        assert!(matches!(
            parse(
                variant(
                    real,
                    r#"<u:UpdateIdentity UpdateID="1b2f7e44-8a3c-4d2e-9f10-0123456789ab"/>"#
                )
                .as_bytes()
            ),
            Err(MetadataError::Missing("UpdateIdentity/@RevisionNumber"))
        ));
        assert!(matches!(
            parse(variant(r#"<u:Properties UpdateType="Software""#, "<u:Properties").as_bytes()),
            Err(MetadataError::Missing("Properties/@UpdateType"))
        ));
        // A second identity at the right path is refused, not silently chosen.
        assert!(matches!(
            parse(variant(real, &format!("{real}{real}")).as_bytes()),
            Err(MetadataError::Duplicate("UpdateIdentity"))
        ));
    }

    #[test]
    fn rejects_truncated_documents() {
        let real = real_document("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml");
        assert!(parse(&real).is_ok());
        let half = real.get(..real.len() / 2).unwrap();
        let half = match std::str::from_utf8(half) {
            Ok(_) => half,
            Err(e) => real.get(..e.valid_up_to()).unwrap(),
        };
        assert!(parse(half).is_err());
        // Every proper prefix of the sample is refused.
        let text = SAMPLE.trim_end();
        for cut in (0..text.len()).filter(|&c| text.is_char_boundary(c)) {
            let prefix = &text[..cut];
            assert!(
                parse(prefix.as_bytes()).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        // Cut right after a complete element: the parse reaches the end of
        // input with the root still open.
        let cut = text.find("</u:Relationships>").unwrap();
        assert!(matches!(
            parse(&text.as_bytes()[..cut]),
            Err(MetadataError::Truncated)
        ));
    }

    #[test]
    fn rejects_content_after_the_root() {
        let doc = format!("{SAMPLE}<u:Update xmlns:u=\"{UPDATE_NS}\"/>");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        let doc = format!("{SAMPLE}trailing");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(MetadataError::Xml { .. })
        ));
        // Trailing whitespace and comments are fine.
        let doc = format!("{SAMPLE}\n<!-- end -->\n");
        assert!(parse(doc.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_bad_digests() {
        let bad_base64 = variant(
            "AAECAwQFBgcICQoLDA0ODxAREhM=",
            "AAECAwQFBgcICQoLDA0ODxAREh*=",
        );
        assert!(matches!(
            parse(bad_base64.as_bytes()),
            Err(MetadataError::BadValue {
                what: "File/@Digest",
                ..
            })
        ));
        // Valid base64 of 19 bytes.
        let short = variant(
            "AAECAwQFBgcICQoLDA0ODxAREhM=",
            "AAECAwQFBgcICQoLDA0ODxAREg==",
        );
        assert!(matches!(
            parse(short.as_bytes()),
            Err(MetadataError::BadValue {
                what: "File/@Digest",
                ..
            })
        ));
        // Valid base64 of 64 bytes.
        let long = variant(
            "AAECAwQFBgcICQoLDA0ODxAREhM=",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
        );
        assert!(matches!(
            parse(long.as_bytes()),
            Err(MetadataError::BadValue {
                what: "File/@Digest",
                ..
            })
        ));
        let sha256_short = variant("DA0ODxAREhMUFRYXGBkaGxwdHh8=", "DA0ODxAREhM=");
        assert!(matches!(
            parse(sha256_short.as_bytes()),
            Err(MetadataError::BadValue { .. })
        ));
        let md5 = variant("DigestAlgorithm=\"SHA1\"", "DigestAlgorithm=\"MD5\"");
        assert!(matches!(
            parse(md5.as_bytes()),
            Err(MetadataError::BadValue {
                what: "File/@DigestAlgorithm",
                ..
            })
        ));
        let missing = variant("Digest=\"//////////////////////////8=\" ", "");
        assert!(matches!(
            parse(missing.as_bytes()),
            Err(MetadataError::Missing("File/@Digest"))
        ));
    }

    #[test]
    fn rejects_bad_values() {
        for (from, to, what) in [
            (
                "1b2f7e44-8a3c-4d2e-9f10-0123456789ab",
                "1b2f7e44-8a3c-4d2e-9f10-0123456789zz",
                "UpdateIdentity/@UpdateID",
            ),
            (
                "RevisionNumber=\"204\"",
                "RevisionNumber=\"2x4\"",
                "UpdateIdentity/@RevisionNumber",
            ),
            (
                "RevisionNumber=\"204\"",
                "RevisionNumber=\"4294967296\"",
                "UpdateIdentity/@RevisionNumber",
            ),
            (
                "UpdateType=\"Software\"",
                "UpdateType=\"Firmware\"",
                "Properties/@UpdateType",
            ),
            (
                "CategoryType=\"UpdateClassification\"",
                "CategoryType=\"Vendor\"",
                "CategoryInformation/@CategoryType",
            ),
            ("Size=\"11606440\"", "Size=\"-1\"", "File/@Size"),
            (
                "IsEncrypted=\"true\"",
                "IsEncrypted=\"yes\"",
                "File/@IsEncrypted",
            ),
            (
                "IsCategory=\"true\"",
                "IsCategory=\"TRUE!\"",
                "Prerequisites/AtLeastOne/@IsCategory",
            ),
            (
                "EulaID=\"5c2a0b3e-0d3f-4b4e-8a1c-abcdefabcdef\"",
                "EulaID=\"eula\"",
                "Properties/@EulaID",
            ),
            (
                "aaaaaaaa-0000-0000-0000-000000000004",
                "not-a-guid",
                "Prerequisites/AtLeastOne/UpdateIdentity/@UpdateID",
            ),
        ] {
            let doc = variant(from, to);
            match parse(doc.as_bytes()) {
                Err(MetadataError::BadValue { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{to}: expected BadValue({what}), got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_too_deep_nesting() {
        let nest = |n: usize| {
            let open = "<x:d>".repeat(n);
            let close = "</x:d>".repeat(n);
            variant(
                "<u:ApplicabilityRules>",
                &format!("<u:ApplicabilityRules>{open}{close}"),
            )
        };
        // Update (1) > ApplicabilityRules (2) > n more.
        assert!(parse(nest(MAX_DEPTH - 2).as_bytes()).is_ok());
        assert!(matches!(
            parse(nest(MAX_DEPTH - 1).as_bytes()),
            Err(MetadataError::TooDeep)
        ));
        assert!(matches!(
            parse(nest(100_000).as_bytes()),
            Err(MetadataError::TooDeep)
        ));
    }

    #[test]
    fn rejects_too_large() {
        let mut doc = SAMPLE.as_bytes().to_vec();
        doc.resize(MAX_DOCUMENT_BYTES + 1, b' ');
        assert!(matches!(parse(&doc), Err(MetadataError::TooLarge)));
    }

    #[test]
    fn utf16_with_bom_parses_like_utf8() {
        let expected = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(parse(&utf16(SAMPLE, false)).unwrap(), expected);
        assert_eq!(parse(&utf16(SAMPLE, true)).unwrap(), expected);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(SAMPLE.as_bytes());
        assert_eq!(parse(&bom).unwrap(), expected);
        // Without a byte-order mark (XML 1.0 Appendix F detection).
        assert_eq!(parse(&utf16(SAMPLE, false)[2..]).unwrap(), expected);
        assert_eq!(parse(&utf16(SAMPLE, true)[2..]).unwrap(), expected);

        let real = real_document("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml");
        let text = std::str::from_utf8(&real).unwrap();
        let expected = parse(&real).unwrap();
        assert_eq!(parse(&utf16(text, false)).unwrap(), expected);
        assert_eq!(parse(&utf16(text, true)).unwrap(), expected);
    }

    #[test]
    fn rejects_broken_encodings() {
        let mut odd = utf16(SAMPLE, false);
        odd.push(b'<');
        assert!(matches!(parse(&odd), Err(MetadataError::Encoding(_))));
        let mut lone_surrogate = vec![0xFF, 0xFE];
        lone_surrogate.extend_from_slice(&0xD800u16.to_le_bytes());
        assert!(matches!(
            parse(&lone_surrogate),
            Err(MetadataError::Encoding(_))
        ));
        let mut latin1 = SAMPLE.as_bytes().to_vec();
        latin1.push(0xE9);
        assert!(matches!(parse(&latin1), Err(MetadataError::Encoding(_))));
        assert!(matches!(
            parse(&[0xFF, 0xFE, 0, 0, b'<', 0, 0, 0]),
            Err(MetadataError::Encoding(_))
        ));
        let declared = variant("encoding=\"utf-8\"", "encoding=\"ISO-8859-1\"");
        assert!(matches!(
            parse(declared.as_bytes()),
            Err(MetadataError::Encoding(_))
        ));
        assert!(matches!(
            decode_text(b"<a>\0</a>"),
            Err(MetadataError::Encoding(_))
        ));
    }

    #[test]
    fn upper_case_guid_equals_lower_case() {
        let upper = SAMPLE.replace(
            "1b2f7e44-8a3c-4d2e-9f10-0123456789ab",
            "1B2F7E44-8A3C-4D2E-9F10-0123456789AB",
        );
        let upper = upper.replace(
            "aaaaaaaa-0000-0000-0000-000000000004",
            "AAAAAAAA-0000-0000-0000-000000000004",
        );
        assert_eq!(parse(upper.as_bytes()).unwrap(), sample_expected());
    }

    #[test]
    fn extra_localized_elements_are_checked() {
        let no_title = variant("<u:Title>Fisch</u:Title>", "");
        assert!(matches!(
            parse(no_title.as_bytes()),
            Err(MetadataError::Missing("LocalizedProperties/Title"))
        ));
        let two_titles = variant(
            "<u:Title>Fisch</u:Title>",
            "<u:Title>A</u:Title><u:Title>B</u:Title>",
        );
        assert!(matches!(
            parse(two_titles.as_bytes()),
            Err(MetadataError::Duplicate("LocalizedProperties/Title"))
        ));
        let empty_description = variant(
            "<u:Title>Fisch</u:Title>",
            "<u:Title>Fisch</u:Title><u:Description/>",
        );
        let parsed = parse(empty_description.as_bytes()).unwrap();
        assert_eq!(parsed.localized[1].description.as_deref(), Some(""));
    }

    #[test]
    fn category_ids_and_title_helpers() {
        let m = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            m.category_ids().collect::<Vec<_>>(),
            vec![
                id("aaaaaaaa-0000-0000-0000-000000000002"),
                id("aaaaaaaa-0000-0000-0000-000000000003")
            ]
        );
        assert_eq!(m.title("DE"), Some("Fisch"));
        assert_eq!(m.title("fr"), m.title("en"));
    }

    fn escape(s: &str, numeric: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match (c, numeric) {
                ('&', false) => out.push_str("&amp;"),
                ('<', false) => out.push_str("&lt;"),
                ('>', false) => out.push_str("&gt;"),
                ('"', false) => out.push_str("&quot;"),
                ('\'', false) => out.push_str("&apos;"),
                ('&' | '<' | '>' | '"' | '\'', true) => out.push_str(&format!("&#{};", c as u32)),
                (c, true) if !c.is_ascii() => out.push_str(&format!("&#x{:X};", c as u32)),
                (c, _) => out.push(c),
            }
        }
        out
    }

    fn guid_text(id: Uuid, upper: bool) -> String {
        let s = id.hyphenated().to_string();
        if upper { s.to_ascii_uppercase() } else { s }
    }

    proptest! {
        #[test]
        fn round_trip(
            id_bytes in any::<[u8; 16]>(),
            revision in any::<i32>(),
            upper in any::<bool>(),
            numeric in any::<bool>(),
            encoding in 0u8..3,
            kb in proptest::option::of("[0-9]{1,8}"),
            locs in proptest::collection::vec(
                (
                    "[a-z]{2}(-[a-z]{2})?",
                    "[ -~àéü€日本\u{1F600}\t\n]{0,40}",
                    proptest::option::of("[ -~àéü€日本\u{1F600}\t\n]{0,40}"),
                ),
                0..4,
            ),
            required in proptest::collection::vec(any::<[u8; 16]>(), 0..3),
            alo in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<[u8; 16]>(), 0..3)),
                0..3,
            ),
            bundled in proptest::collection::vec(
                (any::<[u8; 16]>(), proptest::option::of(any::<i32>())),
                0..5,
            ),
            superseded in proptest::collection::vec(any::<[u8; 16]>(), 0..3),
        ) {
            let id = Uuid::from_bytes(id_bytes);
            let mut doc = format!(
                "<?xml version=\"1.0\"?>\n<upd:Update xmlns:upd=\"{UPDATE_NS}\">\
                 <upd:UpdateIdentity UpdateID=\"{}\" RevisionNumber=\"{revision}\"/>\
                 <upd:Properties UpdateType=\"Software\" DefaultPropertiesLanguage=\"en\">",
                guid_text(id, upper)
            );
            if let Some(kb) = &kb {
                doc.push_str(&format!("<upd:KBArticleID>{kb}</upd:KBArticleID>"));
            }
            doc.push_str("</upd:Properties><upd:LocalizedPropertiesCollection>");
            for (language, title, description) in &locs {
                doc.push_str(&format!(
                    "<upd:LocalizedProperties><upd:Language>{language}</upd:Language>\
                     <upd:Title>{}</upd:Title>",
                    escape(title, numeric)
                ));
                if let Some(d) = description {
                    doc.push_str(&format!("<upd:Description>{}</upd:Description>", escape(d, numeric)));
                }
                doc.push_str("</upd:LocalizedProperties>");
            }
            doc.push_str("</upd:LocalizedPropertiesCollection><upd:Relationships><upd:Prerequisites>");
            let mut prerequisites = Vec::new();
            for r in &required {
                let r = Uuid::from_bytes(*r);
                doc.push_str(&format!("<upd:UpdateIdentity UpdateID=\"{}\"/>", guid_text(r, upper)));
                prerequisites.push(Prerequisite::Required(r));
            }
            for (is_category, ids) in &alo {
                doc.push_str(&format!("<upd:AtLeastOne IsCategory=\"{is_category}\">"));
                let ids: Vec<Uuid> = ids.iter().map(|b| Uuid::from_bytes(*b)).collect();
                for i in &ids {
                    doc.push_str(&format!("<upd:UpdateIdentity UpdateID=\"{}\"/>", guid_text(*i, upper)));
                }
                doc.push_str("</upd:AtLeastOne>");
                prerequisites.push(Prerequisite::AtLeastOne { is_category: *is_category, ids });
            }
            doc.push_str("</upd:Prerequisites><upd:BundledUpdates><upd:AtLeastOne>");
            let mut bundled_refs = Vec::new();
            for (b, rev) in &bundled {
                let b = Uuid::from_bytes(*b);
                match rev {
                    Some(rev) => doc.push_str(&format!(
                        "<upd:UpdateIdentity UpdateID=\"{}\" RevisionNumber=\"{rev}\"/>",
                        guid_text(b, upper)
                    )),
                    None => doc.push_str(&format!("<upd:UpdateIdentity UpdateID=\"{}\"/>", guid_text(b, upper))),
                }
                bundled_refs.push(UpdateRef { id: b, revision: *rev });
            }
            doc.push_str("</upd:AtLeastOne></upd:BundledUpdates><upd:SupersededUpdates>");
            let superseded: Vec<Uuid> = superseded.iter().map(|b| Uuid::from_bytes(*b)).collect();
            for s in &superseded {
                doc.push_str(&format!("<upd:UpdateIdentity UpdateID=\"{}\"/>", guid_text(*s, upper)));
            }
            doc.push_str("</upd:SupersededUpdates></upd:Relationships></upd:Update>");

            let bytes = match encoding {
                0 => doc.clone().into_bytes(),
                1 => utf16(&doc, false),
                _ => utf16(&doc, true),
            };
            let parsed = parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
            let expected = UpdateMetadata {
                id,
                revision,
                kind: UpdateKind::Software,
                category_type: None,
                default_language: Some("en".into()),
                kb_article_id: kb.clone(),
                creation_date: None,
                publication_state: None,
                eula_id: None,
                secured_fragment: false,
                languages: vec![],
                localized: locs
                    .iter()
                    .map(|(language, title, description)| Localized {
                        language: language.clone(),
                        title: title.clone(),
                        description: description.clone(),
                    })
                    .collect(),
                prerequisites,
                bundled: bundled_refs,
                superseded,
                files: Vec::new(),
            };
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_sample_never_panics(cut in 0usize..4000, byte in any::<u8>()) {
            let mut doc = SAMPLE.as_bytes().to_vec();
            if let Some(b) = doc.get_mut(cut % SAMPLE.len()) {
                *b = byte;
            }
            let _ = parse(&doc);
        }
    }
}
