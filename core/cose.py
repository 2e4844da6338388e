"""COSE_Sign1: single-signer signed messages (RFC 9052 §4.2, §4.4), EdDSA and ES256 only.

* :func:`sign1` builds ``COSE_Sign1 = [protected: bstr, unprotected: map, payload: bstr,
  signature: bstr]``, optionally wrapped in tag 18 (RFC 9052 §2, §4.2). The protected header
  always carries ``alg`` (label 1; -8 EdDSA, -7 ES256; RFC 9053 §2.1, §2.2) and ``kid`` (label 4,
  the signer's key id). The signature is over the ``Sig_structure``
  ``["Signature1", body_protected, external_aad, payload]`` (RFC 9052 §4.4), in the deterministic
  encoding.
* :func:`decode_sign1` checks structure only and returns an unverified :class:`Sign1Message`.
* :func:`verify1` decodes, picks the key by ``kid``, checks that the header's ``alg`` is the key's
  algorithm (no algorithm substitution) and verifies the signature. Only its return value's
  payload is trustworthy.

Header rules enforced when decoding (RFC 9052 §3, §3.1): ``alg`` must be in the *protected*
bucket; a label may not appear in both buckets (so an attacker cannot add an unprotected ``kid``
next to the signed one); ``crit`` (label 2) naming any label is refused, since this code
understands no optional headers that could be critical; ``kid`` must be a byte string,
``content type`` (label 3) an unsigned integer or a text string. A detached payload (nil) is
refused. Counter signatures, COSE_Sign and MAC/encrypt structures are not implemented.

This module does no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from edgeward.core import cbor
from edgeward.core.cbor import BSTR, head
from edgeward.core.errors import MalformedInputError, SignatureError, UntrustedKeyError
from edgeward.core.keys import ALG_EDDSA, ALG_ES256, SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

logger = logging.getLogger(__name__)

__all__ = [
    "COSE_ALG_EDDSA", "COSE_ALG_ES256", "COSE_SIGN1_TAG", "HDR_ALG", "HDR_CONTENT_TYPE",
    "HDR_CRIT", "HDR_KID", "Sign1Message", "decode_sign1", "sig_structure", "sign1", "verify1",
    "verify_decoded",
]

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_CRIT = 2
HDR_CONTENT_TYPE = 3
HDR_KID = 4
COSE_ALG_EDDSA = -8
COSE_ALG_ES256 = -7

_ALG_TO_COSE = {ALG_EDDSA: COSE_ALG_EDDSA, ALG_ES256: COSE_ALG_ES256}
_COSE_TO_ALG = {v: k for k, v in _ALG_TO_COSE.items()}
_SIGN1_TAGS = frozenset({COSE_SIGN1_TAG})
_MAX_KID = 256


_SIG1_CONTEXT = b"\x84\x6aSignature1"  # array(4), then the text "Signature1"


def sig_structure(protected_bytes: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """The ``Sig_structure`` for COSE_Sign1 (RFC 9052 §4.4), in the deterministic encoding.

    ``["Signature1", body_protected, external_aad, payload]``, byte for byte what
    ``cbor.dumps`` gives for that array (tests/models/test_cose.py), assembled from
    :func:`edgeward.core.cbor.head` because it is on the verifier's hot path (one per appraisal).
    """
    if external_aad:
        aad = bytes(external_aad)
        return b"".join((_SIG1_CONTEXT, head(BSTR, len(protected_bytes)), protected_bytes,
                         head(BSTR, len(aad)), aad, head(BSTR, len(payload)), payload))
    return b"".join((_SIG1_CONTEXT, head(BSTR, len(protected_bytes)), protected_bytes,
                     b"\x40", head(BSTR, len(payload)), payload))  # h'': no external AAD


def sign1(
    payload: bytes,
    key: SigningKey,
    *,
    content_type: int | str | None = None,
    extra_protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes:
    """Sign ``payload`` into a COSE_Sign1 message (RFC 9052 §4.2).

    ``extra_protected`` and ``unprotected`` may not set ``alg``, ``kid`` or ``content type``
    (use the arguments), nor share a label (RFC 9052 §3): that is a ``ValueError`` (misuse).
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError("COSE payload must be bytes")
    payload = bytes(payload)
    protected: dict[Any, Any] = {HDR_ALG: _ALG_TO_COSE[key.alg], HDR_KID: key.key_id}
    if content_type is not None:
        if isinstance(content_type, bool) or not isinstance(content_type, int | str):
            raise TypeError("content_type must be an int or a str")
        if isinstance(content_type, int) and content_type < 0:
            raise ValueError("content_type must be an unsigned integer")
        protected[HDR_CONTENT_TYPE] = content_type
    reserved = {HDR_ALG, HDR_KID, HDR_CONTENT_TYPE}
    for name, extra in (("extra_protected", extra_protected), ("unprotected", unprotected)):
        if extra and reserved & set(extra):
            raise ValueError(f"{name} may not set alg, kid or content type; use the arguments")
    protected.update(extra_protected or {})
    unprot = dict(unprotected or {})
    if set(unprot) & set(protected):
        raise ValueError("a header label may not be both protected and unprotected")
    protected_bytes = cbor.dumps(protected)
    signature = key.sign(sig_structure(protected_bytes, external_aad, payload))
    body = [protected_bytes, unprot, payload, signature]
    return cbor.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body) if tagged else body)


@dataclass(frozen=True)
class Sign1Message:
    """A decoded COSE_Sign1. Unverified unless it came from :func:`verify1`.

    ``content_type`` is taken from the protected header only (None if absent there), so that a
    caller that dispatches on it relies on a signed value.
    """

    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    alg: int
    kid: bytes | None
    protected_bytes: bytes
    content_type: int | str | None = None


def _bad(reason: str) -> MalformedInputError:
    return MalformedInputError(f"COSE_Sign1 {reason}")


def decode_sign1(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Sign1Message:
    """Check the structure of a COSE_Sign1 (tagged 18 or untagged) and split it up.

    Raises :class:`MalformedInputError` for anything wrong. Does not verify the signature.
    """
    obj = cbor.loads(data, limits=limits, allowed_tags=_SIGN1_TAGS)
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:  # unreachable with allowed_tags={18}; kept as a guard
            raise _bad(f"has tag {obj.tag}, expected {COSE_SIGN1_TAG}")
        obj = obj.value
    if not isinstance(obj, list) or len(obj) != 4:
        raise _bad("is not an array of 4 elements")
    protected_bytes, unprotected, payload, signature = obj
    if not isinstance(protected_bytes, bytes):
        raise _bad("protected header is not a byte string")
    if protected_bytes:
        protected = cbor.loads(protected_bytes, limits=limits)
        if not isinstance(protected, dict):
            raise _bad("protected header is not a map")
    else:
        protected = {}
    if not isinstance(unprotected, dict):
        raise _bad("unprotected header is not a map")
    if payload is None:
        raise _bad("has a detached payload, which is not supported")
    if not isinstance(payload, bytes):
        raise _bad("payload is not a byte string")
    if not isinstance(signature, bytes):
        raise _bad("signature is not a byte string")

    both = set(protected) & set(unprotected)
    if both:
        raise _bad(f"header label(s) {sorted(map(str, both))} are in both header buckets")
    if HDR_ALG not in protected:
        raise _bad("has no alg in the protected header")
    alg = protected[HDR_ALG]
    if isinstance(alg, bool) or not isinstance(alg, int) or alg not in _COSE_TO_ALG:
        raise _bad(f"alg {alg!r} is not supported (only -8 EdDSA and -7 ES256)")
    for bucket in (protected, unprotected):
        if HDR_CRIT in bucket:
            crit = bucket[HDR_CRIT]
            if not isinstance(crit, list):
                raise _bad("crit header is not an array")
            if crit:
                raise _bad(f"marks header(s) {crit!r} critical, which this verifier does not know")
    kid = protected.get(HDR_KID, unprotected.get(HDR_KID))
    if kid is not None and (not isinstance(kid, bytes) or not 0 < len(kid) <= _MAX_KID):
        raise _bad("kid is not a byte string of 1..256 bytes")
    content_type = protected.get(HDR_CONTENT_TYPE)
    for bucket in (protected, unprotected):
        ct = bucket.get(HDR_CONTENT_TYPE)
        if ct is not None and (
            isinstance(ct, bool)
            or not isinstance(ct, int | str)
            or (isinstance(ct, int) and ct < 0)
        ):
            raise _bad("content type is not an unsigned integer or a text string")
    return Sign1Message(protected=protected, unprotected=unprotected, payload=payload,
                        signature=signature, alg=alg, kid=kid, protected_bytes=protected_bytes,
                        content_type=content_type)


def verify1(
    data: bytes,
    trust: TrustStore | VerifyingKey,
    *,
    limits: Limits = DEFAULT_LIMITS,
    external_aad: bytes = b"",
) -> Sign1Message:
    """Decode and verify a COSE_Sign1 against trusted keys (RFC 9052 §4.4).

    The key is found by ``kid`` in ``trust`` (:class:`UntrustedKeyError` if absent). With a
    single :class:`VerifyingKey`, a message without ``kid`` is checked against it, and one with a
    different ``kid`` is refused as untrusted. The header ``alg`` must be the key's algorithm
    (:class:`SignatureError`), then the signature must verify (:class:`SignatureError`).
    """
    msg = decode_sign1(data, limits=limits)
    key: VerifyingKey | None
    if isinstance(trust, VerifyingKey):
        key = trust if msg.kid is None or msg.kid == trust.key_id else None
    elif isinstance(trust, TrustStore):
        if msg.kid is None:
            raise UntrustedKeyError("COSE_Sign1 names no signing key (no kid header)")
        key = trust.get(msg.kid)
    else:
        raise TypeError("trust must be a TrustStore or a VerifyingKey")
    if key is None:
        prefix = msg.kid.hex()[:16] if msg.kid else "?"
        raise UntrustedKeyError(
            f"signed by key {prefix}, which is not in the trust store",
            hint="add the signer's public key to the trust store if you trust it",
        )
    verify_decoded(msg, key, external_aad=external_aad)
    logger.debug("COSE_Sign1 verified with key %s", key.key_id.hex()[:16])
    return msg


def verify_decoded(msg: Sign1Message, key: VerifyingKey, *, external_aad: bytes = b"") -> None:
    """Verify an already-decoded message with the key its caller chose (RFC 9052 §4.4).

    The step :func:`verify1` ends with, for a caller that has decoded the message once to pick
    the key itself (the verifier's appraisal): the header's ``alg`` must be the key's algorithm
    (no algorithm substitution), then the signature over the Sig_structure must verify. Either
    failure is a :class:`SignatureError`.
    """
    if _COSE_TO_ALG.get(msg.alg) != key.alg:
        raise SignatureError(
            f"COSE_Sign1 header says alg {msg.alg} but key {key.key_id.hex()[:16]} is {key.alg}"
        )
    key.verify(sig_structure(msg.protected_bytes, external_aad, msg.payload), msg.signature)
