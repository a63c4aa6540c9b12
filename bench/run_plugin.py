#!/usr/bin/env python3
"""Device-plugin benchmark: the daemon serving 64 resources x 32 devices to the kubelet emulator.

Usage: bench/run_plugin.py [BUILD_DIR] [--allocations N] [--paced N] [--restarts N]
                           [--idle S] [--strace S] [--scrapes N] [--metrics ADDR|0]
                           [--seed N] [--keep]

Builds the plugin-bench tree (e2e/fixtures/make_tree.py: 2,048 vfio-pci functions, one IOMMU
group each, 64 unknown Intel device IDs, so 64 resources intel.com/f000 ... f03f) on tmpfs, a
config enabling vendor 8086 class 0200 (exactly those functions, not the bridges), then starts
BUILD_DIR/e2e/kubelet_emulator and `BUILD_DIR/pcidevices daemon` on it and measures:
  a. daemon start -> 64 resources registered and their first ListAndWatch lists received
  b. Allocate of one random device on a random resource, the gRPC round trip the emulator times
     ("elapsed_us"): p50, p99, max; first --paced ones each sent to a quiet daemon (counting
     the ListAndWatch updates each causes), then --allocations back to back
  c. kubelet restart -> 64 resources registered again (from just before "restart" is sent to the
     64th successful register event's "t_us"): median and max
  d. the daemon's VmRSS, VmHWM, threads and open fds afterwards
  e. idle wake-ups: context switches of every daemon thread over a quiet period (no commands),
     then, if strace is installed, `strace -f -c` over a shorter quiet period
  f. uevent -> ListAndWatch update: measured by bench/run_hotplug.py (it needs a umockdev testbed)
  g. GET /metrics back to back (--scrapes): p50, p99, max (budget p99 <= 2 ms)
and prints every figure next to its budget. A benchmark, not a test: exits 0 whatever the
figures are, 1 only when the setup itself fails. Every process started here is stopped here, by
PID; everything is written below one temporary directory, removed at the end.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import machine  # bench/machine.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_TREE = os.path.join(HERE, "..", "e2e", "fixtures", "make_tree.py")
RESOURCES = [f"intel.com/f{n:03x}" for n in range(64)]  # device IDs f000 ... f03f
DEVICES_PER_RESOURCE = 32

ALLOCATE_P99_BUDGET_US = 1000
REREGISTER_BUDGET_US = 1_000_000
RSS_BUDGET_KB = 20 * 1024


class SetupError(Exception):
    pass


def now_us() -> int:
    return time.time_ns() // 1000


class Emulator:
    """The kubelet emulator; a thread reads its JSON events into a queue."""

    def __init__(self, binary: str, plugin_dir: str) -> None:
        self.proc = subprocess.Popen([binary, "--dir", plugin_dir], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events: queue.Queue = queue.Queue()
        self.counts: dict[str, int] = {}  # every event ever received, by kind
        threading.Thread(target=self._read, daemon=True).start()
        if self.next(lambda e: e["event"] == "ready", 10) is None:
            raise SetupError("kubelet emulator did not start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            e = json.loads(line)
            e["rx_us"] = now_us()  # when this script saw it
            self.counts[e["event"]] = self.counts.get(e["event"], 0) + 1
            self.events.put(e)
        self.events.put(None)  # end of stream

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next(self, pred, timeout: float) -> dict | None:
        """The next event matching `pred`, dropping the others; None on timeout or exit."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if e is None:
                return None
            if pred(e):
                return e
        return None

    def collect(self, timeout: float) -> list[dict]:
        """Every event arriving within `timeout` seconds."""
        out = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                break
            if e is None:
                break
            out.append(e)
        return out

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                e = self.events.get_nowait()
            except queue.Empty:
                return out
            if e is not None:
                out.append(e)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def wait_registered(emu: Emulator, t_start: int, timeout: float,
                    early: list[dict] | None = None) -> dict:
    """Waits for every resource's successful register and its first full healthy list;
    `early` holds events already taken from the queue, handled first."""
    early = list(early or [])
    registered: dict[str, int] = {}  # resource -> t_us of its successful register
    first_list: dict[str, int] = {}  # resource -> t_us of its first list
    first_list_devices: dict[str, list] = {}
    healthy_at: dict[str, int] = {}  # resource -> t_us of its first list with 32 healthy
    failed_registers = ok_registers = 0
    other = {}
    deadline = time.monotonic() + timeout
    while len(registered) < len(RESOURCES) or len(healthy_at) < len(RESOURCES):
        left = deadline - time.monotonic()
        if early:
            e = early.pop(0)
        else:
            e = emu.next(lambda e: True, left) if left > 0 else None
        if e is None:
            break
        kind, res = e["event"], e.get("resource")
        if kind == "register":
            if e["ok"]:
                ok_registers += 1
                registered.setdefault(res, e["t_us"])
            else:
                failed_registers += 1
        elif kind == "list" and res in registered:
            if res not in first_list:
                first_list[res] = e["t_us"]
                first_list_devices[res] = e["devices"]
            healthy = sum(d["health"] == "Healthy" for d in e["devices"])
            # A list from a stream of before a kubelet restart does not count.
            if (res in registered and healthy == DEVICES_PER_RESOURCE
                    and len(e["devices"]) == DEVICES_PER_RESOURCE):
                healthy_at.setdefault(res, e["t_us"])
        else:
            other[kind] = other.get(kind, 0) + 1  # "list" here: from a stream before a restart
    return {"registered": registered, "first_list": first_list,
            "first_list_devices": first_list_devices, "healthy_at": healthy_at,
            "failed_registers": failed_registers, "ok_registers": ok_registers,
            "other": other, "t_start": t_start}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))] if s else float("nan")


def proc_status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    with open(path) as f:
        return {k: v.strip() for k, v in (l.split(":", 1) for l in f if ":" in l)}


def thread_switches(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (comm, voluntary, nonvoluntary) for every thread alive now."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(pid, int(tid))
            out[int(tid)] = (st["Name"], int(st["voluntary_ctxt_switches"]),
                             int(st["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError):
            pass  # the thread exited meanwhile
    return out


def kb(field: str) -> int:
    return int(field.split()[0])


def rss_by_mapping(pid: int) -> list[tuple[int, str]]:
    """(Rss kB, file name or [heap]/[anon]/...) summed over /proc/PID/smaps, largest first."""
    rss: dict[str, int] = {}
    name = "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # first line: range perms offset dev inode [path]
                name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:":
                rss[name] = rss.get(name, 0) + int(head[1])
    return sorted(((v, k) for k, v in rss.items()), reverse=True)


def sample(pid: int) -> dict[str, int]:
    st = proc_status(pid)
    return {"rss_kb": kb(st["VmRSS"]), "hwm_kb": kb(st["VmHWM"]), "threads": int(st["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build", nargs="?", default=os.path.join(HERE, "..", "build"))
    parser.add_argument("--allocations", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=100,
                        help="allocations each sent to a quiet daemon, before the burst")
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--idle", type=float, default=30.0, help="quiet period, seconds")
    parser.add_argument("--scrapes", type=int, default=1000, help="/metrics scrapes to time")
    parser.add_argument("--metrics", default="127.0.0.1:0",
                        help="the daemon's --metrics-bind-address (0: none, to compare)")
    parser.add_argument("--strace", type=float, default=10.0,
                        help="strace -c period, seconds (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (tree, config, daemon.log)")
    args = parser.parse_args()
    return run_in_tmp("run_plugin.py", "pcid-bench-plugin-", args, run)


def run_in_tmp(script: str, prefix: str, args, run) -> int:
    """Checks that args.build holds pcidevices and the kubelet emulator, then calls
    run(args, pcidevices, emulator_bin, tmp) in a new directory on tmpfs, removed afterwards
    unless args.keep; 1 when the setup fails."""
    build = os.path.abspath(args.build)
    pcidevices = os.path.join(build, "pcidevices")
    emulator_bin = os.path.join(build, "e2e", "kubelet_emulator")
    for b in (pcidevices, emulator_bin):
        if not os.access(b, os.X_OK):
            print(f"{script}: {b} not found or not executable", file=sys.stderr)
            return 1

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmp = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        return run(args, pcidevices, emulator_bin, tmp)
    except SetupError as e:
        print(f"{script}: setup failed: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, pcidevices: str, emulator_bin: str, tmp: str) -> int:
    sysfs, dev, plugins = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/dp"
    os.mkdir(plugins)
    t = time.monotonic()
    subprocess.run([sys.executable, MAKE_TREE, "plugin-bench", sysfs, "--dev-root", dev,
                    "--proc-root", f"{tmp}/proc"], check=True)
    print(machine.line(os.path.dirname(pcidevices)), flush=True)
    print(f"tree: make_tree.py plugin-bench in {time.monotonic() - t:.2f} s on "
          f"{os.path.dirname(tmp)}", flush=True)
    config = f"{tmp}/config.json"
    with open(config, "w") as f:
        json.dump({"enable": [{"vendor": "8086", "class": "0200"}]}, f)

    listed = json.loads(subprocess.run([pcidevices, "list", "--sysfs-root", sysfs, "--output",
                                        "json"], check=True, capture_output=True,
                                       text=True).stdout)
    selected = [d["status"] for d in listed
                if d["status"]["vendorId"] == "8086" and d["status"]["classId"] == "0200"]
    names = sorted({d["resourceName"] for d in selected})
    print(f"tree: {len(listed)} functions, {len(selected)} selected by vendor 8086 class 0200, "
          f"{len(names)} resources ({names[0]} ... {names[-1]})", flush=True)
    if len(selected) != len(RESOURCES) * DEVICES_PER_RESOURCE or names != RESOURCES:
        raise SetupError("the tree does not hold the expected 64 x 32 functions")

    emu = Emulator(emulator_bin, plugins)
    log_path = f"{tmp}/daemon.log"
    log = open(log_path, "w+")
    daemon = None
    strace = None
    try:
        t_start = now_us()
        daemon = subprocess.Popen(
            [pcidevices, "daemon", "--metrics-bind-address", args.metrics, "--node-name", "bench", "--config", config,
             "--sysfs-root", sysfs, "--dev-root", dev, "--device-plugin-dir", plugins,
             "--proc-root", f"{tmp}/proc", "--state-dir", f"{tmp}/state",
             # never the real /var/lib/kubelet, even to look
             "--pod-resources-socket", f"{tmp}/pod-resources.sock"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        results = {}
        strace = measure(args, emu, daemon, t_start, results, tmp)
        report(results, emu, daemon, log_path)
    finally:
        if strace is not None and strace.poll() is None:
            strace.send_signal(signal.SIGINT)
            try:
                strace.wait(timeout=10)
            except subprocess.TimeoutExpired:
                strace.kill()
                strace.wait()
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=10)
                print(f"daemon: exit code {code} after SIGTERM")
            except subprocess.TimeoutExpired:
                print("daemon: still running 10 s after SIGTERM, killed")
                daemon.kill()
                daemon.wait()
        emu.stop()
        log.close()
    return 0


def measure(args, emu: Emulator, daemon: subprocess.Popen, t_start: int, results: dict,
            tmp: str) -> subprocess.Popen | None:
    # a. Start-up.
    start = wait_registered(emu, t_start, timeout=60)
    results["start"] = start
    if len(start["registered"]) < len(RESOURCES):
        raise SetupError(f"only {len(start['registered'])} of {len(RESOURCES)} resources "
                         f"registered within 60 s (daemon exit code {daemon.poll()})")
    devices = {r: [d["id"] for d in start["first_list_devices"].get(r, [])] for r in RESOURCES}
    if any(len(v) != DEVICES_PER_RESOURCE for v in devices.values()):
        raise SetupError("some first ListAndWatch list does not hold 32 devices: " + str({r: len(v) for r, v in devices.items() if len(v) != DEVICES_PER_RESOURCE}) + f" healthy at {len(start['healthy_at'])}")
    print(f"a. start-up measured ({len(start['healthy_at'])}/64 resources with 32 healthy)",
          flush=True)
    time.sleep(0.5)
    results["samples"] = [("after start-up", sample(daemon.pid))]
    late = emu.drain()
    results["start_late_events"] = count_kinds(late)

    # b. Paced Allocate: each one on a quiet daemon, then every event it causes collected until
    # 100 ms pass without one (a Replan re-sending lists shows up here).
    rng = random.Random(args.seed)
    paced = []
    for _ in range(args.paced):
        res = rng.choice(RESOURCES)
        emu.send(f"allocate {res} {rng.choice(devices[res])}")
        e = emu.next(lambda e: e["event"] == "allocate", 10)
        if e is None:
            raise SetupError("no allocate event within 10 s")
        after = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (x := emu.next(lambda e: True, 0.1)) is not None:
            after.append(x)
        lists = [x for x in after if x["event"] == "list"]
        paced.append({"ok": e["ok"], "elapsed": e["elapsed_us"], "lists": len(lists),
                      "events": len(after) - len(lists),
                      "last_list_us": lists[-1]["t_us"] - e["t_us"] if lists else None,
                      # < 0: the updates were already being sent before the answer arrived
                      "first_list_us": lists[0]["t_us"] - e["t_us"] if lists else None})
    results["paced"] = paced
    print(f"b. {args.paced} paced allocations measured", flush=True)

    # b. Allocate, back to back.
    elapsed, roundtrip, failures = [], [], []
    lists_during = changed_during = 0
    for _ in range(args.allocations):
        res = rng.choice(RESOURCES)
        dev_id = rng.choice(devices[res])
        sent = now_us()
        emu.send(f"allocate {res} {dev_id}")
        while True:
            e = emu.next(lambda e: True, 10)
            if e is None:
                raise SetupError("no allocate event within 10 s")
            if e["event"] == "list":
                lists_during += 1
                ids = [d["id"] for d in e["devices"]]
                changed_during += (ids != devices[e["resource"]]
                                   or any(d["health"] != "Healthy" for d in e["devices"]))
            if e["event"] == "allocate":
                break
        if not e["ok"]:
            failures.append(e)
            continue
        elapsed.append(e["elapsed_us"])
        roundtrip.append(e["rx_us"] - sent)
    last_answer = now_us()
    results["rss_after_burst"] = proc_status(daemon.pid)["VmRSS"]
    # Lists still arriving after the last answer: wait until none came for 1 s (at most 180 s).
    lists_after, last_list, changed = 0, None, 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        e = emu.next(lambda e: True, 1.0)
        if e is None:
            break
        if e["event"] == "list":
            lists_after += 1
            last_list = e["t_us"]
            ids = [d["id"] for d in e["devices"]]
            healthy = all(d["health"] == "Healthy" for d in e["devices"])
            changed += ids != devices[e["resource"]] or not healthy
    results["samples"].append((f"after {args.allocations} allocations settled",
                               sample(daemon.pid)))
    results["allocate"] = {"elapsed": elapsed, "roundtrip": roundtrip, "failures": failures,
                           "lists": lists_during, "lists_after": lists_after,
                           "lists_changed": changed + changed_during,
                           "tail_us": last_list - last_answer if last_list else 0}
    print(f"b. {args.allocations} allocations measured", flush=True)

    # c. Kubelet restarts.
    restarts = []
    for i in range(args.restarts):
        emu.drain()
        sent = now_us()
        emu.send("restart")
        early = []  # a register may come before "restarted" is printed: keep it
        while (r := emu.next(lambda e: True, 10)) is not None and r["event"] != "restarted":
            early.append(r)
        if r is None:
            raise SetupError(f"restart {i}: no restarted event within 10 s")
        again = wait_registered(emu, sent, 10, early)
        reg = again["registered"]
        restarts.append({
            "restarted_us": r["t_us"] - sent,
            "registered": len(reg),
            "all_registered_us": max(reg.values()) - sent if len(reg) == len(RESOURCES) else None,
            "first_register_us": min(reg.values()) - sent if reg else None,
            "all_listed_us": (max(again["healthy_at"].values()) - sent
                              if len(again["healthy_at"]) == len(RESOURCES) else None),
            "failed_registers": again["failed_registers"],
            # the same resource registered more than once after this one restart
            "extra_registers": again["ok_registers"] - len(reg) + sum(
                x["event"] == "register" for x in emu.collect(0.3)),
        })
        results.setdefault("samples", []).append((f"after restart {i}", sample(daemon.pid)))
    results["restarts"] = restarts
    print(f"c. {args.restarts} kubelet restarts measured", flush=True)

    # d. Memory, threads, fds.
    time.sleep(1.0)
    st = proc_status(daemon.pid)
    results["proc"] = {"rss_kb": kb(st["VmRSS"]), "hwm_kb": kb(st["VmHWM"]),
                       "anon_kb": kb(st["RssAnon"]), "file_kb": kb(st["RssFile"]),
                       "threads": int(st["Threads"]),
                       "fds": len(os.listdir(f"/proc/{daemon.pid}/fd")),
                       "thread_names": sorted(
                           n for n, _, _ in thread_switches(daemon.pid).values())}
    fd_kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{daemon.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{daemon.pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target and not target.startswith("/") else "file"
        fd_kinds[kind] = fd_kinds.get(kind, 0) + 1
    results["proc"]["fd_kinds"] = fd_kinds
    results["proc"]["mappings"] = rss_by_mapping(daemon.pid)

    # e. Idle: no command for args.idle seconds.
    emu.drain()
    before, t0 = thread_switches(daemon.pid), time.monotonic()
    time.sleep(args.idle)
    after, t1 = thread_switches(daemon.pid), time.monotonic()
    results["idle"] = {"before": before, "after": after, "seconds": t1 - t0,
                       "events": count_kinds(emu.drain())}
    print(f"e. {args.idle:.0f} s idle measured", flush=True)

    strace = None
    results["strace"] = None
    if args.strace > 0 and shutil.which("strace"):
        out = f"{tmp}/strace.txt"
        strace = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(daemon.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(args.strace)
        strace.send_signal(signal.SIGINT)  # detaches from every thread, writes the summary
        try:
            strace.wait(timeout=10)
        except subprocess.TimeoutExpired:
            strace.kill()
            strace.wait()
        err = strace.stderr.read()
        with open(out) as f:
            results["strace"] = {"seconds": args.strace, "summary": f.read(), "stderr": err}
        print(f"e. strace -f -c over {args.strace:.0f} s idle done", flush=True)
        time.sleep(0.2)
        # Still alive and serving after strace's attach and detach?
        emu.send(f"allocate {RESOURCES[0]} {devices[RESOURCES[0]][0]}")
        e = emu.next(lambda e: e["event"] == "allocate", 10)
        results["strace"]["after_ok"] = bool(e and e["ok"])
    # g. /metrics scraped back to back over one keep-alive connection (after the idle period,
    # so that its server was idle during e).
    results["scrapes"] = None
    m = re.search(r"metrics on 127\.0\.0\.1:(\d+)", open(f"{tmp}/daemon.log").read())
    if m:
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
        times, size = [], 0
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            conn.request("GET", "/metrics")
            body = conn.getresponse().read()
            times.append((time.perf_counter() - t0) * 1e6)
            size = len(body)
        conn.close()
        results["scrapes"] = {"us": times, "bytes": size}
        print(f"g. {args.scrapes} scrapes of /metrics measured", flush=True)
    return strace


def count_kinds(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["event"]] = out.get(e["event"], 0) + 1
    return out


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f} ms"


def report(results: dict, emu: Emulator, daemon: subprocess.Popen, log_path: str) -> None:
    rows = []  # (figure, value, budget, verdict)
    print()
    print("=== a. start-up: daemon start -> 64 resources registered + first lists ===")
    s = results["start"]
    t0 = s["t_start"]
    reg = sorted(v - t0 for v in s["registered"].values())
    lst = sorted(v - t0 for v in s["first_list"].values())
    healthy = sorted(v - t0 for v in s["healthy_at"].values())
    first_healthy = sum(sum(d["health"] == "Healthy" for d in devs) == DEVICES_PER_RESOURCE
                        for devs in s["first_list_devices"].values())
    print(f"first register          {ms(reg[0])}")
    print(f"64th register           {ms(reg[-1])}")
    print(f"first list              {ms(lst[0])}")
    print(f"64th first list         {ms(lst[-1])}")
    print(f"first lists with 32 Healthy: {first_healthy}/64; 64th all-healthy list "
          f"{ms(healthy[-1] if len(healthy) == 64 else None)}")
    print(f"failed registers: {s['failed_registers']}; other events: {s['other'] or 'none'}; "
          f"events in the 0.5 s after: {results['start_late_events'] or 'none'}")
    done = max(reg[-1], lst[-1], healthy[-1] if len(healthy) == 64 else 0)
    rows.append(("a. start -> 64 registered + lists (32 Healthy)",
                 ms(done) if len(healthy) == 64 else f"{len(healthy)}/64 healthy",
                 "(none given)", "info" if len(healthy) == 64 else "MISSED"))

    print()
    a = results["allocate"]
    el, rt = a["elapsed"], a["roundtrip"]
    pc = results["paced"]
    if pc:
        pe = [x["elapsed"] for x in pc if x["ok"]]
        pl = [x["lists"] for x in pc]
        tails = [x["last_list_us"] for x in pc if x["last_list_us"] is not None]
        heads = [x["first_list_us"] for x in pc if x["first_list_us"] is not None]
        early = [n for n, x in enumerate(pc) if x["first_list_us"] is not None
                 and x["first_list_us"] < 0]
        print(f"=== b. Allocate, paced: {len(pe)} ok of {len(pc)}, each on a quiet daemon ===")
        if pe:
            print(f"elapsed_us  p50 {percentile(pe, 50)} us  p99 {percentile(pe, 99)} us  "
                  f"max {max(pe)} us")
        slow = [(n, x["elapsed"]) for n, x in enumerate(pc) if x["elapsed"] > 1000]
        print(f"over 1 ms: {len(slow)}: " + ", ".join(f"#{n} {v} us" for n, v in slow[:20]))
        print(f"ListAndWatch lists each Allocate caused: min {min(pl)}, median "
              f"{statistics.median(pl)}, max {max(pl)}"
              + (f"; the last came {ms(statistics.median(tails))} (median) / {ms(max(tails))} "
                 f"(max) after the Allocate answer" if tails else ""))
        if heads:
            print(f"the first update came {ms(statistics.median(heads))} (median) after the answer;"
                  f" before it (the answer queued behind the updates) in {len(early)} cases"
                  + (": " + ", ".join(f"#{n}" for n in early[:20]) if early else ""))
        print()
        rows.append(("b. Allocate p99, paced (quiet daemon)",
                     f"{percentile(pe, 99)} us" if pe else "-",
                     "<= 1000 us", "met" if pe and len(pe) == len(pc)
                     and percentile(pe, 99) <= ALLOCATE_P99_BUDGET_US else "MISSED"))
    print(f"=== b. Allocate, back to back: {len(el)} ok, {len(a['failures'])} failed ===")
    if a["failures"]:
        print(f"first failure: {a['failures'][0]}")
    if el:
        print(f"elapsed_us (in emulator)  p50 {percentile(el, 50)} us  p90 {percentile(el, 90)} us"
              f"  p99 {percentile(el, 99)} us  max {max(el)} us  mean {statistics.mean(el):.0f} us")
        print(f"script round trip         p50 {percentile(rt, 50)} us  p99 {percentile(rt, 99)} us"
              f"  max {max(rt)} us")
        slow = sum(v > ALLOCATE_P99_BUDGET_US for v in el)
        print(f"allocations over 1 ms: {slow}")
    print(f"VmRSS right after the last answer: {results['rss_after_burst']}")
    print(f"ListAndWatch lists received during the allocations: {a['lists']}; after the last "
          f"answer: {a['lists_after']}, the last {ms(a['tail_us'])} after it; lists differing "
          f"from the first ones (devices or health): {a['lists_changed']}")
    p99 = percentile(el, 99) if el else None
    rows.append(("b. Allocate p50, back to back", f"{percentile(el, 50)} us" if el else "-",
                 "", ""))
    rows.append(("b. Allocate p99, back to back", f"{p99} us" if el else "-", "<= 1000 us",
                 "met" if el and not a["failures"] and p99 <= ALLOCATE_P99_BUDGET_US
                 else "MISSED"))
    rows.append(("b. Allocate max, back to back", f"{max(el)} us" if el else "-", "", ""))

    print()
    r = results["restarts"]
    print(f"=== c. kubelet restart -> 64 re-registered ({len(r)} restarts) ===")
    print(" #  restarted   1st register  64th register  64 lists healthy  failed  extra regs")
    for i, x in enumerate(r):
        print(f"{i:2d}  {ms(x['restarted_us']):>9}  {ms(x['first_register_us']):>12}  "
              f"{ms(x['all_registered_us']):>13}  {ms(x['all_listed_us']):>16}  "
              f"{x['failed_registers']:>6}  {x['extra_registers']:>10}"
              + ("" if x["registered"] == 64 else f"  only {x['registered']}/64 registered"))
    full = [x["all_registered_us"] for x in r if x["all_registered_us"] is not None]
    complete = len(full) == len(r) and r
    med = statistics.median(full) if full else None
    worst = max(full) if full else None
    print(f"64th register: median {ms(med)}, max {ms(worst)}; "
          f"{len(r) - len(full)} restarts incomplete within 10 s; resources registered twice "
          f"or more after one restart: {sum(x['extra_registers'] for x in r)} in all")
    rows.append(("c. re-registration median", ms(med), "<= 1000 ms",
                 "met" if complete and med <= REREGISTER_BUDGET_US else "MISSED"))
    rows.append(("c. re-registration max", ms(worst), "<= 1000 ms",
                 "met" if complete and worst <= REREGISTER_BUDGET_US else "MISSED"))

    print()
    p = results["proc"]
    print("=== d. daemon process after all that ===")
    print(f"VmRSS {p['rss_kb']} kB ({p['rss_kb'] / 1024:.1f} MiB: RssAnon {p['anon_kb']} kB, "
          f"RssFile {p['file_kb']} kB), VmHWM {p['hwm_kb']} kB "
          f"({p['hwm_kb'] / 1024:.1f} MiB), threads {p['threads']}, fds {p['fds']} "
          f"{p['fd_kinds']}")
    print("over time: " + "; ".join(
        f"{what}: RSS {x['rss_kb'] / 1024:.1f} MiB, {x['threads']} threads, {x['fds']} fds"
        for what, x in results["samples"] if not what.startswith("after restart")
        or what.endswith((" 0", f" {len(results['restarts']) - 1}"))))
    print("RSS by mapping: " + ", ".join(f"{n} {v} kB" for v, n in p["mappings"][:10]))
    names: dict[str, int] = {}
    for n in p["thread_names"]:
        names[n] = names.get(n, 0) + 1
    print("threads by name: " + ", ".join(f"{n} x{c}" for n, c in sorted(names.items())))
    rows.append(("d. VmRSS", f"{p['rss_kb'] / 1024:.1f} MiB", "<= 20 MiB",
                 "met" if p["rss_kb"] <= RSS_BUDGET_KB else "MISSED"))
    rows.append(("d. VmHWM (peak)", f"{p['hwm_kb'] / 1024:.1f} MiB", "<= 20 MiB",
                 "met" if p["hwm_kb"] <= RSS_BUDGET_KB else "MISSED"))
    rows.append(("d. threads / fds", f"{p['threads']} / {p['fds']}", "(none given)", "info"))

    print()
    i = results["idle"]
    print(f"=== e. idle: {i['seconds']:.1f} s without commands ===")
    total = 0
    print("   tid  name             voluntary  nonvoluntary")
    for tid in sorted(set(i["before"]) | set(i["after"])):
        b, e = i["before"].get(tid), i["after"].get(tid)
        if b and e:
            dv, dn = e[1] - b[1], e[2] - b[2]
            total += dv + dn
            if dv or dn:
                print(f"{tid:>6}  {e[0]:<15}  {dv:>9}  {dn:>12}")
        else:
            print(f"{tid:>6}  {(b or e)[0]:<15}  {'exited' if b else 'appeared'} during the period")
    quiet = sum(1 for tid in i["before"] if tid in i["after"]
                and i["before"][tid][1:] == i["after"][tid][1:])
    print(f"threads with no switch at all: {quiet} of {len(i['after'])}")
    print(f"total context switches: {total} ({total / i['seconds']:.2f}/s); "
          f"emulator events meanwhile: {i['events'] or 'none'}")
    appeared = set(i["after"]) - set(i["before"])
    rows.append(("e. idle wake-ups (ctxt switches)",
                 f"{total} in {i['seconds']:.0f} s", "0 (none periodic)",
                 "met" if total == 0 and not appeared else "MISSED"))

    st = results["strace"]
    if st is None:
        print("strace: not installed or skipped")
    else:
        print(f"--- strace -f -c -p {daemon.pid}, {st['seconds']:.0f} s idle ---")
        print(st["summary"].rstrip() or "(empty summary)")
        if st["stderr"].strip():
            print("strace stderr: " + " | ".join(st["stderr"].strip().splitlines()[:6]))
        print(f"daemon serves Allocate after strace detached: {st['after_ok']}")
        calls = 0
        for line in st["summary"].splitlines():
            parts = line.split()
            if parts and parts[-1] == "total":
                calls = int(parts[3]) if len(parts) >= 5 else int(parts[2])
        rows.append(("e. idle syscalls (strace)", f"{calls} in {st['seconds']:.0f} s",
                     "0 (none periodic)", "met" if calls == 0 else "MISSED"))

    print()
    rows.append(("f. uevent -> ListAndWatch update", "see run_hotplug.py", "<= 10 ms p99", "n/a"))

    sc = results.get("scrapes")
    if sc:
        us = sc["us"]
        print(f"=== g. /metrics: {len(us)} scrapes, {sc['bytes']} bytes each ===")
        print(f"p50 {percentile(us, 50):.0f} us  p99 {percentile(us, 99):.0f} us  max {max(us):.0f} us "
              f"(client side, Python's http.client included)")
        rows.append(("g. /metrics p99 (2,048 devices)", f"{percentile(us, 99) / 1000:.2f} ms", "<= 2 ms",
                     "met" if percentile(us, 99) <= 2000 else "MISSED"))
    else:
        print("g. /metrics: no metrics port in the daemon's log")

    print()
    with open(log_path) as f:
        log_lines = f.read().splitlines()
    levels: dict[str, int] = {}
    for line in log_lines:
        for lvl in ("error", "warning", "warn", "info", "debug"):
            if f"[{lvl}]" in line or f" {lvl} " in line or f"[{lvl[0].upper()}]" in line:
                levels[lvl] = levels.get(lvl, 0) + 1
                break
    print(f"daemon log: {len(log_lines)} lines {levels or ''}; "
          f"emulator events in all: {emu.counts}")
    for line in [l for l in log_lines if "error" in l.lower() or "warn" in l.lower()][:8]:
        print("  " + line)

    print(f"machine: load average {machine.load_average()} at the end (other work on the machine skews the "
          f"latencies)")
    print()
    print("=== summary ===")
    w = max(len(x[0]) for x in rows)
    print(f"{'figure':<{w}}  {'value':>16}  {'budget':<18}  verdict")
    for name, value, budget, verdict in rows:
        print(f"{name:<{w}}  {value:>16}  {budget:<18}  {verdict}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
