#!/usr/bin/env python3
"""bench/sriov_quiet: the API writes of an SR-IOV node. The daemon on the sriov-quiet fixture
tree (4 PFs x 64 VFs, each PF with an interface; the node's own NIC carries the default route)
against the API-server emulator, with the CRDs applied. Measured from the emulator's counters:
  - writes at start, until every PCIDevice and SRIOVNetworkDevice has its status: a create and a
    status write per object, and the SR-IOV objects' status once their spec has been answered;
  - writes during a quiet period (default 60 s; bookmarks every second meanwhile): budget 0;
  - the seconds from the daemon's start to that many writes made.
Exit status 1 when a quiet period had a write.

usage: bench/run_sriov_quiet.py BUILD_DIR [--quiet 60]"""
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
from device_plugin_test import stop_process  # noqa: E402
from projection_test import Api, wait_for, writes  # noqa: E402

NODE = "n1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--quiet", type=float, default=60)
    a = ap.parse_args()
    pcidevices = os.path.join(a.build, "pcidevices")
    with tempfile.TemporaryDirectory(prefix="pcid-bench-sriov-") as tmp:
        api = Api(tmp)
        daemon = None
        try:
            rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
            if rc:
                sys.exit(out)
            sysfs, dev, proc, state, plugins = (f"{tmp}/{d}" for d in ("sys", "dev", "proc", "state", "dp"))
            os.mkdir(plugins)
            subprocess.run([sys.executable, f"{ROOT}/e2e/fixtures/make_tree.py", "sriov-quiet", sysfs,
                            "--dev-root", dev, "--proc-root", proc], check=True)
            listed = json.loads(subprocess.run(
                [pcidevices, "list", "--sysfs-root", sysfs, "--node-name", NODE, "--output", "json"],
                capture_output=True, text=True, check=True).stdout)
            config = f"{tmp}/config.json"
            with open(config, "w") as f:
                json.dump({"enable": []}, f)
            api.control("POST", "reset-stats")
            began = time.monotonic()
            daemon = subprocess.Popen(
                [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE, "--config", config, "--sysfs-root", sysfs,
                 "--dev-root", dev, "--proc-root", proc, "--state-dir", state, "--device-plugin-dir",
                 plugins, "--pod-resources-socket", f"{tmp}/pr.sock", "--kubeconfig",
                 api.kubeconfig_tokenfile], stderr=open(f"{tmp}/daemon.log", "w"))

            # The emulator's counter first (cheap), then kubectl for the objects themselves.
            want = 2 * (len(listed) + 4)
            wait_for(lambda: writes(api.control("GET", "stats")) >= want, timeout=120, interval=0.05)
            seconds = time.monotonic() - began

            def converged():
                pci = api.get("pcidevices", selector=f"nodename={NODE}")
                net = api.get("sriovnetworkdevices", selector=f"nodename={NODE}")
                return (pci and net and len(pci["items"]) == len(listed) and len(net["items"]) == 4
                        and all(i.get("status") for i in pci["items"] + net["items"]))
            if not wait_for(converged, timeout=120, interval=0.5):
                sys.exit("objects did not converge in 120 s:\n" + open(f"{tmp}/daemon.log").read()[-3000:])
            time.sleep(2)  # the last status writes' echoes
            start = api.control("GET", "stats")
            api.control("POST", "reset-stats")
            time.sleep(a.quiet)
            quiet = api.control("GET", "stats")
            print(json.dumps({"pcidevices": len(listed), "sriovnetworkdevices": 4,
                              "seconds_to_converge": round(seconds, 2), "writes_at_start": writes(start),
                              "quiet_seconds": a.quiet, "quiet_writes": writes(quiet),
                              "quiet_verbs": quiet.get("verbs", {})}))
            return 1 if writes(quiet) else 0
        finally:
            if daemon:
                stop_process(daemon)
            api.stop()


if __name__ == "__main__":
    sys.exit(main())
