"""Fuzz COSE_Sign1 decoding and verification (core/cose.py, RFC 9052 §4.2, §4.4).

Input: a COSE_Sign1 as received. ``decode_sign1`` checks its structure, then ``verify1`` checks it
against a fixed Ed25519 key and a trust store holding a fixed P-256 key (both derived from fixed
seeds so that the saved corpus stays signed with them).

Oracle (see _common.py): only EdgewardError (MalformedInputError, SignatureError,
UntrustedKeyError) is clean; anything else is a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def setup() -> OneInput:
    from _keys import fixed_key

    from edgeward.core import cose
    from edgeward.core.keys import TrustStore

    ed = fixed_key("cose-ed25519", "ed25519")
    p256 = fixed_key("cose-p256", "p256")
    trust = TrustStore([ed.public, p256.public])

    def one(data: bytes) -> None:
        cose.decode_sign1(data)
        try:
            cose.verify1(data, ed.public)
        finally:
            cose.verify1(data, trust, external_aad=b"edgeward")

    return one


if __name__ == "__main__":
    main("cose", setup)
