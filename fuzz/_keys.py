"""Fixed keys for the fuzz targets, derived from public labels (never use them for anything else).

The saved corpus holds inputs signed with these keys; deriving them from a label keeps the corpus
valid across runs without storing private keys in the repository.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edgeward.core.keys import SigningKey


def fixed_key(label: str, alg: str = "ed25519") -> SigningKey:
    seed = hashlib.sha256(b"edgeward-fuzz-key:" + label.encode()).digest()
    if alg == "ed25519":
        return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    if alg == "p256":
        n = int.from_bytes(seed, "big") % (2**255) + 1
        return SigningKey(ec.derive_private_key(n, ec.SECP256R1()))
    raise ValueError(alg)
