#!/usr/bin/env bash
# stackpin's test command, the same locally and in CI:
#   real fixtures (engine, compose, loopback registry, images by digest),
#   the test build beside them -> cargo fmt --check -> cargo deny -> all
#   tests, with cargo clippy -D warnings beside them.
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

section "toolchain"
cargo --version
rustc --version
# Every locked package, for every platform: a build fetches only this
# platform's, and tests/cli_docs.rs reads the whole graph offline.
cargo fetch --locked

section "fixtures (docker, compose, registry, images)"
# shellcheck source=scripts/fixtures.sh
. scripts/fixtures.sh
# Cleanup hooks of the extra components below run before the fixtures'.
STACKPIN_EXIT_HOOKS=()
stackpin_on_exit() { STACKPIN_EXIT_HOOKS+=("$*"); }
_stackpin_cleanup_all() {
    local h pid
    for pid in "${STACKPIN_BUILD_PID:-}" "${STACKPIN_CLIPPY_PID:-}"; do
        [ -z "$pid" ] || kill -- "-$pid" 2>/dev/null || true
    done
    for h in "${STACKPIN_EXIT_HOOKS[@]}"; do eval "$h" || true; done
    stackpin_fixtures_cleanup
}
trap _stackpin_cleanup_all EXIT
# What the build links (pkg-config, OpenSSL's headers) comes first.
stackpin_fixtures_install_tools

# The test build runs while the fixtures and the components below install
# and start: one waits on the CPU, the others on the network and the engine.
# It ends by listing the test binaries (nextest's reuse-build metadata), so
# that the test run below needs no cargo, and clippy can check beside it.
# Its output is shown once it is done.
section "the test build, in the background (shown after the setup)"
mkdir -p target
STACKPIN_BUILD_LOG=target/test-build.log
STACKPIN_BINARIES=target/test-binaries.json
STACKPIN_METADATA=target/test-cargo-metadata.json
# Its own session (setsid), so that the exit trap stops cargo with it.
setsid --wait bash -c '
    binaries=$1 metadata=$2
    shift 2
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest list --list-type binaries-only --message-format json \
            --cargo-quiet "$@" >"$binaries" &&
            cargo metadata --format-version=1 --all-features --no-deps >"$metadata"
    else
        cargo test --no-run --quiet
    fi
' bash "$STACKPIN_BINARIES" "$STACKPIN_METADATA" "$@" >"$STACKPIN_BUILD_LOG" 2>&1 &
STACKPIN_BUILD_PID=$!
STACKPIN_CLIPPY_PID=

stackpin_fixtures_setup # exports STACKPIN_TEST_*

# For scripts/setup.d: Debian packages, as root or with passwordless sudo.
# `stackpin_can_install "what is missing (the hint)" || return 0` warns and
# lets the part go without when neither is there; then
# `stackpin_apt_install PACKAGE…` installs (a failure stops the run).
STACKPIN_SUDO=()
stackpin_can_install() {
    if [ "$(id -u)" -eq 0 ]; then
        STACKPIN_SUDO=()
    elif sudo -n true 2>/dev/null; then
        STACKPIN_SUDO=(sudo -n)
    else
        echo "warning: $1; installing it needs root" >&2
        return 1
    fi
}
stackpin_apt_install() {
    echo "installing $* (apt-get)"
    "${STACKPIN_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${STACKPIN_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Extra real components some tests need (a PostgreSQL server, a browser, …).
# Each scripts/setup.d/*.sh is sourced: it installs what is missing, starts
# what it needs on 127.0.0.1, exports STACKPIN_TEST_* variables and registers
# its cleanup with `stackpin_on_exit "command"`.
for f in scripts/setup.d/*.sh; do
    [ -e "$f" ] || continue
    section "setup: $f"
    # shellcheck disable=SC1090
    . "$f"
done
[ -z "${CI+x}" ] || export CI

section "cargo fmt --check"
cargo fmt --all --check

section "the test build (started above)"
if ! wait "$STACKPIN_BUILD_PID"; then
    cat "$STACKPIN_BUILD_LOG"
    echo "error: the build failed (above)" >&2
    exit 1
fi
cat "$STACKPIN_BUILD_LOG"
echo "built"

# clippy checks while the tests run (they wait on the engine more than they
# use the CPUs), at the lowest priority: it takes the CPU time the tests
# leave, never theirs. Its verdict is shown, and counts, after them.
STACKPIN_CLIPPY_LOG=target/test-clippy.log
setsid --wait nice -n 19 cargo clippy --all-targets -- -D warnings >"$STACKPIN_CLIPPY_LOG" 2>&1 &
STACKPIN_CLIPPY_PID=$!
clippy_verdict() {
    section "cargo clippy --all-targets -- -D warnings (ran beside the tests)"
    local rc=0
    wait "$STACKPIN_CLIPPY_PID" || rc=$?
    STACKPIN_CLIPPY_PID=
    cat "$STACKPIN_CLIPPY_LOG"
    if [ "$rc" -ne 0 ]; then
        echo "error: clippy found problems (above)" >&2
        return 1
    fi
    echo "clippy found nothing"
}

# Licenses, banned and duplicate crates, sources (deny.toml). The advisory
# database lives on GitHub, which test machines cannot reach: ci.yml runs
# `cargo deny check advisories` on GitHub (with the MSRV build).
section "cargo deny check licenses bans sources"
if [ -n "${STACKPIN_CARGO_DENY:-}" ]; then
    "$STACKPIN_CARGO_DENY" check licenses bans sources
elif [ -n "${CI:-}" ]; then
    echo "error: cargo-deny is missing (scripts/setup.d/cargo-deny.sh fetches it)" >&2
    exit 1
else
    echo "skipped: no cargo-deny (scripts/setup.d/cargo-deny.sh fetches it)"
fi

# The tests wait on the engine (pulls, health, smoke) more than they use a
# CPU: two per CPU keep the CPUs busy (docs/testing.md has the figures).
STACKPIN_TEST_THREADS="${STACKPIN_TEST_THREADS:-$(($(nproc) * 2))}"
if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run --test-threads $STACKPIN_TEST_THREADS $*"
    tests_rc=0
    cargo nextest run --no-fail-fast --test-threads "$STACKPIN_TEST_THREADS" \
        --binaries-metadata "$STACKPIN_BINARIES" --cargo-metadata "$STACKPIN_METADATA" \
        "$@" || tests_rc=$?
    clippy_verdict
    [ "$tests_rc" -eq 0 ] || exit "$tests_rc"
    # nextest does not run doctests; only a library target has them.
    if [ -f src/lib.rs ]; then
        section "cargo test --doc"
        cargo test --doc
    fi
else
    section "cargo test $*"
    tests_rc=0
    cargo test --no-fail-fast "$@" || tests_rc=$?
    clippy_verdict
    [ "$tests_rc" -eq 0 ] || exit "$tests_rc"
fi

# The converge, rollback and crash suites once more under compose v2
# (production's; everything above ran them under Debian's v1). The
# zero-downtime, touch and database suites name their flavours themselves.
section "compose v2: converge, rollback, faults and chaos again (STACKPIN_TEST_FLAVOUR=v2)"
if cargo nextest --version >/dev/null 2>&1; then
    STACKPIN_TEST_FLAVOUR=v2 cargo nextest run --no-fail-fast --test-threads "$STACKPIN_TEST_THREADS" --test integration -E 'test(/^(converge|rollback|faults|chaos)::/)'
else
    for suite in converge rollback faults chaos; do
        STACKPIN_TEST_FLAVOUR=v2 cargo test --no-fail-fast --test integration "$suite::"
    done
fi

# Tests that restart the Docker daemon run alone, after everything else.
section "exclusive: the Docker daemon restarted mid-converge"
STACKPIN_TEST_EXCLUSIVE=1 cargo test --test integration faults::docker_daemon_restarted_mid_converge -- --exact

section "all checks passed"
