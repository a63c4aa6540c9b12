#!/usr/bin/env python3
"""The in-cluster login end to end: the daemon started without --kubeconfig finds the API server
through KUBERNETES_SERVICE_HOST/_PORT and authenticates with the service account's files (token,
ca.crt, namespace in PCIDEVICES_SERVICE_ACCOUNT_DIR), laid out as the kubelet lays out a
projected volume (`token -> ..data/token`, `..data -> ..<timestamp>`, swapped atomically on
rotation).

Checked: the PCIDevices of the gpu-node fixture appear (kubectl); after the token rotates (the
emulator refuses the old one from then on) the daemon keeps writing with the new one: a deleted
PCIDevice is created again and a claim is served, and no request of the daemon's is refused; the
daemon stops cleanly.

usage: in_cluster_test.py PCIDEVICES MAKE_TREE"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from device_plugin_test import stop_process  # noqa: E402
from projection_test import Api, check, claim, gpu_node, verdict, wait_for  # noqa: E402

NODE = "n1"


def publish_service_account(sa, token, ca_pem, generation):
    """Writes the service account's files as the kubelet does: a fresh timestamped directory,
    then `..data` swapped to it with one rename, the old directory removed."""
    stamp = f"..2026_01_01_00_00_{generation:02d}.{os.getpid()}"
    os.mkdir(f"{sa}/{stamp}")
    for name, text in (("token", token), ("ca.crt", ca_pem), ("namespace", "pcidevices-system")):
        with open(f"{sa}/{stamp}/{name}", "w") as f:
            f.write(text)
    old = os.readlink(f"{sa}/..data") if os.path.islink(f"{sa}/..data") else None
    os.symlink(stamp, f"{sa}/..data_tmp")
    os.replace(f"{sa}/..data_tmp", f"{sa}/..data")
    for name in ("token", "ca.crt", "namespace"):
        if not os.path.islink(f"{sa}/{name}"):
            os.symlink(f"..data/{name}", f"{sa}/{name}")
    if old:
        for name in os.listdir(f"{sa}/{old}"):
            os.unlink(f"{sa}/{old}/{name}")
        os.rmdir(f"{sa}/{old}")


def main():
    pcidevices, make_tree = sys.argv[1:3]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-incluster-", dir=base) as tmp:
        api = Api(tmp)
        try:
            run(api, tmp, pcidevices, make_tree)
        finally:
            api.stop()
    return verdict()


def run(api, tmp, pcidevices, make_tree):
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    check(rc == 0, "kubectl apply -f deploy/crds/", out)
    sysfs, dev, proc, state, plugins, config, listed = gpu_node(tmp, pcidevices, make_tree)
    sa = f"{tmp}/sa"
    os.mkdir(sa)
    ca_pem = open(f"{tmp}/api/ca.crt").read()
    publish_service_account(sa, api.token, ca_pem, 1)

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api.port),
               PCIDEVICES_SERVICE_ACCOUNT_DIR=sa)
    log_path = f"{tmp}/daemon.log"
    args = [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE, "--config", config, "--sysfs-root", sysfs,
            "--dev-root", dev, "--proc-root", proc, "--state-dir", state, "--device-plugin-dir", plugins,
            "--pod-resources-socket", f"{tmp}/pr.sock"]
    daemon = subprocess.Popen(args, stderr=open(log_path, "w"), env=env)
    try:
        scenario(api, sa, ca_pem, log_path, len(listed))
    finally:
        began = time.monotonic()
        stop_process(daemon)
        check(daemon.returncode == 0,
              f"daemon stopped cleanly ({daemon.returncode}, {time.monotonic() - began:.1f} s)")
        if verdict_failed():
            print("--- daemon log (tail) ---\n" + "".join(open(log_path).readlines()[-60:]))


def verdict_failed():
    import projection_test
    return bool(projection_test.failures)


def scenario(api, sa, ca_pem, log_path, count):
    listed = lambda: (api.get("pcidevices", selector=f"nodename={NODE}") or {}).get("items")  # noqa: E731
    items = wait_for(lambda: (lambda l: l if l and len(l) == count and all(i.get("status") for i in l) else None)(
        listed()), timeout=20)
    check(items is not None, f"without --kubeconfig: the service account logs in, all {count} PCIDevices appear",
          f"{len(listed() or [])} of {count}")
    log = open(log_path).read()
    check("in-cluster service account" in log, "the log names the in-cluster login", log[-800:])
    unauthorized = api.control("GET", "stats").get("unauthorized", 0)
    check(unauthorized == 0, "no request refused before the rotation", str(unauthorized))

    # Rotate: the emulator accepts only the new token from now on; the kubelet swaps the files.
    new = api.control("POST", "rotate-token")["token"]
    api.token = new
    publish_service_account(sa, new, ca_pem, 2)
    api.control("POST", "reset-stats")

    # Writes that need the new token: a PCIDevice deleted by someone is created again...
    rc, out = api.kubectl("delete", "pcidevice", "n1-000081000")
    check(rc == 0, "kubectl delete pcidevice n1-000081000 (with the new token)", out)
    again = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("address") == "0000:81:00.0" else None)(
        api.get("pcidevices", "n1-000081000")), timeout=20)
    check(again is not None, "after the rotation: the deleted PCIDevice is created again with its status",
          open(log_path).read()[-1500:])
    # ... and a claim is served (finalizer, status).
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081000", "0000:81:00.0"))
    check(rc == 0, "claim applied", out)
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
        api.get("pcideviceclaims", "n1-000081000")), timeout=20)
    check(c is not None and "devices.harvesterhci.io/pcidevices-agent" in c["metadata"].get("finalizers", []),
          "after the rotation: a claim gets its finalizer and passthroughEnabled", json.dumps(c)[:600])
    stats = api.control("GET", "stats")
    check(stats.get("unauthorized", 0) == 0, "after the rotation: no request of the daemon's refused",
          json.dumps(stats)[:600])
    log = open(log_path).read()
    check("Unauthorized" not in log and "HTTP 401" not in log, "the daemon's log shows no 401", log[-1500:])
    # Give the claim back before the daemon stops (its finalizer would hold the object).
    rc, out = api.kubectl("delete", "pcideviceclaim", "n1-000081000", "--timeout=20s")
    check(rc == 0 and api.get("pcideviceclaims", "n1-000081000") is None,
          "after the rotation: the claim is released and goes", out)


if __name__ == "__main__":
    sys.exit(main())
