#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database with `cargo deny check
# advisories` (configuration: deny.toml). Fails on any advisory deny.toml does not list.
#
# The database is a git repository published only on GitHub. This script uses, in order:
#   1. $CAIRN_ADVISORY_DB: a git checkout of the advisory database (e.g. copied onto a
#      machine that cannot reach GitHub);
#   2. the copy cargo-deny keeps in $CARGO_HOME/advisory-dbs from an earlier fetch;
#   3. a fresh fetch by cargo-deny (needs GitHub).
# With none of them it prints why the check was skipped and exits 0: it never reports a
# pass it did not run. CAIRN_REQUIRE_ADVISORIES=1 turns the skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny is missing: run scripts/install-deps.sh" >&2
  exit 1
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
# cargo-deny's directory name for https://github.com/rustsec/advisory-db (cargo-deny 0.20).
db_name="advisory-db-3157b0e258782691"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

skip() {
  echo "advisories: SKIPPED: $1" >&2
  echo "advisories: set CAIRN_ADVISORY_DB to a git checkout of the RustSec advisory database to run the check" >&2
  if [ "${CAIRN_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
}

is_db() { [ -d "$1/crates" ] && git -C "$1" rev-parse --verify -q HEAD >/dev/null 2>&1; }

if [ -n "${CAIRN_ADVISORY_DB:-}" ]; then
  is_db "$CAIRN_ADVISORY_DB" || { echo "CAIRN_ADVISORY_DB=$CAIRN_ADVISORY_DB is not a git checkout of the advisory database" >&2; exit 1; }
  db_path="$work/advisory-dbs"
  mkdir -p "$db_path"
  ln -s "$(cd "$CAIRN_ADVISORY_DB" && pwd)" "$db_path/$db_name"
elif is_db "$cargo_home/advisory-dbs/$db_name"; then
  db_path="$cargo_home/advisory-dbs"
else
  db_path="$cargo_home/advisory-dbs"
  echo "advisories: fetching the RustSec advisory database" >&2
  if ! timeout 120 cargo deny fetch db >"$work/fetch.log" 2>&1 || ! is_db "$db_path/$db_name"; then
    why="$( (grep -m 1 '^fatal:' "$work/fetch.log" || grep -m 1 'ERROR' "$work/fetch.log" || true) | cut -c 1-200)"
    skip "no RustSec advisory database here, and fetching it failed (it is published only on GitHub): ${why:-see cargo deny fetch db}"
  fi
fi

# deny.toml with the database location; the crate graph from `cargo metadata` (which may
# download the manifests of other platforms' crates from crates.io), so that cargo-deny
# itself runs offline against the database above.
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$db_path\"|" deny.toml >"$work/deny.toml"
cargo metadata --locked --format-version 1 >"$work/metadata.json"
echo "advisories: database $(git -C "$db_path/$db_name" log -1 --format='%h of %cs')" >&2
cargo deny --offline --metadata-path "$work/metadata.json" --config "$work/deny.toml" check advisories
