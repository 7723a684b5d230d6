#!/usr/bin/env bash
# stackpin's demo, on this machine, with real components: a registry on
# loopback with three app images (v1, v2, and a broken one whose health check
# fails), a desired-state git repository with one stack, and stackpin
# converging it: deploy v1, upgrade to v2, then a bump to the broken image that
# fails smoke and is reverted to v2 automatically. Ends with status and history.
#
#   scripts/demo.sh          run it (leaves the demo stack running; prints how to clean up)
#   scripts/demo.sh --full   the runbook's shape instead, under compose v2: an nginx
#                            router, a tenant and an admin app upgraded start-first,
#                            Redis and PostgreSQL, from the Debian test images, with
#                            requests sent through the router during each converge
#   scripts/demo.sh --clean  stop the demo stacks and the fixtures it started, and
#                            say what it removed and what it kept (caches);
#                            --clean --all removes those too
#
# Each phase is printed with its time. The simple demo builds only the busybox
# images it shows (the Debian ones only for --full), and runs under compose v2
# when the fixtures have it (it says which compose it uses).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_DIR=${STACKPIN_DEMO_DIR:-/tmp/stackpin-demo}
STACK=demo-web

START=$SECONDS
LAST=$SECONDS
step() {
    printf '\n\033[1m==> %s\033[0m  (%ds in, last phase %ds)\n' "$*" $((SECONDS - START)) $((SECONDS - LAST))
    LAST=$SECONDS
}
pause() { [ -t 1 ] && sleep "${1:-1}" || true; }

MODE=simple
case "${1:-}" in
--full) MODE=full ;;
--clean | "") ;;
*)
    echo "usage: $0 [--full|--clean [--all]]" >&2
    exit 2
    ;;
esac

if [ "${1:-}" = "--clean" ]; then
    removed=()
    for s in "$STACK" demo-shop; do
        [ -d "$DEMO_DIR/root/stacks/$s" ] || continue
        (cd "$DEMO_DIR/root/stacks/$s" && docker-compose -p "$s" down -v --remove-orphans 2>/dev/null || docker compose -p "$s" down -v --remove-orphans) >/dev/null 2>&1 || true
        removed+=("the demo stack $s (its containers, networks and volumes)")
    done
    if [ -d "$DEMO_DIR" ]; then
        chmod -R u+w "$DEMO_DIR" 2>/dev/null || true
        rm -rf "$DEMO_DIR"
        removed+=("$DEMO_DIR (the demo host's root, repository and state)")
    fi
    if [ -s target/test-fixtures.d/registry.pid ]; then
        removed+=("the loopback registry and its storage")
    fi
    bash scripts/fixtures.sh stop >/dev/null 2>&1 || true
    caches=(target "${STACKPIN_IMAGE_CACHE:-$HOME/.cache/stackpin-test}")
    if [ "${2:-}" = "--all" ]; then
        imgs=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '(^|/)stackpin-test/' || true)
        [ -n "$imgs" ] && docker rmi -f $imgs >/dev/null 2>&1 || true
        removed+=("the stackpin-test images in the engine")
        for c in "${caches[@]}"; do
            [ -e "$c" ] || continue
            chmod -R u+w "$c" 2>/dev/null || true
            rm -rf "$c"
            removed+=("$c")
        done
        kept=()
    else
        kept=()
        for c in "${caches[@]}"; do
            [ -e "$c" ] && kept+=("$c ($(du -sh "$c" 2>/dev/null | cut -f1))")
        done
        n=$(docker images --format '{{.Repository}}' | grep -cE '(^|/)stackpin-test/' || true)
        [ "${n:-0}" -gt 0 ] && kept+=("$n stackpin-test image(s) in the engine")
    fi
    if [ ${#removed[@]} -gt 0 ]; then
        echo "removed:"
        printf '  %s\n' "${removed[@]}"
    else
        echo "nothing of a demo to remove"
    fi
    if [ ${#kept[@]} -gt 0 ]; then
        echo "kept (caches that make the next run fast; scripts/demo.sh --clean --all removes them):"
        printf '  %s\n' "${kept[@]}"
    fi
    exit 0
fi

step "real components: Docker engine, compose, a registry on 127.0.0.1, images pushed by digest"
# shellcheck source=scripts/fixtures.sh
. scripts/fixtures.sh
# The simple demo shows the busybox app only: no Debian images.
# Its variables go to a file of its own: the test suite's file names the
# Debian images too.
if [ "$MODE" != full ]; then
    export STACKPIN_FIXTURES_WEB=0
    export STACKPIN_FIXTURES_ENV_FILE="${TMPDIR:-/tmp}/stackpin-demo-fixtures.env"
fi
stackpin_fixtures_setup
# Compose v2 when the fixtures have it (auto prefers `docker compose`).
if [ -n "${STACKPIN_TEST_COMPOSE_V2_CONFIG:-}" ] && [ -d "$STACKPIN_TEST_COMPOSE_V2_CONFIG" ]; then
    export DOCKER_CONFIG=$STACKPIN_TEST_COMPOSE_V2_CONFIG
    STACKPIN_TEST_COMPOSE="docker compose"
fi

step "building stackpin"
cargo build --quiet
BIN=$PWD/target/debug/stackpin
printf '    compose: %s\n' "$("$BIN" --version | sed -n 's/^compose .*): //p')"

# A fresh demo host and repository.
for s in "$STACK" demo-shop; do
    if [ -d "$DEMO_DIR/root/stacks/$s" ]; then
        (cd "$DEMO_DIR/root/stacks/$s" && $STACKPIN_TEST_COMPOSE -p "$s" down -v --remove-orphans >/dev/null 2>&1) || true
    fi
done
chmod -R u+w "$DEMO_DIR" 2>/dev/null || true
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/root" "$DEMO_DIR/repo"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REPO=$DEMO_DIR/repo
# The demo host's config: the demo app serves on the host's loopback
# (network_mode: host), a host power this host grants it by name.
cat > "$DEMO_DIR/config.yaml" <<YAML
allow:
  - stacks: [$STACK]
    powers: [host_network]
    reason: "the demo app serves on the host's loopback"
YAML
sp() { "$BIN" --config "$DEMO_DIR/config.yaml" --root "$DEMO_DIR/root" --repo "$REPO" --host demo-host --state-dir "$DEMO_DIR/state" "$@"; }

write_stack() { # $1 image, $2 version
    mkdir -p "$REPO/stacks/$STACK/config"
    cat > "$REPO/stacks/$STACK/stack.yaml" <<YAML
environment: demo
version: $2
images:
  web: $1
env:
  PORT: "$PORT"
keep_releases: 5
marks_verified: true
smoke:
  timeout: 20s
  checks:
    - containers: {}
    - http: {url: "http://127.0.0.1:$PORT/health", expect_status: 200, contains: ok}
YAML
    cat > "$REPO/stacks/$STACK/compose.yaml" <<'YAML'
services:
  web:
    image: stackpin-test/app
    network_mode: host
    stop_grace_period: 2s
    environment:
      PORT: ${PORT}
    volumes:
      - ./config/site.conf:/etc/site.conf:ro
YAML
    echo "greeting = hello from $2" > "$REPO/stacks/$STACK/config/site.conf"
    git -C "$REPO" add -A
    git -C "$REPO" -c user.name=demo -c user.email=demo@example.com commit -qm "$STACK: $2"
}
show() { printf '    curl 127.0.0.1:%s/ -> %s\n' "$PORT" "$(curl -fsS "http://127.0.0.1:$PORT/" 2>/dev/null || echo '(nothing)')"; }

git -C "$REPO" init -q -b main
if [ "$MODE" = full ]; then
    # shellcheck source=scripts/demo-full.sh
    . scripts/demo-full.sh
    exit 0
fi
step "desired state: $STACK pinned to v1 ($STACKPIN_TEST_IMAGE_V1)"
write_stack "$STACKPIN_TEST_IMAGE_V1" v1
sp validate "$REPO"

step "stackpin sync  (first deploy of v1)"
sp sync
show; pause

step "a developer merges a digest bump to v2; stackpin sync"
write_stack "$STACKPIN_TEST_IMAGE_V2" v2
sp sync --dry-run
sp sync
show; pause

step "a bump to a broken image (its /health is 404): smoke fails, stackpin reverts to v2"
write_stack "$STACKPIN_TEST_IMAGE_BROKEN" v3-broken
sp sync || echo "    (exit $? — the deploy failed and was rolled back, as it should)"
show; pause

step "the failed release is quarantined: another sync does nothing until git changes or --force"
sp sync || true

step "stackpin status"
sp status
step "stackpin history"
sp history
step "stackpin releases $STACK"
sp releases "$STACK"
step "the host layout"
ls -l "$DEMO_DIR/root/stacks/"
cat "$DEMO_DIR/root/releases/verified/$STACK.txt"

printf '\nThe demo stack is still running (project %s, port %s). Look around:\n' "$STACK" "$PORT"
printf '  cd %s/root/stacks/%s && %s ps\n' "$DEMO_DIR" "$STACK" "$STACKPIN_TEST_COMPOSE"
printf 'Clean up with: scripts/demo.sh --clean\n'
printf 'The demo took %ds.\n' $((SECONDS - START))
