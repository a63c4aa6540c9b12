#!/usr/bin/env python3
"""The projection end to end: the API-server emulator (e2e/apiserver), the real kubectl, the
kubelet emulator and the daemon on a gpu-node fixture tree.

Checked: deploy/crds apply with kubectl; every function appears as a PCIDevice whose status
matches `pcidevices list --output json` and kubectl prints the printer columns; another node's
object is never touched; a quiet node makes zero writes; a claim enables its device (status,
finalizer, the kubelet emulator sees it served) and deleting it gives the device back before the
object goes; bad claims (malformed address, unknown device, protected device) get a condition and
change nothing; claims for another node are ignored; watches cut, history compacted (410) and an
outage of the API server are recovered from, and a claim made while the watch was gone is served.

usage: projection_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import ssl

import daemon_log

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from device_plugin_test import Emulator, stop_process  # noqa: E402

NODE = "n1"
GPU = "nvidia.com/GP106_GEFORCE_GTX_1060_6GB"
AUDIO = "nvidia.com/GP106_HIGH_DEFINITION_AUDIO_CONTROLLER"
ADMIN_ENTRY = {"pciVendorSelector": "8086:1533", "resourceName": "intel.com/I210_GIGABIT_NETWORK_CONNECTION",
               "externalResourceProvider": False}
failures = []


def host_devices(api):
    kv = api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}
    return kv.get("spec", {}).get("configuration", {}).get("permittedHostDevices", {}).get("pciHostDevices", [])


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else f"\n     {detail}"),
          flush=True)
    if not cond:
        failures.append(what)
    return cond


def wait_for(pred, timeout=15.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None


class Api:
    """The emulator process, kubectl against it, and its control endpoints."""

    def __init__(self, tmp, extra_args=()):
        self.proc = subprocess.Popen([sys.executable, f"{HERE}/apiserver/apiserver_emulator.py",
                                      "--dir", f"{tmp}/api", "--bookmark-interval", "1", "--http-port", "0",
                                      *extra_args],
                                     stdout=subprocess.PIPE, stderr=open(f"{tmp}/api.log", "w"), text=True)
        info = json.loads(self.proc.stdout.readline())
        self.kubeconfig = info["kubeconfig"]
        # The same, authenticating with a token file (as a service account does): rotations
        # must be picked up.
        self.kubeconfig_tokenfile = f"{tmp}/api/kubeconfig-tokenfile"
        with open(self.kubeconfig) as f, open(self.kubeconfig_tokenfile, "w") as out:
            for line in f:
                out.write(f"    tokenFile: {tmp}/api/token\n" if line.strip().startswith("token:") else line)
        self.port = info["https"]
        self.http_port = info["http"]
        self.token = open(f"{tmp}/api/token").read().strip()
        self.ca_file = f"{tmp}/api/ca.crt"
        self.ctx = ssl.create_default_context(cafile=f"{tmp}/api/ca.crt")

    def kubectl(self, *args, stdin=None):
        p = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], input=stdin,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    def http(self, method, path):
        """A request on the emulator's plain-HTTP port, reachable while HTTPS is down (kubectl
        sends no token over plain HTTP)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def control(self, method, path):
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}/emulator/{path}", method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else {}

    def get(self, plural, name=None, selector=None, namespace=None):
        args = ["get", plural] + ([name] if name else []) + (["-l", selector] if selector else []) + ["-o", "json"]
        args += ["-n", namespace] if namespace else []
        rc, out = self.kubectl(*args)
        return json.loads(out) if rc == 0 else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def writes(stats):
    return stats.get("writes", sum(v for k, v in stats.get("verbs", {}).items()
                                   if k in ("POST", "PUT", "PATCH", "DELETE")))


def gpu_node(tmp, pcidevices, make_tree):
    """The gpu-node tree below `tmp` and an empty config for the daemon, and what `pcidevices
    list` makes of it: (sysfs, dev, proc, state, plugin dir, config, listed)."""
    sysfs, dev, proc, state, plugins = (f"{tmp}/{d}" for d in ("sys", "dev", "proc", "state", "dp"))
    os.mkdir(plugins)
    subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev, "--proc-root", proc],
                   check=True)
    config = f"{tmp}/config.json"
    with open(config, "w") as f:
        json.dump({"enable": []}, f)
    listed = json.loads(subprocess.run([pcidevices, "list", "--sysfs-root", sysfs, "--node-name", NODE,
                                        "--output", "json"], capture_output=True, text=True, check=True).stdout)
    return sysfs, dev, proc, state, plugins, config, listed


def claim(name, address, node=NODE):
    return json.dumps({"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDeviceClaim",
                       "metadata": {"name": name},
                       "spec": {"address": address, "nodeName": node, "userName": "admin"}})


def run_with_api(prefix, run):
    """`run(api, tmp, PCIDEVICES, KUBELET_EMULATOR, MAKE_TREE)` (the command line's arguments) with
    the API-server emulator up in a temporary directory (on tmpfs when there is one); the exit
    code."""
    pcidevices, emulator_bin, make_tree = sys.argv[1:4]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as tmp:
        api = Api(tmp)
        try:
            run(api, tmp, pcidevices, emulator_bin, make_tree)
        finally:
            api.stop()
    return verdict()


def main():
    return run_with_api("pcid-proj-", run)


def verdict():
    """Prints the outcome; the exit code."""
    if failures:
        print(f"FAILED: {failures}")
        return 1
    print("PASS")
    return 0


def run(api, tmp, pcidevices, emulator_bin, make_tree):
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    check(rc == 0, "kubectl apply -f deploy/crds/", out)
    rc, out = api.kubectl("apply", "-f", f"{HERE}/apiserver/kubevirt-crd.yaml")
    check(rc == 0, "kubevirt CRD", out)
    # Another node's device: never touched.
    other = {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "PCIDevice",
             "metadata": {"name": "n2-000001000", "labels": {"nodename": "n2"}}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(other))
    check(rc == 0, "another node's PCIDevice created", out)
    other_rv = api.get("pcidevices", "n2-000001000")["metadata"]["resourceVersion"]
    # KubeVirt, with an administrator's entry that must survive.
    rc, out = api.kubectl("create", "namespace", "kubevirt")
    kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
          "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
          "spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [ADMIN_ENTRY]}}}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(kv))
    check(rc == 0, "KubeVirt object created", out)

    sysfs, dev, proc, state, plugins, config, listed = gpu_node(tmp, pcidevices, make_tree)
    emu = Emulator(emulator_bin, plugins, f"{tmp}/pr.sock")
    log = open(f"{tmp}/daemon.log", "w+")
    args = [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE, "--config", config, "--sysfs-root", sysfs,
            "--dev-root", dev, "--proc-root", proc, "--state-dir", state, "--device-plugin-dir", plugins,
            "--pod-resources-socket", f"{tmp}/pr.sock", "--kubeconfig", api.kubeconfig_tokenfile]
    daemon = subprocess.Popen(args, stderr=log)
    try:
        scenario(api, daemon, emu, listed, state, other_rv, log)
        # A claim deleted while the agent is down: the restarted agent gives the device back,
        # then lets the claim go.
        rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081001", "0000:81:00.1"))
        c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
            api.get("pcideviceclaims", "n1-000081001")))
        check(c is not None, "claim served before the restart")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        rc, out = api.kubectl("delete", "pcideviceclaim", "n1-000081001", "--wait=false")
        check(rc == 0 and api.get("pcideviceclaims", "n1-000081001") is not None,
              "claim deleted while the agent is down: held by its finalizer", out)
        daemon = subprocess.Popen(args, stderr=log)
        gone = wait_for(lambda: api.get("pcideviceclaims", "n1-000081001") is None, timeout=20)
        check(gone and "0000:81:00.1" not in open(f"{state}/state.json").read(),
              "after the restart: device given back, claim gone")
        # The same, but the claim force-deleted (finalizer removed by hand): the restarted agent
        # finds a device enabled for a claim that no longer exists and gives it back.
        rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081001", "0000:81:00.1"))
        c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
            api.get("pcideviceclaims", "n1-000081001")))
        check(c is not None and "0000:81:00.1" in open(f"{state}/state.json").read(), "claimed again")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        rc, out = api.kubectl("patch", "pcideviceclaim", "n1-000081001", "--type=merge",
                              "-p", '{"metadata":{"finalizers":[]}}')
        rc2, out2 = api.kubectl("delete", "pcideviceclaim", "n1-000081001", "--timeout=10s")
        check(rc == 0 and rc2 == 0 and api.get("pcideviceclaims", "n1-000081001") is None,
              "claim force-deleted while the agent is down", out + out2)
        daemon = subprocess.Popen(args, stderr=log)
        released = wait_for(lambda: "0000:81:00.1" not in open(f"{state}/state.json").read(), timeout=20)
        check(released, "after the restart: the orphaned claim's device given back")
    finally:
        began = time.monotonic()
        stop_process(daemon)
        check(daemon.returncode == 0,
              f"daemon stopped cleanly ({daemon.returncode}, {time.monotonic() - began:.1f} s)")
        emu.stop()
        if failures:
            log.seek(0)
            print(daemon_log.failure_text(log.read()))


def scenario(api, daemon, emu, listed, state, other_rv, log):
    want = {d["metadata"]["name"]: d["status"] for d in listed}
    got = wait_for(lambda: (lambda l: l if l and len(l["items"]) == len(want) and
                            all(i.get("status") for i in l["items"]) else None)(
        api.get("pcidevices", selector=f"nodename={NODE}")), timeout=20)
    check(got is not None, f"{len(want)} PCIDevices of {NODE} appear with their status")
    if got:
        have = {i["metadata"]["name"]: i["status"] for i in got["items"]}
        check(have == want, "their status equals `pcidevices list --output json`",
              json.dumps({k: (have.get(k), v) for k, v in want.items() if have.get(k) != v})[:1500])
    rc, out = api.kubectl("get", "pcidevices", "-l", f"nodename={NODE}")
    header = out.splitlines()[0].split() if out else []
    check(rc == 0 and header[:2] == ["NAME", "ADDRESS"] and "KERNEL" in header and
          any(line.startswith("n1-000081000 ") and "0000:81:00.0" in line and "vfio-pci" in line
              for line in out.splitlines()), "kubectl get pcidevices prints the printer columns", out)
    usb = wait_for(lambda: (lambda l: l if l and l["items"] else None)(api.get("usbdevices", selector=f"nodename={NODE}")))
    check(usb is not None and any(i["status"].get("vendorID") == "0951" for i in usb["items"]),
          "USBDevices appear", json.dumps(usb)[:500])

    # A quiet node writes nothing (bookmarks every second keep the watches busy meanwhile).
    api.control("POST", "reset-stats")
    time.sleep(3)
    check(writes(api.control("GET", "stats")) == 0, "quiet node: zero writes", api.control("GET", "stats"))

    # A claim: enabled (81:00.0 is already on vfio-pci, as vfio-pci.ids= leaves it), finalizer,
    # status, served to the kubelet.
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081000", "0000:81:00.0"))
    check(rc == 0, "claim applied", out)
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
        api.get("pcideviceclaims", "n1-000081000")))
    check(c is not None and c["status"].get("kernelDriverToUnbind") == "vfio-pci" and
          "devices.harvesterhci.io/pcidevices-agent" in c["metadata"].get("finalizers", []),
          "claim: passthroughEnabled, kernelDriverToUnbind, finalizer", json.dumps(c)[:800])
    e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == GPU and
                 any(d["id"] == "0000:81:00.0" and d["health"] == "Healthy" for d in e["devices"]), timeout=10)
    check(e is not None, "the claimed GPU is served to the kubelet")
    check("0000:81:00.0" in open(f"{state}/state.json").read(), "claim recorded in the state file")
    entries = wait_for(lambda: (lambda e: e if any(x.get("resourceName") == GPU for x in e) else None)(host_devices(api)))
    check(entries is not None and [x["resourceName"] for x in entries].count(GPU) == 1 and ADMIN_ENTRY in entries
          and {"pciVendorSelector": "10de:1c03", "resourceName": GPU, "externalResourceProvider": True} in entries,
          "KubeVirt: one pciHostDevices entry for the claimed GPU, the administrator's kept", json.dumps(entries))
    # Our entry removed by someone else (another node releasing the same resource, an
    # administrator): the claim still needs it, so it comes back.
    kv = api.get("kubevirts", "kubevirt", namespace="kubevirt")
    rc, out = api.kubectl("patch", "kubevirt", "kubevirt", "-n", "kubevirt", "--type=merge", "-p", json.dumps(
        {"spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [ADMIN_ENTRY]}}}}))
    entries = wait_for(lambda: (lambda e: e if any(x.get("resourceName") == GPU for x in e) else None)(host_devices(api)))
    check(rc == 0 and entries is not None and [x["resourceName"] for x in entries].count(GPU) == 1,
          "KubeVirt: our entry removed by someone else comes back while the claim needs it",
          out + json.dumps(host_devices(api)))

    # Bad claims: a condition says why; nothing changes.
    for name, address, reason in (("bad-address", "../../x", "InvalidAddress"),
                                  ("n1-0000001e0", "0000:00:1e.0", "DeviceNotFound"),
                                  ("n1-000000190", "0000:00:19.0", "Refused"),
                                  ("my-gpu", "0000:01:00.0", "InvalidName")):
        rc, out = api.kubectl("apply", "-f", "-", stdin=claim(name, address))
        c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("conditions") else None)(
            api.get("pcideviceclaims", name)))
        cond = (c or {}).get("status", {}).get("conditions", [{}])[0]
        check(c is not None and c["status"].get("passthroughEnabled") is False and cond.get("reason") == reason,
              f"claim {name} for {address!r} refused: {reason}", json.dumps(c)[:600])
    c = api.get("pcideviceclaims", "n1-000000190")
    check("default route" in json.dumps(c), "the refusal names the default route")
    # Each refusal is a Warning Event about its claim, from the agent (events.k8s.io/v1).
    events = {e["regarding"]["name"]: e for e in (api.get("events.v1.events.k8s.io", namespace="default") or {"items": []})["items"]}
    e = events.get("n1-000000190", {})
    check(e.get("type") == "Warning" and e.get("reason") == "Refused" and "default route" in e.get("note", "")
          and e.get("regarding", {}).get("uid") == c["metadata"]["uid"] and e.get("reportingController") == "pcidevices.io/agent",
          "the refusal is a Warning Event on the claim, naming the default route", json.dumps(e)[:600])
    check(all(events.get(n, {}).get("reason") == r for n, r in (("n1-0000001e0", "DeviceNotFound"), ("my-gpu", "InvalidName"))),
          "every refused claim has its Event", json.dumps(sorted(events))[:400])
    rc, out = api.kubectl("describe", "pcideviceclaim", "n1-000000190")
    check(rc == 0 and "Warning  Refused" in out and "pcidevices.io/agent" in out and "default route" in out,
          "kubectl describe shows the refusal's Event", out[-800:])
    # Claims already answered are not written again (this is what a claim event costs: nothing
    # for the others), and a status write that fails (HTTP 500 once) is retried after a
    # back-off, with no new event.
    api.control("POST", "reset-stats")
    api.control("POST", "fail?verb=PATCH&count=1&code=500&resource=pcideviceclaims&subresource=status")
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("retry-me", "nope"))
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("conditions") else None)(
        api.get("pcideviceclaims", "retry-me")), timeout=10)
    stats = api.control("GET", "stats")
    by = stats.get("writes_by_resource", {})
    # The user's create, the failed status write and its retry; and the refusal's one Event.
    check(c is not None and stats["writes"] == 4 and by.get("pcideviceclaims", 0) + by.get("pcideviceclaims/status", 0) == 3,
          "a failed claim status write is retried; no other claim written; one Event", json.dumps(stats)[:600])
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n2-000081000", "0000:81:00.0", node="n2"))
    time.sleep(1)
    c = api.get("pcideviceclaims", "n2-000081000")
    check(c is not None and not c.get("status") and not c["metadata"].get("finalizers"),
          "another node's claim is left alone", json.dumps(c)[:400])

    # A USB claim: its plugin served, USBDevice.enabled, KubeVirt's usb entry; deleted: all undone.
    stick = "n1-0951-1666-001004"
    usb_claim = {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "USBDeviceClaim",
                 "metadata": {"name": stick}, "spec": {"userName": "admin"}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(usb_claim))
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("pciAddress") else None)(
        api.get("usbdeviceclaims", stick)))
    check(c is not None and c["status"].get("nodeName") == NODE and c["status"]["pciAddress"] == "0000:00:14.0"
          and "devices.harvesterhci.io/pcidevices-agent" in c["metadata"].get("finalizers", []),
          "USB claim: nodeName, pciAddress, finalizer", json.dumps(c)[:600])
    e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == f"kubevirt.io/{stick}", timeout=10)
    check(e is not None and [d["health"] for d in e["devices"]] == ["Healthy"], "USB claim: plugin served")
    u = wait_for(lambda: (lambda o: o if o and o["status"].get("enabled") else None)(api.get("usbdevices", stick)))
    check(u is not None, "USBDevice status.enabled true")
    kv = wait_for(lambda: (lambda k: k if k else None)(
        (api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}).get("spec", {}).get("configuration", {})
        .get("permittedHostDevices", {}).get("usb")))
    check(kv == [{"resourceName": f"kubevirt.io/{stick}", "selectors": [{"vendor": "0951", "product": "1666"}],
                  "externalResourceProvider": True}], "KubeVirt: the usb entry", json.dumps(kv))
    rc, out = api.kubectl("delete", "usbdeviceclaim", stick, "--timeout=20s")
    check(rc == 0, "USB claim deleted", out)
    u = wait_for(lambda: (lambda o: o if o and o["status"].get("enabled") is False else None)(api.get("usbdevices", stick)))
    check(u is not None, "USBDevice status.enabled false again")
    kv = wait_for(lambda: (lambda k: True if not k else None)(
        (api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}).get("spec", {}).get("configuration", {})
        .get("permittedHostDevices", {}).get("usb")))
    check(kv is not None, "KubeVirt: the usb entry removed")

    # A device another plugin has given to a pod (an SR-IOV network VF, named by its address) is
    # not taken: the claim says DeviceInUse and is served once the pod is gone.
    emu.send("hold vm-net intel.com/sriov_net 0000:81:00.1")
    emu.wait(lambda e: e["event"] == "hold", timeout=5)
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081001", "0000:81:00.1"))
    c = wait_for(lambda: (lambda o: o if o and any(
        x.get("reason") == "DeviceInUse" for x in o.get("status", {}).get("conditions", [])) else None)(
        api.get("pcideviceclaims", "n1-000081001")), timeout=15)
    check(c is not None and c["status"].get("passthroughEnabled") is False and
          "0000:81:00.1" not in open(f"{state}/state.json").read(),
          "claim for a device another plugin's pod holds: DeviceInUse, not taken", json.dumps(c)[:600])
    # The refusal is asked again after the claims' back-off: one Event, its series counting.
    def in_use_events():
        return [e for e in (api.get("events.v1.events.k8s.io", namespace="default") or {"items": []})["items"]
                if e["regarding"]["name"] == "n1-000081001" and e.get("reason") == "DeviceInUse"]
    in_use = wait_for(lambda: (lambda l: l if l and (l[0].get("series") or {}).get("count", 1) >= 2 else None)(
        in_use_events()), timeout=40, interval=0.5) or in_use_events()
    check(len(in_use) == 1 and (in_use[0].get("series") or {}).get("count", 1) >= 2,
          "repeated DeviceInUse refusals are one Event with a series, not an Event each", json.dumps(in_use))
    emu.send("delete vm-net")
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
        api.get("pcideviceclaims", "n1-000081001")), timeout=40)
    check(c is not None, "that pod gone: the claim is served")
    rc, out = api.kubectl("delete", "pcideviceclaim", "n1-000081001", "--timeout=20s")
    check(rc == 0 and "0000:81:00.1" not in open(f"{state}/state.json").read(), "and given back", out)

    # The watch cut and the history compacted: a claim made meanwhile is still served (410 -> relist).
    api.control("POST", "cut-watches")
    api.control("POST", "compact")
    rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081001", "0000:81:00.1"))
    c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
        api.get("pcideviceclaims", "n1-000081001")), timeout=20)
    check(c is not None, "claim made across a cut watch and a compaction is served")
    entries = wait_for(lambda: (lambda e: e if any(x.get("resourceName") == AUDIO for x in e) else None)(host_devices(api)))
    check(entries is not None and len(entries) == 3, "KubeVirt: the audio function's entry added", json.dumps(entries))

    # The token rotated (the old one refused from now on), the watches cut: the agent re-reads its
    # token file and carries on (the steps below need it).
    api.control("POST", "rotate-token")
    api.token = open(os.path.join(os.path.dirname(api.kubeconfig), "token")).read().strip()
    api.control("POST", "cut-watches")

    # The API server away (its HTTPS port closed) for 4 s: the plugins keep serving; a claim
    # deleted meanwhile (over the emulator's plain-HTTP port) is given back once it is reachable.
    api.control("POST", "down?seconds=4&mode=refuse")
    time.sleep(0.5)
    n = len(emu.backlog)
    emu.send(f"allocate {GPU} 0000:81:00.0 pod-outage")
    e = emu.wait(lambda e: e["event"] == "allocate" and e.get("resource") == GPU, timeout=10)
    check(e is not None and e.get("ok"), "Allocate answered while the API server is away", json.dumps(e)[:300])
    emu.send("delete pod-outage")
    code = api.http("DELETE", "/apis/devices.harvesterhci.io/v1beta1/pcideviceclaims/n1-000081001")
    check(code == 200, f"claim deleted during the outage (plain-HTTP port): {code}")
    time.sleep(4)
    check(daemon.poll() is None, "daemon alive through the outage")
    gone = wait_for(lambda: api.get("pcideviceclaims", "n1-000081001") is None, timeout=30)
    check(gone, "after the outage: the device given back and the finalizer released")

    # Broken JSON from the API server (on the relist a cut watch forces): reported, retried.
    api.control("POST", "garbage?count=4")
    api.control("POST", "cut-watches")
    time.sleep(2)
    check(daemon.poll() is None, "daemon alive after broken JSON answers")

    # Deleting the claim gives the device back first, then the object goes; while a pod holds the
    # device the deletion waits (the claim says why, still passed through), and goes through once
    # the pod is gone, with no other event to wake the agent.
    emu.send(f"allocate {GPU} 0000:81:00.0 vm-a")
    e = emu.wait(lambda e: e["event"] == "allocate" and e.get("resource") == GPU, timeout=10)
    check(e is not None and e.get("ok"), "the claimed GPU allocated to a pod", json.dumps(e)[:300])
    rc, out = api.kubectl("delete", "pcideviceclaim", "n1-000081000", "--wait=false")
    c = wait_for(lambda: (lambda o: o if o and any(
        x.get("reason") == "DeviceInUse" for x in o.get("status", {}).get("conditions", [])) else None)(
        api.get("pcideviceclaims", "n1-000081000")), timeout=15)
    check(c is not None and c["status"].get("passthroughEnabled") is True and
          "0000:81:00.0" in open(f"{state}/state.json").read(),
          "claim deleted while a pod holds its device: waits, says DeviceInUse, still passed through",
          json.dumps(c)[:600])
    emu.send("delete vm-a")
    gone = wait_for(lambda: api.get("pcideviceclaims", "n1-000081000") is None, timeout=40)
    check(gone, "the pod gone: the device given back and the claim deleted")
    check("0000:81:00.0" not in open(f"{state}/state.json").read(), "device released from the state file")
    entries = wait_for(lambda: (lambda e: e if e == [ADMIN_ENTRY] else None)(host_devices(api)))
    check(entries is not None, "KubeVirt: our entries removed with the claims, the administrator's kept",
          json.dumps(host_devices(api)))
    check(api.get("pcidevices", "n2-000001000")["metadata"]["resourceVersion"] == other_rv,
          "another node's PCIDevice never written")


if __name__ == "__main__":
    sys.exit(main())
