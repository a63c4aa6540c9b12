#!/usr/bin/env python3
"""`pcidevices controller` end to end: two controller processes against the API-server emulator,
which calls their admission webhooks as kube-apiserver does (AdmissionReview v1 over HTTPS,
checked against the configurations' caBundle, honouring failurePolicy and timeoutSeconds), with
the webhook configurations of deploy/webhooks.yaml and the real kubectl.

    controller_test.py PCIDEVICES

It checks: each validating rule's refusal as kubectl shows it; the VM mutator adding and claiming
IOMMU group-mates; one leader at a time, a kill -9 of the leader taken over within the lease
duration, and cleanup run once; a deleted node's objects, finalizers and KubeVirt entries cleaned
up, with Events; certificate rotation under load without a failed request; bad requests refused
without a crash; SIGTERM releasing the lease; failurePolicy with no controller left.
"""

import base64
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from projection_test import Api, check, failures, verdict, wait_for  # noqa: E402
from device_plugin_test import stop_process  # noqa: E402

NS = "pcidevices-system"
SERVICE_HOST = f"pcidevices-webhook.{NS}.svc"
DEVICES = "devices.validate.pcidevices.io"
BEST_EFFORT = "best-effort.validate.pcidevices.io"
GPU, AUDIO, NIC, XHCI = "nvidia.com/GP106", "nvidia.com/GP106_AUDIO", "intel.com/NIC", "intel.com/XHCI"
FINALIZER = "devices.harvesterhci.io/pcidevices-agent"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d):
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "2", "-subj", "/CN=pcidevices-webhook-ca")


def make_serving(ca, d):
    """A serving certificate for the Service's DNS name, signed by `ca`, in directory `d`."""
    os.makedirs(d, exist_ok=True)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{d}/tls.key",
            "-out", f"{d}/tls.csr", "-subj", f"/CN={SERVICE_HOST}")
    with open(f"{d}/ext", "w") as f:
        f.write(f"subjectAltName=DNS:{SERVICE_HOST},DNS:pcidevices-webhook.{NS}.svc.cluster.local\n")
    openssl("x509", "-req", "-in", f"{d}/tls.csr", "-CA", f"{ca}/ca.crt", "-CAkey", f"{ca}/ca.key",
            "-CAcreateserial", "-out", f"{d}/tls.crt", "-days", "2", "-extfile", f"{d}/ext")


def publish(secret_dir, version):
    """As the kubelet updates a Secret volume: files behind `..data`, swapped by one rename."""
    tmp_link = f"{secret_dir}/..data_tmp"
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(version, tmp_link)
    os.rename(tmp_link, f"{secret_dir}/..data")
    for name in ("tls.crt", "tls.key"):
        if not os.path.lexists(f"{secret_dir}/{name}"):
            os.symlink(f"..data/{name}", f"{secret_dir}/{name}")


def apply(api, obj):
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    return rc, out


def status(api, plural, name, st, namespace=None):
    args = ["patch", plural, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": st})]
    args += ["-n", namespace] if namespace else []
    return api.kubectl(*args)


def pcidevice(api, node, address, group, resource, cls="0300"):
    name = f"{node}-{address.replace(':', '').replace('.', '')}"
    apply(api, {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDevice",
                "metadata": {"name": name, "labels": {"nodename": node}}})
    rc, out = status(api, "pcidevices", name, {
        "address": address, "vendorId": "10de", "deviceId": "1c03", "classId": cls, "iommuGroup": group,
        "nodeName": node, "resourceName": resource, "description": f"device {name}",
        "kernelDriverInUse": "vfio-pci"})
    check(rc == 0, f"PCIDevice {name} with status", out)
    return name


def claim_obj(name, node, address, user="alice", finalizers=()):
    meta = {"name": name}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDeviceClaim", "metadata": meta,
            "spec": {"address": address, "nodeName": node, "userName": user}}


def vm_obj(name, devices):
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name, "namespace": "default"},
            "spec": {"running": False, "template": {"spec": {"domain": {"devices": {
                "hostDevices": [{"name": n, "deviceName": r} for n, r in devices]}}}}}}


def denied(api, obj, webhook, message, what):
    rc, out = apply(api, obj)
    check(rc != 0 and f'admission webhook "{webhook}" denied the request: {message}' in out, what, out)


class Controller:
    # Short leases, so that a takeover is seen in seconds.
    FAST_LEASE = ("--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s",
                  "--leader-elect-retry-period", "500ms")

    def __init__(self, pcidevices, api, tmp, name, tls_dir, lease_args=FAST_LEASE):
        self.name = name
        self.port = free_port()
        self.metrics = free_port()
        self.log_path = f"{tmp}/{name}.log"
        env = dict(os.environ, POD_NAME=name, POD_NAMESPACE=NS)
        self.proc = subprocess.Popen(
            [pcidevices, "controller", "--kubeconfig", api.kubeconfig,
             "--webhook-bind-address", f"127.0.0.1:{self.port}",
             "--tls-cert-file", f"{tls_dir}/tls.crt", "--tls-private-key-file", f"{tls_dir}/tls.key",
             "--leader-election-namespace", NS, *lease_args,
             "--metrics-bind-address", f"127.0.0.1:{self.metrics}"],
            stderr=open(self.log_path, "w"), env=env)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log(self):
        return open(self.log_path).read()


def review(uid, operation, obj, old=None, kind="PCIDeviceClaim", resource="pcideviceclaims"):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "devices.harvesterhci.io", "version": "v1beta1", "kind": kind},
        "resource": {"group": "devices.harvesterhci.io", "version": "v1beta1", "resource": resource},
        "name": obj["metadata"]["name"] if obj else old["metadata"]["name"], "operation": operation,
        "userInfo": {"username": "alice"}, "object": obj, "oldObject": old, "dryRun": False}}).encode()


def post(port, ctx, path, body, content_type="application/json", timeout=10):
    """One HTTPS request to a webhook; (HTTP status, body) or raises."""
    conn = __import__("http.client").client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def client_context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = True
    return ctx


def served_certificate(port, ca_file):
    ctx = client_context(ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=SERVICE_HOST) as s:
            return s.getpeercert(binary_form=True)


class HostnameContext:
    """An SSL context whose connections verify the Service's DNS name while dialing 127.0.0.1."""

    def __init__(self, ca_file):
        self.ctx = client_context(ca_file)

    def wrap_socket(self, sock, server_hostname=None, **kw):
        return self.ctx.wrap_socket(sock, server_hostname=SERVICE_HOST, **kw)

    def __getattr__(self, name):
        return getattr(self.ctx, name)


def run(api, tmp, pcidevices):
    # KubeVirt's VirtualMachine kind comes later, once the controllers run: they must not wait
    # for a kind that is not installed.
    for f in ("deploy/crds/", "e2e/apiserver/kubevirt-crd.yaml"):
        rc, out = api.kubectl("apply", "-f", f"{ROOT}/{f}")
        check(rc == 0, f"kubectl apply -f {f}", out)
    api.kubectl("create", "namespace", NS)
    api.kubectl("create", "namespace", "kubevirt")
    # Objects as the node agents of n1 and n2 would have made them.
    for node in ("n1", "n2"):
        apply(api, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    status(api, "nodes", "n1", {"allocatable": {GPU: "1", "cpu": "4"}})
    gpu1 = pcidevice(api, "n1", "0000:81:00.0", "40", GPU)
    audio1 = pcidevice(api, "n1", "0000:81:00.1", "40", AUDIO, "0403")
    xhci1 = pcidevice(api, "n1", "0000:00:14.0", "7", XHCI, "0c03")
    noiommu = pcidevice(api, "n1", "0000:05:00.0", "", "example.com/X")
    gpu2 = pcidevice(api, "n2", "0000:81:00.0", "40", GPU)
    nic2 = pcidevice(api, "n2", "0000:03:00.0", "12", NIC, "0200")
    apply(api, {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "USBDevice",
                "metadata": {"name": "n1-001002", "labels": {"nodename": "n1"}}})
    status(api, "usbdevices", "n1-001002", {"vendorID": "0951", "productID": "1666", "nodeName": "n1",
                                            "resourceName": "kubevirt.io/stick", "devicePath": "/dev/bus/usb/001/002",
                                            "description": "Kingston DataTraveler", "pciAddress": "0000:00:14.0",
                                            "enabled": True})
    apply(api, {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                "spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [
                    {"pciVendorSelector": "10de:1c03", "resourceName": GPU, "externalResourceProvider": True},
                    {"pciVendorSelector": "8086:1572", "resourceName": NIC, "externalResourceProvider": True}]}}}})
    for c in (claim_obj(gpu1, "n1", "0000:81:00.0"), claim_obj(gpu2, "n2", "0000:81:00.0", finalizers=[FINALIZER]),
              claim_obj(nic2, "n2", "0000:03:00.0", finalizers=[FINALIZER])):
        rc, out = apply(api, c)
        check(rc == 0, f"claim {c['metadata']['name']} before the webhooks", out)

    # The serving certificate as a Secret volume, and the two replicas.
    ca_dir, tls_dir = f"{tmp}/ca", f"{tmp}/secret"
    make_ca(ca_dir)
    make_serving(ca_dir, f"{tls_dir}/v1")
    publish(tls_dir, "v1")
    controllers = [Controller(pcidevices, api, tmp, name, tls_dir) for name in ("c1", "c2")]
    try:
        scenario(api, tmp, controllers, ca_dir, tls_dir, gpu1, audio1, xhci1, noiommu, gpu2, nic2)
    finally:
        for c in controllers:
            stop_process(c.proc)
        for c in controllers:
            if failures:
                print(f"--- {c.name} log (tail)\n" + "".join(c.log().splitlines(True)[-40:]))


def holder(api):
    lease = api.get("leases", "pcidevices-controller", namespace=NS)
    return lease["spec"].get("holderIdentity", "") if lease else None


def scenario(api, tmp, controllers, ca_dir, tls_dir, gpu1, audio1, xhci1, noiommu, gpu2, nic2):
    check(wait_for(lambda: all(c.ready() for c in controllers), 20),
          "both controllers ready (every informer listed; VirtualMachines not installed yet)")
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/e2e/apiserver/virtualmachine-crd.yaml")
    check(rc == 0, "kubectl apply -f e2e/apiserver/virtualmachine-crd.yaml (KubeVirt installed late)", out)
    # The webhook configurations as shipped, with the CA; the Service resolves to c1.
    ca_b64 = base64.b64encode(open(f"{ca_dir}/ca.crt", "rb").read()).decode()
    hooks = open(f"{ROOT}/deploy/webhooks.yaml").read().replace("CA_BUNDLE_BASE64", ca_b64)
    api.control("POST", f"service?namespace={NS}&name=pcidevices-webhook&address=127.0.0.1:{controllers[0].port}")
    rc, out = api.kubectl("apply", "-f", "-", stdin=hooks)
    check(rc == 0, "kubectl apply deploy/webhooks.yaml (caBundle filled in)", out)

    # -- validating rules, as kubectl shows them
    denied(api, claim_obj(audio1, "n1", "0000:81:00.0"), DEVICES,
           f'pcideviceclaim {audio1}: spec.address "0000:81:00.0" is not pcidevice {audio1}\'s address "0000:81:00.1"',
           "a claim whose address is not its PCIDevice's is refused")
    denied(api, claim_obj(audio1, "n2", "0000:81:00.1"), DEVICES,
           f'pcideviceclaim {audio1}: spec.nodeName "n2" is not pcidevice {audio1}\'s node "n1"',
           "a claim naming another node is refused")
    denied(api, claim_obj("n1-00000f000", "n1", "0000:0f:00.0"), DEVICES, "pcidevice n1-00000f000 not found",
           "a claim for a device that exists nowhere is refused")
    denied(api, claim_obj(noiommu, "n1", "0000:05:00.0"), DEVICES, f"pcidevice {noiommu} has no iommuGroup available",
           "a claim for a device without an IOMMU group is refused")
    usb_claim = {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "USBDeviceClaim",
                 "metadata": {"name": "n1-001002"}, "spec": {"userName": "bob"}}
    rc, out = apply(api, usb_claim)
    check(rc == 0, "a USBDeviceClaim whose controller is free is admitted", out)
    status(api, "usbdeviceclaims", "n1-001002", {"nodeName": "n1", "pciAddress": "0000:00:14.0"})
    denied(api, claim_obj(xhci1, "n1", "0000:00:14.0"), DEVICES,
           f"these USB devices [n1-001002 (Kingston DataTraveler)] are using the PCI USB Controller [{xhci1} (device {xhci1})]",
           "claiming a USB controller whose USB device is claimed is refused")
    denied(api, dict(usb_claim, spec={"userName": "mallory"}), BEST_EFFORT, "usbdeviceclaim n1-001002 username is immutable",
           "a USBDeviceClaim's userName is immutable")
    rc, out = api.kubectl("delete", "usbdevice", "n1-001002", "--wait=false")
    check(rc != 0 and "usbdevice n1-001002 is still in use" in out, "an enabled USBDevice is not deleted by a user", out)
    denied(api, vm_obj("split", [(gpu1, GPU), (nic2, NIC)]), BEST_EFFORT,
           f"device pcidevice/{nic2} is not on the same node in VirtualMachine.Spec.Template.Spec.Domain.Devices.HostDevices split",
           "a VM whose host devices sit on two nodes is refused")
    check(api.get("pcideviceclaims", audio1) is None, "a refused VM claimed no group-mate (the mutator checks first)")
    denied(api, vm_obj("ghost", [("x", "example.com/none")]), BEST_EFFORT,
           "hostdevice x: resource name example.com/none not found in pcidevice and usbdevice cache",
           "a VM naming a resource that exists nowhere is refused")

    # -- the mutator: the GPU brings its audio function, claimed for the same user
    rc, out = apply(api, vm_obj("gpu-vm", [(gpu1, GPU)]))
    check(rc == 0 and "added the IOMMU group-mates" in out, "a VM with a GPU is admitted, with a warning naming the mates", out)
    vm = api.get("virtualmachines", "gpu-vm", namespace="default") or {}
    devices = vm.get("spec", {}).get("template", {}).get("spec", {}).get("domain", {}).get("devices", {}).get("hostDevices", [])
    check({"name": audio1, "deviceName": AUDIO} in devices and len(devices) == 2,
          "the mutator added the GPU's audio function to hostDevices", json.dumps(devices))
    mate = api.get("pcideviceclaims", audio1) or {}
    check(mate.get("spec") == {"address": "0000:81:00.1", "nodeName": "n1", "userName": "alice"}
          and mate["metadata"].get("ownerReferences", [{}])[0].get("kind") == "PCIDevice",
          "the mate's PCIDeviceClaim was created for alice, owned by its PCIDevice", json.dumps(mate))
    # The VirtualMachine kind was installed after the controllers started: their informer lists
    # it again after its back-off. A server-side dry run asks the webhook without deleting.
    in_use = f"pcideviceclaim {gpu1} is already in use with vm gpu-vm in namespace default"
    refused = wait_for(lambda: (lambda r: r if r[0] != 0 and in_use in r[1] else None)(
        api.kubectl("delete", "pcideviceclaim", gpu1, "--dry-run=server")), 40, 0.5)
    rc, out = api.kubectl("delete", "pcideviceclaim", gpu1, "--wait=false")
    check(refused is not None and rc != 0 and in_use in out,
          "deleting a claim a VM uses is refused, naming the VM (VMs seen once KubeVirt was installed)", out)

    # -- leader election: one leader; cleanup of a deleted node runs once, on it
    lead = wait_for(lambda: holder(api) in ("c1", "c2") and holder(api), 10)
    check(bool(lead), f"one controller leads (lease holder {lead})")
    leader = next(c for c in controllers if c.name == lead)
    follower = next(c for c in controllers if c.name != lead)
    t0 = time.monotonic()
    rc, out = api.kubectl("delete", "node", "n2")
    check(rc == 0, "kubectl delete node n2", out)
    gone = wait_for(lambda: not (api.get("pcidevices", selector="nodename=n2") or {"items": [1]})["items"]
                    and api.get("pcideviceclaims", gpu2) is None and api.get("pcideviceclaims", nic2) is None, 10, 0.05)
    took = time.monotonic() - t0
    check(bool(gone), f"node n2's PCIDevices and claims (finalizers removed) are gone, {took:.2f} s after its deletion")
    kv = api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}
    entries = [e["resourceName"] for e in kv.get("spec", {}).get("configuration", {}).get("permittedHostDevices", {}).get("pciHostDevices", [])]
    check(entries == [GPU], "KubeVirt keeps GP106 (n1's claim) and loses the NIC only n2 needed", json.dumps(entries))
    events = api.get("events.v1.events.k8s.io", namespace="default") or {"items": []}
    about = sorted(e["regarding"]["name"] for e in events["items"] if e.get("reason") == "NodeDeleted")
    check(about == sorted([gpu2, nic2]), "one NodeDeleted Event per claim of n2", json.dumps(about))
    check("node cleanup: node n2 is gone" in leader.log() and "node cleanup" not in follower.log(),
          "only the leader cleaned up")

    # -- kill -9 the leader: the follower takes over within the lease duration (3 s)
    api.control("POST", f"service?namespace={NS}&name=pcidevices-webhook&address=127.0.0.1:{follower.port}")
    t0 = time.monotonic()
    leader.proc.kill()
    leader.proc.wait()
    took_over = wait_for(lambda: holder(api) == follower.name, 10, 0.05)
    took = time.monotonic() - t0
    # The lease runs out 3 s after the follower last saw it renewed (up to a retry before the
    # kill); the follower notices at its next retry.
    check(bool(took_over) and took <= 3.0 + 2 * 0.5,
          f"{follower.name} took the lease {took:.2f} s after kill -9 of {leader.name} (lease 3 s, retry 0.5 s)")
    # Objects of a node that no longer exists (gone while nobody led) are cleaned by the new leader.
    # No status patch: the leader may delete the object before a second request reaches it.
    n3 = "n3-000001000"
    rc, out = apply(api, {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDevice",
                          "metadata": {"name": n3, "labels": {"nodename": "n3"}}})
    check(rc == 0, f"PCIDevice {n3} of a node that does not exist is created", out)
    check(bool(wait_for(lambda: api.get("pcidevices", n3) is None, 10, 0.05)),
          "the new leader cleans up after a node that is missing")

    # -- certificate rotation under load: no request fails, the new certificate is served
    ctx = HostnameContext(f"{ca_dir}/ca.crt")
    before = served_certificate(follower.port, f"{ca_dir}/ca.crt")
    stop = threading.Event()
    results = []

    def load():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                code, body = post(follower.port, ctx, "/validate", review(f"rot-{i}", "CREATE", claim_obj(gpu1, "n1", "0000:81:00.0")))
                results.append(code == 200 and '"allowed":true' in body)
            except OSError as e:
                results.append(False)
                print(f"     rotation request failed: {e}")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(load)
        time.sleep(0.5)
        make_serving(ca_dir, f"{tls_dir}/v2")
        publish(tls_dir, "v2")
        time.sleep(1.0)
        stop.set()
    after = served_certificate(follower.port, f"{ca_dir}/ca.crt")
    check(len(results) > 20 and all(results), f"{len(results)} AdmissionReviews during rotation, none failed")
    check(before != after and after == ssl.PEM_cert_to_DER_cert(open(f"{tls_dir}/v2/tls.crt").read()),
          "the rotated certificate is served without a restart")
    # A broken rotation (key of another certificate) keeps the working one in service.
    os.makedirs(f"{tls_dir}/v3")
    shutil.copy(f"{tls_dir}/v2/tls.crt", f"{tls_dir}/v3/tls.crt")
    shutil.copy(f"{tls_dir}/v1/tls.key", f"{tls_dir}/v3/tls.key")
    publish(tls_dir, "v3")
    check(served_certificate(follower.port, f"{ca_dir}/ca.crt") == after and "does not match the certificate" in follower.log(),
          "a key that does not match keeps the previous certificate, with a warning")
    publish(tls_dir, "v2")

    # -- bad input: refused, never a crash
    port = follower.port
    good = review("bad-0", "CREATE", claim_obj(gpu1, "n1", "0000:81:00.0"))
    for body, code, what in [
        (b"{not json", 400, "malformed JSON"),
        (good.replace(b"admission.k8s.io/v1", b"admission.k8s.io/v1beta1"), 400, "another version"),
        (good.replace(b'"request": {', b'"request": {"surprise": 1, '), 400, "an unknown field"),
        (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', 400, "no request"),
        (b" " * (4 * 1024 * 1024), 413, "a 4 MiB body")]:
        try:
            got, text = post(port, ctx, "/validate", body)
        except OSError as e:
            got, text = None, str(e)
        check(got == code, f"{what} gets HTTP {code}", f"{got}: {text[:200]}")
    got, _ = post(port, ctx, "/validate", good, content_type="text/plain")
    check(got == 415, "a body that is not application/json gets 415")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
    check(not answer.startswith(b"HTTP/"), "plain HTTP gets no HTTP answer", repr(answer[:60]))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            try:
                rest = s.recv(100)
            except OSError:
                rest = b""
    stalled = time.monotonic() - t0
    check(stalled < 8 and not rest.startswith(b"HTTP/1.1 200"), f"a client stalling mid-request is cut off after {stalled:.1f} s")
    check(follower.proc.poll() is None and follower.ready(), "the controller still runs and is ready")

    # -- SIGTERM: the lease is released, the process ends within 5 s
    t0 = time.monotonic()
    follower.proc.send_signal(signal.SIGTERM)
    try:
        rc = follower.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    check(rc == 0 and took < 5, f"SIGTERM ends the controller in {took:.2f} s (exit {rc})")
    check(holder(api) == "", "the lease was released on SIGTERM")

    # -- no controller left: failurePolicy Fail refuses claims, Ignore lets VMs through
    rc, out = apply(api, claim_obj(xhci1, "n1", "0000:00:14.0"))
    check(rc != 0 and f'failed calling webhook "{DEVICES}"' in out, "with no webhook server, a claim fails (failurePolicy Fail)", out)
    rc, out = apply(api, vm_obj("plain", [(gpu1, GPU)]))
    check(rc == 0, "with no webhook server, a VM is admitted (failurePolicy Ignore)", out)


def main():
    pcidevices = sys.argv[1]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-ctl-", dir=base) as tmp:
        api = Api(tmp)
        try:
            run(api, tmp, pcidevices)
        finally:
            api.stop()
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
