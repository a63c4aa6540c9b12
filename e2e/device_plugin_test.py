#!/usr/bin/env python3
"""The daemon's device plugins against the kubelet emulator, over the real gRPC wire protocol.

Usage: device_plugin_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE

A gpu-node fixture tree (two GTX 1060 + audio pairs: 01:00.x on nvidia/snd_hda_intel, 81:00.x on
vfio-pci with /dev/vfio/4 present) and a config enabling every NVIDIA function.
Every process started here is stopped here, by PID.
"""
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import daemon_log

GPU = "nvidia.com/GP106_GEFORCE_GTX_1060_6GB"
AUDIO = "nvidia.com/GP106_HIGH_DEFINITION_AUDIO_CONTROLLER"
USB = "kubevirt.io/n1-0951-1666-001004"  # the Kingston stick on bus 1, device 4
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


class Emulator:
    """The kubelet emulator, its JSON events read by a thread into a queue."""

    def __init__(self, binary, plugin_dir, pod_resources=None):
        args = [binary, "--dir", plugin_dir] + (["--pod-resources", pod_resources] if pod_resources else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events = queue.Queue()
        self.backlog = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready")

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, pred, timeout=5.0):
        """The first event (in arrival order) matching `pred`; others stay queued for later."""
        for i, e in enumerate(self.backlog):
            if pred(e):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if pred(e):
                return e
            self.backlog.append(e)

    def drain(self):
        """Forgets every event received so far."""
        self.backlog.clear()
        while not self.events.empty():
            self.events.get_nowait()

    def call(self, line, event):
        self.send(line)
        return self.wait(lambda e: e["event"] == event)

    def stop(self):
        try:
            self.send("quit")
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def stop_process(proc):
    """SIGTERM, then SIGKILL after 10 s; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_stats(pid):
    status = open(f"/proc/{pid}/status").read()
    fields = dict(l.split(":", 1) for l in status.splitlines())
    return {"threads": int(fields["Threads"]), "rss_kb": int(fields["VmRSS"].split()[0]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def thread_nices(pid):
    """{tid: nice} of every thread of `pid` (field 19 of /proc/PID/task/TID/stat)."""
    nices = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except FileNotFoundError:
            continue  # ended meanwhile
        nices[int(tid)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return nices


def has_cap_sys_nice(pid):
    status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines())
    return bool(int(status["CapEff"].strip(), 16) & (1 << 23))  # CAP_SYS_NICE


def main():
    pcidevices, emulator_bin, make_tree = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="pcid-dp-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None) as tmp:
        sysfs, dev, plugins = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/dp"
        os.mkdir(plugins)
        # 01:00.0 was asked for earlier (the state file says so) but is still on nvidia: binding
        # cannot happen in a fixture tree (e2e/vm does it), so it is served Unhealthy. 01:00.1,
        # selected by the config only, fails to bind and is given back (not served).
        subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev,
                        "--proc-root", f"{tmp}/proc", "--state-dir", f"{tmp}/state",
                        "--intent", "0000:01:00.0"], check=True)
        config = f"{tmp}/config.json"
        with open(config, "w") as f:
            # Every NVIDIA function, and USB devices by vendor (the stick; never a hub).
            json.dump({"enable": [{"vendor": "10de"}, {"vendor": "0951"}, {"vendor": "1d6b"}]}, f)

        emu = Emulator(emulator_bin, plugins, f"{tmp}/pod-resources.sock")
        log = open(f"{tmp}/daemon.log", "w+")
        # PCID_DAEMON_WRAPPER="gdb -batch -ex run -ex bt --args" helps when the daemon dies.
        wrapper = os.environ.get("PCID_DAEMON_WRAPPER", "").split()
        daemon = subprocess.Popen(wrapper + [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", "n1", "--config", config,
                                   "--sysfs-root", sysfs, "--dev-root", dev,
                                   "--proc-root", f"{tmp}/proc", "--state-dir", f"{tmp}/state",
                                   "--device-plugin-dir", plugins,
                                   "--pod-resources-socket", f"{tmp}/pod-resources.sock"], stderr=log)
        try:
            run(emu, daemon, plugins, config, sysfs, log, emulator_bin)
        finally:
            stop_process(daemon)
            emu.stop()
            log.seek(0)
            text = log.read()
            if failures:
                print(daemon_log.failure_text(text))
            if os.environ.get("PCID_KEEP_LOG"):
                with open(os.environ["PCID_KEEP_LOG"], "w") as keep:
                    keep.write(text)
    print(f"device_plugin_test: {len(failures)} failures")
    sys.exit(1 if failures else 0)


def run(emu, daemon, plugins, config, sysfs, log, emulator_bin):
    # Registration: one plugin per resource, named and protected as DESIGN.md says.
    regs = {}
    for _ in range(3):
        e = emu.wait(lambda e: e["event"] == "register")
        check(e is not None, "plugin registered")
        if e:
            regs[e["resource"]] = e
    check(set(regs) == {GPU, AUDIO, USB}, f"registered {sorted(regs)} (root hubs 1d6b never)")
    gpu_sock = f"kubevirt-{GPU.replace('/', '-')}.sock"
    check(regs.get(GPU, {}).get("endpoint") == gpu_sock, "endpoint = socket file name")
    check(all(r["ok"] and r["pre_start_required"] and r["preferred_allocation"] for r in regs.values()),
          "dial-back during Register and options")
    mode = stat.S_IMODE(os.stat(f"{plugins}/{gpu_sock}").st_mode)
    check(mode == 0o600, f"socket mode {oct(mode)}")

    # The owner thread (the main one) runs at nice -10 when allowed to (CAP_SYS_NICE, as the
    # DaemonSet has); every other thread, including those it started after the raise (the kernel
    # binder's), at 0.
    nices = thread_nices(daemon.pid)
    others = {tid: n for tid, n in nices.items() if tid != daemon.pid}
    if has_cap_sys_nice(daemon.pid):
        check(nices.get(daemon.pid) == -10 and "owner loop: nice -10" in read(log),
              f"owner thread at nice -10: {nices.get(daemon.pid)}")
    else:
        check(nices.get(daemon.pid) == 0 and "owner loop: priority unchanged" in read(log),
              f"owner thread unprivileged: nice {nices.get(daemon.pid)}, reason logged")
    check(len(others) > 10 and set(others.values()) == {0},
          f"the daemon's {len(others)} other threads at nice 0: {sorted(set(others.values()))}")

    # ListAndWatch: every device with health and NUMA topology.
    lists = {}
    while len(lists) < 3:
        e = emu.wait(lambda e: e["event"] == "list")
        if e is None:
            break
        lists[e["resource"]] = e["devices"]
    check(lists.get(GPU) == [{"id": "0000:01:00.0", "health": "Unhealthy", "numa": [0]},
                             {"id": "0000:81:00.0", "health": "Healthy", "numa": [1]}],
          f"GPU list {lists.get(GPU)}")

    # The fixture has no kernel to bind 01:00.1: the failure is reported and the device given back.
    # The bind runs on a worker, so the plugin may first serve 01:00.1 while it is being bound
    # (never Healthy), then without it once the kernel answered: the list settles to 81:00.1 alone.
    check(wait_for(lambda: "pci 0000:01:00.1: enable failed" in read(log)
                   and "restored to snd_hda_intel" in read(log)),
          "failed binding reported and rolled back")
    audio, seen = lists.get(AUDIO), []
    while audio is not None:
        seen.append(audio)
        if [d["id"] for d in audio] == ["0000:81:00.1"]:
            break
        e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == AUDIO)
        audio = e and e["devices"]
    check(audio is not None and [d["id"] for d in audio] == ["0000:81:00.1"], f"audio lists {seen}")
    check(all(d["health"] == "Unhealthy" for a in seen for d in a if d["id"] == "0000:01:00.1"),
          f"01:00.1 never Healthy while it is being bound: {seen}")
    check(lists.get(USB) == [{"id": "n1-0951-1666-001004", "health": "Healthy", "numa": []}],
          f"USB list {lists.get(USB)}")

    # USB Allocate: bus:devnum, the node, and the node handed to the VM user (107).
    node = f"{os.path.dirname(sysfs)}/dev/bus/usb/001/004"
    u = emu.call(f"allocate {USB} n1-0951-1666-001004", "allocate")
    check(u and u["ok"], f"USB allocate {u}")
    if u and u["ok"]:
        c = u["containers"][0]
        check(c["envs"] == {"USB_RESOURCE_KUBEVIRT_IO_N1-0951-1666-001004": "1:4"}, f"USB envs {c['envs']}")
        check(c["devices"] == [{"host_path": "/dev/bus/usb/001/004", "container_path": "/dev/bus/usb/001/004",
                                "permissions": "mrw"}], f"USB device specs {c['devices']}")
        st = os.stat(node)
        check((st.st_uid, st.st_gid) == (107, 107), f"USB node owner {st.st_uid}:{st.st_gid}")

    # Allocate, field by field (to pod-a, as PodResources will tell).
    a = emu.call(f"allocate {GPU} 0000:81:00.0 pod-a", "allocate")
    check(a and a["ok"], f"allocate ok {a}")
    if a and a["ok"]:
        c = a["containers"][0]
        check(c["envs"] == {"PCI_RESOURCE_NVIDIA_COM_GP106_GEFORCE_GTX_1060_6GB": "0000:81:00.0"},
              f"envs {c['envs']}")
        check(c["devices"] == [
            {"host_path": "/dev/vfio/vfio", "container_path": "/dev/vfio/vfio", "permissions": "mrw"},
            {"host_path": "/dev/vfio/4", "container_path": "/dev/vfio/4", "permissions": "mrw"}],
            f"device specs {c['devices']}")
    for ids, code, text in [("0000:09:00.0", 3, "unknown device"),
                            ("0000:81:00.0,0000:81:00.0", 3, "requested twice"),
                            ("0000:01:00.0", 9, "bound to nvidia"),
                            ("0000:81:00.0,0000:01:00.0", 9, "unhealthy")]:
        r = emu.call(f"allocate {GPU} {ids}", "allocate")
        check(r and not r["ok"] and r["code"] == code and text in r["message"] and r["containers"] == [],
              f"allocate {ids} rejected whole with {code}: {r}")

    # IOMMU group 4 = {81:00.0 GPU, 81:00.1 audio}: with the GPU held by pod-a, the audio function
    # must be Unhealthy (another container taking it would break pod-a's isolation) until pod-a is
    # gone; PodResources is polled only meanwhile.
    def audio_health():
        e = emu.wait(lambda e: e["event"] == "list" and e["resource"] == AUDIO, timeout=4)
        return None if e is None else {d["id"]: d["health"] for d in e["devices"]}.get("0000:81:00.1")
    check(wait_until(audio_health, "Unhealthy"), "group-mate Unhealthy right after Allocate")
    time.sleep(1.5)
    lists = emu.call("lists", "lists")["count"]
    check(lists >= 1, f"PodResources polled while the group is shared ({lists} calls)")
    emu.send("delete pod-a")
    check(wait_until(audio_health, "Healthy"), "group-mate Healthy again once the pod is gone")
    settled = emu.call("lists", "lists")["count"]
    time.sleep(2.5)
    final = emu.call("lists", "lists")["count"]
    check(final == settled, f"no PodResources polling once no group is shared ({settled} -> {final})")

    p = emu.call(f"preferred {GPU} 0000:01:00.0,0000:81:00.0 - 1", "preferred")
    check(p and p["ids"] == ["0000:81:00.0"], f"preferred healthy device: {p}")

    # PreStartContainer re-reads sysfs: a device pulled off vfio-pci fails with a readable reason.
    r = emu.call(f"prestart {GPU} 0000:81:00.0", "prestart")
    check(r and r["ok"], f"prestart ok {r}")
    link = f"{sysfs}/bus/pci/devices/0000:81:00.0/driver"
    target = os.readlink(link)
    os.unlink(link)
    os.symlink(target.replace("vfio-pci", "nvidia"), link)
    r = emu.call(f"prestart {GPU} 0000:81:00.0", "prestart")
    check(r and not r["ok"] and "bound to nvidia, not vfio-pci" in r["message"], f"prestart refused {r}")
    os.unlink(link)
    os.symlink(target, link)

    # SIGHUP: a config without the audio functions stops that plugin and removes its socket.
    with open(config, "w") as f:
        json.dump({"enable": [{"vendor": "10de", "class": "0300"}]}, f)
    daemon.send_signal(signal.SIGHUP)
    audio_sock = f"{plugins}/kubevirt-{AUDIO.replace('/', '-')}.sock"
    check(wait_for(lambda: not os.path.exists(audio_sock)), "audio plugin stopped after SIGHUP")
    check(os.path.exists(f"{plugins}/{gpu_sock}"), "GPU plugin kept")
    # A broken config on SIGHUP is reported and the running one kept.
    with open(config, "w") as f:
        f.write('{"enable": [{"vendor": "10de", "colour": "red"}]}')
    daemon.send_signal(signal.SIGHUP)
    check(wait_for(lambda: 'unknown key \\"colour\\"' in read(log) or 'unknown key "colour"' in read(log)),
          "bad config reported")
    check(daemon.poll() is None and os.path.exists(f"{plugins}/{gpu_sock}"), "bad config changes nothing")

    # Kubelet restarts: every plugin re-registered within 1 s, 100 times, no leak.
    # gRPC sizes its thread pools and caches on first use: the baseline is taken after 10 warm-up
    # restarts, and 100 more must not grow it.
    worst = 0.0
    worst_at = ""
    for i in range(110):
        if i == 10:
            time.sleep(0.5)
            before = proc_stats(daemon.pid)
        emu.drain()
        start = time.monotonic()
        emu.send("restart")
        check(emu.wait(lambda e: e["event"] == "restarted", timeout=3) is not None, "restarted")
        e = emu.wait(lambda e: e["event"] == "register" and e["resource"] == GPU and e["ok"], timeout=3)
        took = time.monotonic() - start
        if took > worst:
            worst_at = time.strftime("%H:%M:%S", time.localtime())
        worst = max(worst, took)
        if e is None:
            check(False, f"restart {i}: not re-registered within 3 s")
            break
    # ThreadSanitizer runs everything 5-15 times slower: there the check is that it happens.
    limit = 5.0 if os.environ.get("TSAN_OPTIONS") else 1.0
    check(worst < limit, f"re-registration took up to {worst:.3f} s")
    # gRPC's executor grows and shrinks its thread pool on its own: growth means "still there
    # after things settle", so sample for a few seconds and keep the smallest counts.
    after = proc_stats(daemon.pid)
    for _ in range(50):
        if after["threads"] <= before["threads"] and after["fds"] <= before["fds"]:
            break
        time.sleep(0.1)
        now = proc_stats(daemon.pid)
        after = {k: min(after[k], now[k]) for k in after}
    print(f"110 kubelet restarts: worst re-registration {worst * 1000:.0f} ms (ending {worst_at}); "
          f"before {before}, after {after}", flush=True)
    # A leak would add a thread per restart (100); gRPC's executor pool itself may grow by a few
    # threads under load and keeps them a while.
    check(after["threads"] <= before["threads"] + 5, f"threads grew {before} -> {after}")
    check(after["fds"] <= before["fds"] + 2, f"fds grew {before} -> {after}")
    # ASan's quarantine holds freed memory on purpose; ThreadSanitizer keeps access history.
    if not os.environ.get("ASAN_OPTIONS") and not os.environ.get("TSAN_OPTIONS"):
        check(after["rss_kb"] <= before["rss_kb"] + 4096, f"RSS grew {before} -> {after}")

    # SIGTERM: clean exit, our sockets removed.
    daemon.send_signal(signal.SIGTERM)
    check(daemon.wait(timeout=10) == 0, "clean exit on SIGTERM")
    check(not os.path.exists(f"{plugins}/{gpu_sock}"), "socket removed on exit")


def wait_until(probe, want, attempts=6):
    """Calls probe() until it returns `want` (each call waits for the next event)."""
    for _ in range(attempts):
        if probe() == want:
            return True
    return False


def read(f):
    f.flush()
    with open(f.name) as g:
        return g.read()


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


if __name__ == "__main__":
    main()
