"""The guard's event client: frames to the agent's local Unix stream socket, buffered when away.

Events are encoded with :func:`edgeward.core.frames.encode_frame` and written to a Unix stream
socket at a path the device maker gives. When the agent is not there (not started, restarting),
events wait in a bounded in-memory buffer and go out, oldest first, on the next successful
connect. When the buffer is full, the oldest ``info`` event is dropped first, then the oldest
``warning``, and a ``critical`` event only for a newer critical one; drops are counted and
reported to the agent in the next event that gets through (``body.dropped``).

Connect attempts are spaced by ``retry_s`` (on the injected clock) so a missing agent costs one
failed ``connect()`` per interval, not one per inference; writes use a short timeout so a stuck
agent cannot stall inference for long. This module is the guard's only socket I/O.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgeward.core.frames import encode_frame

logger = logging.getLogger(__name__)

_DROP_ORDER = ("info", "warning", "critical")


class AgentLink:
    """Send event maps to the agent; buffer up to ``max_buffer`` while it is unreachable."""

    def __init__(
        self,
        path: str,
        *,
        max_buffer: int = 256,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.path = path
        self.max_buffer = max_buffer
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._clock = clock
        self._sock: socket.socket | None = None
        self._next_try = float("-inf")
        self._buf: deque[dict[str, Any]] = deque()
        self.dropped = 0  # total, since start
        self._unreported_drops = 0
        self.sent = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` and try to deliver everything queued; True if the queue is empty."""
        if len(self._buf) >= self.max_buffer:
            self._evict(event)
        else:
            self._buf.append(event)
        return self.flush()

    def flush(self) -> bool:
        if not self._buf:
            return True
        if self._sock is None and not self._connect():
            return False
        while self._buf:
            event = self._buf[0]
            if self._unreported_drops:
                event = {
                    **event,
                    "body": {**event.get("body", {}), "dropped": self._unreported_drops},
                }
            try:
                frame = encode_frame(event)
            except (ValueError, TypeError) as e:  # our bug or an oversized event: never retry it
                logger.error("guard event not encodable, dropped: %s", e)
                self._buf.popleft()
                self.dropped += 1
                continue
            try:
                assert self._sock is not None
                self._sock.sendall(frame)
            except OSError as e:
                logger.info("agent link lost (%s); %d events buffered", e, len(self._buf))
                self._close()
                return False
            self._buf.popleft()
            self._unreported_drops = 0
            self.sent += 1
        return True

    def close(self) -> None:
        self._close()

    def _connect(self) -> bool:
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout_s)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            logger.debug("agent socket %s unavailable: %s", self.path, e)
            return False
        self._sock = s
        logger.info("connected to agent at %s", self.path)
        return True

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _evict(self, incoming: dict[str, Any]) -> None:
        """Make room for ``incoming``: drop the oldest event of the lowest severity present."""
        sev_in = incoming.get("body", {}).get("severity", "info")
        for sev in _DROP_ORDER:
            if _DROP_ORDER.index(sev) > _DROP_ORDER.index(sev_in):
                break  # everything buffered is more severe than the newcomer: drop the newcomer
            for i, ev in enumerate(self._buf):
                if ev.get("body", {}).get("severity", "info") == sev:
                    del self._buf[i]
                    self._buf.append(incoming)
                    self._count_drop()
                    return
        self._count_drop()

    def _count_drop(self) -> None:
        self.dropped += 1
        self._unreported_drops += 1
