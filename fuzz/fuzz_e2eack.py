"""Fuzz what the backend sends a device: end-to-end acks (agent/e2eack.py) and EARs
(attestation/ear.py ``check_ear``, as the agent's ``parse_result`` uses it).

Input: byte 0 picks the mode, the rest is the MQTT payload.

* mode 0: ``check_ack`` on a signed ack as received (fixed backend key);
* mode 1: an ack payload (CBOR) signed here with the backend key, then ``check_ack``: the
  payload checks after a valid signature;
* mode 2: ``check_ear`` on a signed EAR as received (fixed verifier key);
* mode 3: an EAR payload signed here with the verifier key, then ``check_ear``.

Oracle (see _common.py): only EdgewardError is clean; anything else is a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main

DEVICE = "lock-0001"
NOW = 1_800_000_000.0


def setup() -> OneInput:
    from _keys import fixed_key

    from edgeward.agent import e2eack
    from edgeward.attestation import ear
    from edgeward.core.cose import sign1

    backend = fixed_key("backend-commands", "ed25519")
    verifier = fixed_key("verifier-ear", "ed25519")

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 4, data[1:]
        if mode == 0:
            e2eack.check_ack(body, DEVICE, backend.public)
        elif mode == 1:
            signed = sign1(body, backend, content_type=e2eack.CONTENT_TYPE)
            e2eack.check_ack(signed, DEVICE, backend.public)
        elif mode == 2:
            ear.check_ear(body, verifier.public, now=NOW, max_age=600)
        else:
            signed = sign1(body, verifier)
            ear.check_ear(signed, verifier.public, now=NOW, max_age=600)

    return one


if __name__ == "__main__":
    main("e2eack", setup)
