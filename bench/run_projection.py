#!/usr/bin/env python3
"""bench/projection: simulated nodes x devices against the API-server emulator
(e2e/apiserver). Nodes run in batches (bench/projection_bench: one process, one Projection per
node, each with its mirror thread, four informers and their watches); each batch is started,
converges, is measured quiet, and stops, so that the emulator (Python) holds at most one
batch's watches. Checked per batch, from
the emulator's own counters:
  - writes at start = 2 x objects created (a create, then the status: the status subresource
    ignores status on create), nothing else;
  - writes during a quiet period = 0 (bookmarks every second meanwhile);
  - projection memory per node = (RSS after - RSS before) / nodes in the batch.

usage: bench/run_projection.py BUILD_DIR [--nodes 1000] [--devices 32] [--batch 100] [--quiet 5]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "e2e"))
from projection_test import Api  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--quiet", type=float, default=5)
    a = ap.parse_args()
    bench = os.path.join(a.build, "bench", "projection_bench")
    with tempfile.TemporaryDirectory(prefix="pcid-bench-proj-") as tmp:
        api = Api(tmp)
        try:
            rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
            if rc:
                sys.exit(out)
            totals = {"objects": 0, "writes": 0, "quiet_writes": 0, "seconds": 0.0}
            per_node_kb = []
            for first in range(0, a.nodes, a.batch):
                n = min(a.batch, a.nodes - first)
                api.control("POST", "reset-stats")
                p = subprocess.Popen([bench, api.kubeconfig, str(first), str(n), str(a.devices)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                line = p.stdout.readline()
                if not line:
                    sys.exit(f"batch {first}: projection_bench failed ({p.wait()})")
                r = json.loads(line)
                start = api.control("GET", "stats")
                api.control("POST", "reset-stats")
                time.sleep(a.quiet)
                quiet = api.control("GET", "stats")
                p.stdin.write("stop\n")
                p.stdin.flush()
                p.wait(timeout=120)
                objects = n * a.devices
                per_node_kb.append((r["rss_after_kb"] - r["rss_before_kb"]) / n)
                totals["objects"] += objects
                totals["writes"] += start["writes"]
                totals["quiet_writes"] += quiet["writes"]
                totals["seconds"] += r["seconds"]
                print(f"nodes {first}-{first + n - 1}: {objects} objects in {r['seconds']:.1f} s, "
                      f"writes {start['writes']} (= 2 x {objects}: {start['writes'] == 2 * objects}), "
                      f"quiet {a.quiet:.0f} s: {quiet['writes']} writes, {quiet.get('total', '?')} requests; "
                      f"{per_node_kb[-1]:.0f} KiB/node; failed writes {r['failures']}", flush=True)
        finally:
            api.stop()
    ok = totals["writes"] == 2 * totals["objects"] and totals["quiet_writes"] == 0
    print(f"total: {a.nodes} nodes x {a.devices} devices = {totals['objects']} objects; writes at start "
          f"{totals['writes']} (2 per object: create + status), quiet writes {totals['quiet_writes']}; "
          f"projection memory per node median {sorted(per_node_kb)[len(per_node_kb) // 2]:.0f} KiB; "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
