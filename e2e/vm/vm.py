"""A throw-away qemu VM running a stock Debian kernel, for tests against a real kernel.

Why a VM: binding to vfio-pci, IOMMU groups, hotplug and "never touch the device behind /"
need a real kernel with real PCI devices; sysfs fixtures cannot show them.

Guest topology (q35, emulated intel-iommu; bus numbers follow the root ports' slot order, so
the addresses are fixed):

    0000:00:02.0 rp_blk  -> 0000:01:00.0  virtio-blk   (the guest's / : ext4, switch_root'ed)
                         -> 0000:01:00.1  virtio-rng   (function 1 of the same device: no ACS,
                                                        so it shares the disk's IOMMU group)
    0000:00:03.0 rp_net  -> 0000:02:00.0  virtio-net   (has the default route)
    0000:00:04.0 rp_e1   -> 0000:03:00.0  e1000e #0
    0000:00:05.0 rp_e2   -> 0000:04:00.0  e1000e #1
    0000:00:06.0 rp_usb  -> 0000:05:00.0  qemu-xhci (id xhci; usb-kbd on xhci.0)
    0000:00:07.0 rp_hp   -> 0000:06:00.0  empty: device_add {"bus": "rp_hp", ...} lands here
    0000:00:08.0 rp_nvme -> 0000:07:00.0  QEMU NVMe with SR-IOV (2 VFs: 07:00.1, 07:00.2, each
                                          in a group of its own once created)
    0000:00:1f.0/.2/.3   ICH9 LPC, AHCI, SMBus: one IOMMU group with three members

Each device on its own root port is alone in its IOMMU group, but for the disk's two functions
(seen on 6.1: host bridge 0, root ports 1-6, ICH9 7, the devices above 8-12 in address order,
the disk and the rng both in 8, a hot-plugged device 13).
Vm.addresses is read back from the guest's sysfs after boot: tests use it, not this table.
No NIC has a netdev unless host_port is given: then the virtio-net NIC is on qemu's user network
with restrict=on and one guestfwd (HOST_FORWARD -> the host's 127.0.0.1:host_port), so no other
packet leaves the VM.

Channels: ttyS0 = kernel console, written to `console_log`; ttyS1 = command channel served by
a persistent busybox sh in the guest (see CMDLOOP); QMP on a unix socket.

    from vm import Vm
    with Vm(cache_dir="build/vm-cache", work_dir="build/vm-run",
            binaries=["build/pcidevices"]) as vm:
        rc, out = vm.run("pcidevices list --sysfs-root /sys")
        vm.check("modprobe vfio-pci")
        nic = vm.addresses["e1000e"][0]
        vm.qmp("device_add", {"driver": "e1000e", "id": "hp", "bus": "rp_hp", "romfile": ""})
"""
import base64
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Modules the initramfs loads to mount / (ext4 is modular in Debian's 6.1). crc32c_generic is
# named because busybox modprobe ignores the softdep ext4 has on it.
ROOT_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
# Loaded by the real init: without udev nothing auto-loads drivers.
DRIVER_MODULES = ["e1000e", "virtio_net", "xhci_pci", "usbhid", "hid_generic", "usb_storage",
                  "sd_mod", "nvme"]
# Present for modprobe in the guest, not loaded: tests load vfio themselves.
OPTIONAL_MODULES = ["vfio_pci", "vfio_iommu_type1", "mdev"]

# (root port id, pcie.0 slot, device lines) - one device per port so each has its own group,
# except the root disk's: a second function (virtio-rng) shares its group.
TOPOLOGY = [
    ("rp_blk", 2, ["virtio-blk-pci,drive=rootdisk,addr=0.0,multifunction=on",
                   "virtio-rng-pci,addr=0.1"]),
    ("rp_net", 3, "virtio-net-pci,romfile="),
    ("rp_e1", 4, "e1000e,romfile="),
    ("rp_e2", 5, "e1000e,romfile="),
    ("rp_usb", 6, "qemu-xhci,id=xhci"),
    ("rp_hp", 7, None),
    # No drive: a legacy namespace refuses subsys; max_ioqpairs - sriov_vq_flexible >= 2
    # (VM-NOTES.md). The PF (1b36:0010) is on nvme; its sriov_totalvfs is 2.
    ("rp_nvme", 8, "nvme,serial=sriov0,subsys=s0,sriov_max_vfs=2,sriov_vq_flexible=4,"
                   "sriov_vi_flexible=2,max_ioqpairs=6,msix_qsize=5"),
]
HOTPLUG_PORT = "rp_hp"

# vendor:device -> name used in Vm.addresses.
KNOWN_DEVICES = {
    "8086:10d3": "e1000e",
    "1af4:1042": "virtio-blk", "1af4:1001": "virtio-blk",
    "1af4:1041": "virtio-net", "1af4:1000": "virtio-net",
    "1af4:1044": "virtio-rng", "1af4:1005": "virtio-rng",
    "1b36:000d": "xhci",
    "1b36:000c": "root-port",
    "1b36:0010": "nvme",
}

GUEST_IP, GUEST_GW = "10.0.2.15/24", "10.0.2.2"
HOST_FORWARD = "10.0.2.100:8443"  # Vm(host_port=N): the host's 127.0.0.1:N, seen from the guest
READY = "VM-CMDLOOP-READY"

# Stage 1, in the initramfs: mount the virtio disk and switch_root onto it, so the guest's /
# really is a virtio-blk PCI function (the agent must never touch the device behind /).
INIT_STAGE1 = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {" ".join(ROOT_MODULES)}; do modprobe $m || echo "vm-init: modprobe $m failed"; done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1)); [ $n -gt 300 ] && {{ echo "vm-init: no /dev/vda"; poweroff -f; }}
  sleep 0.1
done
mount -t ext4 /dev/vda /newroot || poweroff -f
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/vm-init
"""

# Stage 2, PID 1 on the virtio root.
INIT_STAGE2 = f"""#!/bin/sh
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
hostname vm
for m in {" ".join(DRIVER_MODULES)}; do modprobe $m || echo "vm-init: modprobe $m failed"; done
# The virtio NIC is found by its driver, not by probe order (eth0 may well be an e1000e).
ip link set lo up
nic=
n=0
while [ -z "$nic" ] && [ $n -lt 100 ]; do
  for d in /sys/class/net/*; do
    case "$(readlink $d/device/driver)" in */virtio_net) nic=${{d##*/}} ;; esac
  done
  n=$((n + 1)); [ -z "$nic" ] && sleep 0.1
done
if [ -n "$nic" ]; then
  ip link set "$nic" up
  ip addr add {GUEST_IP} dev "$nic"
  ip route add default via {GUEST_GW} dev "$nic"
else
  echo "vm-init: no virtio_net interface"
fi
# PID 1 keeps ttyS1 open: bytes that arrive while the tty is open are buffered (even before the
# loop makes it raw, or while it restarts), so the host may write as soon as it sees the marker.
exec 5<>/dev/ttyS1
while :; do
  /bin/sh /sbin/vm-cmdloop </dev/null >&5 2>&1
  echo "vm-init: command loop exited, restarting"
done
"""

# One line per command from the host: "<token> <base64 of the script>". base64 lets scripts
# hold newlines and any byte. `command eval` keeps state (variables, fds, jobs) in this one
# shell and, unlike plain eval, survives syntax errors. The marker carries the host's random
# token, so no output can fake it; it starts with \n so it is on its own line.
# Commands write straight to the tty: background jobs should redirect their output.
CMDLOOP = f"""stty raw -echo 115200 <&5
# A command that calls `exit` still answers; init then restarts the loop with fresh state.
trap 'printf "\\n__VM_RC_%s=%d__\\n" "${{line%% *}}" "$?"' EXIT
echo {READY} >/dev/console
while IFS= read -r line <&5; do
  command eval "$(echo "${{line#* }}" | base64 -d)"
  printf '\\n__VM_RC_%s=%d__\\n' "${{line%% *}}" "$?"
done
"""


class VmError(Exception):
    pass


def _sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def _die_with_parent():
    # A test runner's timeout kills python without running stop(): qemu must not outlive it.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kvm_usable():
    """Real KVM only: kvm_pvm (nested, as on these machines) hangs stock kernels."""
    return (os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists())


def prepare_kernel(cache_dir):
    """Downloads/unpacks the Debian kernel once into cache_dir/kernel; returns its env dict."""
    out = _sh(str(HERE / "prepare_kernel.sh"), str(Path(cache_dir) / "kernel"))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class _Tree:
    """A directory that becomes a guest filesystem."""

    def __init__(self, root):
        self.root = Path(root)
        if self.root.exists():
            shutil.rmtree(self.root)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "lib", "lib64", "etc",
                  "proc", "sys", "dev", "run", "tmp", "root", "newroot", "mnt"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    def write(self, guest_path, text, mode=0o644):
        p = self.root / guest_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    def copy(self, host_path, guest_path):
        p = self.root / guest_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_path, p)  # follows symlinks: the guest gets the real file

    def busybox(self):
        self.copy("/bin/busybox", "/bin/busybox")
        for applet in _sh("/bin/busybox", "--list-full").split():
            link = self.root / applet
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")

    def binary(self, host_path, guest_dir="/usr/local/bin"):
        """A dynamically linked binary with every library ldd lists, plus the loader."""
        self.copy(host_path, f"{guest_dir}/{Path(host_path).name}")
        for line in _sh("ldd", str(host_path)).splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                self.copy(m.group(1), m.group(1))

    def modules(self, kernel, names):
        """Copies `names` and everything modprobe would load with them; depmod on the result."""
        kver, modroot = kernel["KVER"], kernel["MODROOT"]
        src = Path(modroot) / "lib/modules" / kver
        dst = self.root / "lib/modules" / kver
        out = _sh("modprobe", "-a", "-S", kver, "-d", modroot, "--show-depends", *names)
        for line in out.splitlines():
            if line.startswith("insmod "):
                ko = Path(line.split()[1])
                self.copy(ko, str(Path("/lib/modules") / kver / ko.relative_to(src)))
        for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            shutil.copy2(src / f, dst / f)
        _sh("depmod", "-b", str(self.root), kver)

    def cpio_gz(self, out):
        # newc with root ownership; %P gives paths relative to the tree.
        files = _sh("find", ".", "-mindepth", "1", "-printf", "%P\\n", cwd=self.root)
        with open(out, "wb") as f:
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                                    cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
            cpio.stdout.close()
            cpio.communicate(files.encode())
            if gz.wait() or cpio.returncode:
                raise VmError("building the initramfs failed")

    def ext4(self, out):
        used = int(_sh("du", "-sk", str(self.root)).split()[0])
        Path(out).unlink(missing_ok=True)
        _sh("mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(self.root), str(out),
            f"{used * 3 // 2 + 64 * 1024}k")


class Vm:
    """Boots on construction; use as a context manager (or call stop())."""

    def __init__(self, cache_dir, work_dir, binaries=(), files=None, smp=1, memory_mb=1024,
                 boot_timeout=180, console_log=None, kernel_args="", extra_args=(),
                 host_port=None):
        """cache_dir: kernel cache (kept across runs). work_dir: this VM's images and logs.
        binaries: host executables, put in /usr/local/bin with their libraries.
        files: {guest_path: host_path} copied as is (e.g. pci.ids).
        console_log: host file for ttyS0 (default work_dir/console.log).
        kernel_args: appended to the kernel command line; extra_args: appended to qemu's.
        smp=1 by default: under TCG on 2 host cores it boots as fast as 2 and leaves a core.
        host_port: a TCP port on the host's 127.0.0.1 the guest reaches as HOST_FORWARD
        (10.0.2.100:8443) through the virtio-net NIC; the user network is restricted, so nothing
        else leaves the VM. None: that NIC has no network at all."""
        self.host_port = host_port
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.console_log = Path(console_log or self.work_dir / "console.log")
        self.proc = None
        self._cmd = self._qmp_sock = None
        self._qmp_buf = b""
        self.events = []  # QMP events not yet consumed by wait_event()
        self._qmp_id = 0
        # Unix socket paths are limited to 108 bytes; work_dir may be deep, /tmp is not.
        self._sockdir = Path(tempfile.mkdtemp(prefix="vm-"))
        try:
            self._build(cache_dir, binaries, files or {})
            self._boot(smp, memory_mb, boot_timeout, kernel_args, extra_args)
            self._discover()
        except BaseException:
            self.stop()
            raise

    # ---- build ----
    def _build(self, cache_dir, binaries, files):
        t = time.monotonic()
        self.kernel = prepare_kernel(cache_dir)
        initrd = _Tree(self.work_dir / "initramfs")
        initrd.busybox()
        initrd.modules(self.kernel, ROOT_MODULES)
        initrd.write("/init", INIT_STAGE1, 0o755)
        self.initrd = self.work_dir / "initramfs.cpio.gz"
        initrd.cpio_gz(self.initrd)

        root = _Tree(self.work_dir / "rootfs")
        root.busybox()
        root.modules(self.kernel, ROOT_MODULES + DRIVER_MODULES + OPTIONAL_MODULES)
        for b in binaries:
            root.binary(b)
        for guest, host in files.items():
            root.copy(host, guest)
        root.write("/sbin/vm-init", INIT_STAGE2, 0o755)
        root.write("/sbin/vm-cmdloop", CMDLOOP, 0o755)
        root.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        root.write("/etc/group", "root:x:0:\n")
        self.rootimg = self.work_dir / "rootfs.ext4"
        root.ext4(self.rootimg)
        self.build_seconds = time.monotonic() - t

    # ---- boot ----
    def qemu_args(self, smp, memory_mb, kernel_args=""):
        accel = ["kvm", "host"] if kvm_usable() else ["tcg", "max"]
        args = ["qemu-system-x86_64", "-nodefaults", "-nographic", "-no-reboot",
                "-M", "q35,kernel-irqchip=split", "-accel", accel[0], "-cpu", accel[1],
                "-smp", str(smp), "-m", str(memory_mb),
                # The IOMMU must come before every PCI device.
                "-device", "intel-iommu,intremap=on,caching-mode=on",
                "-kernel", self.kernel["VMLINUZ"], "-initrd", str(self.initrd),
                "-append",
                f"console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4 {kernel_args}",
                "-chardev", f"file,id=con,path={self.console_log}", "-serial", "chardev:con",
                "-chardev", f"socket,id=cmd,path={self._sockdir}/cmd,server=on,wait=off",
                "-serial", "chardev:cmd",
                "-qmp", f"unix:{self._sockdir}/qmp,server=on,wait=off",
                # snapshot=on: guest writes go to a temp overlay, the image stays as built.
                "-drive", f"file={self.rootimg},if=none,id=rootdisk,format=raw,snapshot=on"]
        args += ["-device", "nvme-subsys,id=s0"]  # the SR-IOV NVMe controller's subsystem
        for i, (port, slot, dev) in enumerate(TOPOLOGY, 1):
            args += ["-device",
                     f"pcie-root-port,id={port},chassis={i},slot={i},bus=pcie.0,addr={slot:#x}"]
            for line in [dev] if isinstance(dev, str) else dev or []:
                if self.host_port and line.startswith("virtio-net-pci"):
                    line += ",netdev=n0"
                args += ["-device", f"{line},bus={port}"]
        if self.host_port:
            ip, port = HOST_FORWARD.split(":")
            relay = f"{sys.executable} {HERE / 'tcp_relay.py'} {self.host_port}"
            args += ["-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:{ip}:{port}-cmd:{relay}"]
        args += ["-device", "usb-kbd,bus=xhci.0"]
        return args

    def _boot(self, smp, memory_mb, boot_timeout, kernel_args, extra_args):
        self.console_log.write_bytes(b"")
        self.qemu_log = self.work_dir / "qemu.log"
        t0 = time.monotonic()
        with open(self.qemu_log, "wb") as log:
            self.proc = subprocess.Popen(
                self.qemu_args(smp, memory_mb, kernel_args) + list(extra_args),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)
        while READY not in self.console_log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise VmError(f"qemu exited ({self.proc.returncode}) before the guest was ready\n"
                              + self._tails())
            if time.monotonic() - t0 > boot_timeout:
                raise VmError(f"guest not ready after {boot_timeout}s\n" + self._tails())
            time.sleep(0.05)
        self._cmd = socket.socket(socket.AF_UNIX)
        self._cmd.connect(str(self._sockdir / "cmd"))
        self.boot_seconds = time.monotonic() - t0

    def _tails(self, lines=40):
        out = []
        for p in (self.qemu_log, self.console_log):
            if p.exists():
                tail = p.read_text(errors="replace").replace("\r", "").splitlines()[-lines:]
                out.append(f"--- {p} (last {lines} lines) ---\n" + "\n".join(tail))
        return "\n".join(out)

    # ---- command channel ----
    def run(self, cmd, timeout=60):
        """Runs cmd (any sh script) in the guest's persistent shell; returns (rc, output) with
        stdout and stderr merged, '\\r' stripped. Don't leave background jobs writing to stdout
        (redirect them). After a timeout the command keeps running; late output may show up in
        the next call's output."""
        tok = secrets.token_hex(8)
        marker = re.compile(rb"\n__VM_RC_" + tok.encode() + rb"=(-?\d+)__\n")
        self._cmd.sendall(f"{tok} {base64.b64encode(cmd.encode()).decode()}\n".encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while not (m := marker.search(buf)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"guest command timed out after {timeout}s: {cmd}\n"
                                   f"output so far:\n{buf.decode(errors='replace')}")
            self._cmd.settimeout(left)
            try:
                data = self._cmd.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise VmError("command channel closed\n" + self._tails())
            buf += data
        return int(m.group(1)), buf[:m.start()].decode(errors="replace").replace("\r", "")

    def check(self, cmd, timeout=60):
        """run() that raises on a non-zero exit code; returns the output."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise VmError(f"guest command failed (rc={rc}): {cmd}\n{out}")
        return out

    def wait_until(self, cmd, timeout=30, interval=0.2):
        """Reruns cmd until it exits 0; returns its output. Raises TimeoutError with the last
        output otherwise (hotplug and driver probing are asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            rc, out = self.run(cmd, timeout)
            if rc == 0:
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"still failing after {timeout}s (rc={rc}): {cmd}\n{out}")
            time.sleep(interval)

    # ---- QMP ----
    def _qmp_read(self, deadline):
        while b"\n" not in self._qmp_buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no QMP reply")
            self._qmp_sock.settimeout(left)
            try:
                data = self._qmp_sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise VmError("QMP connection closed")
            self._qmp_buf += data
        line, self._qmp_buf = self._qmp_buf.split(b"\n", 1)
        return json.loads(line)

    def qmp(self, execute, arguments=None, timeout=30):
        """Runs one QMP command and returns its "return" value; raises VmError on "error".
        Events read meanwhile are kept in self.events."""
        deadline = time.monotonic() + timeout
        if self._qmp_sock is None:
            self._qmp_sock = socket.socket(socket.AF_UNIX)
            self._qmp_sock.connect(str(self._sockdir / "qmp"))
            self._qmp_read(deadline)  # greeting
            self._qmp_sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            while "return" not in (msg := self._qmp_read(deadline)):
                self.events.append(msg)
        self._qmp_id += 1
        req = {"execute": execute, "id": self._qmp_id}
        if arguments is not None:
            req["arguments"] = arguments
        self._qmp_sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._qmp_read(deadline)
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == self._qmp_id:
                if "error" in msg:
                    raise VmError(f"QMP {execute} {arguments}: {msg['error']}")
                return msg["return"]

    def wait_event(self, name, timeout=30, **data):
        """Waits for (and consumes) a QMP event named `name` whose data includes `data`,
        e.g. wait_event("DEVICE_DELETED", device="hp")."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name and data.items() <= ev.get("data", {}).items():
                    self.events.remove(ev)
                    return ev
            if self._qmp_sock is None:
                self.qmp("query-status")
            self.events.append(self._qmp_read(deadline))

    # ---- what the guest sees ----
    def _discover(self):
        """Reads every PCI function from the guest's sysfs: self.devices, self.addresses."""
        out = self.check(
            "cd /sys/bus/pci/devices && for d in *; do"
            " echo $d $(cat $d/vendor $d/device $d/class)"
            " $(basename \"$(readlink $d/iommu_group)\")"
            " $(basename \"$(readlink $d/driver)\"); done")
        self.devices = {}
        self.addresses = {}
        for line in out.split("\n"):
            f = line.split()
            if len(f) < 5:
                continue
            addr, ven, dev, cls, group = f[:5]
            ids = f"{ven[2:]}:{dev[2:]}"
            self.devices[addr] = {"ids": ids, "class": cls, "iommu_group": group,
                                  "driver": f[5] if len(f) > 5 else None}
            kind = "ich9" if addr.startswith("0000:00:1f.") else KNOWN_DEVICES.get(ids)
            if kind:
                self.addresses.setdefault(kind, []).append(addr)
        for v in self.addresses.values():
            v.sort()
        # Where a device_add on rp_hp shows up: bus = the port's secondary bus, set by firmware.
        self.root_ports = {p: f"0000:00:{s:02x}.0" for p, s, _ in TOPOLOGY}
        self.hotplug_port = HOTPLUG_PORT
        port = self.root_ports[HOTPLUG_PORT]
        bus = self.check(f"ls /sys/bus/pci/devices/{port}/pci_bus").split()[0]
        self.hotplug_address = f"{bus}:00.0"
        self.net_iface = self.check(
            "for d in /sys/class/net/*; do case $(readlink $d/device/driver) in"
            " */virtio_net) echo ${d##*/};; esac; done").strip()

    # ---- teardown ----
    def stop(self, timeout=15):
        """quit over QMP, wait, then kill the qemu PID. Safe to call twice."""
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit", timeout=5)
            except Exception:
                pass  # qemu may close the socket before replying; the wait below decides
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self._cmd, self._qmp_sock):
            if s:
                s.close()
        self._cmd = self._qmp_sock = None
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
