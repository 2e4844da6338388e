"""The one signer interface behind which evidence keys live (issue 3, "Keys").

An Attester (RFC 9334 §3.1) signs its Evidence with either

* a TPM 2.0 attestation key, a restricted ECDSA P-256 signing key that never leaves the TPM
  (:class:`edgeward.firmware_shim.linux.tpm.TpmSigner`), ``kind == "tpm"``; or
* a software key held in a file (Ed25519 or P-256, mode 0600)
  (:class:`edgeward.firmware_shim.sim.signer.SoftwareSigner`), ``kind == "software"``.

``kind`` goes into the evidence honestly, so the verifier's policy decides whether a software
key is acceptable. ``sign`` returns the COSE form of the signature (RFC 9053 §2.1, §2.2:
``r || s`` for ES256, the 64-byte signature for EdDSA), so a Signer can be handed to
:func:`edgeward.core.cose.sign1`. ``public`` is a :class:`~edgeward.core.keys.VerifyingKey`;
``key_id`` is SHA-256 over its SubjectPublicKeyInfo DER.

This module does no I/O.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from edgeward.core.keys import VerifyingKey

SignerKind = Literal["tpm", "software"]
SIGNER_KINDS: tuple[SignerKind, ...] = ("tpm", "software")


@runtime_checkable
class Signer(Protocol):
    """What an evidence signer offers: an algorithm, a key id, its kind and a sign operation."""

    alg: str  # "EdDSA" | "ES256"
    key_id: bytes
    kind: SignerKind
    public: VerifyingKey

    def sign(self, msg: bytes) -> bytes: ...
