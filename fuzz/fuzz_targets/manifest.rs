//! The manifest, SHA256SUMS and signature parsers must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gapsync::airgap::format::parse_manifest(data, std::path::Path::new("fuzz"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gapsync::airgap::format::parse_sums(text, "fuzz");
        let _ = gapsync::trust::Minisig::parse(text);
        let _ = gapsync::trust::PublicKey::parse(text);
    }
});
