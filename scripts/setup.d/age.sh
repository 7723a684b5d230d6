# shellcheck shell=bash
# Sourced by scripts/test.sh: the `age` and `age-keygen` commands, from
# Debian's `age` package, for tests/secrets.rs, which encrypts the stacks'
# secrets with the real tool (not only with the crate stackpin decrypts
# with). Installs the package when it is missing (root, or passwordless
# sudo) and exports STACKPIN_TEST_AGE (the directory of both commands).
# Nothing is started, so there is nothing to clean up.

_stackpin_age_setup() {
    if ! command -v age >/dev/null 2>&1 || ! command -v age-keygen >/dev/null 2>&1; then
        stackpin_can_install "age is missing (run: sudo apt-get install age; tests/secrets.rs fails under CI without it)" || return 0
        stackpin_apt_install age
    fi
    local bin
    bin="$(command -v age)"
    export STACKPIN_TEST_AGE="${bin%/*}"
    echo "age: $(age --version 2>&1 | head -1) (${STACKPIN_TEST_AGE})"
}
_stackpin_age_setup
