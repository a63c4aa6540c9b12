#!/usr/bin/env python3
"""bench/webhook: `pcidevices controller` against the API-server emulator, with a 64-device node
(64 PCIDevices, 64 claims with the agent's finalizer) and a second node of 64 devices.
  a. AdmissionReview latency, client side, over one keep-alive HTTPS connection: N reviews
     (default 1000) cycling through a claim CREATE, a claim DELETE and a VM CREATE naming 2
     devices; budget p99 <= 5 ms.
  b. the controller's resident memory and idle wake-ups (context switches of all its threads over
     10 s with nothing happening; shipped lease timings, bookmarks every 60 s as kube-apiserver).
  c. node cleanup: seconds from the Node's deletion until its 64 PCIDevices and 64 claims are
     gone (finalizers removed first); budget <= 2 s.

usage: bench/run_webhook.py BUILD_DIR [--reviews 1000]"""
import argparse
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "e2e"))
from device_plugin_test import stop_process  # noqa: E402
from projection_test import Api, wait_for  # noqa: E402
from controller_test import (NS, Controller, HostnameContext, claim_obj, make_ca, make_serving,  # noqa: E402
                             publish, review, vm_obj)

PREFIX = "/apis/devices.harvesterhci.io/v1beta1"


class Rest:
    """Direct calls to the emulator (kubectl per object would take minutes)."""

    def __init__(self, api):
        self.api = api

    def call(self, method, path, body=None, ctype="application/json"):
        req = urllib.request.Request(f"https://127.0.0.1:{self.api.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.api.token}", "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=self.api.ctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def device(self, node, i):
        name = f"{node}-0000{i:02x}0000"
        address = f"0000:{i:02x}:00.0"
        self.call("POST", f"{PREFIX}/pcidevices", {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDevice",
                                                   "metadata": {"name": name, "labels": {"nodename": node}}})
        self.call("PATCH", f"{PREFIX}/pcidevices/{name}/status", {"status": {
            "address": address, "vendorId": "15b3", "deviceId": "101e", "classId": "0200", "iommuGroup": str(i),
            "nodeName": node, "resourceName": f"mellanox.com/VF{i % 4}", "description": name,
            "kernelDriverInUse": "vfio-pci"}}, "application/merge-patch+json")
        return name, address


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/task/{tid}/status").read().splitlines())
        except OSError:
            continue
        total += int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reviews", type=int, default=1000)
    a = ap.parse_args()
    pcidevices = os.path.join(a.build, "pcidevices")
    with tempfile.TemporaryDirectory(prefix="pcid-bench-webhook-") as tmp:
        # Bookmarks every 60 s, as kube-apiserver sends them (the e2e tests' 1 s would count 11
        # wake-ups a second of their own in (b)).
        api = Api(tmp, extra_args=("--bookmark-interval", "60"))
        controller = None
        try:
            for f in ("deploy/crds/", "e2e/apiserver/virtualmachine-crd.yaml", "e2e/apiserver/kubevirt-crd.yaml"):
                rc, out = api.kubectl("apply", "-f", f"{ROOT}/{f}")
                if rc:
                    sys.exit(out)
            api.kubectl("create", "namespace", NS)
            rest = Rest(api)
            for node in ("b1", "b2"):
                rest.call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
            devices = {node: [rest.device(node, i) for i in range(64)] for node in ("b1", "b2")}
            for name, address in devices["b1"]:
                rest.call("POST", f"{PREFIX}/pcideviceclaims", claim_obj(name, "b1", address, finalizers=[
                    "devices.harvesterhci.io/pcidevices-agent"]))
            ca, secret = f"{tmp}/ca", f"{tmp}/secret"
            make_ca(ca)
            make_serving(ca, f"{secret}/v1")
            publish(secret, "v1")
            # The shipped lease timings (15 s / 10 s / 2 s), so that (b) is what a cluster sees.
            controller = Controller(pcidevices, api, tmp, "bench", secret, lease_args=())
            if not wait_for(controller.ready, 30):
                sys.exit("controller not ready:\n" + controller.log())

            # a. latency
            ctx = HostnameContext(f"{ca}/ca.crt")
            conn = http.client.HTTPSConnection("127.0.0.1", controller.port, context=ctx, timeout=10)
            conn.connect()
            # As Go's net/http (kube-apiserver) does: headers and body leave without Nagle's wait.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            b2_name, b2_address = devices["b2"][5]
            b1_name, b1_address = devices["b1"][7]
            vm = vm_obj("bench", [(b1_name, "mellanox.com/VF3"), (devices["b1"][8][0], "mellanox.com/VF0")])
            vm_review = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "vm", "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"},
                "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
                "name": "bench", "namespace": "default", "operation": "CREATE", "userInfo": {"username": "alice"},
                "object": vm, "oldObject": None, "dryRun": False}}).encode()
            bodies = [("/validate", review("c", "CREATE", claim_obj(b2_name, "b2", b2_address))),
                      ("/validate", review("d", "DELETE", None, claim_obj(b1_name, "b1", b1_address))),
                      ("/validate", vm_review), ("/mutate", vm_review)]
            lat = []
            for i in range(a.reviews):
                path, body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                lat.append((time.perf_counter() - t0) * 1000)
                if r.status != 200:
                    sys.exit(f"review {i}: HTTP {r.status}")
            conn.close()
            p50, p99 = percentile(lat, 50), percentile(lat, 99)

            # b. memory and idle wake-ups
            time.sleep(2)
            pid = controller.proc.pid
            s0 = switches(pid)
            time.sleep(10)
            wakeups = (switches(pid) - s0) / 10
            rss = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) / 1024

            # c. cleanup of b1
            t0 = time.monotonic()
            rest.call("DELETE", "/api/v1/nodes/b1")

            def b1_gone():
                _, devs = rest.call("GET", f"{PREFIX}/pcidevices?labelSelector=nodename%3Db1")
                _, claims = rest.call("GET", f"{PREFIX}/pcideviceclaims")
                return not devs.get("items") and not any(c["spec"]["nodeName"] == "b1" for c in claims.get("items", []))
            gone = wait_for(b1_gone, 30, 0.02)
            cleanup = time.monotonic() - t0
            _, left = rest.call("GET", f"{PREFIX}/pcidevices?labelSelector=nodename%3Db2")

            print(f"{'figure':48} {'measured':>12} {'budget':>10}")
            print(f"{'a. AdmissionReview p50 (' + str(a.reviews) + ' reviews)':48} {p50:>9.2f} ms {'':>10}")
            print(f"{'a. AdmissionReview p99':48} {p99:>9.2f} ms {'<= 5 ms':>10}")
            print(f"{'a. AdmissionReview max':48} {max(lat):>9.2f} ms {'':>10}")
            print(f"{'b. controller RSS (128 devices, 11 informers)':48} {rss:>8.1f} MiB {'':>10}")
            print(f"{'b. idle wake-ups (all threads)':48} {wakeups:>10.1f}/s {'':>10}")
            print(f"{'c. node cleanup, 64 devices + 64 claims':48} {cleanup:>10.2f} s {'<= 2 s':>10}")
            print(f"{'   (the other node keeps its devices)':48} {len(left.get('items', [])):>12} {'64':>10}")
            if not gone:
                print("controller log (tail):\n" + "".join(controller.log().splitlines(True)[-30:]))
            ok = gone and p99 <= 5 and cleanup <= 2 and len(left.get("items", [])) == 64
            return 0 if ok else 1
        finally:
            if controller:
                stop_process(controller.proc)
            api.stop()


if __name__ == "__main__":
    sys.exit(main())
