//! A synthetic but realistic WSUS catalog for tests, demos and load: update
//! XML shaped like the real documents (namespace
//! `http://schemas.microsoft.com/msus/2002/12/Update`, `upd:` prefix) and,
//! optionally, incompressible content files whose digests the metadata
//! carries.
//!
//! Everything is written in one [`CatalogBatch`](crate::store::CatalogBatch)
//! (one transaction) and streamed: one document is generated, added and
//! dropped before the next; content is produced by a `Read` adapter over a
//! ChaCha8 keystream and hashed while it is staged. Memory stays flat however
//! many updates or bytes are asked for (staged files wait in `staging/`, on
//! disk, until the batch commits).
//!
//! # What is generated
//!
//! Fixed documents, identical for every seed and option (GUIDs are
//! `Uuid::new_v5` of fixed names, dates are fixed), so a second run re-adds
//! them as `AlreadyPresent`:
//! - categories ([`FIXED_CATEGORIES`] = 20): one Company ("Contoso"), 3
//!   ProductFamily, 9 Product (each with an `AtLeastOne IsCategory="true"`
//!   prerequisite on its family; families have one on the company), and the
//!   7 UpdateClassification categories with their real, well-known WSUS
//!   GUIDs at revision 1 (Security Updates, Critical Updates, Definition
//!   Updates, Updates, Update Rollups, Feature Packs, Drivers);
//! - detectoids ([`FIXED_DETECTOIDS`] = 6).
//!
//! The Contoso categories and the detectoids are at revision 100.
//!
//! Then `N = updates` update documents (software and driver updates; the
//! fixed documents do not count), every one at revision 100:
//! - `bundles = N / 4`: Software, no files, `KBArticleID`, title and
//!   description in en, de, fr, ja and es, prerequisites (a required
//!   detectoid, `AtLeastOne IsCategory="true"` on the classification and on
//!   the product), `BundledUpdates/AtLeastOne` naming 1–3 leaves with their
//!   (newest) `RevisionNumber`; a bundle supersedes the previous bundle of
//!   the same product with probability 1/2 (`SupersededUpdates`), which
//!   makes supersedence chains;
//! - `drivers = N / 25`: UpdateType Driver with `WindowsDriverMetaData`;
//! - `leaves = N - bundles - drivers`: Software, "HIDDEN"-style titles,
//!   `min(leaves, 2 * bundles)` of them bundled (each bundle gets 1–3, all
//!   of them used), the rest standalone (with a KB article); a leaf carries
//!   `Files` when content is assigned to it.
//! - `software = bundles + leaves` (the report's `software` counts bundles
//!   too), so `software + drivers = N`.
//!
//! Generation order: one group per bundle (its leaves, then the bundle),
//! with the standalone leaves and the drivers spread evenly between the
//! groups: before group `g` (0-based), standalone leaves and then drivers
//! are added until `floor((g+1) * standalone / bundles)` and
//! `floor((g+1) * drivers / bundles)` of them exist (with no bundles, all
//! standalone leaves, then all drivers).
//!
//! Update number `u` (0-based, in generation order) with `u % 20 == 19` also
//! gets revision 101 (same document with a changed title), so the run adds
//! `N + N / 20` update revisions plus the 26 fixed ones:
//! `revisions = 26 + N + N / 20` on an empty store.
//!
//! # Content
//!
//! `content_bytes = C` is the exact total. `C = 0` generates no files.
//! Otherwise `F = min(leaves, max(1, round(C / 4 MiB)))` files (an error
//! when there are no leaves) spread evenly over the leaves (leaf `l` gets a
//! file when `floor((l+1)F/leaves) > floor(lF/leaves)`). Sizes follow a
//! discretised log-normal (σ = 1) with mean `C / F` (about 4 MiB) and a
//! minimum of `min(64 KiB, C / F)`, computed with integer arithmetic so the
//! sizes sum to exactly `C`. Bytes are a ChaCha8 keystream keyed by the
//! options, one stream per file index. File names look like
//! `windows10.0-kb5031234-x64_<sha1 hex>.msu` (`.cab`, `.msu` or `.exe`).
//! The report's `content_files` / `content_bytes` count the files this run
//! generated (all referenced by its XML); files already in the store are
//! dropped at commit.
//!
//! # Determinism
//!
//! The catalog is a pure function of `(seed, updates, content_bytes)`: no
//! wall clock, no hash-map order, no random UUIDs. Update GUIDs and all
//! other choices come from a ChaCha8 generator keyed by SHA-256 of the three
//! options, so different options (in particular different seeds) give
//! unrelated random (version 4 layout) update ids, which never meet an
//! earlier run's ids (a collision has probability about 2^-122 per pair),
//! so a run never conflicts with the revisions of a run with other options.

use std::fmt::Write as _;
use std::io::{self, Read};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::{Added, CatalogBatch, Store};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Software and driver update documents (categories and detectoids
    /// come on top).
    pub updates: u64,
    /// Exact total size of the generated content files (0: none).
    pub content_bytes: u64,
    pub seed: u64,
}

/// What one run generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerateReport {
    /// Category updates (company, families, products, classifications).
    pub categories: u64,
    pub detectoids: u64,
    /// Software updates, bundles included.
    pub software: u64,
    /// Of `software`, the bundles.
    pub bundles: u64,
    pub drivers: u64,
    pub revisions_added: u64,
    pub revisions_already_present: u64,
    /// Content files generated and referenced by this run's metadata.
    pub content_files: u64,
    pub content_bytes: u64,
}

/// Largest `updates` accepted.
pub const MAX_UPDATES: u64 = 100_000_000;
/// Category documents every run generates.
pub const FIXED_CATEGORIES: u64 = (1 + FAMILIES.len() + PRODUCTS.len() + CLASSES.len()) as u64;
/// Detectoid documents every run generates.
pub const FIXED_DETECTOIDS: u64 = DETECTOIDS.len() as u64;
/// Mean content file size aimed at.
pub const MEAN_FILE_SIZE: u64 = 4 << 20;
/// Smallest content file (unless `content_bytes` is smaller).
pub const MIN_FILE_SIZE: u64 = 64 << 10;

const NS_UPD: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
const NS_PUB: &str = "http://schemas.microsoft.com/msus/2002/12/Publishing";
const NS_CAT: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category";
const NS_LAR: &str = "http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules";
const NS_BAR: &str = "http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules";
const NS_CMD: &str =
    "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation";
const NS_DRV: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

const BASE_REVISION: i32 = 100;
const SECOND_REVISION: i32 = 101;
/// Update number `u` gets a second revision when `u % SECOND_EVERY == SECOND_EVERY - 1`.
const SECOND_EVERY: u64 = 20;
/// 2019-01-08T18:00:00Z, where the generated timeline starts.
const TIMELINE_START: i64 = 1_546_970_400;
/// The generated timeline spans about five years whatever `updates` is.
const TIMELINE_SPAN: i64 = 5 * 365 * 86_400;
/// Creation date of every fixed document: 2018-06-01T00:00:00Z.
const FIXED_DATE: i64 = 1_527_811_200;

// ---------------------------------------------------------------------------
// The fixed part of the catalog.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Security,
    Critical,
    Definition,
    Updates,
    Rollups,
    FeaturePacks,
    Drivers,
}

/// (class, GUID, en, de, fr, ja, es) for the well-known classifications.
const CLASSES: [(Class, u128, [&str; 5]); 7] = [
    (
        Class::Security,
        0x0fa1201d_4330_4fa8_8ae9_b877473b6441,
        [
            "Security Updates",
            "Sicherheitsupdates",
            "Mises à jour de la sécurité",
            "セキュリティ更新プログラム",
            "Actualizaciones de seguridad",
        ],
    ),
    (
        Class::Critical,
        0xe6cf1350_c01b_414d_a61f_263d14d133b4,
        [
            "Critical Updates",
            "Kritische Updates",
            "Mises à jour critiques",
            "重要な更新",
            "Actualizaciones críticas",
        ],
    ),
    (
        Class::Definition,
        0xe0789628_ce08_4437_be74_2495b842f43b,
        [
            "Definition Updates",
            "Definitionsupdates",
            "Mises à jour de définitions",
            "定義更新",
            "Actualizaciones de definiciones",
        ],
    ),
    (
        Class::Updates,
        0xcd5ffd1e_e932_4e3a_bf74_18bf0b1bbd83,
        [
            "Updates",
            "Updates",
            "Mises à jour",
            "更新",
            "Actualizaciones",
        ],
    ),
    (
        Class::Rollups,
        0x28bc880e_0592_4cbf_8f95_c79b17911d5f,
        [
            "Update Rollups",
            "Updaterollups",
            "Correctifs cumulatifs",
            "更新プログラムのロールアップ",
            "Paquetes acumulativos de actualizaciones",
        ],
    ),
    (
        Class::FeaturePacks,
        0xb54e7d24_7add_428f_8b75_90a396fa584f,
        [
            "Feature Packs",
            "Feature Packs",
            "Feature Packs",
            "Feature Pack",
            "Feature Packs",
        ],
    ),
    (
        Class::Drivers,
        0xebfc1fc5_71a4_4f7b_9aca_3b9a503104a0,
        [
            "Drivers",
            "Treiber",
            "Pilotes",
            "ドライバー",
            "Controladores",
        ],
    ),
];

/// Languages of bundles and categories, in document order.
const LANGS: [&str; 5] = ["en", "de", "fr", "ja", "es"];

impl Class {
    fn index(self) -> usize {
        self as usize
    }
    fn id(self) -> Uuid {
        Uuid::from_u128(CLASSES[self.index()].1)
    }
    /// The singular noun used in titles, per language of [`LANGS`].
    fn noun(self) -> [&'static str; 5] {
        match self {
            Class::Security => [
                "Security Update",
                "Sicherheitsupdate",
                "Mise à jour de sécurité",
                "セキュリティ更新プログラム",
                "Actualización de seguridad",
            ],
            Class::Critical => [
                "Critical Update",
                "Kritisches Update",
                "Mise à jour critique",
                "重要な更新プログラム",
                "Actualización crítica",
            ],
            Class::Definition => [
                "Definition Update",
                "Definitionsupdate",
                "Mise à jour de définitions",
                "定義更新プログラム",
                "Actualización de definiciones",
            ],
            Class::Updates => [
                "Update",
                "Update",
                "Mise à jour",
                "更新プログラム",
                "Actualización",
            ],
            Class::Rollups => [
                "Update Rollup",
                "Updaterollup",
                "Correctif cumulatif",
                "更新プログラムのロールアップ",
                "Paquete acumulativo de actualizaciones",
            ],
            Class::FeaturePacks => [
                "Feature Pack",
                "Feature Pack",
                "Feature Pack",
                "機能パック",
                "Feature Pack",
            ],
            Class::Drivers => ["Driver", "Treiber", "Pilote", "ドライバー", "Controlador"],
        }
    }
}

/// (key, name) of the product families.
const FAMILIES: [(&str, &str); 3] = [
    ("windows", "Contoso Windows"),
    ("office", "Contoso Office"),
    ("server", "Contoso Server"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arch {
    X64,
    X86,
    Arm64,
}

impl Arch {
    fn file(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::X86 => "x86",
            Arch::Arm64 => "arm64",
        }
    }
    fn build(self) -> &'static str {
        match self {
            Arch::X64 => "amd64fre",
            Arch::X86 => "x86fre",
            Arch::Arm64 => "arm64fre",
        }
    }
    /// "x64-based Systems" per language of [`LANGS`].
    fn systems(self) -> [&'static str; 5] {
        match self {
            Arch::X64 => [
                "x64-based Systems",
                "x64-basierte Systeme",
                "systèmes x64",
                "x64 ベース システム",
                "sistemas basados en x64",
            ],
            Arch::X86 => [
                "x86-based Systems",
                "x86-basierte Systeme",
                "systèmes x86",
                "x86 ベース システム",
                "sistemas basados en x86",
            ],
            Arch::Arm64 => [
                "ARM64-based Systems",
                "ARM64-basierte Systeme",
                "systèmes ARM64",
                "ARM64 ベース システム",
                "sistemas basados en ARM64",
            ],
        }
    }
    fn detectoid(self) -> usize {
        match self {
            Arch::X64 => 0,
            Arch::X86 => 1,
            Arch::Arm64 => 2,
        }
    }
}

struct Product {
    key: &'static str,
    name: &'static str,
    family: usize,
    /// File name prefix (`windows10.0-kb…`).
    prefix: &'static str,
    archs: &'static [Arch],
    /// Detectoid index, or `None` for the architecture's detectoid.
    detectoid: Option<usize>,
    classes: &'static [Class],
    /// Version strings are `major.build.revision`, from this build on.
    major: &'static str,
    build: u32,
    /// Content file extensions (picked uniformly).
    exts: &'static [&'static str],
}

const WIN_CLASSES: &[Class] = &[
    Class::Security,
    Class::Security,
    Class::Security,
    Class::Critical,
    Class::Updates,
    Class::Updates,
    Class::Rollups,
    Class::FeaturePacks,
];
const WIN_EXTS: &[&str] = &["msu", "msu", "cab"];
const OFFICE_EXTS: &[&str] = &["cab", "exe"];
const OFFICE_CLASSES: &[Class] = &[
    Class::Security,
    Class::Security,
    Class::Critical,
    Class::Updates,
];

const PRODUCTS: [Product; 9] = [
    Product {
        key: "windows-10",
        name: "Contoso Windows 10",
        family: 0,
        prefix: "windows10.0",
        archs: &[Arch::X64, Arch::X64, Arch::X86, Arch::Arm64],
        detectoid: None,
        classes: WIN_CLASSES,
        major: "10.0",
        build: 19045,
        exts: WIN_EXTS,
    },
    Product {
        key: "windows-11",
        name: "Contoso Windows 11",
        family: 0,
        prefix: "windows11.0",
        archs: &[Arch::X64, Arch::X64, Arch::Arm64],
        detectoid: None,
        classes: WIN_CLASSES,
        major: "10.0",
        build: 22631,
        exts: WIN_EXTS,
    },
    Product {
        key: "defender",
        name: "Contoso Defender Antivirus",
        family: 0,
        prefix: "defender-am",
        archs: &[Arch::X64, Arch::X86, Arch::Arm64],
        detectoid: Some(5),
        classes: &[Class::Definition],
        major: "1.1",
        build: 26080,
        exts: &["exe"],
    },
    Product {
        key: "windows-drivers",
        name: "Contoso Windows 10 and later drivers",
        family: 0,
        prefix: "driver",
        archs: &[Arch::X64],
        detectoid: None,
        classes: &[Class::Drivers],
        major: "10.0",
        build: 1,
        exts: &["cab"],
    },
    Product {
        key: "office-2019",
        name: "Contoso Office 2019",
        family: 1,
        prefix: "office2019",
        archs: &[Arch::X64, Arch::X86],
        detectoid: Some(3),
        classes: OFFICE_CLASSES,
        major: "16.0",
        build: 10417,
        exts: OFFICE_EXTS,
    },
    Product {
        key: "office-2021",
        name: "Contoso Office 2021",
        family: 1,
        prefix: "office2021",
        archs: &[Arch::X64, Arch::X86],
        detectoid: Some(3),
        classes: OFFICE_CLASSES,
        major: "16.0",
        build: 14332,
        exts: OFFICE_EXTS,
    },
    Product {
        key: "apps-tools",
        name: "Contoso Apps & Tools <LTSC>",
        family: 1,
        prefix: "contosoapps",
        archs: &[Arch::X64],
        detectoid: Some(3),
        classes: OFFICE_CLASSES,
        major: "16.0",
        build: 16130,
        exts: OFFICE_EXTS,
    },
    Product {
        key: "server-2022",
        name: "Contoso Server 2022",
        family: 2,
        prefix: "windows10.0",
        archs: &[Arch::X64],
        detectoid: Some(4),
        classes: WIN_CLASSES,
        major: "10.0",
        build: 20348,
        exts: WIN_EXTS,
    },
    Product {
        key: "sql-server-2022",
        name: "Contoso SQL Server 2022",
        family: 2,
        prefix: "sqlserver2022",
        archs: &[Arch::X64],
        detectoid: Some(4),
        classes: OFFICE_CLASSES,
        major: "16.0",
        build: 4003,
        exts: &["exe"],
    },
];
/// Index of the drivers product in [`PRODUCTS`].
const DRIVERS_PRODUCT: usize = 3;

/// (key, title, IsInstalled rule) of the detectoids.
const DETECTOIDS: [(&str, &str, &str); 6] = [
    (
        "x64",
        "Contoso Windows x64-based systems",
        r#"<bar:Processor Architecture="9" />"#,
    ),
    (
        "x86",
        "Contoso Windows x86-based systems",
        r#"<bar:Processor Architecture="0" />"#,
    ),
    (
        "arm64",
        "Contoso Windows ARM64-based systems",
        r#"<bar:Processor Architecture="12" />"#,
    ),
    (
        "office",
        "Contoso Office is installed",
        r#"<bar:RegKeyExists Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Contoso\Office" />"#,
    ),
    (
        "server",
        "Contoso Server x64 editions",
        r#"<lar:And><bar:WindowsVersion Comparison="GreaterThanOrEqualTo" MajorVersion="10" ProductType="3" /><bar:Processor Architecture="9" /></lar:And>"#,
    ),
    (
        "defender",
        "Contoso Defender Antivirus platform is installed",
        r#"<bar:RegKeyExists Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Contoso\Defender" />"#,
    ),
];

/// Namespace of the fixed documents' GUIDs.
fn fixed_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://gapsync.invalid/generate/v1")
}

fn fixed_id(name: &str) -> Uuid {
    Uuid::new_v5(&fixed_namespace(), name.as_bytes())
}

/// The GUIDs of the fixed documents.
struct FixedIds {
    company: Uuid,
    publisher: Uuid,
    families: Vec<Uuid>,
    products: Vec<Uuid>,
    detectoids: Vec<Uuid>,
}

impl FixedIds {
    fn new() -> Self {
        FixedIds {
            company: fixed_id("company/contoso"),
            publisher: fixed_id("publisher/contoso"),
            families: FAMILIES
                .iter()
                .map(|(k, _)| fixed_id(&format!("family/{k}")))
                .collect(),
            products: PRODUCTS
                .iter()
                .map(|p| fixed_id(&format!("product/{}", p.key)))
                .collect(),
            detectoids: DETECTOIDS
                .iter()
                .map(|(k, _, _)| fixed_id(&format!("detectoid/{k}")))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Counts.

/// How many of each kind `updates` yields (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub bundles: u64,
    pub drivers: u64,
    pub leaves: u64,
    pub bundled_leaves: u64,
    pub standalone_leaves: u64,
    pub second_revisions: u64,
    pub content_files: u64,
}

impl Plan {
    pub fn new(updates: u64, content_bytes: u64) -> Result<Plan> {
        if updates > MAX_UPDATES {
            return Err(Error::invalid("updates", format!("at most {MAX_UPDATES}")));
        }
        let bundles = updates / 4;
        let drivers = updates / 25;
        let leaves = updates - bundles - drivers;
        let bundled_leaves = leaves.min(2 * bundles);
        let content_files = if content_bytes == 0 {
            0
        } else if leaves == 0 {
            return Err(Error::invalid(
                "content bytes",
                "content needs update leaves to carry it; ask for at least 1 update",
            ));
        } else {
            let f = (content_bytes + MEAN_FILE_SIZE / 2) / MEAN_FILE_SIZE;
            f.clamp(1, leaves)
        };
        Ok(Plan {
            bundles,
            drivers,
            leaves,
            bundled_leaves,
            standalone_leaves: leaves - bundled_leaves,
            second_revisions: updates / SECOND_EVERY,
            content_files,
        })
    }

    /// Every revision a run adds to an empty store.
    pub fn total_revisions(&self) -> u64 {
        FIXED_CATEGORIES + FIXED_DETECTOIDS + self.updates() + self.second_revisions
    }

    pub fn updates(&self) -> u64 {
        self.bundles + self.drivers + self.leaves
    }
}

/// `floor(a * b / c)` without overflow (`c > 0`).
fn muldiv(a: u64, b: u64, c: u64) -> u64 {
    ((a as u128 * b as u128) / c as u128) as u64
}

// ---------------------------------------------------------------------------
// Randomness.

/// A 32-byte ChaCha key for one purpose of one set of options.
fn derive_key(opts: &GenerateOptions, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"gapsync-generate-v1\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(opts.seed.to_le_bytes());
    h.update(opts.updates.to_le_bytes());
    h.update(opts.content_bytes.to_le_bytes());
    h.finalize().into()
}

struct Rng(ChaCha8Rng);

impl Rng {
    fn new(key: [u8; 32]) -> Self {
        Rng(ChaCha8Rng::from_seed(key))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        self.0.fill_bytes(&mut b);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// Discretised log-normal quantiles (σ = 1, ×1000), the size weights.
const LOGNORMAL: [u64; 64] = [
    89, 137, 172, 202, 229, 255, 280, 304, 329, 352, 376, 400, 424, 448, 472, 497, 522, 547, 573,
    600, 627, 655, 683, 712, 742, 773, 805, 838, 872, 907, 943, 981, 1020, 1061, 1103, 1147, 1194,
    1242, 1294, 1347, 1404, 1464, 1527, 1595, 1667, 1744, 1827, 1916, 2012, 2117, 2233, 2360, 2501,
    2659, 2838, 3044, 3284, 3570, 3920, 4364, 4958, 5822, 7297, 11218,
];

fn size_weight(rng: &mut Rng) -> u64 {
    let r = rng.next();
    LOGNORMAL[(r & 63) as usize] * (1024 + ((r >> 8) & 255))
}

/// Sizes of the content files, one after the other, summing exactly to the
/// total; the weights are drawn twice from the same stream (a first pass
/// sums them) so nothing is held per file.
struct Sizes {
    rng: Rng,
    min: u64,
    spread: u64,
    total_weight: u128,
    weight_so_far: u128,
    spread_so_far: u64,
}

impl Sizes {
    fn new(key: [u8; 32], files: u64, total: u64) -> Self {
        let mut rng = Rng::new(key);
        let mut total_weight = 0u128;
        for _ in 0..files {
            total_weight += size_weight(&mut rng) as u128;
        }
        let min = total
            .checked_div(files)
            .map_or(0, |per_file| MIN_FILE_SIZE.min(per_file));
        Sizes {
            rng: Rng::new(key),
            min,
            spread: total - min * files,
            total_weight: total_weight.max(1),
            weight_so_far: 0,
            spread_so_far: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.weight_so_far += size_weight(&mut self.rng) as u128;
        let cum = ((self.spread as u128 * self.weight_so_far) / self.total_weight) as u64;
        let cum = cum.min(self.spread);
        let size = self.min + (cum - self.spread_so_far);
        self.spread_so_far = cum;
        size
    }
}

/// An incompressible byte stream: `len` bytes of a ChaCha8 keystream,
/// served from a small fixed block so the bytes do not depend on how the
/// consumer sizes its reads.
struct Keystream {
    rng: ChaCha8Rng,
    remaining: u64,
    block: Vec<u8>,
    pos: usize,
}

const KEYSTREAM_BLOCK: usize = 64 * 1024;

impl Keystream {
    fn new(key: [u8; 32], stream: u64, len: u64) -> Self {
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Keystream {
            rng,
            remaining: len,
            block: vec![0; KEYSTREAM_BLOCK],
            pos: KEYSTREAM_BLOCK,
        }
    }
}

impl Read for Keystream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.block.len() {
            self.rng.fill_bytes(&mut self.block);
            self.pos = 0;
        }
        let avail = self.block.len() - self.pos;
        let n = buf
            .len()
            .min(avail)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// XML helpers.

/// Appends `s` escaped for XML text and double-quoted attribute values.
fn esc(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2024-03-12T17:01:02.345Z` (with `millis`) or `2024-03-12T17:01:02Z`.
fn write_date(out: &mut String, secs: i64, millis: Option<u32>) {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if let Some(ms) = millis {
        let _ = write!(out, ".{ms:03}");
    }
    out.push('Z');
}

/// "2024-03" of a timestamp.
fn year_month(secs: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
    (y, m)
}

fn open_update(out: &mut String, namespaces: &[(&str, &str)], id: Uuid, revision: i32) {
    out.push_str("<upd:Update");
    for (prefix, ns) in namespaces {
        let _ = write!(out, " xmlns:{prefix}=\"{ns}\"");
    }
    let _ = write!(
        out,
        " xmlns:upd=\"{NS_UPD}\"><upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"{revision}\" />"
    );
}

fn localized(out: &mut String, lang: &str, title: &str, description: Option<&str>) {
    let _ = write!(
        out,
        "<upd:LocalizedProperties><upd:Language>{lang}</upd:Language><upd:Title>"
    );
    esc(out, title);
    out.push_str("</upd:Title>");
    if let Some(d) = description {
        out.push_str("<upd:Description>");
        esc(out, d);
        out.push_str("</upd:Description>");
    }
    out.push_str("</upd:LocalizedProperties>");
}

fn identity(out: &mut String, id: Uuid, revision: Option<i32>) {
    let _ = write!(out, "<upd:UpdateIdentity UpdateID=\"{id}\"");
    if let Some(r) = revision {
        let _ = write!(out, " RevisionNumber=\"{r}\"");
    }
    out.push_str(" />");
}

fn category_prereq(out: &mut String, id: Uuid) {
    out.push_str("<upd:AtLeastOne IsCategory=\"true\">");
    identity(out, id, None);
    out.push_str("</upd:AtLeastOne>");
}

/// Prerequisites of a generated update: its detectoid, then its
/// classification and product categories (the order of the real documents).
fn prerequisites(out: &mut String, detectoid: Uuid, class: Uuid, product: Uuid) {
    out.push_str("<upd:Prerequisites>");
    identity(out, detectoid, None);
    category_prereq(out, class);
    category_prereq(out, product);
    out.push_str("</upd:Prerequisites>");
}

/// One generated content file, as the metadata describes it.
#[derive(Clone)]
struct FileInfo {
    name: String,
    size: u64,
    modified: i64,
    sha1: [u8; 20],
    sha256: [u8; 32],
}

fn files_element(out: &mut String, f: &FileInfo) {
    out.push_str("<upd:Files><upd:File Digest=\"");
    out.push_str(&BASE64.encode(f.sha1));
    out.push_str("\" DigestAlgorithm=\"SHA1\" FileName=\"");
    esc(out, &f.name);
    let _ = write!(out, "\" Size=\"{}\" Modified=\"", f.size);
    write_date(out, f.modified, None);
    out.push_str("\"><upd:AdditionalDigest Algorithm=\"SHA256\">");
    out.push_str(&BASE64.encode(f.sha256));
    out.push_str("</upd:AdditionalDigest></upd:File></upd:Files>");
}

// ---------------------------------------------------------------------------
// The generator.

/// A bundle being generated: what its leaves inherit.
struct Group {
    product: usize,
    class: Class,
    arch: Arch,
    kb: u64,
    version: String,
}

struct Generator<'s, 'p> {
    batch: CatalogBatch<'s>,
    progress: &'p dyn Progress,
    fixed: FixedIds,
    rng: Rng,
    sizes: Sizes,
    content_key: [u8; 32],
    plan: Plan,
    report: GenerateReport,
    /// The document being written (reused).
    xml: String,
    name: String,
    /// Creation time of the latest update.
    now: i64,
    spacing: i64,
    /// Update documents generated so far (revision 100 ones).
    update_no: u64,
    /// Leaves generated so far.
    leaf_no: u64,
    /// Content files generated so far.
    file_no: u64,
    /// Newest bundle of each product, for supersedence.
    last_bundle: [Option<Uuid>; PRODUCTS.len()],
}

/// For unit tests: a writer on a new store in a temporary folder, with a
/// generated catalog of `updates` updates (seed 1, no content).
#[cfg(test)]
pub(crate) fn test_store(updates: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = dir.path().join("s");
    Store::init(&root, "t", crate::store::Mode::Autonomous).expect("a new store");
    let mut s = Store::open_writer(&root).expect("the store's writer");
    generate(
        &mut s,
        &GenerateOptions {
            updates,
            content_bytes: 0,
            seed: 1,
        },
        &crate::progress::Silent,
    )
    .expect("a generated catalog");
    (dir, s)
}

/// Generates a catalog into `store` (see the module doc) in one batch.
pub fn generate(
    store: &mut Store,
    opts: &GenerateOptions,
    progress: &dyn Progress,
) -> Result<GenerateReport> {
    let plan = Plan::new(opts.updates, opts.content_bytes)?;
    // Before anything is written: content already stored is not written
    // again, but it is counted (an upper bound).
    crate::store::content::check_free_space(
        store.root(),
        opts.content_bytes,
        "the generated content (--content-bytes)",
    )?;
    let batch = store.catalog_batch()?;
    let content_key = derive_key(opts, "content");
    let mut g = Generator {
        batch,
        progress,
        fixed: FixedIds::new(),
        rng: Rng::new(derive_key(opts, "catalog")),
        sizes: Sizes::new(
            derive_key(opts, "sizes"),
            plan.content_files,
            opts.content_bytes,
        ),
        content_key,
        plan,
        report: GenerateReport::default(),
        xml: String::with_capacity(16 * 1024),
        name: String::with_capacity(64),
        now: TIMELINE_START,
        spacing: (TIMELINE_SPAN / (opts.updates.max(1) as i64)).max(2),
        update_no: 0,
        leaf_no: 0,
        file_no: 0,
        last_bundle: [None; PRODUCTS.len()],
    };
    progress.phase("generate", Some(plan.total_revisions()), "updates");
    g.fixed_documents()?;
    g.updates()?;
    let Generator { batch, report, .. } = g;
    batch.commit()?;
    progress.finish();
    Ok(report)
}

impl Generator<'_, '_> {
    /// Adds the document in `self.xml`.
    fn add(&mut self, id: Uuid, revision: i32) -> Result<()> {
        self.name.clear();
        let _ = write!(self.name, "generated update {id} revision {revision}");
        match self.batch.add_revision(&self.name, self.xml.as_bytes())? {
            Added::New(_) => self.report.revisions_added += 1,
            Added::AlreadyPresent(_) => self.report.revisions_already_present += 1,
        }
        self.progress.advance(1);
        Ok(())
    }

    fn fixed_documents(&mut self) -> Result<()> {
        let company = self.fixed.company;
        self.category(company, BASE_REVISION, "Company", 1, None, &["Contoso"; 5])?;
        for (i, (_, name)) in FAMILIES.iter().enumerate() {
            let id = self.fixed.families[i];
            self.category(
                id,
                BASE_REVISION,
                "ProductFamily",
                2 + i as u32,
                Some(company),
                &[*name; 5],
            )?;
        }
        for (i, p) in PRODUCTS.iter().enumerate() {
            let (id, family) = (self.fixed.products[i], self.fixed.families[p.family]);
            self.category(
                id,
                BASE_REVISION,
                "Product",
                10 + i as u32,
                Some(family),
                &[p.name; 5],
            )?;
        }
        for (i, (class, _, names)) in CLASSES.iter().enumerate() {
            self.category(
                class.id(),
                1,
                "UpdateClassification",
                100 + i as u32,
                None,
                names,
            )?;
        }
        for i in 0..DETECTOIDS.len() {
            self.detectoid(i)?;
        }
        Ok(())
    }

    fn category(
        &mut self,
        id: Uuid,
        revision: i32,
        category_type: &str,
        order: u32,
        parent: Option<Uuid>,
        titles: &[&str; 5],
    ) -> Result<()> {
        let x = &mut self.xml;
        x.clear();
        open_update(x, &[("cat", NS_CAT), ("lar", NS_LAR)], id, revision);
        x.push_str(
            "<upd:Properties DefaultPropertiesLanguage=\"en\" IsPublic=\"true\" UpdateType=\"Category\" \
             Handler=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\" \
             PublicationState=\"Published\" CreationDate=\"",
        );
        write_date(x, FIXED_DATE + i64::from(order) * 60, Some(0));
        let _ = write!(
            x,
            "\" PublisherID=\"{}\"></upd:Properties><upd:LocalizedPropertiesCollection>",
            self.fixed.publisher
        );
        for (lang, title) in LANGS.iter().zip(titles) {
            localized(x, lang, title, Some(title));
        }
        x.push_str("</upd:LocalizedPropertiesCollection>");
        if let Some(parent) = parent {
            x.push_str("<upd:Relationships><upd:Prerequisites>");
            category_prereq(x, parent);
            x.push_str("</upd:Prerequisites></upd:Relationships>");
        }
        let (subcats, updates) = match category_type {
            "Company" | "ProductFamily" => ("false", "true"),
            _ => ("true", "false"),
        };
        let _ = write!(
            x,
            "<upd:ApplicabilityRules><upd:IsInstalled><lar:True /></upd:IsInstalled></upd:ApplicabilityRules>\
             <upd:HandlerSpecificData xsi:type=\"cat:Category\" xmlns:xsi=\"{NS_XSI}\">\
             <cat:CategoryInformation CategoryType=\"{category_type}\" ProhibitsSubcategories=\"{subcats}\" \
             ProhibitsUpdates=\"{updates}\" DisplayOrder=\"{order}\" /></upd:HandlerSpecificData></upd:Update>"
        );
        self.report.categories += 1;
        self.add(id, revision)
    }

    fn detectoid(&mut self, i: usize) -> Result<()> {
        let id = self.fixed.detectoids[i];
        let (_, title, rule) = DETECTOIDS[i];
        let x = &mut self.xml;
        x.clear();
        open_update(x, &[("bar", NS_BAR), ("lar", NS_LAR)], id, BASE_REVISION);
        x.push_str(
            "<upd:Properties UpdateType=\"Detectoid\" DefaultPropertiesLanguage=\"en\" \
             PublicationState=\"Published\" CreationDate=\"",
        );
        write_date(x, FIXED_DATE + 3600 + i as i64 * 60, Some(0));
        let _ = write!(
            x,
            "\" PublisherID=\"{}\"></upd:Properties><upd:LocalizedPropertiesCollection>",
            self.fixed.publisher
        );
        localized(x, "en", title, None);
        let _ = write!(
            x,
            "</upd:LocalizedPropertiesCollection><upd:ApplicabilityRules><upd:IsInstalled>{rule}\
             </upd:IsInstalled></upd:ApplicabilityRules></upd:Update>"
        );
        self.report.detectoids += 1;
        self.add(id, BASE_REVISION)
    }

    /// All `N` updates: bundle groups (their leaves, then the bundle), with
    /// the standalone leaves and the drivers interleaved evenly.
    fn updates(&mut self) -> Result<()> {
        let plan = self.plan;
        let (mut standalone, mut drivers) = (0u64, 0u64);
        let mut leaves_left = plan.bundled_leaves;
        for g in 0..plan.bundles {
            while standalone < muldiv(g + 1, plan.standalone_leaves, plan.bundles) {
                self.standalone_leaf()?;
                standalone += 1;
            }
            while drivers < muldiv(g + 1, plan.drivers, plan.bundles) {
                self.driver()?;
                drivers += 1;
            }
            // 1–3 leaves, using them all: keep at least one for each later
            // bundle and leave no more than three per later bundle.
            let later = plan.bundles - g - 1;
            let lo = leaves_left.saturating_sub(3 * later).max(1);
            let hi = leaves_left.saturating_sub(later).min(3);
            let k = lo + self.rng.below(hi.saturating_sub(lo) + 1);
            leaves_left -= k;
            self.bundle_group(k)?;
        }
        while standalone < plan.standalone_leaves {
            self.standalone_leaf()?;
            standalone += 1;
        }
        while drivers < plan.drivers {
            self.driver()?;
            drivers += 1;
        }
        Ok(())
    }

    /// Starts update document number `update_no`: its id, creation time and
    /// whether it gets a second revision.
    fn next_update(&mut self) -> (Uuid, i64, bool) {
        self.now += self.spacing / 2 + self.rng.below(self.spacing as u64) as i64;
        let second = self.update_no % SECOND_EVERY == SECOND_EVERY - 1;
        self.update_no += 1;
        (self.rng.uuid(), self.now, second)
    }

    fn new_group(&mut self, product: usize) -> Group {
        let p = &PRODUCTS[product];
        let class = *self.rng.pick(p.classes);
        let arch = *self.rng.pick(p.archs);
        let kb = 5_000_000 + self.rng.below(999_999);
        let version = format!(
            "{}.{}.{}",
            p.major,
            p.build + self.rng.below(3) as u32,
            self.rng.below(6000)
        );
        Group {
            product,
            class,
            arch,
            kb,
            version,
        }
    }

    fn detectoid_of(&self, product: usize, arch: Arch) -> Uuid {
        let i = PRODUCTS[product].detectoid.unwrap_or(arch.detectoid());
        self.fixed.detectoids[i]
    }

    /// A software product (not the drivers one).
    fn software_product(&mut self) -> usize {
        let i = self.rng.below(PRODUCTS.len() as u64 - 1) as usize;
        if i >= DRIVERS_PRODUCT { i + 1 } else { i }
    }

    fn bundle_group(&mut self, leaves: u64) -> Result<()> {
        let product = self.software_product();
        let group = self.new_group(product);
        let mut bundled: Vec<(Uuid, i32)> = Vec::with_capacity(leaves as usize);
        for n in 0..leaves {
            bundled.push(self.leaf(&group, Some(n))?);
        }
        let (id, created, second) = self.next_update();
        let superseded = match self.last_bundle[product] {
            Some(prev) if self.rng.chance(1, 2) => Some(prev),
            _ => None,
        };
        self.last_bundle[product] = Some(id);
        let severity = match group.class {
            Class::Security => {
                Some(
                    *self
                        .rng
                        .pick(&["Critical", "Important", "Important", "Moderate"]),
                )
            }
            _ => None,
        };
        let ms = self.rng.below(1000) as u32;
        for revision in revisions(second) {
            self.write_bundle(
                id, revision, created, ms, &group, severity, superseded, &bundled,
            );
            self.add(id, revision)?;
        }
        self.report.software += 1;
        self.report.bundles += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_bundle(
        &mut self,
        id: Uuid,
        revision: i32,
        created: i64,
        ms: u32,
        group: &Group,
        severity: Option<&str>,
        superseded: Option<Uuid>,
        bundled: &[(Uuid, i32)],
    ) {
        let p = &PRODUCTS[group.product];
        let detectoid = self.detectoid_of(group.product, group.arch);
        let x = &mut self.xml;
        x.clear();
        open_update(x, &[("pub", NS_PUB)], id, revision);
        x.push_str(
            "<upd:Properties UpdateType=\"Software\" DefaultPropertiesLanguage=\"en\" AutoSelectOnWebSites=\"true\" \
             ExplicitlyDeployable=\"true\" MaxDownloadSize=\"0\" MinDownloadSize=\"0\"",
        );
        if let Some(s) = severity {
            let _ = write!(x, " MsrcSeverity=\"{s}\"");
        }
        x.push_str(" PublicationState=\"Published\" CreationDate=\"");
        write_date(x, created, Some(ms));
        let _ = write!(
            x,
            "\" PublisherID=\"{}\"><upd:SupportUrl>https://support.contoso.example/help</upd:SupportUrl>\
             <upd:KBArticleID>{}</upd:KBArticleID></upd:Properties><upd:LocalizedPropertiesCollection>",
            self.fixed.publisher, group.kb
        );
        let (y, m) = year_month(created);
        let nouns = group.class.noun();
        let systems = group.arch.systems();
        let suffix = if revision == BASE_REVISION {
            ""
        } else {
            " (v2)"
        };
        let mut title = String::with_capacity(160);
        let mut description = String::with_capacity(300);
        for (l, lang) in LANGS.iter().enumerate() {
            title.clear();
            description.clear();
            let (noun, sys, prod, kb) = (nouns[l], systems[l], p.name, group.kb);
            let _ = match l {
                0 => write!(
                    title,
                    "{y}-{m:02} {noun} for {prod} for {sys} (KB{kb}){suffix}"
                ),
                1 => write!(
                    title,
                    "{y}-{m:02} {noun} für {prod} für {sys} (KB{kb}){suffix}"
                ),
                2 => write!(
                    title,
                    "{y}-{m:02} {noun} pour {prod} pour {sys} (KB{kb}){suffix}"
                ),
                3 => write!(
                    title,
                    "{y}-{m:02} {sys} 用 {prod} の{noun} (KB{kb}){suffix}"
                ),
                _ => write!(
                    title,
                    "{y}-{m:02} {noun} para {prod} para {sys} (KB{kb}){suffix}"
                ),
            };
            let _ = match l {
                0 => write!(
                    description,
                    "Install this update to resolve issues in {prod}. For a complete listing of the issues that are \
                     included in this update, see the associated Contoso Knowledge Base article (KB{kb}). After you \
                     install this update, you may have to restart your computer."
                ),
                1 => write!(
                    description,
                    "Installieren Sie dieses Update, um Probleme in {prod} zu beheben. Eine vollständige Liste der \
                     Probleme finden Sie im zugehörigen Knowledge Base-Artikel (KB{kb}). Nach der Installation \
                     müssen Sie den Computer möglicherweise neu starten."
                ),
                2 => write!(
                    description,
                    "Installez cette mise à jour pour résoudre des problèmes dans {prod}. Pour obtenir la liste \
                     complète des problèmes, consultez l'article de la Base de connaissances (KB{kb}). Après \
                     l'installation, vous devrez peut-être redémarrer l'ordinateur."
                ),
                3 => write!(
                    description,
                    "この更新プログラムをインストールすると、{prod} の問題が解決されます。この更新プログラムで解決される問題の\
                     一覧については、サポート技術情報 (KB{kb}) を参照してください。インストール後、コンピューターの\
                     再起動が必要な場合があります。"
                ),
                _ => write!(
                    description,
                    "Instale esta actualización para resolver problemas de {prod}. Para obtener una lista completa \
                     de los problemas, consulte el artículo de Knowledge Base (KB{kb}). Después de instalarla, es \
                     posible que tenga que reiniciar el equipo."
                ),
            };
            localized(x, lang, &title, Some(&description));
        }
        x.push_str("</upd:LocalizedPropertiesCollection><upd:Relationships>");
        if let Some(s) = superseded {
            x.push_str("<upd:SupersededUpdates>");
            identity(x, s, None);
            x.push_str("</upd:SupersededUpdates>");
        }
        prerequisites(
            x,
            detectoid,
            group.class.id(),
            self.fixed.products[group.product],
        );
        x.push_str("<upd:BundledUpdates><upd:AtLeastOne>");
        for (leaf, rev) in bundled {
            identity(x, *leaf, Some(*rev));
        }
        x.push_str("</upd:AtLeastOne></upd:BundledUpdates></upd:Relationships></upd:Update>");
    }

    fn standalone_leaf(&mut self) -> Result<()> {
        let product = self.software_product();
        let group = self.new_group(product);
        self.leaf(&group, None).map(|_| ())
    }

    /// A leaf: bundled (`part` is its position in the bundle) or standalone.
    /// Returns its id and newest revision.
    fn leaf(&mut self, group: &Group, part: Option<u64>) -> Result<(Uuid, i32)> {
        let (id, created, second) = self.next_update();
        let leaf = self.leaf_no;
        self.leaf_no += 1;
        let (files, leaves) = (self.plan.content_files, self.plan.leaves);
        let file = if files > 0 && muldiv(leaf + 1, files, leaves) > muldiv(leaf, files, leaves) {
            Some(self.content_file(group, created)?)
        } else {
            None
        };
        let ms = self.rng.below(1000) as u32;
        let component = *self.rng.pick(&[
            "Servicing Stack",
            "Cumulative Package",
            "Express Package",
            "Baseline Package",
            "Dynamic Update",
            "Language Feature Delta",
            "Engine",
            "Platform Component",
        ]);
        for revision in revisions(second) {
            self.write_leaf(
                id,
                revision,
                created,
                ms,
                group,
                part,
                component,
                file.as_ref(),
            );
            self.add(id, revision)?;
        }
        self.report.software += 1;
        Ok((
            id,
            if second {
                SECOND_REVISION
            } else {
                BASE_REVISION
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_leaf(
        &mut self,
        id: Uuid,
        revision: i32,
        created: i64,
        ms: u32,
        group: &Group,
        part: Option<u64>,
        component: &str,
        file: Option<&FileInfo>,
    ) {
        let p = &PRODUCTS[group.product];
        let detectoid = self.detectoid_of(group.product, group.arch);
        let x = &mut self.xml;
        x.clear();
        open_update(
            x,
            &[
                ("pub", NS_PUB),
                ("bar", NS_BAR),
                ("lar", NS_LAR),
                ("cmd", NS_CMD),
            ],
            id,
            revision,
        );
        x.push_str("<upd:Properties UpdateType=\"Software\" DefaultPropertiesLanguage=\"en\"");
        if let Some(f) = file {
            let _ = write!(
                x,
                " Handler=\"{NS_CMD}\" MaxDownloadSize=\"{}\" MinDownloadSize=\"0\"",
                f.size
            );
        }
        x.push_str(" PublicationState=\"Published\" CreationDate=\"");
        write_date(x, created, Some(ms));
        let _ = write!(x, "\" PublisherID=\"{}\">", self.fixed.publisher);
        x.push_str(
            "<upd:InstallationBehavior Impact=\"Minor\" RebootBehavior=\"CanRequestReboot\" />",
        );
        if part.is_none() {
            let _ = write!(x, "<upd:KBArticleID>{}</upd:KBArticleID>", group.kb);
        }
        x.push_str("</upd:Properties><upd:LocalizedPropertiesCollection>");
        let suffix = if revision == BASE_REVISION {
            ""
        } else {
            " (v2)"
        };
        let title = match part {
            Some(n) => format!(
                "HIDDEN: {} {} {} for {} (KB{}) part {}{suffix}",
                p.name,
                component,
                group.version,
                group.arch.build(),
                group.kb,
                n + 1
            ),
            None => format!(
                "{} for {} {} {} for {} (KB{}){suffix}",
                group.class.noun()[0],
                p.name,
                component,
                group.version,
                group.arch.systems()[0],
                group.kb
            ),
        };
        localized(x, "en", &title, None);
        x.push_str("</upd:LocalizedPropertiesCollection><upd:Relationships>");
        prerequisites(
            x,
            detectoid,
            group.class.id(),
            self.fixed.products[group.product],
        );
        let _ = write!(
            x,
            "</upd:Relationships><upd:ApplicabilityRules><upd:IsInstalled><bar:RegValueExists \
             Key=\"HKEY_LOCAL_MACHINE\" Subkey=\"SOFTWARE\\Contoso\\Updates\\KB{}\" Value=\"{}\" Type=\"REG_SZ\" />\
             </upd:IsInstalled><upd:IsInstallable><lar:True /></upd:IsInstallable></upd:ApplicabilityRules>",
            group.kb, id
        );
        if let Some(f) = file {
            files_element(x, f);
            let _ = write!(
                x,
                "<upd:HandlerSpecificData xsi:type=\"cmd:CommandLineInstallation\" xmlns:xsi=\"{NS_XSI}\"><cmd:InstallCommand Program=\""
            );
            esc(x, &f.name);
            x.push_str(
                "\" Arguments=\"/quiet /norestart\"><cmd:ReturnCode Code=\"0\" Result=\"Succeeded\" />\
                 <cmd:ReturnCode Code=\"3010\" Result=\"Succeeded\" Reboot=\"true\" /></cmd:InstallCommand>\
                 </upd:HandlerSpecificData>",
            );
        }
        x.push_str("</upd:Update>");
    }

    /// Generates, stages and queues the next content file.
    fn content_file(&mut self, group: &Group, created: i64) -> Result<FileInfo> {
        let index = self.file_no;
        self.file_no += 1;
        let size = self.sizes.next();
        let p = &PRODUCTS[group.product];
        let ext = *self.rng.pick(p.exts);
        let stem = format!("{}-kb{}-{}", p.prefix, group.kb, group.arch.file());
        let mut reader = Keystream::new(self.content_key, index, size);
        let staged = self
            .batch
            .content()
            .stage_computed(&mut reader, &format!("{stem}.{ext}"))?;
        let f = &staged.file;
        if f.size != size {
            return Err(Error::invalid(
                format!("generated content file {index}"),
                format!("staged {} bytes, expected {size}", f.size),
            ));
        }
        let info = FileInfo {
            name: format!("{stem}_{}.{ext}", hex::encode(f.sha1)),
            size,
            modified: created - 3600 - self.rng.below(14 * 86_400) as i64,
            sha1: f.sha1,
            sha256: f.sha256,
        };
        // Already stored (the same run again): drop the staged copy now
        // rather than keep it in staging until the commit.
        if !self.batch.has_content(&info.sha1)? {
            self.batch.add_content(staged);
        }
        self.report.content_files += 1;
        self.report.content_bytes += size;
        Ok(info)
    }

    fn driver(&mut self) -> Result<()> {
        let (id, created, second) = self.next_update();
        let ms = self.rng.below(1000) as u32;
        let maker = *self.rng.pick(&[
            "Contoso Ltd.",
            "Fabrikam, Inc.",
            "Northwind Traders",
            "Tailspin Toys & Co.",
        ]);
        let class = *self.rng.pick(&[
            "Net",
            "Display",
            "System",
            "USB",
            "Bluetooth",
            "MEDIA",
            "HIDClass",
        ]);
        let (vendor, device) = (
            self.rng.below(0x1000) as u16 | 0x1000,
            self.rng.below(0x10000) as u16,
        );
        let version = format!(
            "{}.{}.{}.{}",
            1 + self.rng.below(30),
            self.rng.below(100),
            self.rng.below(1000),
            self.rng.below(10000)
        );
        let whql = 10_000_000 + self.rng.below(90_000_000);
        let product = DRIVERS_PRODUCT;
        for revision in revisions(second) {
            let suffix = if revision == BASE_REVISION {
                ""
            } else {
                " (v2)"
            };
            let x = &mut self.xml;
            x.clear();
            open_update(x, &[("bar", NS_BAR), ("drv", NS_DRV)], id, revision);
            let _ = write!(
                x,
                "<upd:Properties UpdateType=\"Driver\" DefaultPropertiesLanguage=\"en\" Handler=\"{NS_DRV}\" \
                 PublicationState=\"Published\" CreationDate=\""
            );
            write_date(x, created, Some(ms));
            let _ = write!(
                x,
                "\" PublisherID=\"{}\"></upd:Properties><upd:LocalizedPropertiesCollection>",
                self.fixed.publisher
            );
            let title = format!("{maker} - {class} - {version}{suffix}");
            let (y, m) = year_month(created);
            let description = format!("{maker} {class} driver update released in {y}-{m:02}");
            localized(x, "en", &title, Some(&description));
            x.push_str("</upd:LocalizedPropertiesCollection><upd:Relationships>");
            prerequisites(
                x,
                self.fixed.detectoids[Arch::X64.detectoid()],
                Class::Drivers.id(),
                self.fixed.products[product],
            );
            let _ = write!(
                x,
                "</upd:Relationships><upd:ApplicabilityRules><upd:Metadata><drv:WindowsDriverMetaData \
                 HardwareID=\"pci\\ven_{vendor:04x}&amp;dev_{device:04x}\" WhqlDriverID=\"{whql}\" Manufacturer=\""
            );
            esc(x, maker);
            x.push_str("\" Company=\"");
            esc(x, maker);
            x.push_str("\" Provider=\"");
            esc(x, maker);
            let _ = write!(
                x,
                "\" Model=\"{class} device {device:04X}\" DriverVerDate=\""
            );
            let (y, m, d) = civil_from_days((created - 30 * 86_400).div_euclid(86_400));
            let _ = write!(
                x,
                "{y:04}-{m:02}-{d:02}\" DriverVerVersion=\"{version}\" Class=\"{class}\">\
                 <drv:FeatureScore OperatingSystem=\"WINDOWS_V10_0\" FeatureScore=\"255\" />\
                 </drv:WindowsDriverMetaData></upd:Metadata></upd:ApplicabilityRules></upd:Update>"
            );
            self.add(id, revision)?;
        }
        self.report.drivers += 1;
        Ok(())
    }
}

/// The revisions of one generated update.
fn revisions(second: bool) -> impl Iterator<Item = i32> {
    std::iter::once(BASE_REVISION).chain(second.then_some(SECOND_REVISION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts() {
        let p = Plan::new(100, 0).unwrap();
        assert_eq!((p.bundles, p.drivers, p.leaves), (25, 4, 71));
        assert_eq!((p.bundled_leaves, p.standalone_leaves), (50, 21));
        assert_eq!(p.second_revisions, 5);
        assert_eq!(p.total_revisions(), 26 + 105);
        let p = Plan::new(3, 1).unwrap();
        assert_eq!(
            (p.bundles, p.drivers, p.leaves, p.content_files),
            (0, 0, 3, 1)
        );
        assert!(Plan::new(0, 1).is_err());
        assert_eq!(Plan::new(0, 0).unwrap().updates(), 0);
        assert_eq!(Plan::new(10, 100 << 20).unwrap().content_files, 10 - 2);
        assert!(Plan::new(MAX_UPDATES + 1, 0).is_err());
    }

    #[test]
    fn sizes_sum_exactly() {
        for (files, total) in [
            (1u64, 5u64),
            (3, 1000),
            (25, 100 << 20),
            (7, 7 * (64 << 10) + 3),
            (100, 400 << 20),
        ] {
            let mut s = Sizes::new([7; 32], files, total);
            let sizes: Vec<u64> = (0..files).map(|_| s.next()).collect();
            assert_eq!(sizes.iter().sum::<u64>(), total, "{files} {total}");
            let min = MIN_FILE_SIZE.min(total / files);
            assert!(sizes.iter().all(|&x| x >= min), "{sizes:?}");
        }
        let mut s = Sizes::new([1; 32], 200, 200 * MEAN_FILE_SIZE);
        let sizes: Vec<u64> = (0..200).map(|_| s.next()).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            *lo < MEAN_FILE_SIZE / 2 && *hi > 2 * MEAN_FILE_SIZE,
            "{lo} {hi}"
        );
    }

    #[test]
    fn keystream_independent_of_read_sizes() {
        let mut a = Vec::new();
        Keystream::new([3; 32], 5, 200_003)
            .read_to_end(&mut a)
            .unwrap();
        assert_eq!(a.len(), 200_003);
        let mut b = Vec::new();
        let mut k = Keystream::new([3; 32], 5, 200_003);
        let mut buf = [0u8; 7];
        loop {
            let n = k.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            b.extend_from_slice(&buf[..n]);
        }
        assert_eq!(a, b);
        let mut c = Vec::new();
        Keystream::new([3; 32], 6, 1000)
            .read_to_end(&mut c)
            .unwrap();
        assert_ne!(a[..1000], c[..]);
    }

    #[test]
    fn dates_and_escaping() {
        let mut s = String::new();
        write_date(&mut s, TIMELINE_START, Some(7));
        assert_eq!(s, "2019-01-08T18:00:00.007Z");
        s.clear();
        write_date(&mut s, 951_782_400, None); // leap day
        assert_eq!(s, "2000-02-29T00:00:00Z");
        s.clear();
        write_date(&mut s, FIXED_DATE, None);
        assert_eq!(s, "2018-06-01T00:00:00Z");
        s.clear();
        esc(&mut s, "a&b<c>\"d'é");
        assert_eq!(s, "a&amp;b&lt;c&gt;&quot;d'é");
    }
}
