#!/usr/bin/env python3
"""One guest TCP connection relayed to 127.0.0.1:PORT on the host.

qemu's user network runs this for each connection the guest opens to a `guestfwd` address
(`guestfwd=tcp:IP:PORT-cmd:tcp_relay.py HOSTPORT`), with the connection as fds 0, 1 and 2. The
VM test uses it to let the agent in the guest reach the API-server emulator on the host, with
`restrict=on`: nothing else leaves the VM.

usage: tcp_relay.py PORT
"""
import os
import socket
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    guest = socket.socket(fileno=os.dup(0))
    # fd 2 is the guest's connection too: nothing may be written to it but the relayed bytes.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.dup2(devnull, 1)
    host = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    t = threading.Thread(target=pump, args=(host, guest), daemon=True)
    t.start()
    pump(guest, host)
    t.join()


if __name__ == "__main__":
    main()
