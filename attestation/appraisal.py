"""Appraisal of evidence: the verifier's core (RFC 9334 §3.2, §8). Pure.

Bytes of evidence, the enrolled devices and live sessions (as look-ups), the signed reference
values and a clock in; a :class:`Verdict` with an :class:`~.ear.Ear` out. Every problem becomes a
clean verdict with plain-words reasons, never an exception. The steps, in order:

1. structure: COSE_Sign1 within the configured CBOR limits (size, depth, items, duplicate keys,
   tags); malformed evidence is ``instance-identity`` 99 (cryptographic validation failed);
2. identity: the ``kid`` must name an enrolled key (else 97 unrecognized instance), the
   signature must verify and the claims be within the types and ranges of docs/protocol.cddl
   (else 99), the ``device`` claim must be the enrolled name and the ``ueid`` the enrolled one
   (pinned by the device's first trustworthy appraisal; else 96). Text from the device is
   escaped (:mod:`.text`) before it goes into a reason;
3. freshness: the ``eat_nonce`` must be a live, unused challenge issued to that device
   (:mod:`.nonces`), and ``iat`` not in the future nor older than ``max_evidence_age`` (99);
4. the bootcount may not go backwards (RFC 9711 §4.2.13; 96, a clone or a rolled-back state);
5. hardware: the enrollment fixes the key kind and the board, and evidence that declares
   another kind or names another board is contraindicated (hardware 96). A TPM-enrolled device
   must send a TPM quote, checked for real (:mod:`.tpm_quote`): without a valid one it is never
   affirming. The attestation key is a restricted TPM key, so the only facts about the hardware
   are what it can sign for the TPM itself: the quote over the PCRs and the nonce (the evidence's
   own signature covers whatever the software asked the TPM to hash). A software key gives at
   most a warning (hardware 32) unless the policy says ``software_keys = "affirming"``;
6. reference values for the enrolled board: agent version (older than ``min-swversion``
   is 96 contraindicated), agent code digest (``executables``), configuration digest
   (``configuration``), models by name, minimum version and digest (``file-system``), PCRs,
   and, with a verified quote, the boot event log replayed against it and each boot component
   it names (:mod:`.bootlog`).

AR4SI values are from draft-ietf-rats-ar4si §2.3 (see :mod:`.claims`). This module does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgeward.attestation import claims as C
from edgeward.attestation.bootlog import appraise_boot_log
from edgeward.attestation.ear import Ear, SubmodResult, TrustVector
from edgeward.attestation.evidence import EvidenceClaims, claims_from_cbor
from edgeward.attestation.nonces import NoncePolicy, Session
from edgeward.attestation.refvalues import RefValues, parse_version
from edgeward.attestation.submods import Registry, appraise_submods
from edgeward.attestation.text import safe
from edgeward.attestation.tpm_quote import verify_quote
from edgeward.core import cbor, cose
from edgeward.core.errors import FreshnessError, IntegrityError
from edgeward.core.keys import VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class Policy:
    """Appraisal policy; the defaults are the safe ones."""

    software_keys: str = "warning"  # "warning" | "affirming" | "refuse" (docs/THREAT_MODEL.md)
    max_clock_skew: float = 30.0
    max_evidence_age: float = 300.0
    policy_id: str = "edgeward/default"


@dataclass(frozen=True)
class EnrolledDevice:
    device: str
    key: VerifyingKey
    endorsement: str  # "x509" | "tofu"
    last_bootcount: int | None = None
    key_kind: str = "software"  # "tpm" only if the maker's certificate says the key is in a TPM
    board: str | None = None  # fixed at enrollment; None: pinned by the first appraisal
    ueid: bytes | None = None  # pinned by the first trustworthy appraisal
    revoked: str | None = None  # why its endorsement no longer holds (revoked, CA untrusted)


@dataclass(frozen=True)
class Verdict:
    """The result of one appraisal and what the store must commit with it."""

    ear: Ear
    device: str | None
    nonce_to_consume: bytes | None
    bootcount: int | None
    evidence_sha256: bytes
    claims: EvidenceClaims | None = None
    board_to_pin: str | None = None  # the board of a device enrolled without one
    ueid_to_pin: bytes | None = None  # the ueid of a device appraised for the first time


class _Result:
    """The vector being built (a plain dict: this is the hot path) and the reasons."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reasons: list[str] = []

    @property
    def vector(self) -> TrustVector:
        return TrustVector(**self.values)

    def set(self, claim: str, value: int, reason: str | None = None) -> None:
        attr = claim.replace("-", "_")
        current = self.values.get(attr, C.NO_CLAIM)
        # Never improve a claim already set worse (higher tier) by an earlier check.
        if current == C.NO_CLAIM or C.tier_of(value) >= C.tier_of(current):
            self.values[attr] = value
        if reason:
            self.reasons.append(reason)


def appraise(
    evidence: bytes,
    *,
    devices: Callable[[bytes], EnrolledDevice | None],
    sessions: Callable[[bytes], Session | None],
    refvalues: Mapping[str, RefValues],
    now: float,
    policy: Policy = Policy(),
    limits: Limits = DEFAULT_LIMITS,
    submod_registry: Registry | None = None,
    decoded: cose.Sign1Message | None = None,
) -> Verdict:
    """Appraise one evidence token; see the module docstring for the steps.

    ``decoded``: the caller's :func:`cose.decode_sign1` of these very ``evidence`` bytes with
    these ``limits``, if it has one (the verifier looks up the key first), so it is not decoded
    twice.
    """
    digest = hashlib.sha256(evidence if isinstance(evidence, bytes) else b"").digest()
    r = _Result()
    enrolled_ueid: bytes | None = b""  # set once the device is known; b"": nothing to pin

    def done(device: str | None = None, nonce: bytes | None = None,
             consume: bytes | None = None, bootcount: int | None = None,
             claims: EvidenceClaims | None = None, pin: str | None = None,
             subs: tuple[SubmodResult, ...] = ()) -> Verdict:
        ear = Ear(vector=r.vector, iat=int(now), device=device, nonce=nonce,
                  reasons=tuple(r.reasons), policy_id=policy.policy_id, submods=subs)
        return Verdict(ear, device, consume, bootcount, digest, claims, pin,
                       claims.ueid if claims is not None and enrolled_ueid is None else None)

    # 1-2. structure, identity, signature, claims
    try:
        msg = decoded if decoded is not None else cose.decode_sign1(evidence, limits=limits)
    except IntegrityError as e:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"evidence is malformed: {safe(e, 200)}")
        return done()
    enrolled = devices(msg.kid) if msg.kid else None
    if enrolled is None:
        kid = msg.kid.hex()[:16] if msg.kid else "none"
        r.set("instance-identity", C.UNRECOGNIZED_INSTANCE,
              f"evidence is signed by key {kid}, which is not enrolled")
        return done()
    try:
        cose.verify_decoded(msg, enrolled.key)  # decoded once above, to find the key
        ev = claims_from_cbor(cbor.loads(msg.payload, limits=limits), limits=limits)
    except IntegrityError as e:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"evidence of {enrolled.device} failed validation: {safe(e, 200)}")
        return done(enrolled.device)
    name = enrolled.device
    if ev.device != name:
        r.set("instance-identity", C.UNTRUSTWORTHY_INSTANCE,
              f"evidence claims to be '{safe(ev.device)}' but is signed by the key of '{name}'")
        return done(name)
    if enrolled.revoked is not None:
        r.set("instance-identity", C.UNTRUSTWORTHY_INSTANCE,
              f"device {name} is no longer endorsed: {enrolled.revoked}")
        return done(name)
    enrolled_ueid = enrolled.ueid
    if enrolled_ueid is not None and ev.ueid != enrolled_ueid:
        r.set("instance-identity", C.UNTRUSTWORTHY_INSTANCE,
              f"evidence ueid {ev.ueid.hex()[:34]} is not the enrolled device's "
              f"{enrolled_ueid.hex()[:34]} (another instance or a clone)")
        return done(name)

    # 3. freshness
    try:
        NoncePolicy.check(sessions(ev.nonce), nonce=ev.nonce, device=name, now=now)
    except FreshnessError as e:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED, f"stale or replayed: {e}")
        return done(name, nonce=ev.nonce, claims=ev)
    consume = ev.nonce
    if ev.iat > now + policy.max_clock_skew:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"evidence iat is {ev.iat - now:.0f} s in the future")
        return done(name, ev.nonce, consume, claims=ev)
    if now - ev.iat > policy.max_evidence_age:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"evidence is {now - ev.iat:.0f} s old (limit {policy.max_evidence_age:.0f} s)")
        return done(name, ev.nonce, consume, claims=ev)

    # 4. bootcount
    bootcount: int | None = ev.bootcount
    if enrolled.last_bootcount is not None and ev.bootcount < enrolled.last_bootcount:
        r.set("instance-identity", C.UNTRUSTWORTHY_INSTANCE,
              f"bootcount went backwards ({ev.bootcount} < {enrolled.last_bootcount}): "
              "cloned device or rolled-back state")
        bootcount = None
    else:
        note = " (trust on first use)" if enrolled.endorsement == "tofu" else ""
        r.set("instance-identity", C.TRUSTWORTHY_INSTANCE,
              f"device {name} is enrolled{note} and its evidence is fresh")

    # 5. hardware and boot state; the board is the enrolled one, never the device's say-so
    _hardware(r, ev, enrolled, policy)
    board = enrolled.board or ev.hwmodel
    if ev.hwmodel != board:
        r.set("hardware", C.CONTRAINDICATED_HARDWARE,
              f"evidence names board '{safe(ev.hwmodel)}' but the device is enrolled as "
              f"'{safe(board)}'")
    # 6. reference values
    rv = refvalues.get(board)
    if rv is None:
        r.set("executables", C.UNRECOGNIZED_RUNTIME,
              f"no signed reference values for board '{safe(board)}'")
    else:
        _against_reference(r, ev, rv, enrolled)
    # 7. submodules (a lock's microcontroller): a vector each, see .submods
    subs = appraise_submods(ev.submods, device=name, nonce=ev.nonce, registry=submod_registry,
                            limits=limits)
    return done(name, ev.nonce, consume, bootcount, ev,
                pin=board if enrolled.board is None else None, subs=subs)


def _hardware(r: _Result, ev: EvidenceClaims, enrolled: EnrolledDevice, policy: Policy) -> None:
    if ev.key_kind != enrolled.key_kind:
        if ev.key_kind == "tpm":
            why = "evidence claims a TPM key but the device certificate does not endorse one"
        else:  # a TPM board's key used to sign evidence that skips the quote (downgrade)
            why = ("evidence declares a software key but the device is enrolled with a TPM "
                   "attestation key (downgrade)")
        r.set("hardware", C.CONTRAINDICATED_HARDWARE, why)
        return
    if enrolled.key_kind == "software":
        if ev.boot is not None:
            r.set("hardware", C.CONTRAINDICATED_HARDWARE,
                  "a software key cannot vouch for a TPM quote")
        elif policy.software_keys == "refuse":
            r.set("hardware", C.CONTRAINDICATED_HARDWARE,
                  "signed by a software key, which the policy does not accept")
        elif policy.software_keys == "affirming":
            r.reasons.append("signed by a software key: hardware is not attested "
                             "(policy accepts software keys)")
        else:
            r.set("hardware", C.UNSAFE_HARDWARE,
                  "signed by a software key: hardware is not attested (policy: warning)")
        return
    if ev.boot is None:
        r.set("hardware", C.CONTRAINDICATED_HARDWARE,
              "the device is enrolled with a TPM attestation key but sent no TPM quote")
        return
    try:
        verify_quote(ev.boot.quote, ev.boot.quote_sig, enrolled.key.crypto_key,
                     eat_nonce=ev.nonce, pcrs=ev.boot.pcrs)
    except IntegrityError as e:
        r.set("hardware", C.CRYPTO_VALIDATION_FAILED, f"TPM quote rejected: {e}")
        return
    r.set("hardware", C.GENUINE_HARDWARE, "TPM quote verified with the endorsed attestation key")


def _against_reference(r: _Result, ev: EvidenceClaims, rv: RefValues,
                       enrolled: EnrolledDevice) -> None:
    meas = ev.measurements
    try:
        version = parse_version(ev.swversion)
    except ValueError:
        r.set("executables", C.UNRECOGNIZED_RUNTIME,
              f"agent version '{safe(ev.swversion)}' is not x.y.z")
        return
    if version < parse_version(rv.min_swversion):
        r.set("executables", C.CONTRAINDICATED_RUNTIME,
              f"agent {ev.swversion} is older than the minimum {rv.min_swversion}")
    release = rv.release(ev.swversion)
    if release is None:
        r.set("executables", C.UNRECOGNIZED_RUNTIME,
              f"agent {ev.swversion} is not a release in the reference values")
    else:
        if meas.agent_code in release.agent_code:
            sbom = f" (its SBOM: sha256 {release.sbom.hex()})" if release.sbom else ""
            r.set("executables", C.APPROVED_RUNTIME,
                  f"agent {ev.swversion} code is approved{sbom}")
        else:
            r.set("executables", C.UNRECOGNIZED_RUNTIME,
                  f"agent code digest {meas.agent_code.hex()[:16]} is not the approved "
                  f"{ev.swversion} code (modified agent)")
        if not release.agent_config:
            r.reasons.append("no reference configuration: configuration not appraised")
        elif meas.agent_config in release.agent_config:
            r.set("configuration", C.APPROVED_CONFIG, "agent configuration is approved")
        else:
            r.set("configuration", C.UNSAFE_CONFIG,
                  f"agent configuration digest {meas.agent_config.hex()[:16]} is not approved")
    if rv.require_tpm and (ev.boot is None or enrolled.key_kind != "tpm"):
        r.set("hardware", C.CONTRAINDICATED_HARDWARE,
              f"board '{rv.board}' requires a TPM quote")
    if ev.boot is not None and rv.pcrs is not None:
        differ = [i for i, d in sorted(rv.pcrs.items()) if ev.boot.pcrs.get(i) != d]
        if differ:
            r.set("executables", C.UNRECOGNIZED_RUNTIME,
                  f"PCRs {', '.join(map(str, differ))} differ from the reference boot state")
        else:
            r.reasons.append("boot state (PCRs) matches the reference")
    if ev.boot is not None and r.values.get("hardware") == C.GENUINE_HARDWARE:
        # the quote is genuine: the log is appraised against the PCRs it covers
        for value, reason in appraise_boot_log(ev.event_log, ev.boot.pcrs, rv.boot_components):
            if value is None:
                r.reasons.append(reason)
            else:
                r.set("executables", value, reason)
    elif ev.event_log is not None:
        r.reasons.append("boot event log not appraised: no verified TPM quote vouches for it")
    _models(r, ev, rv)


def _models(r: _Result, ev: EvidenceClaims, rv: RefValues) -> None:
    if not ev.measurements.models and rv.models:
        # The device measures every configured model; none at all hides what it runs.
        r.set("file-system", C.UNRECOGNIZED_FILES,
              f"evidence lists no models, but the reference values for board '{rv.board}' "
              f"list {len(rv.models)}")
        return
    ok = True
    for m in ev.measurements.models:
        ref = rv.model(m.name)
        if ref is None:
            r.set("file-system", C.UNRECOGNIZED_FILES,
                  f"model '{safe(m.name)}' is not in the reference values")
            ok = False
            continue
        if m.version < ref.min_version:
            r.set("file-system", C.CONTRAINDICATED_FILES,
                  f"model '{safe(m.name)}' version {m.version} is older than {ref.min_version}")
            ok = False
        bad = [p for p, d in m.files if d not in ref.digests]
        if bad or not m.files:
            # A model the vendor released, whose bytes match none of its released digests, is a
            # modified copy of a known model: contraindicated, not merely unrecognized.
            r.set("file-system", C.CONTRAINDICATED_FILES,
                  f"model '{safe(m.name)}' file(s) {safe(', '.join(bad)) or '(none)'} have "
                  "digests that are not in the reference values (tampered model)")
            ok = False
    if ok and ev.measurements.models:
        r.set("file-system", C.APPROVED_FILES,
              f"{len(ev.measurements.models)} model(s) match the reference values")
