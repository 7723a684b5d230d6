#!/usr/bin/env bash
# stackpin's whole-system figures on this machine, with the real engine, the
# real compose and a registry on loopback (scripts/fixtures.sh). Prints one
# table at the end; writes nothing into the repository but the release build
# in target/. See docs/benchmarks.md for what each figure means.
#
#   scripts/bench.sh                 full run (builds with `cargo build --release`,
#                                    ~5 min the first time; then ~10-15 min)
#   scripts/bench.sh --quick         few rounds: proves it works, figures are rough
#   scripts/bench.sh --compose v2    compose v2 (the fixtures' plugin) for stackpin and the raw side
#   scripts/bench.sh --only webhook,rss     some parts only
#                                    (parts: converge, revert, crash, parallel, rollout, fleet, swarm, webhook, rss, noop, callgrind)
#   STACKPIN_BENCH_BIN=target/debug/stackpin scripts/bench.sh --quick
#                                    use that binary, no build (debugging the script;
#                                    debug-build figures are not the product's)
#
# Everything it starts is stopped on exit: the daemons, the containers of its
# compose projects (named spb-<pid>-*), its temp dir, and the registry if
# fixtures.sh started one for this run. Traffic goes only to 127.0.0.1, and
# for the fleet part to the test hosts on their private bridge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=0
ONLY=""
COMPOSE_FLAVOUR=v1
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --compose)
        COMPOSE_FLAVOUR="${2:?--compose needs v1 or v2}"
        shift
        ;;
    --only)
        ONLY="${2:?--only needs a list}"
        shift
        ;;
    --only=*) ONLY="${1#--only=}" ;;
    -h | --help)
        sed -n '2,19p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

case "$COMPOSE_FLAVOUR" in
v1 | v2) ;;
*)
    echo "--compose takes v1 or v2, not $COMPOSE_FLAVOUR" >&2
    exit 2
    ;;
esac

log() { printf '[bench] %s\n' "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-bench.XXXXXX")"
PREFIX="spb-$$-"

cleanup() {
    local rc=$?
    set +e
    # Daemons this run started (the python driver records their pids).
    if [ -s "$WORK/daemons.pids" ]; then
        while read -r pid; do
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null
                for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            fi
        done <"$WORK/daemons.pids"
    fi
    # Containers, networks and volumes of this run's compose projects only.
    local ids
    docker info >/dev/null 2>&1 ||
        log "the docker engine does not answer: remove the containers of compose projects ${PREFIX}* by hand"
    ids="$(docker ps -a --filter label=com.docker.compose.project \
        --format '{{.ID}} {{.Label "com.docker.compose.project"}}' 2>/dev/null |
        awk -v p="$PREFIX" 'index($2, p) == 1 {print $1}')"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
    ids="$(docker network ls --filter label=com.docker.compose.project \
        --format '{{.ID}} {{.Label "com.docker.compose.project"}}' 2>/dev/null |
        awk -v p="$PREFIX" 'index($2, p) == 1 {print $1}')"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1
    ids="$(docker volume ls --filter label=com.docker.compose.project \
        --format '{{.Name}} {{.Label "com.docker.compose.project"}}' 2>/dev/null |
        awk -v p="$PREFIX" 'index($2, p) == 1 {print $1}')"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker volume rm $ids >/dev/null 2>&1
    chmod -R u+w "$WORK" 2>/dev/null
    rm -rf "$WORK"
    if declare -F stackpin_fixtures_cleanup >/dev/null; then
        stackpin_fixtures_cleanup
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "fixtures: engine, compose, registry on 127.0.0.1, images by digest"
# shellcheck source=scripts/fixtures.sh
. scripts/fixtures.sh
stackpin_fixtures_setup
# The fleet part uses the test hosts `scripts/setup.d/fleet.sh` started (as
# root), if any.
if [ -z "${STACKPIN_TEST_FLEET:-}" ] && [ -f target/test-fleet.env ]; then
    # shellcheck disable=SC1091
    . target/test-fleet.env
fi

if [ -n "${STACKPIN_BENCH_BIN:-}" ]; then
    BIN="$(cd "$(dirname "$STACKPIN_BENCH_BIN")" && pwd)/$(basename "$STACKPIN_BENCH_BIN")"
    log "using $BIN (no build)"
else
    # Tests and CI use the debug profile; the figures are about what ships.
    log "cargo build --release (a few minutes the first time)"
    cargo build --release --quiet --bin stackpin
    BIN="$PWD/target/release/stackpin"
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }

if [ "$COMPOSE_FLAVOUR" = v2 ]; then
    # The fixtures' compose v2 plugin, for stackpin (its `auto` prefers v2)
    # and for the raw side alike.
    export DOCKER_CONFIG="$STACKPIN_TEST_COMPOSE_V2_CONFIG"
    export STACKPIN_TEST_COMPOSE="docker compose"
    log "compose v2: $(docker compose version --short 2>/dev/null)"
fi

machine() {
    local cpu mem
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    printf '%s, %s CPU(s), %s RAM; %s; docker %s; %s; load average %s' \
        "${cpu:-unknown CPU}" "$(nproc)" "$mem" "$(uname -sr)" \
        "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')" \
        "$($STACKPIN_TEST_COMPOSE version --short 2>/dev/null | sed "s/^/$STACKPIN_TEST_COMPOSE /" || echo "$STACKPIN_TEST_COMPOSE")" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

export BENCH_BIN="$BIN" BENCH_WORK="$WORK" BENCH_PREFIX="$PREFIX" BENCH_QUICK="$QUICK" \
    BENCH_ONLY="$ONLY" BENCH_MACHINE="$(machine)" BENCH_PROFILE="$(basename "$(dirname "$BIN")")"

python3 - <<'PY'
import datetime, hashlib, hmac, http.client, json, os, shutil, socket, statistics
import re, subprocess, sys, time

BIN = os.environ["BENCH_BIN"]
WORK = os.environ["BENCH_WORK"]
PREFIX = os.environ["BENCH_PREFIX"]
QUICK = os.environ["BENCH_QUICK"] == "1"
ONLY = [p for p in os.environ["BENCH_ONLY"].split(",") if p]
COMPOSE = os.environ["STACKPIN_TEST_COMPOSE"].split()
IMG = {k: os.environ[f"STACKPIN_TEST_IMAGE_{k.upper()}"] for k in ("v1", "v2", "broken", "crash")}
HOST = "bench-host"
# The host powers the bench stacks need, granted as an operator would: the
# fixture app serves on the host's loopback (network_mode: host). Every
# command reads them (STACKPIN_CONFIG) unless it names a config, and every
# config the bench writes starts with them.
GRANTS = ('allow:\n  - stacks: ["*"]\n    powers: [host_network]\n'
          '    reason: "the bench app serves on the host\'s loopback"\n')
with open(os.path.join(WORK, "grants.yaml"), "w") as _f:
    _f.write(GRANTS)
os.environ["STACKPIN_CONFIG"] = os.path.join(WORK, "grants.yaml")
SECRET = "bench-webhook-secret"

ROUNDS = 2 if QUICK else 5            # converge vs raw, revert, crash
DELIVERIES = 5 if QUICK else 50       # webhooks
SYNCS = 50 if QUICK else 1000         # RSS loop
SYNC_BUDGET = 120 if QUICK else 1800  # seconds, RSS loop

rows = []  # (figure, value, note)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def want(part):
    return not ONLY or part in ONLY


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(cmd, cwd=None, check=True, timeout=600, env=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def git(repo, *args):
    return run(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args])


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def ms(x):
    if x < 0.01:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def summary(values):
    if not values:
        return "no samples"
    return f"median {ms(statistics.median(values))}, p99 {ms(pct(values, 99))} (n={len(values)}, min {ms(min(values))}, max {ms(max(values))})"


def http_status(port, path, timeout=2):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        c.close()
        return r.status, body
    except OSError:
        return None, ""


def wait_for(what, timeout, f, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = f()
        if v:
            return v
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


STACK_YAML = """environment: bench
version: {version}
images:
  web: {image}
env:
  PORT: "{port}"
keep_releases: 3
{hosts}smoke:
  timeout: {timeout}s
  checks:
    - containers: {{}}
    - http: {{url: "http://127.0.0.1:{port}/health", expect_status: 200, contains: ok}}
"""

COMPOSE_YAML = """services:
  web:
    image: stackpin-test/app
    network_mode: host
    stop_grace_period: 1s
    environment:
      PORT: ${PORT}
    volumes:
      - ./config/site.conf:/etc/site.conf:ro
"""


# The same app with a Docker healthcheck: smoke takes "healthy" without a
# restart as its stability proof.
COMPOSE_YAML_HEALTH = COMPOSE_YAML + """    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:${PORT}/health"]
      interval: 1s
      timeout: 1s
      retries: 3
"""


def write_stack(repo, stack, image, port, version, conf, timeout=20, hosts=None, compose=COMPOSE_YAML):
    d = os.path.join(repo, "stacks", stack)
    os.makedirs(os.path.join(d, "config"), exist_ok=True)
    h = f"hosts: [{', '.join(hosts)}]\n" if hosts else ""
    with open(os.path.join(d, "stack.yaml"), "w") as f:
        f.write(STACK_YAML.format(version=version, image=image, port=port, hosts=h, timeout=timeout))
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(compose)
    with open(os.path.join(d, "config", "site.conf"), "w") as f:
        f.write(conf + "\n")


def commit(repo, msg):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", msg)


class Host:
    """One host root with its own desired-state repository."""

    def __init__(self, name):
        self.dir = os.path.join(WORK, name)
        self.root = os.path.join(self.dir, "root")
        self.repo = os.path.join(self.dir, "repo")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.repo)
        git(self.repo, "init", "-q", "-b", "main")

    def cli(self, *args, check=False):
        cmd = [BIN, "--root", self.root, "--repo", self.repo, "--host", HOST,
               "--state-dir", self.state, "--control-socket", os.path.join(self.dir, "no-daemon.sock"),
               *args]
        return run(cmd, check=check, timeout=600)

    def sync(self, stack):
        """`stackpin sync --json STACK`: (wall seconds, result dict)."""
        t0 = time.monotonic()
        p = self.cli("--json", "sync", stack)
        wall = time.monotonic() - t0
        try:
            results = json.loads(p.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"sync printed no JSON (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
        r = next(x for x in results if x["stack"] == stack)
        return wall, r


def stages(r):
    return [(s["name"], s["ok"], s["millis"] / 1000.0) for s in r["stages"]]


# ---------------------------------------------------------------- converge
RAW_UP = []  # raw up + health of the plain variant, for the revert ratio


def raw_healthy(project):
    """Docker's health of the raw copy's container: healthy?"""
    p = run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
             "--filter", "health=healthy"], check=False)
    return bool(p.stdout.strip())


def part_converge(h, stack, port, health=False):
    """`health`: the compose file has a Docker healthcheck; the raw side then
    also waits for Docker to say healthy (what `compose up --wait` waits for)."""
    compose = COMPOSE_YAML_HEALTH if health else COMPOSE_YAML
    label = " (healthcheck)" if health else ""
    log(f"converge{label}: first deploy of {stack}")
    write_stack(h.repo, stack, IMG["v1"], port, "v1", "round 0", compose=compose)
    commit(h.repo, "v1")
    _, r = h.sync(stack)
    if r["outcome"] != "deployed":
        raise RuntimeError(f"first deploy failed: {r}")
    # The raw side: a copy of the same release, its own project and port.
    rel = os.path.realpath(os.path.join(h.root, "stacks", stack))
    raw = os.path.join(WORK, f"raw-release-{stack}")
    raw_project = f"{PREFIX}raw{'h' if health else ''}"
    shutil.copytree(rel, raw, symlinks=True)
    run(["chmod", "-R", "u+w", raw])
    raw_port = free_port()
    env_path = os.path.join(raw, ".env")
    lines = []
    for line in open(env_path).read().splitlines():
        if line.startswith("COMPOSE_PROJECT_NAME="):
            line = f"COMPOSE_PROJECT_NAME={raw_project}"
        elif line.startswith("PORT="):
            line = f"PORT={raw_port}"
        lines.append(line)
    open(env_path, "w").write("\n".join(lines) + "\n")
    if "PORT=" not in open(env_path).read():
        raise RuntimeError(f"the release .env has no PORT line:\n{open(env_path).read()}")
    sp_wall, sp_stage_sum, sp_by_stage, raw_up = [], [], {}, []
    for k in range(1, ROUNDS + 1):
        # stackpin: a commit that changes a config file -> new release, recreate, smoke.
        write_stack(h.repo, stack, IMG["v1"], port, "v1", f"round {k}", compose=compose)
        commit(h.repo, f"round {k}")
        wall, r = h.sync(stack)
        if r["outcome"] != "deployed":
            raise RuntimeError(f"round {k}: {r}")
        sp_wall.append(wall)
        sp_stage_sum.append(sum(s for _, _, s in stages(r)))
        for n, _, s in stages(r):
            sp_by_stage.setdefault(n, []).append(s)
        # raw: compose up -d (recreate) of the same release + wait for /health 200.
        t0 = time.monotonic()
        run([*COMPOSE, "up", "-d", "--force-recreate", "--remove-orphans"], cwd=raw)
        wait_for("the raw copy's /health", 60, lambda: http_status(raw_port, "/health", 1)[0] == 200, every=0.02)
        if health:
            wait_for("the raw copy's healthcheck", 60, lambda: raw_healthy(raw_project), every=0.02)
        raw_up.append(time.monotonic() - t0)
        if not health:
            RAW_UP.append(raw_up[-1])
        log(f"converge round {k}: stackpin {ms(wall)} (stages {ms(sp_stage_sum[-1])}), raw {ms(raw_up[-1])}")
    run([*COMPOSE, "down", "--remove-orphans"], cwd=raw, check=False)
    ratio = statistics.median(sp_wall) / statistics.median(raw_up)
    rows.append((f"converge{label}: stackpin sync of a changed config (wall)", summary(sp_wall), f"CLI, {os.environ['BENCH_PROFILE']} binary"))
    rows.append((f"converge{label}: sum of stages", summary(sp_stage_sum),
                 " ".join(f"{n} {ms(statistics.median(v))}" for n, v in sp_by_stage.items())))
    rows.append((f"converge{label}: raw compose up -d + /health 200" + (" + healthy" if health else ""),
                 summary(raw_up), "same release, copied"))
    if not health and "release" in sp_by_stage:
        rows.append(("converge: release stage (release-create + compose config -q)", summary(sp_by_stage["release"]),
                     "target < 30 ms; the files take a few ms (stackpin -vv logs `release created` with the split)"))
    rows.append((f"converge{label} ratio stackpin ÷ raw", f"{ratio:.2f}×",
                 "target ≤ 1.15×; " + ("healthy without a restart is the stability proof" if health
                                       else "smoke passes no earlier than 3 s after the container's start (MIN_STABLE)")))


def part_revert(h, stack, port):
    rec, detect = [], []
    for k in range(1, ROUNDS + 1):
        write_stack(h.repo, stack, IMG["broken"], port, f"broken{k}", f"broken {k}", timeout=5)
        commit(h.repo, f"broken {k}")
        _, r = h.sync(stack)
        if r["outcome"] != "rolled_back":
            raise RuntimeError(f"revert round {k}: expected rolled_back, got {r}")
        st = stages(r)
        i = next(i for i, (n, _, _) in enumerate(st) if n == "revert")
        after = st[i:]
        names = [n for n, _, _ in after]
        if names[:3] != ["revert", "up", "smoke"] or not after[2][1]:
            raise RuntimeError(f"unexpected stages after the failed smoke: {st}")
        rec.append(sum(s for _, _, s in after[:3]))
        detect.append(st[i - 1][2])
        log(f"revert round {k}: failed smoke {ms(detect[-1])}, revert+up+smoke {ms(rec[-1])}")
    rows.append(("auto-revert: smoke failure -> previous release healthy", summary(rec), "revert + up + smoke stages"))
    if RAW_UP:
        rows.append(("auto-revert ratio ÷ raw up + health", f"{statistics.median(rec) / statistics.median(RAW_UP):.2f}×",
                     "target ≤ 1.2×; the previous release's smoke has the same 3 s watch"))
    rows.append(("  (failed smoke itself: /health 404 until the 5s budget)", summary(detect), "bounded by smoke.timeout"))


def die_times(stack, since, until):
    """Engine `die` events with exit code 1 of the project's containers, as
    epoch seconds (the crash image exits 1; a stopped container says 137/143)."""
    p = run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
             "--filter", f"label=com.docker.compose.project={stack}", "--filter", "event=die",
             "--format", '{{.TimeNano}} {{index .Actor.Attributes "exitCode"}}'])
    out = []
    for line in p.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 2 and parts[1] == "1":
            out.append(int(parts[0]) / 1e9)
    return out


def smoke_verdict_time(stderr, stack):
    """When smoke logged its first failed verdict for the project
    (`-v --log-format json`)."""
    for line in stderr.split("\n"):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        f = e.get("fields", {})
        if f.get("project") == stack and str(f.get("message", "")).startswith("smoke failed"):
            ts = e["timestamp"].replace("Z", "+00:00")
            return datetime.datetime.fromisoformat(ts).timestamp()
    return None


def part_crash(h, stack, port):
    verdict, after_exit = [], []
    for k in range(1, ROUNDS + 1):
        write_stack(h.repo, stack, IMG["crash"], port, f"crash{k}", f"crash {k}", timeout=60)
        commit(h.repo, f"crash {k}")
        t0 = time.time()
        p = h.cli("-v", "--log-format", "json", "--json", "sync", stack)
        t1 = time.time()
        r = next(x for x in json.loads(p.stdout) if x["stack"] == stack)
        st = stages(r)
        i = next(i for i, (n, _, _) in enumerate(st) if n == "smoke")
        if st[i][1] or st[i - 1][0] != "up":
            raise RuntimeError(f"crash round {k}: the smoke should fail right after up: {st}")
        verdict.append(st[i][2])
        dies, said = die_times(stack, t0, t1 + 1), smoke_verdict_time(p.stderr, stack)
        if dies and said:
            after_exit.append(said - dies[0])
        log(f"crash round {k}: up end -> verdict {ms(verdict[-1])}, exit -> verdict "
            f"{ms(after_exit[-1]) if after_exit else '?'} ({r['outcome']})")
    rows.append(("crash during smoke: up end -> smoke verdict", summary(verdict),
                 "image exits after ~1s; budget 60s (fail fast)"))
    if after_exit:
        rows.append(("crash during smoke: container exit -> smoke verdict", summary(after_exit),
                     "target < 0.5s (engine event stream)"))


# ---------------------------------------------------------------- no-op passes
def bench_binary():
    """benches/plan.rs, built with the bench profile (release); its path."""
    p = run(["cargo", "bench", "--bench", "plan", "--no-run", "--message-format", "json"], timeout=1800)
    exe = None
    for line in p.stdout.split("\n"):
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "plan" and m.get("executable"):
            exe = m["executable"]
    if not exe:
        raise RuntimeError("cargo bench --no-run named no bench binary")
    return exe


def part_noop():
    """The daemon's no-op pass (benches/plan.rs's table, its quick mode):
    500 and 5,000 stacks, on a commit already loaded and on the next commit
    with one stack changed."""
    exe = bench_binary()
    p = run([exe, "--bench", "--quick"], env={**os.environ, "STACKPIN_BENCH_SIZES": "500,5000"}, timeout=3600)
    lines = p.stdout.split("\n")
    head = next((l for l in lines if l.startswith("stacks |")), None)
    if head is None:
        raise RuntimeError(f"benches/plan.rs printed no table:\n{p.stdout[-2000:]}")
    cols = [c.strip() for c in head.split("|")]
    targets = {"500": "< 10 ms", "5000": "< 50 ms"}
    # The second table: the daemon's pass as it runs, renders kept.
    kept = {}
    kept_head = [l for l in lines if l.startswith("stacks |") and "same, kept" in l]
    if kept_head:
        kcols = [c.strip() for c in kept_head[0].split("|")]
        for l in lines[lines.index(kept_head[0]) + 1:]:
            cells = [c.strip() for c in l.split("|")]
            if len(cells) == len(kcols) and cells[0].isdigit():
                kept[cells[0]] = dict(zip(kcols, cells))
    for l in lines:
        cells = [c.strip() for c in l.split("|")]
        if len(cells) != len(cols) or not cells[0].isdigit():
            continue
        row = dict(zip(cols, cells))
        n = row["stacks"]
        if n in kept:
            rows.append((f"no-op pass, {int(n):,} stacks, same commit, renders kept (the daemon's)",
                         f"{kept[n]['same, kept']}, {kept[n]['allocs']} allocations",
                         f"target {targets.get(n, '-')}; state and renders reused"))
        rows.append((f"  without kept renders (render + plan), {int(n):,} stacks",
                     f"{row['same commit']}, {row['same allocs']} allocations",
                     "every stack rendered again"))
        rows.append((f"  next commit, 1 stack changed, {int(n):,} stacks (load)", row["git, 1 chg"],
                     f"whole read: {row['load(git)']}"))


# ---------------------------------------------------------------- callgrind
def part_callgrind():
    """Instruction counts (valgrind's callgrind, `Ir`) of the no-op passes of
    benches/plan.rs, run once each in its STACKPIN_BENCH_CALLGRIND mode and
    counted only inside the pass (--toggle-collect): the same for the same
    binary and inputs however loaded the machine is."""
    if shutil.which("valgrind") is None:
        rows.append(("instructions (callgrind)", "valgrind is not installed", "apt-get install valgrind"))
        return
    exe = bench_binary()
    passes = [("one_loop", "no-op pass, whole read (load + render + plan)"),
              ("same_commit_loop", "daemon pass on the same commit (render + plan)"),
              ("same_commit_kept", "daemon pass on the same commit, renders kept (issue 37)"),
              ("load_git_incremental_once", "next commit, 1 stack changed (load)")]
    for n in ([100] if QUICK else [100, 500]):
        for fn, label in passes:
            out = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={WORK}/callgrind.%p",
                       f"--toggle-collect=*{fn}*", exe],
                      env={**os.environ, "STACKPIN_BENCH_CALLGRIND": str(n)}, timeout=1800)
            got = [l.split(":")[-1].strip() for l in out.stderr.split("\n") if "Collected :" in l]
            if not got:
                raise RuntimeError(f"callgrind printed no total:\n{out.stderr[-2000:]}")
            count = int(got[-1])
            log(f"callgrind: {label}, {n} stacks: {count:,} instructions")
            rows.append((f"instructions: {label}, {n} stacks", f"{count:,}", "callgrind Ir, stable across runs"))


# ---------------------------------------------------------------- parallel
def part_parallel():
    """A commit that changes N stacks at once (each the fixture app on its
    own port; every fifth depends_on the first), converged with
    `concurrency: 1`, then with `concurrency: 4`, alternating."""
    n = 6 if QUICK else 20
    h = Host("parallel")
    stacks = [(f"{PREFIX}par{i:02d}", free_port()) for i in range(n)]

    def write_all(round_):
        for i, (s, port) in enumerate(stacks):
            write_stack(h.repo, s, IMG["v1"], port, "v1", f"round {round_}")
            if i % 5 == 4:
                with open(os.path.join(h.repo, "stacks", s, "stack.yaml"), "a") as f:
                    f.write(f"depends_on: [{stacks[0][0]}]\n")
        commit(h.repo, f"parallel round {round_}")

    def sync_all(concurrency):
        cfg = os.path.join(h.dir, f"c{concurrency}.yaml")
        with open(cfg, "w") as f:
            f.write(GRANTS + f"concurrency: {concurrency}\n")
        t0 = time.monotonic()
        p = h.cli("--config", cfg, "--json", "sync")
        wall = time.monotonic() - t0
        results = json.loads(p.stdout)
        bad = [r for r in results if r["outcome"] not in ("deployed", "unchanged")]
        if bad or len(results) != n:
            raise RuntimeError(f"parallel: {len(results)} results, not deployed: {bad[:2]}")
        per_stack = sum(sum(st["millis"] for st in r["stages"]) / 1000.0 for r in results)
        return wall, per_stack

    write_all(0)
    sync_all(4)  # first deploy, not measured
    seq, par, sums = [], [], []
    for k in range(1, (2 if QUICK else 3) + 1):
        write_all(2 * k - 1)
        w, total = sync_all(1)
        seq.append(w)
        sums.append(total)
        write_all(2 * k)
        w, _ = sync_all(4)
        par.append(w)
        log(f"parallel round {k}: {n} stacks, concurrency 1 {ms(seq[-1])}, concurrency 4 {ms(par[-1])}")
    rows.append((f"commit changing {n} stacks: concurrency 1 (wall)", summary(seq), "one after the other"))
    rows.append((f"  sum of their single-stack converges", summary(sums), "stage times of the concurrency 1 run"))
    rows.append((f"commit changing {n} stacks: concurrency 4 (wall)", summary(par),
                 f"{statistics.median(seq) / statistics.median(par):.2f}× faster; every 5th depends_on the first"))


# ---------------------------------------------------------------- fleet
def part_fleet():
    """Issue 14: the time from a commit to the new release running and
    smoked, on one host of the fleet (scripts/setup.d/fleet.sh: each host
    in its own network namespace with its own engine) and on all three at
    once, each fetching the commit over git:// on their bridge."""
    fleet = os.environ.get("STACKPIN_TEST_FLEET")
    if not fleet:
        rows.append(("fleet: commit -> converged", "skipped", "needs the fleet: sudo bash scripts/setup.d/fleet.sh"))
        return
    hosts = [e.split("=")[0] for e in os.environ["STACKPIN_TEST_FLEET_HOSTS"].split()]
    bridge = os.environ["STACKPIN_TEST_FLEET_BRIDGE"]
    registry = os.environ["STACKPIN_TEST_FLEET_REGISTRY"]
    image = IMG["v1"].replace(os.environ["STACKPIN_TEST_REGISTRY"], registry, 1)
    base = os.path.join(WORK, "fleet")
    repo = os.path.join(base, "repo")
    os.makedirs(repo)
    git(repo, "init", "-q", "-b", "main")
    stack, port = f"{PREFIX}fleet", free_port()
    gport = free_port()
    exec_path = run(["git", "--exec-path"]).stdout.strip()
    daemon = subprocess.Popen([os.path.join(exec_path, "git-daemon"), "--export-all", "--reuseaddr",
                               f"--listen={bridge}", f"--port={gport}", f"--base-path={base}", base],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("git daemon on the bridge", 20,
                 lambda: socket.socket().connect_ex((bridge, gport)) == 0)
        cfgs = []
        for i, name in enumerate(hosts):
            home = os.path.join(base, name)
            os.makedirs(home)
            cfg = os.path.join(home, "config.yaml")
            with open(cfg, "w") as f:
                f.write(GRANTS + f"host: {name}\nroot: {home}/root\nstate_dir: {home}/state\n"
                        f"control_socket: {home}/no-daemon.sock\n"
                        f"repo: {{url: \"git://{bridge}:{gport}/repo\", branch: main}}\n")
            cfgs.append((name, cfg, f"unix://{fleet}/h{i + 1}/docker.sock"))

        def sync(members):
            t0 = time.monotonic()
            procs = [subprocess.Popen(["nsenter", f"--net=/var/run/netns/{n}", BIN, "--config", c, "--json", "sync"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "DOCKER_HOST": sock})
                     for n, c, sock in members]
            outs = [p.communicate(timeout=600) for p in procs]
            wall = time.monotonic() - t0
            for (n, _, _), p, (out, err) in zip(members, procs, outs):
                results = json.loads(out) if out.strip() else []
                if p.returncode != 0 or not any(r["outcome"] == "deployed" for r in results):
                    raise RuntimeError(f"fleet sync on {n} failed ({p.returncode}):\n{out}\n{err}")
            return wall

        write_stack(repo, stack, image, port, "v1", "round 0")
        commit(repo, "fleet round 0")
        sync(cfgs)  # first deploy on every host, not measured
        one, three = [], []
        for k in range(1, (2 if QUICK else 5) + 1):
            write_stack(repo, stack, image, port, "v1", f"round {k}a")
            commit(repo, f"fleet round {k}a")
            one.append(sync(cfgs[:1]))
            sync(cfgs[1:])  # the others catch up, not measured
            write_stack(repo, stack, image, port, "v1", f"round {k}b")
            commit(repo, f"fleet round {k}b")
            three.append(sync(cfgs))
            log(f"fleet round {k}: one host {ms(one[-1])}, three hosts at once {ms(three[-1])}")
        rows.append(("fleet: commit -> converged, 1 host (wall)", summary(one),
                     "fetch over git:// + release + up + smoke, in the host's namespace"))
        rows.append(("fleet: commit -> converged, 3 hosts at once (wall)", summary(three),
                     f"{statistics.median(three) / statistics.median(one):.2f}x one host; each its own engine, this machine's 2 cores shared"))
    finally:
        daemon.kill()
        daemon.wait()
        for i, name in enumerate(hosts):
            run(["docker", "-H", f"unix://{fleet}/h{i + 1}/docker.sock", "rm", "-f", "-v",
                 *run(["docker", "-H", f"unix://{fleet}/h{i + 1}/docker.sock", "ps", "-aq", "--filter",
                       f"label=com.docker.compose.project={stack}"], check=False).stdout.split()],
                check=False)


# ---------------------------------------------------------------- swarm
def part_swarm():
    """Issue 14: the failed requests of an upgrade of a 3-replica Swarm
    service under load through nginx, and its time: tests/swarm.rs's
    upgrade test, which sends at least 1,000 requests and prints what it
    counted (one run per round; the test also asserts that none failed)."""
    if not os.environ.get("STACKPIN_TEST_SWARM_MANAGER"):
        rows.append(("swarm: upgrade under load", "skipped", "needs the fleet's swarm: sudo bash scripts/setup.d/fleet.sh"))
        return
    sent, failed, walls = [], [], []
    for k in range((1 if QUICK else 3)):
        t0 = time.monotonic()
        p = run(["cargo", "nextest", "run", "--test", "swarm", "--no-capture",
                 "-E", "test(an_upgrade_fails_no_request)"], check=False)
        walls.append(time.monotonic() - t0)
        m = re.search(r"upgrade v1 -> v2 on 3 nodes: (\d+) requests, (\d+) failed", p.stdout + p.stderr)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"swarm upgrade test failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
        sent.append(int(m.group(1)))
        failed.append(int(m.group(2)))
        log(f"swarm round {k + 1}: {sent[-1]} requests, {failed[-1]} failed")
    rows.append(("swarm: failed requests during an upgrade", f"{sum(failed)} of {sum(sent)}",
                 "3 replicas on 3 nodes, stop-first one at a time, through nginx (no routing mesh: no IPVS here)"))
    rows.append(("swarm: upgrade test, deploy + upgrade + broken upgrade reverted (wall)", summary(walls),
                 "the whole test, cargo's start included"))


# ---------------------------------------------------------------- rollout
ROUTER_CONF = """worker_processes 1;
error_log /dev/stderr warn;
pid /tmp/nginx.pid;
events {}
http {
    access_log off;
    resolver 127.0.0.11 valid=1s ipv6=off;
    server {
        listen 80;
        location / {
            set $app http://app:8000;
            proxy_pass $app;
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 1s;
        }
    }
}
"""

ROLLOUT_COMPOSE = """services:
  router:
    image: stackpin-test/web
    ports: ["127.0.0.1:{port}:80"]
    volumes: ["./config/nginx.conf:/etc/nginx/nginx.conf:ro"]
  app:
    image: stackpin-test/web
    stop_grace_period: 5s
    healthcheck:
      test: ["CMD", "python3", "/app/app.py", "health"]
      interval: 1s
      timeout: 5s
      retries: 3
      start_period: 5s
"""


class Load:
    """One client sending GET /version through the router back to back,
    each on a new connection (as a browser behind a proxy would open
    many): every answer's status and latency."""

    def __init__(self, port):
        import threading
        self.port, self.stop_flag, self.samples = port, False, []
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop_flag:
            t0 = time.monotonic()
            status, body = http_status(self.port, "/version", timeout=10)
            self.samples.append((status, body.strip(), time.monotonic() - t0))

    def stop(self):
        self.stop_flag = True
        self.t.join()
        return self.samples


def part_rollout():
    web = {k: os.environ.get(f"STACKPIN_TEST_WEB_{k.upper()}") for k in ("router", "app_v1", "app_v2", "app_500")}
    if not all(web.values()):
        raise RuntimeError("rollout: the Debian web images are missing (scripts/fixtures.sh builds them)")
    v2cfg = os.environ.get("STACKPIN_TEST_COMPOSE_V2_CONFIG")
    env = dict(os.environ, DOCKER_CONFIG=v2cfg) if v2cfg else None
    flavour = "compose v2" if v2cfg else "compose as found"
    h = Host("rollout")
    stack, port = f"{PREFIX}shop", free_port()
    d = os.path.join(h.repo, "stacks", stack)
    os.makedirs(os.path.join(d, "config"), exist_ok=True)
    open(os.path.join(d, "compose.yaml"), "w").write(ROLLOUT_COMPOSE.format(port=port))
    open(os.path.join(d, "config", "nginx.conf"), "w").write(ROUTER_CONF)

    def write(app, order, version):
        open(os.path.join(d, "stack.yaml"), "w").write(
            f"environment: bench\nversion: {version}\nimages: {{router: {web['router']}, app: {app}}}\n"
            f"update: {{drain: 2s, services: {{app: {{order: {order}}}}}}}\n"
            "smoke:\n  timeout: 30s\n  checks:\n"
            f"    - http: {{url: \"http://127.0.0.1:{port}/web/health\"}}\n"
            "    - http: {service: app, port: 8000, path: /version}\n")
        commit(h.repo, version)

    def sync(*flags):
        t0 = time.monotonic()
        p = run([BIN, "--root", h.root, "--repo", h.repo, "--host", HOST, "--state-dir", h.state,
                 "--control-socket", os.path.join(h.dir, "no-daemon.sock"), "--json", "sync", *flags, stack],
                check=False, env=env)
        wall = time.monotonic() - t0
        r = next(x for x in json.loads(p.stdout) if x["stack"] == stack)
        return wall, r["outcome"]

    write(web["app_v1"], "start-first", "v1")
    _, outcome = sync()
    if outcome != "deployed":
        raise RuntimeError(f"rollout: first deploy: {outcome}")
    wait_for("the router", 30, lambda: http_status(port, "/version")[0] == 200)
    steady = Load(port)
    time.sleep(5)
    base = steady.stop()
    rows.append((f"rollout ({flavour}): steady traffic through nginx, no deploy",
                 f"{len(base)} requests, {sum(1 for s in base if s[0] != 200)} failed",
                 "latency " + summary([x[2] for x in base])))
    # (name, the app it starts from, the app it deploys, order, outcome)
    cases = [
        ("start-first upgrade v1 -> v2", web["app_v1"], web["app_v2"], "start-first", "deployed"),
        ("start-first upgrade to an image answering 500 (refused, reverted)", web["app_v2"], web["app_500"],
         "start-first", "rolled_back"),
        ("stop-first upgrade v2 -> v1 (baseline)", web["app_v2"], web["app_v1"], "stop-first", "deployed"),
    ]
    rounds = 1 if QUICK else 3
    n = 0
    for name, start, app, order, want in cases:
        sent, failed, lat, walls, answers = 0, 0, [], [], {}
        for k in range(rounds):
            # The release the case starts from, without load (a new label
            # on the same digest recreates nothing when it already runs).
            n += 1
            write(start, "start-first", f"start-{n}")
            _, o = sync()
            if o not in ("deployed", "unchanged"):
                raise RuntimeError(f"rollout: back to the start before {name}: {o}")
            write(app, order, f"case-{n}")
            load = Load(port)
            # --force: the refused release of an earlier round is quarantined.
            wall, outcome = sync("--force")
            time.sleep(1)
            samples = load.stop()
            if outcome != want:
                raise RuntimeError(f"rollout: {name}: {outcome}, expected {want}")
            sent += len(samples)
            failed += sum(1 for s in samples if s[0] != 200)
            lat += [x[2] for x in samples]
            walls.append(wall)
            for s in samples:
                if s[0] == 200:
                    answers[s[1]] = answers.get(s[1], 0) + 1
            log(f"rollout: {name} round {k + 1}: {len(samples)} sent, "
                f"{sum(1 for s in samples if s[0] != 200)} failed, sync {ms(wall)}")
        rows.append((f"rollout ({flavour}): {name}", f"{sent} requests, {failed} failed",
                     f"p99 {ms(pct(lat, 99))}, max {ms(max(lat))}; sync {summary(walls)}; "
                     f"answers {answers}; {rounds} round(s)"))
    run([*COMPOSE, "-p", stack, "down", "-v", "--remove-orphans"], cwd=d, check=False)


# ---------------------------------------------------------------- daemon
class Daemon:
    def __init__(self, h, name):
        self.h = h
        self.port = free_port()
        self.sock = os.path.join(h.dir, "control.sock")
        self.remote = os.path.join(h.dir, "remote.git")
        self.logpath = os.path.join(h.dir, "daemon.log")
        self.offset = 0
        self.partial = ""
        run(["git", "clone", "-q", "--bare", h.repo, self.remote])
        git(h.repo, "remote", "add", "origin", self.remote)
        with open(os.path.join(h.dir, "hook-secret"), "w") as f:
            f.write(SECRET)
        cfg = os.path.join(h.dir, "config.yaml")
        with open(cfg, "w") as f:
            f.write(
                GRANTS + f'concurrency: 2\nhttp: {{listen: "127.0.0.1:{self.port}", '
                f'github_secret_file: {os.path.join(h.dir, "hook-secret")}}}\n'
                "repo: {branch: main, poll_interval: 1h, watch: false}\n")
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            [BIN, "--config", cfg, "--root", h.root, "--repo", f"file://{self.remote}", "--host", HOST,
             "--state-dir", h.state, "--control-socket", self.sock, "--log-format", "json", "daemon"],
            stdout=subprocess.DEVNULL, stderr=self.logf, stdin=subprocess.DEVNULL)
        with open(os.path.join(WORK, "daemons.pids"), "a") as f:
            f.write(f"{self.proc.pid}\n")
        wait_for("the daemon's /healthz", 60, lambda: self.alive() and http_status(self.port, "/healthz")[0] == 200)

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({self.proc.returncode}):\n{open(self.logpath).read()[-4000:]}")
        return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()

    def tail(self, n):
        try:
            return "\n".join(open(self.logpath).read().splitlines()[-n:])
        except OSError as e:
            return str(e)

    def lines(self):
        """New JSON log lines since the last call."""
        with open(self.logpath) as f:
            f.seek(self.offset)
            data = f.read()
            self.offset = f.tell()
        data = self.partial + data
        parts = data.split("\n")
        self.partial = parts.pop()
        out = []
        for p in parts:
            try:
                out.append(json.loads(p))
            except json.JSONDecodeError:
                pass
        return out

    def metric(self, name):
        st, body = http_status(self.port, "/metrics", 10)
        if st != 200:
            return 0.0
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def rss_detail(self):
        """Where the RSS is: anonymous (heap, stacks) vs file-backed (the
        binary and libraries), and the thread count."""
        rollup = {}
        for line in open(f"/proc/{self.proc.pid}/smaps_rollup"):
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                rollup[parts[0][:-1]] = int(parts[1])
        threads = next((int(line.split()[1]) for line in open(f"/proc/{self.proc.pid}/status")
                        if line.startswith("Threads:")), 0)
        anon = rollup.get("Anonymous", 0)
        rss = rollup.get("Rss", 0)
        return f"anonymous {anon / 1024:.1f} MiB, file-backed {(rss - anon) / 1024:.1f} MiB, {threads} threads"

    def push_webhook(self, delivery):
        body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/hooks/github", body=body, headers={
            "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json", "X-Hub-Signature-256": sig})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def control(self, req, timeout=300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        return json.loads(buf)


def ts(entry):
    return datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def part_webhook():
    h = Host("webhook")
    stack = f"{PREFIX}hook"
    port = free_port()
    write_stack(h.repo, stack, IMG["v1"], port, "v1", "delivery 0")
    commit(h.repo, "v1")
    d = Daemon(h, "webhook")
    try:
        wait_for("the first deploy by the daemon", 180,
                 lambda: d.alive() and d.metric("stackpin_sync_runs_total") >= 1 and http_status(port, "/health")[0] == 200)
        d.lines()
        to_recv, to_run, to_converge, to_done = [], [], [], []
        deadline = time.monotonic() + (300 if QUICK else 1800)
        for i in range(1, DELIVERIES + 1):
            if time.monotonic() > deadline:
                log(f"webhook: time budget spent after {i - 1} deliveries")
                break
            write_stack(h.repo, stack, IMG["v1"], port, "v1", f"delivery {i}")
            commit(h.repo, f"delivery {i}")
            git(h.repo, "push", "-q", "origin", "main")
            runs = d.metric("stackpin_sync_runs_total")
            delivery = f"bench-{i}"
            d.lines()  # drain: every line from here on belongs to this delivery
            t_send = time.time()
            status = d.push_webhook(delivery)
            if status != 202:
                raise RuntimeError(f"webhook answered {status}")
            got = {}

            def scan():
                d.alive()
                # The server logs "sync queued" after handing over the
                # trigger, so "sync run" may come first: no order assumed.
                for e in d.lines():
                    fl = e.get("fields", {})
                    msg = fl.get("message", "")
                    if msg.startswith("webhook push") and fl.get("delivery") == delivery:
                        got.setdefault("recv", ts(e))
                    elif msg == "sync run" and fl.get("trigger") == "Webhook":
                        got.setdefault("run", ts(e))
                    elif msg == "stage" and fl.get("stack") == stack:
                        if fl.get("stage") == "preflight":
                            # Logged when preflight ends: its start is when the converge began.
                            got.setdefault("pre", ts(e) - fl.get("millis", 0) / 1000.0)
                        elif fl.get("stage") == "smoke":
                            got.setdefault("done", ts(e))
                return all(k in got for k in ("recv", "run", "pre", "done"))

            wait_for(f"delivery {i} to converge", 120, scan, every=0.05)
            wait_for(f"run {i} to finish", 60, lambda: d.metric("stackpin_sync_runs_total") >= runs + 1, every=0.05)
            to_recv.append(got["recv"] - t_send)
            to_run.append(got["run"] - t_send)
            to_converge.append(got["pre"] - t_send)
            to_done.append(got["done"] - t_send)
            log(f"delivery {i}: received {ms(to_recv[-1])}, run {ms(to_run[-1])}, converge started {ms(to_converge[-1])}, smoke done {ms(to_done[-1])}")
        rows.append(("webhook sent -> received (log line)", summary(to_recv), "loopback HTTP + HMAC"))
        rows.append(("webhook sent -> sync run started (trigger=Webhook)", summary(to_run), ""))
        rows.append(("webhook sent -> converge started (preflight start)", summary(to_converge),
                     "target p99 < 10 ms; includes git fetch, load, observe, plan"))
        rows.append(("webhook sent -> new release smoke-passed", summary(to_done), "the whole deploy"))
    except Exception:
        log("daemon log (last 40 lines):\n" + d.tail(40))
        raise
    finally:
        d.stop()


def part_rss():
    h = Host("rss")
    deployed = [f"{PREFIX}rss-a", f"{PREFIX}rss-b"]
    ports = [free_port(), free_port()]
    for s, p in zip(deployed, ports):
        write_stack(h.repo, s, IMG["v1"], p, "v1", "rss")
    for i in range(98):
        write_stack(h.repo, f"other-{i:03d}", IMG["v1"], 30000 + i, "v1", f"other {i}", hosts=["other-host"])
    commit(h.repo, "100 stacks")
    d = Daemon(h, "rss")
    try:
        wait_for("the first run (2 deploys)", 300,
                 lambda: d.alive() and d.metric("stackpin_sync_runs_total") >= 1
                 and all(http_status(p, "/health")[0] == 200 for p in ports))
        time.sleep(2)
        start_rss = d.rss_kib()
        samples = [(0, start_rss)]
        per_sync = []
        t_start = time.monotonic()
        req = {"op": "sync", "root": h.root, "stacks": [], "force": False, "dry_run": False, "break_glass": None}
        n = 0
        every = max(1, SYNCS // 10)
        while n < SYNCS and time.monotonic() - t_start < SYNC_BUDGET:
            t0 = time.monotonic()
            resp = d.control(req)
            per_sync.append(time.monotonic() - t0)
            if not resp.get("ok"):
                raise RuntimeError(f"sync via the control socket failed: {resp}")
            n += 1
            if n % every == 0:
                samples.append((n, d.rss_kib()))
                log(f"rss: {n} syncs, VmRSS {samples[-1][1] / 1024:.1f} MiB, last sync {ms(per_sync[-1])}")
        if n < SYNCS:
            log(f"rss: time budget spent after {n} syncs")
        time.sleep(2)
        end_rss = d.rss_kib()
        peak = max(r for _, r in samples + [(n, end_rss)])
        rows.append(("daemon RSS after startup, 100 stacks (2 deployed)", f"{start_rss / 1024:.1f} MiB", "VmRSS; target < 16 MiB"))
        rows.append((f"daemon RSS after {n} syncs", f"{end_rss / 1024:.1f} MiB",
                     f"growth {(end_rss - start_rss) / 1024:+.1f} MiB; peak {peak / 1024:.1f} MiB"))
        rows.append(("  samples (syncs: MiB)", ", ".join(f"{k}: {v / 1024:.1f}" for k, v in samples), ""))
        rows.append(("  where it is, after the syncs", d.rss_detail(), "/proc/<pid>/smaps_rollup"))
        rows.append(("no-op sync of 100 stacks via the control socket", summary(per_sync),
                     "fetch + (same commit: no load) + render + plan + observe + status"))
    except Exception:
        log("daemon log (last 40 lines):\n" + d.tail(40))
        raise
    finally:
        d.stop()


def main():
    t_all = time.monotonic()
    conv_stack = f"{PREFIX}conv"
    if want("converge") or want("revert") or want("crash"):
        h = Host("cli")
        port = free_port()
        part_converge(h, conv_stack, port)  # also the first deploy the others revert to
        if want("converge"):
            part_converge(h, f"{PREFIX}convh", free_port(), health=True)
        if want("revert"):
            part_revert(h, conv_stack, port)
        if want("crash"):
            part_crash(h, conv_stack, port)
        if not want("converge"):
            rows[:] = [r for r in rows if not r[0].startswith("converge")]
    if want("parallel"):
        part_parallel()
    if want("rollout"):
        part_rollout()
    if want("fleet"):
        part_fleet()
    if want("swarm"):
        part_swarm()
    if want("webhook"):
        part_webhook()
    if want("rss"):
        part_rss()
    if want("noop"):
        part_noop()
    if want("callgrind"):
        part_callgrind()
    print()
    print(f"stackpin whole-system figures ({'QUICK: few rounds, rough' if QUICK else 'full run'}; "
          f"{os.environ['BENCH_PROFILE']} binary; took {ms(time.monotonic() - t_all)})")
    print(f"machine: {os.environ['BENCH_MACHINE']}")
    print()
    w = max(len(r[0]) for r in rows)
    print(f"| {'figure'.ljust(w)} | value | note |")
    print(f"|{'-' * (w + 2)}|---|---|")
    for name, value, note in rows:
        print(f"| {name.ljust(w)} | {value} | {note} |")


main()
PY
