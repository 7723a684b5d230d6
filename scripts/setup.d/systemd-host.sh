# shellcheck shell=bash
# Sourced by scripts/test.sh: an image that boots systemd as PID 1, for
# tests/hardened.rs, which runs the shipped unit (systemd/stackpin.service,
# every sandbox setting as shipped) inside it against this machine's Docker
# engine. A test machine's PID 1 is rarely systemd; a container's can be.
# Built once with mmdebstrap from the host's apt sources (about 30 s, cached
# in ~/.cache/stackpin-test keyed by the package list), imported once.
# Exports STACKPIN_TEST_SYSTEMD_IMAGE. Nothing keeps running.

STACKPIN_SYSTEMD_PACKAGES="systemd,systemd-sysv,dbus,ca-certificates,libssl3"

_stackpin_systemd_host_setup() {
    local key tar image
    key="$(echo "$STACKPIN_SYSTEMD_PACKAGES $STACKPIN_WEB_SUITE" | sha256sum | cut -c1-16)"
    image="stackpin-test/systemd:$key"
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        tar="$STACKPIN_IMAGE_CACHE/systemd-$key.tar"
        if [ ! -s "$tar" ]; then
            command -v mmdebstrap >/dev/null 2>&1 || {
                stackpin_can_install "mmdebstrap is missing (tests/hardened.rs needs it under CI)" || return 0
                stackpin_apt_install mmdebstrap
            }
            mkdir -p "$STACKPIN_IMAGE_CACHE"
            echo "building a Debian $STACKPIN_WEB_SUITE root with $STACKPIN_SYSTEMD_PACKAGES (cached)"
            rm -rf "$tar.tmp"
            if ! mmdebstrap --quiet --variant=apt --format=tar --include="$STACKPIN_SYSTEMD_PACKAGES" \
                "$STACKPIN_WEB_SUITE" "$tar.tmp" "$(_web_mirror)" >"$STACKPIN_FIXTURES_STATE/mmdebstrap-systemd.log" 2>&1; then
                cat "$STACKPIN_FIXTURES_STATE/mmdebstrap-systemd.log" >&2
                rm -rf "$tar.tmp"
                return 1
            fi
            mv "$tar.tmp" "$tar"
        fi
        docker import "$tar" "$image" >/dev/null
    fi
    export STACKPIN_TEST_SYSTEMD_IMAGE="$image"
    echo "systemd image: $image"
}
_stackpin_systemd_host_setup
