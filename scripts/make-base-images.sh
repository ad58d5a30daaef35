#!/usr/bin/env bash
# Makes the local base images deploy/Dockerfile builds on, for a machine with a Docker
# engine but no registry to pull from: a minimal Debian (bookworm) made with debootstrap
# and `docker import`ed as cairn-base/debian:bookworm, and on it
#   cairn-base/prometheus:bookworm  Debian's prometheus package
#   cairn-base/rust:bookworm        with --with-rust: the host's Rust toolchain, for
#                                   deploy/Dockerfile's build stage (BINARY=build)
# Needs root, debootstrap and Debian's package mirror. Idempotent: an image that exists
# is kept (--force makes them again).
set -euo pipefail
force=0
rust=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        --with-rust) rust=1 ;;
        *) echo "usage: $0 [--force] [--with-rust]" >&2; exit 2 ;;
    esac
done
root=${CAIRN_BASE_DIR:-/var/tmp/cairn-base}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
have() { [[ $force == 0 ]] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have cairn-base/debian:bookworm; then
    if [[ ! -x "$root/bookworm/bin/sh" ]]; then
        command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
        mkdir -p "$root"
        debootstrap --variant=minbase --include=ca-certificates bookworm "$root/bookworm" "$mirror"
    fi
    # Without the downloaded packages and the package lists: they are only caches.
    tar -C "$root/bookworm" --exclude='./var/cache/apt/archives/*.deb' \
        --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*.bin' \
        --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
        --exclude='./usr/share/locale/*' -c . | docker import - cairn-base/debian:bookworm
fi

if ! have cairn-base/prometheus:bookworm; then
    docker build -t cairn-base/prometheus:bookworm - <<'DOCKERFILE'
FROM cairn-base/debian:bookworm
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/*
USER prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
DOCKERFILE
fi

if [[ $rust == 1 ]] && ! have cairn-base/rust:bookworm; then
    # The host's toolchain (rustup's default) with a C/C++ compiler for RocksDB.
    rustc_dir=$(rustc --print sysroot)
    ctx=$(mktemp -d)
    trap 'rm -rf "$ctx"' EXIT
    cp -a "$rustc_dir" "$ctx/toolchain"
    cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM cairn-base/debian:bookworm
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        gcc g++ make libclang-dev binutils \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /opt/rust
ENV PATH=/opt/rust/bin:$PATH
DOCKERFILE
    docker build -t cairn-base/rust:bookworm "$ctx"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^cairn-base/'
