"""Fuzz signed commands as a device receives them (agent/commands.py ``CommandGate.check``).

Input: byte 0 picks the mode, the rest is the data.

* mode 0: a signed command (COSE_Sign1) as received, checked by a gate that trusts a fixed
  backend key;
* mode 1: a command payload (CBOR) signed here with the backend key, then checked: the payload,
  freshness, replay and argument checks after a valid signature.

Oracle (see _common.py): only EdgewardError is clean; anything else is a bug. A command the gate
accepts must be for this device, within its lifetime at the gate's clock, above the last
sequence number, with finite times (AssertionError otherwise: a command that never expires).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main

DEVICE = "lock-0001"
NOW = 1_800_000_000.0
LAST_SEQ = 5


def setup() -> OneInput:
    from _keys import fixed_key

    from edgeward.agent import commands
    from edgeward.core.cose import sign1

    backend = fixed_key("backend-commands", "ed25519")

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 2, data[1:]
        if mode == 1:
            body = sign1(body, backend, content_type=commands.CONTENT_TYPE)
        gate = commands.CommandGate(DEVICE, backend.public, last_seq=LAST_SEQ)
        cmd = gate.check(body, NOW)
        assert cmd.device == DEVICE and cmd.seq > LAST_SEQ and gate.last_seq == cmd.seq
        assert math.isfinite(cmd.iat) and math.isfinite(cmd.exp), (cmd.iat, cmd.exp)
        assert cmd.iat <= NOW + gate.max_skew and NOW <= cmd.exp

    return one


if __name__ == "__main__":
    main("commands", setup)
