#!/usr/bin/env python3
"""Ten simulated nodes racing on the KubeVirt object (e2e/kubevirt_race, resourceVersion
preconditions and retry on 409) against the API-server emulator; the result read back with
kubectl: every node's entry exactly once, nothing lost, the administrator's entry kept; then half
of them remove theirs at once.

usage: kubevirt_race_test.py KUBEVIRT_RACE"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from projection_test import Api, ADMIN_ENTRY, check, host_devices, verdict  # noqa: E402

NODES = 10


def main():
    race = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="pcid-kvrace-") as tmp:
        api = Api(tmp)
        try:
            rc, out = api.kubectl("apply", "-f", f"{HERE}/apiserver/kubevirt-crd.yaml")
            api.kubectl("create", "namespace", "kubevirt")
            kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                  "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                  "spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [ADMIN_ENTRY]}}}}
            rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(kv))
            check(rc == 0, "KubeVirt object created", out)
            for rnd, want in (("add", list(range(NODES))), ("remove-even", list(range(1, NODES, 2)))):
                api.control("POST", "reset-stats")
                p = subprocess.run([race, api.kubeconfig, str(NODES), rnd], capture_output=True, text=True,
                                   timeout=120)
                check(p.returncode == 0, f"{NODES} nodes {rnd} at once: every call succeeded", p.stderr[-1500:])
                entries = host_devices(api)
                names = [e["resourceName"] for e in entries]
                check(names.count(ADMIN_ENTRY["resourceName"]) == 1 and
                      sorted(n for n in names if n.startswith("example.com/")) ==
                      sorted(f"example.com/NODE_{i}" for i in want) and len(names) == len(set(names)),
                      f"after {rnd}: each node's entry once, nothing lost, the administrator's kept",
                      json.dumps(names))
                stats = api.control("GET", "stats")
                print(f"     {rnd}: {json.dumps(stats)[:400]}")
        finally:
            api.stop()
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
