#!/usr/bin/env python3
"""The projection's SR-IOV objects and VFClaims end to end, without the agent: the API-server
emulator (e2e/apiserver), the real kubectl, and e2e/sriov_projection.cc (Projection::Start with a
device owner faked in the harness, which prints every request it gets as a JSON line).

Checked: deploy/crds apply; this node's SRIOVNetworkDevice (named after the interface, upstream's
annotation with its typo, spec {address, nodeName, numVFs: 0}) and SRIOVGPUDevice (named like its
PCIDevice, enabled: false) appear and show the owner's answer to the give-back their spec asks;
kubectl prints their columns; a quiet node writes nothing; numVFs asks the owner and status shows
the VFs and their PCIDevice names; a refusal is a Ready=False condition; enabled asks for every VF
of the GPU; another node's objects are never touched; a VFClaim gets our finalizer, the owner's
VFs (with this node's numVFs as the limit) and Ready=True, an invalid one InvalidSpec and nothing
else, another node's nothing; deleting a claim gives its VFs back and lets it go; a deleted
SRIOVNetworkDevice gives its count back and is made again for its PF.

What only the real owner can show belongs in e2e_projection (the daemon, which now passes its
SriovHandler, on a fixture tree); the gpu-node tree needs its SR-IOV NIC (0000:00:1a.0,
mlx5_core, 4 VFs) to have an interface (net/<name>) first, or it gets no object:
- the objects appear as here (names, annotation, spec) and a quiet node still writes nothing;
- numVFs above sriov_totalvfs -> Ready=False TooManyVFs, sysfs untouched; numVFs on the PF that
  carries the default route (eno1 there is not SR-IOV: give the route to the mlx PF) -> no object
  once the inventory says which PFs are protected;
- a VFClaim whose VFs exist (1a.1, 1a.2) -> status.vfAddresses, the VFs on vfio-pci in the state
  file, served under status.resourceName by the kubelet emulator; deleting it -> the VFs back to
  their drivers, then the claim gone; a claim while a pod (kubelet emulator) holds a VF ->
  Ready=False VFInUse, asked again after the back-off;
- the daemon restarted: no request changes anything (each object asked once: a give-back or its
  count again), still zero writes.

usage: sriov_projection_test.py SRIOV_PROJECTION"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from projection_test import Api, check, verdict, wait_for, writes  # noqa: E402

NODE = "n1"
NET = "n1-enp59s0f0"
GPU = "n1-000081000"
FINALIZER = "devices.harvesterhci.io/pcidevices-agent"
ANNOTATION = "sriov.devices.harvesterhi.io/interface-name"  # upstream's typo, kept
NIC_VFS = ["0000:3b:02.%d" % i for i in range(8)]


class Harness:
    """sriov_projection against the emulator; the requests its fake owner got."""

    def __init__(self, binary, api, tmp):
        self.log = open(f"{tmp}/harness.log", "w+")
        self.proc = subprocess.Popen([binary, api.kubeconfig, NODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.requests = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.requests.append(json.loads(line))

    def asked(self, pred):
        with self.lock:
            return [r for r in self.requests if pred(r)]

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def ready(obj):
    conds = (obj or {}).get("status", {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == "Ready"), None)


def wait_status(api, plural, name, pred, timeout=15):
    return wait_for(lambda: (lambda o: o if o and pred(o) else None)(api.get(plural, name)), timeout=timeout)


def patch(api, kind, name, spec):
    return api.kubectl("patch", kind, name, "--type", "merge", "-p", json.dumps({"spec": spec}))


def vf_claim(name, node, **spec):
    return json.dumps({"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "VFClaim",
                       "metadata": {"name": name}, "spec": {"nodeName": node, **spec}})


def objects(api, harness):
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: ready(o) is not None)
    check(net is not None, "SRIOVNetworkDevice appears with a Ready condition", harness_tail(harness))
    if not net:
        return False
    check(net["metadata"].get("labels") == {"nodename": NODE} and
          net["metadata"].get("annotations", {}).get(ANNOTATION) == "enp59s0f0",
          "SRIOVNetworkDevice: label nodename, upstream's interface-name annotation", json.dumps(net["metadata"]))
    check(net["spec"] == {"address": "0000:3b:00.0", "nodeName": NODE, "numVFs": 0},
          "SRIOVNetworkDevice spec {address, nodeName, numVFs: 0}", json.dumps(net["spec"]))
    check(net["status"].get("status") == "sriovNetworkDeviceDisabled" and net["status"].get("vfAddresses") == []
          and ready(net)["status"] == "True" and ready(net)["reason"] == "Released",
          "SRIOVNetworkDevice status: disabled, Ready=True Released", json.dumps(net["status"]))
    gpu = wait_status(api, "sriovgpudevices", GPU, lambda o: ready(o) is not None)
    check(gpu is not None and gpu["spec"] == {"address": "0000:81:00.0", "nodeName": NODE, "enabled": False}
          and gpu["status"].get("vGPUDevices") == [] and ready(gpu)["reason"] == "Released",
          "SRIOVGPUDevice named like its PCIDevice, enabled: false, status shown", json.dumps(gpu))
    gives_back = harness.asked(lambda r: r["kind"] == "count" and r["count"] is None)
    check(sorted(r["source"] for r in gives_back) == [f"SRIOVGPUDevice/{GPU}", f"SRIOVNetworkDevice/{NET}"],
          "each object asked the owner once: give back (numVFs 0, enabled false)", json.dumps(gives_back))
    rc, out = api.kubectl("get", "sriovnetworkdevices")
    header = out.splitlines()[0].split() if out else []
    check(rc == 0 and header[:2] == ["NAME", "ADDRESS"] and "NUMVFS" in header and
          any(line.startswith(NET + " ") and "0000:3b:00.0" in line for line in out.splitlines()),
          "kubectl get sriovnetworkdevices prints the printer columns", out)
    return True


def harness_tail(harness):
    harness.log.seek(0)
    return harness.log.read()[-1500:]


def quiet(api, what):
    api.control("POST", "reset-stats")
    time.sleep(3)
    stats = api.control("GET", "stats")
    check(writes(stats) == 0, f"quiet node: zero writes ({what})", json.dumps(stats)[:800])


def counts(api, harness, other_rv):
    rc, out = patch(api, "sriovnetworkdevice", NET, {"numVFs": 4})
    check(rc == 0, "numVFs set to 4", out)
    net = wait_status(api, "sriovnetworkdevices", NET,
                      lambda o: len(o.get("status", {}).get("vfAddresses") or []) == 4)
    check(net is not None and net["status"]["status"] == "sriovNetworkDeviceEnabled" and
          net["status"]["vfPCIDevices"] == ["n1-00003b02%d" % i for i in range(4)] and
          ready(net)["reason"] == "Applied",
          "numVFs 4: the owner's VFs and their PCIDevice names in status, Ready=True Applied",
          json.dumps((net or {}).get("status")))
    check(harness.asked(lambda r: r["kind"] == "count" and r["count"] == 4 and
                        r["source"] == f"SRIOVNetworkDevice/{NET}"), "the owner was asked for 4 VFs")
    patch(api, "sriovnetworkdevice", NET, {"numVFs": 20})
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: (ready(o) or {}).get("reason") == "TooManyVFs")
    check(net is not None and ready(net)["status"] == "False" and len(net["status"]["vfAddresses"]) == 4,
          "numVFs 20: Ready=False TooManyVFs, the VFs unchanged", json.dumps((net or {}).get("status")))
    patch(api, "sriovnetworkdevice", NET, {"numVFs": 4})
    net = wait_status(api, "sriovnetworkdevices", NET, lambda o: (ready(o) or {}).get("reason") == "Applied")
    check(net is not None and ready(net)["status"] == "True", "numVFs back to 4: Ready=True again")
    patch(api, "sriovgpudevice", GPU, {"enabled": True})
    gpu = wait_status(api, "sriovgpudevices", GPU, lambda o: len(o.get("status", {}).get("vfAddresses") or []) == 4)
    check(gpu is not None and gpu["status"]["vGPUDevices"] == [] and
          harness.asked(lambda r: r["kind"] == "count" and r["count"] == 4 and r["source"] == f"SRIOVGPUDevice/{GPU}"),
          "GPU enabled: all 4 of its VFs asked and shown", json.dumps((gpu or {}).get("status")))
    o = api.get("sriovnetworkdevices", "n2-eth0")
    check(o is not None and o["metadata"]["resourceVersion"] == other_rv and "status" not in o,
          "another node's SRIOVNetworkDevice untouched", json.dumps(o))


def claims(api, harness):
    for name, node, spec in (("vc1", NODE, {"pfAddress": "0000:3b:00.0", "count": 2}),
                             ("vc-bad", NODE, {"pfAddress": "0000:3b:00.0", "vendorId": "8086", "count": 1}),
                             ("vc-other", "n2", {"pfAddress": "0000:3b:00.0", "count": 1})):
        rc, out = api.kubectl("apply", "-f", "-", stdin=vf_claim(name, node, **spec))
        check(rc == 0, f"VFClaim {name} applied", out)
    c = wait_status(api, "vfclaims", "vc1", lambda o: (ready(o) or {}).get("status") == "True")
    check(c is not None and FINALIZER in c["metadata"].get("finalizers", []) and
          len(c["status"]["vfAddresses"]) == 2 and
          c["status"]["pciDevices"] == ["n1-" + a.replace(":", "").replace(".", "") for a in c["status"]["vfAddresses"]] and
          c["status"]["resourceName"] == "intel.com/XL710_VF",
          "VFClaim: finalizer, the owner's VFs, their PCIDevice names, resourceName, Ready=True",
          json.dumps(c))
    asked = harness.asked(lambda r: r["kind"] == "claim" and r["name"] == "vc1" and not r["release"])
    check(len(asked) == 1 and asked[0]["maxVFs"] == {"0000:3b:00.0": 4} and asked[0]["count"] == 2,
          "the owner asked once, with this node's numVFs as the PF's limit", json.dumps(asked))
    bad = wait_status(api, "vfclaims", "vc-bad", lambda o: ready(o) is not None)
    check(bad is not None and ready(bad)["reason"] == "InvalidSpec" and not bad["metadata"].get("finalizers")
          and not harness.asked(lambda r: r.get("name") == "vc-bad"),
          "an invalid VFClaim: InvalidSpec, no finalizer, nothing asked", json.dumps(bad))
    other = api.get("vfclaims", "vc-other")
    check(other is not None and not other["metadata"].get("finalizers") and "status" not in other,
          "another node's VFClaim untouched", json.dumps(other))
    quiet(api, "objects and claims served")
    rc, out = api.kubectl("delete", "vfclaim", "vc1", "--wait=false")
    gone = wait_for(lambda: api.get("vfclaims", "vc1") is None)
    check(rc == 0 and gone and harness.asked(lambda r: r["kind"] == "claim" and r["name"] == "vc1" and r["release"]),
          "a deleted VFClaim gives its VFs back, then goes", out)


def deletion(api, harness):
    old = api.get("sriovnetworkdevices", NET)
    before = len(harness.asked(lambda r: r["kind"] == "count" and r["count"] is None))
    rc, out = api.kubectl("delete", "sriovnetworkdevice", NET)
    again = wait_status(api, "sriovnetworkdevices", NET,
                        lambda o: o["metadata"].get("uid") != old["metadata"].get("uid") and ready(o) is not None)
    check(rc == 0 and again is not None and again["spec"]["numVFs"] == 0 and
          again["status"]["status"] == "sriovNetworkDeviceDisabled" and again["status"]["vfAddresses"] == [],
          "a deleted SRIOVNetworkDevice gives its count back and is made again for its PF",
          json.dumps(again))
    check(len(harness.asked(lambda r: r["kind"] == "count" and r["count"] is None and
                            r["source"] == f"SRIOVNetworkDevice/{NET}")) > 0 and
          len(harness.asked(lambda r: r["kind"] == "count" and r["count"] is None)) > before,
          "the give-back was asked")


def run(api, tmp, binary):
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    check(rc == 0, "kubectl apply -f deploy/crds/", out)
    other = {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "SRIOVNetworkDevice",
             "metadata": {"name": "n2-eth0", "labels": {"nodename": "n2"}},
             "spec": {"address": "0000:3b:00.0", "nodeName": "n2", "numVFs": 2}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(other))
    check(rc == 0, "another node's SRIOVNetworkDevice created", out)
    other_rv = api.get("sriovnetworkdevices", "n2-eth0")["metadata"]["resourceVersion"]
    harness = Harness(binary, api, tmp)
    try:
        if objects(api, harness):
            quiet(api, "objects made")
            counts(api, harness, other_rv)
            claims(api, harness)
            deletion(api, harness)
    finally:
        check(harness.stop() == 0, "the harness stops cleanly", harness_tail(harness))


def main():
    binary = sys.argv[1]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-sriov-", dir=base) as tmp:
        api = Api(tmp)
        try:
            run(api, tmp, binary)
        finally:
            api.stop()
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
