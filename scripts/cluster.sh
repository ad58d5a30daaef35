#!/usr/bin/env bash
# A local N-member cairn cluster without Docker (as etcd's Procfile runs one):
#   scripts/cluster.sh up [N]    build cairn, start N members (default 3) in .cluster/
#   scripts/cluster.sh status    endpoint status and health of each member
#   scripts/cluster.sh down      stop the members (by the pids in .cluster/) and keep
#                                their data; `down --clean` removes it too
# Member i (from 0) serves clients on 127.0.0.1:<i*10000 + 2379> and peers on
# 127.0.0.1:<i*10000 + 2380>; its log is .cluster/m<i>.log. Same as `cargo xtask cluster`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cluster
command=${1:-status}
client_port() { echo $(( $1 * 10000 + 2379 )); }
peer_port() { echo $(( $1 * 10000 + 2380 )); }
members() { ls "$dir"/m*.pid 2>/dev/null | sed 's/.*m\([0-9]*\)\.pid/\1/' | sort -n; }
endpoints() { for i in $(members); do echo -n "127.0.0.1:$(client_port "$i"),"; done | sed 's/,$//'; }

case $command in
up)
    n=${2:-3}
    [[ $n =~ ^[1-9]$ ]] || { echo "up: N is a member count from 1 to 9" >&2; exit 2; }
    if [[ -n $(members) ]]; then echo "a cluster is running (scripts/cluster.sh down first)" >&2; exit 1; fi
    cargo build --locked --bin cairn
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    mkdir -p "$dir"
    initial=$(for i in $(seq 0 $((n - 1))); do echo -n "m$i=http://127.0.0.1:$(peer_port "$i"),"; done | sed 's/,$//')
    for i in $(seq 0 $((n - 1))); do
        c=http://127.0.0.1:$(client_port "$i")
        p=http://127.0.0.1:$(peer_port "$i")
        nohup "$target/debug/cairn" --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "$c" --advertise-client-urls "$c" \
            --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
            --initial-cluster "$initial" --initial-cluster-token local-cluster \
            > "$dir/m$i.log" 2>&1 &
        echo $! > "$dir/m$i.pid"
    done
    deadline=$(( $(date +%s) + 60 ))
    until ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" endpoint health >/dev/null 2>&1; do
        [[ $(date +%s) -lt $deadline ]] || { echo "the members did not become healthy; see $dir/m*.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "$n members up: ETCDCTL_API=3 etcdctl --endpoints=$(endpoints) member list"
    ;;
status)
    [[ -n $(members) ]] || { echo "no cluster running"; exit 0; }
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" endpoint status -w table || true
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" endpoint health || true
    ;;
down)
    for i in $(members); do
        pid=$(cat "$dir/m$i.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$dir/m$i.pid"
    done
    [[ ${2:-} == --clean ]] && rm -rf "$dir"
    echo "stopped"
    ;;
*)
    echo "usage: $0 up [N] | status | down [--clean]" >&2
    exit 2
    ;;
esac
