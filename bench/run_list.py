#!/usr/bin/env python3
"""`pcidevices list` against `lspci -Dnnk` as whole processes: wall time and peak RSS.

Two trees: this machine's /sys (read-only: both tools only read it) and the 2,065-function
SR-IOV tree (8 PFs x 256 VFs, e2e/fixtures/make_tree.py, on tmpfs). Runs are interleaved (ours,
lspci, ours, ...) so that both see the same machine; each runs under GNU time (Debian package
`time`) for its peak RSS, output to /dev/null, and the figures are the median (and minimum) wall
time and the median peak RSS. Prints the budgets next to the figures; exit 1 when one is missed.

Budgets (issue 9): on /sys, wall <= lspci's and peak RSS <= lspci's + 4 MiB; on the 2,065-function
tree, at least 4x faster than lspci.

usage: bench/run_list.py [BUILD_DIR] [--runs N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_once(argv):
    """Wall seconds and peak RSS (KiB) of one run of argv; output discarded.

    The peak RSS comes from GNU time (%M, the child's ru_maxrss): a child spawned from Python
    itself would report Python's own RSS, which the kernel counts at exec. The wall time is
    taken here around time + the tool, so both tools carry the same small time overhead."""
    with tempfile.NamedTemporaryFile("r") as rss, open(os.devnull, "w") as devnull:
        t = time.perf_counter()
        rc = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv],
                             stdout=devnull, stderr=devnull)
        wall = time.perf_counter() - t
        if rc != 0:
            sys.exit(f"{' '.join(argv)}: exit {rc}")
        return wall, int(rss.read().split()[-1])


def compare(title, ours, lspci, runs):
    for argv in (ours, lspci):  # warm the page cache and check both run
        run_once(argv)
    res = {"ours": [], "lspci": []}
    for _ in range(runs):
        res["ours"].append(run_once(ours))
        res["lspci"].append(run_once(lspci))
    out = {}
    print(f"\n{title} ({runs} interleaved runs each)")
    for name, argv in (("ours", ours), ("lspci", lspci)):
        walls = [w for w, _ in res[name]]
        rss = statistics.median(r for _, r in res[name]) / 1024
        out[name] = (statistics.median(walls), min(walls), rss)
        print(f"  {'pcidevices list' if name == 'ours' else 'lspci -Dnnk':16} wall median "
              f"{out[name][0] * 1e3:7.2f} ms  min {out[name][1] * 1e3:7.2f} ms  "
              f"peak RSS {rss:5.1f} MiB   ({' '.join(argv)})")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=str(HERE / "build"))
    ap.add_argument("--runs", type=int, default=40)
    a = ap.parse_args()
    pcid = str(Path(a.build) / "pcidevices")
    for tool in (pcid, shutil.which("lspci"), "/usr/bin/time"):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"missing {tool or 'lspci'} (scripts/setup-deps.sh installs pciutils and time)")
    failed = []

    host = compare("this machine's /sys (read-only)", [pcid, "list"], ["lspci", "-Dnnk"], a.runs)
    ok = host["ours"][0] <= host["lspci"][0]
    print(f"  budget: wall <= lspci's: {host['ours'][0] * 1e3:.2f} <= {host['lspci'][0] * 1e3:.2f} ms "
          f"{'ok' if ok else 'MISSED'}")
    if not ok:
        failed.append("host wall")
    ok = host["ours"][2] <= host["lspci"][2] + 4
    print(f"  budget: peak RSS <= lspci's + 4 MiB: {host['ours'][2]:.1f} <= "
          f"{host['lspci'][2] + 4:.1f} MiB {'ok' if ok else 'MISSED'}")
    if not ok:
        failed.append("host RSS")

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-bench-", dir=base) as tree:
        subprocess.run([sys.executable, str(HERE / "e2e/fixtures/make_tree.py"), "sriov",
                        f"{tree}/sys"], check=True, stdout=subprocess.DEVNULL)
        big = compare("the 2,065-function SR-IOV tree (tmpfs)",
                      [pcid, "list", "--sysfs-root", f"{tree}/sys"],
                      ["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={tree}/sys/bus/pci",
                       "-Dnnk"], max(a.runs // 4, 5))
    speedup = big["lspci"][0] / big["ours"][0]
    ok = speedup >= 4
    print(f"  budget: >= 4x faster than lspci: {speedup:.1f}x {'ok' if ok else 'MISSED'} "
          f"(peak RSS {big['ours'][2]:.1f} vs {big['lspci'][2]:.1f} MiB)")
    if not ok:
        failed.append("2,065-function speed-up")
    if failed:
        print(f"MISSED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
