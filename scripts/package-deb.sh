#!/usr/bin/env bash
# Builds stackpin's Debian package with cargo-deb (`cargo install cargo-deb
# --locked`), from Cargo.toml's [package.metadata.deb]: the binary in
# /usr/bin, the systemd units with a drop-in pointing them there, a
# commented /etc/stackpin/config.yaml (a conffile), the man pages and the
# bash, zsh and fish completions, which the built binary generates first
# (`stackpin man`, `stackpin completions`) into target/assets/.
#
#   scripts/package-deb.sh                      release build -> target/debian/
#   scripts/package-deb.sh --profile dev --no-build --output DIR
#                                               package the binary the tests built
#   scripts/package-deb.sh --target x86_64-unknown-linux-gnu --no-build
#                                               what .github/workflows/release.yml does
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
target=
build=1
output=target/debian
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --target) target="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --output) output="$2"; shift 2 ;;
        *) echo "usage: $0 [--profile release|dev] [--target TRIPLE] [--no-build] [--output DIR]" >&2; exit 2 ;;
    esac
done

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "error: cargo-deb is missing; install it with: cargo install cargo-deb --locked" >&2
    exit 2
fi
target_args=()
[ -z "$target" ] || target_args=(--target "$target")
if [ "$build" = 1 ]; then
    cargo build --locked --profile "$profile" "${target_args[@]}" --bin stackpin
fi
case "$profile" in
    dev) bin=debug/stackpin ;;
    *) bin="$profile/stackpin" ;;
esac
bin="target/${target:+$target/}$bin"
[ -x "$bin" ] || { echo "error: $bin is not built (drop --no-build)" >&2; exit 2; }

rm -rf target/assets
mkdir -p target/assets/completions
"$bin" man target/assets/man >/dev/null
"$bin" completions bash >target/assets/completions/stackpin
"$bin" completions zsh >target/assets/completions/_stackpin
"$bin" completions fish >target/assets/completions/stackpin.fish

mkdir -p "$output"
cargo deb --locked --no-build --profile "$profile" "${target_args[@]}" --output "$output"
