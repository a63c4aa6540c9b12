#!/usr/bin/env python3
"""The daemon's metrics endpoint against a real Prometheus text parser (Debian's
python3-prometheus-client) and the kubelet emulator, on the gpu-node fixture tree with its two
functions already on vfio-pci (81:00.0 GPU, 81:00.1 audio) enabled.

Checked: --metrics-bind-address 127.0.0.1:0 listens on a free port (logged); /healthz answers 200
while the loop turns; /readyz is 503 naming the unregistered plugins while there is no kubelet,
200 once both are registered; /metrics parses, every family carries the pcidevices_ prefix and
counters end in _total; devices by kind and state equal `pcidevices list`; registrations, an
Allocate (histogram and counter), a kubelet restart, uevents and owner-loop handler times are
counted; other paths 404, other methods 405; SIGTERM stops it (exit 0) and the port is free.

usage: metrics_test.py PCIDEVICES KUBELET_EMULATOR MAKE_TREE"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import daemon_log

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # an interpreter other than Debian's (pyenv): the package is Debian's
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from device_plugin_test import Emulator, stop_process  # noqa: E402
from projection_test import check, failures, verdict, wait_for  # noqa: E402

GPU = "nvidia.com/GP106_GEFORCE_GTX_1060_6GB"


def get(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"x" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def scrape(port):
    """{(name, frozenset(labels)): value} of every sample, and the families."""
    status, text, _ = get(port, "/metrics")
    families = list(text_string_to_metric_families(text))
    samples = {}
    for f in families:
        for s in f.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def main():
    pcidevices, emulator_bin, make_tree = sys.argv[1:4]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-metrics-", dir=base) as tmp:
        sysfs, dev, plugins = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/dp"
        os.mkdir(plugins)
        subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev,
                        "--proc-root", f"{tmp}/proc"], check=True)
        listed = json.loads(subprocess.run([pcidevices, "list", "--sysfs-root", sysfs, "--node-name", "n1",
                                            "--output", "json"], capture_output=True, text=True,
                                           check=True).stdout)
        config = f"{tmp}/config.json"
        with open(config, "w") as f:
            json.dump({"enable": [{"address": "0000:81:00.0"}, {"address": "0000:81:00.1"}]}, f)
        log = open(f"{tmp}/daemon.log", "w+")
        daemon = subprocess.Popen([pcidevices, "daemon", "--metrics-bind-address", "127.0.0.1:0",
                                   "--node-name", "n1", "--config", config, "--sysfs-root", sysfs,
                                   "--dev-root", dev, "--proc-root", f"{tmp}/proc", "--state-dir",
                                   f"{tmp}/state", "--device-plugin-dir", plugins], stderr=log)
        emu = None
        try:
            m = wait_for(lambda: re.search(r"metrics on 127\.0\.0\.1:(\d+)", open(log.name).read()))
            check(m is not None, "the metrics port is logged")
            if not m:
                return verdict()
            port = int(m.group(1))
            status, body, _ = get(port, "/healthz")
            check(status == 200 and body == "ok\n", f"/healthz 200 while the loop turns: {status} {body!r}")
            ready = wait_for(lambda: (lambda r: r if "not registered" in r[1] else None)(get(port, "/readyz")))
            check(ready is not None and ready[0] == 503 and "2 of 2 device plugins not registered" in ready[1],
                  f"/readyz 503 without a kubelet, naming the plugins: {ready}")
            emu = Emulator(emulator_bin, plugins)
            ready = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(port, "/readyz")))
            check(ready is not None, "/readyz 200 once both plugins are registered")

            families, samples = scrape(port)
            names = {f.name for f in families}
            check(all(n.startswith("pcidevices_") for n in names), f"every family is pcidevices_*: {sorted(names)}")
            counters = [s.name for f in families if f.type == "counter" for s in f.samples]
            check(counters and all(n.endswith("_total") for n in counters),
                  f"counter samples end in _total: {sorted(set(counters))}")
            by_state = {"vfio-pci": 0, "no-driver": 0, "host-driver": 0}
            for d in listed:
                drv = d["status"].get("kernelDriverInUse", "")
                by_state["vfio-pci" if drv == "vfio-pci" else "host-driver" if drv else "no-driver"] += 1
            got = {s: value(samples, "pcidevices_devices", kind="pci", state=s) for s in by_state}
            check(got == by_state, f"devices by state = `pcidevices list`: {got} vs {by_state}")
            check(value(samples, "pcidevices_plugin_registrations_total", result="ok") == 2,
                  "two registrations counted")
            check((value(samples, "pcidevices_owner_loop_handler_duration_seconds_count", handler="posted") or 0) > 0,
                  "owner-loop handler times observed")

            emu.send(f"allocate {GPU} 0000:81:00.0 pod-a")
            e = emu.wait(lambda e: e["event"] == "allocate", timeout=10)
            check(e is not None and e.get("ok"), f"Allocate granted: {e}")
            _, samples = scrape(port)
            check(value(samples, "pcidevices_allocate_duration_seconds_count") == 1 and
                  value(samples, "pcidevices_allocations_total", result="granted") == 1,
                  "the Allocate is in the histogram and the counter")
            # The kubelet's first appearance (after the daemon's) counts as a start too.
            starts = value(samples, "pcidevices_kubelet_restarts_total")
            emu.send("restart")
            emu.wait(lambda e: e["event"] == "restarted", timeout=10)
            restarted = wait_for(lambda: value(scrape(port)[1], "pcidevices_kubelet_restarts_total") == starts + 1)
            check(starts == 1 and restarted, f"the kubelet's start and restart are counted ({starts})")
            ok = wait_for(lambda: value(scrape(port)[1], "pcidevices_plugin_registrations_total", result="ok") == 4)
            check(ok, "and both plugins registered again")

            for path, method, want in (("/", "GET", 404), ("/metricsx", "GET", 404), ("/metrics", "POST", 405),
                                       ("/healthz", "DELETE", 405), ("/readyz", "PUT", 405)):
                status, _, headers = get(port, path, method)
                check(status == want, f"{method} {path}: {want} ({status})")
            status, _, headers = get(port, "/metrics", "POST")
            check(headers.get("Allow") == "GET, HEAD", f"405 says Allow: GET, HEAD ({headers.get('Allow')})")
        finally:
            began = time.monotonic()
            stop_process(daemon)
            check(daemon.returncode == 0, f"daemon stopped cleanly ({daemon.returncode}, "
                                          f"{time.monotonic() - began:.1f} s)")
            if emu:
                emu.stop()
            if m:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a restarted daemon
                try:
                    s.bind(("127.0.0.1", port))
                    freed = True
                except OSError:
                    freed = False
                s.close()
                check(freed, "the port is free after the stop")
            if failures:
                log.seek(0)
                print(daemon_log.failure_text(log.read(), 40))
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
