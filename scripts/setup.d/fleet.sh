#!/usr/bin/env bash
# Test hosts for tests/fleet.rs and tests/swarm.rs (issue 14): three hosts, each in its own
# network namespace (`ip netns` + a veth on a private bridge) with its own
# Docker engine (dockerd with its own --data-root, --exec-root, --pidfile and
# socket; `vfs` storage, no bridge, no iptables: the stacks run with
# `network_mode: host`, i.e. in the host's namespace). Why namespaces and not
# privileged containers running dockerd: no image to build (nothing can be
# pulled here), each engine is the machine's own dockerd binary, and cutting
# a host off is one `ip link set … down` on the host side.
#
# Addresses: the bridge `spfleet0` is 10.231.0.1/24 on the machine; host N
# is 10.231.0.1N. The loopback registry is also served on 10.231.0.1 (a
# second `docker-registry` on the same storage, same port: a pin
# `127.0.0.1:P/x@sha256:…` is `10.231.0.1:P/x@sha256:…` there), which the
# engines trust as an insecure registry. Nothing is sent anywhere else.
# The hosts reach each other across the bridge (one FORWARD rule on the
# machine, removed at stop), and their engines form one swarm: host 1 the
# manager, hosts 2 and 3 workers.
#
# Exports STACKPIN_TEST_FLEET (the directory: h1/ h2/ h3/, each with
# docker.sock), STACKPIN_TEST_FLEET_HOSTS (`spfleet1=10.231.0.11 …`),
# STACKPIN_TEST_FLEET_REGISTRY (`10.231.0.1:P`), STACKPIN_TEST_FLEET_BRIDGE,
# STACKPIN_TEST_SWARM_MANAGER (host 1's engine). Installs iproute2,
# util-linux, iptables and nginx-light (tests/swarm.rs's router) if missing.
#
# Sourced by scripts/test.sh after the fixtures (it needs the registry's
# storage). Standalone: `bash scripts/setup.d/fleet.sh [start|stop]`, which
# writes target/test-fleet.env. Needs root (namespaces, links, dockerd).

_fl_log() { printf '[fleet] %s\n' "$*" >&2; }

STACKPIN_FLEET_NET=10.231.0
STACKPIN_FLEET_BRIDGE=spfleet0
STACKPIN_FLEET_N=3

stackpin_fleet_stop() {
    local dir="${1:-${TMPDIR:-/tmp}/stackpin-fleet}" i
    for i in $(seq 1 "$STACKPIN_FLEET_N"); do
        if [ -s "$dir/h$i/docker.pid" ]; then
            kill "$(cat "$dir/h$i/docker.pid")" 2>/dev/null || true
        fi
    done
    if [ -s "$dir/registry.pid" ]; then
        kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
    fi
    for i in $(seq 1 "$STACKPIN_FLEET_N"); do
        # dockerd stops its containers and its containerd first.
        local t=0
        while [ -s "$dir/h$i/docker.pid" ] && kill -0 "$(cat "$dir/h$i/docker.pid")" 2>/dev/null && [ $t -lt 30 ]; do
            sleep 0.5
            t=$((t + 1))
        done
        ip netns del "spfleet$i" 2>/dev/null || true
        ip link del "spfl$i" 2>/dev/null || true
    done
    ip link del "$STACKPIN_FLEET_BRIDGE" 2>/dev/null || true
    while iptables -D FORWARD -i "$STACKPIN_FLEET_BRIDGE" -o "$STACKPIN_FLEET_BRIDGE" -j ACCEPT 2>/dev/null; do :; done
    # vfs layers are plain directories; leftovers are only disk.
    rm -rf "$dir" 2>/dev/null || true
}

# One swarm of the three engines: host 1 the manager, hosts 2 and 3
# workers (tests/swarm.rs; the other tests use each engine alone, which a
# swarm member still is). This kernel has no IPVS, so there is no routing
# mesh: the swarm's stacks publish on their nodes' addresses (host network)
# behind a router.
stackpin_fleet_swarm() {
    local dir="$1" net="$STACKPIN_FLEET_NET" i token
    docker -H "unix://$dir/h1/docker.sock" swarm init \
        --advertise-addr "$net.11" --listen-addr "$net.11:2377" >/dev/null || return 1
    token="$(docker -H "unix://$dir/h1/docker.sock" swarm join-token -q worker)" || return 1
    for i in 2 3; do
        local t=0
        until docker -H "unix://$dir/h$i/docker.sock" swarm join --advertise-addr "$net.1$i" \
            --token "$token" "$net.11:2377" >/dev/null 2>&1; do
            t=$((t + 1))
            if [ $t -gt 3 ]; then
                _fl_log "host $i did not join the swarm"
                return 1
            fi
            docker -H "unix://$dir/h$i/docker.sock" swarm leave --force >/dev/null 2>&1 || true
            sleep 1
        done
    done
    export STACKPIN_TEST_SWARM_MANAGER="unix://$dir/h1/docker.sock"
}

stackpin_fleet_setup() {
    if [ "$(id -u)" -ne 0 ]; then
        _fl_log "warning: the fleet needs root (network namespaces, dockerd); tests/fleet.rs will say so"
        return 0
    fi
    local need=()
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
    command -v iptables >/dev/null 2>&1 || need+=(iptables)
    command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
    if [ ${#need[@]} -gt 0 ]; then
        if declare -F stackpin_apt_install >/dev/null; then
            stackpin_apt_install "${need[@]}"
        else
            # Run on its own (as root, checked above), without test.sh's
            # helper.
            _fl_log "installing ${need[*]} (apt-get)"
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                    --no-install-recommends "${need[@]}" >/dev/null; }; then
                _fl_log "failed to install: ${need[*]}"
                return 1
            fi
        fi
    fi
    local fx="${STACKPIN_FIXTURES_STATE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/test-fixtures.d}"
    local port storage dir i
    port="$(cat "$fx/registry.port" 2>/dev/null)"
    storage="$(cat "$fx/registry.storage" 2>/dev/null)"
    if [ -z "$port" ] || [ -z "$storage" ]; then
        _fl_log "the fixtures' registry is not running (scripts/fixtures.sh first)"
        return 1
    fi
    dir="${TMPDIR:-/tmp}/stackpin-fleet"
    stackpin_fleet_stop "$dir"
    mkdir -p "$dir"
    local net="$STACKPIN_FLEET_NET" br="$STACKPIN_FLEET_BRIDGE"
    ip link add "$br" type bridge
    ip addr add "$net.1/24" dev "$br"
    ip link set "$br" up
    # Host to host across the bridge: the machine's dockerd sets FORWARD's
    # policy to DROP, and bridged frames go through it (br_netfilter).
    iptables -I FORWARD -i "$br" -o "$br" -j ACCEPT
    # The registry again, on the bridge: same storage, same port.
    sed "s/addr: 127.0.0.1:$port/addr: $net.1:$port/" "$fx/registry.yml" >"$dir/registry.yml"
    nohup docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
    local hosts=""
    for i in $(seq 1 "$STACKPIN_FLEET_N"); do
        local ns="spfleet$i" h="$dir/h$i"
        mkdir -p "$h/data" "$h/exec"
        ip netns add "$ns"
        ip link add "spfl$i" type veth peer name eth0 netns "$ns"
        ip link set "spfl$i" master "$br" up
        ip -n "$ns" addr add "$net.1$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        echo '{}' >"$h/daemon.json"
        # nsenter, not `ip netns exec`: that remounts /sys, and dockerd then
        # finds no cgroup hierarchy.
        nohup nsenter --net="/var/run/netns/$ns" dockerd \
            --config-file "$h/daemon.json" --data-root "$h/data" --exec-root "$h/exec" \
            --pidfile "$h/docker.pid" -H "unix://$h/docker.sock" \
            --storage-driver vfs --iptables=false --ip-masq=false --bridge=none \
            --insecure-registry "$net.0/24" >"$h/dockerd.log" 2>&1 </dev/null &
        hosts="$hosts $ns=$net.1$i"
    done
    for i in $(seq 1 "$STACKPIN_FLEET_N"); do
        local t=0
        until docker -H "unix://$dir/h$i/docker.sock" version >/dev/null 2>&1; do
            t=$((t + 1))
            if [ $t -gt 60 ]; then
                tail -n 20 "$dir/h$i/dockerd.log" >&2
                _fl_log "the engine of host $i did not answer"
                return 1
            fi
            sleep 0.5
        done
    done
    local t=0
    until curl -fsS "http://$net.1:$port/v2/" >/dev/null 2>&1; do
        t=$((t + 1))
        if [ $t -gt 40 ]; then
            cat "$dir/registry.log" >&2
            _fl_log "the registry did not answer on $net.1:$port"
            return 1
        fi
        sleep 0.25
    done
    stackpin_fleet_swarm "$dir" || return 1
    export STACKPIN_TEST_FLEET="$dir"
    export STACKPIN_TEST_FLEET_HOSTS="${hosts# }"
    export STACKPIN_TEST_FLEET_REGISTRY="$net.1:$port"
    export STACKPIN_TEST_FLEET_BRIDGE="$net.1"
    _fl_log "3 hosts up: $STACKPIN_TEST_FLEET_HOSTS (engines in $dir/h*/docker.sock), registry $STACKPIN_TEST_FLEET_REGISTRY"
}

_fl_env_file() {
    echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/test-fleet.env"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced by scripts/test.sh.
    stackpin_fleet_setup || return 1
    if [ -n "${STACKPIN_TEST_FLEET:-}" ] && declare -F stackpin_on_exit >/dev/null; then
        stackpin_on_exit "stackpin_fleet_stop '$STACKPIN_TEST_FLEET'"
    fi
else
    set -euo pipefail
    case "${1:-start}" in
    start)
        stackpin_fleet_setup
        {
            echo "# written by scripts/setup.d/fleet.sh; stop: bash scripts/setup.d/fleet.sh stop"
            echo "export STACKPIN_TEST_FLEET=$STACKPIN_TEST_FLEET"
            echo "export STACKPIN_TEST_FLEET_HOSTS='$STACKPIN_TEST_FLEET_HOSTS'"
            echo "export STACKPIN_TEST_FLEET_REGISTRY=$STACKPIN_TEST_FLEET_REGISTRY"
            echo "export STACKPIN_TEST_FLEET_BRIDGE=$STACKPIN_TEST_FLEET_BRIDGE"
            echo "export STACKPIN_TEST_SWARM_MANAGER=$STACKPIN_TEST_SWARM_MANAGER"
        } >"$(_fl_env_file)"
        _fl_log "wrote $(_fl_env_file)"
        ;;
    stop)
        stackpin_fleet_stop
        rm -f "$(_fl_env_file)"
        ;;
    *)
        echo "usage: $0 [start|stop]" >&2
        exit 2
        ;;
    esac
fi
