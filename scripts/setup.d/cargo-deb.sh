# shellcheck shell=bash
# Sourced by scripts/test.sh: cargo-deb, for tests/package.rs, which builds
# the .deb with scripts/package-deb.sh from the binary the tests built and
# installs it into a systemd host. Installed with `cargo install --locked`
# at the pinned version when missing (it compiles for about 4 minutes, once
# per machine: ~/.cargo/bin keeps it). Exports STACKPIN_TEST_CARGO_DEB.

STACKPIN_CARGO_DEB_VERSION=3.8.0

_stackpin_cargo_deb_setup() {
    local have
    have="$(cargo deb --version 2>/dev/null || true)"
    case "$have" in
        *" $STACKPIN_CARGO_DEB_VERSION"*) ;;
        *)
            echo "installing cargo-deb $STACKPIN_CARGO_DEB_VERSION (cargo install, about 4 minutes once)"
            if ! cargo install --quiet --locked --version "$STACKPIN_CARGO_DEB_VERSION" cargo-deb; then
                echo "warning: cargo-deb could not be installed (tests/package.rs fails under CI)" >&2
                return 0
            fi
            have="$(cargo deb --version)"
            ;;
    esac
    export STACKPIN_TEST_CARGO_DEB="$have"
    echo "cargo-deb: $have"
}
_stackpin_cargo_deb_setup
