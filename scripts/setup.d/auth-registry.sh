# shellcheck shell=bash
# Sourced by scripts/test.sh: a second registry on 127.0.0.1 that demands
# basic authentication (htpasswd, bcrypt), for tests/registry_auth.rs, with
# one image pushed to it by digest. Debian's `docker-registry` (already there
# for the fixtures) serves it; `htpasswd` comes from `apache2-utils`. Plain
# HTTP on loopback, as the main fixtures registry: the engine talks to
# 127.0.0.0/8 registries without TLS. Exports
#   STACKPIN_TEST_AUTH_REGISTRY   127.0.0.1:PORT
#   STACKPIN_TEST_AUTH_IMAGE      127.0.0.1:PORT/private/app@sha256:…
#   STACKPIN_TEST_AUTH_USER / STACKPIN_TEST_AUTH_PASSWORD
# and stops the registry (and removes its storage) when the run ends.

_stackpin_auth_registry_setup() {
    if ! command -v htpasswd >/dev/null 2>&1; then
        stackpin_can_install "htpasswd is missing (tests/registry_auth.rs needs apache2-utils under CI)" || return 0
        stackpin_apt_install apache2-utils
    fi
    local dir port user=stackpin-puller password
    dir="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-auth-registry.XXXXXX")"
    port="$(_fx_free_port)"
    password="pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    htpasswd -Bbn "$user" "$password" >"$dir/htpasswd"
    cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
auth:
  htpasswd:
    realm: stackpin-test
    path: $dir/htpasswd
YML
    nohup docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
    stackpin_on_exit "kill \$(cat '$dir/registry.pid') 2>/dev/null; rm -rf '$dir'"
    local i code=""
    for i in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)"
        [ "$code" = 401 ] && break
        sleep 0.1
    done
    [ "$code" = 401 ] || { cat "$dir/registry.log" >&2; echo "the authenticated registry did not start" >&2; return 1; }
    # One image in it, pushed with a login kept in this directory only, then
    # removed from the engine so tests pull for real. Its own image (the
    # fixtures' v1 plus a label), not a copy: the engine "pulls" a digest it
    # already holds under another repository without asking the registry,
    # so a copy of v1 would never meet the authentication.
    local name="127.0.0.1:$port/private/app:v1" digest
    docker pull -q "$STACKPIN_TEST_IMAGE_V1" >/dev/null
    mkdir -p "$dir/build"
    printf 'FROM %s\nLABEL org.stackpin.test=private-registry\n' "$STACKPIN_TEST_IMAGE_V1" >"$dir/build/Dockerfile"
    docker build -q -t "$name" "$dir/build" >"$dir/build.log" 2>&1 || { cat "$dir/build.log" >&2; return 1; }
    mkdir -p "$dir/docker"
    printf '%s' "$password" | DOCKER_CONFIG="$dir/docker" docker login -u "$user" --password-stdin "127.0.0.1:$port" \
        >"$dir/login.log" 2>&1 || { cat "$dir/login.log" >&2; return 1; }
    digest="$(DOCKER_CONFIG="$dir/docker" docker push "$name" | sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p')"
    rm -rf "$dir/docker"
    [ -n "$digest" ] || { echo "pushing to the authenticated registry gave no digest" >&2; return 1; }
    docker rmi "$name" "127.0.0.1:$port/private/app@$digest" >/dev/null 2>&1 || true
    export STACKPIN_TEST_AUTH_REGISTRY="127.0.0.1:$port"
    export STACKPIN_TEST_AUTH_IMAGE="127.0.0.1:$port/private/app@$digest"
    export STACKPIN_TEST_AUTH_USER="$user" STACKPIN_TEST_AUTH_PASSWORD="$password"
    echo "authenticated registry: $STACKPIN_TEST_AUTH_REGISTRY ($STACKPIN_TEST_AUTH_IMAGE)"
}
_stackpin_auth_registry_setup
