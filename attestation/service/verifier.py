"""The verifier facade: challenges, enrollment, appraisal, signed results, persisted state.

Ties the pure cores (:mod:`.nonces`, :mod:`.enroll`, :mod:`.appraisal`, :mod:`.ear`) to the
edges (:mod:`.store`, key and certificate files). The verifier service
(``edgeward verifier run``) and the one-shot command line both use it::

    v = Verifier.from_config(load_verifier_config(Path("VERIFIER.toml")))
    nonce = v.challenge("lock-0001")           # send to the device
    result = v.verify(evidence_bytes)          # AppraisalResult: .ear (Ear), .signed (bytes)
    v.close()

Enrollment (RFC 9334 §3.2 endorsements): a device is enrolled when its evidence carries an
``x5chain`` that leads to a trusted maker CA, or ahead of time with :meth:`Verifier.enroll`.
Trust on first use happens only when ``[enrollment] tofu = true``, and is logged as a warning
every time. Reference values that are unsigned or signed by an untrusted key are refused at
load time and logged as errors; their board then has no reference and cannot be affirmed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from edgeward.attestation import claims as C
from edgeward.attestation.appraisal import EnrolledDevice, Policy, Verdict, appraise
from edgeward.attestation.config import VERIFIER_LIMITS, VerifierConfig
from edgeward.attestation.ear import Ear, TrustVector, sign_ear
from edgeward.attestation.enroll import (
    Endorsement,
    NotEndorsedError,
    RevokedIds,
    cert_ids,
    device_name,
    load_certs,
    revoked_ids,
    verify_endorsement,
)
from edgeward.attestation.evidence import x5chain_of
from edgeward.attestation.nonces import NoncePolicy
from edgeward.attestation.refvalues import RefValues, open_refvalues
from edgeward.attestation.service.store import VerifierStore, open_verifier_store
from edgeward.attestation.service.verifier_store import DeviceRecord
from edgeward.attestation.submods import LockRegistration, Registry, load_lock_registry
from edgeward.attestation.text import safe
from edgeward.core import cose
from edgeward.core.errors import (
    ConfigError,
    DeviceError,
    EdgewardError,
    IntegrityError,
    ReplayError,
    UnknownDeviceError,
)
from edgeward.core.fileio import OPERATOR, read_bounded
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey, load_signing_key
from edgeward.core.limits import Limits

logger = logging.getLogger(__name__)

REFVALUES_SUFFIX = ".ewref"
MAX_REFVALUES_BYTES = 1024 * 1024
MAX_CA_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AppraisalResult:
    ear: Ear
    signed: bytes  # the EAR as COSE_Sign1 (CWT), signed by the verifier
    device: str | None


def load_refvalues_dir(folder: Path, trust: TrustStore, limits: Limits) -> dict[str, RefValues]:
    """Every ``*.ewref`` in ``folder`` that verifies; per board the newest ``issued`` wins."""
    out: dict[str, RefValues] = {}
    if not folder.is_dir():
        raise ConfigError(f"reference values folder {folder} does not exist")
    for path in sorted(folder.glob(f"*{REFVALUES_SUFFIX}")):
        try:
            data = read_bounded(path, MAX_REFVALUES_BYTES, what="reference values")
            rv = open_refvalues(data, trust, limits=limits)
        except IntegrityError as e:
            logger.error("refusing reference values %s: %s", path, e)
            continue
        old = out.get(rv.board)
        if old is None or rv.issued > old.issued:
            out[rv.board] = rv
    return out


def load_revocations(paths: tuple[Path, ...], cas: list[x509.Certificate]) -> RevokedIds:
    """The certificates revoked by the CRL files (each must be signed by a maker CA)."""
    crls = []
    for p in paths:
        data = read_bounded(p, MAX_CA_BYTES, what="CRL", faults=OPERATOR)
        try:
            if b"-----BEGIN" in data:
                crls.append(x509.load_pem_x509_crl(data))
            else:
                crls.append(x509.load_der_x509_crl(data))
        except ValueError as e:
            raise ConfigError(f"CRL {p} is not an X.509 CRL: {e}") from e
    try:
        revoked = revoked_ids(crls, cas)
    except IntegrityError as e:
        raise ConfigError(f"{e}", hint="list only CRLs issued by a CA in maker_cas") from e
    if crls:
        logger.info("%d certificate(s) revoked by %d CRL(s)", len(revoked), len(crls))
    return revoked


def load_cas(paths: tuple[Path, ...]) -> list[x509.Certificate]:
    cas: list[x509.Certificate] = []
    for p in paths:
        pem = read_bounded(p, MAX_CA_BYTES, what="maker CA", faults=OPERATOR)
        try:
            cas.extend(load_certs(pem))
        except IntegrityError as e:
            raise ConfigError(f"maker CA {p} is not a certificate: {e}") from e
    return cas


class Verifier:
    def __init__(
        self,
        *,
        store: VerifierStore,
        ear_key: SigningKey,
        maker_cas: list[x509.Certificate],
        refvalues: dict[str, RefValues],
        policy: Policy = Policy(),  # noqa: B008
        nonces: NoncePolicy | None = None,
        tofu: bool = False,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        locks: Registry | None = None,
        revoked: RevokedIds = frozenset(),
    ) -> None:
        self.store = store
        self.revoked = revoked  # certificates the maker CAs' CRLs revoke (.enroll.revoked_ids)
        self.locks = locks  # lock microcontrollers behind gateways (.submods)
        self.ear_key = ear_key
        self.maker_cas = maker_cas
        self.refvalues = refvalues
        self.policy = policy
        self.nonces = nonces or NoncePolicy()
        self.tofu = tofu
        self.limits = limits or VERIFIER_LIMITS
        self.clock = clock
        self._refvalues_source: tuple[Path, TrustStore] | None = None
        self._anchor_cache: tuple[tuple[x509.Certificate, ...], frozenset[bytes]] = (
            (), frozenset())
        if tofu:
            logger.warning("TRUST ON FIRST USE is enabled: any device that presents a "
                           "certificate is enrolled without a maker CA; do not use in production")

    @classmethod
    def from_config(cls, cfg: VerifierConfig, *, clock: Callable[[], float] = time.time
                    ) -> Verifier:
        trust = TrustStore.from_path(cfg.vendor_keys)
        v = cls(
            store=open_verifier_store(cfg.database, cfg.postgres),
            ear_key=load_signing_key(cfg.key_file),
            maker_cas=load_cas(cfg.maker_cas),
            refvalues=load_refvalues_dir(cfg.refvalues_dir, trust, cfg.limits),
            policy=Policy(software_keys=cfg.software_keys,
                          max_clock_skew=cfg.max_clock_skew,
                          max_evidence_age=cfg.max_evidence_age, policy_id=cfg.policy_id),
            nonces=NoncePolicy(ttl=cfg.nonce_ttl, nonce_bytes=cfg.nonce_bytes),
            tofu=cfg.tofu,
            limits=cfg.limits,
            clock=clock,
            locks=load_lock_registry(cfg.locks_file) if cfg.locks_file else None,
        )
        v.revoked = load_revocations(cfg.crls, v.maker_cas)
        v._refvalues_source = (cfg.refvalues_dir, trust)
        return v

    def reload_refvalues(self) -> int:
        """Re-read the reference values folder (e.g. on SIGHUP); returns the number of boards."""
        if self._refvalues_source is None:
            raise RuntimeError("reload_refvalues needs a Verifier made by from_config")
        folder, trust = self._refvalues_source
        self.refvalues = load_refvalues_dir(folder, trust, self.limits)
        logger.info("reference values loaded for %d board(s)", len(self.refvalues))
        return len(self.refvalues)

    @property
    def public_key(self) -> VerifyingKey:
        """What a relying party needs to check EARs offline (:func:`.ear.check_ear`)."""
        return self.ear_key.public

    def close(self) -> None:
        self.store.close()

    # --- challenges and enrollment --------------------------------------------------------------

    def challenge(self, device: str) -> bytes:
        """A fresh nonce bound to ``device``, stored until used or expired."""
        session = self.nonces.issue(device, self.clock())
        self.store.put_session(session)
        return session.nonce

    def _record(self, e: Endorsement, endorsement: str, *, replace: bool = False) -> bool:
        # The store never replaces an enrolled key unless ``replace``, and refuses a key
        # already enrolled under another name (UnknownDeviceError).
        return self.store.put_device(
            DeviceRecord(e.device, e.key.key_id, e.key.spki_der(), endorsement, e.issuer,
                         self.clock(), None, e.key_kind, e.board, None, e.anchor or None,
                         e.certs or None), replace=replace)

    def enroll(self, chain: list[x509.Certificate], *, board: str | None = None,
               replace: bool = False, device: str | None = None) -> Endorsement:
        """Enroll the device a maker-CA certificate chain endorses (leaf first).

        The board is the certificate's (:data:`.enroll.BOARD_EXTENSION`), else ``board``, else
        the one its first appraised evidence names (pinned then, and fixed from then on). An
        enrolled device keeps its key: only ``replace=True`` (``attest enroll --replace``, the
        operator's explicit re-enrollment with a new maker-signed certificate) changes it.
        ``device``, when given, is the name the certificate must carry (the MQTT topic's).
        """
        e = verify_endorsement(chain, self.maker_cas, now=self.clock(), revoked=self.revoked)
        if device is not None and e.device != device:
            raise UnknownDeviceError(f"certificate for device '{e.device}' was presented on "
                                     f"device '{safe(device)}''s topic")
        if board is not None and e.board is not None and board != e.board:
            raise UnknownDeviceError(f"the certificate fixes board '{e.board}', not '{board}'")
        if e.board is None and board is not None:
            e = dataclasses.replace(e, board=board)
        self._record(e, "x509", replace=replace)
        return e

    def _enroll_from_x5chain(self, chain_der: list[bytes], device: str | None) -> None:
        chain = [c for der in chain_der for c in load_certs(der)]
        try:
            self.enroll(chain, device=device)
        except NotEndorsedError as err:
            # Trust on first use stands in only for a missing maker CA: never for a revoked
            # certificate, another device's topic or an enrolled name (the store refuses that).
            if not self.tofu or not chain:
                raise
            leaf = chain[0]
            try:
                key = VerifyingKey.from_crypto(leaf.public_key())
            except (ValueError, TypeError, UnsupportedAlgorithm, ConfigError) as e2:
                raise UnknownDeviceError("device certificate key is not usable") from e2
            e = Endorsement(device=device_name(leaf), key=key, issuer="trust on first use",
                            fingerprint=b"", certs=cert_ids(chain))
            if device is not None and e.device != device:
                raise UnknownDeviceError(f"certificate for device '{e.device}' was presented "
                                         f"on device '{safe(device)}''s topic") from err
            if self._record(e, "tofu"):
                logger.warning("TRUST ON FIRST USE: enrolled device %s with key %s without an "
                               "endorsement", e.device, e.key.key_id.hex()[:16])

    def _revocation(self, rec: DeviceRecord) -> str | None:
        """Why an enrolled device's endorsement no longer holds, or None."""
        ids = (rec.certs or "").split()
        if any(i in self.revoked for i in ids):
            return "its certificate is revoked by the maker CA's CRL"
        if rec.endorsement == "x509" and rec.anchor is not None and \
                bytes(rec.anchor) not in self._anchors():
            return "the maker CA that endorsed it is no longer trusted"
        return None

    def _anchors(self) -> frozenset[bytes]:
        """The maker CAs' SHA-256 fingerprints, computed once per list of CAs (not per token)."""
        cas, anchors = self._anchor_cache
        if len(cas) != len(self.maker_cas) or any(
                a is not b for a, b in zip(cas, self.maker_cas, strict=True)):
            cas = tuple(self.maker_cas)
            anchors = frozenset(ca.fingerprint(hashes.SHA256()) for ca in cas)
            self._anchor_cache = (cas, anchors)
        return anchors

    def _lookup(self, kid: bytes, known: DeviceRecord | None = None) -> EnrolledDevice | None:
        """The enrolled device of key ``kid``; ``known``: its record, just read by the caller."""
        rec = known if known is not None and known.key_id == kid else self.store.device_by_key(kid)
        if rec is None:
            return None
        return EnrolledDevice(rec.device, _from_spki(rec.spki), rec.endorsement,
                              rec.last_bootcount, rec.key_kind, rec.board,
                              bytes(rec.ueid) if rec.ueid is not None else None,
                              self._revocation(rec))

    def _lock(self, gateway: str, name: str) -> LockRegistration | None:
        """The vendor's registration with the highest bootcount the store has accepted."""
        reg = self.locks(gateway, name) if self.locks is not None else None
        seen = self.store.lock_bootcount(gateway, name) if reg is not None else None
        if reg is None or seen is None or (reg.last_bootcount or 0) >= seen:
            return reg
        return dataclasses.replace(reg, last_bootcount=seen)

    # --- appraisal ------------------------------------------------------------------------------

    def verify(self, evidence: bytes, *, device: str | None = None) -> AppraisalResult:
        """Appraise one evidence token; always returns a signed EAR (never raises a verdict).

        ``device`` is the device the evidence came from (its MQTT topic): a certificate in the
        evidence enrolls only a device of that name, and evidence of another device is refused.

        Hostile input of any kind ends in a verdict: oversized evidence, a certificate the
        X.509 library refuses, and, as a last line, any exception the appraisal core did not
        foresee (logged with its traceback, refused as instance-identity 99). Only the
        verifier's own operational failures (its database) raise.
        """
        now = self.clock()
        if len(evidence) > self.limits.max_cbor_bytes:
            return self.refuse_oversized(len(evidence), evidence)
        enroll_error: str | None = None
        try:
            msg = cose.decode_sign1(evidence, limits=self.limits)
        except IntegrityError:
            msg = None  # the appraisal says why the evidence is malformed, once
        known: DeviceRecord | None = None  # read once here, again only after an enrollment
        try:
            if msg is not None and msg.kid:
                known = self.store.device_by_key(msg.kid)
                chain = x5chain_of(msg) if known is None else None
                if chain:
                    self._enroll_from_x5chain(chain, device)
        except DeviceError:
            raise
        except EdgewardError as e:
            enroll_error = safe(e, 200)
        except Exception as e:  # hostile certificate bytes: a verdict, not a crash
            logger.warning("device certificate refused: %s: %s", type(e).__name__, safe(e, 200))
            enroll_error = f"device certificate cannot be parsed ({type(e).__name__})"
        try:
            verdict = appraise(evidence, devices=lambda kid: self._lookup(kid, known),
                               sessions=self.store.session,
                               refvalues=self.refvalues, now=now, policy=self.policy,
                               limits=self.limits,
                               submod_registry=self._lock if self.locks else None,
                               decoded=msg)
        except DeviceError:
            raise
        except Exception as e:  # the last line: every input ends in a verdict
            logger.exception("appraisal failed on unexpected input; refused")
            return self._refuse(f"evidence could not be appraised ({type(e).__name__}); "
                                "refused", evidence, now)
        ear = verdict.ear
        if device is not None and verdict.device is not None and verdict.device != device:
            ear = dataclasses.replace(
                ear, vector=dataclasses.replace(ear.vector,
                                                instance_identity=C.UNTRUSTWORTHY_INSTANCE),
                reasons=(*ear.reasons, f"evidence of device {verdict.device} arrived on device "
                                       f"{safe(device)}'s topic"), status=-1)
        if enroll_error and verdict.device is None:
            ear = Ear(vector=ear.vector, iat=ear.iat, reasons=(*ear.reasons, enroll_error),
                      policy_id=ear.policy_id)
        return self._commit(verdict, ear, now)

    def refuse_oversized(self, size: int, head: bytes = b"") -> AppraisalResult:
        """The verdict for evidence over ``max_cbor_bytes`` (instance-identity 99), unread."""
        return self._refuse(f"evidence of {size} bytes is over the limit of "
                            f"{self.limits.max_cbor_bytes} bytes", head, self.clock())

    def _refuse(self, reason: str, evidence: bytes, now: float) -> AppraisalResult:
        ear = Ear(vector=TrustVector(instance_identity=C.CRYPTO_VALIDATION_FAILED), iat=int(now),
                  reasons=(reason,), policy_id=self.policy.policy_id)
        verdict = Verdict(ear, None, None, None, hashlib.sha256(evidence).digest())
        return self._commit(verdict, ear, now)

    def _commit(self, verdict: Verdict, ear: Ear, now: float) -> AppraisalResult:
        signed = sign_ear(ear, self.ear_key)
        trusted = ear.vector.instance_identity == C.TRUSTWORTHY_INSTANCE
        try:
            self.store.record_appraisal(
                device=verdict.device, nonce=verdict.nonce_to_consume, now=now,
                status=ear.status, evidence_sha256=verdict.evidence_sha256, ear=signed,
                bootcount=verdict.bootcount if trusted else None,
                board=verdict.board_to_pin if trusted else None,
                ueid=verdict.ueid_to_pin if trusted else None,
                lock_bootcounts={s.name: s.bootcount for s in ear.submods
                                 if trusted and s.bootcount is not None
                                 and s.vector.instance_identity == C.TRUSTWORTHY_INSTANCE})
        except ReplayError as e:  # another worker consumed the nonce first
            ear = Ear(vector=TrustVector(instance_identity=C.CRYPTO_VALIDATION_FAILED),
                      iat=int(now), device=verdict.device, nonce=ear.nonce,
                      reasons=(f"stale or replayed: {e}",), policy_id=ear.policy_id)
            signed = sign_ear(ear, self.ear_key)
            self.store.record_appraisal(device=verdict.device, nonce=None, now=now,
                                        status=ear.status,
                                        evidence_sha256=verdict.evidence_sha256,
                                        ear=signed, bootcount=None)
        logger.info("appraised %s: %s", safe(verdict.device or "unknown device"),
                    ear.status_name)
        return AppraisalResult(ear, signed, verdict.device)


@functools.lru_cache(maxsize=4096)
def _from_spki(der: bytes) -> VerifyingKey:
    """An enrolled key from its stored SPKI; cached, as devices attest again and again (a
    pure function of the bytes)."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    return VerifyingKey.from_crypto(load_der_public_key(der))
