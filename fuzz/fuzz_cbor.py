"""Fuzz the bounded CBOR reader (core/cbor.py) and the deterministic writer behind it.

Input: byte 0 picks the limits (default, or tight ones that exercise the depth, item and size
bounds) and whether tags 18 and 61 are allowed; the rest is the untrusted CBOR.

Oracle (see _common.py): ``loads`` raises only MalformedInputError (an EdgewardError); anything
else is a bug. When it returns a value (tags not allowed), ``dumps`` must encode it and
``loads(dumps(x)) == x`` (NaN aside): a mismatch is an AssertionError, a bug.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def _has_nan(x: object) -> bool:
    if isinstance(x, float):
        return math.isnan(x)
    if isinstance(x, list):
        return any(_has_nan(v) for v in x)
    if isinstance(x, dict):
        return any(_has_nan(k) or _has_nan(v) for k, v in x.items())
    return False


def setup() -> OneInput:
    from edgeward.core import cbor
    from edgeward.core.limits import DEFAULT_LIMITS, Limits

    tight = Limits(max_cbor_bytes=4096, max_cbor_depth=4, max_cbor_items=64)
    tags = frozenset({18, 61})

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0], data[1:]
        limits = tight if mode & 1 else DEFAULT_LIMITS
        if mode & 2:
            cbor.loads(body, limits=limits, allowed_tags=tags)
            return
        obj = cbor.loads(body, limits=limits)
        again = cbor.loads(cbor.dumps(obj))
        assert _has_nan(obj) or again == obj, "dumps/loads round trip changed the value"

    return one


if __name__ == "__main__":
    main("cbor", setup)
