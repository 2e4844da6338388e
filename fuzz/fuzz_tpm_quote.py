"""Fuzz TPM 2.0 quote checking (attestation/tpm_quote.py, TPM 2.0 Part 2 §10.12.12).

Input: byte 0 picks the mode, the rest is a marshalled TPMS_ATTEST.

* mode 0: ``parse_attest`` alone (what a verifier does before any crypto);
* mode 1: ``verify_quote`` with a fixed signature (the signature check fails, or the parser
  refuses first);
* mode 2: the TPMS_ATTEST is signed here with a fixed P-256 attestation key, then
  ``verify_quote`` against reported PCRs 0..7: the checks after a valid signature (nonce
  binding, PCR selection and digest).

Oracle (see _common.py): only EdgewardError is clean (MalformedInputError, SignatureError,
QuoteMismatchError); anything else is a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main

NONCE = b"edgeward-fuzz-nonce-0123456789ab"


def setup() -> OneInput:
    from _keys import fixed_key
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from edgeward.attestation import tpm_quote

    ak = fixed_key("tpm-ak", "p256").crypto_key
    pub = ak.public_key()
    pcrs = {i: bytes([i]) * 32 for i in range(8)}

    def sign(attest: bytes) -> bytes:
        r, s = decode_dss_signature(ak.sign(attest, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 3, data[1:]
        if mode == 0:
            tpm_quote.parse_attest(body)
            return
        sig = sign(body) if mode == 2 else b"\x01" * 64
        tpm_quote.verify_quote(body, sig, pub, eat_nonce=NONCE, pcrs=pcrs)

    return one


if __name__ == "__main__":
    main("tpm_quote", setup)
