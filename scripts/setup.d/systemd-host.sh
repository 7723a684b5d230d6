# shellcheck shell=bash
# Sourced by scripts/test.sh: an image that boots systemd as PID 1, for
# tests/hardened.rs, which runs the shipped unit (systemd/stackpin.service,
# every sandbox setting as shipped) inside it against this machine's Docker
# engine. A test machine's PID 1 is rarely systemd; a container's can be.
# Built once with mmdebstrap from the host's apt sources (about 30 s, cached
# in ~/.cache/stackpin-test keyed by the package list, by web-images.sh's
# stackpin_debian_root_tar, which the fixtures source), imported once.
# Exports STACKPIN_TEST_SYSTEMD_IMAGE. Nothing keeps running.

STACKPIN_SYSTEMD_PACKAGES="systemd,systemd-sysv,dbus,ca-certificates,libssl3,adduser,man-db"

_stackpin_systemd_host_setup() {
    local tar image
    image="stackpin-test/systemd:$(_debian_root_key "$STACKPIN_SYSTEMD_PACKAGES")"
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        tar="$(stackpin_debian_root_tar systemd "$STACKPIN_SYSTEMD_PACKAGES")" || return 1
        docker import "$tar" "$image" >/dev/null
    fi
    export STACKPIN_TEST_SYSTEMD_IMAGE="$image"
    echo "systemd image: $image"
}
_stackpin_systemd_host_setup
