//! Keeps the benchmark harness from rotting: runs `bench/run.sh --smoke`
//! (tiny sizes, seconds) against the test build of the binary. Times are
//! not checked here; the real run is `bench/run.sh` (docs/performance.md).

use std::process::Command;

#[test]
fn bench_harness_smoke_run_prints_the_table() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/run.sh"))
        .arg("--smoke")
        .env("GAPSYNC_BIN", env!("CARGO_BIN_EXE_gapsync"))
        .env("WORK", work.path().join("bench"))
        .output()
        .expect("run bench/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/run.sh --smoke failed:\n{stdout}\n{stderr}"
    );
    for needle in [
        "export --full / cp -r content",
        "export --full / tar|zstd|sha256sum|minisign",
        "import / minisign -V, sha256sum -c, unzstd|tar",
        "verify throughput / openssl dgst -sha256",
        "full export",
        "incremental import",
        "export RSS MiB",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}
