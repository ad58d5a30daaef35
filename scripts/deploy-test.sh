#!/usr/bin/env bash
# Tests deploy/ on this machine's Docker engine: builds the base images (debootstrap,
# no registry needed) and cairn's image, starts the compose cluster (three members and
# Prometheus), and checks what an operator relies on:
#   - every member serves put/get, `member list` shows 3;
#   - the leader's container stopped: writes go on; started again: it catches up
#     (HashKV equal on all three);
#   - a member killed during writes: no acknowledged write lost;
#   - a member's network disconnected: the other two serve, it rejoins on reconnect;
#   - Prometheus has every member's target up, every alert expression evaluates and
#     every query of the Grafana dashboard returns data; promtool checks the
#     configuration and the rules.
#   - the discovery profile (deploy/docker-compose.discovery.yml): three members
#     bootstrap through cairn-discovery.
# Skips (exit 0, with the reason) when no Docker engine answers. Everything it starts
# is removed at the end (its compose project only).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
    echo "deploy test SKIPPED: no Docker engine answers here"
    exit 0
fi
start=$(date +%s)
project=cairn-deploy-test-$$
compose=(docker-compose -p "$project" -f deploy/docker-compose.yml)
discovery=(docker-compose -p "$project-discovery" -f deploy/docker-compose.discovery.yml)
cleanup() {
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    "${discovery[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export M1_PORT=$(free_port) M2_PORT=$(free_port) M3_PORT=$(free_port) PROMETHEUS_PORT=$(free_port)
export D1_PORT=$(free_port) D2_PORT=$(free_port) D3_PORT=$(free_port)
export CAIRN_IMAGE=cairn:local
ctl() { ETCDCTL_API=3 etcdctl --dial-timeout=2s --command-timeout=5s "$@"; }
all="127.0.0.1:$M1_PORT,127.0.0.1:$M2_PORT,127.0.0.1:$M3_PORT"
fail() { echo "deploy test FAILED: $*"; "${compose[@]}" logs --tail=30 || true; exit 1; }
wait_for() { # wait_for <seconds> <what> <command...>
    local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        [[ $(date +%s) -lt $deadline ]] || fail "$what (waited too long)"
        sleep 0.5
    done
}

echo "== base images"
bash scripts/make-base-images.sh
echo "== cairn's release binary and image"
# CAIRN_RELEASE_DIR: where release binaries of cairn and cairn-discovery were built
# already (else they are built here).
release=${CAIRN_RELEASE_DIR:-}
if [[ -z $release ]]; then
    cargo build --release --locked --bin cairn --bin cairn-discovery
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    release=$target/release
fi
binary=$release/cairn
mkdir -p deploy/bin
objcopy --strip-all "$binary" deploy/bin/cairn
objcopy --strip-all "$release/cairn-discovery" deploy/bin/cairn-discovery
echo "cairn binary: $(( $(stat -c %s "$binary") / 1000 / 1000 )) MB, stripped $(( $(stat -c %s deploy/bin/cairn) / 1000 / 1000 )) MB"
docker build -q -f deploy/Dockerfile --build-arg BINARY=prebuilt \
    --build-arg BUILDER_IMAGE=cairn-base/debian:bookworm -t cairn:local . >/dev/null
size=$(docker image inspect cairn:local --format '{{.Size}}')
echo "image cairn:local: $((size / 1000 / 1000)) MB"

echo "== compose up"
up_start=$(date +%s)
"${compose[@]}" up -d
wait_for 120 "three healthy members" ctl --endpoints="$all" endpoint health
echo "cluster healthy $(( $(date +%s) - up_start )) s after compose up"

echo "== put/get on every member, member list"
for port in $M1_PORT $M2_PORT $M3_PORT; do
    [[ $(ctl --endpoints=127.0.0.1:$port put "k$port" "v$port") == OK ]] || fail "put on $port"
done
for port in $M1_PORT $M2_PORT $M3_PORT; do
    for other in $M1_PORT $M2_PORT $M3_PORT; do
        [[ $(ctl --endpoints=127.0.0.1:$port get "k$other" --print-value-only) == "v$other" ]] || fail "get k$other on $port"
    done
done
[[ $(ctl --endpoints="$all" member list | wc -l) == 3 ]] || fail "member list"

leader_service() {
    for s in m1 m2 m3; do
        local port_var="${s^^}_PORT"
        if ctl --endpoints=127.0.0.1:${!port_var} endpoint status 2>/dev/null | grep -q ', true, '; then
            echo "$s"; return
        fi
    done
}
echo "== the leader stopped, then started again"
leader=$(leader_service)
[[ -n $leader ]] || fail "no leader"
"${compose[@]}" stop "$leader" >/dev/null
survivors=$(for s in m1 m2 m3; do [[ $s == "$leader" ]] && continue; v="${s^^}_PORT"; echo -n "127.0.0.1:${!v},"; done)
survivors=${survivors%,}
wait_for 20 "writes after the leader stopped" ctl --endpoints="$survivors" put after-stop 1
for i in $(seq 1 50); do ctl --endpoints="$survivors" put "while-down-$i" "$i" >/dev/null || fail "write $i"; done
"${compose[@]}" start "$leader" >/dev/null
wait_for 60 "the stopped member healthy again" ctl --endpoints="$all" endpoint health
rev=$(ctl --endpoints="$survivors" get after-stop -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
hashes() { ctl --endpoints="$all" endpoint hashkv --rev="$rev" -w json | python3 -c 'import json,sys; print(len({e["HashKV"]["hash"] for e in json.load(sys.stdin)}))'; }
wait_for 30 "HashKV equal on all three" test "$(hashes)" = 1

echo "== a member killed during writes loses no acknowledged write"
acked=$(mktemp)
( for i in $(seq 1 300); do
      if ctl --endpoints="$all" put "kill-$i" "$i" >/dev/null 2>&1; then echo "$i" >> "$acked"; fi
  done ) &
writer=$!
sleep 1
victim=$(leader_service)
"${compose[@]}" kill "$victim" >/dev/null
wait "$writer"
"${compose[@]}" start "$victim" >/dev/null
wait_for 60 "the killed member healthy again" ctl --endpoints="$all" endpoint health
lost=0
while read -r i; do
    [[ $(ctl --endpoints="$all" get "kill-$i" --print-value-only) == "$i" ]] || lost=$((lost + 1))
done < "$acked"
[[ $lost == 0 ]] || fail "$lost acknowledged writes lost"
echo "$(wc -l < "$acked") acknowledged writes, none lost"
rm -f "$acked"

echo "== a member's network disconnected, then reconnected"
network="${project}_cairn"
container=$("${compose[@]}" ps -q m3)
docker network disconnect "$network" "$container"
m12="127.0.0.1:$M1_PORT,127.0.0.1:$M2_PORT"
wait_for 20 "writes with m3 cut off" ctl --endpoints="$m12" put cut-off 1
docker network connect --alias m3 "$network" "$container"
wait_for 60 "m3 caught up after reconnect" bash -c "[[ \$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$M3_PORT get cut-off --print-value-only --consistency=s) == 1 ]]"

echo "== Prometheus"
prom="http://127.0.0.1:$PROMETHEUS_PORT"
up_targets() { curl -fsS "$prom/api/v1/query?query=up%7Bjob%3D%22cairn%22%7D" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(sum(1 for x in r if x["value"][1]=="1"))'; }
wait_for 60 "three targets up in Prometheus" test "$(up_targets)" = 3
prom_container=$("${compose[@]}" ps -q prometheus)
docker exec "$prom_container" promtool check config /etc/cairn-prometheus/prometheus.yml
docker exec "$prom_container" promtool check rules /etc/cairn-prometheus/alerts.yml
python3 - "$prom" deploy/prometheus/alerts.yml <<'PY'
import json, sys, urllib.parse, urllib.request
prom, rules = sys.argv[1], sys.argv[2]
import re
text = open(rules).read()
exprs = []
for m in re.finditer(r"expr: (\|\n((?:\s{10}.*\n)+)|.*)", text):
    exprs.append((m.group(2) or m.group(1)).strip())
bad = []
for e in exprs:
    url = prom + "/api/v1/query?query=" + urllib.parse.quote(e)
    r = json.load(urllib.request.urlopen(url))
    if r.get("status") != "success":
        bad.append(e)
print(f"{len(exprs) - len(bad)} of {len(exprs)} alert expressions evaluate")
sys.exit(1 if bad else 0)
PY
python3 - "$prom" deploy/grafana/dashboards/cairn.json <<'PY'
import json, sys, urllib.parse, urllib.request
prom, dashboard = sys.argv[1], sys.argv[2]
exprs = [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
empty, bad = [], []
for e in exprs:
    r = json.load(urllib.request.urlopen(prom + "/api/v1/query?query=" + urllib.parse.quote(e)))
    if r.get("status") != "success":
        bad.append(e)
    elif not r["data"]["result"]:
        empty.append(e)
print(f"{len(exprs)} dashboard queries: {len(bad)} fail, {len(empty)} without data")
for e in bad + empty:
    print("  ", e)
sys.exit(1 if bad else 0)
PY
echo "== the discovery profile"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
"${discovery[@]}" up -d
dall="127.0.0.1:$D1_PORT,127.0.0.1:$D2_PORT,127.0.0.1:$D3_PORT"
wait_for 120 "three members bootstrapped through discovery" ctl --endpoints="$dall" endpoint health
[[ $(ctl --endpoints="$dall" member list | wc -l) == 3 ]] || fail "member list (discovery)"
[[ $(ctl --endpoints=127.0.0.1:$D1_PORT put via-discovery 1) == OK ]] || fail "put (discovery)"
[[ $(ctl --endpoints=127.0.0.1:$D3_PORT get via-discovery --print-value-only) == 1 ]] || fail "get (discovery)"
echo "deploy test passed in $(( $(date +%s) - start )) s"
