//! Parses every captured real WSUS update document in
//! `../shared/reference/wsus-captures/wsus-m0-wsusss/docs/` and pins the exact
//! values each one contains. The expected values were read from the documents
//! with Python's `xml.etree` (digests decoded from base64 with Python), not
//! from this crate's parser. The documents stay in `shared/`; a missing
//! directory or file fails these tests, it never skips them.

use std::path::PathBuf;

use gapsync::model::metadata::{
    self, CategoryType, Localized, Prerequisite, UpdateKind, UpdateMetadata, UpdateRef,
};
use uuid::Uuid;

const DOCS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/wsus-captures/wsus-m0-wsusss/docs/"
);

fn load(name: &str) -> UpdateMetadata {
    let path = PathBuf::from(DOCS).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read captured document {} ({e}); the shared reference captures must be present",
            path.display()
        )
    });
    metadata::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn id(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap_or_else(|e| panic!("test GUID {s}: {e}"))
}

fn ids(list: &[&str]) -> Vec<Uuid> {
    list.iter().map(|s| id(s)).collect()
}

fn at_least_one(is_category: bool, list: &[&str]) -> Prerequisite {
    Prerequisite::AtLeastOne {
        is_category,
        ids: ids(list),
    }
}

fn bundled(list: &[&str], revision: i32) -> Vec<UpdateRef> {
    list.iter()
        .map(|s| UpdateRef {
            id: id(s),
            revision: Some(revision),
        })
        .collect()
}

fn languages(m: &UpdateMetadata) -> Vec<&str> {
    m.localized.iter().map(|l| l.language.as_str()).collect()
}

fn localized<'a>(m: &'a UpdateMetadata, language: &str) -> &'a Localized {
    m.localized
        .iter()
        .find(|l| l.language == language)
        .unwrap_or_else(|| panic!("no {language} LocalizedProperties"))
}

#[test]
fn every_captured_document_parses_and_matches_its_file_name() {
    let entries = std::fs::read_dir(DOCS)
        .unwrap_or_else(|e| panic!("captured documents directory {DOCS} must exist: {e}"));
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("{DOCS}: {e}"));
        let name = entry.file_name().to_string_lossy().into_owned();
        let m = load(&name);
        assert_eq!(
            name,
            format!("{}-r{}.xml", m.id, m.revision),
            "file name vs identity"
        );
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "1f9bd9bb-7390-4aa3-bbdb-ded99fac2583-r200.xml",
            "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml",
            "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml",
            "7366a74a-ef29-44e1-b738-570b516aca1f-r200.xml",
            "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml",
            "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml",
            "dd78b8a1-0b20-45c1-add6-4da72e9364cf-r202.xml",
            "ff36f0b5-dded-4780-8664-cd78af8b62c1-r200.xml",
        ],
        "exactly the nine captured documents"
    );
}

#[test]
fn engine_installer_bundle_1f9bd9bb() {
    let m = load("1f9bd9bb-7390-4aa3-bbdb-ded99fac2583-r200.xml");
    assert_eq!(m.id, id("1f9bd9bb-7390-4aa3-bbdb-ded99fac2583"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2026-09-02T08:19:36.190Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "HIDDEN: Defender Engine 1.1.26080.3 for EngineBroad (Installer 1.1.24010.2001-Q)"
    );
    assert_eq!(en.description.as_deref(), None);

    assert_eq!(
        m.prerequisites,
        [
            at_least_one(false, &["e0789628-ce08-4437-be74-2495b842f43b"]),
            at_least_one(false, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    assert_eq!(
        m.bundled,
        bundled(
            &[
                "f0f101fb-5f20-46fb-949f-3da68bd6f77d",
                "ff36f0b5-dded-4780-8664-cd78af8b62c1",
                "af84c5cd-1bb7-4421-aae7-ecf6a7cf4898",
                "baf5e068-ca5b-4649-9f4d-d91d68da2eab",
                "d8bd2012-b824-4041-bcec-ee4be4cdbfc6",
                "2b83a689-a630-416c-a201-686a4c2b9323",
                "eebb930c-9da0-420a-9ce0-ce27c00b4e82",
                "3537ee6c-c08c-4200-a72f-116c8ab441a1",
                "5196c248-a5db-4861-8808-a04d40ceee9d",
                "df55f77b-7366-4691-83c4-d1df423c9824",
                "2958bc53-5ca1-4a90-8c76-73e11a0274e1",
                "377e42bc-41e8-4ca4-a979-8b8196dc734a",
                "4456baec-5b73-4ec1-acf6-4150bc18a520",
                "0e1d8d1b-6618-46d5-b2ee-abcaf7791ac0",
                "55a30351-d131-46a8-9eac-0ef880dff91f",
                "3fdd38a3-3777-448b-9a59-ea7bc64e96a5",
                "836505fe-fd19-45da-a2fd-680b59e41814",
                "94f75687-9b9b-43c0-8627-d3be39d0f55f",
                "ca06b03e-f8e7-44bc-8955-3953d8fdf2ae",
                "a4d86311-0ef3-4b22-b1d7-300cca533e7c",
                "d30aa460-5bd5-4177-96d2-d85ca5be4997",
                "b1bf510e-70ca-4bf6-b655-f9e878cbfe82",
                "42e95b1b-480c-4725-a470-45ef2dda1794",
                "a05b85ab-86f5-453c-a0b2-61b8a053d8d3",
            ],
            200
        )
    );
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 0);
}

#[test]
fn full_deltas_547_266f6222() {
    let m = load("266f6222-c89d-43f2-9f8a-69340271e677-r200.xml");
    assert_eq!(m.id, id("266f6222-c89d-43f2-9f8a-69340271e677"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2026-10-04T12:00:58.287Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "Full Deltas 1.459.547.0 for Defender amd64fre [Ring0, Ring1, Ring2, Ring3, Ring4, Broad, Delayed]"
    );
    assert_eq!(en.description.as_deref(), None);

    assert_eq!(
        m.prerequisites,
        [
            Prerequisite::Required(id("be4048db-157c-4532-9582-7f05099590c9")),
            Prerequisite::Required(id("59653007-e2e9-4f71-8525-2ff588527978")),
            Prerequisite::Required(id("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            at_least_one(false, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 1);
    let file = &m.files[0];
    assert_eq!(file.file_name, "AM_Delta.exe");
    assert_eq!(file.size, 11606440);
    assert_eq!(file.modified.as_deref(), Some("2026-10-04T09:39:26Z"));
    assert_eq!(
        hex::encode(file.sha1),
        "87f5bd0469585006aa5d3a77d1c662fd2895ddcd"
    );
    assert_eq!(
        file.sha256.map(hex::encode).as_deref(),
        Some("026b74ab29b2e4ab113a2c085e6e1020857be49bb8afe0a5dbc3e0f2068b5d40")
    );
    assert_eq!(file.patching_type, None);
    assert!(!file.is_encrypted);
}

#[test]
fn company_category_microsoft_56309036() {
    let m = load("56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml");
    // The document spells this UpdateID in upper case.
    assert_eq!(m.id, id("56309036-4c77-4dd9-951a-99ee9c246a94"));
    assert_eq!(m.revision, 101);
    assert_eq!(m.kind, UpdateKind::Category);
    assert_eq!(m.category_type, Some(CategoryType::Company));
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2005-09-22T00:05:11.471Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 24);
    assert_eq!(
        languages(&m),
        [
            "ar", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "ko",
            "nl", "no", "pl", "pt", "pt-br", "ru", "sv", "tr", "zh-cn", "zh-tw"
        ]
    );
    let en = localized(&m, "en");
    assert_eq!(en.title, "Microsoft");
    assert_eq!(en.description.as_deref(), Some("Microsoft"));
    // Every language has the same title and description.
    for l in &m.localized {
        assert_eq!(l.title, "Microsoft", "{}", l.language);
        assert_eq!(
            l.description.as_deref(),
            Some("Microsoft"),
            "{}",
            l.language
        );
    }

    assert!(m.prerequisites.is_empty());
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 0);
}

#[test]
fn product_family_windows_6964aab4() {
    let m = load("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml");
    // The document spells this UpdateID in upper case.
    assert_eq!(m.id, id("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d"));
    assert_eq!(m.revision, 100);
    assert_eq!(m.kind, UpdateKind::Category);
    assert_eq!(m.category_type, Some(CategoryType::ProductFamily));
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2004-05-15T05:50:01.611Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 24);
    assert_eq!(
        languages(&m),
        [
            "ar", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "ko",
            "nl", "no", "pl", "pt", "pt-br", "ru", "sv", "tr", "zh-cn", "zh-tw"
        ]
    );
    let en = localized(&m, "en");
    assert_eq!(en.title, "Windows");
    assert_eq!(en.description.as_deref(), Some("Windows"));
    // Every language has the same title and description.
    for l in &m.localized {
        assert_eq!(l.title, "Windows", "{}", l.language);
        assert_eq!(l.description.as_deref(), Some("Windows"), "{}", l.language);
    }

    assert_eq!(
        m.prerequisites,
        [at_least_one(
            true,
            &["56309036-4c77-4dd9-951a-99ee9c246a94"]
        ),]
    );
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 0);
}

#[test]
fn full_deltas_539_7366a74a() {
    let m = load("7366a74a-ef29-44e1-b738-570b516aca1f-r200.xml");
    assert_eq!(m.id, id("7366a74a-ef29-44e1-b738-570b516aca1f"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2026-10-03T21:45:30.495Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "Full Deltas 1.459.539.0 for Defender amd64fre [Ring0, Ring1, Ring2, Ring3, Ring4, Broad, Delayed]"
    );
    assert_eq!(en.description.as_deref(), None);

    assert_eq!(
        m.prerequisites,
        [
            Prerequisite::Required(id("be4048db-157c-4532-9582-7f05099590c9")),
            Prerequisite::Required(id("59653007-e2e9-4f71-8525-2ff588527978")),
            Prerequisite::Required(id("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            at_least_one(false, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 1);
    let file = &m.files[0];
    assert_eq!(file.file_name, "AM_Delta.exe");
    assert_eq!(file.size, 11610576);
    assert_eq!(file.modified.as_deref(), Some("2026-10-03T19:37:36Z"));
    assert_eq!(
        hex::encode(file.sha1),
        "e8b1d75885cf8f053a1307bdc9c3f87bf0cf7ada"
    );
    assert_eq!(
        file.sha256.map(hex::encode).as_deref(),
        Some("cf9dce88a0e09ec9215270e141ebae8b126b788ab066ad57ec23afa99338f939")
    );
    assert_eq!(file.patching_type, None);
    assert!(!file.is_encrypted);
}

#[test]
fn kb2267602_bundle_a2fef9b0() {
    let m = load("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml");
    assert_eq!(m.id, id("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), Some("2267602"));
    assert_eq!(m.creation_date.as_deref(), Some("2026-10-04T12:00:58.381Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 35);
    assert_eq!(
        languages(&m),
        [
            "en", "ar", "bg", "cs", "da", "de", "el", "es", "et", "fi", "fr", "he", "hr", "hu",
            "it", "ja", "ko", "lt", "lv", "nl", "no", "pl", "pt", "pt-br", "ro", "ru", "sk", "sl",
            "sr", "sv", "th", "tr", "uk", "zh-cn", "zh-tw"
        ]
    );
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.459.547.0) - Current Channel (Broad)"
    );
    assert_eq!(
        en.description.as_deref(),
        Some(
            "Install this update to revise the files that are used to detect viruses, spyware, and other potentially unwanted software. Once you have installed this item, it cannot be removed."
        )
    );
    let ja = localized(&m, "ja");
    assert_eq!(
        ja.title,
        "Microsoft Defender Antivirus のセキュリティ インテリジェンス更新プログラム - KB2267602 (バージョン 1.459.547.0) - 現在のチャネル (広範)"
    );
    assert_eq!(
        ja.description.as_deref(),
        Some(
            "この更新プログラムをインストールして、ウイルス、スパイウェア、およびその他の望ましくない可能性のあるソフトウェアを検出するために使用されるファイルを修正します。このアイテムを一度インストールすると、削除することはできません。"
        )
    );
    let ar = localized(&m, "ar");
    assert_eq!(
        ar.title,
        "تحديث معلومات الأمان Microsoft Defender Antivirus -2267602 قاعدة المعارف (الإصدار 1.459.547.0) - القناة الحالية (موسعة)"
    );
    assert_eq!(
        ar.description.as_deref(),
        Some(
            "قم بتثبيت هذا التحديث لمراجعة الملفات المستخدمة للكشف عن الفيروسات وبرامج التجسس والبرامج الأخرى التي قد تكون غير مرغوب فيها. بمجرد تثبيت هذا العنصر، لا يمكن إزالته."
        )
    );
    let zh_cn = localized(&m, "zh-cn");
    assert_eq!(
        zh_cn.title,
        "Microsoft Defender Antivirus 的安全智能更新 - KB2267602（版本 1.459.547.0）- 当前频道（广泛）"
    );
    assert_eq!(
        zh_cn.description.as_deref(),
        Some(
            "安装此更新可修改用于检测病毒、间谍软件和其他潜在不需要的软件的文件。此项一旦安装，便无法删除。"
        )
    );
    let it = localized(&m, "it");
    assert_eq!(
        it.title,
        "Aggiornamento dell'intelligence sulla sicurezza per Microsoft Defender Antivirus -2267602 KB (versione 1.459.547.0) - Canale corrente (Generico)"
    );
    assert_eq!(
        it.description.as_deref(),
        Some(
            "Installa questo aggiornamento per rivedere i file usati per rilevare virus, spyware e altri software potenzialmente indesiderati. Dopo aver installato questo elemento, non è possibile rimuoverlo."
        )
    );
    assert!(m.localized.iter().all(|l| l.description.is_some()));

    assert_eq!(
        m.prerequisites,
        [
            Prerequisite::Required(id("be4048db-157c-4532-9582-7f05099590c9")),
            Prerequisite::Required(id("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            at_least_one(true, &["e0789628-ce08-4437-be74-2495b842f43b"]),
            at_least_one(true, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    // 124 bundled revisions in 4 AtLeastOne clauses of 7, 7, 7, 103, flattened in document order.
    assert_eq!(m.bundled.len(), 124);
    assert!(m.bundled.iter().all(|r| r.revision == Some(200)));
    assert_eq!(
        m.bundled[..5],
        bundled(
            &[
                "90f961a9-1756-4493-aade-644c37589961",
                "b41f24ed-5293-4c1c-81c8-9d4b8af8eb7e",
                "abfe02a0-3833-43fe-884c-98d692ce7df7",
                "73c4b5f6-fe36-4a59-837a-7f4c938b43fd",
                "8357c543-cd5b-41fe-b6b5-3e8d1188c648",
            ],
            200
        )
    );
    assert_eq!(
        m.bundled[119..],
        bundled(
            &[
                "cfc1fc34-7acf-4ec2-97d4-359cf80b17ef",
                "c19dd627-373c-4096-a3e8-0a4ba8e18229",
                "4ee6bc00-7fdf-4628-8493-9ecd8a2f631f",
                "85e0c27b-53ad-4ed4-a442-f1a1a8e8a214",
                "3baa1bb8-21ec-4c3a-8bc7-f613ff818fd2",
            ],
            200
        )
    );
    // Clause boundaries and the bundled revisions that are captured too.
    assert_eq!(m.bundled[6].id, id("7a20e8ab-8dfa-4320-8929-4e212309394c"));
    assert_eq!(m.bundled[7].id, id("940d319c-760b-429c-9bc8-e059163457fb"));
    assert_eq!(m.bundled[13].id, id("5edaee7f-24ef-45bd-a1d3-2c71bbd5dd87"));
    assert_eq!(m.bundled[14].id, id("538f3373-6e39-4c48-b27b-a120f6caccef"));
    assert_eq!(m.bundled[20].id, id("964cb58b-470a-4153-a6d0-e3101faf3ede"));
    assert_eq!(m.bundled[21].id, id("1c835ddf-0c98-431b-93e2-50a3a872a30a"));
    assert_eq!(m.bundled[5].id, id("ccb78947-6453-4ecc-9de8-bc0305c98f2d"));
    assert_eq!(m.bundled[12].id, id("1f9bd9bb-7390-4aa3-bbdb-ded99fac2583"));
    assert_eq!(m.bundled[23].id, id("266f6222-c89d-43f2-9f8a-69340271e677"));
    assert!(
        !m.bundled
            .iter()
            .any(|r| r.id == id("7366a74a-ef29-44e1-b738-570b516aca1f"))
    );
    assert_eq!(
        m.superseded,
        ids(&[
            "ce84983e-b20e-44d7-a412-1fd91fc7bda8",
            "74e87997-e3b3-45d2-a527-a8877a5162ec",
            "1594b429-a8c5-4b0d-ac86-79b0a826a847",
            "b2a92e00-dfa3-4fd0-b285-8d961303b0ca",
            "22281ef5-bbea-4576-af48-6aa6bafbb5b3",
            "cb326352-0184-4dfb-96eb-8817727cbe7f",
            "42e65fc7-a953-4d7f-9277-54e3a265200e",
            "cf3a401d-e198-47ba-97a4-debb550f5b39",
            "391d3487-e6f5-4bd0-a607-7e29f9fbd88e",
            "bb663b81-45db-43cb-8bfa-33411e0d8a1f",
        ])
    );

    assert_eq!(m.files.len(), 0);

    assert_eq!(
        m.category_ids().collect::<Vec<_>>(),
        ids(&[
            "e0789628-ce08-4437-be74-2495b842f43b",
            "8c3fcc84-7410-4a95-8b89-a166a0190486",
        ])
    );
    assert_eq!(m.title("ja"), Some(ja.title.as_str()));
    assert_eq!(m.title("xx"), Some(en.title.as_str()));
}

#[test]
fn mpsigstub_bundle_ccb78947() {
    let m = load("ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml");
    assert_eq!(m.id, id("ccb78947-6453-4ecc-9de8-bc0305c98f2d"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2024-01-11T20:15:45.051Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "HIDDEN: Defender MpSigStub 1.1.24010.2001 for EngineBroad (Installer 1.1.24010.2001-Q)"
    );
    assert_eq!(en.description.as_deref(), None);

    assert_eq!(
        m.prerequisites,
        [
            at_least_one(false, &["e0789628-ce08-4437-be74-2495b842f43b"]),
            at_least_one(false, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    assert_eq!(
        m.bundled,
        bundled(
            &[
                "b6f443c9-ad38-4347-bab3-f1dc0b03d533",
                "0daf8592-9e3f-4a8a-9141-d83fafebd09f",
                "4c0a0a90-4bd5-4fe5-b306-8dbd6fde30a0",
                "e052d9bd-e49c-4d6e-876e-005b49b89812",
            ],
            200
        )
    );
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 0);
}

#[test]
fn product_oobe_zdp_dd78b8a1() {
    let m = load("dd78b8a1-0b20-45c1-add6-4da72e9364cf-r202.xml");
    assert_eq!(m.id, id("dd78b8a1-0b20-45c1-add6-4da72e9364cf"));
    assert_eq!(m.revision, 202);
    assert_eq!(m.kind, UpdateKind::Category);
    assert_eq!(m.category_type, Some(CategoryType::Product));
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2015-08-25T20:09:50.002Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(en.title, "OOBE ZDP");
    assert_eq!(
        en.description.as_deref(),
        Some("This category would be used by the updates that would meet the ZDP bar.")
    );

    assert_eq!(
        m.prerequisites,
        [at_least_one(
            true,
            &["6964aab4-c5b5-43bd-a17d-ffb4346a8e1d"]
        ),]
    );
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 0);
}

#[test]
fn am_engine_ff36f0b5() {
    let m = load("ff36f0b5-dded-4780-8664-cd78af8b62c1-r200.xml");
    assert_eq!(m.id, id("ff36f0b5-dded-4780-8664-cd78af8b62c1"));
    assert_eq!(m.revision, 200);
    assert_eq!(m.kind, UpdateKind::Software);
    assert_eq!(m.category_type, None);
    assert_eq!(m.default_language.as_deref(), Some("en"));
    assert_eq!(m.kb_article_id.as_deref(), None);
    assert_eq!(m.creation_date.as_deref(), Some("2026-09-02T08:19:36.080Z"));
    assert_eq!(m.publication_state.as_deref(), Some("Published"));
    assert_eq!(m.eula_id, None);
    assert!(!m.secured_fragment);

    assert_eq!(m.localized.len(), 1);
    let en = localized(&m, "en");
    assert_eq!(
        en.title,
        "AM Engine 1.1.26080.3 for Defender amd64fre Broad"
    );
    assert_eq!(en.description.as_deref(), None);

    assert_eq!(
        m.prerequisites,
        [
            Prerequisite::Required(id("be4048db-157c-4532-9582-7f05099590c9")),
            Prerequisite::Required(id("59653007-e2e9-4f71-8525-2ff588527978")),
            Prerequisite::Required(id("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            at_least_one(false, &["8c3fcc84-7410-4a95-8b89-a166a0190486"]),
        ]
    );
    assert!(m.bundled.is_empty());
    assert!(m.superseded.is_empty());

    assert_eq!(m.files.len(), 1);
    let file = &m.files[0];
    assert_eq!(file.file_name, "AM_Engine.exe");
    assert_eq!(file.size, 6662560);
    assert_eq!(file.modified.as_deref(), Some("2026-08-18T00:39:04Z"));
    assert_eq!(
        hex::encode(file.sha1),
        "bd789d42a2e027008ee3e7c4fbee6720dd6dc4c9"
    );
    assert_eq!(
        file.sha256.map(hex::encode).as_deref(),
        Some("157d1f273dfdd4105014a80a9c579eed27ade058a433a79bbda207929b9763e7")
    );
    assert_eq!(file.patching_type, None);
    assert!(!file.is_encrypted);
}

#[test]
fn hidden_installer_bundles_declare_no_categories() {
    // Unlike the KB2267602 bundle, these name the same two ids in AtLeastOne
    // clauses WITHOUT IsCategory="true", so they are plain prerequisites.
    for name in [
        "1f9bd9bb-7390-4aa3-bbdb-ded99fac2583-r200.xml",
        "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml",
    ] {
        assert_eq!(load(name).category_ids().count(), 0, "{name}");
    }
}

#[test]
fn every_captured_document_parses_identically_from_utf16() {
    let entries = std::fs::read_dir(DOCS)
        .unwrap_or_else(|e| panic!("captured documents directory {DOCS} must exist: {e}"));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{DOCS}: {e}")).path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text =
            std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let utf8 = metadata::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for unit in text.encode_utf16() {
            le.extend_from_slice(&unit.to_le_bytes());
            be.extend_from_slice(&unit.to_be_bytes());
        }
        assert_eq!(
            metadata::parse(&le).ok(),
            Some(utf8.clone()),
            "{} as UTF-16LE",
            path.display()
        );
        assert_eq!(
            metadata::parse(&be).ok(),
            Some(utf8),
            "{} as UTF-16BE",
            path.display()
        );
        count += 1;
    }
    assert_eq!(count, 9);
}
