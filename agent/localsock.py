"""The agent's local Unix stream socket: applications on the device send events here.

Frames are :mod:`edgeward.core.frames` (4-byte length + bounded CBOR ``{type, ts, body}``).
One thread accepts connections and reads them with a selector; each decoded event is handed to
the loop's ``sink`` as a :class:`LocalEvent` together with the peer's credentials (SO_PEERCRED),
so the loop can attribute it. A connection that sends an oversized frame is closed (its length
prefix can no longer be trusted); a frame that is malformed but well-sized is skipped and
counted. More than ``max_clients`` connections are refused.

I/O: the socket file (mode ``mode``, stale file replaced) and its connections. No decisions
about the events are made here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError, MalformedInputError
from edgeward.core.frames import FrameDecoder
from edgeward.core.limits import DEFAULT_LIMITS, Limits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalEvent:
    type: str
    ts: float
    body: dict[str, Any]
    pid: int
    uid: int


@dataclass
class LocalStats:
    accepted: int = 0
    events: int = 0
    malformed: int = 0
    closed_oversized: int = 0
    refused_clients: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _peercred(conn: socket.socket) -> tuple[int, int]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        return pid, uid
    except OSError:
        return -1, -1


class LocalSocketServer:
    def __init__(
        self,
        path: Path,
        sink: Callable[[object], None],
        *,
        mode: int = 0o660,
        max_clients: int = 8,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.path = Path(path)
        self._sink = sink
        self._mode = mode
        self._max_clients = max_clients
        self._limits = limits
        self.stats = LocalStats()
        self._sel = selectors.DefaultSelector()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._server: socket.socket | None = None
        self._clients: dict[socket.socket, tuple[FrameDecoder, int, int]] = {}

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise DeviceError(f"{self.path} exists and is not a socket", hint="remove it")
            os.unlink(self.path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o777 & ~self._mode)
            try:
                srv.bind(str(self.path))
            finally:
                os.umask(old)
            os.chmod(self.path, self._mode)
            srv.listen(16)
        except OSError as e:
            srv.close()
            raise DeviceError(f"cannot listen on {self.path}: {e.strerror}") from e
        srv.setblocking(False)
        self._server = srv
        self._sel.register(srv, selectors.EVENT_READ, "accept")
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._thread = threading.Thread(target=self._run, name="localsock", daemon=True)
        self._thread.start()
        logger.info("listening for local events on %s", self.path)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop_w.send(b"x")
        self._thread.join(5)
        self._thread = None
        for c in list(self._clients):
            self._drop(c)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._sel.close()
        self._stop_r.close()
        self._stop_w.close()

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data == "stop":
                    return
                if key.data == "accept":
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        assert self._server is not None
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        if len(self._clients) >= self._max_clients:
            self.stats.refused_clients += 1
            logger.warning("local socket: refusing client, %d already connected", self._max_clients)
            conn.close()
            return
        conn.setblocking(False)
        pid, uid = _peercred(conn)
        self._clients[conn] = (FrameDecoder(limits=self._limits), pid, uid)
        self._sel.register(conn, selectors.EVENT_READ, "client")
        self.stats.accepted += 1

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn)
        self._clients.pop(conn, None)
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        dec, pid, uid = self._clients[conn]
        try:
            events = dec.feed(data)
        except MalformedInputError as e:
            self.stats.closed_oversized += 1
            logger.warning("local socket: closing client pid %d: %s", pid, e)
            self._drop(conn)
            return
        if dec.rejected:
            self.stats.malformed += len(dec.rejected)
            for r in dec.rejected:
                logger.warning("local socket: malformed frame from pid %d: %s", pid, r)
            dec.rejected.clear()
        for ev in events:
            self.stats.events += 1
            self._sink(LocalEvent(ev["type"], float(ev.get("ts", 0)), ev.get("body", {}), pid, uid))
