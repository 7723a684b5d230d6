# `scripts/demo.sh --full`: the runbook's stack shape on this machine, under
# compose v2 (production's), from the Debian test images that
# scripts/fixtures.sh builds (scripts/web-images.sh): an nginx router that
# picks the tenant or the admin app by Host header and resolves them per
# request, both apps replaced start-first, Redis and PostgreSQL (data in a
# named volume, dumped before every deploy). A load generator sends requests
# through the router during each converge and prints how many failed.
#
# Sourced by scripts/demo.sh, which provides step, pause, DEMO_DIR, REPO,
# BIN and the fixtures' STACKPIN_TEST_* variables.

SHOP=demo-shop
export DOCKER_CONFIG="$STACKPIN_TEST_COMPOSE_V2_CONFIG"
COMPOSE_V2="docker compose"
SHOP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sp() { "$BIN" --root "$DEMO_DIR/root" --repo "$REPO" --host demo-host --state-dir "$DEMO_DIR/state" "$@"; }

write_shop() { # $1 tenant image, $2 version
    local d="$REPO/stacks/$SHOP"
    mkdir -p "$d/config"
    cat >"$d/stack.yaml" <<YAML
environment: production
version: $2
images:
  router: $STACKPIN_TEST_WEB_ROUTER
  tenant: $1
  admin: $STACKPIN_TEST_WEB_APP_V1
  redis: $STACKPIN_TEST_WEB_CACHE
  db: $STACKPIN_TEST_WEB_DB
update:
  drain: 2s
  services:
    tenant: {order: start-first}
    admin: {order: start-first}
backup:
  postgres: [{container: db, user: postgres, databases: [ten_demo]}]
smoke:
  timeout: 60s
  checks:
    - containers: {}
    - http: {url: "http://127.0.0.1:$SHOP_PORT/web/health", host: demo.example.com}
    - http: {service: tenant, port: 8000, path: /web/health}
    - http: {service: admin, port: 8000, path: /web/login}
YAML
    cat >"$d/compose.yaml" <<YAML
# The runbook's odoo18-prod + seisei-odoo-router, with stand-ins: app.py for
# Odoo (tenant and admin), the Debian packages for nginx, Redis, PostgreSQL.
services:
  router:
    image: stackpin-test/web
    ports: ["127.0.0.1:$SHOP_PORT:80"]
    volumes: ["./config/nginx.conf:/etc/nginx/nginx.conf:ro"]
  tenant:
    image: stackpin-test/web
    environment: {DB_HOST: db, DB_NAME: ten_demo, DB_USER: postgres, REDIS_HOST: redis}
    stop_grace_period: 5s
    depends_on: [db, redis]
    healthcheck: &app_health
      test: ["CMD", "python3", "/app/app.py", "health"]
      interval: 1s
      timeout: 5s
      retries: 3
      start_period: 5s
  admin:
    image: stackpin-test/web
    environment: {DB_HOST: db, DB_NAME: ten_demo, DB_USER: postgres, REDIS_HOST: redis}
    stop_grace_period: 5s
    depends_on: [db, redis]
    healthcheck: *app_health
  redis:
    image: stackpin-test/web
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      retries: 30
  db:
    image: stackpin-test/web
    environment: {POSTGRES_DB: ten_demo}
    volumes: ["pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres", "-h", "127.0.0.1"]
      interval: 1s
      retries: 30
volumes:
  pgdata: {}
YAML
    cat >"$d/config/nginx.conf" <<'NGINX'
worker_processes 1;
error_log /dev/stderr warn;
pid /tmp/nginx.pid;
events {}
http {
    access_log off;
    # Docker's DNS, asked again every second: the router follows containers
    # replaced start-first without a reload.
    resolver 127.0.0.11 valid=1s ipv6=off;
    map $host $backend {
        default            tenant:8000;
        admin.example.com  admin:8000;
    }
    server {
        listen 80;
        location / {
            proxy_pass http://$backend;
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 1s;
        }
    }
}
NGINX
    git -C "$REPO" add -A
    git -C "$REPO" -c user.name=demo -c user.email=demo@example.com commit -qm "$SHOP: $2"
}

# Sends GET /version (Host demo.example.com) through the router until
# $1 exists; prints what was sent, what failed and who answered.
load() {
    python3 - "$SHOP_PORT" "$1" <<'PY'
import http.client, os, sys, time
port, stop = int(sys.argv[1]), sys.argv[2]
sent, failed, answers, slowest = 0, {}, {}, 0.0
while not os.path.exists(stop):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/version", headers={"Host": "demo.example.com"})
        r = c.getresponse()
        body = r.read().decode().strip()
        c.close()
        key = body if r.status == 200 else f"status {r.status}"
    except OSError as e:
        key = f"no answer ({e.__class__.__name__})"
    slowest = max(slowest, time.monotonic() - t0)
    sent += 1
    if key.startswith(("status", "no answer")):
        failed[key] = failed.get(key, 0) + 1
    else:
        answers[key] = answers.get(key, 0) + 1
print(f"    requests through the router: {sent} sent, {sum(failed.values())} failed {failed or ''}")
print(f"    answered by: {answers}; slowest {slowest * 1000:.0f} ms")
PY
}

# Runs `sp sync` while the load generator runs.
sync_under_load() {
    local stop="$DEMO_DIR/load.stop" out="$DEMO_DIR/load.out" rc=0
    rm -f "$stop"
    load "$stop" >"$out" &
    local pid=$!
    sleep 1
    sp sync "$SHOP" || rc=$?
    sleep 1
    touch "$stop"
    wait "$pid" || true
    cat "$out"
    return "$rc"
}

shop_get() { # $1 host, $2 path
    curl -fsS -H "Host: $1" "http://127.0.0.1:$SHOP_PORT$2" 2>/dev/null || echo '(nothing)'
}

step "compose v2 for this demo: $("$BIN" --version | tail -1)"

step "desired state: $SHOP (router, tenant and admin apps, redis, postgres), tenant at v1"
write_shop "$STACKPIN_TEST_WEB_APP_V1" tenant-v1
sp validate "$REPO"

step "stackpin sync  (first deploy: five containers, smoke through the router and on each app)"
sp sync "$SHOP"
printf '    demo.example.com  /version -> %s\n' "$(shop_get demo.example.com /version)"
printf '    admin.example.com /version -> %s\n' "$(shop_get admin.example.com /version)"
printf '    a row written through the tenant app: %s\n' "$(shop_get demo.example.com '/web/db?put=order-1001' | tr '\n' ' ')"
printf '    a session counted in redis: %s\n' "$(shop_get demo.example.com /web/session)"
pause

step "the tenant app goes to v2, start-first, while requests flow through the router"
write_shop "$STACKPIN_TEST_WEB_APP_V2" tenant-v2
sp plan "$SHOP" | sed -n '/recreate\|start-first\|keep running/p'
sync_under_load
printf '    rows after the upgrade: %s\n' "$(shop_get demo.example.com /web/db | tr '\n' ' ')"
pause

step "a bump to a tenant image that answers 500 everywhere: refused before it takes a request"
write_shop "$STACKPIN_TEST_WEB_APP_500" tenant-broken
sync_under_load || echo "    (exit $? — refused and rolled back, as it should)"
printf '    demo.example.com /version -> %s\n' "$(shop_get demo.example.com /version)"
printf '    rows after the refused release: %s\n' "$(shop_get demo.example.com /web/db | tr '\n' ' ')"
pause

step "stackpin status"
sp status "$SHOP"
step "stackpin history $SHOP"
sp history "$SHOP"
step "the pre-deploy backups (pg_dump inside the db container)"
ls -l "$DEMO_DIR/root/backups/$SHOP"/*/ 2>/dev/null | grep -v '^total' || true

printf '\nThe demo stack is still running (project %s, router on 127.0.0.1:%s). Look around:\n' "$SHOP" "$SHOP_PORT"
printf '  cd %s/root/stacks/%s && DOCKER_CONFIG=%s %s ps\n' "$DEMO_DIR" "$SHOP" "$DOCKER_CONFIG" "$COMPOSE_V2"
printf 'Clean up with: scripts/demo.sh --clean\n'
