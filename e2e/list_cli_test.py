#!/usr/bin/env python3
"""Behaviour of `pcidevices list` as an operator meets it: output formats, names, bad input.

Usage: list_cli_test.py PCIDEVICES MAKE_TREE
Builds the gpu-node and odd fixture trees with MAKE_TREE into a temporary directory.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def main():
    binary, make_tree = sys.argv[1:3]
    # `list` runs in the front binary, which loads nothing of gRPC, protobuf or OpenSSL (it starts
    # like lspci; the other verbs exec pcidevices-agent: docs/decisions.md).
    p = run("ldd", binary)
    heavy = [ln.split()[0] for ln in p.stdout.splitlines()
             if re.search(r"grpc|protobuf|libssl|libcrypto", ln)]
    check(p.returncode == 0 and not heavy, f"the front binary loads {heavy or p.stderr}")
    with tempfile.TemporaryDirectory(prefix="pcid-e2e-") as tmp:
        gpu, odd = os.path.join(tmp, "gpu"), os.path.join(tmp, "odd")
        subprocess.run([sys.executable, make_tree, "gpu-node", gpu], check=True)
        subprocess.run([sys.executable, make_tree, "odd", odd], check=True)

        # JSON in the CR shape, names by DESIGN.md.
        p = run(binary, "list", "--sysfs-root", gpu, "--node-name", "gpunode", "--output", "json")
        check(p.returncode == 0, f"gpu-node json exit {p.returncode}: {p.stderr}")
        devices = {d["status"]["address"]: d for d in json.loads(p.stdout)}
        g = devices["0000:01:00.0"]
        check(g["kind"] == "PCIDevice" and g["apiVersion"] == "devices.harvesterhci.io/v1beta1",
              "kind/apiVersion")
        check(g["metadata"]["name"] == "gpunode-000001000", f"name {g['metadata']['name']}")
        check(g["metadata"]["labels"] == {"nodename": "gpunode"}, "nodename label")
        check(g["status"]["resourceName"] == "nvidia.com/GP106_GEFORCE_GTX_1060_6GB",
              f"resourceName {g['status']['resourceName']}")
        check(g["status"]["numaNode"] == 0 and devices["0000:81:00.0"]["status"]["numaNode"] == 1,
              "numa nodes")
        check(g["status"]["iommuGroup"] == devices["0000:01:00.1"]["status"]["iommuGroup"] != "",
              "GPU and its audio function share a group")
        check(devices["0000:00:19.0"]["status"]["numaNode"] == -1, "no NUMA node is -1")
        check(p.stderr == "", f"clean tree logs nothing: {p.stderr}")

        # USB in the CR shape.
        p = run(binary, "list", "--usb", "--sysfs-root", gpu, "--node-name", "jacknode",
                "--output", "json")
        check(p.returncode == 0, f"usb exit {p.returncode}")
        usb = {d["metadata"]["name"]: d["status"] for d in json.loads(p.stdout)}
        stick = [s for n, s in usb.items() if s["vendorID"] == "0951"]
        check(len(stick) == 1, f"one Kingston stick in {list(usb)}")
        if stick:
            check(stick[0]["pciAddress"] == "0000:00:14.0", "host controller address")
            check(stick[0]["devicePath"].startswith("/dev/bus/usb/001/"), "device path")
            check(stick[0]["resourceName"].startswith("kubevirt.io/jacknode-0951-1666-001"),
                  "usb resourceName")

        # Table like kubectl get; default node name is the host name.
        p = run(binary, "list", "--sysfs-root", gpu)
        lines = p.stdout.splitlines()
        check(lines[0].split("   ")[0].strip() == "NAME" and "RESOURCE NAME" in lines[0],
              f"table header {lines[0]!r}")
        check(len(lines) == 1 + len(devices), "one row per function")
        col = lines[0].index("ADDRESS")
        check(all(line[col:col + 12] in devices for line in lines[1:]), "ADDRESS column aligned")
        check(lines[1].startswith(socket.gethostname() + "-"), "default node name = host name")

        # Odd contents: bad devices reported by name and skipped, good ones kept, exit 0.
        p = run(binary, "list", "--sysfs-root", odd, "--output", "json")
        check(p.returncode == 0, f"odd tree exit {p.returncode}")
        kept = {d["status"]["address"] for d in json.loads(p.stdout)}
        check({"0000:00:02.0", "0000:00:19.0", "0000:00:06.0"} <= kept, f"kept {kept}")
        for skipped in ("0000:00:03.0", "0000:00:04.0", "0000:00:07.0"):
            check(skipped not in kept, f"{skipped} should be skipped")
            check(f"pci {skipped}: skipped" in p.stderr, f"{skipped} skip reported")
        check('invalid PCI address "foo"' in p.stderr, "non-address entry reported")
        check("0000:00:06.0: numa_node: malformed" in p.stderr, "bad numa_node reported")

        # Bad invocations: clear message, usage exit code, nothing on stdout.
        for args, code, text in [
            (["list", "--output", "yaml"], 2, "--output must be table or json"),
            (["list", "--bogus"], 2, "unknown flag --bogus"),
            (["list", "--sysfs-root"], 2, "needs a value"),
            (["list", "extra"], 2, "unexpected argument extra"),
            (["frobnicate"], 2, 'unknown command "frobnicate"'),
            (["list", "--sysfs-root", os.path.join(tmp, "missing")], 1, "missing"),
            (["list", "--sysfs-root", tmp], 1, "bus/pci/devices"),
        ]:
            p = run(binary, *args)
            check(p.returncode == code, f"{args}: exit {p.returncode}, want {code}")
            check(text in p.stderr, f"{args}: stderr lacks {text!r}: {p.stderr!r}")
            check(p.stdout == "", f"{args}: stdout not empty")

        # No names database: IDs stand in, with a warning, and the command still works.
        p = run(binary, "list", "--sysfs-root", gpu, "--output", "json",
                "--pci-ids", os.path.join(tmp, "none.ids"))
        check(p.returncode == 0 and "names unavailable" in p.stderr, "missing pci.ids warned")
        d = {x["status"]["address"]: x for x in json.loads(p.stdout)}["0000:01:00.0"]
        check(d["status"]["description"] == "Class 0300: Vendor 10de Device 1c03",
              f"fallback description {d['status']['description']}")
        check(d["status"]["resourceName"] == "10de.com/1c03", d["status"]["resourceName"])

    print(f"list_cli_test: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
