#!/usr/bin/env python3
"""The API-server emulator against the real kubectl, and its watch paths from a raw HTTP client.

    kubectl_test.py [--kubectl PATH] [--kube-version 1.32.0] [--keep]

Starts apiserver_emulator.py in a temporary directory, applies deploy/crds/ and the test KubeVirt
CRD with kubectl, and checks what an operator does: api-resources, apply/get/patch/delete of
PCIDevices and claims (printer columns, status subresource, merges, finalizers), get -w, 401,
409, 410, 415, 422, 400, 413; then watches, bookmarks, replay, selectors, cut streams and the
control API with http.client; then admission webhooks, served by an HTTPS webhook of its own
(denial, JSON patch, failurePolicy, caBundle, timeoutSeconds, DELETE, status subresource, dry run),
Leases, and one Event seen through both API groups (core/v1 and events.k8s.io/v1 share storage:
get, watch, field selectors, patches, kubectl get events and kubectl describe of a PCIDevice).
Prints each check and 'N passed, N failed'; exit 0 when all pass.
"""

import argparse
import base64
import http.client
import json
import os
import queue
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(HERE, "apiserver_emulator.py")
CRDS = os.path.join(ROOT, "deploy", "crds")
KUBEVIRT_CRD = os.path.join(HERE, "kubevirt-crd.yaml")
# Every CRD this project ships (one file each), by plural.
CRD_PLURALS = sorted(f[:-len(".yaml")] for f in os.listdir(CRDS) if f.endswith(".yaml"))

DEV = "testnode1-00003f063"
DEV_STATUS = {"address": "0000:3f:06.3", "vendorId": "8086", "deviceId": "0d4c", "classId": "0200",
              "iommuGroup": "12", "nodeName": "testnode1", "resourceName": "intel.com/ETHERNET_CONNECTION_11_I219LM",
              "description": "Ethernet controller: Intel Corporation Ethernet Connection (11) I219-LM",
              "kernelDriverInUse": "e1000e", "numaNode": 0}
PCIDEVICE_COLUMNS = ["NAME", "ADDRESS", "VENDOR ID", "DEVICE ID", "NODE NAME", "DESCRIPTION", "KERNEL DRIVER IN USE"]
CLAIM_COLUMNS = ["NAME", "ADDRESS", "NODE NAME", "USER NAME", "KERNEL DRIVER TO UNBIND", "PASSTHROUGH ENABLED"]


class Results:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok   - %s" % name, flush=True)
        else:
            self.failed += 1
            print("FAIL - %s%s" % (name, (": " + str(detail)[:1500]) if detail else ""), flush=True)
        return ok


def cells(line):
    """Split a kubectl table line into cells (columns are separated by 2+ spaces)."""
    return [c for c in re.split(r"\s{2,}", line.rstrip()) if c != ""]


def manifest(kind, name, body, extra_meta=None):
    meta = {"name": name}
    meta.update(extra_meta or {})
    return json.dumps(dict({"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": kind, "metadata": meta}, **body))


class Emulator:
    def __init__(self, workdir, kube_version, extra=()):
        self.dir = os.path.join(workdir, "emu")
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "emulator.log"), "w") as log:
            self.proc = subprocess.Popen([sys.executable, EMULATOR, "--dir", self.dir, "--http-port", "0",
                                          "--bookmark-interval", "1", "--kube-version", kube_version, *extra],
                                         stdout=subprocess.PIPE, stderr=log)
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if r else b""
        if not line:
            self.stop()
            raise SystemExit("emulator did not start; see %s/emulator.log" % workdir)
        info = json.loads(line)
        self.https, self.http, self.kubeconfig = info["https"], info["http"], info["kubeconfig"]
        self.token = open(os.path.join(self.dir, "token")).read().strip()
        self.ca = os.path.join(self.dir, "ca.crt")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by PID
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Raw:
    """http.client against the emulator: HTTPS with the generated CA, or the plain HTTP port."""

    def __init__(self, emu, tls=True):
        self.emu, self.tls = emu, tls
        self.ctx = ssl.create_default_context(cafile=emu.ca)

    def conn(self, timeout=10):
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.emu.https, context=self.ctx, timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", self.emu.http, timeout=timeout)

    def req(self, method, path, body=None, ctype="application/json", token=True, headers=None):
        c = self.conn()
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + (self.emu.token if token is True else token)
        if body is not None:
            h["Content-Type"] = ctype
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = None
        return r.status, obj, data

    def watch(self, path, timeout=10):
        c = self.conn(timeout)
        c.request("GET", path, headers={"Authorization": "Bearer " + self.emu.token})
        return c, c.getresponse()


class LineReader:
    """Lines of a chunked watch body. HTTPResponse.readline() cannot be used: its peek() turns a
    stream broken mid-flight (no terminating chunk) into a clean EOF; read1() raises IncompleteRead."""

    def __init__(self, resp):
        self.resp, self.buf = resp, b""

    def readline(self):
        while b"\n" not in self.buf:
            data = self.resp.read1(65536)
            if not data:
                return b""
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


def read_events(resp, want, seconds):
    """Read watch events until `want(events)` is true or `seconds` pass; returns (events, how the
    stream ended: 'open', 'eof' (clean end) or 'broken')."""
    events, end = [], "open"
    deadline = time.monotonic() + seconds
    if not isinstance(resp, LineReader):
        resp.lines = getattr(resp, "lines", None) or LineReader(resp)
        resp = resp.lines
    while not want(events) and time.monotonic() < deadline:
        try:
            line = resp.readline()
        except (socket.timeout, TimeoutError):
            continue
        except (http.client.IncompleteRead, ConnectionError, OSError):
            end = "broken"
            break
        if not line:
            end = "eof"
            break
        events.append(json.loads(line))
    return events, end


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", default=shutil.which("kubectl") or "/usr/bin/kubectl")
    ap.add_argument("--kube-version", default="1.32.0", help="what the emulator's /version says")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    t = Results()
    work = tempfile.mkdtemp(prefix="apiserver-emu-test-")
    home = os.path.join(work, "home")
    os.makedirs(home)
    emu = Emulator(work, args.kube_version)
    env = dict(os.environ, HOME=home, KUBECONFIG=emu.kubeconfig)
    env.pop("KUBECACHEDIR", None)

    def kubectl(*a, input=None, timeout=60):
        p = subprocess.run([args.kubectl, *a], input=input, capture_output=True, text=True, env=env,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    raw, plain = Raw(emu), Raw(emu, tls=False)
    try:
        run(t, kubectl, raw, plain, emu, args)
        legacy_discovery(t, args.kubectl, work)
    except Exception as e:  # noqa: BLE001 - a crash is one more failure, reported
        import traceback
        traceback.print_exc()
        t.check("test ran to the end", False, repr(e))
    finally:
        emu.stop()
        if args.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (t.passed, t.failed))
    return 0 if t.failed == 0 and t.passed > 0 else 1


def run(t, kubectl, raw, plain, emu, args):
    # --- CRDs and discovery
    rc, out, err = kubectl("version")
    t.check("kubectl version reaches the server", rc == 0 and "Server Version: " in out and
            "v" + args.kube_version in out, out + err)
    rc, out, err = kubectl("apply", "-f", CRDS)
    t.check(f"kubectl apply -f deploy/crds/ creates {len(CRD_PLURALS)} CRDs",
            rc == 0 and out.count(" created") == len(CRD_PLURALS), out + err)
    rc, out, err = kubectl("apply", "-f", KUBEVIRT_CRD)
    t.check("kubectl apply -f kubevirt-crd.yaml", rc == 0 and "kubevirts.kubevirt.io created" in out, out + err)
    rc, out, err = kubectl("get", "crd", "pcidevices.devices.harvesterhci.io", "-o",
                           "jsonpath={.status.conditions[?(@.type==\"Established\")].status}")
    t.check("CRD is Established", rc == 0 and out.strip() == "True", out + err)
    rc, out, err = kubectl("apply", "-f", CRDS)
    t.check("re-applying the CRDs changes nothing",
            rc == 0 and out.count(" unchanged") == len(CRD_PLURALS), out + err)
    rc, out, err = kubectl("api-resources")
    rows = {c[0]: c for c in (cells(l) for l in out.splitlines()[1:]) if c}
    want = {"pcidevices": "PCIDevice", "pcideviceclaims": "PCIDeviceClaim", "usbdevices": "USBDevice",
            "usbdeviceclaims": "USBDeviceClaim"}
    ok = rc == 0 and all(n in rows and rows[n][-1] == k and rows[n][-2] == "false" and
                         rows[n][-3] == "devices.harvesterhci.io/v1beta1" for n, k in want.items())
    ok = ok and "kubevirts" in rows and rows["kubevirts"][1:] == ["kv,kvs", "kubevirt.io/v1", "true", "KubeVirt"]
    t.check("kubectl api-resources lists the CRDs (cluster-scoped, v1beta1) and KubeVirt", ok, out + err)
    rc, out, err = kubectl("explain", "pcidevice.status")
    t.check("kubectl explain pcidevice.status (OpenAPI v3)", rc == 0 and "numaNode" in out and
            "kernelDriverInUse" in out, out + err)

    # --- PCIDevice: create (status dropped), status patch, printer columns
    rc, out, err = kubectl("apply", "-f", "-", input=manifest("PCIDevice", DEV, {"status": DEV_STATUS},
                                                              {"labels": {"nodename": "testnode1"}}))
    t.check("kubectl apply creates a PCIDevice", rc == 0 and "pcidevice.devices.harvesterhci.io/%s created" % DEV in out,
            out + err)
    rc, out, err = kubectl("get", "pcidevice", DEV, "-o", "json")
    obj = json.loads(out) if rc == 0 else {}
    t.check("status is ignored on create (status subresource)", rc == 0 and "status" not in obj, out + err)
    t.check("metadata: uid, creationTimestamp, generation 1, resourceVersion",
            all(obj.get("metadata", {}).get(k) for k in ("uid", "creationTimestamp", "resourceVersion"))
            and obj["metadata"].get("generation") == 1, out)
    rc, out, err = kubectl("patch", "pcidevice", DEV, "--subresource=status", "--type=merge",
                           "-p", json.dumps({"status": DEV_STATUS}))
    t.check("kubectl patch --subresource=status", rc == 0 and "patched" in out, out + err)
    rc, out, err = kubectl("get", "pcidevices")
    lines = out.splitlines()
    t.check("kubectl get pcidevices prints the printer columns", rc == 0 and lines and cells(lines[0]) == PCIDEVICE_COLUMNS,
            out + err)
    row = [DEV, "0000:3f:06.3", "8086", "0d4c", "testnode1", DEV_STATUS["description"], "e1000e"]
    t.check("kubectl get pcidevices row has the values", len(lines) == 2 and cells(lines[1]) == row, out)
    rc, out, err = kubectl("get", "pcidevices", "-l", "nodename=testnode1", "--no-headers")
    t.check("label selector nodename=testnode1 finds it", rc == 0 and len(out.splitlines()) == 1, out + err)
    rc, out, err = kubectl("get", "pcidevices", "-l", "nodename notin (testnode1)")
    t.check("label selector notin excludes it", rc == 0 and out.strip() == "" and "No resources found" in err, out + err)
    rc, out, err = kubectl("get", "pcidevices", "-l", "nodename,!other", "-o", "name")
    t.check("label selector exists/!exists", rc == 0 and out.strip() == "pcidevice.devices.harvesterhci.io/" + DEV,
            out + err)
    rc, out, err = kubectl("get", "pcidevice", DEV, "-o", "json")
    obj = json.loads(out) if rc == 0 else {}
    t.check("kubectl get pcidevice -o json has the status", obj.get("status") == DEV_STATUS and
            obj.get("metadata", {}).get("labels") == {"nodename": "testnode1"} and obj.get("kind") == "PCIDevice",
            out + err)
    rv_before = obj.get("metadata", {}).get("resourceVersion")
    rc, out, err = kubectl("get", "pcidevice", DEV, "-o", "yaml")
    t.check("kubectl get -o yaml", rc == 0 and "kernelDriverInUse: e1000e" in out, out + err)

    # --- apply again with a change: a three-way merge patch, status untouched
    rc, out, err = kubectl("apply", "-f", "-", input=manifest("PCIDevice", DEV, {"status": DEV_STATUS},
                                                              {"labels": {"nodename": "testnode1", "extra": "yes"}}))
    t.check("kubectl apply with a change says configured", rc == 0 and "configured" in out, out + err)
    rc, out, err = kubectl("get", "pcidevice", DEV, "-o", "json")
    obj = json.loads(out) if rc == 0 else {}
    t.check("the merge kept the status and added the label", obj.get("status") == DEV_STATUS and
            obj["metadata"]["labels"] == {"nodename": "testnode1", "extra": "yes"} and
            int(obj["metadata"]["resourceVersion"]) > int(rv_before or 0) and obj["metadata"]["generation"] == 1, out)
    rc, out, err = kubectl("patch", "pcidevice", DEV, "-p", '{"metadata":{"labels":{"x":"y"}}}')
    t.check("strategic merge patch on a CR is 415 (as the real server)", rc != 0 and
            "application/merge-patch+json" in err and "unknown format" in err, out + err)
    rc, out, err = kubectl("patch", "pcidevice", DEV, "--subresource=status", "--type=merge",
                           "-p", '{"status":{"numaNode":"zero"}}')
    t.check("a wrongly typed status field is 422 Invalid", rc != 0 and "status.numaNode" in err and
            "must be of type integer" in err, out + err)
    rc, out, err = kubectl("patch", "pcidevice", DEV, "--type=json",
                           "-p", '[{"op":"add","path":"/metadata/annotations/note","value":"json-patch"}]')
    rc2, out2, _ = kubectl("get", "pcidevice", DEV, "-o", "jsonpath={.metadata.annotations.note}")
    t.check("kubectl patch --type=json", rc == 0 and out2 == "json-patch", out + err + out2)

    # --- wrong resourceVersion on replace -> 409
    rc, out, err = kubectl("get", "pcidevice", DEV, "-o", "json")
    stale = json.loads(out)
    stale["metadata"]["resourceVersion"] = "1"
    rc, out, err = kubectl("replace", "-f", "-", input=json.dumps(stale))
    t.check("kubectl replace with a stale resourceVersion is 409 Conflict", rc != 0 and
            "the object has been modified" in err, out + err)

    # --- PCIDeviceClaim with a finalizer
    claim = {"spec": {"address": "0000:3f:06.3", "nodeName": "testnode1", "userName": "admin"}}
    fin = {"finalizers": ["wrangler.cattle.io/PCIDeviceClaimOnRemove"]}
    rc, out, err = kubectl("apply", "-f", "-", input=manifest("PCIDeviceClaim", DEV, claim, fin))
    t.check("kubectl apply creates a PCIDeviceClaim", rc == 0 and "created" in out, out + err)
    rc, out, err = kubectl("patch", "pcideviceclaim", DEV, "--subresource=status", "--type=merge",
                           "-p", '{"status":{"kernelDriverToUnbind":"e1000e","passthroughEnabled":true}}')
    rc, out, err = kubectl("get", "pcideviceclaims")
    lines = out.splitlines()
    t.check("kubectl get pcideviceclaims prints its columns", rc == 0 and cells(lines[0]) == CLAIM_COLUMNS and
            cells(lines[1]) == [DEV, "0000:3f:06.3", "testnode1", "admin", "e1000e", "true"], out + err)
    claim["spec"]["userName"] = "bob"
    rc, out, err = kubectl("apply", "-f", "-", input=manifest("PCIDeviceClaim", DEV, claim, fin))
    rc2, out2, _ = kubectl("get", "pcideviceclaim", DEV, "-o", "json")
    obj = json.loads(out2) if rc2 == 0 else {}
    t.check("a spec change through apply bumps generation", rc == 0 and "configured" in out and
            obj.get("spec", {}).get("userName") == "bob" and obj["metadata"]["generation"] == 2 and
            obj.get("status", {}).get("passthroughEnabled") is True, out + err + out2)
    rc, out, err = kubectl("delete", "pcideviceclaim", DEV, "--wait=false")
    t.check("kubectl delete pcideviceclaim (finalizer set)", rc == 0 and "deleted" in out, out + err)
    rc, out, err = kubectl("get", "pcideviceclaim", DEV, "-o", "json")
    obj = json.loads(out) if rc == 0 else {}
    t.check("the claim stays, with a deletionTimestamp", obj.get("metadata", {}).get("deletionTimestamp"), out + err)
    rc, out, err = kubectl("patch", "pcideviceclaim", DEV, "--type=merge",
                           "-p", '{"metadata":{"finalizers":["another"]}}')
    t.check("no new finalizers once deleting (422)", rc != 0 and "no new finalizers" in err, out + err)
    # kubectl delete (waiting) watches with fieldSelector=metadata.name until the object is gone.
    waiter = subprocess.Popen([args.kubectl, "delete", "pcideviceclaim", DEV, "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, HOME=os.path.join(os.path.dirname(emu.dir), "home"),
                                       KUBECONFIG=emu.kubeconfig))
    time.sleep(1.5)
    still = waiter.poll() is None
    rc, out, err = kubectl("patch", "pcideviceclaim", DEV, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    t.check("removing the finalizer by patch", rc == 0 and "patched" in out, out + err)
    try:
        wout, werr = waiter.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        waiter.kill()
        wout, werr = waiter.communicate()
    t.check("a waiting kubectl delete returns once the finalizer is gone", still and waiter.returncode == 0,
            "%s %s %s" % (still, wout, werr))
    rc, out, err = kubectl("get", "pcideviceclaim", DEV)
    t.check("the claim is gone", rc != 0 and "NotFound" in err, out + err)

    # --- kubectl get -w sees an update
    w = subprocess.Popen([args.kubectl, "get", "pcidevices", "-w"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, HOME=os.path.join(os.path.dirname(emu.dir), "home"),
                                  KUBECONFIG=emu.kubeconfig))
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in w.stdout], daemon=True).start()
    seen = []

    def wait_line(pred, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if pred(seen[-1]):
                return True
        return False
    first = wait_line(lambda l: l.startswith(DEV), 20)
    rc, out, err = kubectl("patch", "pcidevice", DEV, "--subresource=status", "--type=merge",
                           "-p", '{"status":{"kernelDriverInUse":"vfio-pci"}}')
    upd = wait_line(lambda l: l.startswith(DEV) and "vfio-pci" in l, 20)
    w.terminate()
    try:
        w.wait(10)
    except subprocess.TimeoutExpired:
        w.kill()
    t.check("kubectl get -w prints the update", first and upd, "".join(seen))

    # --- KubeVirt CR in a namespace
    rc, out, err = kubectl("create", "namespace", "harvester-system")
    kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt",
                                                                          "namespace": "harvester-system"},
          "spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": []}}}}
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(kv))
    t.check("namespace and a KubeVirt CR", rc == 0 and "created" in out, out + err)
    rc, out, err = kubectl("patch", "kv", "kubevirt", "-n", "harvester-system", "--type=merge", "-p", json.dumps(
        {"spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [
            {"pciVendorSelector": "8086:0d4c", "resourceName": "intel.com/X", "externalResourceProvider": True}]}}}}))
    rc, out, err = kubectl("get", "kv", "-A", "-o", "json")
    items = json.loads(out)["items"] if rc == 0 else []
    t.check("KubeVirt spec kept (preserve-unknown-fields) and listed across namespaces", len(items) == 1 and
            items[0]["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"][0]["resourceName"] ==
            "intel.com/X", out + err)

    # --- auth
    rc, out, err = kubectl("--token", "wrong", "get", "pcidevices")
    t.check("kubectl with a wrong token: Unauthorized", rc != 0 and "Unauthorized" in err, out + err)
    st, obj, _ = raw.req("GET", "/apis/devices.harvesterhci.io/v1beta1/pcidevices", token=False)
    t.check("no token: 401 Status", st == 401 and obj and obj.get("kind") == "Status" and obj.get("code") == 401, obj)
    st, obj, _ = plain.req("GET", "/api/v1/namespaces", token="nope")
    t.check("wrong token on plain HTTP: 401", st == 401, obj)

    # --- server-side dry run and server-side apply
    probe = manifest("PCIDevice", "probe-0000000000", {}, {"labels": {"nodename": "probe"}})
    rc, out, err = kubectl("apply", "-f", "-", "--dry-run=server", input=probe)
    rc2, out2, err2 = kubectl("get", "pcidevice", "probe-0000000000")
    t.check("kubectl apply --dry-run=server writes nothing", rc == 0 and "server dry run" in out and rc2 != 0 and
            "NotFound" in err2, out + err + out2 + err2)
    rc, out, err = kubectl("apply", "--server-side", "-f", "-", input=probe)
    rc2, out2, err2 = kubectl("apply", "--server-side", "-f", "-", input=probe)
    rc3, out3, err3 = kubectl("delete", "pcidevice", "probe-0000000000")
    t.check("kubectl apply --server-side creates, re-applies, deletes", rc == rc2 == rc3 == 0 and
            "serverside-applied" in out and "deleted" in out3, out + err + out2 + err2 + out3 + err3)

    raw_checks(t, raw, plain, emu)
    webhook_checks(t, kubectl, raw, emu, os.path.dirname(emu.dir))
    event_checks(t, kubectl, raw)


def legacy_discovery(t, kubectl_path, work):
    """kubectl against an emulator that serves only the legacy discovery documents."""
    emu = Emulator(os.path.join(work, "legacy"), "1.32.0", ["--no-aggregated-discovery"])
    env = dict(os.environ, HOME=os.path.join(work, "legacy", "home"), KUBECONFIG=emu.kubeconfig)
    os.makedirs(env["HOME"], exist_ok=True)
    try:
        def kubectl(*a):
            p = subprocess.run([kubectl_path, *a], capture_output=True, text=True, env=env, timeout=60)
            return p.returncode, p.stdout, p.stderr
        rc, out, err = kubectl("apply", "-f", CRDS)
        rc2, out2, err2 = kubectl("api-resources", "--api-group=devices.harvesterhci.io", "-o", "name")
        rc3, out3, err3 = kubectl("get", "pcidevices")
        t.check("legacy discovery only: apply CRDs, api-resources, get", rc == rc2 == rc3 == 0 and
                out.count(" created") == len(CRD_PLURALS) and sorted(out2.split()) == sorted(
                    "%s.devices.harvesterhci.io" % p for p in CRD_PLURALS) and
                "No resources found" in err3, out + err + out2 + err2 + out3 + err3)
        raw = Raw(emu)
        st, obj, _ = raw.req("GET", "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;"
                                                                "as=APIGroupDiscoveryList,application/json"})
        t.check("legacy mode answers an aggregated request with APIGroupList", st == 200 and
                obj["kind"] == "APIGroupList", obj)
    finally:
        emu.stop()


def raw_checks(t, raw, plain, emu):
    base = "/apis/devices.harvesterhci.io/v1beta1/pcidevices"
    st, obj, _ = raw.req("GET", "/apis/devices.harvesterhci.io/v1beta1")
    res = {r["name"]: r for r in (obj or {}).get("resources", [])}
    t.check("APIResourceList: verbs, scope, kind, /status entry", st == 200 and
            res["pcidevices"]["namespaced"] is False and res["pcidevices"]["kind"] == "PCIDevice" and
            "watch" in res["pcidevices"]["verbs"] and res["pcidevices/status"]["verbs"] == ["get", "patch", "update"],
            obj)
    st, obj, _ = raw.req("GET", "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;"
                                                            "as=APIGroupDiscoveryList,application/json"})
    groups = [i["metadata"].get("name") for i in (obj or {}).get("items", [])]
    t.check("aggregated discovery (apidiscovery.k8s.io/v2) lists every group", st == 200 and
            obj["kind"] == "APIGroupDiscoveryList" and {"apiextensions.k8s.io", "devices.harvesterhci.io",
                                                        "kubevirt.io"} <= set(groups), obj)
    st, dev, _ = raw.req("GET", base + "/" + DEV)
    rv = dev["metadata"]["resourceVersion"]

    # PUT preconditions
    stale = json.loads(json.dumps(dev))
    stale["metadata"]["resourceVersion"] = str(int(rv) - 1)
    st, obj, _ = raw.req("PUT", base + "/" + DEV, stale)
    t.check("PUT with a wrong resourceVersion: 409 Conflict Status", st == 409 and obj["reason"] == "Conflict", obj)
    unconditional = json.loads(json.dumps(dev))
    del unconditional["metadata"]["resourceVersion"]
    unconditional["metadata"]["labels"]["put"] = "1"
    unconditional["status"]["kernelDriverInUse"] = "ignored"
    st, obj, _ = raw.req("PUT", base + "/" + DEV, unconditional)
    t.check("PUT without resourceVersion is unconditional and ignores .status", st == 200 and
            obj["metadata"]["labels"].get("put") == "1" and obj["status"]["kernelDriverInUse"] == "vfio-pci", obj)
    st, same, _ = raw.req("PUT", base + "/" + DEV, obj)
    t.check("a no-op PUT keeps the resourceVersion", st == 200 and
            same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], same)
    st, obj, _ = raw.req("PATCH", base + "/" + DEV, {"metadata": {"resourceVersion": "2"}},
                         "application/merge-patch+json")
    t.check("a resourceVersion inside a patch is a precondition (409)", st == 409, obj)
    st, obj, _ = raw.req("POST", base, b'{"apiVersion": "devices.harvesterhci.io/v1beta1", "kind":')
    t.check("malformed JSON: 400", st == 400 and obj["reason"] == "BadRequest", obj)
    st, obj, _ = raw.req("POST", base, b"{" + b" " * (3 * 1024 * 1024 + 10) + b"}")
    t.check("a body over 3 MiB: 413", st == 413, obj)
    st, obj, _ = raw.req("POST", base, {"metadata": {"name": DEV}})
    t.check("create of an existing name: 409 AlreadyExists", st == 409 and obj["reason"] == "AlreadyExists", obj)
    st, obj, _ = raw.req("POST", base, {"metadata": {"generateName": "gen-"}, "spec": {"dropped": 1}},
                         headers=None)
    t.check("generateName, and unknown fields pruned", st == 201 and obj["metadata"]["name"].startswith("gen-") and
            len(obj["metadata"]["name"]) == 9 and obj.get("spec") == {}, obj)
    gen = obj["metadata"]["name"]
    st, obj, _ = raw.req("POST", base + "?fieldValidation=Strict", {"metadata": {"name": "strict"}, "spec": {"x": 1}})
    t.check("fieldValidation=Strict rejects unknown fields (400)", st == 400 and 'unknown field "spec.x"' in obj["message"],
            obj)
    st, obj, _ = raw.req("GET", base + "?fieldSelector=metadata.name%3D" + gen)
    t.check("fieldSelector metadata.name", st == 200 and [i["metadata"]["name"] for i in obj["items"]] == [gen], obj)
    st, obj, _ = raw.req("GET", base + "?limit=1")
    st2, obj2, _ = raw.req("GET", base + "?limit=1&continue=" + (obj or {}).get("metadata", {}).get("continue", ""))
    t.check("limit/continue pages", st == 200 and st2 == 200 and len(obj["items"]) == 1 and len(obj2["items"]) == 1 and
            obj["items"][0]["metadata"]["name"] != obj2["items"][0]["metadata"]["name"] and
            obj2["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], [obj, obj2])

    # Watch: replay from an RV, bookmarks, label selector transitions, clean timeout, cut, 410.
    st, lst, _ = raw.req("GET", base)
    list_rv = lst["metadata"]["resourceVersion"]
    raw.req("PATCH", base + "/" + gen, {"metadata": {"labels": {"nodename": "testnode1"}}}, "application/merge-patch+json")
    c, r = raw.watch(base + "?watch=1&allowWatchBookmarks=true&labelSelector=nodename%3Dtestnode1&resourceVersion="
                     + list_rv)
    ev, end = read_events(r, lambda e: len(e) >= 1, 5)
    t.check("watch from a list RV replays what came after (label now matches: ADDED)", ev and ev[0]["type"] == "ADDED"
            and ev[0]["object"]["metadata"]["name"] == gen, ev)
    raw.req("PATCH", base + "/" + gen, {"metadata": {"labels": {"nodename": "elsewhere"}}}, "application/merge-patch+json")
    ev, end = read_events(r, lambda e: any(x["type"] == "DELETED" for x in e), 5)
    t.check("an object leaving the selector is DELETED for that watch", ev and ev[-1]["type"] == "DELETED", ev)
    ev, end = read_events(r, lambda e: any(x["type"] == "BOOKMARK" for x in e), 5)
    bm = [x for x in ev if x["type"] == "BOOKMARK"]
    st, stats, _ = raw.req("GET", "/emulator/stats")
    t.check("periodic BOOKMARK with the current resourceVersion", bm and
            int(bm[0]["object"]["metadata"]["resourceVersion"]) == stats["resourceVersion"] and
            bm[0]["object"]["kind"] == "PCIDevice", ev)
    t.check("stats count the open watch", stats["watches_open"] >= 1, stats)
    st, obj, _ = plain.req("POST", "/emulator/cut-watches")
    ev, end = read_events(r, lambda e: False, 5)
    t.check("cut-watches breaks the stream mid-flight", st == 200 and obj["cut"] >= 1 and end == "broken", [obj, end])
    c.close()
    c, r = raw.watch(base + "?watch=1&timeoutSeconds=1&resourceVersion=" + str(stats["resourceVersion"]))
    ev, end = read_events(r, lambda e: False, 5)
    t.check("timeoutSeconds ends the watch cleanly", ev == [] and end == "eof", [ev, end])
    c.close()
    c, r = raw.watch(base + "?watch=1&timeoutSeconds=5")
    ev, end = read_events(r, lambda e: len(e) >= 2, 5)
    t.check("watch without resourceVersion starts with ADDED for each object", [x["type"] for x in ev] == ["ADDED"] * 2,
            ev)
    c.close()
    c, r = raw.watch(base + "?watch=1&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
    ev, end = read_events(r, lambda e: any(x["type"] == "BOOKMARK" for x in e), 5)
    t.check("sendInitialEvents: ADDED, then a bookmark marking the end", [x["type"] for x in ev] ==
            ["ADDED", "ADDED", "BOOKMARK"] and ev[-1]["object"]["metadata"]["annotations"] ==
            {"k8s.io/initial-events-end": "true"}, ev)
    c.close()
    st, obj, _ = plain.req("POST", "/emulator/compact")
    st, lst2, _ = raw.req("GET", base + "?resourceVersion=%s&resourceVersionMatch=Exact" % list_rv)
    t.check("list at a compacted RV with match=Exact: 410", st == 410 and lst2["reason"] == "Expired", lst2)
    st, lst2, _ = raw.req("GET", base + "?resourceVersion=%s&resourceVersionMatch=NotOlderThan" % list_rv)
    t.check("list at an old RV with NotOlderThan: current state", st == 200, lst2)
    c, r = raw.watch(base + "?watch=1&resourceVersion=" + list_rv)
    ev, end = read_events(r, lambda e: False, 5)
    t.check("watch from a compacted RV: one ERROR event with a 410 Status", r.status == 200 and len(ev) == 1 and
            ev[0]["type"] == "ERROR" and ev[0]["object"]["code"] == 410 and end == "eof", ev)
    c.close()

    # Delete with finalizers through the raw API: MODIFIED (deletionTimestamp) then DELETED.
    now_rv = raw.req("GET", base)[1]["metadata"]["resourceVersion"]
    raw.req("PATCH", base + "/" + gen, {"metadata": {"finalizers": ["test/hold"]}}, "application/merge-patch+json")
    st, obj, _ = raw.req("DELETE", base + "/" + gen)
    held = st == 200 and obj["metadata"].get("deletionTimestamp")
    st, obj, _ = raw.req("PATCH", base + "/" + gen, [{"op": "remove", "path": "/metadata/finalizers"}],
                         "application/json-patch+json")
    c, r = raw.watch(base + "?watch=1&resourceVersion=" + now_rv)
    ev, end = read_events(r, lambda e: len(e) >= 3, 5)
    t.check("finalizer flow: MODIFIED, MODIFIED (deletionTimestamp), DELETED", held and
            [x["type"] for x in ev] == ["MODIFIED", "MODIFIED", "DELETED"] and
            ev[1]["object"]["metadata"].get("deletionTimestamp"), ev)
    c.close()

    # Control API: injected failures, garbage, outage, stats.
    plain.req("POST", "/emulator/reset-stats")
    plain.req("POST", "/emulator/fail?verb=PUT&count=1&code=500")
    st1, obj1, _ = raw.req("PUT", base + "/" + DEV, raw.req("GET", base + "/" + DEV)[1])
    st2, _, _ = raw.req("PUT", base + "/" + DEV, raw.req("GET", base + "/" + DEV)[1])
    t.check("fail?verb=PUT&count=1&code=500: one 500, then normal", st1 == 500 and obj1["reason"] == "InternalError"
            and st2 == 200, [st1, st2])
    plain.req("POST", "/emulator/fail?verb=list&count=1&code=409&resource=pcidevices")
    st1, obj1, _ = raw.req("GET", base)
    t.check("fail by k8s verb and resource (409)", st1 == 409 and obj1["reason"] == "Conflict", obj1)
    plain.req("POST", "/emulator/garbage?count=1&verb=list&resource=pcidevices")
    st1, obj1, data = raw.req("GET", base)
    st2, obj2, _ = raw.req("GET", base)
    t.check("garbage?count=1: one broken JSON body", st1 == 200 and obj1 is None and data and obj2 is not None, data[:80])
    st, stats, _ = plain.req("GET", "/emulator/stats")
    t.check("stats: by verb, by resource, writes (failed requests count too)", stats["by_verb"] ==
            {"get": 2, "update": 2, "list": 3} and stats["writes"] == 2 and stats["by_method"] == {"GET": 5, "PUT": 2}
            and stats["by_resource"]["pcidevices"] == {"get": 2, "update": 2, "list": 3} and
            stats["writes_by_resource"] == {"pcidevices": 2}, stats)
    plain.req("POST", "/emulator/down?seconds=1.5")
    st1, obj1, _ = raw.req("GET", base)
    time.sleep(2)
    st2, _, _ = raw.req("GET", base)
    t.check("down?seconds=N answers 503, then recovers", st1 == 503 and obj1["reason"] == "ServiceUnavailable" and
            st2 == 200, [st1, st2])
    plain.req("POST", "/emulator/down?seconds=3&mode=refuse")
    refused, deadline = False, time.monotonic() + 2.5
    while not refused and time.monotonic() < deadline:
        try:
            raw.req("GET", base)
            time.sleep(0.1)
        except ConnectionRefusedError:
            refused = True
        except OSError:
            time.sleep(0.1)  # a keep-alive cut while closing: try again
    deadline, back = time.monotonic() + 10, False
    while time.monotonic() < deadline and not back:
        time.sleep(0.3)
        try:
            back = raw.req("GET", base)[0] == 200
        except OSError:
            pass
    t.check("down?mode=refuse refuses connections, then the port comes back", refused and back, [refused, back])
    old_token = emu.token
    st, obj, _ = plain.req("POST", "/emulator/rotate-token?keep-old=1")
    emu.token = open(os.path.join(emu.dir, "token")).read().strip()
    both = st == 200 and emu.token == obj["token"] != old_token and raw.req("GET", base)[0] == 200 and \
        raw.req("GET", base, token=old_token)[0] == 200
    st, obj, _ = plain.req("POST", "/emulator/rotate-token")
    emu.token = open(os.path.join(emu.dir, "token")).read().strip()
    t.check("rotate-token: new token in DIR/token; old kept on request, then refused", both and
            raw.req("GET", base)[0] == 200 and raw.req("GET", base, token=old_token)[0] == 401 and
            obj["token"] in open(emu.kubeconfig).read(), obj)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st, stats, _ = plain.req("GET", "/emulator/stats")
        if stats["watches_open"] == 0:
            break
        time.sleep(0.3)
    t.check("no watch left open", stats["watches_open"] == 0, stats)


# --- admission webhooks: a tiny HTTPS webhook server of our own, called through the emulator.

class Hook:
    """An HTTPS admission webhook for `hook.test-ns.svc` (a CA of its own): /validate denies objects
    labelled deny=yes (403, with a warning) or deny=bare (no status at all), /mutate adds the label
    mutated=yes (not on DELETE), /mutate-any patches whatever it gets, /slow answers after 4 s,
    anything else allows; every AdmissionReview request is recorded as (path, request)."""

    def __init__(self, d):
        def run(*cmd):
            subprocess.run(["openssl", *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p = lambda n: os.path.join(d, n)  # noqa: E731
        os.makedirs(d, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        for ca in ("ca", "other-ca"):  # other-ca signs nothing: a caBundle that does not match
            run("req", "-x509", *ec, "-keyout", p(ca + ".key"), "-out", p(ca + ".crt"), "-subj", "/CN=" + ca,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        run("req", *ec[:-2], "-keyout", p("hook.key"), "-out", p("hook.csr"), "-subj", "/CN=hook")
        with open(p("hook.ext"), "w") as f:
            f.write("subjectAltName=DNS:hook.test-ns.svc\nextendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", p("hook.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
            "-out", p("hook.crt"), "-days", "2", "-extfile", p("hook.ext"))
        self.ca, self.other_ca = (base64.b64encode(open(p(n), "rb").read()).decode()
                                  for n in ("ca.crt", "other-ca.crt"))
        self.reviews, hook = [], self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["request"]
                path = self.path.split("?")[0]
                hook.reviews.append((self.path, req))
                resp = {"uid": req["uid"], "allowed": True}
                labels = ((req.get("object") or {}).get("metadata") or {}).get("labels") or {}
                if path == "/validate" and labels.get("deny") == "yes":
                    resp.update(allowed=False, warnings=['saw "deny"'], status={
                        "code": 403, "reason": "Forbidden", "message": "label deny=yes is not allowed"})
                elif path == "/validate" and labels.get("deny") == "bare":
                    resp["allowed"] = False
                elif path == "/mutate-any" or (path == "/mutate" and req["object"] is not None):
                    ops = [{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]
                    resp.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
                elif path == "/slow":
                    time.sleep(4)
                data = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": resp}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller gave up (timeoutSeconds)

        ThreadingHTTPServer.daemon_threads = True
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(p("hook.crt"), p("hook.key"))
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def seen(self, path, pred=lambda r: True):
        return [r for p, r in list(self.reviews) if p.split("?")[0] == path and pred(r)]


def webhook_config(kind, name, hooks):
    return json.dumps({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind + "WebhookConfiguration",
                       "metadata": {"name": name}, "webhooks": hooks})


def a_hook(name, path, ca, **extra):
    h = {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
         "clientConfig": {"service": {"namespace": "test-ns", "name": "hook", "path": path}, "caBundle": ca},
         "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": ["configmaps"], "scope": "Namespaced"}]}
    h.update(extra)
    return h


def webhook_checks(t, kubectl, raw, emu, work):
    hook = Hook(os.path.join(work, "hook"))
    try:
        webhook_run(t, kubectl, raw, hook)
    finally:
        for kind, name in (("validating", "cm-policy"), ("mutating", "cm-labels")):
            kubectl("delete", kind + "webhookconfiguration", name, "--ignore-not-found")
        hook.stop()


def webhook_run(t, kubectl, raw, hook):
    st, _, _ = raw.req("POST", "/emulator/service?namespace=test-ns&name=hook&address=127.0.0.1:%d" % hook.port)
    kubectl("create", "namespace", "hooked")
    kubectl("label", "namespace", "hooked", "hooks=on")
    on = {"matchLabels": {"hooks": "on"}}
    bad = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
           "metadata": {"name": "bad"}, "webhooks": [{"name": "bad.hook.test", "admissionReviewVersions": ["v1"],
                                                      "clientConfig": {"url": "http://127.0.0.1:1/x"}}]}
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(bad))
    t.check("webhook configuration validation: 422 Invalid (sideEffects, https only)", st == 200 and rc != 0 and
            "is invalid" in err and "webhooks[0].sideEffects: Required value: must specify one of None, "
            "NoneOnDryRun" in err and "'https' is the only allowed URL scheme" in err, out + err)
    validating = [a_hook("deny.hook.test", "/validate", hook.ca, namespaceSelector=on),
                  a_hook("wrongca.hook.test", "/validate", hook.other_ca,
                         objectSelector={"matchLabels": {"wrongca": "yes"}}),
                  a_hook("slow.hook.test", "/slow", hook.ca, timeoutSeconds=2,
                         objectSelector={"matchExpressions": [{"key": "slow", "operator": "Exists"}]}),
                  a_hook("status.hook.test", "/record", hook.ca, rules=[{
                      "apiGroups": ["devices.harvesterhci.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                      "resources": ["pcidevices/status"]}])]
    mutating = [a_hook("mutate.hook.test", "/mutate", hook.ca, objectSelector={"matchLabels": {"mutate": "yes"}}),
                a_hook("patchdelete.hook.test", "/mutate-any", hook.ca, objectSelector={
                    "matchLabels": {"patchdelete": "yes"}}, rules=[{"apiGroups": [""], "apiVersions": ["v1"],
                                                                    "operations": ["DELETE"], "resources": ["*"]}])]
    rc, out, err = kubectl("apply", "-f", "-", input=webhook_config("Validating", "cm-policy", validating))
    rc2, out2, err2 = kubectl("apply", "-f", "-", input=webhook_config("Mutating", "cm-labels", mutating))
    rc3, out3, err3 = kubectl("get", "validatingwebhookconfigurations")
    t.check("kubectl apply of Validating/MutatingWebhookConfigurations; get shows WEBHOOKS", rc == rc2 == rc3 == 0
            and "created" in out and "created" in out2 and cells(out3.splitlines()[1])[:2] == ["cm-policy", "4"],
            out + err + out2 + err2 + out3 + err3)
    rc, out, err = kubectl("get", "validatingwebhookconfiguration", "cm-policy", "-o", "json")
    h0 = json.loads(out)["webhooks"][0] if rc == 0 else {}
    t.check("webhook defaults: failurePolicy Fail, matchPolicy Equivalent, timeoutSeconds 10, port 443",
            h0.get("failurePolicy") == "Fail" and h0.get("matchPolicy") == "Equivalent" and
            h0.get("timeoutSeconds") == 10 and h0["clientConfig"]["service"].get("port") == 443, out + err)

    def cm(name, labels):
        return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"},
                           "metadata": {"name": name, "namespace": "hooked", "labels": labels}})
    # A validating denial, through kubectl and raw (code, Status, Warning header, the user told).
    rc, out, err = kubectl("apply", "-f", "-", input=cm("denied", {"deny": "yes"}))
    t.check("validating denial: kubectl shows the webhook's message", rc != 0 and 'Error from server (Forbidden): '
            'error when creating "STDIN": admission webhook "deny.hook.test" denied the request: label deny=yes is '
            'not allowed' in err and 'Warning: saw "deny"' in err, out + err)
    c = raw.conn()
    c.request("POST", "/api/v1/namespaces/hooked/configmaps", body=cm("denied", {"deny": "yes"}),
              headers={"Authorization": "Bearer " + raw.emu.token, "Content-Type": "application/json",
                       "X-Emulator-User": "alice"})
    r = c.getresponse()
    obj, warn = json.loads(r.read()), r.getheader("Warning")
    c.close()
    last = hook.seen("/validate")[-1]
    t.check("denial: HTTP 403, Status reason Forbidden, Warning header, userInfo from X-Emulator-User",
            r.status == 403 and obj["reason"] == "Forbidden" and obj["code"] == 403 and obj["message"] ==
            'admission webhook "deny.hook.test" denied the request: label deny=yes is not allowed' and
            warn == '299 - "saw \\"deny\\""' and last["userInfo"]["username"] == "alice" and
            last["operation"] == "CREATE" and last["namespace"] == "hooked" and last["oldObject"] is None,
            [r.status, obj, warn, last.get("userInfo")])

    # Mutating first (JSON patch applied), validating after, seeing the mutated object.
    rc, out, err = kubectl("apply", "-f", "-", input=cm("mutated", {"mutate": "yes"}))
    rc2, out2, err2 = kubectl("get", "cm", "mutated", "-n", "hooked", "-o", "jsonpath={.metadata.labels}")
    seen = hook.seen("/validate", lambda r: r["name"] == "mutated")
    t.check("mutating webhook's JSONPatch applied; the validating webhook saw the result", rc == rc2 == 0 and
            json.loads(out2 or "{}") == {"mutate": "yes", "mutated": "yes"} and seen and
            seen[-1]["object"]["metadata"]["labels"].get("mutated") == "yes", out + err + out2 + err2)

    # DELETE: oldObject is the stored object, object null.
    rc, out, err = kubectl("delete", "cm", "mutated", "-n", "hooked")
    seen = hook.seen("/validate", lambda r: r["operation"] == "DELETE")
    t.check("DELETE sends oldObject (object null, DeleteOptions)", rc == 0 and seen and seen[-1]["object"] is None
            and seen[-1]["oldObject"]["metadata"]["name"] == "mutated" and
            seen[-1]["options"]["kind"] == "DeleteOptions", [out + err, seen[-1:]])

    # As kube-apiserver 1.32: a denial without a status is 400 "without explanation" (no reason); a
    # mutating webhook's patch on DELETE is a 500 (there is no object to patch).
    st, obj, _ = raw.req("POST", "/api/v1/namespaces/hooked/configmaps", json.loads(cm("bare", {"deny": "bare"})))
    t.check("a denial without status: 400, 'denied the request without explanation', no reason", st == 400 and
            obj["code"] == 400 and "reason" not in obj and obj["message"] ==
            'admission webhook "deny.hook.test" denied the request without explanation', obj)
    kubectl("apply", "-f", "-", input=cm("patchdelete", {"patchdelete": "yes"}))
    rc, out, err = kubectl("delete", "cm", "patchdelete", "-n", "hooked")
    t.check("a mutating webhook patching a DELETE: 500, attempted to modify the object", rc != 0 and
            'Internal error occurred: admission webhook "patchdelete.hook.test" attempted to modify the object, '
            'which is not supported for this operation' in err, out + err)

    # Subresources only when a rule names them (pcidevices/status).
    before = len(hook.seen("/record"))
    kubectl("label", "pcidevice", DEV, "hooked=yes", "--overwrite")
    rc, out, err = kubectl("patch", "pcidevice", DEV, "--subresource=status", "--type=merge",
                           "-p", '{"status":{"kernelDriverInUse":"vfio-pci"}}')
    seen = hook.seen("/record")[before:]
    t.check("a pcidevices/status rule: called on the status patch only", rc == 0 and len(seen) == 1 and
            seen[0]["subResource"] == "status" and seen[0]["kind"]["kind"] == "PCIDevice" and
            seen[0]["oldObject"]["metadata"]["name"] == DEV, [out + err, seen])

    # Call failures: the service down under failurePolicy Fail (500), then Ignore (allowed).
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    closed = spare.getsockname()[1]
    spare.close()
    raw.req("POST", "/emulator/service?namespace=test-ns&name=hook&address=127.0.0.1:%d" % closed)
    st, obj, _ = raw.req("POST", "/api/v1/namespaces/hooked/configmaps", json.loads(cm("down", {})))
    t.check("failurePolicy Fail, server down: 500 InternalError, failed calling webhook", st == 500 and
            obj["reason"] == "InternalError" and obj["message"] == 'Internal error occurred: failed calling webhook '
            '"deny.hook.test": failed to call webhook: Post "https://hook.test-ns.svc:443/validate?timeout=10s": '
            'dial tcp 127.0.0.1:%d: connect: connection refused' % closed, obj)
    validating[0]["failurePolicy"] = "Ignore"
    rc, out, err = kubectl("apply", "-f", "-", input=webhook_config("Validating", "cm-policy", validating))
    rc2, out2, err2 = kubectl("get", "validatingwebhookconfiguration", "cm-policy", "-o",
                              "jsonpath={.webhooks[*].failurePolicy} {.webhooks[*].clientConfig.service.path}")
    rc3, out3, err3 = kubectl("apply", "-f", "-", input=cm("down", {}))
    t.check("kubectl apply switches one webhook to Ignore (merge by name); the create then proceeds", rc == rc2 ==
            rc3 == 0 and "configured" in out and out2 == "Ignore Fail Fail Fail /validate /validate /slow /record"
            and "created" in out3, out + err + out2 + err2 + out3 + err3)
    raw.req("POST", "/emulator/service?namespace=test-ns&name=hook&address=127.0.0.1:%d" % hook.port)

    # A caBundle that does not verify the server's certificate is a call failure.
    rc, out, err = kubectl("apply", "-f", "-", input=cm("wrongca", {"wrongca": "yes"}))
    t.check("caBundle that does not match: failed calling webhook, x509 unknown authority", rc != 0 and
            'failed calling webhook "wrongca.hook.test"' in err and "x509: certificate signed by unknown "
            "authority" in err, out + err)

    # timeoutSeconds: 2 s against a hook that sleeps 4 s; other requests go on meanwhile.
    result = {}

    def slow_create():
        t0 = time.monotonic()
        result["st"], result["obj"], _ = raw.req("POST", "/api/v1/namespaces/hooked/configmaps",
                                                 json.loads(cm("slow", {"slow": "1"})))
        result["took"] = time.monotonic() - t0
    th = threading.Thread(target=slow_create)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    st_get = raw.req("GET", "/api/v1/namespaces/hooked/configmaps")[0]
    get_took = time.monotonic() - t0
    th.join(10)
    t.check("timeoutSeconds 2 against a 4 s hook: 500 after ~2 s, context deadline exceeded",
            result.get("st") == 500 and 1.9 <= result["took"] < 3.5 and 'failed calling webhook "slow.hook.test"'
            in result["obj"]["message"] and "context deadline exceeded" in result["obj"]["message"], result)
    t.check("the store is not locked during a webhook call (a GET meanwhile is quick)", st_get == 200 and
            get_took < 1.0, get_took)

    # Dry run: sideEffects None, so the webhook is called, told dryRun.
    rc, out, err = kubectl("apply", "--dry-run=server", "-f", "-", input=cm("denied", {"deny": "yes"}))
    last = hook.seen("/validate")[-1]
    t.check("server dry run: webhooks called with dryRun true (and still deny)", rc != 0 and "denied the request"
            in err and last["dryRun"] is True and last["options"].get("dryRun") == ["All"], out + err)

    st, stats, _ = raw.req("GET", "/emulator/stats")
    wc = stats.get("webhookCalls", {})
    t.check("stats: webhookCalls per webhook (calls, failures, denials)",
            wc.get("deny.hook.test", {}).get("denials", 0) >= 3 and wc["deny.hook.test"]["failures"] == 2 and
            wc.get("slow.hook.test", {}).get("failures") == 1 and wc.get("mutate.hook.test", {}).get("calls") == 2 and
            wc.get("patchdelete.hook.test", {}).get("calls") == 1,
            wc)

    # Leases: a built-in kind; a stale resourceVersion is 409.
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "pcidevices-leader", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15}}
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(lease))
    rc2, out2, err2 = kubectl("get", "leases", "-n", "kube-node-lease")
    t.check("kubectl apply a Lease; get leases -n shows HOLDER", rc == rc2 == 0 and "created" in out and
            cells(out2.splitlines()[0]) == ["NAME", "HOLDER", "AGE"] and
            cells(out2.splitlines()[1])[:2] == ["pcidevices-leader", "node-a"], out + err + out2 + err2)
    base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pcidevices-leader"
    st, cur, _ = raw.req("GET", base)
    stale = json.loads(json.dumps(cur))
    cur["spec"]["holderIdentity"] = "node-b"
    st1, obj1, _ = raw.req("PUT", base, cur)
    stale["spec"]["holderIdentity"] = "node-c"
    st2, obj2, _ = raw.req("PUT", base, stale)
    t.check("lease update with the current resourceVersion, then a stale one: 200, 409 Conflict",
            st1 == 200 and obj1["spec"]["holderIdentity"] == "node-b" and st2 == 409 and
            obj2["reason"] == "Conflict" and "the object has been modified" in obj2["message"], [obj1, obj2])


def event_checks(t, kubectl, raw):
    """One Event, two API groups: events.k8s.io/v1 is a view of the stored core/v1 Event."""
    dev, core = "evdev-0000000001", "/api/v1/namespaces/default/events"
    ev1 = "/apis/events.k8s.io/v1/namespaces/default/events"
    kubectl("apply", "-f", "-", input=manifest("PCIDevice", dev, {}))
    rc, out, err = kubectl("get", "pcidevice", dev, "-o", "jsonpath={.metadata.uid}")
    uid, name, ctl = out.strip(), dev + ".bound", "devices.harvesterhci.io/pcidevices-controller"
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
          "eventTime": now, "series": {"count": 5, "lastObservedTime": now}, "reportingController": ctl,
          "reportingInstance": "testnode1", "action": "Bind", "reason": "DeviceBound", "type": "Normal",
          "note": "bound to vfio-pci on testnode1",
          "regarding": {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDevice", "name": dev, "uid": uid}}
    rv0 = raw.req("GET", core)[1]["metadata"]["resourceVersion"]
    watches = [raw.watch(p + "?watch=1&resourceVersion=" + rv0) for p in (core, ev1)]
    st, made, _ = raw.req("POST", ev1, ev)
    st2, got, _ = raw.req("GET", core + "/" + name)
    t.check("events.k8s.io/v1 POST (201, its shape); core/v1 GET: same uid and RV, converted fields",
            rc == 0 and uid and st == 201 and made["regarding"] == ev["regarding"] and made["deprecatedSource"] == {}
            and made["deprecatedFirstTimestamp"] is None and "involvedObject" not in made and st2 == 200 and
            got["metadata"]["uid"] == made["metadata"]["uid"] and
            got["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"] and
            got["involvedObject"] == ev["regarding"] and got["message"] == ev["note"] and
            got["reportingComponent"] == ctl and got["series"] == ev["series"] and got["eventTime"] == now and
            got["source"] == {} and got["firstTimestamp"] is None and "count" not in got and "note" not in got,
            [made, got])
    rc, out, err = kubectl("get", "events", "-n", "default")
    lines = out.splitlines()
    row = next((cells(x) for x in lines[1:] if "pcidevice/" + dev in x), [])
    t.check("kubectl get events -n default: the event, as core/v1 prints it", rc == 0 and lines and
            cells(lines[0]) == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] and
            row[1:] == ["Normal", "DeviceBound", "pcidevice/" + dev, ev["note"]], out + err)
    rc, out, err = kubectl("get", "events.v1.events.k8s.io", "-n", "default", "-o", "json")
    item = next((i for i in json.loads(out)["items"] if i["metadata"]["name"] == name), {}) if rc == 0 else {}
    t.check("kubectl get events.v1.events.k8s.io -o json: the events.k8s.io shape", item.get("apiVersion") ==
            "events.k8s.io/v1" and item["regarding"] == ev["regarding"] and item["note"] == ev["note"] and
            item["reportingController"] == ctl and item["series"] == ev["series"] and "message" not in item and
            item["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"], out + err)

    # kubectl describe lists events of a cluster-scoped object across all namespaces (GET /api/v1/events)
    # with involvedObject.{kind,name,namespace=,uid}; a series prints as "AGE (xN over AGE)".
    def described():
        rc, out, err = kubectl("describe", "pcidevice", dev)
        evs = out.split("\nEvents:", 1)[-1] if "\nEvents:" in out else ""
        return rc, next((x for x in evs.splitlines() if "DeviceBound" in x), ""), out + err
    rc, line, text = described()
    t.check("kubectl describe pcidevice: Events shows type, reason, (x5 over ...), From, the note", rc == 0 and
            cells(line)[:2] == ["Normal", "DeviceBound"] and re.search(r"\S+ \(x5 over \S+\)", line) and
            ctl in line and line.rstrip().endswith(ev["note"]), text)
    sel = "involvedObject.kind=PCIDevice,involvedObject.name=%s,involvedObject.namespace=,involvedObject.uid=%s"

    def names(path, selector):
        st, obj, _ = raw.req("GET", path + "?fieldSelector=" + quote(selector))
        return [i["metadata"]["name"] for i in obj["items"]] if st == 200 else (st, obj.get("message"))
    cases = [("/api/v1/events", sel % (dev, uid), [name]), ("/api/v1/events", sel % (dev, "another-uid"), []),
             (core, "reportingComponent=" + ctl, [name]), (core, "source=" + ctl, [name]),
             (core, "type=Normal,reason=DeviceBound,metadata.name=" + name, [name]), (core, "reason!=DeviceBound", []),
             (core, "involvedObject.apiVersion=devices.harvesterhci.io/v1beta1", [name]),
             ("/apis/events.k8s.io/v1/events", "regarding.name=%s,regarding.uid=%s" % (dev, uid), [name]),
             (ev1, "reportingController=%s,source=%s,type=Normal" % (ctl, ctl), [name]),
             (ev1, "regarding.kind=Node", []),
             (ev1, "involvedObject.name=" + dev, (400, "field label not supported: involvedObject.name")),
             (core, "regarding.name=" + dev, (400, "field label not supported: regarding.name"))]
    got = [names(p, q) for p, q, _ in cases]
    t.check("field selectors: core/v1 involvedObject.*, reportingComponent, source; events.k8s.io regarding.*, "
            "reportingController; others 400", got == [w for _, _, w in cases], list(zip(cases, got)))

    # A merge patch of series through events.k8s.io is the core/v1 series (deprecatedCount stays unset).
    later = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    rc, out, err = kubectl("patch", "events.v1.events.k8s.io", name, "-n", "default", "--type=merge",
                           "-p", json.dumps({"series": {"count": 6, "lastObservedTime": later}}))
    rc2, out2, err2 = kubectl("get", "events", name, "-n", "default", "-o", "json")
    obj = json.loads(out2) if rc2 == 0 else {}
    rc3, line, text = described()
    t.check("kubectl patch --type=merge of series.count via events.k8s.io: core/v1 series.count 6, describe x6",
            rc == rc2 == rc3 == 0 and "patched" in out and obj.get("series") == {"count": 6, "lastObservedTime": later}
            and "count" not in obj and re.search(r"\(x6 over \S+\)", line), out + err + out2 + err2 + text)
    st, obj, _ = raw.req("PATCH", ev1 + "/" + name, {"note": "changed"}, "application/merge-patch+json")
    t.check("events.k8s.io/v1 update validation: note is immutable (422)", st == 422 and
            'message: Invalid value: "changed": field is immutable' in obj.get("message", ""), obj)
    st, obj, _ = raw.req("PATCH", core + "/" + name, [{"op": "replace", "path": "/message", "value": "rebound"}],
                         "application/json-patch+json")
    st2, view, _ = raw.req("GET", ev1 + "/" + name)
    t.check("a core/v1 JSON patch of message is the events.k8s.io note (same resourceVersion)", st == st2 == 200 and
            view["note"] == "rebound" and view["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"],
            [obj, view])
    rc, out, err = kubectl("delete", "events", name, "-n", "default")
    st, _, _ = raw.req("GET", ev1 + "/" + name)
    seen = []
    for c, r in watches:
        evs, _ = read_events(r, lambda e: len(e) >= 4, 5)
        c.close()
        seen.append([(e["type"], e["object"]["metadata"]["resourceVersion"], e["object"]["apiVersion"],
                      "regarding" in e["object"]) for e in evs])
    types = ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    t.check("kubectl delete events (core/v1): gone from events.k8s.io too (404)", rc == 0 and st == 404, out + err)
    t.check("watches on both groups saw ADDED, MODIFIED x2, DELETED with the same RVs, each in its shape",
            [x[0] for x in seen[0]] == types and [x[0] for x in seen[1]] == types and
            [x[1] for x in seen[0]] == [x[1] for x in seen[1]] and
            all(x[2] == "v1" and not x[3] for x in seen[0]) and
            all(x[2] == "events.k8s.io/v1" and x[3] for x in seen[1]), seen)


if __name__ == "__main__":
    sys.exit(main())
