"""Length-prefixed CBOR frames for the agent's local Unix socket.

Applications on the device (the inference guard, a lock's firmware bridge) send events to the
agent over a Unix stream socket. Each frame is a 4-byte big-endian length followed by that many
bytes of CBOR, a map ``{"type": str, "ts": float, "body": map}``. Frames are bounded
(:data:`MAX_FRAME`) and decoded with the bounded CBOR reader.

The agent answers every frame, in order, with a reply frame: ``{"type": "ack"}`` when the event
was taken, ``{"type": "refused", "body": {"reason": str}}`` when it was not (a type the agent
does not take from applications, over the rate limit, malformed). A client therefore learns
whether each event got through (:func:`reply_of`).

Pure: bytes in, events out. The socket ends live in ``edgeward.agent`` (server) and
``edgeward.models.guard`` (client).
"""

from __future__ import annotations

import struct
from typing import Any

from edgeward.core.errors import MalformedInputError
from edgeward.core.limits import DEFAULT_LIMITS, Limits

MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")


def encode_frame(event: dict[str, Any]) -> bytes:
    """Encode one event map as a frame; raises ValueError if it is larger than MAX_FRAME."""
    from edgeward.core.cbor import dumps

    payload = dumps(event)
    if len(payload) > MAX_FRAME:
        raise ValueError(f"event of {len(payload)} bytes is larger than {MAX_FRAME}")
    return _HEADER.pack(len(payload)) + payload


ACK = "ack"
REFUSED = "refused"


def ack_frame() -> bytes:
    """The agent's reply to an event it took."""
    return encode_frame({"type": ACK})


def refused_frame(reason: str) -> bytes:
    """The agent's reply to an event it did not take, and why (one line, bounded)."""
    return encode_frame({"type": REFUSED, "body": {"reason": reason[:200]}})


def reply_of(event: dict[str, Any]) -> tuple[bool, str]:
    """``(taken, reason)`` of a reply frame; a frame that is neither is a protocol error."""
    if event.get("type") == ACK:
        return True, ""
    if event.get("type") == REFUSED:
        reason = event.get("body", {}).get("reason")
        return False, reason if isinstance(reason, str) else "refused"
    raise MalformedInputError(f"reply frame has type {str(event.get('type'))[:40]!r}")


def _check_event(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MalformedInputError("frame is not a CBOR map")
    if not isinstance(obj.get("type"), str) or not obj["type"]:
        raise MalformedInputError("frame has no text 'type'")
    if not isinstance(obj.get("body", {}), dict):
        raise MalformedInputError("frame 'body' is not a map")
    ts = obj.get("ts", 0)
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise MalformedInputError("frame 'ts' is not a number")
    return obj


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the complete events received so far.

    A frame that is oversized poisons the stream (the length prefix can no longer be trusted)
    and raises :class:`MalformedInputError`; the caller closes that connection. A frame that is
    well-sized but not a valid event is skipped and its reason appended to :attr:`rejected`, so
    the caller can count it and go on without losing the good frames around it.
    """

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._limits = limits
        self._max = max_frame
        self.rejected: list[str] = []

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        events = []
        for ev, error in self.feed_each(data):
            if ev is None:
                self.rejected.append(error)
            else:
                events.append(ev)
        return events

    def feed_each(self, data: bytes) -> list[tuple[dict[str, Any] | None, str]]:
        """Every complete frame so far, in order: ``(event, "")`` or ``(None, reason)``."""
        from edgeward.core.cbor import loads

        self._buf += data
        out: list[tuple[dict[str, Any] | None, str]] = []
        while len(self._buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self._buf)
            if n == 0 or n > self._max:
                raise MalformedInputError(f"frame length {n} is outside 1..{self._max}")
            if len(self._buf) < _HEADER.size + n:
                break
            payload = bytes(self._buf[_HEADER.size : _HEADER.size + n])
            del self._buf[: _HEADER.size + n]
            try:
                out.append((_check_event(loads(payload, limits=self._limits)), ""))
            except MalformedInputError as e:
                out.append((None, str(e)))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
