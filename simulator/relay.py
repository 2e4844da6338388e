"""A loopback TCP relay between one simulated device and the broker: its network cable.

The device's AGENT.toml names the relay's port instead of the broker's, so the simulator can cut
the link (:meth:`LinkRelay.set_link`) the way a pulled cable or a dead Wi-Fi would: open
connections are cut, and new ones are accepted and closed at once until the link is restored.
Bytes are forwarded unchanged (the TLS session is end to end between device and broker); the
relay sees only ciphertext.

I/O: one listening socket on 127.0.0.1 and its connections, served by one thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading

logger = logging.getLogger(__name__)
CHUNK = 65536


class LinkRelay:
    """Forward 127.0.0.1:``port`` to ``target``; ``set_link(False)`` cuts it."""

    def __init__(self, target: tuple[str, int], *, port: int = 0) -> None:
        self.target = target
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", port))
        self._srv.listen(16)
        self._srv.setblocking(False)
        self.port: int = self._srv.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._up = True
        self._lock = threading.Lock()
        self._stop = False
        self.connections = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.port}", daemon=True)

    def start(self) -> LinkRelay:
        self._sel.register(self._srv, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    @property
    def up(self) -> bool:
        return self._up

    def set_link(self, up: bool) -> None:
        with self._lock:
            self._up = up
        self._wake_w.send(b"l")

    def stop(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake_w.send(b"s")
        self._thread.join(5)
        for s in list(self._peers):
            self._close(s)
        self._sel.close()
        for s in (self._srv, self._wake_r, self._wake_w):
            s.close()

    def _close(self, s: socket.socket) -> None:
        other = self._peers.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self._peers.pop(x, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(x)
            x.close()

    def _cut_all(self) -> None:
        for s in list(self._peers):
            self._close(s)

    def _accept(self) -> None:
        try:
            client, _ = self._srv.accept()
        except OSError:
            return
        if not self._up:
            self.refused += 1
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:  # broker down: the device sees a closed connection, as it would
            self.refused += 1
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self._sel.register(client, selectors.EVENT_READ, "data")
        self._sel.register(upstream, selectors.EVENT_READ, "data")
        self.connections += 1

    def _forward(self, s: socket.socket) -> None:
        other = self._peers.get(s)
        if other is None:
            return
        try:
            data = s.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(s)
            return
        try:
            other.setblocking(True)
            other.settimeout(5)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._close(s)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.5):
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                    if not self._up:
                        self._cut_all()
                elif key.data == "accept":
                    self._accept()
                elif key.fileobj in self._peers:
                    self._forward(key.fileobj)
                if self._stop:
                    return
