# shellcheck shell=bash
# Sourced by scripts/test.sh: schemathesis (PyPI, pinned below), for
# tests/server.rs, which runs it against the daemon's API with the OpenAPI
# document the daemon serves (/api/v1/openapi.json). Installed once into a
# virtualenv in ~/.cache/stackpin-test (about a minute), so a new clone
# reuses it. Exports STACKPIN_TEST_SCHEMATHESIS. Nothing keeps running.

STACKPIN_SCHEMATHESIS_VERSION=4.32.5

_stackpin_schemathesis_setup() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/stackpin-test/schemathesis-$STACKPIN_SCHEMATHESIS_VERSION"
    local bin="$venv/bin/schemathesis"
    # A venv cannot be moved (its scripts name its path): made in place, and
    # made again when a run was cut short.
    if ! "$bin" --version >/dev/null 2>&1; then
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            stackpin_can_install "python3-venv is missing (tests/server.rs fails under CI without schemathesis)" || return 0
            stackpin_apt_install python3-venv
        fi
        echo "installing schemathesis $STACKPIN_SCHEMATHESIS_VERSION (PyPI, into $venv)"
        rm -rf "$venv"
        if ! python3 -m venv "$venv" ||
            ! "$venv/bin/pip" install --quiet "schemathesis==$STACKPIN_SCHEMATHESIS_VERSION"; then
            echo "warning: schemathesis could not be installed (tests/server.rs fails under CI)" >&2
            rm -rf "$venv"
            return 0
        fi
    fi
    export STACKPIN_TEST_SCHEMATHESIS="$bin"
    echo "schemathesis: $("$bin" --version 2>&1 | head -1)"
}
_stackpin_schemathesis_setup
