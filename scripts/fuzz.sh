#!/usr/bin/env bash
# Runs every cargo-fuzz target for a given time (default 600 s each).
#   scripts/fuzz.sh [SECONDS] [TARGET…]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The project builds with the
# stable toolchain; libFuzzer's instrumentation needs nightly flags, which
# RUSTC_BOOTSTRAP=1 enables on stable. Crashes land in fuzz/artifacts/<target>/:
# keep each as a regression test (tests/fuzz_regressions.rs) once fixed.
# Not part of the default CI run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(desired_load history_line allowed_signers webhook)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "==> fuzzing $t for ${secs}s"
    cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048
done
