"""A fixed attestation world for the evidence fuzz target and its corpus.

Keys come from :mod:`_keys` (derived from labels), the clock is fixed, and the nonce the verifier
issued is fixed, so that evidence made once by :mod:`make_corpus` (the real attester with a
software key) is still fresh, signed by an enrolled key and endorsed by the maker CA whenever the
target runs. The signed reference values that match that evidence are kept in
``fuzz/world/refvalues.ewref``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _keys import fixed_key

NOW = 1_800_000_000.0
DEVICE = "lock-0001"
BOARD = "smartlock-pi4"
NONCE = bytes(range(32))
WORLD_DIR = Path(__file__).resolve().parent / "world"
REFVALUES = WORLD_DIR / "refvalues.ewref"


@dataclass
class World:
    device: Any  # SigningKey
    ca_key: Any
    ca_cert: Any  # x509.Certificate
    cert_der: bytes
    vendor: Any
    ear_key: Any


def world() -> World:
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.attestation.enroll import issue_device_cert, make_ca

    device = fixed_key("device", "ed25519")
    ca_key = fixed_key("maker-ca", "p256")
    ca_cert = make_ca(ca_key, "Edgeward Fuzz Maker CA", now=NOW)
    cert = issue_device_cert(ca_key, ca_cert, device.public, DEVICE, now=NOW)
    return World(device, ca_key, ca_cert, cert.public_bytes(Encoding.DER),
                 fixed_key("vendor", "ed25519"), fixed_key("verifier-ear", "ed25519"))
