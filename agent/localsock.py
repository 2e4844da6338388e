"""The agent's local Unix stream socket: applications on the device send events here.

Frames are :mod:`edgeward.core.frames` (4-byte length + bounded CBOR ``{type, ts, body}``).
One thread accepts connections and reads them with a selector; each decoded event is handed to
the loop's ``sink`` as a :class:`LocalEvent` together with the peer's credentials (SO_PEERCRED),
so the loop can attribute it. A connection that sends an oversized frame is closed (its length
prefix can no longer be trusted); a frame that is malformed but well-sized is skipped and
counted.

What an application may send is an allow-list: the event's name (``anomaly``, or
``app.anomaly``) must be in ``allow``, and it reaches the backend as ``app.<name>``, so no
application can send an agent event (``model.rejected``, ``attest.request``: any member of the
socket's group could otherwise make the backend act). Events beyond ``rate`` per second are
refused here. Every frame is answered (:func:`edgeward.core.frames.ack_frame` or
``refused_frame``), so a sender learns when its event was not taken.

Connections cannot hold the socket: one idle (no complete frame) for ``idle_timeout`` seconds
is closed, and when ``max_clients`` are connected a newcomer takes the place of the longest
idle one, so idle connections cannot keep the guard from reporting.

I/O: the socket file (mode ``mode``, stale file replaced) and its connections. No decisions
about the events are made here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError, MalformedInputError
from edgeward.core.frames import FrameDecoder, ack_frame, refused_frame
from edgeward.core.limits import DEFAULT_LIMITS, Limits

from .ratelimit import TokenBucket

logger = logging.getLogger(__name__)

DEFAULT_ALLOW = ("anomaly", "alarm", "tamper")
"""Event names applications may send by default (the inference guard sends ``anomaly``)."""
APP_PREFIX = "app."
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


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
    refused_type: int = 0
    rate_limited: int = 0
    closed_idle: int = 0
    evicted_idle: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _peercred(conn: socket.socket) -> tuple[int, int]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        return pid, uid
    except OSError:
        return -1, -1


def app_type(requested: str, allow: Collection[str]) -> str | None:
    """The backend type of an application's event (``app.<name>``), or None if not allowed."""
    name = requested[len(APP_PREFIX):] if requested.startswith(APP_PREFIX) else requested
    if not _NAME.fullmatch(name) or name not in allow:
        return None
    return APP_PREFIX + name


@dataclass
class _Client:
    decoder: FrameDecoder
    pid: int
    uid: int
    last_active: float


class LocalSocketServer:
    def __init__(
        self,
        path: Path,
        sink: Callable[[LocalEvent], None],
        *,
        mode: int = 0o660,
        max_clients: int = 8,
        limits: Limits = DEFAULT_LIMITS,
        allow: Collection[str] = DEFAULT_ALLOW,
        rate: float = 50.0,
        idle_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._sink = sink
        self._mode = mode
        self._max_clients = max_clients
        self._limits = limits
        self._allow = frozenset(allow)
        self._bucket = TokenBucket(rate, burst=max(10.0, rate))
        self._idle = idle_timeout
        self._clock = clock
        self.stats = LocalStats()
        self._sel = selectors.DefaultSelector()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._server: socket.socket | None = None
        self._clients: dict[socket.socket, _Client] = {}

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
            for key, _ in self._sel.select(timeout=min(1.0, self._idle / 4)):
                if key.data == "stop":
                    return
                if key.data == "accept":
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            self._close_idle()

    def _close_idle(self) -> None:
        cutoff = self._clock() - self._idle
        for conn, c in list(self._clients.items()):
            if c.last_active < cutoff:
                self.stats.closed_idle += 1
                logger.info("local socket: closing client pid %d, idle %.0f s", c.pid, self._idle)
                self._drop(conn)

    def _accept(self) -> None:
        assert self._server is not None
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        if len(self._clients) >= self._max_clients:
            # The newcomer takes the place of the longest idle connection: connections that
            # send nothing cannot keep an application with an event to send out.
            oldest = min(self._clients, key=lambda k: self._clients[k].last_active)
            self.stats.evicted_idle += 1
            logger.warning("local socket: %d clients connected; closing the longest idle (pid "
                           "%d) for a new one", self._max_clients, self._clients[oldest].pid)
            self._drop(oldest)
        conn.setblocking(False)
        pid, uid = _peercred(conn)
        self._clients[conn] = _Client(FrameDecoder(limits=self._limits), pid, uid, self._clock())
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
        c = self._clients[conn]
        dec, pid, uid = c.decoder, c.pid, c.uid
        try:
            frames = dec.feed_each(data)
        except MalformedInputError as e:
            self.stats.closed_oversized += 1
            logger.warning("local socket: closing client pid %d: %s", pid, e)
            self._drop(conn)
            return
        replies = []
        for ev, error in frames:
            c.last_active = self._clock()
            if ev is None:
                self.stats.malformed += 1
                logger.warning("local socket: malformed frame from pid %d: %s", pid, error)
                replies.append(refused_frame(f"malformed frame: {error}"))
                continue
            typ = app_type(ev["type"], self._allow)
            if typ is None:
                self.stats.refused_type += 1
                logger.warning("local socket: pid %d uid %d sent type %r, which applications may "
                               "not send", pid, uid, ev["type"][:80])
                replies.append(refused_frame(
                    f"type {ev['type'][:80]!r} is not one applications may send "
                    f"(allowed: {', '.join(sorted(self._allow))})"))
                continue
            if not self._bucket.take(self._clock()):
                self.stats.rate_limited += 1
                replies.append(refused_frame("rate limit: too many events; send fewer"))
                continue
            self.stats.events += 1
            self._sink(LocalEvent(typ, float(ev.get("ts", 0)), ev.get("body", {}), pid, uid))
            replies.append(ack_frame())
        if replies:
            try:
                conn.sendall(b"".join(replies))
            except (BlockingIOError, OSError):
                # a client that does not read its replies (or left) loses the connection
                self._drop(conn)
