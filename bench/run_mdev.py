#!/usr/bin/env python3
"""bench/mdev: an mdev made by the "kernel" -> listed Healthy in ListAndWatch.

Usage: bench/run_mdev.py [BUILD_DIR] [MDEVS]

The daemon inside e2e/uevent_injector (a umockdev testbed: the kernel's sysfs and uevents
modelled), the kubelet emulator outside. The testbed holds the gpu-node tree plus the kernel's
sample parent mtty (type mtty-1, as class/mdev_bus lays it out); the config asks for MDEVS mdevs of
type mtty-1 and state.json records that many, which do not exist yet, as after a reboot. The daemon serves them Unhealthy (its
re-creation finds no kernel to make them: a testbed's `create` is a plain file). Then, one at a
time, the "kernel" makes each mdev (its device, links and IOMMU group node in place, then the
`mdev` "add" uevent); the latency is from the injector's stamp just before the uevent to the
emulator's receipt of a list holding that mdev Healthy (same wall clock). Budget (issue 11):
<= 50 ms.

PCID_BENCH_LOG=FILE keeps the daemon's log there.
"""
import json
import os
import sys
import tempfile
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from device_plugin_test import Emulator  # noqa: E402
from hotplug_test import Injector  # noqa: E402
import daemon_log  # noqa: E402

RESOURCE = "pcidevices.io/Single_port_serial"
PARENT_DIR = "devices/virtual/mtty/mtty"
FIRST_GROUP = 7000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def add_mtty(sysfs, count):
    """mtty under class/mdev_bus with `count` instances of mtty-1 left."""
    t = f"{sysfs}/{PARENT_DIR}/mdev_supported_types/mtty-1"
    os.makedirs(f"{t}/devices")
    for name, text in (("name", "Single port serial\n"), ("available_instances", f"{count}\n"),
                       ("device_api", "vfio-pci\n"), ("create", "")):
        with open(f"{t}/{name}", "w") as f:
            f.write(text)
    os.makedirs(f"{sysfs}/class/mdev_bus", exist_ok=True)
    os.symlink(f"../../{PARENT_DIR}", f"{sysfs}/class/mdev_bus/mtty")


def mdev_record(uuid, group):
    """The mdev as the kernel presents it: a child of its parent, its type and group linked
    (umockdev links it from bus/mdev/devices)."""
    return (f"P: /{PARENT_DIR}/{uuid}\nE: SUBSYSTEM=mdev\nE: MDEV_TYPE=mtty-1\n"
            f"L: mdev_type=../mdev_supported_types/mtty-1\n"
            f"L: iommu_group=../../../../kernel/iommu_groups/{group}\nA: remove=\n")


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "build")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    make_tree = os.path.join(HERE, "..", "e2e", "fixtures", "make_tree.py")
    uuids = sorted(str(uuidlib.uuid4()) for _ in range(count))
    with tempfile.TemporaryDirectory(prefix="pcid-bench-mdev-") as tmp:
        plugins, config, state = f"{tmp}/dp", f"{tmp}/config.json", f"{tmp}/state"
        os.mkdir(plugins)
        os.mkdir(state)
        with open(config, "w") as f:
            json.dump({"enable": [], "mdevs": [{"parent": "mtty", "type": "mtty-1", "count": count}]}, f)
        with open(f"{state}/state.json", "w") as f:
            json.dump({"version": 1, "devices": [],
                       "mdevs": [{"uuid": u, "parent": "mtty", "type": "mtty-1", "sources": ["config"]}
                                 for u in uuids]}, f)
        log = open(os.environ.get("PCID_BENCH_LOG", f"{tmp}/daemon.log"), "w+")
        inj = Injector(f"{build}/e2e/uevent_injector",
                       ["--metrics-bind-address", "0", "--node-name", "bench", "--config", config, "--sysfs-root", "/sys",
                        "--dev-root", "/dev", "--device-plugin-dir", plugins,
                        "--pod-resources-socket", f"{tmp}/pr.sock", "--uevent-source", "udev",
                        "--proc-root", f"{tmp}/t/proc", "--state-dir", state], log)
        emu = None
        try:
            inj.populate(make_tree, "gpu-node", f"{tmp}/t")
            add_mtty(f"{inj.dir}/sys", count)
            emu = Emulator(f"{build}/e2e/kubelet_emulator", plugins, f"{tmp}/pr.sock")
            inj.do("start")
            e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == RESOURCE and
                         len(e["devices"]) == count, timeout=30)
            if e is None:
                log.seek(0)
                print(log.read()[-3000:])
                sys.exit(f"the {count} recorded mdevs were never listed")
            latencies = []
            for i, u in enumerate(uuids):
                group = FIRST_GROUP + i
                os.makedirs(f"{inj.dir}/sys/kernel/iommu_groups/{group}/devices", exist_ok=True)
                open(f"{inj.dir}/dev/vfio/{group}", "w").close()
                record = f"{tmp}/record"
                with open(record, "w") as f:
                    f.write(mdev_record(u, group))
                emu.drain()
                r = inj.do(f"add-record {record}")
                if not r.get("ok"):
                    sys.exit(f"testbed refused the mdev: {r}")
                e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == RESOURCE and
                             any(d["id"] == u and d["health"] == "Healthy" for d in e["devices"]),
                             timeout=5)
                if e is None:
                    log.seek(0)
                    print(log.read()[-3000:])
                    sys.exit(f"mdev {u} never listed Healthy")
                latencies.append((e["t_us"] - r["sent_us"]) / 1000)
            print(f"{count} mdevs made by the testbed's kernel, one at a time, {count} recorded")
            print(f"mdev add uevent -> ListAndWatch Healthy: p50 {pct(latencies, 50):6.2f} ms  "
                  f"p99 {pct(latencies, 99):6.2f} ms  max {max(latencies):6.2f} ms")
            print(f"budget <= 50 ms: {'met' if max(latencies) <= 50 else 'MISSED'}")
        finally:
            inj.stop()
            if emu:
                emu.stop()
            log.seek(0)
            loop = daemon_log.owner_loop_figures(log.read())
            if loop:
                handlers, wall, wall_what, cpu, cpu_what = loop
                print(f"owner loop: {handlers} handlers, longest {wall:.2f} ms ({wall_what}), longest on "
                      f"the CPU {cpu:.2f} ms ({cpu_what})")


if __name__ == "__main__":
    main()
