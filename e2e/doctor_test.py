#!/usr/bin/env python3
"""`pcidevices doctor` against the API-server emulator (objects made by the real daemon and kubectl)
and the gpu-node fixture tree: one all-✓ case, then each ✗ line and its fix.

The daemon serves 81:00.0 (already on vfio-pci) for a PCIDeviceClaim; the Node object's capacity
is set with kubectl (the kubelet emulator does not write Nodes). Cases:
  all ✓: n1-000081000 with --kubeconfig (cluster and node checks), exit 0, text and JSON;
  ✗ PCIDevice: a name on a node with no agent; ✗ claim and KubeVirt entry: 81:00.1 unclaimed;
  ✗ node capacity: the Node's allocatable 0; ✗ API server: nothing listening (fast, exit 1);
  ✗ driver, IOMMU group, /dev/vfio, intent, device plugin: 01:00.0 on nvidia with its audio;
  ✗ not protected: 00:19.0 carries the default route; ✗ PCI function: an address not on the node;
  bad usage: exit 2; USB: all ✓ for the claimed flash drive, ✗ for a hub and for a name nothing
  has, ✗ USBDevice orphaned and ✗ USB device (where to plug it back) after the drive was removed
  while the agent was down. The doctor never writes: the trees and the API server's write count
  are unchanged by it.

usage: doctor_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE"""
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from device_plugin_test import Emulator, stop_process  # noqa: E402
from projection_test import check, claim, failures, gpu_node, run_with_api, wait_for, writes  # noqa: E402

NODE = "n1"
GPU = "nvidia.com/GP106_GEFORCE_GTX_1060_6GB"
STICK = "n1-0951-1666-001004"  # the Kingston flash drive on port 1
STICK_RESOURCE = f"kubevirt.io/{STICK}"


def tree_snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                out[p] = open(p, "rb").read() if not os.path.islink(p) else os.readlink(p)
            except OSError:
                out[p] = None
    return out


def main():
    return run_with_api("pcid-doctor-", run)


def kubectl_plugin(api, tmp, pcidevices, count):
    """`kubectl pcidevices ...`: the binary symlinked as kubectl-pcidevices on the PATH, found
    and run by the real kubectl."""
    os.makedirs(f"{tmp}/bin", exist_ok=True)
    os.symlink(os.path.abspath(pcidevices), f"{tmp}/bin/kubectl-pcidevices")
    env = dict(os.environ, PATH=f"{tmp}/bin:" + os.environ.get("PATH", ""), KUBECONFIG=api.kubeconfig)

    def kubectl(*args):
        p = subprocess.run(["kubectl", "pcidevices", *args], capture_output=True, text=True, env=env,
                           timeout=30)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = kubectl("list")
    lines = out.splitlines()
    check(rc == 0 and lines and lines[0].split() == ["NAME", "NODE", "ADDRESS", "DRIVER", "RESOURCE", "CLAIMED"]
          and any(line.split()[:3] == ["n1-000081000", NODE, "0000:81:00.0"] and line.split()[-1] == "yes"
                  for line in lines) and len(lines) == 1 + count,
          "kubectl pcidevices list: every PCIDevice, the claimed GPU marked", out + err)
    rc, out, err = kubectl("list", "--node", "n9", "--output", "json")
    check(rc == 0 and json.loads(out or "null") == [], "kubectl pcidevices list --node n9: none", out + err)
    rc, out, err = kubectl("doctor", "n1-000081000")
    check(rc == 0 and out.count("✓ ") == 4 and "PCI function" not in out,
          "kubectl pcidevices doctor: the cluster's checks only, all ✓", out + err)
    rc, out, err = kubectl("doctor", "n1-000081001")
    check(rc == 1 and "✗ PCIDeviceClaim" in out, "kubectl pcidevices doctor: a failed check, exit 1", out + err)
    rc, out, err = kubectl("frobnicate")
    check(rc == 2 and "usage: kubectl pcidevices" in err, "kubectl pcidevices frobnicate: usage, exit 2", err)


def run(api, tmp, pcidevices, emulator_bin, make_tree):
    api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    api.kubectl("apply", "-f", f"{HERE}/apiserver/kubevirt-crd.yaml")
    api.kubectl("create", "namespace", "kubevirt")
    api.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                                                     "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                                                     "spec": {}}))
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
    check(rc == 0, "Node object created", out)
    sysfs, dev, proc, state, plugins, config, listed = gpu_node(tmp, pcidevices, make_tree)
    emu = Emulator(emulator_bin, plugins, f"{tmp}/pr.sock")
    log = open(f"{tmp}/daemon.log", "w+")
    daemon = subprocess.Popen([pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE,
                               "--config", config, "--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc,
                               "--state-dir", state, "--device-plugin-dir", plugins, "--pod-resources-socket",
                               f"{tmp}/pr.sock", "--kubeconfig", api.kubeconfig_tokenfile], stderr=log)
    roots = ["--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc, "--state-dir", state,
             "--device-plugin-dir", plugins, "--pod-resources-socket", f"{tmp}/pr.sock"]

    def doctor(*args, kube=True, output="text"):
        t0 = time.monotonic()
        p = subprocess.run([pcidevices, "doctor", *args, *roots, "--output", output] +
                           (["--kubeconfig", api.kubeconfig] if kube else []),
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout + p.stderr, time.monotonic() - t0

    def failed(out):
        return [line[2:].split(":")[0] for line in out.splitlines() if line.startswith("✗ ")]

    try:
        rc, out = api.kubectl("apply", "-f", "-", stdin=claim("n1-000081000", "0000:81:00.0"))
        c = wait_for(lambda: (lambda o: o if o and o.get("status", {}).get("passthroughEnabled") else None)(
            api.get("pcideviceclaims", "n1-000081000")), timeout=20)
        check(c is not None, "claim enabled by the daemon")
        wait_for(lambda: os.path.exists(f"{plugins}/kubevirt-nvidia.com-GP106_GEFORCE_GTX_1060_6GB.sock"))
        wait_for(lambda: any(e.get("resourceName") == GPU for e in
                             (api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}).get("spec", {})
                             .get("configuration", {}).get("permittedHostDevices", {}).get("pciHostDevices", [])))
        # The flash drive, claimed too.
        rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "USBDeviceClaim",
             "metadata": {"name": STICK}, "spec": {"userName": "admin"}}))
        check(rc == 0, "USBDeviceClaim created", out)
        check(wait_for(lambda: os.path.exists(f"{plugins}/kubevirt-kubevirt.io-{STICK}.sock") and
                       (api.get("usbdevices", STICK) or {}).get("status", {}).get("enabled"), timeout=20),
              "the claimed flash drive is served and enabled")
        rc, out = api.kubectl("patch", "node", NODE, "--subresource=status", "--type=merge", "-p",
                              json.dumps({"status": {"capacity": {GPU: "1", STICK_RESOURCE: "1"},
                                                     "allocatable": {GPU: "1", STICK_RESOURCE: "1"}}}))
        check(rc == 0, "Node capacity set", out)

        before_tree = tree_snapshot(tmp + "/sys") | tree_snapshot(state)
        api.control("POST", "reset-stats")

        rc, out, took = doctor("n1-000081000")
        check(rc == 0 and out.count("✓ ") == 12 and "✗" not in out and "✓ holder: no pod holds it" in out,
              f"all ✓ for the claimed GPU, exit 0 ({took * 1000:.0f} ms)", out)
        rc, out, _ = doctor("n1-000081000", output="json")
        j = json.loads(out) if rc == 0 else {}
        check(j.get("ok") is True and len(j.get("checks", [])) == 12, "the same as JSON", out[:400])
        kubectl_plugin(api, tmp, pcidevices, len(listed))
        emu.send(f"allocate {GPU} 0000:81:00.0 vm-a")
        emu.wait(lambda e: e["event"] == "allocate", timeout=10)
        held = wait_for(lambda: (lambda r: r if "held by" in r[1] else None)(doctor("n1-000081000")), timeout=10)
        check(held is not None and held[0] == 0 and "vm-a" in held[1],
              "✓ holder names the pod the kubelet gave the device to", held[1] if held else "")
        p = subprocess.run([pcidevices, "doctor", "0000:81:00.0", *roots[:-1], config],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and "✗ holder: cannot ask the kubelet" in p.stdout,
              "✗ holder when the PodResources socket does not answer", p.stdout + p.stderr)

        rc, out, took = doctor(STICK)
        check(rc == 0 and out.count("✓ ") == 9 and "✗" not in out and "✓ recorded: followed across re-plug" in out
              and "at port 0000:00:14.0-1" in out,
              f"all ✓ for the claimed flash drive, exit 0 ({took * 1000:.0f} ms)", out)
        rc, out, _ = doctor("n1-05e3-0608-001002", kube=False)
        check(rc == 1 and failed(out) == ["USB device"] and "is a hub" in out, "✗ USB device: a hub", out)
        rc, out, _ = doctor("n1-0951-1666-001099")
        check(rc == 1 and {"USBDevice", "USB device"} <= set(failed(out)) and "not on this node" in out,
              "✗ USBDevice and ✗ USB device for a name nothing has", out)

        rc, out, _ = doctor("n9-000081000")
        check(rc == 1 and failed(out)[:1] == ["PCIDevice"] and "is the agent running on n9" in out,
              "✗ PCIDevice of a node without an agent, with its fix", out)
        rc, out, _ = doctor("n1-000081001")
        check(rc == 1 and "PCIDeviceClaim" in failed(out) and "KubeVirt" in failed(out) and
              "create a PCIDeviceClaim named n1-000081001" in out,
              "✗ claim and ✗ KubeVirt entry for the unclaimed audio function", out)
        api.kubectl("patch", "node", NODE, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"allocatable": {GPU: "0"}}}))
        rc, out, _ = doctor("n1-000081000")
        check(rc == 1 and failed(out) == ["node capacity"] and "allocatable 0" in out,
              "✗ node capacity when the kubelet offers none", out)
        rc, out, _ = doctor("n1-000001000")
        check(rc == 1 and {"driver", "IOMMU group", "/dev/vfio", "intent"} <= set(failed(out)) and
              "0000:01:00.1 is on snd_hda_intel" in out,
              "✗ driver, IOMMU group (naming the blocking group-mate), /dev/vfio, intent for 01:00.0", out)
        rc, out, _ = doctor("0000:00:19.0", kube=False)
        check(rc == 1 and {"not protected", "device plugin"} <= set(failed(out)) and "default route" in out
              and "kubevirt-intel.com-I210_GIGABIT_NETWORK_CONNECTION.sock is missing" in out,
              "✗ not protected for the NIC with the default route, ✗ device plugin (no socket)", out)
        rc, out, _ = doctor("0000:00:1e.0", kube=False)
        check(rc == 1 and failed(out) == ["PCI function"], "✗ PCI function not on this node", out)

        # Nothing listening: one ✗ line, fast; node checks still run.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        dead = f"{tmp}/dead-kubeconfig"
        text = open(api.kubeconfig).read()
        import re
        with open(dead, "w") as f:
            f.write(re.sub(r"https://127\.0\.0\.1:\d+", f"https://127.0.0.1:{port}", text))
        t0 = time.monotonic()
        p = subprocess.run([pcidevices, "doctor", "n1-000081000", *roots, "--kubeconfig", dead],
                           capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
        check(p.returncode == 1 and "✗ API server" in p.stdout and took < 10,
              f"✗ API server unreachable, exit 1 in {took:.1f} s", p.stdout + p.stderr)

        for args in (["../x"], [], ["a", "b"], ["0000:81:00.0", "--output", "yaml"],
                     ["0000:81:00.0", "--kubeconfig", api.kubeconfig]):
            p = subprocess.run([pcidevices, "doctor", *args], capture_output=True, text=True, timeout=10)
            check(p.returncode == 2 and "usage: pcidevices doctor" in p.stderr + p.stdout or
                  p.returncode == 2 and "--node" in p.stderr, f"bad usage {args}: exit 2 ({p.returncode})",
                  p.stderr[-300:])

        stats = api.control("GET", "stats")
        check(writes(stats) == 1 and tree_snapshot(tmp + "/sys") | tree_snapshot(state) == before_tree,
              "the doctor wrote nothing: one API write (the test's Node patch), trees unchanged",
              json.dumps(stats)[:300])
        # Unplugged while the agent is down: orphaned after its restart, and the doctor says where
        # to plug it back in.
        stop_process(daemon)
        os.unlink(f"{sysfs}/bus/usb/devices/1-1")
        daemon = subprocess.Popen(daemon.args, stderr=log)
        o = wait_for(lambda: (lambda x: x if x and x.get("status", {}).get("status") == "orphaned" else None)(
            api.get("usbdevices", STICK)), timeout=20)
        check(o is not None, "the flash drive gone while the agent was down is orphaned after its restart")
        rc, out, _ = doctor(STICK)
        check(rc == 1 and {"USBDevice", "USB device"} <= set(failed(out)) and "is orphaned" in out and
              "plug it back in (serial 60A44C413A8CF3A0B99A0044, any port)" in out,
              "✗ USBDevice orphaned and ✗ USB device not plugged in, with where to plug it", out)
    finally:
        stop_process(daemon)
        emu.stop()
        if failures:
            log.seek(0)
            print("--- daemon log (tail) ---\n" + "".join(log.readlines()[-30:]))


if __name__ == "__main__":
    sys.exit(main())
