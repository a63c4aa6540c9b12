#!/usr/bin/env python3
"""Smoke test of the VM harness: boots the guest with the given binaries and does by hand (plain
shell writes, QMP) what the agent will do, so a harness problem is not mistaken for an agent bug.

usage: vm_smoke_test.py PCIDEVICES KUBELET_EMULATOR [--cache DIR] [--work DIR] [--smp N]
Exit code 0 when every check passed, 1 otherwise."""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vm import Vm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcidevices")
    ap.add_argument("kubelet_emulator")
    ap.add_argument("--cache", default="/tmp/pcidevices-vm-cache")
    ap.add_argument("--work", default="/tmp/pcidevices-vm-smoke")
    ap.add_argument("--smp", type=int, default=1)
    a = ap.parse_args()

    t0 = time.monotonic()
    ids = "/usr/share/misc/pci.ids"  # only for readable names in `pcidevices list`
    files = {ids: ids} if Path(ids).exists() else {}
    with Vm(a.cache, a.work, binaries=[a.pcidevices, a.kubelet_emulator], files=files,
            smp=a.smp) as vm:
        print(f"boot: built in {vm.build_seconds:.1f}s, ready {vm.boot_seconds:.1f}s after qemu "
              f"start (console log {vm.console_log})")
        smoke(vm)
    print(f"PASS in {time.monotonic() - t0:.1f}s total (boot-to-ready {vm.boot_seconds:.1f}s)")


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        raise SystemExit(f"FAILED: {what}\n{detail}")


def smoke(vm):
    # The command channel itself: exit codes, persistent state, output without a final newline,
    # text that looks like a marker, a syntax error, and `exit`.
    check("channel: rc and output", vm.run("echo hi; false") == (1, "hi\n"))
    vm.check("x=42; exec 7>/tmp/fd7")
    check("channel: state persists", vm.run("echo $x; echo y >&7; cat /tmp/fd7") == (0, "42\ny\n"))
    check("channel: no final newline", vm.run("printf abc") == (0, "abc"))
    check("channel: fake marker", vm.run("printf '\\n__VM_RC_0=0__\\n'")[1] == "\n__VM_RC_0=0__\n")
    check("channel: syntax error survives", vm.run("if")[0] != 0 and vm.run("echo $x")[1] == "42\n")
    check("channel: exit answers", vm.run("exit 3")[0] == 3 and vm.run("true")[0] == 0)

    rc, out = vm.run("pcidevices list --sysfs-root /sys")
    print(out)
    check("pcidevices list runs in the guest", rc == 0 and "0000:03:00.0" in out, out)
    rc, out = vm.run("kubelet_emulator --help")
    check("kubelet_emulator runs in the guest", "usage" in out, out)

    print("guest PCI addresses:", vm.addresses)
    check("two e1000e, one virtio-blk, one virtio-net, one xhci, ICH9 at 00:1f",
          len(vm.addresses.get("e1000e", [])) == 2
          and all(len(vm.addresses.get(k, [])) == 1 for k in ("virtio-blk", "virtio-net", "xhci"))
          and len(vm.addresses.get("ich9", [])) >= 2, vm.addresses)
    ich9_groups = {vm.devices[a]["iommu_group"] for a in vm.addresses["ich9"]}
    check(f"ICH9 functions share one IOMMU group ({ich9_groups})", len(ich9_groups) == 1)

    # vfio cycle by hand on the first e1000e.
    nic = vm.addresses["e1000e"][0]
    d = f"/sys/bus/pci/devices/{nic}"
    group = vm.devices[nic]["iommu_group"]
    vm.check("modprobe vfio-pci")
    vm.check(f"echo vfio-pci > {d}/driver_override && echo {nic} > {d}/driver/unbind"
             f" && echo {nic} > /sys/bus/pci/drivers_probe")
    drv = vm.check(f"basename $(readlink {d}/driver)").strip()
    check(f"{nic} bound to vfio-pci (driver={drv})", drv == "vfio-pci")
    rc, out = vm.run(f"ls -l /dev/vfio/{group} && exec 8<>/dev/vfio/{group} && exec 8>&-")
    check(f"/dev/vfio/{group} exists and opens", rc == 0, out)
    print("   ", out.strip())
    vm.check(f"printf '\\n' > {d}/driver_override && echo {nic} > {d}/driver/unbind"
             f" && echo {nic} > /sys/bus/pci/drivers_probe")
    drv = vm.check(f"basename $(readlink {d}/driver)").strip()
    check(f"{nic} back on e1000e (driver={drv})", drv == "e1000e")
    check(f"/dev/vfio/{group} gone", vm.run(f"test -e /dev/vfio/{group}")[0] != 0)

    # PCI hotplug on the empty root port.
    hp = vm.hotplug_address
    vm.qmp("device_add", {"driver": "e1000e", "id": "hp", "bus": vm.hotplug_port, "romfile": ""})
    vm.wait_until(f"test -e /sys/bus/pci/devices/{hp}")
    grp = vm.check(f"basename $(readlink /sys/bus/pci/devices/{hp}/iommu_group)").strip()
    check(f"hot-plugged e1000e appears at {hp} (iommu group {grp})", True)
    vm.qmp("device_del", {"id": "hp"})
    vm.wait_event("DEVICE_DELETED", device="hp")
    vm.wait_until(f"! test -e /sys/bus/pci/devices/{hp}")
    check(f"device_del removes {hp}", True)

    # USB hotplug on the xhci.
    before = set(vm.check("ls /sys/bus/usb/devices").split())
    vm.qmp("device_add", {"driver": "usb-tablet", "id": "tab", "bus": "xhci.0"})
    out = vm.wait_until("grep -l 'QEMU USB Tablet' /sys/bus/usb/devices/*/product")
    new = set(vm.check("ls /sys/bus/usb/devices").split()) - before
    check(f"usb-tablet appears in /sys/bus/usb/devices ({out.strip()}; new entries {sorted(new)})",
          bool(new))
    vm.qmp("device_del", {"id": "tab"})
    vm.wait_event("DEVICE_DELETED", device="tab")
    vm.wait_until("! grep -q 'QEMU USB Tablet' /sys/bus/usb/devices/*/product")
    check("usb-tablet removed", True)

    # What the agent must protect.
    print(vm.check("ls -l /sys/bus/pci/devices/*/iommu_group | sed 's/.*devices.//'"))
    majmin = vm.check("awk '$5 == \"/\" { print $3 }' /proc/self/mountinfo").strip()
    root_dev = vm.check(f"readlink -f /sys/dev/block/{majmin}").strip()
    blk = vm.addresses["virtio-blk"][0]
    check(f"/ is {majmin} -> {root_dev}, behind virtio-blk {blk}", f"/{blk}/" in root_dev)
    iface = vm.check("ip route | sed -n 's/^default .* dev \\([^ ]*\\).*/\\1/p'").strip()
    nicdev = vm.check(f"readlink -f /sys/class/net/{iface}/device").strip()
    net = vm.addresses["virtio-net"][0]
    check(f"default route via {iface} -> {nicdev}, behind virtio-net {net}",
          iface == vm.net_iface and f"/{net}/" in nicdev)
    # No host network: qemu lists only NICs, none with a peer (backend) to send packets to.
    nets = vm.qmp("human-monitor-command", {"command-line": "info network"})
    check("no NIC has a network backend (qemu 'info network')",
          "peer" not in nets and all("type=nic" in l for l in nets.split("\n") if l.strip()), nets)


if __name__ == "__main__":
    main()
