"""TPM 2.0 quote checking: parse TPMS_ATTEST and verify it against the enrolled AK. Pure.

Structures (TPM 2.0 Library, Part 2 "Structures"):

* TPMS_ATTEST (§10.12.12): ``magic`` UINT32 = TPM_GENERATED_VALUE 0xff544347, ``type``
  TPMI_ST_ATTEST (TPM_ST_ATTEST_QUOTE = 0x8018), ``qualifiedSigner`` TPM2B_NAME, ``extraData``
  TPM2B_DATA, ``clockInfo`` TPMS_CLOCK_INFO (§10.11.1: clock UINT64, resetCount UINT32,
  restartCount UINT32, safe BYTE), ``firmwareVersion`` UINT64, ``attested`` TPMU_ATTEST;
* TPMS_QUOTE_INFO (§10.12.4): ``pcrSelect`` TPML_PCR_SELECTION (§10.9.7: count UINT32 then
  TPMS_PCR_SELECTION {hash UINT16, sizeofSelect UINT8, pcrSelect[sizeofSelect]}), ``pcrDigest``
  TPM2B_DIGEST = H(concatenation of the selected PCR values, in selection order, each bank's
  PCRs in ascending index order; Part 3 §18.4).

All integers are big-endian. The quote's signature is ECDSA P-256 over SHA-256 of the marshalled
TPMS_ATTEST; edgeward carries it as ``r || s``. The nonce binding is
``qualifying_data(eat_nonce) = SHA-256("edgeward-quote-v1" || eat_nonce)``, so a quote made for
another challenge is refused. This module does no I/O; errors are
:class:`~edgeward.core.errors.IntegrityError` subclasses with one-line reasons.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from edgeward.core.errors import IntegrityError, MalformedInputError, SignatureError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
MAX_ATTEST_BYTES = 1024
QUOTE_BINDING_LABEL = b"edgeward-quote-v1"


class QuoteMismatchError(IntegrityError):
    """A well-formed, correctly signed quote that does not match the evidence."""


@dataclass(frozen=True)
class QuoteInfo:
    """The fields of a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE that appraisal uses."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selection: tuple[tuple[int, tuple[int, ...]], ...]  # ((hash alg, (pcr, ...)), ...)
    pcr_digest: bytes


def qualifying_data(eat_nonce: bytes) -> bytes:
    """The TPM2_Quote qualifying data that binds the verifier's nonce (32 bytes)."""
    return hashlib.sha256(QUOTE_BINDING_LABEL + eat_nonce).digest()


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise MalformedInputError("TPMS_ATTEST is truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self, max_size: int) -> bytes:
        size = self.u16()
        if size > max_size:
            raise MalformedInputError(f"TPMS_ATTEST field of {size} bytes exceeds {max_size}")
        return self.take(size)


def parse_attest(data: bytes) -> QuoteInfo:
    """Parse a marshalled TPMS_ATTEST that must be a quote (Part 2 §10.12.12, §10.12.4)."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_ATTEST_BYTES:
        raise MalformedInputError("TPMS_ATTEST is not bytes or is too large")
    r = _Reader(bytes(data))
    if r.u32() != TPM_GENERATED_VALUE:
        raise MalformedInputError("TPMS_ATTEST magic is not TPM_GENERATED_VALUE")
    if r.u16() != TPM_ST_ATTEST_QUOTE:
        raise MalformedInputError("TPMS_ATTEST is not of type TPM_ST_ATTEST_QUOTE")
    signer = r.tpm2b(68)
    extra = r.tpm2b(64)
    clock, reset, restart, safe = r.u64(), r.u32(), r.u32(), r.u8()
    firmware = r.u64()
    count = r.u32()
    if count > 16:
        raise MalformedInputError(f"TPML_PCR_SELECTION count {count} is too large")
    selection = []
    for _ in range(count):
        alg = r.u16()
        size = r.u8()
        if size > 4:
            raise MalformedInputError(f"TPMS_PCR_SELECTION sizeofSelect {size} is too large")
        bitmap = r.take(size)
        pcrs = tuple(i for i in range(size * 8) if bitmap[i // 8] & (1 << (i % 8)))
        selection.append((alg, pcrs))
    digest = r.tpm2b(64)
    if r.pos != len(r.buf):
        raise MalformedInputError("TPMS_ATTEST has trailing bytes")
    return QuoteInfo(signer, extra, clock, reset, restart, bool(safe), firmware,
                     tuple(selection), digest)


def pcr_digest(selection: tuple[tuple[int, tuple[int, ...]], ...],
               pcrs: Mapping[int, bytes]) -> bytes:
    """SHA-256 over the reported PCR values in the quote's selection order."""
    h = hashlib.sha256()
    for alg, indices in selection:
        if alg != TPM_ALG_SHA256:
            raise QuoteMismatchError(f"quote selects PCR bank 0x{alg:04x}; only SHA-256 is used")
        for i in indices:
            if i not in pcrs:
                raise QuoteMismatchError(f"the quote covers PCR {i} but the evidence lacks it")
            h.update(pcrs[i])
    return h.digest()


def verify_quote(
    attest: bytes,
    signature: bytes,
    ak_public: Any,
    *,
    eat_nonce: bytes,
    pcrs: Mapping[int, bytes],
) -> QuoteInfo:
    """Check a TPM2_Quote for real: signature by the AK, nonce binding, PCR digest.

    Raises :class:`SignatureError` when the enrolled AK did not sign ``attest``,
    :class:`QuoteMismatchError` when the quote was made for another nonce or over other PCR
    values than the evidence reports, and :class:`MalformedInputError` on bad structure.
    """
    if not isinstance(ak_public, ec.EllipticCurvePublicKey) or not isinstance(
        ak_public.curve, ec.SECP256R1
    ):
        raise SignatureError("a TPM quote needs an enrolled ECDSA P-256 attestation key")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise MalformedInputError("TPM quote signature is not 64 bytes r || s")
    info = parse_attest(attest)  # parse first: bounded, and refuses non-quotes before crypto
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        ak_public.verify(der, bytes(attest), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SignatureError("TPM quote signature does not verify with the enrolled AK") from e
    if not hmac.compare_digest(info.extra_data, qualifying_data(eat_nonce)):
        raise QuoteMismatchError("TPM quote was made for another nonce")
    covered = {i for _alg, idx in info.selection for i in idx}
    if set(pcrs) - covered:
        raise QuoteMismatchError("evidence reports PCRs the quote does not cover")
    if not hmac.compare_digest(pcr_digest(info.selection, pcrs), info.pcr_digest):
        raise QuoteMismatchError("TPM quote PCR digest differs from the reported PCR values")
    return info
