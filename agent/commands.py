"""Signed commands from the backend (topic ``cmd``): build, check, and remember the last seq.

A command is a COSE_Sign1 (RFC 9052 §4.2) made with the backend's command key; its payload is
the CBOR map ``{device, seq, iat, exp, op, args}`` (docs/protocol.cddl ``command``). The device
accepts it only if

1. the signature verifies with a key in the device's command trust store (so a broker that is
   compromised, or another device, cannot command it), and the signed content type is
   :data:`CONTENT_TYPE` (no other signed object, an EAR or an ack, passes as a command);
2. ``device`` is this device (a command for B replayed to A is refused);
3. ``iat`` and ``exp`` are finite numbers, ``iat - max_skew <= now <= exp`` and the lifetime
   ``exp - iat`` is at most :data:`MAX_LIFETIME`;
4. ``seq`` is greater than the last accepted seq (replay);
5. ``op`` is known and its ``args`` are valid.

Anything else raises a member of the error tree (IntegrityError family, or ReplayError /
FreshnessError) and the loop sends a ``command.refused`` event naming :func:`refusal_reason`.

:class:`CommandGate` is pure (bytes and a clock in, a Command out). The only I/O is
:func:`load_last_seq` / :func:`save_last_seq` (atomic write: temp file, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core import cbor
from edgeward.core.cose import sign1, verify1
from edgeward.core.errors import (
    EdgewardError,
    FreshnessError,
    MalformedInputError,
    PolicyError,
    ReplayError,
    SignatureError,
)
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

MAX_LIFETIME = 24 * 3600.0
CONTENT_TYPE = "application/vnd.edgeward.command+cbor"

OPS: dict[str, tuple[str, ...]] = {
    "attest": (),
    "reverify": (),
    "set_interval": ("seconds",),
}
MIN_INTERVAL, MAX_INTERVAL = 1.0, 86400.0


@dataclass(frozen=True)
class Command:
    device: str
    seq: int
    iat: float
    exp: float
    op: str
    args: dict[str, Any] = field(default_factory=dict)


class UnknownCommandError(PolicyError):
    """A signed, fresh command whose op or arguments this agent does not know."""


def make_command(
    key: SigningKey,
    device: str,
    seq: int,
    op: str,
    args: dict[str, Any] | None = None,
    *,
    now: float,
    ttl: float = 60.0,
) -> bytes:
    """Sign a command (backend side)."""
    payload = cbor.dumps(
        {"device": device, "seq": seq, "iat": now, "exp": now + ttl, "op": op, "args": args or {}}
    )
    return sign1(payload, key, content_type=CONTENT_TYPE)


def _number(m: dict[str, Any], k: str) -> float:
    v = m.get(k)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise MalformedInputError(f"command field '{k}' is not a finite number")
    return float(v)


def parse_payload(payload: bytes, limits: Limits) -> Command:
    m = cbor.loads(payload, limits=limits)
    if not isinstance(m, dict) or set(m) != {"device", "seq", "iat", "exp", "op", "args"}:
        raise MalformedInputError("command payload is not {device, seq, iat, exp, op, args}")
    seq = m["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise MalformedInputError("command seq is not an integer in 1..2**63-1")
    if not isinstance(m["device"], str) or not isinstance(m["op"], str):
        raise MalformedInputError("command device and op must be text")
    if not isinstance(m["args"], dict):
        raise MalformedInputError("command args is not a map")
    return Command(m["device"], seq, _number(m, "iat"), _number(m, "exp"), m["op"], m["args"])


def check_args(cmd: Command) -> None:
    known = OPS.get(cmd.op)
    if known is None:
        raise UnknownCommandError(f"command op '{cmd.op}' is not known")
    if set(cmd.args) != set(known):
        raise UnknownCommandError(f"command '{cmd.op}' takes {list(known)}, got {list(cmd.args)}")
    if cmd.op == "set_interval":
        s = cmd.args["seconds"]
        if isinstance(s, bool) or not isinstance(s, int | float) or not (
            MIN_INTERVAL <= s <= MAX_INTERVAL
        ):
            raise UnknownCommandError(
                f"set_interval seconds must be {MIN_INTERVAL}..{MAX_INTERVAL}, got {s!r}"
            )


class CommandGate:
    """Checks commands for one device. Pure: the caller passes ``now`` and persists ``last_seq``."""

    def __init__(
        self,
        device: str,
        trust: TrustStore | VerifyingKey | None,
        *,
        last_seq: int = 0,
        max_skew: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.device = device
        self.trust = trust
        self.last_seq = last_seq
        self.max_skew = max_skew
        self.limits = limits

    def check(self, data: bytes, now: float) -> Command:
        """Verify and accept one command; raises on refusal, advances ``last_seq`` on success."""
        if len(data) > self.limits.max_cbor_bytes:
            raise MalformedInputError(f"command of {len(data)} bytes is over the limit")
        if self.trust is None:
            raise SignatureError("no command trust store is configured; commands are refused")
        try:
            msg = verify1(data, self.trust, limits=self.limits)
        except MalformedInputError as e:
            raise SignatureError(f"command is not a valid COSE_Sign1 ({e})") from e
        if msg.content_type != CONTENT_TYPE:  # another signed object (an EAR, an ack, ...)
            raise SignatureError(f"signed object of content type {msg.content_type!r} is not a "
                                 "command")
        cmd = parse_payload(msg.payload, self.limits)
        if cmd.device != self.device:
            raise ReplayError(f"command for device '{cmd.device}' sent to '{self.device}'")
        if cmd.exp - cmd.iat > MAX_LIFETIME or cmd.exp < cmd.iat:
            raise FreshnessError(f"command lifetime {cmd.exp - cmd.iat:.0f}s is not allowed")
        if now > cmd.exp:
            raise FreshnessError(f"command {cmd.seq} expired {now - cmd.exp:.1f}s ago")
        if cmd.iat > now + self.max_skew:
            raise FreshnessError(f"command {cmd.seq} is issued in the future")
        if cmd.seq <= self.last_seq:
            raise ReplayError(f"command seq {cmd.seq} is not above the last one {self.last_seq}")
        check_args(cmd)
        self.last_seq = cmd.seq
        return cmd


def refusal_reason(err: EdgewardError) -> str:
    """The reason code of a ``command.refused`` event."""
    if isinstance(err, UnknownCommandError):
        return "unknown"
    if isinstance(err, ReplayError):
        return "replayed"
    if isinstance(err, FreshnessError):
        return "expired"
    if isinstance(err, SignatureError):
        return "unsigned"
    if isinstance(err, MalformedInputError):
        return "malformed"
    return "refused"


def load_last_seq(path: Path) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def save_last_seq(path: Path, seq: int) -> None:
    """Persist atomically: a replayed command must stay refused across restarts and power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{seq}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
