#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer coverage instrumentation (stable
# Rust: SanitizerCoverage via -C flags, no AddressSanitizer — the code under
# test is safe Rust, so panics are the findings) and runs one of them.
#
#   fuzz/run.sh update_xml -runs=10000000
#   fuzz/run.sh build            # build only
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cov}
# An explicit --target keeps RUSTFLAGS off build scripts.
TRIPLE=$(rustc -vV | sed -n "s/^host: //p")
cargo build --release --quiet --target "$TRIPLE"
target="${1:-build}"
[ "$target" = build ] && exit 0
shift
mkdir -p "corpus/$target" "artifacts/$target"
exec "$CARGO_TARGET_DIR/$TRIPLE/release/$target" -artifact_prefix="artifacts/$target/" "$@" "corpus/$target"
