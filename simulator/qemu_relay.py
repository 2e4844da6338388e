"""One guest connection relayed to a host service on loopback: QEMU's ``guestfwd=...-cmd:``.

QEMU's user-mode network starts this command once per TCP connection the guest opens to a
forwarded address, with the connection on stdin and stdout; the relay copies bytes both ways to
``127.0.0.1:PORT`` until either side closes. A ``guestfwd`` to a chardev instead connects once,
when QEMU starts, and never again, so a guest could not reconnect after a broker restart.

Usage: ``python -m edgeward.simulator.qemu_relay PORT``. I/O: its stdin, stdout and one socket.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(port: int, fd_in: int = 0, fd_out: int = 1) -> None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return  # the guest sees the connection closed, as with a refused one
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ, "guest")
    sel.register(sock, selectors.EVENT_READ, "host")
    with sock:
        while True:
            for key, _ev in sel.select():
                if key.data == "guest":
                    data = os.read(fd_in, 65536)
                    if not data:
                        return
                    sock.setblocking(True)
                    sock.sendall(data)
                    sock.setblocking(False)
                else:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd_out, view):]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m edgeward.simulator.qemu_relay PORT", file=sys.stderr)
        return 1
    try:
        relay(int(argv[0]))
    except OSError:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
