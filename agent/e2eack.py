"""End-to-end acknowledgements (topic ``ack``, backend -> device): build and check.

The backend publishes, per device, the highest seq up to which it holds every message (stored,
or named in an ``outbox.dropped`` report): ``upto``. The device then deletes every message with
``seq <= upto`` from its outbox. Only then, not at the broker's PUBACK, is a message safe: a
broker killed (SIGKILL, power loss) after its PUBACK but before it forwarded or saved the
message would otherwise lose it.

An ack makes the device delete data, so it is signed like a command: a COSE_Sign1 (RFC 9052
§4.2) with the backend's command key, content type :data:`CONTENT_TYPE`, payload the CBOR map
``{v: 1, device, upto, ts}`` (docs/protocol.cddl ``ew-ack-payload``). The device accepts one only
if the signature verifies with a key in ``[commands] trust``, the content type is this one (a
signed command is not an ack), and ``device`` is this device; the outbox then refuses an
``upto`` beyond what the broker ever acknowledged (:func:`.outbox_rules.ack_verdict`). A replayed
older ack is harmless (``upto`` only moves forward), so there is no expiry: device clocks may be
wrong, and the retained ack must stay valid while the device is offline.

Pure: bytes, keys and limits in; an :class:`Ack` out, or an error of the edgeward tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeward.core import cbor
from edgeward.core.cose import sign1, verify1
from edgeward.core.errors import MalformedInputError, ReplayError, SignatureError
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

CONTENT_TYPE = "application/vnd.edgeward.ack+cbor"
MAX_ACK_BYTES = 512  # a signed ack is about 150 bytes


@dataclass(frozen=True)
class Ack:
    device: str
    upto: int
    ts: float


def make_ack(key: SigningKey, device: str, upto: int, *, now: float) -> bytes:
    """Sign an ack (backend side)."""
    if upto < 0:
        raise ValueError("upto must be >= 0")
    payload = cbor.dumps({"v": 1, "device": device, "upto": upto, "ts": now})
    return sign1(payload, key, content_type=CONTENT_TYPE)


def _parse(payload: bytes, limits: Limits) -> Ack:
    m: Any = cbor.loads(payload, limits=limits)
    if not isinstance(m, dict) or set(m) != {"v", "device", "upto", "ts"} or m["v"] != 1:
        raise MalformedInputError("ack payload is not {v: 1, device, upto, ts}")
    upto, ts = m["upto"], m["ts"]
    if isinstance(upto, bool) or not isinstance(upto, int) or not 0 <= upto < 2**63:
        raise MalformedInputError("ack upto is not an integer in 0..2**63-1")
    if not isinstance(m["device"], str):
        raise MalformedInputError("ack device is not text")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise MalformedInputError("ack ts is not a number")
    return Ack(m["device"], upto, float(ts))


def check_ack(
    data: bytes,
    device: str,
    trust: TrustStore | VerifyingKey | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Ack:
    """Verify one ack for ``device``; raises SignatureError, MalformedInputError or ReplayError."""
    if len(data) > MAX_ACK_BYTES:
        raise MalformedInputError(f"ack of {len(data)} bytes is over {MAX_ACK_BYTES}")
    if trust is None:
        raise SignatureError("no [commands] trust is configured; acks cannot be checked")
    try:
        msg = verify1(data, trust, limits=limits)
    except MalformedInputError as e:
        raise SignatureError(f"ack is not a valid COSE_Sign1 ({e})") from e
    if msg.content_type != CONTENT_TYPE:
        raise SignatureError(f"signed message of content type {msg.content_type!r} is not an ack")
    ack = _parse(msg.payload, limits)
    if ack.device != device:
        raise ReplayError(f"ack for device '{ack.device}' sent to '{device}'")
    return ack
