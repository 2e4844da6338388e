"""Attestation results: EAR (EAT Attestation Result) with the AR4SI vector, signed. Pure.

An :class:`Ear` is what the Verifier tells a Relying Party (RFC 9334 §3.3, §8.4). Its claims
set follows draft-ietf-rats-ear §3 with CBOR keys from :mod:`.claims`::

    { 265 eat_profile: "tag:github.com,2023:veraison/ear",
      6 iat: int, 10 eat_nonce: bstr (the challenge the evidence answered),
      1004 ear.verifier-id: {0 build: tstr, 1 developer: tstr},
      -70011 device: tstr,
      266 submods: { "edgeward-agent": {
          1000 ear.status: 0 / 2 / 32 / 96,
          1001 ear.trustworthiness-vector: {0 instance-identity: int, ... 7 sourced-data: int},
          1003 ear.appraisal-policy-id: tstr,
          -70010 reasons: [* tstr] } } }

It is signed by the verifier's key as a COSE_Sign1 (RFC 9052 §4.2) carrying the claims set as
its payload, that is a CWT (RFC 8392 §7). The status is the worst tier among the vector's claims
(AR4SI §2.3; claims with no value are ignored; all empty is "none").

:func:`check_ear` is the Relying Party's offline check (the passport model, RFC 9334 §5.1):
signature with the verifier's public key, then either the nonce it sent or a maximum age.
This module does no I/O.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from edgeward.attestation import claims as C
from edgeward.attestation.text import safe
from edgeward.core import cbor, cose
from edgeward.core.errors import FreshnessError, MalformedInputError, UnknownDeviceError
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

SUBMOD = "edgeward-agent"
VERIFIER_BUILD = "edgeward-verifier/0.1.0"
DEVELOPER = "edgeward"
MAX_CLOCK_SKEW = 30.0


@dataclass(frozen=True)
class TrustVector:
    """The AR4SI trustworthiness vector (draft-ietf-rats-ar4si §2.3); 0 means "no claim"."""

    instance_identity: int = C.NO_CLAIM
    configuration: int = C.NO_CLAIM
    executables: int = C.NO_CLAIM
    file_system: int = C.NO_CLAIM
    hardware: int = C.NO_CLAIM
    runtime_opaque: int = C.NO_CLAIM
    storage_opaque: int = C.NO_CLAIM
    sourced_data: int = C.NO_CLAIM

    def items(self) -> list[tuple[str, int]]:
        # the field names once (_VECTOR_FIELDS), not dataclasses.fields() per call: this runs
        # several times per appraisal
        return [(label, getattr(self, name)) for name, label in _VECTOR_FIELDS]

    def status(self) -> int:
        """The worst tier among the claims that have a value (EAR draft §3.2)."""
        tiers = [C.tier_of(v) for _n, v in self.items() if v != C.NO_CLAIM]
        return max(tiers) if tiers else C.TIER_NONE

    def to_cbor(self) -> dict[int, int]:
        return {C.VECTOR_KEYS[name]: v for name, v in self.items() if v != C.NO_CLAIM}

    @classmethod
    def from_cbor(cls, m: Any) -> TrustVector:
        if not isinstance(m, dict) or not all(isinstance(k, int) for k in m):
            raise MalformedInputError("EAR trustworthiness vector is not a map of claims")
        kw: dict[str, int] = {}
        for name, key in C.VECTOR_KEYS.items():
            v = m.get(key, C.NO_CLAIM)
            if isinstance(v, bool) or not isinstance(v, int) or not -128 <= v <= 127:
                raise MalformedInputError(f"EAR claim {name} is not an int8")
            kw[name.replace("-", "_")] = v
        return cls(**kw)


_VECTOR_FIELDS = tuple((f.name, f.name.replace("_", "-")) for f in fields(TrustVector))


@dataclass(frozen=True)
class SubmodResult:
    """The appraisal of one submodule (a lock's microcontroller, :mod:`.submods`): its own
    vector and reasons, an entry of its own in the EAR's ``submods`` next to the agent's."""

    name: str
    vector: TrustVector
    reasons: tuple[str, ...] = ()
    # The submodule's bootcount when its token was trustworthy: the verifier keeps the highest
    # (its store) so a rolled-back or replayed token is refused later. Not part of the EAR.
    bootcount: int | None = field(default=None, compare=False)

    @property
    def status(self) -> int:
        return self.vector.status()

    def to_cbor(self, policy_id: str) -> dict[int, Any]:
        return {C.EAR_STATUS: self.status, C.EAR_TRUST_VECTOR: self.vector.to_cbor(),
                C.EAR_POLICY_ID: policy_id, C.EW_REASONS: list(self.reasons)}


@dataclass(frozen=True)
class Ear:
    """One attestation result for one device (draft-ietf-rats-ear §3)."""

    vector: TrustVector
    iat: int
    device: str | None = None
    nonce: bytes | None = None
    reasons: tuple[str, ...] = ()
    policy_id: str = "edgeward/default"
    verifier_build: str = VERIFIER_BUILD
    status: int = field(default=-1)
    # Submodules appraised with the device (a lock's microcontroller); ``status`` is the worst
    # over the agent's vector and theirs, so a tampered lock makes the whole result fail.
    submods: tuple[SubmodResult, ...] = ()

    def __post_init__(self) -> None:
        if self.status == -1:
            object.__setattr__(self, "status", self.vector.status())
        if self.submods:
            object.__setattr__(self, "status",
                               max(self.status, *(s.status for s in self.submods)))

    @property
    def affirming(self) -> bool:
        return self.status == C.TIER_AFFIRMING

    @property
    def status_name(self) -> str:
        return C.TIER_NAMES.get(self.status, str(self.status))

    def to_claims(self) -> dict[int, Any]:
        sub: dict[int, Any] = {
            C.EAR_STATUS: self.vector.status() if self.submods else self.status,
            C.EAR_TRUST_VECTOR: self.vector.to_cbor(),
            C.EAR_POLICY_ID: self.policy_id,
            C.EW_REASONS: list(self.reasons),
        }
        out: dict[int, Any] = {
            C.EAT_PROFILE: C.EAR_PROFILE,
            C.IAT: self.iat,
            C.EAR_VERIFIER_ID: {0: self.verifier_build, 1: DEVELOPER},
            C.SUBMODS: {SUBMOD: sub, **{s.name: s.to_cbor(self.policy_id)
                                        for s in self.submods}},
        }
        if self.nonce is not None:
            out[C.EAT_NONCE] = self.nonce
        if self.device is not None:
            out[C.EW_EAR_DEVICE] = self.device
        return out

    @classmethod
    def from_claims(cls, m: Any) -> Ear:
        def bad(why: str) -> MalformedInputError:
            return MalformedInputError(f"EAR {why}")

        if not isinstance(m, dict):
            raise bad("claims set is not a map")
        if m.get(C.EAT_PROFILE) != C.EAR_PROFILE:
            raise bad("has the wrong eat_profile")
        iat = m.get(C.IAT)
        if isinstance(iat, bool) or not isinstance(iat, int):
            raise bad("iat is not an integer")
        subs = m.get(C.SUBMODS)
        if not isinstance(subs, dict) or not isinstance(subs.get(SUBMOD), dict):
            raise bad(f"has no '{SUBMOD}' submodule")
        sub = subs[SUBMOD]
        status = sub.get(C.EAR_STATUS)
        if status not in C.TIER_NAMES:
            raise bad("ear.status is not 0, 2, 32 or 96")
        reasons = sub.get(C.EW_REASONS, [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise bad("reasons are not a list of strings")
        nonce = m.get(C.EAT_NONCE)
        device = m.get(C.EW_EAR_DEVICE)
        vid = m.get(C.EAR_VERIFIER_ID, {})
        policy = sub.get(C.EAR_POLICY_ID, "")
        if nonce is not None and not isinstance(nonce, bytes):
            raise bad("eat_nonce is not a byte string")
        if device is not None and not isinstance(device, str):
            raise bad("device is not a string")
        if not isinstance(vid, dict) or not isinstance(policy, str):
            raise bad("verifier-id or policy id is malformed")
        others = []
        for name, entry in subs.items():
            if name == SUBMOD:
                continue
            if not isinstance(name, str) or not isinstance(entry, dict):
                raise bad("submods entry is not a named map")
            why = entry.get(C.EW_REASONS, [])
            if not isinstance(why, list) or not all(isinstance(r, str) for r in why):
                raise bad(f"reasons of submodule '{name}' are not a list of strings")
            others.append(SubmodResult(name, TrustVector.from_cbor(
                entry.get(C.EAR_TRUST_VECTOR, {})), tuple(why)))
        return cls(
            vector=TrustVector.from_cbor(sub.get(C.EAR_TRUST_VECTOR, {})),
            iat=iat,
            device=device,
            nonce=nonce,
            reasons=tuple(reasons),
            policy_id=policy,
            verifier_build=str(vid.get(0, "")),
            status=int(status),
            submods=tuple(others),
        )

    def to_json(self) -> dict[str, Any]:
        """A readable form, with the EAR draft's JSON claim names (§3)."""
        return {
            "eat_profile": C.EAR_PROFILE,
            "iat": self.iat,
            "eat_nonce": self.nonce.hex() if self.nonce is not None else None,
            "device": self.device,
            "ear.verifier-id": {"build": self.verifier_build, "developer": DEVELOPER},
            "submods": {
                SUBMOD: {
                    "ear.status": C.TIER_NAMES.get(self.vector.status(), "?") if self.submods
                    else self.status_name,
                    "ear.trustworthiness-vector": dict(self.vector.items()),
                    "ear.appraisal-policy-id": self.policy_id,
                    "reasons": list(self.reasons),
                },
                **{s.name: {"ear.status": C.TIER_NAMES.get(s.status, "?"),
                            "ear.trustworthiness-vector": dict(s.vector.items()),
                            "ear.appraisal-policy-id": self.policy_id,
                            "reasons": list(s.reasons)} for s in self.submods},
            },
        }


def sign_ear(ear: Ear, key: SigningKey) -> bytes:
    """The EAR as a CWT: COSE_Sign1 (tag 18) over the deterministic CBOR claims set."""
    return cose.sign1(cbor.dumps(ear.to_claims()), key)


def decode_ear(
    data: bytes, trust: TrustStore | VerifyingKey, *, limits: Limits = DEFAULT_LIMITS
) -> Ear:
    """Verify the verifier's signature and decode the claims (no freshness check)."""
    msg = cose.verify1(data, trust, limits=limits)
    return Ear.from_claims(cbor.loads(msg.payload, limits=limits))


def check_ear(
    data: bytes,
    verifier_key: TrustStore | VerifyingKey,
    *,
    now: float,
    nonce: bytes | None = None,
    max_age: float | None = None,
    device: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Ear:
    """The Relying Party's offline check of an EAR (RFC 9334 §5.1 passport model).

    Verifies the signature, then that the EAR is about ``device`` (pass the device you expect:
    an affirming EAR of another device says nothing about this one), then freshness: the EAR
    must echo ``nonce`` if one is given, else be at most ``max_age`` seconds old (and not from
    the future). Returns the :class:`Ear`; the caller decides on ``ear.status``
    (``ear.affirming``). Raises :class:`~edgeward.core.errors.SignatureError`,
    :class:`MalformedInputError`, :class:`~edgeward.core.errors.FreshnessError` or, for another
    device's EAR, :class:`~edgeward.core.errors.UnknownDeviceError`.
    """
    if nonce is None and max_age is None:
        raise ValueError("check_ear needs a nonce or a max_age")
    ear = decode_ear(data, verifier_key, limits=limits)
    if device is not None and ear.device != device:
        shown = "no device" if ear.device is None else f"device {safe(ear.device)}"
        raise UnknownDeviceError(f"EAR is about {shown}, not {safe(device)}")
    if nonce is not None:
        if ear.nonce is None or not hmac.compare_digest(ear.nonce, nonce):
            raise FreshnessError("EAR does not answer this relying party's nonce")
    if max_age is not None:
        if ear.iat > now + MAX_CLOCK_SKEW:
            raise FreshnessError("EAR was issued in the future")
        if now - ear.iat > max_age:
            raise FreshnessError(f"EAR is {now - ear.iat:.0f} s old, more than {max_age:.0f} s")
    return ear


def vector_from(values: Mapping[str, int]) -> TrustVector:
    """A vector from AR4SI names (``{"instance-identity": 2, ...}``)."""
    return TrustVector(**{k.replace("-", "_"): v for k, v in values.items()})
