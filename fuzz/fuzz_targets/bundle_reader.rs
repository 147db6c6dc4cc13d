//! The streaming bundle reader (tar + zstd metadata pack, as import reads
//! it) must never panic and never accept what it should not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gapsync::airgap::import::fuzz_read_metadata_pack(data);
});
