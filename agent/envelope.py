"""The report/event envelope and the MQTT topic tree (DESIGN.md, "Wire formats", "MQTT topics").

Every message a device sends on ``report``, ``event`` or ``attest/evidence`` is one CBOR map
``{v, seq, ts, device, type, body}`` (schema in ``docs/protocol.cddl``). ``seq`` is assigned by
the durable outbox, per device, without gaps, so a receiver that sees ``seq`` jump knows
exactly how many messages it did not get.

Pure: bytes in, objects out. No I/O. Untrusted bytes are decoded only through the bounded
reader :func:`edgeward.core.cbor.loads`.
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import cbor2

from edgeward.core.cbor import TSTR, UINT, dumps, loads
from edgeward.core.cbor import head as cbor_head
from edgeward.core.errors import ConfigError, MalformedInputError
from edgeward.core.limits import DEFAULT_LIMITS, Limits

VERSION = 1
PREFIX = "edgeward/v1"

# topic kinds: (suffix, direction) - "up" is device -> backend, "down" backend -> device
KINDS: dict[str, str] = {
    "status": "up",
    "report": "up",
    "event": "up",
    "attest/evidence": "up",
    "attest/challenge": "down",
    "attest/result": "down",
    "cmd": "down",
    "ack": "down",  # the backend's signed end-to-end acknowledgement (agent/e2eack.py)
}
# backend -> every device, retained: a verifier worker has (re)subscribed; a device hearing it
# live sends again what the backend has not acknowledged (agent/delivery.py). '@' is in no
# device id, so no device's topics can overlap it.
BACKEND_ONLINE = f"{PREFIX}/@backend/online"

# \Z, not $: "$" also matches before a final newline, so "lock-0001\n" would pass.
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")

# Priorities used by the outbox's eviction rule: lower is evicted first.
PRIORITY_METRICS = 0
PRIORITY_EVIDENCE = 1
PRIORITY_SECURITY = 2
PRIORITIES = (PRIORITY_SECURITY, PRIORITY_EVIDENCE, PRIORITY_METRICS)  # sending order


def valid_type(type_: str) -> bool:
    """An envelope type: lower-case dotted name, 1..64 chars (``model.rejected``)."""
    return bool(_TYPE_RE.match(type_))


def check_device_id(device: str) -> str:
    """A device id is one topic level: letters, digits, ``.``, ``_``, ``-``; 1..64 chars.

    No ``/``, ``+``, ``#`` or ``$``, so a device id can never widen a topic or an ACL pattern.
    """
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(
            f"device id {device!r} is not valid",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return device


def topic(device: str, kind: str) -> str:
    """The topic of ``kind`` for ``device``: ``edgeward/v1/<device>/<kind>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{PREFIX}/{check_device_id(device)}/{kind}"


def parse_topic(name: str) -> tuple[str, str]:
    """Split a topic into ``(device, kind)``; raise MalformedInputError for a foreign topic."""
    parts = name.split("/", 3)
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise MalformedInputError(f"topic {name!r} is not under {PREFIX}/")
    device, kind = parts[2], parts[3]
    if not _DEVICE_RE.match(device) or kind not in KINDS:
        raise MalformedInputError(f"topic {name!r} has no valid device and kind")
    return device, kind


@dataclass(frozen=True)
class Envelope:
    """One report or event as it travels: ``{v, seq, ts, device, type, body}``."""

    seq: int
    ts: float
    device: str
    type: str
    body: dict[str, Any] = field(default_factory=dict)
    v: int = VERSION

    def to_map(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "seq": self.seq,
            "ts": self.ts,
            "device": self.device,
            "type": self.type,
            "body": self.body,
        }


def encode(env: Envelope) -> bytes:
    """Canonical CBOR of the envelope (definite lengths, shortest forms, sorted keys).

    Encoded with cbor2's C encoder (``canonical=True``, RFC 7049 §3.9 key order), about twice as
    fast as :func:`edgeward.core.cbor.dumps` on the agent's hot path. For text keys, which is
    all the envelope and its bodies use, that order is the RFC 8949 §4.2.1 bytewise order too;
    the two differ only for maps that mix integer keys of different signs. Envelopes are not
    signed, so nothing depends on that difference. Decoding stays bounded (:func:`decode`).
    """
    return encode_fields(env.seq, env.ts, env.device, env.type, env.body, v=env.v)


def encode_fields(seq: int, ts: float, device: str, type_: str, body: dict[str, Any], *,
                  v: int = VERSION) -> bytes:
    """``encode(Envelope(seq, ts, device, type_, body))``, without making the Envelope."""
    if not _TYPE_RE.match(type_):
        raise ValueError(f"envelope type {type_!r} is not valid")
    if seq < 1:
        raise ValueError("seq starts at 1")
    try:
        return _encode_fast(v, seq, ts, device, type_, body)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        # the reference encoder gives the precise error
        return dumps(Envelope(seq=seq, ts=ts, device=device, type=type_, body=body, v=v).to_map())


# The envelope's six text keys in cbor2's canonical order (length first, then bytewise):
# v, ts, seq, body, type, device. The map is assembled from pieces, byte for byte what
# ``cbor2.dumps(env.to_map(), canonical=True)`` gives (tests/agent/test_hotpath.py), without
# sorting the fixed keys for every message: the head (v, ts) is shared by all messages of one
# batch and the tail (type, device) by all messages of one type, so both are cached; only the
# body goes through cbor2, with one encoder per thread writing into a reused buffer (setting up
# an encoder costs about as much as encoding the body).
_heads: dict[tuple[int, type, float], bytes] = {}
_tails: dict[tuple[str, str], bytes] = {}
_local = threading.local()


def _head(v: int, ts: float) -> bytes:
    cache = bool(ts) and ts == ts  # not for 0.0 == -0.0 nor NaN != NaN: they encode differently
    key = (v, ts.__class__, ts)
    head = _heads.get(key) if cache else None
    if head is None:
        head = b"".join((b"\xa6\x61v", cbor_head(UINT, v), b"\x62ts",
                         cbor2.dumps(ts, canonical=True), b"\x63seq"))
        if cache:
            if len(_heads) >= 16:
                _heads.clear()
            _heads[key] = head
    return head


def _tail(type_: str, device: str) -> bytes:
    tail = _tails.get((type_, device))
    if tail is None:
        t = type_.encode()  # ASCII, at most 65 bytes (checked by _TYPE_RE)
        tail = b"".join((b"\x64type", cbor_head(TSTR, len(t)), t, b"\x66device",
                         cbor2.dumps(device, canonical=True)))
        if len(_tails) >= 256:
            _tails.clear()
        _tails[(type_, device)] = tail
    return tail


def _encode_fast(v: int, seq: int, ts: float, device: str, type_: str,
                 body: dict[str, Any]) -> bytes:
    if (v.__class__ is not int or v < 0 or seq.__class__ is not int
            or type_.__class__ is not str or device.__class__ is not str):
        env = Envelope(seq=seq, ts=ts, device=device, type=type_, body=body, v=v)
        return cbor2.dumps(env.to_map(), canonical=True)
    pair = getattr(_local, "pair", None)
    if pair is None:
        buf = io.BytesIO()
        pair = _local.pair = (buf, cbor2.CBOREncoder(buf, canonical=True))
    buf, enc = pair
    buf.seek(0)
    buf.truncate()
    try:
        enc.encode(body)
    except BaseException:
        _local.pair = None  # a fresh encoder next time, whatever state this one was left in
        raise
    return b"".join((_head(v, ts), cbor_head(UINT, seq), b"\x64body", buf.getvalue(),
                     _tail(type_, device)))


def decode(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode and check untrusted envelope bytes; MalformedInputError on anything wrong."""
    obj = loads(data, limits=limits)
    if not isinstance(obj, dict):
        raise MalformedInputError("envelope is not a CBOR map")
    keys = {"v", "seq", "ts", "device", "type", "body"}
    if set(obj) != keys:
        raise MalformedInputError(f"envelope keys are {sorted(map(str, obj))}, not {sorted(keys)}")
    v, seq, ts = obj["v"], obj["seq"], obj["ts"]
    if v != VERSION or isinstance(v, bool):
        raise MalformedInputError(f"envelope version {v!r} is not supported")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63:
        raise MalformedInputError("envelope seq is not an integer in 1..2**63-1")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise MalformedInputError("envelope ts is not a number")
    device, typ, body = obj["device"], obj["type"], obj["body"]
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise MalformedInputError("envelope device is not a valid device id")
    if not isinstance(typ, str) or not _TYPE_RE.match(typ):
        raise MalformedInputError("envelope type is not valid")
    if not isinstance(body, dict):
        raise MalformedInputError("envelope body is not a map")
    return Envelope(seq=seq, ts=float(ts), device=device, type=typ, body=body)
