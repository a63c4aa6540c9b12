#!/usr/bin/env python3
"""Hotplug through a real libudev monitor: uevents from a umockdev testbed drive the daemon.

Usage: hotplug_test.py UEVENT_INJECTOR KUBELET_EMULATOR MAKE_TREE

umockdev delivers synthetic uevents to the libudev monitors of the process owning the testbed,
so the daemon runs inside uevent_injector (under umockdev-wrapper), its /sys being the testbed.
Checks: an added function the config enables appears in ListAndWatch; bound to vfio-pci it turns
Healthy; unplugged while allocated it stays listed as Unhealthy, plugged back in it is Healthy
again, and once its pod is gone it leaves; an unplugged idle function leaves at once; a function
refused on arrival is tried again when plugged in again. Prints uevent -> ListAndWatch latencies.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import daemon_log

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_plugin_test import Emulator, check, failures  # noqa: E402

GPU = "nvidia.com/GP106_GEFORCE_GTX_1060_6GB"
NEW = "0000:82:00.0"
NEW2 = "0000:83:00.0"  # no intent: served only when the config's enable succeeds


class Injector:
    def __init__(self, binary, args, log):
        self.proc = subprocess.Popen(["umockdev-wrapper", binary] + args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        self.dir = json.loads(self.proc.stdout.readline())["dir"]

    def populate(self, make_tree, profile, scratch):
        """Generates `profile` and copies it into the testbed (its sys/ and dev/)."""
        subprocess.run([sys.executable, make_tree, profile, f"{scratch}/sys", "--dev-root",
                        f"{scratch}/dev", "--proc-root", f"{scratch}/proc"], check=True)
        for part in ("sys", "dev"):
            shutil.copytree(f"{scratch}/{part}", f"{self.dir}/{part}", symlinks=True, dirs_exist_ok=True)

    def stop(self):
        """Stops the daemon (SIGTERM inside) and the injector; returns the exit code."""
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def do(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


def gpu_list(emu, want=None, timeout=3.0):
    """The GPU resource's next ListAndWatch answer whose devices satisfy `want` (id -> health),
    as (devices, t_us); the answers before it are consumed. The daemon binds in the background,
    so one change can take several answers. The last answer seen (or None) after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == GPU,
                     timeout=max(0.0, deadline - time.monotonic()))
        if e is None:
            return last
        last = ({d["id"]: d["health"] for d in e["devices"]}, e["t_us"])
        if want is None or want(last[0]):
            return last


def main():
    injector_bin, emulator_bin, make_tree = sys.argv[1:4]
    # Not under /dev: umockdev redirects /dev to the testbed, sockets included.
    with tempfile.TemporaryDirectory(prefix="pcid-hotplug-") as tmp:
        plugins, config = f"{tmp}/dp", f"{tmp}/config.json"
        os.mkdir(plugins)
        with open(config, "w") as f:
            json.dump({"enable": [{"vendor": "10de", "class": "0300"}]}, f)
        # Binding needs a kernel (e2e/vm); here the state file records 01:00.0 and NEW as asked
        # for earlier, so they are served (Unhealthy until on vfio-pci) without it.
        os.mkdir(f"{tmp}/state")
        with open(f"{tmp}/state/state.json", "w") as f:
            json.dump({"version": 1, "devices": [
                {"address": a, "enabled": True, "originalDriver": d, "sources": ["cli"]}
                for a, d in (("0000:01:00.0", "nvidia"), (NEW, ""))]}, f)
        log = open(f"{tmp}/daemon.log", "w+")
        inj = Injector(injector_bin, ["--metrics-bind-address", "0", "--node-name", "n1", "--config", config, "--sysfs-root", "/sys",
                                      "--dev-root", "/dev", "--device-plugin-dir", plugins,
                                      "--pod-resources-socket", f"{tmp}/pr.sock",
                                      "--proc-root", f"{tmp}/t/proc", "--state-dir", f"{tmp}/state",
                                      "--uevent-source", "udev"], log)
        emu = None
        try:
            inj.populate(make_tree, "gpu-node", f"{tmp}/t")
            emu = Emulator(emulator_bin, plugins, f"{tmp}/pr.sock")
            check(inj.do("start")["ok"], "daemon started")
            first = gpu_list(emu, lambda d: set(d) == {"0000:01:00.0", "0000:81:00.0"})
            check(first and set(first[0]) == {"0000:01:00.0", "0000:81:00.0"}, f"initial list {first}")
            latencies = []

            def plug_and_bind(what):
                """Plugs NEW (listed Unhealthy: no driver), binds it to vfio-pci (Healthy)."""
                sent = time.time() * 1e6
                r = inj.do(f"add-pci {NEW} 10de 1c03 030000")
                check(r["ok"], f"{what}: add-pci")
                got = gpu_list(emu, lambda d: d.get(NEW) == "Unhealthy")
                check(got and got[0].get(NEW) == "Unhealthy", f"{what}: listed Unhealthy: {got}")
                if got:
                    latencies.append(got[1] - sent)
                # Driver + IOMMU group links and the group node, then "bind".
                rel = r["syspath"].lstrip("/")
                check(inj.do(f"link {rel} driver ../../bus/pci/drivers/vfio-pci")["ok"], "driver link")
                os.makedirs(f"{inj.dir}/sys/kernel/iommu_groups/40/devices", exist_ok=True)
                check(inj.do(f"link {rel} iommu_group ../../kernel/iommu_groups/40")["ok"], "group link")
                open(f"{inj.dir}/dev/vfio/40", "w").close()
                with open(f"{inj.dir}/{rel}/uevent", "a") as f:
                    f.write("DRIVER=vfio-pci\n")
                sent = time.time() * 1e6
                inj.do(f"uevent {r['syspath']} bind")
                got = gpu_list(emu, lambda d: d.get(NEW) == "Healthy")
                check(got and got[0].get(NEW) == "Healthy", f"{what}: bound function Healthy: {got}")
                if got:
                    latencies.append(got[1] - sent)
                return r["syspath"]

            syspath = plug_and_bind("first plug")

            # Allocate it to pod-h, then unplug it: listed Unhealthy while pod-h holds it.
            a = emu.call(f"allocate {GPU} {NEW} pod-h", "allocate")
            check(a and a["ok"], f"allocate the new function: {a}")
            sent = time.time() * 1e6
            inj.do(f"remove {syspath}")
            got = gpu_list(emu, lambda d: d.get(NEW) == "Unhealthy")
            check(got and got[0].get(NEW) == "Unhealthy", f"unplugged while allocated: Unhealthy {got}")
            if got:
                latencies.append(got[1] - sent)
            # Plugged back in while pod-h still holds it: a live function again, Healthy.
            syspath = plug_and_bind("re-plug")
            inj.do(f"remove {syspath}")
            got = gpu_list(emu, lambda d: d.get(NEW) == "Unhealthy")
            check(got and got[0].get(NEW) == "Unhealthy", f"unplugged again: Unhealthy {got}")
            emu.send("delete pod-h")
            got = gpu_list(emu, lambda d: NEW not in d, timeout=5)
            check(got and NEW not in got[0], f"gone once its pod is gone: {got}")

            # Unplug an idle function: it leaves at once.
            sent = time.time() * 1e6
            inj.do("remove /sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0")
            got = gpu_list(emu, lambda d: "0000:81:00.0" not in d)
            check(got and "0000:81:00.0" not in got[0], f"idle function removed: {got}")
            if got:
                latencies.append(got[1] - sent)
            # A function refused on arrival (no IOMMU group) and plugged again with one gets a
            # fresh attempt: the config selects it, so it is bound and served.
            r = inj.do(f"add-pci {NEW2} 10de 1c03 030000")
            check(r["ok"], "refused function: add-pci")
            got = gpu_list(emu, lambda d: NEW2 in d, timeout=1)
            check(got is None or NEW2 not in got[0], f"group-less function not served: {got}")
            inj.do(f"remove {r['syspath']}")
            check(inj.do(f"add-bound-pci {NEW2} 10de 1c03 030000 41")["ok"], "add-bound-pci")
            got = gpu_list(emu, lambda d: d.get(NEW2) == "Healthy")
            check(got and got[0].get(NEW2) == "Healthy", f"re-plugged with a group: served {got}")
            print("uevent -> ListAndWatch (ms): " + ", ".join(f"{l / 1000:.2f}" for l in latencies))
        finally:
            code = inj.stop()
            if emu:
                emu.stop()
            check(code == 0, f"daemon exit {code}")
            if failures:
                log.seek(0)
                print(daemon_log.failure_text(log.read()))
    print(f"hotplug_test: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
