# shellcheck shell=bash
# Sourced by scripts/test.sh: a real headless browser for tests/page.rs,
# which renders the daemon's status page and takes a screenshot.
#
# Installs Debian's `chromium` when it is missing (root, or passwordless
# sudo) and exports STACKPIN_TEST_CHROMIUM. Nothing runs in the background,
# so there is nothing to clean up: each test starts and ends its own browser.
# An existing browser can be named with STACKPIN_TEST_CHROMIUM beforehand.

_stackpin_chromium_setup() {
    local bin="${STACKPIN_TEST_CHROMIUM:-}"
    if [ -n "$bin" ] && [ -x "$bin" ]; then
        :
    elif [ -x /usr/bin/chromium ]; then
        bin=/usr/bin/chromium
    else
        stackpin_can_install "chromium is missing (run: sudo apt-get install chromium; tests/page.rs fails under CI without it)" || return 0
        stackpin_apt_install chromium fonts-dejavu-core
        bin=/usr/bin/chromium
    fi
    if ! "$bin" --version >/dev/null 2>&1; then
        echo "warning: $bin does not run; tests/page.rs needs a working chromium" >&2
        return 0
    fi
    export STACKPIN_TEST_CHROMIUM="$bin"
    echo "chromium: $("$bin" --version 2>/dev/null) ($bin)"
}
_stackpin_chromium_setup
unset -f _stackpin_chromium_setup
