#!/usr/bin/env python3
"""Compares `pcidevices list` with lspci and lsusb run on the same tree.

The reference is always the tools' live output, never a stored answer:
  host DIR         this machine's /sys (read-only): `lspci -D -vmm -nn -k`
  sysfs DIR        a sysfs snapshot: `lspci -A linux-sysfs -O sysfs.path=DIR/bus/pci`
  tarball FILE     a .tar.gz snapshot holding sys/: unpacked to a temporary directory, then as sysfs
  generated PROF   a tree from e2e/fixtures/make_tree.py PROF, then as sysfs
  umockdev FILE    a umockdev recording, both tools under `umockdev-run`; lspci prints no driver
                   there, so the recording's own `driver` links are the driver reference, and USB
                   is compared with `lsusb -tv` (sysfs walk) and `lsusb -s` (per device).
A sysfs tree named .../sys with USB devices is also compared with lsusb, run under
`umockdev-wrapper` with UMOCKDEV_DIR set to its parent so that lsusb sees it as /sys.
For every PCI function: address, vendor ID, device ID, class, driver, and the description
(names from pci.ids as lspci prints them). Exit 0 when everything matches.
"""
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

ID_RE = re.compile(r"^(.*?)\s*\[([0-9a-f]{4})\]$")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def parse_vmm(text):
    """lspci -vmm -nn -k records keyed by slot."""
    devices = {}
    for record in text.strip().split("\n\n"):
        fields = {}
        for line in record.splitlines():
            key, _, value = line.partition(":\t")
            fields.setdefault(key, value)  # first Device: line (the second is SDevice)
        devices[fields["Slot"]] = fields
    return devices


def split_name(value):
    """'Intel Corporation [8086]' -> ('Intel Corporation', '8086')."""
    m = ID_RE.match(value)
    if not m:
        raise ValueError(f"unexpected lspci field {value!r}")
    return m.group(1), m.group(2)


def lspci_description(fields):
    """The description DESIGN.md defines, from lspci's own names and its fallbacks."""
    cls, cls_id = split_name(fields["Class"])
    vendor, vendor_id = split_name(fields["Vendor"])
    device, device_id = split_name(fields["Device"])
    if cls == "Class":
        cls = f"Class {cls_id}"
    if vendor == "Vendor":
        vendor = f"Vendor {vendor_id}"
    if device == "Device":
        device = f"Device {device_id}"
    return f"{cls}: {vendor} {device}"


def recording_drivers(path):
    """address -> driver from the `L: driver=` links of a umockdev recording."""
    drivers, current = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("P: "):
                last = line.strip().rsplit("/", 1)[-1]
                current = last if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", last) else None
            elif current and line.startswith("L: driver="):
                drivers[current] = line.strip().rsplit("/", 1)[-1]
    return drivers


def compare_pci(ours, lspci, drivers_from=None):
    errors = []
    ours_by_addr = {d["status"]["address"]: d["status"] for d in ours}
    if set(ours_by_addr) != set(lspci):
        errors.append(f"address sets differ: only ours {sorted(set(ours_by_addr) - set(lspci))[:10]}, "
                      f"only lspci {sorted(set(lspci) - set(ours_by_addr))[:10]}")
    for addr in sorted(set(ours_by_addr) & set(lspci)):
        st, ref = ours_by_addr[addr], lspci[addr]
        want = {
            "vendorId": split_name(ref["Vendor"])[1],
            "deviceId": split_name(ref["Device"])[1],
            "classId": split_name(ref["Class"])[1],
            "kernelDriverInUse": (drivers_from.get(addr, "") if drivers_from is not None
                                  else ref.get("Driver", "")),
            "description": lspci_description(ref),
        }
        for key, value in want.items():
            if st[key] != value:
                errors.append(f"{addr} {key}: ours {st[key]!r}, reference {value!r}")
    return errors


def parse_lsusb_tree(text):
    """`lsusb -tv` -> {(bus, dev): 'vvvv:pppp'} (one entry per device, interfaces merged)."""
    found, bus, pending = {}, None, None
    for line in text.splitlines():
        m = re.search(r"Bus (\d+)\.Port \d+: Dev (\d+)", line)
        if m:
            bus = int(m.group(1))
            pending = (bus, int(m.group(2)))
            continue
        m = re.search(r"Port \d+: Dev (\d+), If", line)
        if m:
            pending = (bus, int(m.group(1)))
            continue
        m = re.search(r"ID ([0-9a-f]{4}):([0-9a-f]{4})", line)
        if m and pending:
            found[pending] = f"{m.group(1)}:{m.group(2)}"
            pending = None
    return found


def compare_usb(ours, wrap):
    errors = []
    ref = parse_lsusb_tree(run(wrap + ["lsusb", "-tv"]))
    got = {}
    for d in ours:
        dev_path = d["status"]["devicePath"]  # /dev/bus/usb/BBB/DDD
        bus, dev = (int(x) for x in dev_path.rsplit("/", 2)[1:])
        got[(bus, dev)] = f"{d['status']['vendorID']}:{d['status']['productID']}"
    if got != ref:
        errors.append(f"USB devices differ: ours {sorted(got.items())}, lsusb -tv {sorted(ref.items())}")
    for (bus, dev), ids in sorted(got.items()):
        line = run(wrap + ["lsusb", "-s", f"{bus:03d}:{dev:03d}"])
        if f"ID {ids}" not in line:
            errors.append(f"lsusb -s {bus:03d}:{dev:03d} says {line.strip()!r}, ours {ids}")
    return errors


def scratch_dir():
    """tmpfs when there is one: the 2,000-function trees build 3-40x faster there than on ext4."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="pcid-e2e-", dir=base)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: compare_with_lspci.py PCIDEVICES host|sysfs|tarball|generated|umockdev PATH")
    binary, mode, path = sys.argv[1:]
    if mode in ("tarball", "generated"):
        with scratch_dir() as tmp:
            root = os.path.join(tmp, "sys")
            if mode == "tarball":
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="tar") if hasattr(tarfile, "tar_filter") else tar.extractall(tmp)
                if not os.path.isdir(root):
                    sys.exit(f"FAIL: {path} holds no sys/ directory")
            else:
                make_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "make_tree.py")
                subprocess.run([sys.executable, make_tree, path, root], check=True)
            compare(binary, "sysfs", root)
    else:
        compare(binary, mode, path)


def compare(binary, mode, path):
    wrap, sysfs_root, lspci = [], path, ["lspci", "-D", "-vmm", "-nn", "-k"]
    drivers = None
    if mode == "sysfs":
        lspci = ["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={path}/bus/pci", "-D", "-vmm", "-nn", "-k"]
    elif mode == "umockdev":
        # Loading the recording costs umockdev ~30 s of CPU: load it once and run every command
        # (ours, lspci, lsusb) inside that one testbed, in a second instance of this script.
        env = dict(os.environ)
        if os.access("/dev/shm", os.W_OK):
            env["TMPDIR"] = "/dev/shm"  # the testbed holds thousands of files
        p = subprocess.run(["umockdev-run", "-d", path, "--", sys.executable, os.path.abspath(__file__),
                            binary, "umockdev-inside", path], env=env)
        if p.returncode != 0:
            sys.exit(p.returncode)
        return
    elif mode == "umockdev-inside":
        wrap = ["env"]  # already inside the testbed; non-empty: compare USB too
        sysfs_root = "/sys"
        drivers = recording_drivers(path)
    elif mode != "host":
        sys.exit(f"unknown mode {mode}")

    ours = json.loads(run(wrap + [binary, "list", "--output", "json", "--sysfs-root", sysfs_root,
                                  "--node-name", "e2e"]))
    ref = parse_vmm(run(wrap + lspci))
    if not ref:
        sys.exit("FAIL: lspci listed no devices; nothing would be compared")
    errors = compare_pci(ours, ref, drivers)
    usb_count = 0
    usb_dir = f"{path}/bus/usb/devices"
    if mode == "sysfs" and os.path.basename(path) == "sys" and os.path.isdir(usb_dir) and os.listdir(usb_dir):
        wrap = ["env", f"UMOCKDEV_DIR={os.path.dirname(path)}", "umockdev-wrapper"]
        sysfs_root = "/sys"
    if wrap or mode == "host":
        usb = json.loads(run(wrap + [binary, "list", "--usb", "--output", "json", "--sysfs-root",
                                     sysfs_root, "--node-name", "e2e"]))
        usb_count = len(usb)
        if usb or wrap or mode == "umockdev-inside":
            errors += compare_usb(usb, wrap)
    for e in errors[:50]:
        print("MISMATCH", e)
    if wrap and usb_count == 0:
        errors.append("no USB devices found where the tree has some")
    print(f"{mode} {path}: {len(ref)} PCI functions, {usb_count} USB devices compared, "
          f"{len(errors)} mismatches")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
