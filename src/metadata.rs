//! The WSUS update metadata model: a parser for update XML documents
//! (namespace `http://schemas.microsoft.com/msus/2002/12/Update`).
//!
//! The original XML bytes stay the source of truth (the store keeps them
//! verbatim); this module only extracts the fields gapsync indexes, following
//! the XPATH table of MS-WSUSSS 3.1.1.1 and the prerequisite rules of
//! MS-WUSP 3.1.1.
//!
//! Hostile input: documents with a DTD (and so any entity declaration) are
//! rejected, nesting depth and document size are bounded, and every error
//! names what was wrong.

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
}

// TEMPORARY until the parser lands.
pub fn parse(_: &[u8]) -> Result<UpdateMetadata, MetadataError> {
    Err(MetadataError::Missing("parser"))
}
