#!/usr/bin/env python3
"""Mediated devices against a real Linux kernel: Debian's kernel in qemu (e2e/vm/vm.py) with the
kernel's own sample mdev parents, mtty and mbochs, built from Debian's linux-source-6.1 for that
kernel (prepare_mdev_samples.sh; never copied into the repository). The daemon and the kubelet
emulator run in the guest; the host asserts what comes back over the command channel.

Checked:
  - `pcidevices list --mdev` agrees with the kernel's sysfs: both parents, every type with its
    available_instances, no mdevs;
  - the config's two mbochs-small mdevs: created by the kernel (bus/mdev/devices/<uuid>, each in
    its own IOMMU group with /dev/vfio/<n>), available_instances down by two, recorded in the
    state file; ListAndWatch lists both Healthy; Allocate answers KubeVirt's
    MDEV_PCI_RESOURCE_ variable with the UUIDs and DeviceSpecs for /dev/vfio/vfio and each
    group's node, all of which exist;
  - a daemon restart: the same UUIDs, served again, not one write to `create`;
  - the module unloaded and loaded again (a reboot's stand-in: the mdevs go with their parent):
    re-created with the same UUIDs and served again;
  - bad config: a count above available_instances is refused with a message, nothing created;
  - dropped from the config: both removed, available_instances back, nothing recorded;
  - figures: how long after the kernel made an mdev ListAndWatch lists it; a start-up with 64
    recorded mbochs-small mdevs that are all missing (re-created and served), timed.

usage: mdev_vm_test.py PCIDEVICES KUBELET_EMULATOR [--cache DIR] [--work DIR]
"""
import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from vm import Vm, prepare_kernel  # noqa: E402
from vfio_vm_test import STATE, Guest, check, failures  # noqa: E402

PARENT, TYPE = "mbochs", "mbochs-small"
RESOURCE = "pcidevices.io/mbochs-small"
ENV = "MDEV_PCI_RESOURCE_PCIDEVICES_IO_MBOCHS-SMALL"
TYPES = f"/sys/class/mdev_bus/{PARENT}/mdev_supported_types/{TYPE}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcidevices")
    ap.add_argument("kubelet_emulator")
    ap.add_argument("--cache", default="/tmp/pcidevices-vm-cache")
    ap.add_argument("--work", default="/tmp/pcidevices-vm-mdev")
    a = ap.parse_args()
    t0 = time.monotonic()
    kernel = prepare_kernel(a.cache)
    out = subprocess.run([str(HERE / "prepare_mdev_samples.sh"), str(Path(a.cache) / "mdev-samples"),
                          kernel["KVER"]], check=True, capture_output=True, text=True).stdout
    samples = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    print(f"sample drivers for {kernel['KVER']} ready in {time.monotonic() - t0:.1f}s", flush=True)
    agent = Path(a.pcidevices).with_name("pcidevices-agent")
    files = {"/root/mtty.ko": samples["MTTY"], "/root/mbochs.ko": samples["MBOCHS"]}
    with Vm(a.cache, a.work, binaries=[a.pcidevices, agent, a.kubelet_emulator],
            files=files) as vm:
        print(f"boot: ready {vm.boot_seconds:.1f}s after qemu start", flush=True)
        g = Guest(vm)
        try:
            scenario(vm, g)
        finally:
            if failures:
                print("--- daemon log (tail) ---\n" + "\n".join(vm.run("cat /tmp/d.log")[1].splitlines()[-60:]))
                print("--- emulator stderr ---\n" + vm.run("cat /tmp/k.err")[1][-2000:])
            g.stop_daemon()
            vm.run("kill $(cat /tmp/k.pid)")
    print(f"boot-to-verdict {time.monotonic() - t0:.1f}s")
    if failures:
        print(f"FAILED: {len(failures)} checks: {failures}")
        return 1
    print("PASS")
    return 0


def write_config(vm, mdevs):
    vm.check(f"echo {shlex.quote(json.dumps({'mdevs': mdevs}))} >/etc/pcid.json")


def mdevs(vm):
    """UUID -> type, as the kernel has them."""
    out = vm.run("for d in /sys/bus/mdev/devices/*; do [ -e $d ] && "
                 "echo ${d##*/} $(basename $(readlink $d/mdev_type)); done")[1]
    return dict(line.split() for line in out.splitlines() if line.strip())


def available(vm):
    return int(vm.check(f"cat {TYPES}/available_instances").strip())


def creates(vm):
    """The daemon's "created" lines so far."""
    return [ln for ln in vm.run("cat /tmp/d.log")[1].splitlines() if ": created, type " in ln]


def log_time(line):
    """The wall-clock time of a daemon log line ("2026-12-05T23:42:38.323 info ..."), in seconds;
    the guest has no time zone: UTC."""
    stamp = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def latency(g, vm, uuids, what, after=0):
    """Prints how long after the kernel made the last of `uuids` (the daemon's log line once its
    create returned) ListAndWatch first listed them all Healthy."""
    lines = [ln for ln in creates(vm) if any(u in ln for u in uuids)]
    first = [e for e in g.events()[after:] if e["event"] == "list" and e["resource"] == RESOURCE and
             sorted(d["id"] for d in e["devices"] if d["health"] == "Healthy") == uuids]
    if lines and first:
        ms = (first[0]["t_us"] / 1e6 - max(log_time(ln) for ln in lines)) * 1000
        print(f"figure: mdev created -> listed Healthy in ListAndWatch ({what}): {ms:.0f} ms "
              "(TCG guest)")


def scenario(vm, g):
    vm.check("modprobe vfio && modprobe mdev && insmod /root/mbochs.ko && insmod /root/mtty.ko")
    vm.check(f"mkdir -p {STATE}")

    # 1. The listing against the kernel's own files.
    listing = json.loads(vm.check("pcidevices list --mdev --sysfs-root /sys --output json"))
    kernel_types = {}
    out = vm.check("for t in /sys/class/mdev_bus/*/mdev_supported_types/*; do "
                   "p=${t%/mdev_supported_types/*}; echo ${p##*/} ${t##*/} $(cat $t/available_instances); done")
    for line in out.splitlines():
        parent, tid, n = line.split()
        kernel_types[(parent, tid)] = int(n)
    listed = {(p["name"], t["id"]): t["availableInstances"] for p in listing["parents"] for t in p["types"]}
    check(f"list --mdev agrees with sysfs ({len(listed)} types on mtty and mbochs)",
          listed == kernel_types and listing["mdevs"] == [] and
          {p["name"] for p in listing["parents"]} == {"mtty", "mbochs"}, f"{listed} vs {kernel_types}")
    table = vm.check("pcidevices list --mdev --sysfs-root /sys")
    check("list --mdev table names the types and resource", "mbochs-small" in table and RESOURCE in table, table)

    # 2. The config's two mdevs.
    before = available(vm)
    write_config(vm, [{"parent": PARENT, "type": TYPE, "count": 2}])
    g.start_emulator()
    g.start_daemon()
    ok = g.until(f"[ $(ls /sys/bus/mdev/devices | wc -l) = 2 ]", timeout=60)
    made = mdevs(vm)
    check(f"two {TYPE} mdevs created by the kernel", ok and sorted(made.values()) == [TYPE, TYPE], made)
    uuids = sorted(made)
    check(f"available_instances {before} -> {available(vm)}", available(vm) == before - 2)
    state = json.loads(vm.check(f"cat {STATE}/state.json"))
    check("recorded in the state file",
          sorted(m["uuid"] for m in state.get("mdevs", [])) == uuids, json.dumps(state))
    groups = {u: vm.check(f"basename $(readlink /sys/bus/mdev/devices/{u}/iommu_group)").strip()
              for u in uuids}
    check(f"each in its own IOMMU group with its node ({groups})",
          len(set(groups.values())) == 2 and
          all(vm.run(f"[ -c /dev/vfio/{n} ]")[0] == 0 for n in groups.values()))
    lst = g.listed(RESOURCE, pred=lambda d: sorted(d) == uuids and set(d.values()) == {"Healthy"},
                   what="both listed Healthy")
    check(f"ListAndWatch {RESOURCE}: both Healthy", lst is not None, lst)
    latency(g, vm, uuids, "a new resource: its plugin registers first")
    n = len(g.events())
    g.tell(f"allocate {RESOURCE} {','.join(uuids)} vm1")
    e = g.wait_event(lambda e: e["event"] == "allocate", "allocate answered", after=n)
    c = (e or {}).get("containers", [{}])[0]
    paths = sorted(d["host_path"] for d in c.get("devices", []))
    want = sorted(["/dev/vfio/vfio"] + [f"/dev/vfio/{groups[u]}" for u in uuids])
    check("Allocate: MDEV_PCI_RESOURCE_ with the UUIDs, /dev/vfio nodes that exist",
          e is not None and e.get("ok") and sorted(c.get("envs", {}).get(ENV, "").split(",")) == uuids
          and paths == want and vm.run("ls " + " ".join(paths))[0] == 0, json.dumps(e))
    g.tell("delete vm1")

    # 3. A restart: the same UUIDs, no create.
    g.stop_daemon()
    writes_before = len(creates(vm))
    n = len(g.events())
    g.start_daemon()
    lst = g.listed(RESOURCE, pred=lambda d: sorted(d) == uuids and set(d.values()) == {"Healthy"},
                   what="served again after a restart", after=n)
    check("restart: the same UUIDs served, nothing created",
          lst is not None and sorted(mdevs(vm)) == uuids and len(creates(vm)) == writes_before)

    # 4. The module unloaded and loaded again: the mdevs go with it, and come back as they were.
    vm.check("rmmod mbochs")
    check("rmmod mbochs took the mdevs away", mdevs(vm) == {})
    n = len(g.events())
    g.listed(RESOURCE, pred=lambda d: set(d.values()) == {"Unhealthy"},
             what="listed Unhealthy while the parent is away")
    t = time.monotonic()
    vm.check("insmod /root/mbochs.ko")
    ok = g.until(f"[ $(ls /sys/bus/mdev/devices | wc -l) = 2 ]", timeout=30)
    check(f"reloaded: re-created with the same UUIDs ({time.monotonic() - t:.1f}s)",
          ok and sorted(mdevs(vm)) == uuids, mdevs(vm))
    lst = g.listed(RESOURCE, pred=lambda d: sorted(d) == uuids and set(d.values()) == {"Healthy"},
                   what="served again after the reload")
    check("and served Healthy again", lst is not None)
    latency(g, vm, uuids, "a plugin already registered", after=n)

    # 5. Bad input: more than the type offers. Refused, nothing created.
    free = available(vm)
    write_config(vm, [{"parent": PARENT, "type": TYPE, "count": free + 3}])
    vm.run("kill -HUP $(cat /tmp/d.pid)")
    ok = g.until(f"grep -q 'has {free} instances left, {free + 1} wanted; none created' /tmp/d.log", timeout=30)
    check("a count above available_instances is refused, nothing created",
          ok and sorted(mdevs(vm)) == uuids and available(vm) == free)
    write_config(vm, [{"parent": PARENT, "type": "../../x", "count": 1}])
    vm.run("kill -HUP $(cat /tmp/d.pid)")
    ok = g.until("grep -q 'is not a type directory name' /tmp/d.log", timeout=30)
    check("a type with .. in it is refused as a config error", ok and sorted(mdevs(vm)) == uuids)

    # 6. Dropped from the config: removed, nothing recorded.
    write_config(vm, [])
    vm.run("kill -HUP $(cat /tmp/d.pid)")
    ok = g.until("[ -z \"$(ls /sys/bus/mdev/devices)\" ]", timeout=30)
    state = json.loads(vm.check(f"cat {STATE}/state.json"))
    check("dropped from the config: removed, available_instances back, nothing recorded",
          ok and available(vm) == before and not state.get("mdevs"), json.dumps(state))
    g.stop_daemon()

    # 7. Figure: a start-up with 64 recorded mdevs, all missing (as after a reboot).
    write_config(vm, [{"parent": PARENT, "type": TYPE, "count": 64}])
    g.start_daemon()
    ok = g.until("[ $(ls /sys/bus/mdev/devices | wc -l) = 64 ]", timeout=120)
    check("64 mbochs-small mdevs created", ok)
    g.stop_daemon()
    vm.check("rmmod mbochs && insmod /root/mbochs.ko")
    n = len(g.events())
    t = time.monotonic()
    g.start_daemon()
    lst = g.listed(RESOURCE, pred=lambda d: len(d) == 64 and set(d.values()) == {"Healthy"},
                   what="64 re-created and Healthy", after=n, timeout=120)
    took = time.monotonic() - t
    check(f"start-up with 64 recorded mdevs: all re-created and served Healthy in {took:.1f}s "
          "(TCG guest, from the daemon's start)", lst is not None and len(mdevs(vm)) == 64)
    print(f"figure: start-up with 64 recorded mdevs missing -> all served Healthy: {took:.1f}s")
    write_config(vm, [])
    vm.run("kill -HUP $(cat /tmp/d.pid)")
    check("and all 64 removed", g.until("[ -z \"$(ls /sys/bus/mdev/devices)\" ]", timeout=60))


if __name__ == "__main__":
    sys.exit(main())
