#!/usr/bin/env python3
"""Mediated devices with the real device owner and the cluster: the daemon on the gpu-node fixture
tree whose GTX 1060 (0000:01:00.0) is made an mdev parent offering NVIDIA's type nvidia-746
("NVIDIA A2-4Q", as Harvester's test data names it), an mdev the state file records and the
"kernel" already has, the API-server emulator, the real kubectl and the kubelet emulator. A
fixture tree has no kernel, so nothing here is created; creation, re-creation and removal by a
real kernel are e2e_vm_mdev's.

Checked: `pcidevices doctor <UUID>` on the node and the cluster; the recorded mdev is served
without a write (ListAndWatch, Allocate with KubeVirt's
MDEV_PCI_RESOURCE_ variable and the group node); KubeVirt's permittedHostDevices gets one
mediatedDevices entry {mdevNameSelector: the type's name, resourceName, externalResourceProvider:
true}, and kubectl shows it; the config dropping it while a pod holds it keeps it; once the pod is
gone the daemon writes `1` to its `remove`, forgets it, and removes the KubeVirt entry (no other
node serves the type); a quiet node writes nothing. The GPU's VGPUDevice, which an earlier run
made and a user enabled, driven with kubectl: its recorded mdev recognised without a write and
shown (vGPUStatus, uuid, configureVGPUTypeName, printer columns); an unknown type refused as a
condition; disabled (1 written to its remove, forgotten, status cleared); enabled again (a new
UUID written to create, which without a kernel fails as a condition); another node's VGPUDevice
never touched. NVIDIA's vendor design on the second GPU (fixture files shaped like upstream's L40S
test data): every creatable type offered, enabling writes the type's id to current_vgpu_type and
records it, the VF served under the type's resource (ListAndWatch, Allocate with KubeVirt's
PCI_RESOURCE_ variable) with a pciHostDevices entry, a restart after the driver forgot it writes it
again, disabling writes 0 and removes the entry.

usage: mdev_daemon_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE"""
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
from projection_test import check, failures, gpu_node, run_with_api, wait_for, writes  # noqa: E402

NODE = "n1"
GPU = "0000:01:00.0"
TYPE, TYPE_NAME = "nvidia-746", "NVIDIA A2-4Q"
RESOURCE = "nvidia.com/NVIDIA_A2-4Q"
ENV = "MDEV_PCI_RESOURCE_NVIDIA_COM_NVIDIA_A2-4Q"
UUID = "95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c"
GROUP = "40"
# The GPU's VGPUDevice (named like its PCIDevice) and the mdev a previous run made for it.
VGPU = "n1-000001000"
VGPU_UUID = "3c1c6f0e-8d0b-4c55-9a39-1f0d5b8f2a77"
VGPU_GROUP = "41"
# The second GPU, given NVIDIA's vendor vGPU files.
VENDOR_VF = "0000:81:00.0"
VENDOR_VGPU = "n1-000081000"
VENDOR_RESOURCE = "nvidia.com/NVIDIA_L40S-12A"
VENDOR_ENV = "PCI_RESOURCE_NVIDIA_COM_NVIDIA_L40S-12A"


def add_mdev_parent(sysfs, dev):
    """The GPU as an mdev parent with one type and two mdevs (the config's, the VGPUDevice's), laid
    out as the kernel lays them."""
    gpu = os.path.normpath(os.path.join(f"{sysfs}/bus/pci/devices", os.readlink(f"{sysfs}/bus/pci/devices/{GPU}")))
    t = f"{gpu}/mdev_supported_types/{TYPE}"
    os.makedirs(f"{t}/devices")
    for name, text in (("name", TYPE_NAME), ("available_instances", "1"), ("device_api", "vfio-pci"),
                       ("description", "num_heads=4, frl_config=60, framebuffer=4096M"), ("create", "")):
        with open(f"{t}/{name}", "w") as f:
            f.write(text + ("\n" if text else ""))
    os.makedirs(f"{sysfs}/class/mdev_bus", exist_ok=True)
    os.symlink(os.path.relpath(gpu, f"{sysfs}/class/mdev_bus"), f"{sysfs}/class/mdev_bus/{GPU}")
    dirs = []
    for uuid, group in ((UUID, GROUP), (VGPU_UUID, VGPU_GROUP)):
        m = f"{gpu}/{uuid}"
        os.makedirs(m)
        open(f"{m}/remove", "w").close()
        os.symlink(f"../mdev_supported_types/{TYPE}", f"{m}/mdev_type")
        os.makedirs(f"{sysfs}/kernel/iommu_groups/{group}/devices", exist_ok=True)
        os.symlink(os.path.relpath(f"{sysfs}/kernel/iommu_groups/{group}", m), f"{m}/iommu_group")
        os.makedirs(f"{sysfs}/bus/mdev/devices", exist_ok=True)
        os.symlink(os.path.relpath(m, f"{sysfs}/bus/mdev/devices"), f"{sysfs}/bus/mdev/devices/{uuid}")
        open(f"{dev}/vfio/{group}", "w").close()
        dirs.append(m)
    return t, dirs[0], dirs[1]


def mdev_entries(api):
    kv = api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}
    return kv.get("spec", {}).get("configuration", {}).get("permittedHostDevices", {}).get("mediatedDevices", [])


def write_config(path, count):
    with open(path, "w") as f:
        json.dump({"enable": [], "mdevs": [{"parent": GPU, "type": TYPE, "count": count}]}, f)


def doctor(pcidevices, api, tmp, sysfs, dev, proc, state, plugins):
    """`pcidevices doctor UUID` on the node, then on the cluster only; and a UUID nobody has."""
    roots = ["--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc, "--state-dir", state,
             "--device-plugin-dir", plugins, "--pod-resources-socket", f"{tmp}/pr.sock"]
    p = subprocess.run([pcidevices, "doctor", UUID, *roots], capture_output=True, text=True)
    check(p.returncode == 0 and f"mdev {UUID}: type {TYPE} ({TYPE_NAME}) on {GPU}" in p.stdout and
          "group 40, /dev/vfio/40" in p.stdout and "held by default/vm1/compute" in p.stdout and
          "kept by the agent" in p.stdout, "doctor UUID: every node check passes", p.stdout + p.stderr)
    p = subprocess.run([pcidevices, "doctor", UUID, "--cluster-only", "--kubeconfig", api.kubeconfig,
                        "--output", "json", *roots], capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(p.stdout or "{}").get("checks", [])} if p.stdout else {}
    check(p.returncode == 0 and checks.get("KubeVirt", {}).get("ok") is True,
          "doctor UUID --cluster-only: KubeVirt lists the type's resource", p.stdout + p.stderr)
    other = "0b7f7a2c-9f4b-4d1e-8a55-2d7c6b1f0e11"
    p = subprocess.run([pcidevices, "doctor", other, *roots], capture_output=True, text=True)
    check(p.returncode == 1 and f"mdev {other} is not on this node" in p.stdout,
          "doctor of an unknown UUID: a failed check saying so", p.stdout + p.stderr)


def vgpu_status(api, name=VGPU):
    return (api.get("vgpudevices", name) or {}).get("status", {})


def ready(status):
    return next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})


def vgpu_device(api, state, type_dir, vgpu_dir, log):
    """The VGPUDevice of the GPU, driven with kubectl: the recorded mdev recognised without a write,
    a wrong type refused as a condition, disabled (its mdev removed and forgotten), enabled again
    (a UUID written to create; the fixture has no kernel to make it, which the condition names)."""
    st = vgpu_status(api)
    check(st.get("vGPUStatus") == "vGPUConfigured" and st.get("configureVGPUTypeName") == TYPE_NAME and
          ready(st).get("status") == "True" and ready(st).get("reason") == "Configured" and
          open(f"{type_dir}/create").read() == "",
          "VGPUDevice: vGPUConfigured, the type's name, Ready, nothing written", json.dumps(st))
    rc, out = api.kubectl("get", "vgpudevices")
    row = next((line.split() for line in out.splitlines() if line.startswith(VGPU)), [])
    check(rc == 0 and out.split()[:2] == ["NAME", "ADDRESS"] and row[:5] == [VGPU, GPU, NODE, "true", VGPU_UUID],
          "kubectl get vgpudevices: Address, Node Name, Enabled, UUID, VGPUType columns", out)
    check(vgpu_status(api, "n2-000001000") == {}, "another node's VGPUDevice: untouched")

    rc, out = api.kubectl("patch", "vgpudevice", VGPU, "--type", "merge", "-p",
                          json.dumps({"spec": {"vGPUTypeName": "NVIDIA A2-8Q"}}))
    bad = wait_for(lambda: ready(vgpu_status(api)).get("reason") == "UnknownType", timeout=10)
    st = vgpu_status(api)
    check(rc == 0 and bad is not None and "offers no vGPU type \"NVIDIA A2-8Q\"" in ready(st).get("message", "") and
          st.get("uuid") == VGPU_UUID and VGPU_UUID in open(f"{state}/state.json").read(),
          "an unknown type: Ready=False UnknownType, the mdev kept", json.dumps(st))
    rc, out = api.kubectl("get", "vgpudevice", VGPU, "-o", "jsonpath={.status.conditions[0].message}")
    check("NVIDIA A2-8Q" in out, "kubectl shows why", out)

    api.kubectl("patch", "vgpudevice", VGPU, "--type", "merge", "-p",
                json.dumps({"spec": {"enabled": False, "vGPUTypeName": TYPE_NAME}}))
    off = wait_for(lambda: vgpu_status(api).get("uuid") == "" and ready(vgpu_status(api)).get("reason") == "Disabled",
                   timeout=10)
    check(off is not None and open(f"{vgpu_dir}/remove").read() == "1" and
          VGPU_UUID not in open(f"{state}/state.json").read() and vgpu_status(api).get("vGPUStatus") == "",
          "disabled: 1 written to its remove, forgotten, status cleared", json.dumps(vgpu_status(api)))

    api.kubectl("patch", "vgpudevice", VGPU, "--type", "merge", "-p", json.dumps({"spec": {"enabled": True}}))
    failed = wait_for(lambda: ready(vgpu_status(api)).get("reason") == "CreateFailed", timeout=10)
    msg = ready(vgpu_status(api)).get("message", "")
    written = open(f"{type_dir}/create").read()
    tried = re.search(r"^mdev ([0-9a-f-]{36}): ", msg)  # a retry may have written another since
    check(failed is not None and tried is not None and re.fullmatch(r"[0-9a-f-]{36}", written) and
          f"bus/mdev/devices/{tried.group(1)} is missing" in msg and
          tried.group(1) not in open(f"{state}/state.json").read(),
          "enabled again: a new lower-case UUID written to create; no kernel made it: CreateFailed, "
          "not recorded", f"{written!r} {msg}")
    api.kubectl("patch", "vgpudevice", VGPU, "--type", "merge", "-p", json.dumps({"spec": {"enabled": False}}))
    check(wait_for(lambda: ready(vgpu_status(api)).get("reason") == "Disabled", timeout=10) is not None,
          "disabled again", json.dumps(vgpu_status(api)))


def add_vendor_vgpu(sysfs):
    """NVIDIA's vendor vGPU files (kernel 6.8+ drivers) on the second GPU, shaped like upstream's
    test data for an L40S VF. A fixture file reads back what was written, as the driver does for a
    type it accepts."""
    d = f"{sysfs}/bus/pci/devices/{VENDOR_VF}/nvidia"
    os.makedirs(d)
    with open(f"{d}/creatable_vgpu_types", "w") as f:
        f.write("ID    : vGPU Name\n1145  : NVIDIA L40S-1B\n1163  : NVIDIA L40S-12A\n2164  : NVIDIA L40S-3B\n")
    with open(f"{d}/current_vgpu_type", "w") as f:
        f.write("0\n")
    return f"{d}/current_vgpu_type"


def pci_entries(api):
    kv = api.get("kubevirts", "kubevirt", namespace="kubevirt") or {}
    return kv.get("spec", {}).get("configuration", {}).get("permittedHostDevices", {}).get("pciHostDevices", [])


def vendor_vgpu_device(api, emu, state, current):
    """The vendor design driven with kubectl: the type's id written to current_vgpu_type,
    recorded, shown (status.uuid is the id, as upstream's)."""
    st = wait_for(lambda: vgpu_status(api, VENDOR_VGPU).get("availableTypes"), timeout=10)
    check(st == {"NVIDIA L40S-1B": "1145", "NVIDIA L40S-12A": "1163", "NVIDIA L40S-3B": "2164"},
          "vendor VGPUDevice: every creatable type available", json.dumps(vgpu_status(api, VENDOR_VGPU)))
    api.kubectl("patch", "vgpudevice", VENDOR_VGPU, "--type", "merge", "-p",
                json.dumps({"spec": {"enabled": True, "vGPUTypeName": "NVIDIA L40S-12A"}}))
    on = wait_for(lambda: vgpu_status(api, VENDOR_VGPU).get("uuid") == "1163", timeout=10)
    st = vgpu_status(api, VENDOR_VGPU)
    check(on is not None and open(current).read().strip() == "1163" and
          st.get("configureVGPUTypeName") == "NVIDIA L40S-12A" and st.get("vGPUStatus") == "vGPUConfigured" and
          '"vgpuTypes"' in open(f"{state}/state.json").read(),
          "enabled: 1163 written to current_vgpu_type, recorded, shown", json.dumps(st))
    e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == VENDOR_RESOURCE and
                 [d["id"] for d in e["devices"]] == [VENDOR_VF], timeout=10)
    check(e is not None, f"ListAndWatch {VENDOR_RESOURCE}: the VF")
    a = emu.call(f"allocate {VENDOR_RESOURCE} {VENDOR_VF} vm2", "allocate")
    c = (a or {}).get("containers", [{}])[0]
    check(a is not None and a.get("ok") and c.get("envs", {}).get(VENDOR_ENV) == VENDOR_VF,
          "Allocate: KubeVirt's PCI_RESOURCE_ variable with the VF's address", json.dumps(a))
    emu.send("delete vm2")
    want = {"pciVendorSelector": "10de:1c03", "resourceName": VENDOR_RESOURCE, "externalResourceProvider": True}
    check(wait_for(lambda: want in pci_entries(api), timeout=10) is not None,
          "KubeVirt: a pciHostDevices entry for the vGPU type's resource", json.dumps(pci_entries(api)))


def main():
    return run_with_api("pcid-mdev-", run)


def run(api, tmp, pcidevices, emulator_bin, make_tree):
    rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/crds/")
    check(rc == 0, "kubectl apply -f deploy/crds/", out)
    api.kubectl("apply", "-f", f"{HERE}/apiserver/kubevirt-crd.yaml")
    api.kubectl("create", "namespace", "kubevirt")
    kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
          "metadata": {"name": "kubevirt", "namespace": "kubevirt"}, "spec": {}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(kv))
    check(rc == 0, "KubeVirt object created", out)

    sysfs, dev, proc, state, plugins, config, _ = gpu_node(tmp, pcidevices, make_tree)
    type_dir, mdev_dir, vgpu_dir = add_mdev_parent(sysfs, dev)
    current = add_vendor_vgpu(sysfs)
    os.makedirs(state)
    with open(f"{state}/state.json", "w") as f:
        json.dump({"version": 1, "devices": [],
                   "mdevs": [{"uuid": UUID, "parent": GPU, "type": TYPE, "sources": ["config"]},
                             {"uuid": VGPU_UUID, "parent": GPU, "type": TYPE,
                              "sources": [f"VGPUDevice/{VGPU}"]}]}, f)
    # Objects outlive the agent: the VGPUDevice an earlier run made and a user enabled, and another
    # node's, which this agent never touches.
    for node in (NODE, "n2"):
        obj = {"apiVersion": "devices.harvesterhci.io/v1beta1", "kind": "VGPUDevice",
               "metadata": {"name": f"{node}-000001000", "labels": {"nodename": node}},
               "spec": {"vGPUTypeName": TYPE_NAME, "address": GPU, "enabled": True, "nodeName": node,
                        "parentGPUDeviceAddress": ""}}
        rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        check(rc == 0, f"VGPUDevice {node}-000001000 created", out)
    write_config(config, 1)
    listed = json.loads(subprocess.run([pcidevices, "list", "--mdev", "--sysfs-root", sysfs, "--output", "json"],
                                       capture_output=True, text=True).stdout)
    check([m["uuid"] for m in listed["mdevs"]] == sorted([UUID, VGPU_UUID]) and
          listed["parents"][0]["types"][0]["resourceName"] == RESOURCE,
          "list --mdev shows the parent, its type's resource and the mdev", json.dumps(listed)[:600])

    emu = Emulator(emulator_bin, plugins, f"{tmp}/pr.sock")
    log = open(f"{tmp}/daemon.log", "w+")
    args = [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE, "--config", config,
            "--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc, "--state-dir", state,
            "--device-plugin-dir", plugins, "--pod-resources-socket", f"{tmp}/pr.sock",
            "--kubeconfig", api.kubeconfig_tokenfile]
    daemon = subprocess.Popen(args, stderr=log)
    try:
        both = sorted([(UUID, "Healthy"), (VGPU_UUID, "Healthy")])
        e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == RESOURCE and
                     sorted((d["id"], d["health"]) for d in e["devices"]) == both, timeout=15)
        check(e is not None, f"ListAndWatch {RESOURCE}: both recorded mdevs Healthy")
        check(open(f"{type_dir}/create").read() == "", "served without a write to create")
        a = emu.call(f"allocate {RESOURCE} {UUID} vm1", "allocate")
        c = (a or {}).get("containers", [{}])[0]
        check(a is not None and a.get("ok") and c.get("envs", {}).get(ENV) == UUID and
              sorted(d["host_path"] for d in c.get("devices", [])) == ["/dev/vfio/40", "/dev/vfio/vfio"],
              "Allocate: MDEV_PCI_RESOURCE_ with the UUID, /dev/vfio/vfio and the group node", json.dumps(a))
        want = [{"mdevNameSelector": TYPE_NAME, "resourceName": RESOURCE, "externalResourceProvider": True}]
        check(wait_for(lambda: mdev_entries(api) == want, timeout=15) is not None,
              "KubeVirt: one mediatedDevices entry for the type", json.dumps(mdev_entries(api)))
        shown = wait_for(lambda: vgpu_status(api).get("uuid") == VGPU_UUID, timeout=15)
        check(shown is not None, "VGPUDevice: the recorded mdev shown",
              json.dumps(api.get("vgpudevices", VGPU))[:800])
        doctor(pcidevices, api, tmp, sysfs, dev, proc, state, plugins)
        rc, out = api.kubectl("get", "kubevirt", "-n", "kubevirt", "kubevirt", "-o",
                              "jsonpath={.spec.configuration.permittedHostDevices.mediatedDevices[0].resourceName}")
        check(rc == 0 and out.strip() == RESOURCE, "kubectl shows it", out)
        api.control("POST", "reset-stats")
        time.sleep(3)
        stats = api.control("GET", "stats")
        check(writes(stats) == 0, "a quiet node writes nothing", json.dumps(stats)[:400])

        vgpu_device(api, state, type_dir, vgpu_dir, log)

        # Dropped from the config while vm1 holds it: kept until vm1 is gone.
        write_config(config, 0)
        daemon.send_signal(signal.SIGHUP)
        held = wait_for(lambda: "holds it: removed when it ends" in open(log.name).read(), timeout=10)
        check(held is not None and open(f"{mdev_dir}/remove").read() == "" and UUID in open(f"{state}/state.json").read(),
              "dropped while a pod holds it: kept, with a warning")
        emu.send("delete vm1")
        gone = wait_for(lambda: UUID not in open(f"{state}/state.json").read(), timeout=15)
        check(gone is not None and open(f"{mdev_dir}/remove").read() == "1",
              "once the pod is gone: 1 written to its remove, forgotten")
        check(wait_for(lambda: mdev_entries(api) == [], timeout=15) is not None,
              "and the KubeVirt entry removed (no other node serves the type)", json.dumps(mdev_entries(api)))

        vendor_vgpu_device(api, emu, state, current)
        # A reboot's stand-in: the driver forgot the type while the agent was down.
        stop_process(daemon)
        with open(current, "w") as f:
            f.write("0\n")
        daemon = subprocess.Popen(args, stderr=log)
        check(wait_for(lambda: open(current).read().strip() == "1163", timeout=10) is not None,
              "after a restart: the recorded vGPU type written again", open(current).read())
        api.kubectl("patch", "vgpudevice", VENDOR_VGPU, "--type", "merge", "-p",
                    json.dumps({"spec": {"enabled": False}}))
        off = wait_for(lambda: vgpu_status(api, VENDOR_VGPU).get("uuid") == "", timeout=10)
        # sysfs takes a write whole; a fixture file keeps the old text past what was written.
        check(off is not None and open(current).read().startswith("0") and
              '"vgpuTypes"' not in open(f"{state}/state.json").read(),
              "disabled: 0 written, forgotten",
              f"{off} {open(current).read()!r} {open(f'{state}/state.json').read()} " +
              json.dumps(vgpu_status(api, VENDOR_VGPU)))
        check(wait_for(lambda: not any(d.get("resourceName") == VENDOR_RESOURCE for d in pci_entries(api)),
                       timeout=10) is not None,
              "and its pciHostDevices entry removed", json.dumps(pci_entries(api)))
    finally:
        stop_process(daemon)
        check(daemon.returncode == 0, f"daemon stopped cleanly ({daemon.returncode})")
        emu.stop()
        if failures:
            log.seek(0)
            print("--- daemon log (tail) ---\n" + "".join(log.readlines()[-60:]))


if __name__ == "__main__":
    sys.exit(main())
