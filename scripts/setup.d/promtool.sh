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
        stackpin_can_install "promtool is missing (run: sudo apt-get install prometheus; tests/server.rs fails under CI without it)" || return 0
        stackpin_apt_install prometheus
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
