"""Fuzz the TFLite flatbuffer validator (models/tflite/validate.py) in pure Python.

Input: a ``.tflite`` file; byte 0 of the file also decides (bit 0 of its last byte, to keep the
flatbuffer intact) whether custom operators are allowed.

Oracle: the validator's own core (``_Validator.run``) is called, not ``validate()``, because
``validate()`` turns IndexError/struct.error/ValueError/... into a MalformedModelError as defence
in depth and logs "validator bug". Here those are bugs. Clean: MalformedModelError, PolicyError
(and any other EdgewardError). Anything else, a hang or running out of memory is a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def setup() -> OneInput:
    from edgeward.core.limits import DEFAULT_LIMITS
    from edgeward.models.tflite.validate import _Validator

    def one(data: bytes) -> None:
        allow_custom = bool(data[-1] & 1) if data else False
        _Validator(memoryview(data), allow_custom, DEFAULT_LIMITS).run()

    return one


if __name__ == "__main__":
    main("tflite", setup)
