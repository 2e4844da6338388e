"""The guard's event client: frames to the agent's local Unix stream socket, buffered when away.

Events are encoded with :func:`edgeward.core.frames.encode_frame` and written to a Unix stream
socket at a path the device maker gives. When the agent is not there (not started, restarting),
events wait in a bounded in-memory buffer and go out, oldest first, on the next successful
connect. When the buffer is full, the oldest ``info`` event is dropped first, then the oldest
``warning``, and a ``critical`` event only for a newer critical one; drops are counted and
reported to the agent in the next event that gets through (``body.dropped``).

The agent answers every frame (:func:`edgeward.core.frames.reply_of`). An event leaves the
buffer only when the agent says it took it. An event the agent refuses (a type applications may
not send, malformed) is dropped, counted in :attr:`refused` and logged as an error with the
agent's reason (:attr:`last_refusal`): retrying it cannot help. A refusal for the rate limit
keeps the event buffered for the next flush. No reply within ``timeout_s`` (the agent is stuck,
or closed the connection as idle) counts as not delivered: the event stays buffered and is sent
again on a new connection (at least once; the agent may see a duplicate).

Connect attempts are spaced by ``retry_s`` (on the injected clock) so a missing agent costs one
failed ``connect()`` per interval, not one per inference; writes and replies use a short
timeout so a stuck agent cannot stall inference for long. This module is the guard's only
socket I/O.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgeward.core.errors import MalformedInputError
from edgeward.core.frames import FrameDecoder, encode_frame, reply_of

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
        self.refused = 0  # events the agent did not take (dropped; see last_refusal)
        self.last_refusal: str | None = None
        self.unconfirmed = 0  # sends the agent did not answer (the event stays buffered)
        self._replies = FrameDecoder()

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
        """Deliver what is buffered; True when nothing is left (taken or refused)."""
        if not self._buf:
            return True
        if self._sock is None and not self._connect():
            return False
        reconnected = False
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
                taken, reason, retry = self._reply()
            except (OSError, MalformedInputError) as e:
                self._close()
                # The agent closes idle connections: one new connection, at once, then give up.
                if not reconnected and isinstance(e, BrokenPipeError | ConnectionResetError):
                    reconnected = True
                    self._next_try = float("-inf")
                    if self._connect():
                        continue
                self.unconfirmed += 1
                logger.warning("agent did not confirm a guard event (%s); %d buffered", e,
                               len(self._buf))
                return False
            if not taken and retry:
                logger.warning("agent deferred a guard event: %s", reason)
                return False
            self._buf.popleft()
            self._unreported_drops = 0
            if taken:
                self.sent += 1
            else:
                self.refused += 1
                self.last_refusal = reason
                logger.error("agent refused a guard event (type %r): %s",
                             str(event.get("type"))[:40], reason)
        return True

    def _reply(self) -> tuple[bool, str, bool]:
        """The agent's answer to the frame just sent: (taken, reason, worth retrying)."""
        assert self._sock is not None
        while True:
            got = self._replies.feed_each(b"")
            if not got:
                data = self._sock.recv(4096)
                if not data:
                    raise ConnectionResetError("the agent closed the connection")
                got = self._replies.feed_each(data)
            if got:
                break
        ev, error = got[0]
        if ev is None or len(got) > 1:
            raise MalformedInputError(error or "more than one reply to one event")
        taken, reason = reply_of(ev)
        return taken, reason, reason.startswith("rate limit")

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
        self._replies = FrameDecoder()
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
