#!/usr/bin/env bash
# stackpin's test command, the same locally and in CI:
#   real fixtures (engine, compose, loopback registry, images by digest)
#   -> cargo fmt --check -> cargo clippy -D warnings -> all tests.
# Extra arguments go to the test runner: scripts/test.sh harness
# Set STACKPIN_KEEP_TMP=1 to keep each test's temp dir.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found on PATH. Install a Rust toolchain (https://rustup.rs)," >&2
    echo "       or, under sudo, keep PATH: sudo env \"PATH=\$PATH\" bash scripts/test.sh" >&2
    exit 2
fi

section "fixtures (docker, compose, registry, images)"
# shellcheck source=scripts/fixtures.sh
. scripts/fixtures.sh
trap stackpin_fixtures_cleanup EXIT
stackpin_fixtures_setup # exports STACKPIN_TEST_*
[ -z "${CI+x}" ] || export CI

section "toolchain"
cargo --version
rustc --version

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run $*"
    cargo nextest run --no-fail-fast "$@"
    # nextest does not run doctests; only a library target has them.
    if [ -f src/lib.rs ]; then
        section "cargo test --doc"
        cargo test --doc
    fi
else
    section "cargo test $*"
    cargo test --no-fail-fast "$@"
fi

section "all checks passed"
