#!/usr/bin/env python3
"""bench/dra: the DRA driver pcidevices.io on the plugin-bench tree (e2e/fixtures/make_tree.py:
2,048 Intel Ethernet functions, all on vfio-pci, each in its own IOMMU group), config
{"dra": [{"vendor": "8086", "class": "0200"}]}, against the API-server emulator (e2e/apiserver)
and the DRA kubelet emulator (e2e/dra_kubelet_emulator.cc). No CRDs are installed (as in
e2e/dra_test.py): the emulator's write counters count the DRA driver's own writes.

  1. NodePrepareResources for devices already on vfio-pci: CLAIMS ResourceClaims (default 200),
     each allocated one distinct device through the status subresource, prepared one by one; the
     RPC time the kubelet emulator reports ("ms"). Budget: p99 <= 2 ms. Then the idempotent
     repeat (the emulator's "bench" op on one prepared claim) and NodeUnprepareResources one by
     one. For reference: a claim's GET from the emulator, client side (Python, keep-alive) -- the
     driver reads each claim's allocation from the API server inside the RPC.
  2. The 2,048-device pool: seconds from the daemon's start to the pool complete on the API
     server (every slice of the highest generation present), its ResourceSlices and the API
     writes meanwhile; then the writes during QUIET seconds (default 10) with nothing happening.
     Budget: zero.
  3. Hot-plug: the daemon inside e2e/uevent_injector (a umockdev testbed, as bench/run_hotplug.py
     runs it): CYCLES (default 10) functions of the pool unplugged one by one, then CYCLES new
     ones plugged (add-bound-pci 0000:c0:SS.F: already on vfio-pci, each in its own IOMMU group,
     as the kernel presents a bound function); from the injector's stamp just before the uevent
     ("sent_us") to the first ResourceSlice of the new pool generation on the watch (resourceslices,
     this node), which must be the slice that holds (held) the function: slices keep their devices,
     so one slice changes, and ResourceSliceController writes it first. Budget: <= 100 ms. Then to
     the pool complete at that generation (every slice rewritten with it: the API's contract), and
     the writes per change. A change not seen within TIMEOUT seconds (default 3) counts as never.
     For reference, the emulator's own time for a PUT of one 128-device slice (unchanged; client
     side): the emulator is Python and validates every device.

usage: bench/run_dra.py [BUILD_DIR] [--claims 200] [--repeats 1000] [--quiet 10] [--cycles 10]
                        [--timeout 3] [--tmpdir DIR]

Parts 1 and 2 run in the system's temporary directory unless --tmpdir says otherwise (e.g.
/dev/shm: without the disk's fsync cost; a prepare writes and syncs the state file and the claim's
checkpoint file, and writes its metadata file and CDI spec). Part 3 always runs there (umockdev redirects /dev).

Figures are reported against their budgets; a missed budget still exits 0. A harness failure
(a process that does not come up, an answer that is not there, a binary that is missing or
predates the DRA driver) exits 1. PCID_BENCH_LOG=DIR keeps the daemons' logs there.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "e2e"))
import daemon_log  # noqa: E402
import machine  # noqa: E402
from device_plugin_test import stop_process  # noqa: E402
from dra_test import Kubelet  # noqa: E402
from hotplug_test import Injector  # noqa: E402
from projection_test import Api  # noqa: E402

MAKE_TREE = os.path.join(ROOT, "e2e", "fixtures", "make_tree.py")
CONFIG = {"dra": [{"vendor": "8086", "class": "0200"}]}
POOL = 2048
NODE, HP_NODE = "bench", "bench-hp"
RES = "/apis/resource.k8s.io/v1"


class HarnessError(Exception):
    pass


def pct(values, p):
    """Nearest rank, as the kubelet emulator's bench op computes it."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, -(-len(v) * p // 100) - 1))]


class Rest:
    """Direct calls to the emulator over one keep-alive connection (kubectl per claim would take
    minutes)."""

    def __init__(self, api):
        self.api = api
        self.conn = None

    def call(self, method, path, body=None, ctype="application/json"):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.api.port, context=self.api.ctx, timeout=30)
            try:
                self.conn.request(method, path, body=None if body is None else json.dumps(body),
                                  headers={"Authorization": f"Bearer {self.api.token}", "Content-Type": ctype})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, json.loads(data or b"{}")
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return None

    def close(self):
        if self.conn:
            self.conn.close()


class SliceWatch:
    """A watch on one node's ResourceSlices; after every event, the pool as a consumer sees it
    (the highest generation's slices; complete when all resourceSliceCount of them are there),
    stamped with the wall clock at receipt (the injector's and the emulators' clock)."""

    def __init__(self, api, node):
        self.slices = {}  # name -> (generation, slice count, frozenset of device names)
        self.states = []  # (t, generation, complete, devices, slice name)
        self.cond = threading.Condition()
        self.error = None
        self.conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=api.ctx, timeout=None)
        self.conn.request("GET", f"{RES}/resourceslices?watch=1&allowWatchBookmarks=true&fieldSelector="
                          + quote(f"spec.nodeName={node}"), headers={"Authorization": f"Bearer {api.token}"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise HarnessError(f"watch on resourceslices: HTTP {self.resp.status}")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                t = time.time()
                if not line.strip():
                    continue
                ev = json.loads(line)
                if ev["type"] == "BOOKMARK":
                    continue
                if ev["type"] == "ERROR":
                    raise HarnessError(f"watch error: {ev['object']}")
                o = ev["object"]
                name = o["metadata"]["name"]
                with self.cond:
                    if ev["type"] == "DELETED":
                        self.slices.pop(name, None)
                    else:
                        pool = o["spec"]["pool"]
                        self.slices[name] = (pool["generation"], pool["resourceSliceCount"],
                                             frozenset(d["name"] for d in o["spec"].get("devices", [])))
                    gen = max((s[0] for s in self.slices.values()), default=-1)
                    top = [s for s in self.slices.values() if s[0] == gen]
                    complete = bool(top) and len(top) == top[0][1]
                    devices = frozenset().union(*(s[2] for s in top)) if top else frozenset()
                    self.states.append((t, gen, complete, devices, name))
                    self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 -- reported to the waiter (unless stopped)
            with self.cond:
                if self.resp is not None:
                    self.error = e
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.states)

    def wait(self, pred, since=0, timeout=30.0):
        """The first state from index `since` on for which pred(state) holds: (index, state)."""
        end = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.states):
                    if pred(self.states[i]):
                        return i, self.states[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or self.error:
                    return None, None
                self.cond.wait(left)

    def current(self):
        with self.cond:
            return self.states[-1] if self.states else None

    def stop(self):
        self.resp = None
        try:
            self.conn.sock.shutdown(2)
        except (OSError, AttributeError):
            pass
        self.conn.close()
        self.thread.join(timeout=5)


def daemon_args(node, config, sysfs, dev, proc, tmp, kubeconfig):
    return ["--metrics-bind-address", "0", "--node-name", node, "--config", config, "--sysfs-root", sysfs,
            "--dev-root", dev, "--proc-root", proc, "--state-dir", f"{tmp}/state",
            "--device-plugin-dir", f"{tmp}/dp", "--pod-resources-socket", f"{tmp}/pr.sock",
            "--kubeconfig", kubeconfig, "--kubelet-dir", f"{tmp}/kubelet", "--cdi-dir", f"{tmp}/cdi"]


def prepare_dirs(tmp):
    for d in ("dp", "kubelet/plugins_registry", "cdi"):
        os.makedirs(f"{tmp}/{d}", exist_ok=True)
    with open(f"{tmp}/config.json", "w") as f:
        json.dump(CONFIG, f)


def log_file(name, tmp):
    keep = os.environ.get("PCID_BENCH_LOG")
    if keep:
        os.makedirs(keep, exist_ok=True)
    return open(os.path.join(keep or tmp, name), "w+")


def log_tail(log, lines=40):
    log.flush()
    log.seek(0)
    return daemon_log.failure_text(log.read(), lines)


def writes_text(stats):
    by = stats.get("writes_by_resource", {})
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "none"


def write_verbs(stats, resource):
    per = stats.get("by_resource", {}).get(resource, {})
    return {k: v for k, v in per.items() if k in ("create", "update", "patch", "delete", "deletecollection")}


# -- 1 and 2: the pool, quiet, prepare/unprepare ---------------------------------------------


def node_watched(api, rest, node, tmp, suffix=""):
    """The Node object, a watch on its slices, and the daemon's and kubelet's log files."""
    st, out = rest.call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    if st not in (200, 201):
        raise HarnessError(f"Node {node}: HTTP {st} {out}")
    return SliceWatch(api, node), log_file(f"daemon{suffix}.log", tmp), log_file(f"kubelet{suffix}.log", tmp)


def pool_and_claims(a, api, build, tmp, figures):
    prepare_dirs(tmp)
    sysfs, dev, proc = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/proc"
    subprocess.run([sys.executable, MAKE_TREE, "plugin-bench", sysfs, "--dev-root", dev, "--proc-root", proc],
                   check=True)
    rest = Rest(api)
    watch, log, klog = node_watched(api, rest, NODE, tmp)
    kubelet = daemon = None
    try:
        kubelet = Kubelet(f"{build}/e2e/dra_kubelet_emulator", f"{tmp}/kubelet", klog)
        api.control("POST", "reset-stats")
        t_start = time.time()
        daemon = subprocess.Popen([f"{build}/pcidevices", "daemon",
                                   *daemon_args(NODE, f"{tmp}/config.json", sysfs, dev, proc, tmp,
                                                api.kubeconfig_tokenfile)], stderr=log)
        reg = kubelet.next(lambda l: l.get("event") in ("registered", "rejected"), timeout=60)
        if not reg or reg["event"] != "registered":
            raise HarnessError(f"the kubelet emulator did not register pcidevices.io: {reg}\n{log_tail(log)}")
        t_reg = reg["t_us"] / 1e6 - t_start
        _, state = watch.wait(lambda s: s[2] and len(s[3]) == POOL, timeout=120)
        if state is None:
            cur = watch.current()
            raise HarnessError(f"the pool never held {POOL} devices (last seen: "
                               f"{cur and (cur[1], cur[2], len(cur[3]))})\n{log_tail(log)}")
        t_pool = state[0] - t_start
        generation = state[1]
        # A moment for anything written after the pool was complete, then the start's count.
        time.sleep(2)
        start = api.control("GET", "stats")
        api.control("POST", "reset-stats")
        time.sleep(a.quiet)
        quiet = api.control("GET", "stats")
        now = watch.current()
        slice_count = sum(1 for s in watch.slices.values() if s[0] == now[1])
        # For reference (after the quiet count): the emulator's time for one slice's PUT.
        first = sorted(watch.slices)[0]
        st, obj = rest.call("GET", f"{RES}/resourceslices/{first}")
        put_ms = []
        for _ in range(10):
            t = time.perf_counter()
            st, _ = rest.call("PUT", f"{RES}/resourceslices/{first}", obj)
            put_ms.append((time.perf_counter() - t) * 1000)
            if st != 200:
                raise HarnessError(f"PUT {first}: HTTP {st}")
        figures["put"] = put_ms
        figures["pool"] = {"slices": slice_count, "devices": len(now[3]), "seconds": t_pool, "registered": t_reg,
                           "writes": start["writes"], "slice_writes": write_verbs(start, "resourceslices"),
                           "by_resource": writes_text(start), "quiet": quiet["writes"],
                           "quiet_requests": quiet["total"], "quiet_by": writes_text(quiet),
                           "generation": (generation, now[1])}
        print(f"2. pool: {len(now[3])} devices in {slice_count} ResourceSlices (generation {now[1]}), complete "
              f"{t_pool:.2f} s after the daemon's start (registered with the kubelet after {t_reg:.2f} s); "
              f"writes at start {start['writes']} ({writes_text(start)}; resourceslices "
              f"{write_verbs(start, 'resourceslices')}); quiet {a.quiet:.0f} s: {quiet['writes']} writes "
              f"({writes_text(quiet)}), {quiet['total']} requests; for reference, the emulator's PUT of one "
              f"128-device slice (unchanged, client side) p50 {pct(put_ms, 50):.1f} ms", flush=True)

        # -- 1. claims, each one distinct device of the pool
        names = sorted(now[3])
        devices = [names[i * len(names) // a.claims] for i in range(a.claims)]
        claims = []
        t0 = time.monotonic()
        for i, device in enumerate(devices):
            name = f"bench-{i:04d}"
            st, obj = rest.call("POST", f"{RES}/namespaces/default/resourceclaims", {
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"devices": {"requests": [{"name": "req", "exactly": {"deviceClassName": "pci.pcidevices.io"}}]}}})
            if st != 201:
                raise HarnessError(f"ResourceClaim {name}: HTTP {st} {obj}")
            st, out = rest.call("PATCH", f"{RES}/namespaces/default/resourceclaims/{name}/status",
                                {"status": {"allocation": {"devices": {"results": [
                                    {"request": "req", "driver": "pcidevices.io", "pool": NODE, "device": device}]}}}},
                                "application/merge-patch+json")
            if st != 200:
                raise HarnessError(f"ResourceClaim {name} allocation: HTTP {st} {out}")
            claims.append({"namespace": "default", "name": name, "uid": obj["metadata"]["uid"]})
        created = time.monotonic() - t0
        # For reference: a claim's GET as the driver does it inside the RPC (client side, Python).
        get_ms = []
        for c in claims:
            t = time.perf_counter()
            st, _ = rest.call("GET", f"{RES}/namespaces/default/resourceclaims/{c['name']}")
            get_ms.append((time.perf_counter() - t) * 1000)
            if st != 200:
                raise HarnessError(f"GET {c['name']}: HTTP {st}")

        api.control("POST", "reset-stats")
        prep = []
        for c, device in zip(claims, devices):
            r = kubelet.call("prepare", claims=[c])
            ans = (r or {}).get("claims", {}).get(c["uid"], {})
            if not r or not r.get("ok") or ans.get("error") or len(ans.get("devices", [])) != 1 \
                    or ans["devices"][0]["deviceName"] != device:
                raise HarnessError(f"prepare {c['name']} ({device}): {json.dumps(r)}\n{log_tail(log)}")
            prep.append(r["ms"])
        during_prepare = api.control("GET", "stats")
        specs = len([f for f in os.listdir(f"{tmp}/cdi") if f.endswith(".json")])
        bench = kubelet.call("bench", count=a.repeats, claims=[claims[0]])
        if not bench or not bench.get("ok"):
            raise HarnessError(f"bench op: {json.dumps(bench)}")
        api.control("POST", "reset-stats")
        unprep = []
        for c in claims:
            r = kubelet.call("unprepare", claims=[c])
            if not r or not r.get("ok") or r.get("claims", {}).get(c["uid"], {}).get("error", "?"):
                raise HarnessError(f"unprepare {c['name']}: {json.dumps(r)}\n{log_tail(log)}")
            unprep.append(r["ms"])
        during_unprepare = api.control("GET", "stats")
        left = os.listdir(f"{tmp}/cdi")
        figures["prepare"] = prep
        figures["unprepare"] = unprep
        figures["repeat"] = bench
        figures["get"] = get_ms
        print(f"1. {a.claims} claims created and allocated in {created:.1f} s (REST); NodePrepareResources one "
              f"by one: p50 {pct(prep, 50):.2f} ms  p99 {pct(prep, 99):.2f} ms  max {max(prep):.2f} ms "
              f"({specs} CDI specs written; API during the prepares: {during_prepare['total']} requests, "
              f"{during_prepare['writes']} writes ({writes_text(during_prepare)}))", flush=True)
        print(f"   idempotent repeat ({bench['count']} x one prepared claim): p50 {bench['p50']:.2f} ms  "
              f"p99 {bench['p99']:.2f} ms  max {bench['max']:.2f} ms", flush=True)
        print(f"   NodeUnprepareResources one by one: p50 {pct(unprep, 50):.2f} ms  p99 {pct(unprep, 99):.2f} ms  "
              f"max {max(unprep):.2f} ms (CDI dir afterwards: {len(left)} files; API during the unprepares: "
              f"{during_unprepare['total']} requests, {during_unprepare['writes']} writes)", flush=True)
        print(f"   for reference, a claim's GET from the API-server emulator (Python client, keep-alive): "
              f"p50 {pct(get_ms, 50):.2f} ms  p99 {pct(get_ms, 99):.2f} ms", flush=True)
        if left:
            raise HarnessError(f"CDI files left after every unprepare: {left[:5]}")
    finally:
        rest.close()
        watch.stop()
        if daemon:
            stop_process(daemon)
            figures["daemon_rc"] = daemon.returncode
            if daemon.returncode != 0:
                print(f"daemon exited with {daemon.returncode}\n{log_tail(log)}")
        if kubelet:
            kubelet.stop()


# -- 3: hot-plug -------------------------------------------------------------------------------


def injector_knows_dra(binary):
    """Whether the injector's built-in daemon has the DRA flags (it links pcid_cmd statically: a
    build from before the driver was added refuses --kubelet-dir)."""
    with open(binary, "rb") as f:
        data = f.read()
    return b"kubelet-dir" in data


def removable(count):
    """`count` functions of the plugin-bench pool, from its last one down, with their syspaths (the
    last card sits on bus a0 below root port 0000:80:05.7)."""
    out = []
    for fn in range(31, 31 - count, -1):
        addr = f"0000:a0:{fn >> 3:02x}.{fn & 7}"
        out.append((addr, f"/sys/devices/pci0000:80/0000:80:05.7/{addr}", "pci-" + addr.replace(":", "-").replace(".", "-")))
    return out


def stop_injector(inj):
    """quit: the daemon stops (SIGTERM inside) and the injector prints {"exit": RC}; then it
    removes its testbed (2,048 devices: seconds on a busy disk). The daemon's code, or None."""
    rc = None
    try:
        inj.proc.stdin.write("quit\n")
        inj.proc.stdin.flush()
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = inj.proc.stdout.readline()
            if not line:
                break
            if line.startswith("{") and "exit" in line:
                rc = json.loads(line)["exit"]
                break
        inj.proc.wait(timeout=180)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    stop_process(inj.proc)
    return rc


def hotplug(a, api, build, tmp, figures):
    prepare_dirs(tmp)
    rest = Rest(api)
    try:
        watch, log, klog = node_watched(api, rest, HP_NODE, tmp, "-hotplug")
    finally:
        rest.close()
    inj = kubelet = None
    try:
        # /sys and /dev are the testbed's inside the injector; everything else is shared.
        inj = Injector(f"{build}/e2e/uevent_injector",
                       [*daemon_args(HP_NODE, f"{tmp}/config.json", "/sys", "/dev", f"{tmp}/t/proc", tmp,
                                     api.kubeconfig_tokenfile), "--uevent-source", "udev"], log)
        inj.populate(MAKE_TREE, "plugin-bench", f"{tmp}/t")
        kubelet = Kubelet(f"{build}/e2e/dra_kubelet_emulator", f"{tmp}/kubelet", klog)
        if not inj.do("start").get("ok"):
            raise HarnessError(f"injector: start refused\n{log_tail(log)}")
        _, state = watch.wait(lambda s: s[2] and len(s[3]) == POOL, timeout=120)
        if state is None:
            raise HarnessError(f"hot-plug daemon: the pool never held {POOL} devices\n{log_tail(log)}")
        time.sleep(1)
        api.control("POST", "reset-stats")
        gen_start = watch.current()[1]
        # (ms to the first slice of the new generation, ms to the pool, whether that first slice was
        # the one holding the function) or None
        results = {"remove": [], "add": []}

        def holder(name):
            with watch.cond:
                return next((n for n, sl in watch.slices.items() if name in sl[2]), None)

        def change(action, command, want, name):
            gen0 = watch.current()[1]
            held = holder(name)
            since = watch.mark()
            r = inj.do(command)
            if not r.get("ok"):
                raise HarnessError(f"injector: {command}: {r}")
            sent = r["sent_us"] / 1e6
            _, done = watch.wait(lambda s: s[1] > gen0 and s[2] and want(s[3]), since, timeout=a.timeout)
            if done is None:
                results[action].append(None)
            else:
                _, first = watch.wait(lambda s: s[1] > gen0, since, timeout=0)
                right = (name in first[3]) if action == "add" else (first[4] == held)
                results[action].append(((first[0] - sent) * 1000, (done[0] - sent) * 1000, right))
                # Settled: a second pass would come within this, and be seen in the next change.
                time.sleep(0.3)
            return r

        # Unplugs of functions of the pool, then plugs of new ones (each already on vfio-pci in its
        # own IOMMU group, as the kernel presents a bound function): an unplug re-plans the whole
        # node, which would also publish an earlier plug that was not.
        gone = set()
        for addr, syspath, name in removable(a.cycles):
            gone.add(name)
            change("remove", f"remove {syspath}", lambda d, n=name: n not in d and len(d) == POOL - len(gone),
                   name)
        added = set()
        for i in range(a.cycles):
            addr = f"0000:c0:{i >> 3:02x}.{i & 7}"
            name = "pci-" + addr.replace(":", "-").replace(".", "-")
            added.add(name)
            change("add", f"add-bound-pci {addr} 8086 f000 020000 {9000 + i}", lambda d, n=name: n in d,
                   name)
        late = None
        missed = [x for x in results["add"] if x is None]
        if missed:
            # Where the unreflected plugs went: the next change of any kind (an unplug) publishes them?
            addr, syspath, name = removable(a.cycles + 1)[-1]
            gen0, since = watch.current()[1], watch.mark()
            inj.do(f"remove {syspath}")
            _, st = watch.wait(lambda s: s[1] > gen0 and s[2] and name not in s[3], since, timeout=a.timeout)
            late = (len(added & st[3]) if st else None, len(added))
        stats = api.control("GET", "stats")
        generations = watch.current()[1] - gen_start
        figures["hotplug"] = dict(results, writes=stats["writes"], generations=generations, late=late,
                                  timeout=a.timeout, changes=2 * a.cycles)
        for action, v in results.items():
            ok = [x for x in v if x]
            line = f"3. {len(v)} x {action:6}: "
            if ok:
                line += (f"uevent -> first slice of the new generation p50 {pct([x[0] for x in ok], 50):7.2f} ms "
                         f"max {max(x[0] for x in ok):7.2f} ms; -> pool complete p50 "
                         f"{pct([x[1] for x in ok], 50):7.2f} ms  max {max(x[1] for x in ok):7.2f} ms")
            if len(ok) < len(v):
                line += f"{'; ' if ok else ''}{len(v) - len(ok)} never reflected within {a.timeout:.0f} s"
            print(line, flush=True)
        if late:
            print(f"   the unreflected plugs after the next unplug (a re-plan): {late[0]} of {late[1]} functions "
                  "in the pool", flush=True)
        print(f"   API writes: {stats['writes']} ({writes_text(stats)}) for {2 * a.cycles} changes; "
              f"{generations} new pool generations", flush=True)
    finally:
        watch.stop()
        if inj:
            rc = stop_injector(inj)
            figures["hotplug_rc"] = rc
            if rc != 0:
                print(f"hot-plug daemon exited with {rc}\n{log_tail(log)}")
        if kubelet:
            kubelet.stop()


# -- summary -----------------------------------------------------------------------------------


def summary(a, figures, notes):
    rows = []

    def row(what, value, budget="", met=None):
        rows.append((what, value, budget, "" if met is None else ("met" if met else "MISSED")))

    p = figures.get("prepare")
    if p:
        row(f"1. prepare p50 ({len(p)} claims, on vfio-pci)", f"{pct(p, 50):.2f} ms")
        row("1. prepare p99", f"{pct(p, 99):.2f} ms", "<= 2 ms", pct(p, 99) <= 2)
        row("1. prepare max", f"{max(p):.2f} ms")
        r = figures["repeat"]
        row(f"1. idempotent repeat p50 / p99 ({r['count']}x)", f"{r['p50']:.2f} / {r['p99']:.2f} ms")
        u = figures["unprepare"]
        row("1. unprepare p50 / p99 / max", f"{pct(u, 50):.2f} / {pct(u, 99):.2f} / {max(u):.2f} ms")
        g = figures["get"]
        row("   (emulator: GET of a claim p50 / p99)", f"{pct(g, 50):.2f} / {pct(g, 99):.2f} ms")
    else:
        row("1. prepare / unprepare", "not measured")
    pool = figures.get("pool")
    if pool:
        row(f"2. ResourceSlices for {pool['devices']} devices", str(pool["slices"]))
        row("2. API writes at start", str(pool["writes"]))
        row("2. daemon start -> pool complete", f"{pool['seconds']:.2f} s")
        row(f"2. writes during {a.quiet:.0f} s quiet", str(pool["quiet"]), "0", pool["quiet"] == 0)
    else:
        row("2. pool", "not measured")
    hp = figures.get("hotplug")
    if hp:
        for action in ("remove", "add"):
            v = hp[action]
            what = f"3. hot-{'un' if action == 'remove' else ''}plug"
            first = [x[0] for x in v if x]
            right = [x for x in v if x and x[2]]
            if first:
                row(f"{what} -> its ResourceSlice p50 ({len(first)} of {len(v)})", f"{pct(first, 50):.2f} ms")
            worst = (f"{max(first):.2f} ms" if len(first) == len(v)
                     else f"never ({len(v) - len(first)}x > {hp['timeout']:.0f} s)")
            row(f"{what} -> its ResourceSlice max", worst, "<= 100 ms",
                len(first) == len(v) and len(right) == len(v) and max(first) <= 100)
            row(f"{what}: the changed slice written first", f"{len(right)} of {len(v)}")
            done = [x[1] for x in v if x]
            if done:
                row(f"{what} -> whole pool at the new generation max", f"{max(done):.2f} ms")
        row("3. API writes per change", f"{hp['writes'] / hp['changes']:.1f}")
        row("3. new pool generations", f"{hp['generations']}")
    if figures.get("put"):
        row("   (emulator: PUT of a 128-device slice p50)", f"{pct(figures['put'], 50):.2f} ms")
    else:
        row("3. hot-plug -> ResourceSlice", "not measured", "<= 100 ms")
    print()
    print(f"{'figure':52} {'measured':>22} {'budget':>10}")
    for what, value, budget, verdict in rows:
        print(f"{what:52} {value:>22} {budget:>10} {verdict}")
    for n in notes:
        print(f"note: {n}")
    print(f"load average at the end (1/5/15 min, {os.cpu_count()} CPUs): "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--quiet", type=float, default=10)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=3, help="seconds a hot-plug change may take to show")
    ap.add_argument("--tmpdir", default=None,
                    help="where parts 1 and 2 keep the tree, state, kubelet and CDI dirs (default: the system's "
                         "temporary directory, as part 3, which umockdev keeps off /dev)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    for b in ("pcidevices", "pcidevices-agent", "e2e/dra_kubelet_emulator", "e2e/uevent_injector"):
        if not os.access(f"{build}/{b}", os.X_OK):
            print(f"harness: {build}/{b} is missing")
            return 1
    for tool in ("kubectl", "umockdev-wrapper"):
        if not shutil.which(tool):
            print(f"harness: {tool} not found")
            return 1
    print(machine.line(build), flush=True)
    figures, notes = {}, []
    failed = False
    # Not under /dev: umockdev redirects /dev to its testbed, sockets included (part 3).
    with tempfile.TemporaryDirectory(prefix="pcid-bench-dra-") as tmp:
        api = Api(tmp)
        try:
            rc, out = api.kubectl("apply", "-f", f"{ROOT}/deploy/dra/deviceclasses.yaml")
            if rc:
                raise HarnessError(f"DeviceClasses: {out}")
            try:
                with tempfile.TemporaryDirectory(prefix="pcid-bench-dra-a-", dir=a.tmpdir) as tmp_a:
                    pool_and_claims(a, api, build, tmp_a, figures)
            except Exception as e:  # noqa: BLE001 -- a harness failure, whatever it is
                print(f"harness: {e if isinstance(e, HarnessError) else traceback.format_exc()}")
                failed = True
            if a.cycles <= 0:
                notes.append("3. not measured: --cycles 0")
            elif not injector_knows_dra(f"{build}/e2e/uevent_injector"):
                notes.append(f"3. not measured: {build}/e2e/uevent_injector predates the DRA driver (its daemon "
                             "has no --kubelet-dir); it needs a rebuild (target uevent_injector)")
                failed = True
            else:
                try:
                    os.mkdir(f"{tmp}/h")
                    hotplug(a, api, build, f"{tmp}/h", figures)
                except Exception as e:  # noqa: BLE001
                    print(f"harness: {e if isinstance(e, HarnessError) else traceback.format_exc()}")
                    failed = True
        except HarnessError as e:
            print(f"harness: {e}")
            failed = True
        finally:
            api.stop()
    for k in ("daemon_rc", "hotplug_rc"):
        if k in figures and figures[k] != 0:
            notes.append(f"{'daemon' if k == 'daemon_rc' else 'hot-plug daemon'} exited with {figures[k]}")
            failed = True
    summary(a, figures, notes)
    print("harness failure: some figures were not measured" if failed
          else "all figures measured" if "hotplug" in figures else "figures measured (part 3 skipped)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
