#!/usr/bin/env bash
# Builds and runs a single-member cairn with etcd's defaults: clients on localhost:2379,
# data in ./default.etcd. Extra arguments are passed to cairn (etcd's flags).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec cargo run --release --locked --bin cairn -- "$@"
