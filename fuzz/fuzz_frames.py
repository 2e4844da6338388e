"""Fuzz the local-socket frame decoder (core/frames.py): what any app on the device may send.

Input: the byte stream of one connection; byte 0 splits it into 1..8 ``feed`` calls (a stream
arrives in arbitrary pieces).

Oracle (see _common.py): ``feed`` returns events or raises MalformedInputError (the stream is
poisoned); anything else is a bug. Each returned event must be a map with a text ``type`` and a
map ``body`` (AssertionError otherwise), and the decoder's pending bytes never exceed one frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def setup() -> OneInput:
    from edgeward.core.frames import MAX_FRAME, FrameDecoder

    def one(data: bytes) -> None:
        if not data:
            return
        pieces, body = data[0] % 8 + 1, data[1:]
        step = max(1, len(body) // pieces)
        dec = FrameDecoder()
        for i in range(0, len(body), step):
            for ev in dec.feed(body[i : i + step]):
                assert isinstance(ev, dict) and isinstance(ev["type"], str) and ev["type"]
                assert isinstance(ev.get("body", {}), dict)
            assert dec.pending <= 4 + MAX_FRAME

    return one


if __name__ == "__main__":
    main("frames", setup)
