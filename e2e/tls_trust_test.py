#!/usr/bin/env python3
"""Whom the daemon's API client trusts: the kubeconfig's CA and nothing else. The API-server
emulator's certificate is signed by CA A. The daemon is run three times on a gpu-node fixture,
each as its own node:
  - kubeconfig naming CA A: its PCIDevices appear (the control: the same set-up can succeed);
  - kubeconfig naming CA B: refused (server verification failed), nothing written;
  - kubeconfig naming CA B, with A as the process's system CA bundle (SSL_CERT_FILE): still
    refused, as kubectl would: a CA in the kubeconfig replaces the system roots, it does not
    add to them;
  - kubeconfig naming CA A, but the server (a bare HTTPS server here) presents a certificate of
    A for another name: refused, and no request reaches it.

usage: tls_trust_test.py PCIDEVICES MAKE_TREE"""
import base64
import http.server
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from device_plugin_test import stop_process  # noqa: E402
from projection_test import Api, check, verdict, wait_for  # noqa: E402

REFUSED = "server certificate not trusted"
WRONG_NAME = "server certificate does not name 127.0.0.1"


def make_ca(d):
    """A second CA (B), unrelated to the emulator's."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{d}/b.key", "-out", f"{d}/b.crt", "-days", "1",
                    "-subj", "/CN=pcidevices-e2e-other-ca", "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True)
    return f"{d}/b.crt"


def misnamed_server(d):
    """An HTTPS server on 127.0.0.1 whose certificate, signed by the emulator's CA, names only
    elsewhere.invalid; returns (port, paths requested, the server)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{d}/misnamed.key", "-out", f"{d}/misnamed.csr", "-subj", "/CN=elsewhere.invalid")
    with open(f"{d}/misnamed.ext", "w") as f:
        f.write("extendedKeyUsage=serverAuth\nsubjectAltName=DNS:elsewhere.invalid\n")
    openssl("x509", "-req", "-in", f"{d}/misnamed.csr", "-CA", f"{d}/api/ca.crt", "-CAkey", f"{d}/api/ca.key",
            "-CAcreateserial", "-out", f"{d}/misnamed.crt", "-days", "1", "-extfile", f"{d}/misnamed.ext")
    requested = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # the client hanging up after the handshake

    server = Server(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{d}/misnamed.crt", f"{d}/misnamed.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], requested, server


def with_ca(kubeconfig, ca_file, out, port=None):
    with open(kubeconfig) as f, open(out, "w") as o:
        for line in f:
            if line.strip().startswith("certificate-authority-data:") and ca_file:
                data = base64.b64encode(open(ca_file, "rb").read()).decode()
                line = f"    certificate-authority-data: {data}\n"
            if line.strip().startswith("server:") and port:
                line = f"    server: https://127.0.0.1:{port}\n"
            o.write(line)
    return out


def run_daemon(pcidevices, tmp, sysfs, dev, proc, node, kubeconfig, env):
    """Runs the daemon as `node` until its objects appear or it reports a refused server (15 s at
    most); returns (objects listed, whether the log names the refusal, the log)."""
    state, plugins = f"{tmp}/{node}-state", f"{tmp}/{node}-dp"
    os.mkdir(plugins)
    config = f"{tmp}/{node}-config.json"
    with open(config, "w") as f:
        f.write('{"enable": []}')
    log_path = f"{tmp}/{node}.log"
    daemon = subprocess.Popen([pcidevices, "daemon", "--metrics-bind-address", "0", "--node-name", node, "--config", config,
                               "--sysfs-root", sysfs, "--dev-root", dev, "--proc-root", proc,
                               "--state-dir", state, "--device-plugin-dir", plugins,
                               "--pod-resources-socket", f"{tmp}/{node}-pr.sock", "--kubeconfig", kubeconfig],
                              stderr=open(log_path, "w"), env=env)
    return daemon, log_path


def main():
    pcidevices, make_tree = sys.argv[1:3]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcid-tls-", dir=base) as tmp:
        api = Api(tmp)
        try:
            rc, out = api.kubectl("apply", "-f", f"{os.path.dirname(HERE)}/deploy/crds/")
            check(rc == 0, "kubectl apply -f deploy/crds/", out)
            sysfs, dev, proc = f"{tmp}/sys", f"{tmp}/dev", f"{tmp}/proc"
            subprocess.run([sys.executable, make_tree, "gpu-node", sysfs, "--dev-root", dev, "--proc-root", proc],
                           check=True)
            other_ca = make_ca(tmp)
            wrong = with_ca(api.kubeconfig, other_ca, f"{tmp}/kubeconfig-other-ca")
            clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
            # A's certificate as the "system" bundle; an empty directory as the hashed one.
            os.mkdir(f"{tmp}/empty-certs")
            system_a = dict(clean, SSL_CERT_FILE=f"{tmp}/api/ca.crt", SSL_CERT_DIR=f"{tmp}/empty-certs")
            port, requested, misnamed = misnamed_server(tmp)
            elsewhere = with_ca(api.kubeconfig, None, f"{tmp}/kubeconfig-misnamed", port=port)
            cases = [("trusted", api.kubeconfig, clean, True, REFUSED),
                     ("other-ca", wrong, clean, False, REFUSED),
                     ("other-ca-system-a", wrong, system_a, False, REFUSED),
                     ("misnamed", elsewhere, clean, False, WRONG_NAME)]
            for node, kubeconfig, env, served, why in cases:
                daemon, log_path = run_daemon(pcidevices, tmp, sysfs, dev, proc, node, kubeconfig, env)
                try:
                    objects = lambda: (api.get("pcidevices", selector=f"nodename={node}") or {}).get("items")  # noqa: E731
                    if served:
                        check(wait_for(objects, timeout=20) is not None,
                              f"{node}: the emulator's own CA: PCIDevices appear")
                    else:
                        refused = wait_for(lambda: why in open(log_path).read(), timeout=20)
                        time.sleep(0.5)  # anything that would have slipped through lands meanwhile
                        check(refused and not objects() and not requested, f"{node}: refused ({why}), nothing written or sent",
                              open(log_path).read()[-1500:] + f"\n     requests: {requested[:5]}")
                finally:
                    stop_process(daemon)
                check(daemon.returncode == 0, f"{node}: daemon stopped cleanly ({daemon.returncode})")
            misnamed.shutdown()
        finally:
            api.stop()
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
