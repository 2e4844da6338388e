"""What the agent's loop hears from its edges: small frozen events, no I/O, no paho.

The MQTT transport (:mod:`.transport`, the only module that imports paho) turns paho's callbacks
into these and hands them to a sink (the loop's queue); the loop, the delivery core
(:mod:`.delivery`) and the verifier service read them without importing the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeward.core.errors import TransportError


@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Acked:
    """The broker's PUBACK (MQTT v5 §3.4) for the message the transport numbered ``mid``."""

    mid: int
    ok: bool
    reason: str


@dataclass(frozen=True)
class AcksReady:
    """PUBACKs are waiting in the transport's ``take_acks()`` (``batch_acks`` mode)."""


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    mid: int = 0
    qos: int = 0
    conn: int = 0  # connection generation, so a late ack() never goes to a newer connection


@dataclass(frozen=True)
class ConnectFailed:
    """The transport gave up: the first connection failed for a reason retrying cannot fix (a
    certificate, a refused name) or, with ``once``, for any reason. ``message`` is one line
    saying what failed and what to do; the daemon stops with exit 3."""

    message: str


@dataclass(frozen=True)
class Wake:
    """Wakes the loop (stop or reload asked from another thread)."""

    reason: str


class PayloadTooLargeError(TransportError):
    """The broker announced a Maximum Packet Size (MQTT v5 §3.2.2.3.6) this message exceeds."""
