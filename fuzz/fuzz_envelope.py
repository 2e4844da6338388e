"""Fuzz the MQTT envelope, topic and challenge parsers (agent/envelope.py, agent/seams.py).

Input: byte 0 picks the mode, the rest is one MQTT payload or topic name.

* mode 0: ``envelope.decode`` (what the backend does with every device report);
* mode 1: ``envelope.parse_topic`` on the text (UTF-8, replacement characters allowed);
* mode 2: ``seams.parse_challenge`` (the verifier's nonce as the device receives it).

Oracle (see _common.py): only EdgewardError is clean; anything else is a bug. A decoded envelope's
``device`` and ``type``, and a parsed topic's device, must be valid ids with no control
characters (they go into topics, logs and the terminal): AssertionError otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def _printable(s: str) -> bool:
    return s.isprintable() and s.isascii()


def setup() -> OneInput:
    from edgeward.agent import envelope, seams
    from edgeward.core.limits import DEFAULT_LIMITS

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 3, data[1:]
        if mode == 0:
            env = envelope.decode(body)
            assert _printable(env.device) and _printable(env.type), (env.device, env.type)
            envelope.encode(env)
        elif mode == 1:
            device, kind = envelope.parse_topic(body.decode("utf-8", "replace"))
            assert _printable(device) and _printable(kind), (device, kind)
        else:
            nonce = seams.parse_challenge(body, DEFAULT_LIMITS)
            assert 8 <= len(nonce) <= 64

    return one


if __name__ == "__main__":
    main("envelope", setup)
