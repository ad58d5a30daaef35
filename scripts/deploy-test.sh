#!/usr/bin/env bash
# Tests deploy/ on this machine's Docker engine: builds the base images (debootstrap,
# no registry needed) and cairn's image, starts the compose cluster (three members and
# Prometheus), and checks what an operator relies on:
#   - every member serves put/get, `member list` shows 3;
#   - the leader's container stopped: writes go on; started again: it catches up
#     (HashKV equal on all three);
#   - a member killed during writes: no acknowledged write lost;
#   - a member's network disconnected: the other two serve, it rejoins on reconnect;
#   - Prometheus has every member's target up, every alert expression (its comparisons
#     made `bool`) and every query of the Grafana dashboard returns data; promtool checks
#     the configuration and the rules;
#   - the discovery profile (deploy/docker-compose.discovery.yml): three members
#     bootstrap through cairn-discovery;
#   - deploy/README.md's recipes, run as written (the blocks tagged
#     `<!-- deploy-test: NAME -->`): up, replace a failed member, a rolling upgrade,
#     scale to five, back up and restore into a new cluster.
# The recipes name the compose file's default ports (12379, 22379, 32379, 42379, 52379,
# 19090; 12479.. for discovery): they must be free. Skips (exit 0, with the reason) when
# no Docker engine answers. Everything it starts is removed at the end (its compose
# projects only, and the image tag cairn:new it makes).
# CAIRN_BINARY_DIR: a directory with cairn and cairn-discovery built already (CI gives
# its debug build); else release binaries are built here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
    echo "deploy test SKIPPED: no Docker engine answers here"
    exit 0
fi
start=$(date +%s)
export COMPOSE_PROJECT_NAME=cairn-deploy-test-$$
project=$COMPOSE_PROJECT_NAME
compose=(docker-compose -f deploy/docker-compose.yml)
scaled=(docker-compose -f deploy/docker-compose.yml -f deploy/docker-compose.scale.yml)
discovery=(docker-compose -p "$project-discovery" -f deploy/docker-compose.discovery.yml)
cleanup() {
    bash scripts/cluster.sh down --clean >/dev/null 2>&1 || true
    "${scaled[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    "${discovery[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    docker image rm cairn:new >/dev/null 2>&1 || true
    rm -f backup.db
}
trap cleanup EXIT
export M1_PORT=12379 M2_PORT=22379 M3_PORT=32379 M4_PORT=42379 M5_PORT=52379 PROMETHEUS_PORT=19090
export D1_PORT=12479 D2_PORT=22479 D3_PORT=32479
# (and scripts/cluster.sh's: 2379, 12379, 22379 for clients, the next ports for peers)
for port in $M1_PORT $M2_PORT $M3_PORT $M4_PORT $M5_PORT $PROMETHEUS_PORT $D1_PORT $D2_PORT $D3_PORT \
    2379 2380 12380 22380; do
    if python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0",int(sys.argv[1])))' "$port" 2>/dev/null; then :; else
        echo "deploy test FAILED: port $port is taken (deploy/README.md's recipes use the default ports)"; exit 1
    fi
done
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
recipe() { # recipe <name>: deploy/README.md's block tagged <!-- deploy-test: name -->, as written
    local block
    block=$(python3 - "$1" <<'PY'
import re, sys
text = open("deploy/README.md").read()
m = re.search(r"<!-- deploy-test: " + re.escape(sys.argv[1]) + r" -->\n```sh\n(.*?)\n```", text, re.S)
if not m:
    sys.exit(f"no block tagged {sys.argv[1]} in deploy/README.md")
print(m.group(1))
PY
    ) || fail "README recipe $1 not found"
    echo "-- deploy/README.md: $1"
    timeout 300 bash -euo pipefail -c "$block" || fail "README recipe $1"
}

echo "== a local cluster without Docker"
recipe local
echo "== base images"
recipe base-images
echo "== cairn's image"
export CAIRN_BINARY_DIR=${CAIRN_BINARY_DIR:-${CAIRN_RELEASE_DIR:-}}
recipe image
[[ -n $CAIRN_BINARY_DIR ]] || CAIRN_BINARY_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
echo "cairn binary: $(( $(stat -c %s "$CAIRN_BINARY_DIR/cairn") / 1000 / 1000 )) MB, stripped $(( $(stat -c %s deploy/bin/cairn) / 1000 / 1000 )) MB"
size=$(docker image inspect cairn:local --format '{{.Size}}')
echo "image cairn:local: $((size / 1000 / 1000)) MB"

echo "== compose up"
up_start=$(date +%s)
recipe up
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
survivors=$(for s in m1 m2 m3; do [[ $s == "$leader" ]] && continue; v="${s^^}_PORT"; echo -n "127.0.0.1:${!v},"; done)
survivors=${survivors%,}
"${compose[@]}" stop "$leader" >/dev/null
stopped_ms=$(date +%s%3N)
wait_for 20 "writes after the leader stopped" ctl --endpoints="$survivors" put after-stop 1
echo "writes went on $(( $(date +%s%3N) - stopped_ms )) ms after the leader's container stopped"
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
def with_bool(expr):
    """The expression with every comparison outside label matchers made a `bool` one:
    it answers 0 or 1 for every series instead of filtering them, so a healthy cluster's
    alert expressions have data too (their series exist)."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        c = expr[i]
        depth += c == "{"
        depth -= c == "}"
        op = next((o for o in ("==", "!=", ">=", "<=", ">", "<") if expr.startswith(o, i)), None)
        if depth == 0 and op:
            out.append(op)
            i += len(op)
            if not expr[i:].lstrip().startswith("bool"):
                out.append(" bool")
            continue
        out.append(c)
        i += 1
    return "".join(out)
bad, empty = [], []
for e in exprs:
    url = prom + "/api/v1/query?query=" + urllib.parse.quote(with_bool(e))
    r = json.load(urllib.request.urlopen(url))
    if r.get("status") != "success":
        bad.append(e)
    elif not r["data"]["result"]:
        empty.append(e)
print(f"{len(exprs)} alert expressions: {len(bad)} fail, {len(empty)} without data")
for e in bad + empty:
    print("  ", e)
sys.exit(1 if bad or empty else 0)
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
sys.exit(1 if bad or empty else 0)
PY
echo "== deploy/README.md's recipes"
recipe replace
[[ $(ctl --endpoints="$all" member list | grep -c ', started, ') == 3 ]] || fail "member list after the replacement"
[[ $(ctl --endpoints=127.0.0.1:$M3_PORT get cut-off --print-value-only --consistency=s) == 1 ]] || fail "the replaced m3 lacks the data"
docker tag cairn:local cairn:new
recipe upgrade
for s in m1 m2 m3; do
    [[ $(docker inspect --format '{{.Config.Image}}' "$("${compose[@]}" ps -q "$s")") == cairn:new ]] || fail "$s not on cairn:new after the upgrade"
done
recipe scale
five="$all,127.0.0.1:$M4_PORT,127.0.0.1:$M5_PORT"
[[ $(ctl --endpoints="$five" member list | grep -c ', started, ') == 5 ]] || fail "five started members"
[[ $(ctl --endpoints=127.0.0.1:$M4_PORT put on-five 5) == OK ]] || fail "put on m4"
wait_for 30 "m5 sees the put on m4" bash -c "[[ \$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$M5_PORT get on-five --print-value-only --consistency=s) == 5 ]]"
before=$(ctl --endpoints="$all" get on-five -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
recipe backup-restore
[[ $(ctl --endpoints="$all" member list | grep -c ', started, ') == 3 ]] || fail "three members after the restore"
after=$(ctl --endpoints=127.0.0.1:$M2_PORT get on-five -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
[[ $before == "$after" ]] || fail "restored on-five at revision $after, was $before"
[[ $(ctl --endpoints=127.0.0.1:$M3_PORT get after-stop --print-value-only) == 1 ]] || fail "restored after-stop"

echo "== the discovery profile"
"${scaled[@]}" down -v --remove-orphans >/dev/null 2>&1
"${discovery[@]}" up -d
dall="127.0.0.1:$D1_PORT,127.0.0.1:$D2_PORT,127.0.0.1:$D3_PORT"
wait_for 120 "three members bootstrapped through discovery" ctl --endpoints="$dall" endpoint health
[[ $(ctl --endpoints="$dall" member list | wc -l) == 3 ]] || fail "member list (discovery)"
[[ $(ctl --endpoints=127.0.0.1:$D1_PORT put via-discovery 1) == OK ]] || fail "put (discovery)"
[[ $(ctl --endpoints=127.0.0.1:$D3_PORT get via-discovery --print-value-only) == 1 ]] || fail "get (discovery)"
echo "deploy test passed in $(( $(date +%s) - start )) s"
