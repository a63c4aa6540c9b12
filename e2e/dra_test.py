#!/usr/bin/env python3
"""The DRA driver pcidevices.io end to end: the daemon on a gpu-node fixture tree, the API-server
emulator (resource.k8s.io/v1 validated against Kubernetes' published schema) with the real
kubectl, and the DRA kubelet emulator (e2e/dra_kubelet_emulator.cc: plugin registration and
NodePrepare/UnprepareResources over the real protos).

Checked: registration (v1 chosen), the pool's ResourceSlice against `lspci -n` on the same tree,
no device plugin for a DRA device, prepare (CDI spec, KEP-5304 metadata file, the vfio intent of
source dra/<uid>), idempotent repeats, every kind of bad claim answered with the claim's own error
and nothing bound or written, a USB device, a daemon restart between prepare and unprepare
(checkpoint), a kubelet restart (registered again) and the kubelet's wipe of the node's slices
(written again at a new generation).

Every CDI spec the driver writes (pcidevices.io/pci, pcidevices.io/usb) also goes through a real
CDI consumer, podman with runc: a busybox container given the spec's devices must see their nodes
as character devices it can read and write, KubeVirt's variables, and the KEP-5304 metadata file
mounted read-only where KubeVirt reads it. Needs root (the fixture's device nodes are made real
character devices, with /dev/null's numbers, and podman runs containers), podman, runc and
busybox-static (scripts/setup-deps.sh); without them the test fails.

    dra_test.py PCIDEVICES DRA_KUBELET_EMULATOR MAKE_TREE
"""

import json
import os
import queue
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import daemon_log  # noqa: E402
from projection_test import Api, gpu_node, stop_process  # noqa: E402

NODE = "n1"
# Claim name -> UID (the API server's, once created).
UID = {"missing": "00000000-0000-4000-8000-999999999999"}
failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else f"\n     {detail}"))
    if not cond:
        failures.append(what)
    return cond


def wait_for(pred, timeout=15.0, interval=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(interval)


class Kubelet:
    """The DRA kubelet emulator: commands on stdin, one JSON line per answer or event."""

    def __init__(self, binary, kubelet_dir, log):
        self.proc = subprocess.Popen([binary, "--kubelet-dir", kubelet_dir], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log)
        self.lines = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.put(json.loads(line))

    def next(self, want, timeout=15.0):
        """The next line for which want(line) is true; events seen meanwhile are kept."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if "event" in line:
                self.events.append(line)
            if want(line):
                return line
        return None

    def call(self, op, **args):
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        return self.next(lambda l: l.get("op") == op, timeout=60)

    def prepare(self, *names, version=None):
        claims = [{"namespace": "default", "name": n, "uid": UID.get(n, n)} for n in names]
        return self.call("prepare", claims=claims, **({"version": version} if version else {}))

    def unprepare(self, *names):
        return self.call("unprepare", claims=[{"namespace": "default", "name": n, "uid": UID.get(n, n)}
                                              for n in names])

    def stop(self, kill=False):
        if kill:
            self.proc.kill()
        stop_process(self.proc)


class Podman:
    """A real CDI consumer: podman (runc) reads the driver's specs and starts a busybox container
    with the devices named. Podman 4.3 reads specs only from /etc/cdi and /var/run/cdi, so each run
    is in a private mount namespace, where a tmpfs covers /var/run (nothing is created on the
    host's) and the test's spec directory is bound at /var/run/cdi, and in a private PID namespace:
    nothing it starts outlives it. No image (podman import would write a blob cache to
    /var/lib/containers): the container runs from a rootfs directory. Storage, run root and network
    configuration below the test's directory, removed after each run; the container's cgroup below
    a parent of the test's own (runc needs cgroups), removed after each run too."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.base = f"{tmp}/podman"
        self.rootfs = f"{self.base}/rootfs"
        self.cgroup_parent = f"/pcid-e2e-dra-{os.getpid()}"
        os.makedirs(f"{self.rootfs}/bin")
        shutil.copy(shutil.which("busybox") or "/bin/busybox", f"{self.rootfs}/bin/busybox")
        for applet in ("sh", "cat", "env", "stat"):
            os.symlink("busybox", f"{self.rootfs}/bin/{applet}")

    def run(self, cdi, devices, nodes, meta):
        """A container given the CDI `devices` (kind=name) of the specs in `cdi`: what it sees of
        `nodes` (a glob), its environment, its mounts and the file `meta`, as {section: [lines]};
        then the exit code, podman's stderr, the seconds it took and what was left behind. The
        environment is the one the container's process 1 was given: a shell drops the variables
        whose names are not a shell's (KubeVirt's USB_RESOURCE_* have dashes)."""
        view = (f"echo @@nodes; stat -c '%n %F %t:%T' {nodes}; "
                f"echo @@rw; for n in {nodes}; do echo x >$n && cat $n && echo $n; done; "
                "echo @@env; cat /proc/1/environ; echo; echo @@mounts; cat /proc/mounts; "
                f"echo @@meta; cat {shlex.quote(meta)}")
        store = f"{self.base}/store"
        podman = ["podman", "--root", f"{store}/root", "--runroot", f"{store}/run", "--tmpdir", f"{store}/tmp",
                  "--network-config-dir", f"{store}/net", "--cgroup-manager=cgroupfs", "--events-backend=none",
                  "--runtime", "runc", "run", "--rm", "--network", "none", "--cgroups=no-conmon",
                  f"--cgroup-parent={self.cgroup_parent}", "--ulimit", "nofile=1024:1024",
                  "--ulimit", "nproc=1024:1024"]
        podman += [a for d in devices for a in ("--device", d)]
        podman += ["--rootfs", self.rootfs, "sh", "-c", view]
        run = os.path.realpath("/var/run")
        ns = (f"mount -n -t tmpfs tmpfs {run} && mkdir {run}/cdi && mount -n --bind {shlex.quote(cdi)} {run}/cdi"
              + (" && mount -n -t tmpfs tmpfs /etc/cdi" if os.path.isdir("/etc/cdi") else "")
              + " && " + shlex.join(podman))
        began = time.monotonic()
        try:
            p = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
                                "sh", "-c", ns], capture_output=True, text=True, timeout=60)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = -1, "", f"timed out after {e.timeout} s"
        finally:
            shutil.rmtree(store, ignore_errors=True)
        seconds = time.monotonic() - began
        sections, name = {}, None
        for line in out.splitlines():
            if line.startswith("@@"):
                name = line[2:]
                sections[name] = []
            elif name:
                sections[name] += line.split("\0") if name == "env" else [line]
        return sections, rc, err, seconds, self.leftovers(run)

    def leftovers(self, run):
        """Mounts, processes, cgroups and storage the run left on the host (its cgroups removed)."""
        left = [l.strip() for l in open("/proc/mounts") if self.tmp in l or l.split()[1] == f"{run}/cdi"]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if self.base in cmdline:
                left.append(f"process {pid}: {cmdline.replace(chr(0), ' ')[:200]}")
        for line in open("/proc/mounts"):
            f = line.split()
            if f[2] in ("cgroup", "cgroup2") and os.path.isdir(f[1] + self.cgroup_parent):
                try:
                    os.rmdir(f[1] + self.cgroup_parent)
                except OSError as e:
                    left.append(f"cgroup {f[1]}{self.cgroup_parent}: {e}")
        if os.path.exists(f"{self.base}/store"):
            left.append(f"{self.base}/store")
        return left


def container_checks(podman, what, cdi, devices, nodes, want_nodes, want_env, mount, names, bus_ids=None):
    """`devices` (CDI IDs) of one spec kind in a container: it sees `want_nodes` (path -> "type
    major:minor", all that match the glob `nodes`) and can read and write them, exactly the
    variables `want_env` of their kind (PCI_RESOURCE_*, USB_RESOURCE_*), and the metadata file
    mounted read-only at the spec's containerPath: the host's file, the devices `names` (and PCI
    `bus_ids`)."""
    target = mount.get("containerPath", "/nowhere")
    seen, rc, err, seconds, left = podman.run(cdi, devices, nodes, target)
    got_nodes = dict(l.split(" ", 1) for l in seen.get("nodes", []))
    check(rc == 0 and got_nodes == want_nodes and seen.get("rw") == sorted(want_nodes),
          f"podman (runc) ran a container from {what}'s CDI spec ({seconds:.1f} s): "
          + ", ".join(f"{p} {t}" for p, t in sorted(got_nodes.items())) + ", readable and writable",
          json.dumps({"rc": rc, "seen": seen, "stderr": err[-2000:]}))
    kinds = ("PCI_RESOURCE_", "USB_RESOURCE_")
    env = dict(l.split("=", 1) for l in seen.get("env", []) if l.startswith(kinds))
    check(bool(want_env) and env == want_env,
          "in the container: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items())),
          json.dumps({"want": want_env, "env": seen.get("env")}))
    on = [l.split() for l in seen.get("mounts", []) if l.split()[1:2] == [target]]
    mode = on[0][3].split(",")[0] if len(on) == 1 else None
    try:
        meta = json.loads("\n".join(seen.get("meta", [])))
        host = json.load(open(mount["hostPath"]))
    except (ValueError, KeyError, OSError):
        meta, host = {}, None
    devs = (meta.get("requests") or [{}])[0].get("devices", [])
    got_ids = [d["attributes"].get("resource.kubernetes.io/pciBusID", {}).get("string") for d in devs]
    check(mode == "ro" and meta == host and [d["name"] for d in devs] == names
          and (bus_ids is None or got_ids == bus_ids),
          f"in the container: the metadata file ({mode}) at {target}, devices {names}"
          + (f", pciBusIDs {got_ids}" if bus_ids is not None else ""),
          json.dumps({"mounts": on, "meta": meta, "host": host}))
    check(not left, "podman left no mount, process, cgroup or storage behind", json.dumps(left))


def resource_claim(api, name, devices, pool=NODE, driver="pcidevices.io"):
    """A ResourceClaim and its allocation, as the scheduler writes it (status subresource)."""
    obj = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"devices": {"requests": [{"name": "req", "exactly": {"deviceClassName": "pci.pcidevices.io"}}]}}}
    rc, out = api.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    if rc != 0:
        return check(False, f"ResourceClaim {name} created", out)
    uid = api.get("resourceclaims", name, namespace="default")["metadata"]["uid"]
    UID[name] = uid
    results = [{"request": "req", "driver": driver, "pool": pool, "device": d} for d in devices]
    rc, out = api.kubectl("patch", "resourceclaim", name, "-n", "default", "--subresource=status",
                          "--type=merge", "-p", json.dumps({"status": {"allocation": {"devices": {"results": results}}}}))
    return check(rc == 0, f"ResourceClaim {name} allocated {devices}", out)


def lspci_ids(sysfs):
    """{address: (vendor, device, class)} as lspci -n reads the same tree."""
    out = subprocess.run(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={sysfs}/bus/pci", "-D", "-n", "-mm"],
                         capture_output=True, text=True, check=True).stdout
    ids = {}
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(" ", 1)[0:1] + [p for p in line.split('"')[1::2]]]
        ids[f[0]] = (f[2], f[3], f[1])
    return ids


def slices(api):
    got = api.get("resourceslices") or {"items": []}
    return [s for s in got["items"] if s["spec"].get("nodeName") == NODE]


def dra_sources(state):
    """{address: [dra sources]} of the recorded intents (the state file's devices)."""
    try:
        devices = json.load(open(f"{state}/state.json")).get("devices", [])
    except FileNotFoundError:
        return {}
    out = {}
    for d in devices:
        srcs = [s for s in d.get("sources", []) if s.startswith("dra/")]
        if srcs:
            out[d["address"]] = srcs
    return out


def main():
    pcidevices, emulator_bin, make_tree = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="pcid-dra-") as tmp:
        api = Api(tmp)
        try:
            run(api, tmp, pcidevices, emulator_bin, make_tree)
        finally:
            api.stop()
    print("PASS" if not failures else f"FAILED: {failures}")
    return 1 if failures else 0


def run(api, tmp, pcidevices, emulator_bin, make_tree):
    rc, out = api.kubectl("apply", "-f", f"{HERE}/../deploy/dra/deviceclasses.yaml")
    check(rc == 0, "DeviceClasses applied", out)
    sysfs, dev, proc, state, plugins, config, listed = gpu_node(tmp, pcidevices, make_tree)
    # A CDI runtime takes a node's type and numbers from the spec's hostPath: the fixture's empty
    # files standing for the nodes a container gets become character devices (/dev/null's
    # numbers), before the daemon starts. Root only; the container checks fail without.
    if check(os.geteuid() == 0, f"running as root (uid {os.geteuid()}): the fixture's /dev/vfio/vfio, "
             "/dev/vfio/4 and /dev/bus/usb/001/004 made character devices for podman"):
        for rel in ("vfio/vfio", "vfio/4", "bus/usb/001/004"):
            os.remove(f"{dev}/{rel}")
            os.mknod(f"{dev}/{rel}", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    podman = Podman(tmp)
    kubelet_dir, cdi = f"{tmp}/kubelet", f"{tmp}/cdi"
    os.makedirs(f"{kubelet_dir}/plugins_registry")
    with open(config, "w") as f:
        # The GPUs and the flash drive through DRA; the NIC too, but it carries the node's default
        # route (the fixture's proc tree): never offered.
        json.dump({"enable": [{"vendor": "10de"}], "dra": [{"vendor": "10de"}, {"vendor": "0951"},
                                                            {"address": "0000:00:19.0"}]}, f)
    log = open(f"{tmp}/daemon.log", "w+")
    klog = open(f"{tmp}/kubelet.log", "w+")
    kubelet = Kubelet(emulator_bin, kubelet_dir, klog)
    args = [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", NODE, "--config", config,
            "--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc, "--state-dir", state,
            "--device-plugin-dir", plugins, "--pod-resources-socket", f"{tmp}/pr.sock",
            "--kubeconfig", api.kubeconfig_tokenfile, "--kubelet-dir", kubelet_dir, "--cdi-dir", cdi]
    daemon = subprocess.Popen(args, stderr=log)
    try:
        scenario(api, kubelet, daemon, args, log, klog, sysfs, dev, state, plugins, cdi, kubelet_dir,
                 emulator_bin, podman)
    finally:
        stop_process(daemon)
        kubelet.stop()
        if failures:
            log.seek(0)
            print(daemon_log.failure_text(log.read()))
            klog.seek(0)
            print("--- DRA kubelet emulator stderr\n" + klog.read()[-3000:])


def scenario(api, kubelet, daemon, args, log, klog, sysfs, dev, state, plugins, cdi, kubelet_dir,
             emulator_bin, podman):
    reg = kubelet.next(lambda l: l.get("event") in ("registered", "rejected"))
    check(reg is not None and reg["event"] == "registered" and reg["version"] == "v1.DRAPlugin"
          and reg["endpoint"] == f"{kubelet_dir}/plugins/pcidevices.io/dra.sock",
          "the kubelet registered pcidevices.io, v1 chosen, endpoint dra.sock", json.dumps(reg))

    # -- the pool: one slice, the devices lspci sees, the protected NIC left out
    usb_name = "usb-0000-00-14-0-1"
    want = {"pci-0000-01-00-0", "pci-0000-01-00-1", "pci-0000-81-00-0", "pci-0000-81-00-1", usb_name}
    got = wait_for(lambda: (lambda s: s if s and {d["name"] for d in s[0]["spec"]["devices"]} == want else None)(
        slices(api)))
    check(bool(got), "one ResourceSlice with the GPUs and the flash drive, not the protected NIC",
          json.dumps([d["name"] for s in slices(api) for d in s["spec"]["devices"]]))
    if not got:
        return
    spec = got[0]["spec"]
    check(spec["driver"] == "pcidevices.io" and spec["pool"]["name"] == NODE
          and spec["pool"]["resourceSliceCount"] == 1, "driver, pool and slice count", json.dumps(spec["pool"]))
    generation = spec["pool"]["generation"]
    ids = lspci_ids(sysfs)
    agree = True
    for d in spec["devices"]:
        a = d["attributes"]
        if d["name"].startswith("pci-"):
            addr = a["resource.kubernetes.io/pciBusID"]["string"]
            v, dv, c = ids.get(addr, ("?", "?", "?"))
            agree &= (a["vendorID"]["string"], a["deviceID"]["string"], a["classID"]["string"]) == (v, dv, c)
            agree &= d["name"] == "pci-" + addr.replace(":", "-").replace(".", "-")
    check(agree, "every PCI device's bus ID, vendor, device and class as lspci -n reads them")
    gpu = next(d for d in spec["devices"] if d["name"] == "pci-0000-81-00-0")["attributes"]
    check(gpu["iommuGroup"]["int"] == 4 and gpu["resource.kubernetes.io/numaNode"]["int"] == 1
          and gpu["resource.kubernetes.io/pcieRoot"]["string"] == "pci0000:80",
          "81:00.0: IOMMU group 4, NUMA node 1, PCIe root pci0000:80", json.dumps(gpu))
    socks = os.listdir(plugins)
    check(not any("nvidia" in s for s in socks), "no device plugin for a DRA device", json.dumps(socks))
    time.sleep(1.0)
    check(slices(api)[0]["metadata"]["resourceVersion"] == got[0]["metadata"]["resourceVersion"],
          "a quiet node writes nothing")

    # -- prepare: the group on vfio-pci already (81:00.0 + 81:00.1)
    resource_claim(api, "c1", ["pci-0000-81-00-0", "pci-0000-81-00-1"])
    r = kubelet.prepare("c1")
    c1 = (r or {}).get("claims", {}).get(UID["c1"], {})
    ok = r and r.get("ok") and c1.get("error") == "" and len(c1.get("devices", [])) == 2
    check(bool(ok), f"c1 prepared in {r and r.get('ms', 0):.2f} ms", json.dumps(r))
    if not ok:
        return
    cdi_id = c1["devices"][0]["cdiDeviceIds"][0]
    check(cdi_id == f"pcidevices.io/pci={UID['c1']}-pci-0000-81-00-0" and c1["devices"][0]["poolName"] == NODE
          and c1["devices"][0]["requestNames"] == ["req"], "CDI ID, pool and request of the answer", json.dumps(c1))
    spec_file = f"{cdi}/pcidevices.io-pci_{UID['c1']}.json"
    cdi_spec = json.load(open(spec_file)) if os.path.exists(spec_file) else {}
    edits = (cdi_spec.get("devices") or [{}])[0].get("containerEdits", {})
    nodes = {n["path"]: n.get("hostPath") for n in edits.get("deviceNodes", [])}
    envs = [e for d in cdi_spec.get("devices", []) for e in d["containerEdits"].get("env", [])]
    check(cdi_spec.get("kind") == "pcidevices.io/pci" and nodes.get("/dev/vfio/4") == f"{dev}/vfio/4"
          and "/dev/vfio/vfio" in nodes and len(envs) == 2
          and envs[0].startswith("PCI_RESOURCE_NVIDIA_COM_GP106") and envs[0].endswith("=0000:81:00.0")
          and envs[1].endswith("AUDIO_CONTROLLER=0000:81:00.1"),
          "CDI spec: kind, /dev/vfio/vfio and the group's node (host path in --dev-root), each device's "
          "KubeVirt variable", json.dumps(cdi_spec))
    mount = (edits.get("mounts") or [{}])[0]
    meta = json.load(open(mount["hostPath"])) if os.path.exists(mount.get("hostPath", "")) else {}
    bus_ids = [d["attributes"]["resource.kubernetes.io/pciBusID"]["string"]
               for d in (meta.get("requests") or [{}])[0].get("devices", [])]
    check(meta.get("kind") == "DeviceMetadata" and bus_ids == ["0000:81:00.0", "0000:81:00.1"]
          and mount["containerPath"] == "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/c1/req/pcidevices.io-metadata.json",
          "KEP-5304 metadata file with each device's pciBusID, mounted where KubeVirt reads it", json.dumps(meta))
    if mount.get("hostPath"):
        container_checks(podman, "c1", cdi, [i for d in c1["devices"] for i in d["cdiDeviceIds"]], "/dev/vfio/*",
                         {"/dev/vfio/vfio": "character special file 1:3", "/dev/vfio/4": "character special file 1:3"},
                         dict(e.split("=", 1) for e in envs), mount, ["pci-0000-81-00-0", "pci-0000-81-00-1"],
                         ["0000:81:00.0", "0000:81:00.1"])
    srcs = dra_sources(state)
    check(srcs.get("0000:81:00.0") == [f"dra/{UID['c1']}"], "the intent of source dra/<uid> recorded", json.dumps(srcs))
    again = kubelet.prepare("c1", version="v1beta1")
    check(again and again.get("claims", {}).get(UID["c1"], {}).get("devices") == c1["devices"],
          "prepared again (v1beta1, as the kubelet retries): the same answer", json.dumps(again))
    bench = kubelet.call("bench", count=200, claims=[{"namespace": "default", "name": "c1", "uid": UID["c1"]}])
    check(bench and bench.get("ok"), f"200 repeated prepares: p50 {bench and bench.get('p50')} ms, "
          f"p99 {bench and bench.get('p99')} ms", json.dumps(bench))

    # -- bad claims: the claim's own error, nothing bound, nothing written
    before = sorted(os.listdir(cdi))
    resource_claim(api, "half", ["pci-0000-01-00-0"])
    resource_claim(api, "bind", ["pci-0000-01-00-0", "pci-0000-01-00-1"])
    resource_claim(api, "other-pool", ["pci-0000-01-00-0"], pool="n2")
    resource_claim(api, "unknown", ["pci-0000-ff-00-0"])
    resource_claim(api, "twice", ["pci-0000-01-00-0", "pci-0000-01-00-0"])
    resource_claim(api, "cross", ["pci-0000-81-00-0", "pci-0000-81-00-1"])
    for name, expect in (("half", "IOMMU group 2 also holds 0000:01:00.1"),
                         ("bind", "0000:01:00"),
                         ("other-pool", "is of pool n2"),
                         ("unknown", "is not offered by node n1"),
                         ("twice", "allocated twice"),
                         ("cross", f"prepared for claim {UID['c1']}"),
                         ("missing", "not found on the API server")):
        r = kubelet.prepare(name)
        err = (r or {}).get("claims", {}).get(UID[name], {}).get("error", "")
        check(expect in err, f"claim {name}: refused ({err[:150]})", json.dumps(r))
    r = kubelet.call("prepare", claims=[{"namespace": "default", "name": "c1", "uid": "../../etc"}])
    err = (r or {}).get("claims", {}).get("../../etc", {}).get("error", "")
    check("not a UUID" in err, "a malformed UID: refused", json.dumps(r))
    check(sorted(os.listdir(cdi)) == before and set(dra_sources(state)) == {"0000:81:00.0", "0000:81:00.1"},
          "the refusals wrote no CDI spec and bound nothing",
          json.dumps({"cdi": os.listdir(cdi), "dra": dra_sources(state)}))
    drivers = {a: os.path.basename(os.readlink(f"{sysfs}/bus/pci/devices/{a}/driver"))
               for a in ("0000:01:00.0", "0000:01:00.1")}
    check(drivers == {"0000:01:00.0": "nvidia", "0000:01:00.1": "snd_hda_intel"},
          "the failed bind gave 01:00.x back to their drivers", json.dumps(drivers))

    # -- a USB device
    resource_claim(api, "usb", [usb_name])
    r = kubelet.prepare("usb")
    dev_ids = [i for d in (r or {}).get("claims", {}).get(UID["usb"], {}).get("devices", []) for i in d["cdiDeviceIds"]]
    usb_spec = f"{cdi}/pcidevices.io-usb_{UID['usb']}.json"
    paths = [n["path"] for d in json.load(open(usb_spec))["devices"] for n in d["containerEdits"]["deviceNodes"]] \
        if os.path.exists(usb_spec) else []
    if check(dev_ids == [f"pcidevices.io/usb={UID['usb']}-{usb_name}"] and paths == ["/dev/bus/usb/001/004"],
             "the flash drive prepared: a pcidevices.io/usb spec with /dev/bus/usb/001/004", json.dumps(r)):
        usb_edits = json.load(open(usb_spec))["devices"][0]["containerEdits"]
        usb_env = dict(e.split("=", 1) for e in usb_edits.get("env", []))
        check(list(usb_env.values()) == ["1:4"] and all(k.startswith("USB_RESOURCE_") for k in usb_env),
              f"its KubeVirt variable: {usb_env}", json.dumps(usb_edits))
        container_checks(podman, "the USB claim", cdi, dev_ids, "/dev/bus/usb/*/*",
                         {"/dev/bus/usb/001/004": "character special file 1:3"}, usb_env,
                         (usb_edits.get("mounts") or [{}])[0], [usb_name])

    # -- the daemon restarts between prepare and unprepare: the checkpoint answers
    daemon.send_signal(signal.SIGTERM)
    # Also a sanitizer's verdict: a report makes the exit code non-zero.
    check(daemon.wait(timeout=15) == 0, "the daemon stopped cleanly before its restart")
    daemon = subprocess.Popen(args, stderr=log)
    try:
        reg = kubelet.next(lambda l: l.get("event") == "registered", timeout=20)
        check(reg is not None, "registered again after the daemon's restart")
        r = kubelet.prepare("c1")
        check(r and r.get("claims", {}).get(UID["c1"], {}).get("devices") == c1["devices"],
              "after the restart, c1 prepared again from the checkpoint: the same answer", json.dumps(r))
        # A USB device has no intent: the checkpoint is what keeps it the USB claim's.
        resource_claim(api, "usb-again", [usb_name])
        r = kubelet.prepare("usb-again")
        err = (r or {}).get("claims", {}).get(UID["usb-again"], {}).get("error", "")
        check(f"prepared for claim {UID['usb']}" in err,
              "after the restart, another claim for the flash drive: refused, still the USB claim's",
              json.dumps(r))
        r = kubelet.unprepare("c1", "usb", "never-prepared")
        errs = {k: v.get("error") for k, v in (r or {}).get("claims", {}).items()}
        check(errs == {UID["c1"]: "", UID["usb"]: "", "never-prepared": ""},
              "c1 and the USB claim unprepared; a claim never prepared: no error", json.dumps(r))
        check(not os.path.exists(spec_file) and not os.path.exists(usb_spec) and not dra_sources(state)
              and not os.path.exists(mount["hostPath"]),
              "their CDI specs, metadata and intents are gone", json.dumps(os.listdir(cdi)))
        check(os.path.basename(os.readlink(f"{sysfs}/bus/pci/devices/0000:81:00.0/driver")) == "vfio-pci",
              "81:00.0 stays on vfio-pci, where it was before")
        r = kubelet.unprepare("c1")
        check(r and r["claims"][UID["c1"]]["error"] == "", "unprepared again: nothing to do, no error")

        # -- the kubelet restarts: registered again; it wipes the node's slices: written again
        kubelet.stop(kill=True)
        kubelet = Kubelet(emulator_bin, kubelet_dir, klog)
        reg = kubelet.next(lambda l: l.get("event") == "registered", timeout=20)
        check(reg is not None, "after a kubelet restart, registered again")
        rc, out = api.kubectl("delete", "resourceslices", "--field-selector", f"spec.nodeName={NODE}")
        back = wait_for(lambda: (lambda s: s if s and s[0]["spec"]["pool"]["generation"] > generation else None)(
            slices(api)))
        check(rc == 0 and bool(back), "the kubelet's wipe of the node's slices: written again at a new "
              f"generation ({back and back[0]['spec']['pool']['generation']})", out)
    finally:
        stop_process(daemon)
        kubelet.stop()
    check(daemon.returncode == 0, f"daemon stopped cleanly ({daemon.returncode})")


if __name__ == "__main__":
    sys.exit(main())
