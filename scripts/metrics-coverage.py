#!/usr/bin/env python3
"""Compares the metric families two servers expose: etcd's (the reference) and cairn's.

    python3 scripts/metrics-coverage.py <etcd metrics URL> <cairn metrics URL>

Prints a Markdown table by family prefix (how many of etcd's families cairn has) and
the families etcd has and cairn lacks, for deploy/README.md's coverage table. Run both
servers on the same workload first (families with labels appear with their first
series in both)."""
import sys
import urllib.request
from collections import OrderedDict

GROUPS = [
    "etcd_server_", "etcd_disk_", "etcd_network_", "etcd_mvcc_", "etcd_debugging_",
    "etcd_snap_", "etcd_grpc_proxy_", "etcd_cluster_", "grpc_server_", "process_",
    "go_", "promhttp_", "os_",
]


def families(url):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def group(name):
    return next((g for g in GROUPS if name.startswith(g)), "other")


def main():
    etcd, cairn = families(sys.argv[1]), families(sys.argv[2])
    table = OrderedDict((g, [0, 0]) for g in GROUPS + ["other"])
    for name in etcd:
        table[group(name)][0] += 1
        table[group(name)][1] += name in cairn
    print("| family prefix | etcd | of them in cairn |")
    print("|---|---:|---:|")
    for g, (total, have) in table.items():
        if total:
            print(f"| `{g}*` | {total} | {have} |")
    print(f"| **all** | **{len(etcd)}** | **{len(etcd & cairn)}** |")
    print()
    print("cairn's own (not in etcd):", ", ".join(sorted(cairn - etcd)) or "none")
    print()
    print("etcd's, not in cairn:")
    for name in sorted(etcd - cairn):
        print("  ", name)


if __name__ == "__main__":
    main()
