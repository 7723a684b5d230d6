# shellcheck shell=bash
# Sourced by scripts/test.sh: Prometheus' own `promtool`, from Debian's
# `prometheus` package, for tests/server.rs, which checks the daemon's
# /metrics with `promtool check metrics`. Installs the package when promtool
# is missing (root, or passwordless sudo) and exports STACKPIN_TEST_PROMTOOL.
# Nothing is started (the package's service needs systemd, which a test
# machine may not run), so there is nothing to clean up.

_stackpin_promtool_setup() {
    local bin="${STACKPIN_TEST_PROMTOOL:-}"
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        bin="$(command -v promtool || true)"
    fi
    if [ -z "$bin" ]; then
        local sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            if sudo -n true 2>/dev/null; then
                sudo=(sudo -n)
            else
                echo "warning: promtool is missing and installing it needs root;" >&2
                echo "         run: sudo apt-get install prometheus (tests/server.rs fails under CI without it)" >&2
                return 0
            fi
        fi
        echo "installing prometheus for promtool (apt-get)"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        bin=/usr/bin/promtool
    fi
    if ! "$bin" --version >/dev/null 2>&1; then
        echo "warning: $bin does not run; tests/server.rs needs a working promtool" >&2
        return 0
    fi
    export STACKPIN_TEST_PROMTOOL="$bin"
    echo "promtool: $("$bin" --version 2>&1 | head -1) ($bin)"
}
_stackpin_promtool_setup
