"""Enrollment: accept a device key only if a trusted device-maker CA endorses it. Pure.

The device maker is the Endorser (RFC 9334 §3.2): it issues each device an X.509 certificate
(RFC 5280) over the device's evidence key (the TPM attestation key or the software key), with
the device name as the subject commonName. The verifier trusts a set of maker CA certificates
and accepts a chain ``leaf [, intermediate ...]`` when every certificate is inside its validity
period, each issuer is a CA (basicConstraints cA=TRUE, keyCertSign), every signature verifies
(``verify_directly_issued_by``), and the last certificate is issued by a trusted CA. The leaf's
key must be Ed25519 or P-256 (COSE EdDSA/ES256). :func:`issue_device_cert` is the maker's side,
used by ``edgeward attest enroll issue`` and by tests.

Revocation (RFC 5280 §5): the maker publishes X.509 CRLs; :func:`revoked_ids` accepts only
CRLs signed by a trusted maker CA and returns the ``(issuer, serial)`` pairs they revoke; a
chain with a revoked certificate is refused, and the verifier checks the pairs recorded at
enrollment (:func:`cert_ids`) again at every appraisal. :func:`make_crl` is the maker's side
(``edgeward attest ca revoke``); its PEM output is also what Mosquitto's ``crlfile`` reads.

Trust on first use is not here: the verifier facade does it only when configured, loudly.
This module does no I/O.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from edgeward.attestation.text import safe
from edgeward.core.errors import MalformedInputError, UnknownDeviceError
from edgeward.core.keys import SigningKey, VerifyingKey

MAX_CHAIN = 4
DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the MQTT <device>, docs/protocol.cddl
# Certificate policy (RFC 5280 §4.2.1.4) by which the maker states that the certified key is a
# TPM-resident restricted attestation key (checked at the factory, e.g. by credential
# activation against the TPM's endorsement key). OID in the UUID arc 2.25 (ITU-T X.667).
TPM_KEY_POLICY = x509.ObjectIdentifier("2.25.88528677824138185023864636800161431357")
# Non-critical extension by which the maker fixes the device's board (the EAT hwmodel that
# selects its reference values): a DER UTF8String of 1..32 bytes. Evidence naming another board
# is contraindicated, so a device cannot pick a board whose reference values ask for less.
BOARD_EXTENSION = x509.ObjectIdentifier("2.25.327772217845798804195842825146041411991")
MAX_BOARD_BYTES = 32


class NotEndorsedError(UnknownDeviceError):
    """The chain does not lead to a trusted maker CA (what trust on first use may stand in for;
    never a revoked certificate or a malformed one)."""


@dataclass(frozen=True)
class Endorsement:
    device: str
    key: VerifyingKey
    issuer: str
    fingerprint: bytes  # SHA-256 of the leaf certificate
    key_kind: str = "software"  # "tpm" when the certificate carries TPM_KEY_POLICY
    board: str | None = None  # from BOARD_EXTENSION, when the maker put it in the certificate
    anchor: bytes = b""  # SHA-256 of the trusted maker CA certificate the chain leads to
    certs: str = ""  # cert_ids() of the chain, checked against revocations at every appraisal


def load_certs(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more) or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise MalformedInputError(f"not an X.509 certificate: {e}") from e


def _cn(name: x509.Name) -> str:
    """The commonName, escaped for messages (certificates come from the device)."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return safe(attrs[0].value if attrs else name.rfc4514_string())


def device_name(cert: x509.Certificate) -> str:
    """The device name a certificate's CN states; it must be a device id (MQTT ``<device>``)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = attrs[0].value if attrs else ""
    if not isinstance(cn, str) or not DEVICE_RE.fullmatch(cn):
        raise UnknownDeviceError(f"device certificate CN '{safe(cn)}' is not a device id "
                                 "(1..64 of A-Z a-z 0-9 . _ -)")
    return cn


def _valid_at(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UnknownDeviceError(f"{what} certificate '{_cn(cert.subject)}' is outside its "
                                 "validity period")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    return bool(bc.ca)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


RevokedIds = frozenset[str]  # "issuer-DER-hex:serial-hex"


def _cert_id(cert: x509.Certificate) -> str:
    return f"{cert.issuer.public_bytes().hex()}:{cert.serial_number:x}"


def cert_ids(chain: list[x509.Certificate]) -> str:
    """The revocation ids of a chain (leaf and intermediates), space-separated, for the store."""
    return " ".join(_cert_id(c) for c in chain)


def revoked_ids(crls: list[x509.CertificateRevocationList],
                trusted_cas: list[x509.Certificate]) -> RevokedIds:
    """The certificates the CRLs revoke; a CRL not signed by a trusted maker CA is refused."""
    out: set[str] = set()
    for crl in crls:
        issuer = next((ca for ca in trusted_cas if ca.subject == crl.issuer), None)
        try:
            ok = issuer is not None and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (ValueError, TypeError, UnsupportedAlgorithm):
            ok = False
        if not ok:
            raise MalformedInputError(f"CRL from '{_cn(crl.issuer)}' is not signed by a trusted "
                                      "maker CA")
        prefix = crl.issuer.public_bytes().hex()
        out.update(f"{prefix}:{r.serial_number:x}" for r in crl)
    return frozenset(out)


def make_crl(ca_key: SigningKey, ca_cert: x509.Certificate, serials: list[int], *,
             now: float, days: int = 30) -> x509.CertificateRevocationList:
    """The maker's CRL over ``serials`` (cumulative: pass every serial revoked so far)."""
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(when).next_update(when + dt.timedelta(days=days)))
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca_key.crypto_key, _hash_for(ca_key.crypto_key))  # type: ignore[arg-type]


def verify_endorsement(
    chain: list[x509.Certificate], trusted_cas: list[x509.Certificate], *, now: float,
    revoked: RevokedIds = frozenset(),
) -> Endorsement:
    """Check ``chain`` (leaf first) against the maker CAs; return the endorsed device key.

    Raises :class:`UnknownDeviceError` (exit 2) when the chain does not lead to a trusted CA, or
    when a certificate in it cannot be parsed (the X.509 library parses some fields lazily, so a
    hostile certificate fails here, as a verdict, not as an internal error).
    """
    try:
        e = _verify_endorsement(chain, trusted_cas, now=now)
        for cert in chain:
            if _cert_id(cert) in revoked:
                raise UnknownDeviceError(f"certificate '{_cn(cert.subject)}' (serial "
                                         f"{cert.serial_number:x}) is revoked by its issuer")
        return e
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise UnknownDeviceError(f"a certificate in the chain cannot be parsed: "
                                 f"{safe(e, 120)}") from e


def _verify_endorsement(
    chain: list[x509.Certificate], trusted_cas: list[x509.Certificate], *, now: float
) -> Endorsement:
    if not chain:
        raise UnknownDeviceError("no device certificate was presented")
    if len(chain) > MAX_CHAIN:
        raise UnknownDeviceError(f"certificate chain is longer than {MAX_CHAIN}")
    if not trusted_cas:
        raise NotEndorsedError("the verifier trusts no device-maker CA")
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    leaf = chain[0]
    _valid_at(leaf, when, "device")
    for child, parent in itertools.pairwise(chain):
        _valid_at(parent, when, "intermediate")
        if not _is_ca(parent) or not _issued_by(child, parent):
            raise NotEndorsedError(f"certificate '{_cn(child.subject)}' is not issued by "
                                     f"'{_cn(parent.subject)}'")
    top = chain[-1]
    anchor = next((ca for ca in trusted_cas if _is_ca(ca) and _issued_by(top, ca)), None)
    if anchor is None:
        raise NotEndorsedError(
            f"device certificate '{_cn(leaf.subject)}' is not endorsed by a trusted maker CA",
            hint="add the maker's CA certificate to [enrollment] maker_cas",
        )
    _valid_at(anchor, when, "maker CA")
    pub = leaf.public_key()
    if not isinstance(pub, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise UnknownDeviceError("device certificate key is neither Ed25519 nor P-256")
    try:
        key = VerifyingKey.from_crypto(pub)
    except Exception as e:  # ConfigError for a wrong curve
        raise UnknownDeviceError(f"device certificate key is not usable: {e}") from e
    return Endorsement(
        device=device_name(leaf),
        key=key,
        issuer=_cn(anchor.subject),
        fingerprint=leaf.fingerprint(hashes.SHA256()),
        key_kind="tpm" if _has_tpm_policy(leaf) else "software",
        board=board_of(leaf),
        anchor=anchor.fingerprint(hashes.SHA256()),
        certs=cert_ids(chain),
    )


def _board_der(board: str) -> bytes:
    raw = board.encode()
    if not 0 < len(raw) <= MAX_BOARD_BYTES:
        raise ValueError(f"board name must be 1..{MAX_BOARD_BYTES} bytes")
    return bytes([0x0C, len(raw)]) + raw  # UTF8String, short-form length


def board_of(cert: x509.Certificate) -> str | None:
    """The board the maker fixed in ``cert`` (:data:`BOARD_EXTENSION`), or None."""
    try:
        ext = cert.extensions.get_extension_for_oid(BOARD_EXTENSION).value
    except x509.ExtensionNotFound:
        return None
    raw = getattr(ext, "value", b"")
    if (len(raw) < 2 or raw[0] != 0x0C or raw[1] != len(raw) - 2
            or not 0 < raw[1] <= MAX_BOARD_BYTES):
        raise UnknownDeviceError("device certificate's board extension is malformed")
    try:
        return bytes(raw[2:]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnknownDeviceError("device certificate's board extension is not UTF-8") from e


def _has_tpm_policy(cert: x509.Certificate) -> bool:
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return False
    return any(p.policy_identifier == TPM_KEY_POLICY for p in policies)


def _hash_for(key: Any) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(key: SigningKey, name: str, *, now: float, days: int = 3650) -> x509.Certificate:
    """A self-signed maker CA certificate (for the vendor walk-through and tests)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.fromtimestamp(now, tz=dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public.crypto_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
    )
    return builder.sign(key.crypto_key, _hash_for(key.crypto_key))  # type: ignore[arg-type]


def issue_device_cert(
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    device_key: VerifyingKey,
    device: str,
    *,
    now: float,
    days: int = 3650,
    tpm: bool = False,
    board: str | None = None,
) -> x509.Certificate:
    """The maker's endorsement: a leaf certificate for ``device_key`` with CN = ``device``.

    ``tpm=True`` adds :data:`TPM_KEY_POLICY`: the maker vouches that the key lives in a TPM, and
    only then does the verifier accept TPM quotes signed by it. ``board`` adds
    :data:`BOARD_EXTENSION`: the board (EAT hwmodel) whose reference values apply.
    """
    start = dt.datetime.fromtimestamp(now, tz=dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
        .issuer_name(ca_cert.subject)
        .public_key(device_key.crypto_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
    )
    if tpm:
        builder = builder.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(TPM_KEY_POLICY, None)]),
            critical=False)
    if board is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(BOARD_EXTENSION, _board_der(board)), critical=False)
    return builder.sign(ca_key.crypto_key, _hash_for(ca_key.crypto_key))  # type: ignore[arg-type]
