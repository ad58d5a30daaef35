#!/usr/bin/env bash
# Runs the whole test suite: formatting, the dependency advisory check, lints, unit tests
# and the black-box integration tests (real cairn processes driven by etcdctl and the
# etcd-client crate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
start=$(date +%s)
cargo fmt --all -- --check
# Known advisories (RustSec) in Cargo.lock fail the suite; see scripts/advisories.sh.
bash scripts/advisories.sh
# One build flavour for everything (dev profile, all targets) so RocksDB is compiled once.
cargo build --locked --workspace --all-targets
cargo clippy --locked --workspace --all-targets -- -D warnings
# Every crate's documentation builds without a warning (broken links included).
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps
# No module depends, directly or not, on a module that depends on it.
python3 scripts/module-cycles.py crates/*/src tests/src xtask/src
cargo test --locked --workspace
# deploy/ on this machine's Docker engine (skipped, saying why, when none answers): the
# base images, cairn's image with the debug binaries just built, the compose cluster,
# its faults, Prometheus, and deploy/README.md's recipes run as written.
target=$(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CAIRN_BINARY_DIR="$target/debug" bash scripts/deploy-test.sh
echo "test suite finished in $(( $(date +%s) - start )) s"
