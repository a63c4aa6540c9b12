#!/usr/bin/env python3
"""SR-IOV objects and VFClaims with the real device owner: the daemon on the gpu-node fixture
tree (its ConnectX-5 PF 0000:00:1a.0 has interface enp0s26f0 and three VFs: 1a.1 on mlx5_core,
1a.2 on no driver, 1a.3 on vfio-pci), the API-server emulator, the real kubectl and the kubelet
emulator. e2e_sriov_projection covers the projection alone with a faked owner; binding and VF
creation on a real kernel are e2e_vm_vfio's. A fixture tree has no kernel, so nothing here needs
a driver to move: the claimed VF is the one already on vfio-pci.

Checked: the SRIOVNetworkDevice appears (named after the interface, upstream's annotation, the
nodename label, spec {address, nodeName}, status listing the VFs) and kubectl prints it; a quiet
node writes nothing; numVFs above sriov_totalvfs -> Ready=False TooManyVFs and sriov_numvfs
untouched; a VFClaim takes the VF on vfio-pci (status, state file, served to the kubelet under
status.resourceName, KubeVirt's pciHostDevices entry); a claim for more VFs than exist ->
NotEnoughVFs, nothing written; another node's claim is left alone; deleting the claim gives the VF
back and removes the KubeVirt entry; a claim force-deleted while the agent is down has its VF
given back by the restarted agent (the start-up sweep); after the restart a quiet node still
writes nothing.

usage: sriov_daemon_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE"""
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from device_plugin_test import Emulator, stop_process  # noqa: E402
from projection_test import (check, failures, gpu_node, host_devices, run_with_api, wait_for,  # noqa: E402
                             writes)
from sriov_projection_test import patch, ready, vf_claim, wait_status  # noqa: E402

NODE = "n1"
PF = "0000:00:1a.0"
NET = "n1-enp0s26f0"
ANNOTATION = "sriov.devices.harvesterhi.io/interface-name"  # upstream's typo, kept
VFS = ["0000:00:1a.1", "0000:00:1a.2", "0000:00:1a.3"]
ON_VFIO = "0000:00:1a.3"


def state_has(state, address):
    path = f"{state}/state.json"
    return os.path.exists(path) and address in open(path).read()


def quiet(api, what):
    api.control("POST", "reset-stats")
    time.sleep(3)
    stats = api.control("GET", "stats")
    check(writes(stats) == 0, what, json.dumps(stats)[:400])


def reason(obj):
    return (ready(obj) or {}).get("reason")


def main():
    return run_with_api("pcid-sriov-", run)


def run(api, tmp, pcidevices, emulator_bin, make_tree):
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    check(rc == 0, "kubectl apply -f deploy/crds/", out)
    rc, out = api.kubectl("apply", "-f", f"{HERE}/apiserver/kubevirt-crd.yaml")
    api.kubectl("create", "namespace", "kubevirt")
    kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
          "metadata": {"name": "kubevirt", "namespace": "kubevirt"}, "spec": {}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(kv))
    check(rc == 0, "KubeVirt object created", out)

    sysfs, dev, proc, state, plugins, config, listed = gpu_node(tmp, pcidevices, make_tree)
    vf_status = next(d["status"] for d in listed if d["status"]["address"] == ON_VFIO)
    resource = vf_status["resourceName"]
    numvfs = f"{sysfs}/bus/pci/devices/{PF}/sriov_numvfs"
    emu = Emulator(emulator_bin, plugins, f"{tmp}/pr.sock")
    log = open(f"{tmp}/daemon.log", "w+")
    args = [pcidevices, "daemon", "--metrics-bind-address", "127.0.0.1:0", "--node-name", NODE, "--config", config, "--sysfs-root", sysfs,
            "--dev-root", dev, "--proc-root", proc, "--state-dir", state, "--device-plugin-dir", plugins,
            "--pod-resources-socket", f"{tmp}/pr.sock", "--kubeconfig", api.kubeconfig_tokenfile]
    daemon = subprocess.Popen(args, stderr=log)
    try:
        scenario(api, emu, state, numvfs, resource)
        projection_metrics(log.name)
        # A claim force-deleted while the agent is down: the restarted agent gives its VF back.
        api.kubectl("apply", "-f", "-", stdin=vf_claim("vc-down", NODE, pfAddress=PF, count=1))
        c = wait_status(api, "vfclaims", "vc-down", lambda o: reason(o) == "Bound")
        check(c is not None and state_has(state, ON_VFIO), "claimed before the restart", json.dumps(c)[:600])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        rc, out = api.kubectl("patch", "vfclaim", "vc-down", "--type=merge", "-p", '{"metadata":{"finalizers":[]}}')
        rc2, out2 = api.kubectl("delete", "vfclaim", "vc-down", "--timeout=10s")
        check(rc == 0 and rc2 == 0 and api.get("vfclaims", "vc-down") is None,
              "VFClaim force-deleted while the agent is down", out + out2)
        daemon = subprocess.Popen(args, stderr=log)
        released = wait_for(lambda: not state_has(state, ON_VFIO), timeout=20)
        check(released, "after the restart: the VF of the claim that is gone given back (sweep)")
        net = wait_status(api, "sriovnetworkdevices", NET, lambda o: True)
        check(net is not None and open(numvfs).read().strip() == "3",
              "after the restart: the SR-IOV object kept, the VF count untouched")
        time.sleep(1)
        quiet(api, "after the restart, a quiet node: zero writes")
    finally:
        began = time.monotonic()
        stop_process(daemon)
        check(daemon.returncode == 0,
              f"daemon stopped cleanly ({daemon.returncode}, {time.monotonic() - began:.1f} s)")
        emu.stop()
        if failures:
            log.seek(0)
            print("--- daemon log (tail) ---\n" + "".join(log.readlines()[-60:]))


def projection_metrics(log_path):
    """/readyz and the projection's counters, from the daemon's metrics endpoint."""
    from metrics_test import get, scrape, value
    m = re.search(r"metrics on 127\.0\.0\.1:(\d+)", open(log_path).read())
    if not check(m is not None, "the metrics port is logged"):
        return
    port = int(m.group(1))
    status, body, _ = get(port, "/readyz")
    check(status == 200, f"/readyz 200: plugins registered, this node's resources listed ({body!r})")
    _, samples = scrape(port)
    patches = value(samples, "pcidevices_api_requests_total", verb="PATCH", code="200") or 0
    writes_ = sum(value(samples, "pcidevices_api_writes_total", kind=k) or 0 for k in ("create", "status", "claim"))
    watches = value(samples, "pcidevices_watch_restarts_total") or 0
    check(patches > 0 and writes_ > 0 and watches >= 7,
          f"API requests by verb and code, writes, lists counted ({patches}, {writes_}, {watches})")


def scenario(api, emu, state, numvfs, resource):
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: ready(o) is not None, timeout=20)
    check(net is not None, f"SRIOVNetworkDevice {NET} appears with a Ready condition")
    if not net:
        return
    meta, spec, status = net["metadata"], net["spec"], net.get("status", {})
    check(meta.get("annotations", {}).get(ANNOTATION) == "enp0s26f0" and
          meta.get("labels", {}).get("nodename") == NODE and spec.get("address") == PF and
          spec.get("nodeName") == NODE and sorted(status.get("vfAddresses", [])) == VFS,
          "its annotation, label, spec and the VFs in status", json.dumps(net)[:800])
    rc, out = api.kubectl("get", "sriovnetworkdevices")
    check(rc == 0 and out.splitlines()[0].split()[:2] == ["NAME", "ADDRESS"] and NET in out,
          "kubectl get sriovnetworkdevices prints the printer columns", out)
    others = api.get("sriovnetworkdevices")
    check(others is not None and len(others["items"]) == 1, "no object for any other function")
    quiet(api, "a quiet node: zero writes")

    # More VFs than the PF can have: refused, sysfs untouched.
    rc, out = patch(api, "sriovnetworkdevice", NET, {"numVFs": 8})
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: reason(o) == "TooManyVFs")
    check(rc == 0 and net is not None and open(numvfs).read().strip() == "3",
          "numVFs 8 above sriov_totalvfs 4: Ready=False TooManyVFs, sriov_numvfs untouched",
          json.dumps(net)[:800])

    # A VFClaim: the VF already on vfio-pci, served, KubeVirt told.
    rc, out = api.kubectl("apply", "-f", "-", stdin=vf_claim("vc1", NODE, pfAddress=PF, count=1, userName="admin"))
    c = wait_status(api, "vfclaims", "vc1", lambda o: reason(o) == "Bound")
    st = (c or {}).get("status", {})
    check(rc == 0 and c is not None and st.get("vfAddresses") == [ON_VFIO] and st.get("resourceName") == resource
          and "devices.harvesterhci.io/pcidevices-agent" in c["metadata"].get("finalizers", []),
          "VFClaim vc1: the VF on vfio-pci, its resource, our finalizer", json.dumps(c)[:800])
    check(state_has(state, ON_VFIO) and "VFClaim/vc1" in open(f"{state}/state.json").read(),
          "the VF recorded for VFClaim/vc1 in the state file")
    e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == resource and
                 any(d["id"] == ON_VFIO and d["health"] == "Healthy" for d in e["devices"]), timeout=10)
    check(e is not None, f"the VF served to the kubelet as {resource}")
    entry = {"pciVendorSelector": "15b3:101e", "resourceName": resource, "externalResourceProvider": True}
    entries = wait_for(lambda: (lambda e: e if entry in e else None)(host_devices(api)))
    check(entries is not None, "KubeVirt: a pciHostDevices entry for the VFClaim's resource",
          json.dumps(host_devices(api)))

    # Bad and foreign claims change nothing.
    before = open(f"{state}/state.json").read()
    api.kubectl("apply", "-f", "-", stdin=vf_claim("vc-many", NODE, pfAddress=PF, count=4))
    c = wait_status(api, "vfclaims", "vc-many", lambda o: reason(o) is not None)
    check(reason(c) == "NotEnoughVFs" and open(f"{state}/state.json").read() == before
          and open(numvfs).read().strip() == "3",
          "a claim for 4 VFs of a PF with 2 free: NotEnoughVFs, nothing written", json.dumps(c)[:800])
    api.kubectl("delete", "vfclaim", "vc-many", "--timeout=10s")
    api.kubectl("apply", "-f", "-", stdin=vf_claim("vc-other", "n2", pfAddress=PF, count=1))
    time.sleep(1)
    c = api.get("vfclaims", "vc-other")
    check(c is not None and not c.get("status") and not c["metadata"].get("finalizers"),
          "another node's VFClaim is left alone", json.dumps(c)[:400])
    api.kubectl("delete", "vfclaim", "vc-other", "--timeout=10s")

    # Deleted: the VF given back (its driver was vfio-pci: it stays there), the entry removed.
    rc, out = api.kubectl("delete", "vfclaim", "vc1", "--timeout=20s")
    check(rc == 0 and api.get("vfclaims", "vc1") is None and not state_has(state, ON_VFIO),
          "VFClaim vc1 deleted: the VF given back, then the claim gone", out)
    entries = wait_for(lambda: (lambda e: True if entry not in e else None)(host_devices(api)))
    check(entries is not None, "KubeVirt: the entry removed with the claim", json.dumps(host_devices(api)))
    rc, out = patch(api, "sriovnetworkdevice", NET, {"numVFs": 0})
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: reason(o) != "TooManyVFs")
    check(net is not None and open(numvfs).read().strip() == "3",
          "numVFs 0: nothing to give back (the VFs were not ours), sriov_numvfs untouched", json.dumps(net)[:800])


if __name__ == "__main__":
    sys.exit(main())
