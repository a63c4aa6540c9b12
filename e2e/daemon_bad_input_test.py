#!/usr/bin/env python3
"""The daemon facing bad input: configs naming a bridge, a missing device or an unknown key, and a
kubelet that accepts connections but never answers Register. Clear errors; nothing else disturbed.

Usage: daemon_bad_input_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import daemon_log

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_plugin_test import Emulator, check, failures, stop_process, wait_for  # noqa: E402

GPU_SOCK = "kubevirt-nvidia.com-GP106_GEFORCE_GTX_1060_6GB.sock"


def main():
    pcidevices, emulator_bin, make_tree = sys.argv[1:4]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-bad-", dir=base) as tmp:
        sysfs, dev, plugins = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/dp"
        os.mkdir(plugins)
        subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev,
                        "--proc-root", f"{tmp}/proc", "--state-dir", f"{tmp}/state",
                        "--intent", "0000:01:00.0"], check=True)
        config = f"{tmp}/config.json"
        daemon_args = [pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", "n1", "--config", config,
                       "--sysfs-root", sysfs, "--dev-root", dev, "--device-plugin-dir", plugins,
                       "--proc-root", f"{tmp}/proc", "--state-dir", f"{tmp}/state"]

        # An unknown key at start: exit 1, the key named, no socket created.
        with open(config, "w") as f:
            json.dump({"enable": [{"vendor": "10de"}], "enabel": []}, f)
        p = subprocess.run(daemon_args, capture_output=True, text=True, timeout=10)
        check(p.returncode == 1 and 'unknown key "enabel"' in p.stderr, f"unknown key: {p.returncode} {p.stderr}")
        check(os.listdir(plugins) == [], "nothing served with a broken config")
        for bad, text in [("[", "not valid JSON"), ('{"enable": [{}]}', "empty selector"),
                          ('{"enable": [{"vendor": "10d"}]}', "want 4 hex digits"),
                          ('{"enable": [{"address": "0000:00:1f.6/../x"}]}', "invalid PCI address"),
                          ('{"enable": [{"vendor": 4318}]}', "want a string")]:
            with open(config, "w") as f:
                f.write(bad)
            p = subprocess.run(daemon_args, capture_output=True, text=True, timeout=10)
            check(p.returncode == 1 and text in p.stderr, f"config {bad!r}: {p.returncode} {p.stderr[-300:]}")

        # A malformed metrics address: usage error (2), named; one in use: exit 1, named; nothing
        # served either way.
        with open(config, "w") as f:
            json.dump({"enable": [{"vendor": "10de"}]}, f)
        no_metrics = daemon_args.index("--metrics-bind-address") + 1
        for address in (":99999", "localhost", "[::1:80"):
            args = list(daemon_args)
            args[no_metrics] = address
            p = subprocess.run(args, capture_output=True, text=True, timeout=10)
            check(p.returncode == 2 and f'--metrics-bind-address "{address}"' in p.stderr,
                  f"metrics address {address!r}: {p.returncode} {p.stderr[-300:]}")
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        args = list(daemon_args)
        args[no_metrics] = f"127.0.0.1:{taken.getsockname()[1]}"
        p = subprocess.run(args, capture_output=True, text=True, timeout=20)
        taken.close()
        check(p.returncode == 1 and "metrics: cannot listen on 127.0.0.1:" in p.stderr,
              f"metrics port in use: {p.returncode} {p.stderr[-300:]}")
        check(os.listdir(plugins) == [], "nothing served when the metrics port is taken")

        # A bridge and a missing device in the config: refused / warned; the GPU is still served.
        with open(config, "w") as f:
            json.dump({"enable": [{"address": "0000:00:01.0"}, {"address": "0000:00:05.0"},
                                  {"vendor": "10de", "class": "0300"}]}, f)
        # A kubelet that accepts connections and never answers.
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(f"{plugins}/kubelet.sock")
        silent.listen(16)
        log = open(f"{tmp}/daemon.log", "w+")
        daemon = subprocess.Popen(daemon_args + [], stderr=log)
        try:
            check(wait_for(lambda: os.path.exists(f"{plugins}/{GPU_SOCK}")), "GPU plugin serving")
            check(wait_for(lambda: "retry in" in open(log.name).read(), timeout=12),
                  "Register against a silent kubelet times out and is retried")
            text = open(log.name).read()
            check("pci 0000:00:01.0: refused: it is a bridge (class 0604)" in text, "bridge refused")
            check("config enable[1] matches no device" in text, "missing device warned")
            check("DEADLINE_EXCEEDED" in text.upper().replace(" ", "_") or "Deadline" in text,
                  "deadline named")
            check(daemon.poll() is None, "daemon still running")
            # The real kubelet arrives: registration follows within a second.
            silent.close()
            os.unlink(f"{plugins}/kubelet.sock")
            emu = Emulator(emulator_bin, plugins)
            try:
                e = emu.wait(lambda e: e["event"] == "register" and e["ok"], timeout=2)
                check(e is not None and e["resource"] == "nvidia.com/GP106_GEFORCE_GTX_1060_6GB",
                      f"registered once the kubelet answers: {e}")
                lst = emu.wait(lambda e: e["event"] == "list")
                check(lst is not None and [d["id"] for d in lst["devices"]] == ["0000:01:00.0", "0000:81:00.0"],
                      f"only the GPUs served: {lst}")
            finally:
                emu.stop()
        finally:
            stop_process(daemon)
            if failures:
                print(daemon_log.failure_text(open(log.name).read()))
    print(f"daemon_bad_input_test: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
