#!/usr/bin/env bash
# Real services for the router/app/database tests (tests/rollout.rs,
# tests/database.rs, `scripts/demo.sh --full`, `scripts/bench.sh rollout`):
# one Debian root filesystem made with mmdebstrap from the host's apt
# sources (nginx-light, python3 with psycopg2, postgresql, redis-server),
# `docker import`ed once, and derived images tagged per role and pushed to
# the loopback registry:
#   STACKPIN_TEST_WEB_ROUTER    nginx (the stack mounts its own nginx.conf)
#   STACKPIN_TEST_WEB_APP_V1    tests/images/web/app.py answering "v1"
#   STACKPIN_TEST_WEB_APP_V2    the same app answering "v2"
#   STACKPIN_TEST_WEB_APP_500   answers 500 on every path, never healthy
#   STACKPIN_TEST_WEB_DB        PostgreSQL (tests/images/db/pg-entry.sh:
#                               a cluster in $PGDATA, databases $POSTGRES_DB)
#   STACKPIN_TEST_WEB_CACHE     redis-server
#   STACKPIN_TEST_WEB_ROOT_TAR  the cached root tarball they are built from
# The root tarball is cached under $STACKPIN_IMAGE_CACHE (default
# ~/.cache/stackpin-test), keyed by the package list, the suite and app.py,
# so a warm run neither runs mmdebstrap nor imports again; the pushed
# images are reused while the registry holds them and app.py is unchanged.
#
# Sourced by scripts/fixtures.sh (which provides _fx_log, _fx_sudo,
# _fx_manifest_exists, _fx_repo_digest and STACKPIN_TEST_REGISTRY).

STACKPIN_WEB_PACKAGES="nginx-light,python3,python3-psycopg2,postgresql,redis-server"
STACKPIN_WEB_SUITE="${STACKPIN_WEB_SUITE:-bookworm}"
STACKPIN_IMAGE_CACHE="${STACKPIN_IMAGE_CACHE:-${HOME:-/root}/.cache/stackpin-test}"

# A Debian root's key: what mmdebstrap installs ($1, a comma list).
_debian_root_key() {
    echo "$1 $STACKPIN_WEB_SUITE" | sha256sum | cut -c1-16
}

# The web images' root filesystem's key.
_web_root_key() {
    _debian_root_key "$STACKPIN_WEB_PACKAGES"
}

# The images' key: the root, the app and this script (the Dockerfiles).
_web_key() {
    {
        _web_root_key
        cat "$STACKPIN_FIXTURES_CRATE/tests/images/web/app.py" \
            "$STACKPIN_FIXTURES_CRATE/tests/images/db/pg-entry.sh" "${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
}

# The apt mirror the host itself uses (mmdebstrap reads no sources file).
_web_mirror() {
    local m
    m="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)"
    [ -n "$m" ] || m="$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)"
    echo "${m:-http://deb.debian.org/debian}"
}

# A Debian root tarball with packages $2 (a comma list), cached as
# $STACKPIN_IMAGE_CACHE/$1-<key>.tar; prints its path. Also for the
# setup.d parts that need a root of their own (systemd-host.sh).
stackpin_debian_root_tar() {
    local name="$1" packages="$2" tar
    tar="$STACKPIN_IMAGE_CACHE/$name-$(_debian_root_key "$packages").tar"
    if [ -f "$tar" ] && [ -s "$tar" ]; then
        echo "$tar"
        return 0
    fi
    # Not a tarball (an interrupted or older run): build it again.
    rm -rf "$tar" "$tar.tmp"
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        _fx_log "installing mmdebstrap (to build the Debian test images)"
        _fx_sudo apt-get update -qq || return 1
        _fx_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null || return 1
    fi
    mkdir -p "$STACKPIN_IMAGE_CACHE" || return 1
    _fx_log "building a Debian $STACKPIN_WEB_SUITE root with $packages (about a minute, cached)"
    # --format: mmdebstrap guesses the format from the name, and "*.tmp"
    # would make it write a directory.
    local log="$STACKPIN_FIXTURES_STATE/mmdebstrap-$name.log"
    if ! _fx_sudo mmdebstrap --quiet --variant=apt --format=tar --include="$packages" \
        "$STACKPIN_WEB_SUITE" "$tar.tmp" "$(_web_mirror)" >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$tar.tmp"
        return 1
    fi
    mv "$tar.tmp" "$tar" && echo "$tar"
}

_web_reuse() {
    local key="$1"
    [ -z "${STACKPIN_FIXTURES_REBUILD:-}" ] || return 1
    [ -f "$STACKPIN_TEST_WEB_ROOT_TAR" ] || return 1
    [ -s "$STACKPIN_FIXTURES_ENV_FILE" ] || return 1
    [ "$(sed -n 's/^export STACKPIN_TEST_WEB_KEY=//p' "$STACKPIN_FIXTURES_ENV_FILE")" = "$key" ] || return 1
    [ "$(sed -n 's/^export STACKPIN_TEST_REGISTRY=//p' "$STACKPIN_FIXTURES_ENV_FILE")" = "$STACKPIN_TEST_REGISTRY" ] || return 1
    local k ref
    for k in ROUTER APP_V1 APP_V2 APP_500 DB CACHE; do
        ref="$(sed -n "s/^export STACKPIN_TEST_WEB_$k=//p" "$STACKPIN_FIXTURES_ENV_FILE")"
        [ -n "$ref" ] && _fx_manifest_exists "$ref" || return 1
        printf -v "STACKPIN_TEST_WEB_$k" '%s' "$ref"
    done
    STACKPIN_TEST_WEB_KEY="$key"
    _fx_log "reusing the Debian web images already in $STACKPIN_TEST_REGISTRY"
}

# $1 role tag, $2 Dockerfile body after FROM, $3 build context dir, $4 base
# image; prints repo@sha256:...
_web_build_push() {
    local tag="$1" body="$2" ctx="$3" base="$4"
    local name="$STACKPIN_TEST_REGISTRY/stackpin-test/web"
    printf 'FROM %s\n%s\n' "$base" "$body" >"$ctx/Dockerfile"
    docker build -q -t "$name:$tag" "$ctx" >"$STACKPIN_FIXTURES_STATE/build-web-$tag.log" 2>&1 ||
        { cat "$STACKPIN_FIXTURES_STATE/build-web-$tag.log" >&2; return 1; }
    docker push "$name:$tag" >"$STACKPIN_FIXTURES_STATE/push-web-$tag.log" 2>&1 ||
        { cat "$STACKPIN_FIXTURES_STATE/push-web-$tag.log" >&2; return 1; }
    local ref
    ref="$(_fx_repo_digest "$name" "$tag")" || return 1
    # The tag goes; the base keeps the layer locally, so a pull by digest
    # fetches only the manifest and config.
    docker rmi "$name:$tag" >/dev/null 2>&1 || true
    echo "$ref"
}

stackpin_fixtures_web_images() {
    local key root tar base ctx
    key="$(_web_key)"
    root="$(_web_root_key)"
    STACKPIN_TEST_WEB_ROOT_TAR="$STACKPIN_IMAGE_CACHE/debian-$root.tar"
    _web_reuse "$key" && return 0
    tar="$(stackpin_debian_root_tar debian "$STACKPIN_WEB_PACKAGES")" || return 1
    base="stackpin-test/debian-base:$root"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        _fx_log "importing $tar as $base"
        docker import "$tar" "$base" >/dev/null || return 1
    fi
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-web.XXXXXX")" || return 1
    cp "$STACKPIN_FIXTURES_CRATE/tests/images/web/app.py" "$ctx/app.py"
    cp "$STACKPIN_FIXTURES_CRATE/tests/images/db/pg-entry.sh" "$ctx/pg-entry.sh"
    # The Debian packages start nothing in a container; the data
    # directory belongs to postgres, so a new named volume does too.
    local db='COPY pg-entry.sh /usr/local/bin/pg-entry
RUN mkdir -p /var/lib/postgresql/data /run/postgresql && chown -R postgres:postgres /var/lib/postgresql /run/postgresql && chmod 0700 /var/lib/postgresql/data
ENV PGDATA=/var/lib/postgresql/data
USER postgres
STOPSIGNAL SIGINT
CMD ["/usr/local/bin/pg-entry"]'
    local cache='USER redis
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/var/lib/redis"]'
    local app='COPY app.py /app/app.py
ENV PORT=8000
CMD ["python3", "/app/app.py"]'
    STACKPIN_TEST_WEB_ROUTER="$(_web_build_push router 'CMD ["nginx", "-g", "daemon off;"]' "$ctx" "$base")" &&
        STACKPIN_TEST_WEB_APP_V1="$(_web_build_push app-v1 "$app
ENV APP_VERSION=v1" "$ctx" "$base")" &&
        STACKPIN_TEST_WEB_APP_V2="$(_web_build_push app-v2 "$app
ENV APP_VERSION=v2" "$ctx" "$base")" &&
        STACKPIN_TEST_WEB_APP_500="$(_web_build_push app-500 "$app
ENV APP_VERSION=v500 APP_MODE=500" "$ctx" "$base")" &&
        STACKPIN_TEST_WEB_DB="$(_web_build_push db "$db" "$ctx" "$base")" &&
        STACKPIN_TEST_WEB_CACHE="$(_web_build_push cache "$cache" "$ctx" "$base")" ||
        { rm -rf "$ctx"; return 1; }
    rm -rf "$ctx"
    STACKPIN_TEST_WEB_KEY="$key"
    _fx_log "pushed the Debian web images ($STACKPIN_TEST_WEB_ROUTER, ...)"
}
