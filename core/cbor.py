"""Bounded CBOR decoding and deterministic CBOR encoding (RFC 8949).

:func:`loads` never hands untrusted bytes straight to a CBOR library. It first walks the raw bytes
with a small iterative (non-recursive) scanner that checks, within :class:`Limits`:

* the total length (``max_cbor_bytes``), before any other work;
* well-formedness (RFC 8949 §3, §5.3.1 and Appendix C): reserved additional-information values
  28..30, truncated heads and payloads, a two-byte simple value below 32 (§3.3);
* nesting depth (``max_cbor_depth``; arrays, maps and tags each count as one level) and the total
  number of data items (``max_cbor_items``);
* that every declared length fits in the bytes that remain, so a length of 2**64 is refused
  without allocating anything;
* no trailing bytes after the one top-level item (§5.3.1 "not well-formed" case);
* no duplicate map keys (§5.6): keys are compared by their decoded identity, so the same key
  written with a longer head (``0x01`` and ``0x18 0x01``) is still a duplicate;
* map keys are integers or text strings only; text strings are valid UTF-8 (§5.3.2);
* tags only from ``allowed_tags``; indefinite-length items (§3.2) and simple values other than
  false, true and null are refused.

Only then does cbor2 decode the bytes. Anything wrong raises
:class:`~edgeward.core.errors.MalformedInputError` with a one-line reason; no other exception
escapes for any ``bytes``/``bytearray``/``memoryview`` input.

:func:`dumps` writes the core deterministic encoding of RFC 8949 §4.2.1: preferred (shortest)
argument encoding, definite lengths only, map keys sorted by the bytewise lexicographic order of
their encodings, floats in their shortest exact form (§4.2.2 preferred serialization). Note that
``cbor2.dumps(canonical=True)`` sorts map keys length-first (the older RFC 7049 §3.9 rule), which
differs from §4.2.1 (e.g. for the keys ``-1`` and ``100``), so maps are encoded here.

This module does no I/O.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from typing import Any

import cbor2

from edgeward.core.errors import MalformedInputError
from edgeward.core.limits import DEFAULT_LIMITS, Limits

logger = logging.getLogger(__name__)

__all__ = ["BSTR", "TSTR", "UINT", "dumps", "head", "loads"]

# Major types (RFC 8949 §3.1).
_UINT, _NINT, _BSTR, _TSTR, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
UINT, BSTR, TSTR = _UINT, _BSTR, _TSTR  # for callers of :func:`head`

_NO_TAGS: frozenset[int] = frozenset()


def _fail(reason: str) -> MalformedInputError:
    return MalformedInputError(f"CBOR {reason}")


def _scan(buf: bytes, limits: Limits, allowed_tags: frozenset[int]) -> None:
    """Walk ``buf`` once, iteratively, and raise MalformedInputError on the first problem.

    The open container on top is held in locals (items left in it, the keys a map has seen,
    whether a key comes next), the outer ones on a stack; for a map ``left`` counts keys and
    values. This runs on every untrusted CBOR item (four per evidence token), so it is written
    for CPython's speed: one branch per major-type group, no per-item allocation but map keys.
    """
    end = len(buf)
    pos = 0
    items = 0
    max_depth = limits.max_cbor_depth
    max_items = limits.max_cbor_items
    stack: list[tuple[int, set[Any] | None, bool]] = []
    left = -1  # no container open yet: the one top-level item
    keys: set[Any] | None = None
    want_key = False
    from_bytes = int.from_bytes
    while True:
        if pos >= end:
            raise _fail("is truncated (input ended where a data item was expected)")
        initial = buf[pos]
        major = initial >> 5
        info = initial & 0x1F
        start = pos
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            n = 1 << (info - 24)
            if pos + n > end:
                raise _fail("is truncated inside a data item head")
            arg = from_bytes(buf[pos : pos + n], "big")
            pos += n
        elif info == 31:
            if major == _SIMPLE:
                raise _fail("has a 'break' stop code outside an indefinite-length item")
            if major in (_UINT, _NINT, _TAG):
                raise _fail(f"is not well-formed (additional information 31 on major type {major})")
            raise _fail("uses an indefinite-length item, which is not accepted")
        else:
            raise _fail(f"is not well-formed (reserved additional information {info})")

        items += 1
        if items > max_items:
            raise _fail(f"has more than {max_items} data items")

        if major <= _NINT:
            if want_key:
                k: Any = (major, arg)
                if k in keys:  # type: ignore[operator]
                    raise _fail(f"map has a duplicate key at byte {start}")
                keys.add(k)  # type: ignore[union-attr]
        elif major <= _TSTR:
            if want_key and major == _BSTR:
                raise _fail(f"map key of major type {major} (only integer or text keys allowed)")
            if arg > end - pos:
                raise _fail(f"declares a string of {arg} bytes but only {end - pos} remain")
            if major == _TSTR:
                text = buf[pos : pos + arg]
                try:
                    text.decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail("text string is not valid UTF-8") from None
                if want_key:
                    k = (major, text)
                    if k in keys:  # type: ignore[operator]
                        raise _fail(f"map has a duplicate key at byte {start}")
                    keys.add(k)  # type: ignore[union-attr]
            pos += arg
        else:
            if want_key:
                raise _fail(f"map key of major type {major} (only integer or text keys allowed)")
            if major == _SIMPLE:
                if info == 24 and arg < 32:
                    raise _fail(f"is not well-formed (two-byte simple value {arg})")
                if info <= 24 and arg not in (20, 21, 22):
                    raise _fail(f"simple value {arg} is not accepted (only false, true, null)")
            else:
                new_keys: set[Any] | None = None
                if major == _ARRAY:
                    if arg > end - pos:
                        raise _fail(f"declares an array of {arg} items but only {end - pos} "
                                    "bytes remain")
                    size = arg
                elif major == _MAP:
                    if 2 * arg > end - pos:
                        raise _fail(f"declares a map of {arg} pairs but only {end - pos} bytes "
                                    "remain")
                    size, new_keys = 2 * arg, set()
                else:
                    if arg not in allowed_tags:
                        raise _fail(f"tag {arg} is not allowed here")
                    size = 1
                depth = len(stack) + (left >= 0)
                if depth >= max_depth:
                    raise _fail(f"nested deeper than {max_depth}")
                if size > 0:
                    if left >= 0:
                        stack.append((left, keys, want_key))
                    left, keys, want_key = size, new_keys, new_keys is not None
                    continue
                # an empty array or map is complete at once: fall through as one finished item
        # one item finished: count it off its container, and every container it completes
        while True:
            if left < 0:  # the top-level item is done
                if pos != end:
                    raise _fail(f"has {end - pos} trailing bytes after the data item")
                return
            left -= 1
            if keys is not None:
                want_key = not want_key
            if left > 0:
                break
            if stack:
                left, keys, want_key = stack.pop()
            else:
                left, keys, want_key = -1, None, False


def loads(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    allowed_tags: frozenset[int] = _NO_TAGS,
) -> Any:
    """Decode one CBOR data item from untrusted ``data`` within ``limits``.

    Raises :class:`MalformedInputError` for anything that is not one well-formed, bounded data
    item (see the module docstring for the checks). Tags in ``allowed_tags`` come back as
    :class:`cbor2.CBORTag` (or cbor2's semantic decoding of them, where cbor2 has one).
    """
    if isinstance(data, memoryview):
        if data.nbytes > limits.max_cbor_bytes:
            raise _fail(
                f"input of {data.nbytes} bytes exceeds the limit of {limits.max_cbor_bytes}"
            )
        buf = data.tobytes()
    elif isinstance(data, bytes | bytearray):
        if len(data) > limits.max_cbor_bytes:
            raise _fail(f"input of {len(data)} bytes exceeds the limit of {limits.max_cbor_bytes}")
        buf = bytes(data)
    else:
        raise TypeError(f"CBOR input must be bytes, not {type(data).__name__}")
    if not buf:
        raise _fail("input is empty")
    _scan(buf, limits, allowed_tags)
    try:
        return cbor2.loads(buf)
    except Exception as e:  # pre-scan should have caught it; never let a library error escape
        raise _fail(f"could not be decoded ({type(e).__name__})") from e


# --- deterministic encoding (RFC 8949 §4.2.1) ------------------------------------------------


# One byte each, so that a one-byte head is a look-up, not an allocation; and for each major
# type the initial bytes of its 1-, 2-, 4- and 8-byte arguments (additional information 24..27).
_BYTE = tuple(bytes((b,)) for b in range(256))
_LONG = tuple(tuple(_BYTE[(major << 5) | info] for info in (24, 25, 26, 27)) for major in range(8))


def head(major: int, arg: int) -> bytes:
    """The head of a data item: ``major`` type and ``arg`` in preferred form (RFC 8949 §3, §4.2.1).

    The one CBOR head encoder. :func:`dumps` writes every head with it, and so do the fast paths
    that assemble fixed structures from pieces (the agent's envelope, COSE's ``Sig_structure``),
    so they stay byte for byte what :func:`dumps` gives. ``arg`` is 0..2**64-1; anything else
    is a ``ValueError``.
    """
    if arg < 24:
        if arg < 0:
            raise ValueError("a CBOR head's argument cannot be negative")
        return _BYTE[(major << 5) | arg]
    initial = _LONG[major]
    if arg < 0x100:
        return initial[0] + _BYTE[arg]
    if arg < 0x10000:
        return initial[1] + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return initial[2] + arg.to_bytes(4, "big")
    if arg < 0x10000000000000000:
        return initial[3] + arg.to_bytes(8, "big")
    raise ValueError("integer does not fit in a CBOR head (use a bignum tag explicitly)")


def _float(value: float) -> bytes:
    # Preferred serialization: the shortest of half/single/double that keeps the value exactly.
    if value != value:  # NaN: the canonical quiet NaN, half precision (§4.2.2)
        return b"\xf9\x7e\x00"
    for fmt, info in (("e", 25), ("f", 26)):
        try:
            packed = struct.pack(">" + fmt, value)
        except (OverflowError, struct.error):
            continue
        if struct.unpack(">" + fmt, packed)[0] == value:
            return bytes([0xE0 | info]) + packed
    return b"\xfb" + struct.pack(">d", value)


def _encode(obj: Any, out: list[bytes], depth: int) -> None:
    if depth > 64:
        raise ValueError("object nested too deeply to encode")
    if obj is False:
        out.append(b"\xf4")
    elif obj is True:
        out.append(b"\xf5")
    elif obj is None:
        out.append(b"\xf6")
    elif isinstance(obj, int):
        out.append(head(_UINT, obj) if obj >= 0 else head(_NINT, -1 - obj))
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        out.append(head(_BSTR, len(raw)))
        out.append(raw)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out.append(head(_TSTR, len(raw)))
        out.append(raw)
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, list | tuple):
        out.append(head(_ARRAY, len(obj)))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, Mapping):
        pairs = []
        for key, value in obj.items():
            kout: list[bytes] = []
            _encode(key, kout, depth + 1)
            pairs.append((b"".join(kout), value))
        pairs.sort(key=lambda p: p[0])
        for i in range(1, len(pairs)):
            if pairs[i][0] == pairs[i - 1][0]:
                raise ValueError("map has two keys with the same encoding")
        out.append(head(_MAP, len(pairs)))
        for kbytes, value in pairs:
            out.append(kbytes)
            _encode(value, out, depth + 1)
    elif isinstance(obj, cbor2.CBORTag):
        out.append(head(_TAG, obj.tag))
        _encode(obj.value, out, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as CBOR")


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` in the core deterministic encoding of RFC 8949 §4.2.1.

    Supports None, bool, int (up to 64-bit magnitude), float, bytes, str, list/tuple, mappings and
    :class:`cbor2.CBORTag`. Anything else is a programming error (``TypeError``/``ValueError``).
    """
    out: list[bytes] = []
    _encode(obj, out, 0)
    return b"".join(out)
