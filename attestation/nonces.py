"""Challenge sessions: fresh nonces bound to one device, single use, with an expiry. Pure.

The verifier's freshness mechanism is the nonce-based one of RFC 9334 §10.2: the Verifier sends a
nonce, the Attester puts it in ``eat_nonce`` (RFC 9711 §4.1), and the Verifier accepts it once,
from the device it was issued to, before it expires. Nonces are at least 16 bytes from a CSPRNG
(RFC 9711 §4.1 requires at least 64 bits; 128 is used here), default 32 bytes, default expiry
60 s. The clock and the random source are injected, so this module does no I/O; the sessions
themselves are kept by :mod:`edgeward.attestation.service.verifier_store`.

Verdicts are :class:`~edgeward.core.errors.FreshnessError` (never issued, expired, other
device) and :class:`~edgeward.core.errors.ReplayError` (already used).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from edgeward.core.errors import FreshnessError, ReplayError

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64  # RFC 9711 §4.1: eat_nonce is 8..64 bytes


@dataclass(frozen=True)
class Session:
    """One challenge: the nonce, the device it was issued to, and its lifetime."""

    nonce: bytes
    device: str
    issued: float
    expires: float
    used_at: float | None = None


class NoncePolicy:
    """Issues and checks challenge sessions with an injected clock and random source."""

    def __init__(
        self,
        *,
        ttl: float = 60.0,
        nonce_bytes: int = 32,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not MIN_NONCE_BYTES <= nonce_bytes <= MAX_NONCE_BYTES:
            raise ValueError(f"nonce_bytes must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES}")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.nonce_bytes = nonce_bytes
        self._rng = rng

    def issue(self, device: str, now: float) -> Session:
        if not device:
            raise ValueError("a challenge is bound to one device; pass its name")
        nonce = self._rng(self.nonce_bytes)
        if len(nonce) != self.nonce_bytes:
            raise RuntimeError("random source returned the wrong number of bytes")
        return Session(nonce=nonce, device=device, issued=now, expires=now + self.ttl)

    @staticmethod
    def check(session: Session | None, *, nonce: bytes, device: str, now: float) -> None:
        """Raise unless ``nonce`` is a live, unused challenge issued to ``device``."""
        shown = nonce.hex()[:16] if isinstance(nonce, bytes) else "?"
        if session is None:
            raise FreshnessError(f"nonce {shown} was never issued by this verifier")
        if session.used_at is not None:
            raise ReplayError(f"nonce {shown} was already used (replayed evidence)")
        if session.device != device:
            raise FreshnessError(
                f"nonce {shown} was issued to device '{session.device}', not '{device}'"
            )
        if now >= session.expires:
            raise FreshnessError(
                f"nonce {shown} expired {now - session.expires:.0f} s ago",
                hint="ask for a new challenge",
            )
        if now < session.issued - 5:
            raise FreshnessError(f"nonce {shown} was issued in the future (clock problem)")
