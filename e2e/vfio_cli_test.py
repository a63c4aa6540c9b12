#!/usr/bin/env python3
"""`pcidevices enable|disable|vfs` on a fixture tree (the real kernel is e2e/vm's): every refusal
changes nothing, neither in the tree nor in the state directory; the command acts directly when
no daemon runs and through the daemon's control socket when one does; a held state lock is a clear
error.

usage: vfio_cli_test.py PCIDEVICES MAKE_TREE"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else f"\n     {detail}"),
          flush=True)
    if not cond:
        failures.append(what)


def snapshot(*roots):
    """Every file's contents and every link's target under `roots`."""
    h = hashlib.sha256()
    for root in roots:
        for d, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
                p = os.path.join(d, name)
                h.update(p.encode())
                if os.path.islink(p):
                    h.update(os.readlink(p).encode())
                elif not name.endswith(".sock") and name != "lock":
                    with open(p, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()


def sriov(pcidevices, make_tree, base):
    """`pcidevices vfs` on the SR-IOV tree (8 PFs x 256 VFs; the first PF carries the default
    route). A fixture file is not an attribute (a write does not replace it), so what reached the
    kernel is read from the command's answer; the writes themselves are unit-tested."""
    with tempfile.TemporaryDirectory(prefix="pcid-vfs-", dir=base) as tmp:
        sysfs = f"{tmp}/sys"
        subprocess.run([sys.executable, make_tree, "sriov", sysfs, "--dev-root", f"{tmp}/dev",
                        "--proc-root", f"{tmp}/proc"], check=True)
        roots = ["--sysfs-root", sysfs, "--dev-root", f"{tmp}/dev", "--proc-root", f"{tmp}/proc",
                 "--state-dir", f"{tmp}/state", "--pod-resources-socket", f"{tmp}/none.sock"]

        def vfs(*args):
            p = subprocess.run([pcidevices, "vfs", *args, *roots], capture_output=True, text=True, timeout=30)
            return p.returncode, p.stdout + p.stderr

        before = snapshot(sysfs)
        for args, rc_want, want in ((["0000:10:00.0", "4"], 1, "refused: it carries the default route"),
                                    (["0000:12:00.0", "300"], 1, "300 VFs asked, it has at most 256"),
                                    (["0000:13:00.0", "1"], 1, "not an SR-IOV PF"),
                                    (["0000:12:00.0", "-1"], 2, "want 0 to 65535"),
                                    (["0000:12:00.0/../x", "1"], 2, "not a PCI address"),
                                    (["0000:12:00.0"], 2, "want ADDRESS COUNT"),
                                    (["0000:12:00.0", "256"], 0, "256 VFs (had 256)")):
            rc, out = vfs(*args)
            check(rc == rc_want and want in out, f"vfs {' '.join(args)}: {want}", out)
        check(snapshot(sysfs) == before, "refusals and an unchanged count wrote nothing")
        rc, out = vfs("0000:12:00.0", "4")
        check(rc == 0 and "0000:12:00.0: 4 VFs (had 256)" in out, "vfs 0000:12:00.0 4", out)


def main():
    pcidevices, make_tree = sys.argv[1:3]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-vfio-cli-", dir=base) as tmp:
        sysfs, dev, proc, state = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/proc", f"{tmp}/state"
        subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev,
                        "--proc-root", proc], check=True)
        config = f"{tmp}/config.json"
        with open(config, "w") as f:
            json.dump({"enable": [], "deny": [{"address": "0000:01:00.1"}]}, f)
        roots = ["--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc, "--state-dir", state,
                 "--pod-resources-socket", f"{tmp}/none.sock"]

        def pcid(*args):
            p = subprocess.run([pcidevices, *args, *roots, "--config", config],
                               capture_output=True, text=True, timeout=30)
            return p.returncode, p.stdout + p.stderr

        before = snapshot(sysfs, dev)
        # Malformed addresses: exit 2, nothing reaches a path.
        for bad in ("../../..", "0000:00:1f.6/../x", "0000:00:1F.4", " 0000:81:00.0", "0000:81:00.0 ",
                    "0000:81:00.0\n", "0000:81:00.8", "0000:81:20.0", "81:00.0", "", "0000:81:00.0,x"):
            rc, out = pcid("enable", bad)
            check(rc == 2 and "not a PCI address" in out, f"enable {bad!r}: malformed", out)
        rc, out = pcid("disable", "../x")
        check(rc == 2 and "not a PCI address" in out, "disable '../x': malformed", out)
        # The shipped binaries have no test flags: fault injection lives only in the test build
        # pcidevices_faults. Through the front and the agent alike, an unknown flag (exit 2).
        agent = os.path.join(os.path.dirname(os.path.abspath(pcidevices)), "pcidevices-agent")
        for binary in (pcidevices, agent):
            for verb in ("enable", "disable"):
                p = subprocess.run([binary, verb, "0000:81:00.0", "--test-abort-after-step", "1",
                                    *roots, "--config", config], capture_output=True, text=True,
                                   timeout=30)
                check(p.returncode == 2 and "unknown flag --test-abort-after-step" in p.stderr,
                      f"{os.path.basename(binary)} {verb} --test-abort-after-step: unknown flag",
                      p.stdout + p.stderr)
        # The front execs the agent from its own directory; without one there, a clear error.
        lone = f"{tmp}/lone/pcidevices"
        os.makedirs(os.path.dirname(lone))
        shutil.copy2(pcidevices, lone)
        p = subprocess.run([lone, "enable", "0000:81:00.0", *roots], capture_output=True, text=True,
                           timeout=30)
        check(p.returncode == 127 and f"cannot run {tmp}/lone/pcidevices-agent" in p.stderr,
              "front without pcidevices-agent next to it: exit 127, names the path",
              p.stdout + p.stderr)
        # Protected, unknown, not enabled: exit 1 with the reason.
        for address, want in (("0000:00:19.0", "refused: it carries the default route (eno1)"),
                              ("0000:00:01.0", "refused: it is a bridge (class 0604)"),
                              ("0000:01:00.1", "refused: it is denied by the config (deny[0])"),
                              ("0000:01:00.0", "refused: it shares IOMMU group 2 with 0000:01:00.1, "
                                               "which is denied by the config (deny[0])"),
                              ("0000:00:1e.0", "no such device")):
            rc, out = pcid("enable", address)
            check(rc == 1 and f"pci {address}: {want}" in out, f"enable {address}: {want}", out)
        rc, out = pcid("disable", "0000:81:00.0")
        check(rc == 1 and "pci 0000:81:00.0: not enabled" in out, "disable of a device not enabled", out)
        check(snapshot(sysfs, dev) == before, "refusals changed nothing in the tree")
        check(not os.path.exists(f"{state}/state.json"), "refusals recorded nothing")

        # A device already on vfio-pci (as vfio-pci.ids= leaves it): enabled and recorded as such;
        # one bad address among good ones fails alone.
        rc, out = pcid("enable", "0000:81:00.0", "0000:00:1e.0")
        check(rc == 1 and "enabled 0000:81:00.0" in out and "0000:00:1e.0: no such device" in out,
              "enable: one good, one unknown", out)
        with open(f"{state}/state.json") as f:
            recorded = json.load(f)["devices"]
        check(recorded == [{"address": "0000:81:00.0", "enabled": True, "originalDriver": "vfio-pci",
                            "sources": ["cli"], "ids": "10de:1c03"}], f"state file {recorded}")
        with open(f"{sysfs}/bus/pci/devices/0000:81:00.0/driver_override") as f:
            check(f.read().strip() == "vfio-pci", "driver_override written")

        # The state lock held by someone else (a daemon starting up): a clear error.
        with open(f"{state}/lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rc, out = pcid("disable", "0000:81:00.0")
            check(rc == 1 and "held by another pcidevices process" in out, "state lock held", out)

        # With a daemon running, the command goes through its control socket.
        plugins = f"{tmp}/dp"
        os.mkdir(plugins)
        log = open(f"{tmp}/daemon.log", "w+")
        daemon = subprocess.Popen([pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", "n1", "--config", config,
                                   "--device-plugin-dir", plugins, *roots], stderr=log)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(f"{state}/control.sock") and time.monotonic() < deadline:
                time.sleep(0.05)
            check(os.path.exists(f"{state}/control.sock"), "daemon listens on the control socket")
            check(os.stat(f"{state}/control.sock").st_mode & 0o077 == 0, "control socket is 0600")
            rc, out = pcid("enable", "0000:00:19.0")
            check(rc == 1 and "carries the default route (eno1)" in out, "refusal through the daemon", out)
            rc, out = pcid("disable", "0000:81:00.0")
            check(rc == 0 and "disabled 0000:81:00.0" in out, "disable through the daemon", out)
            log.seek(0)
            text = log.read()
            check("control socket: enable 0000:00:19.0" in text and
                  "control socket: disable 0000:81:00.0" in text, "the daemon did both", text[-2000:])
            with open(f"{state}/state.json") as f:
                check(json.load(f)["devices"] == [], "state emptied by the daemon")
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        check(daemon.returncode == 0, f"daemon stopped cleanly ({daemon.returncode})")
        check(not os.path.exists(f"{state}/control.sock"), "control socket removed at exit")
    sriov(pcidevices, make_tree, base)
    if failures:
        print(f"FAILED: {failures}")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
