#!/usr/bin/env python3
"""bench/hotplug: uevent -> ListAndWatch update latency with 2,048 enabled functions in 64 resources.

Usage: bench/run_hotplug.py [BUILD_DIR] [CYCLES] [--pending]

The plugin-bench tree (e2e/fixtures/make_tree.py) in a umockdev testbed, the daemon inside
e2e/uevent_injector (umockdev delivers uevents to the testbed's own process), the kubelet emulator
outside. Each cycle plugs a function of resource intel.com/f000 (already on vfio-pci with its
IOMMU group, as the kernel presents a bound function) and unplugs it again; the latency is from
the injector's stamp just before it emits the uevent ("sent_us") to the emulator's receipt of the
updated list (its "t_us" stamp, same wall clock). Budget: p99 <= 10 ms.

Then BATCHES batches of 8 functions at once, as a PF's new VFs arrive (each already on vfio-pci in
its own IOMMU group, a new resource intel.com/f0ff): from the last function's "add" uevent to the
list holding all 8. Budget (SR-IOV issue): <= 100 ms.

--pending (issue 9's "an unrelated hot-plug while 16 binds are pending"): the pending-bench tree
instead, whose 16 driverless 82574L NICs the config also selects; the testbed has no kernel, so
their binds are never answered and each job waits out its probe time. The cycles' figures are
then also given for the changes made before the first of those binds ended (the daemon's
"enable failed" line), with the same budget.

PCID_BENCH_LOG=FILE keeps the daemon's log there (with PCIDEVICES_LOG_LEVEL=debug, every handler
over 1 ms of the owner loop, with its CPU time).
"""
import datetime
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from device_plugin_test import Emulator  # noqa: E402
from hotplug_test import Injector  # noqa: E402
import daemon_log  # noqa: E402
import machine  # noqa: E402

RESOURCE = "intel.com/f000"
NEW = "0000:c0:00.0"


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def first_bind_ended_us(log_text: str) -> int | None:
    """Wall-clock microseconds of the daemon's first "enable failed" line (its log is in UTC,
    to the millisecond), or None while no bind has ended."""
    for line in log_text.splitlines():
        if "enable failed" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
            return int(stamp.replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6)
    return None


def main():
    pending = "--pending" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--pending"]
    build = args[0] if args else os.path.join(HERE, "..", "build")
    cycles = int(args[1]) if len(args) > 1 else 200
    make_tree = os.path.join(HERE, "..", "e2e", "fixtures", "make_tree.py")
    print(machine.line(build), flush=True)
    with tempfile.TemporaryDirectory(prefix="pcid-bench-hp-") as tmp:
        plugins, config = f"{tmp}/dp", f"{tmp}/config.json"
        os.mkdir(plugins)
        with open(config, "w") as f:
            json.dump({"enable": [{"vendor": "8086", "class": "0200"}]}, f)
        log = open(os.environ.get("PCID_BENCH_LOG", f"{tmp}/daemon.log"), "w+")
        inj = Injector(f"{build}/e2e/uevent_injector",
                       ["--metrics-bind-address", "0", "--node-name", "bench", "--config", config, "--sysfs-root", "/sys",
                        "--dev-root", "/dev", "--device-plugin-dir", plugins,
                        "--pod-resources-socket", f"{tmp}/pr.sock", "--uevent-source", "udev",
                        "--proc-root", f"{tmp}/t/proc", "--state-dir", f"{tmp}/state"], log)
        emu = None
        try:
            inj.populate(make_tree, "pending-bench" if pending else "plugin-bench", f"{tmp}/t")
            emu = Emulator(f"{build}/e2e/kubelet_emulator", plugins, f"{tmp}/pr.sock")
            inj.do("start")
            # A settled node: every resource listed with all its devices Healthy (the daemon
            # records the 2,048 intents and reads the functions back in the background first).
            healthy = set()
            while len(healthy) < 64:
                e = emu.wait(lambda e: e["event"] == "list", timeout=30)
                if e is None:
                    sys.exit(f"daemon did not list 64 healthy resources ({len(healthy)})")
                if e["devices"] and all(d["health"] == "Healthy" for d in e["devices"]):
                    healthy.add(e["resource"])
                else:
                    healthy.discard(e["resource"])
            add, remove, sent_at = [], [], []
            for _ in range(cycles):
                emu.drain()
                r = inj.do(f"add-bound-pci {NEW} 8086 f000 020000 9999")
                syspath, sent = r["syspath"], r["sent_us"]
                e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == RESOURCE and
                             any(d["id"] == NEW for d in e["devices"]), timeout=5)
                if e is None:
                    log.seek(0)
                    print(log.read()[-2000:])
                    sys.exit("added function never listed")
                add.append((e["t_us"] - sent) / 1000)
                sent_at.append(sent)
                sent = inj.do(f"remove {syspath}")["sent_us"]
                e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == RESOURCE and
                             all(d["id"] != NEW for d in e["devices"]), timeout=5)
                if e is None:
                    sys.exit("removed function still listed")
                remove.append((e["t_us"] - sent) / 1000)
                sent_at.append(sent)
            both = add + remove
            print(f"{cycles} plug/unplug cycles, 2,048 enabled functions in 64 resources")
            for name, v in (("add", add), ("remove", remove), ("all", both)):
                print(f"uevent -> ListAndWatch {name:6}: p50 {pct(v, 50):6.2f} ms  p99 {pct(v, 99):6.2f} ms"
                      f"  max {max(v):6.2f} ms")
            print(f"budget p99 <= 10 ms: {'met' if pct(both, 99) <= 10 else 'MISSED'}")
            if pending:
                log.seek(0)
                ended = first_bind_ended_us(log.read())
                # sent_at holds add, remove, add, ... in order; `both` is adds then removes.
                changes = [x for pair in zip(add, remove) for x in pair]
                during = [took for took, at in zip(changes, sent_at) if ended is None or at < ended]
                print(f"while all 16 binds were pending ({'none had ended' if ended is None else 'before the first ended'}): "
                      f"{len(during)} of {len(changes)} changes", end="")
                if during:
                    print(f", p50 {pct(during, 50):6.2f} ms  p99 {pct(during, 99):6.2f} ms  max {max(during):6.2f} ms; "
                          f"budget p99 <= 10 ms: {'met' if pct(during, 99) <= 10 else 'MISSED'}")
                else:
                    print(": not measured (the binds ended before the first change)")
            if len(both) < 100:
                # The first add is of a function new to the node: it is listed after its intent
                # is saved, so it is the slowest; with fewer than 100 changes p99 is that one.
                print(f"note: {len(both)} changes: p99 is the slowest one, the first add (its intent "
                      f"saved first: {add[0]:.2f} ms); the budget is for the default 200 cycles")
            batch = batches(inj, emu, log)
            print(f"{len(batch)} batches of 8 new functions (VFs arriving): last add uevent -> all 8 "
                  f"in ListAndWatch p50 {pct(batch, 50):6.2f} ms  p99 {pct(batch, 99):6.2f} ms  "
                  f"max {max(batch):6.2f} ms")
            print(f"budget <= 100 ms: {'met' if max(batch) <= 100 else 'MISSED'}")
        finally:
            inj.stop()
            if emu:
                emu.stop()
            log.seek(0)
            loop = daemon_log.owner_loop_figures(log.read())
            if loop:
                handlers, wall, wall_what, cpu, cpu_what = loop
                print(f"owner loop: {handlers} handlers, longest {wall:.2f} ms ({wall_what}), longest on "
                      f"the CPU {cpu:.2f} ms ({cpu_what}); budget 5 ms: wall "
                      f"{'met' if wall <= 5 else 'MISSED'}, CPU {'met' if cpu <= 5 else 'MISSED'}")


def batches(inj, emu, log, count=20):
    """`count` times: 8 functions added at once (addresses 0000:c1:00.0-7, groups 9000-9007),
    timed from the last add to the list holding all 8, then all removed."""
    resource, vfs = "intel.com/f0ff", [f"0000:c1:00.{i}" for i in range(8)]
    out = []
    for _ in range(count):
        emu.drain()
        paths, sent = [], 0
        for i, vf in enumerate(vfs):
            r = inj.do(f"add-bound-pci {vf} 8086 f0ff 020000 {9000 + i}")
            paths.append(r["syspath"])
            sent = r["sent_us"]
        e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == resource and
                     {d["id"] for d in e["devices"]} == set(vfs), timeout=5)
        if e is None:
            log.seek(0)
            print(log.read()[-2000:])
            sys.exit("a batch was never listed whole")
        out.append((e["t_us"] - sent) / 1000)
        for path in paths:
            inj.do(f"remove {path}")
        # The plugin stops when its last device goes (it may list nothing first, or not): a
        # second is plenty for the removals to be taken in either way.
        emu.wait(lambda e: e["event"] == "list" and e["resource"] == resource and not e["devices"],
                 timeout=1)
    return out


if __name__ == "__main__":
    main()
