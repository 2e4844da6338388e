"""Bounded CBOR decoding: byte-level attack vectors and fuzzing (RFC 8949)."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.core import cbor
from edgeward.core.errors import MalformedInputError
from edgeward.core.limits import Limits


def bad(hexstr: str, match: str | None = None, **kw: Any) -> None:
    with pytest.raises(MalformedInputError, match=match):
        cbor.loads(bytes.fromhex(hexstr), **kw)


# --- accepted input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0,
        23,
        24,
        2**64 - 1,
        -(2**64),
        -1,
        b"",
        b"\x00" * 300,
        "",
        "héllo ✓",
        [],
        [1, [2, [3]]],
        {},
        {1: "a", -2: b"b", "k": [None, True, False]},
        1.5,
        -0.0,
        math.inf,
    ],
)
def test_round_trip(value: object) -> None:
    assert cbor.loads(cbor.dumps(value)) == value


def test_nan_round_trip() -> None:
    assert math.isnan(cbor.loads(cbor.dumps(float("nan"))))


def test_memoryview_and_bytearray_accepted() -> None:
    data = cbor.dumps({1: [1, 2]})
    assert cbor.loads(memoryview(data)) == {1: [1, 2]}
    assert cbor.loads(bytearray(data)) == {1: [1, 2]}


def test_allowed_tag_decodes() -> None:
    value = cbor.loads(bytes.fromhex("d28100"), allowed_tags=frozenset({18}))
    assert isinstance(value, cbor2.CBORTag) and value.tag == 18 and value.value == [0]


def test_depth_limit_is_inclusive() -> None:
    nested = bytes([0x81]) * 16 + b"\x00"
    cbor.loads(nested)  # exactly 16 levels: fine
    with pytest.raises(MalformedInputError, match="nested deeper than 16"):
        cbor.loads(bytes([0x81]) * 17 + b"\x00")


# --- refused input: one test per attack -------------------------------------------------


def test_empty_input() -> None:
    bad("", "empty")


@pytest.mark.parametrize(
    "hexstr",
    [
        "18",  # uint head missing its 1-byte argument
        "19 01",  # 2-byte argument truncated
        "1b 00 00 00",  # 8-byte argument truncated
        "43 01 02",  # bstr of 3, 2 given
        "63 61 62",  # tstr of 3, 2 given
        "82 01",  # array of 2, 1 given
        "a1 01",  # map with a key and no value
        "d2",  # tag with no content
        "fb 00 00",  # double truncated
    ],
)
def test_truncated_input(hexstr: str) -> None:
    """Attack: truncated encodings must not read past the end or hang."""
    bad(hexstr.replace(" ", ""))


def test_trailing_bytes() -> None:
    """Attack: smuggling data after the item (parsers that ignore the tail disagree)."""
    bad("0100", "trailing")
    bad("8100ff", "trailing")


def test_deep_nesting_1000_arrays() -> None:
    """Attack: stack exhaustion with 1000 nested arrays."""
    with pytest.raises(MalformedInputError, match="nested deeper than 16"):
        cbor.loads(b"\x81" * 1000 + b"\x00")


def test_deep_nesting_maps_and_tags() -> None:
    with pytest.raises(MalformedInputError, match="nested deeper"):
        cbor.loads(b"\xa1\x00" * 1000 + b"\x00")
    with pytest.raises(MalformedInputError, match="nested deeper"):
        cbor.loads(b"\xd2" * 1000 + b"\x00", allowed_tags=frozenset({18}))


@pytest.mark.parametrize(
    "hexstr",
    [
        "5b ffffffffffffffff",  # bstr of 2^64-1 bytes
        "7b ffffffffffffffff",  # tstr
        "9b ffffffffffffffff",  # array of 2^64-1 items
        "bb ffffffffffffffff",  # map of 2^64-1 pairs
        "5b 0000000100000000 00",  # 4 GiB bstr with 1 byte present
        "9a 7fffffff 00",
    ],
)
def test_huge_declared_length(hexstr: str) -> None:
    """Attack: a 2^64 declared length must be refused without allocating."""
    bad(hexstr.replace(" ", ""), "remain")


def test_duplicate_map_keys() -> None:
    """Attack: duplicate keys (first-wins vs last-wins parser differential)."""
    bad("a2 01 00 01 01".replace(" ", ""), "duplicate")
    bad("a2 61 61 00 61 61 01".replace(" ", ""), "duplicate")
    bad("a2 20 00 20 01".replace(" ", ""), "duplicate")


def test_duplicate_map_keys_non_shortest_encoding() -> None:
    """Attack: the same key written with a longer head (0x01 vs 0x18 0x01) is still a duplicate."""
    bad("a2 01 00 18 01 01".replace(" ", ""), "duplicate")
    bad("a2 01 00 1b 0000000000000001 01".replace(" ", ""), "duplicate")


def test_distinct_keys_int_and_text_not_duplicates() -> None:
    assert cbor.loads(bytes.fromhex("a2 01 00 61 31 01".replace(" ", ""))) == {1: 0, "1": 1}
    # same bytes, different major type: 1 and -2 (0x01 vs 0x21) are different keys
    assert cbor.loads(bytes.fromhex("a2 01 00 21 01".replace(" ", ""))) == {1: 0, -2: 1}


def test_duplicate_keys_in_nested_maps_are_independent() -> None:
    assert cbor.loads(bytes.fromhex("a2 01 a1 01 00 02 a1 01 00".replace(" ", ""))) == {
        1: {1: 0},
        2: {1: 0},
    }


@pytest.mark.parametrize(
    "hexstr",
    [
        "5f 41 00 ff",  # indefinite bstr
        "7f 61 61 ff",  # indefinite tstr
        "9f 01 ff",  # indefinite array
        "bf 01 00 ff",  # indefinite map
    ],
)
def test_indefinite_length_refused(hexstr: str) -> None:
    """Attack: indefinite lengths (unbounded streaming, non-deterministic encodings)."""
    bad(hexstr.replace(" ", ""), "indefinite")


def test_stray_break_and_bad_additional_info() -> None:
    bad("ff", "break")
    bad("1f", "not well-formed")  # ai 31 on uint
    bad("3f", "not well-formed")
    bad("df 00", "not well-formed")
    for ai in (28, 29, 30):
        bad(f"{ai:02x}", "reserved")
        bad(f"{0xE0 | ai:02x}", "reserved")


@pytest.mark.parametrize(
    "tag_hex", ["c0 60", "c1 00", "c2 40", "d8 62 80", "d8 1c 00", "d9 d9f7 00"]
)
def test_forbidden_tags(tag_hex: str) -> None:
    """Attack: tags the caller did not ask for (dates, bignums, tag 98 COSE_Sign, shared refs)."""
    bad(tag_hex.replace(" ", ""), "tag")


def test_tag_allowed_only_when_listed() -> None:
    bad("d8 62 80".replace(" ", ""), "tag 98", allowed_tags=frozenset({18}))


@pytest.mark.parametrize(
    "hexstr",
    [
        "a1 40 00",  # bstr key
        "a1 80 00",  # array key
        "a1 a0 00",  # map key
        "a1 f4 00",  # false key (== 0 in Python dicts)
        "a1 f5 00",  # true key (== 1 in Python dicts)
        "a1 f6 00",  # null key
        "a1 f9 3c00 00",  # float key 1.0 (== 1 in Python dicts)
        "a1 c1 00 00",  # tagged key
    ],
)
def test_non_int_non_text_map_keys(hexstr: str) -> None:
    """Attack: keys of other types (True == 1 == 1.0 collide in Python dicts)."""
    bad(hexstr.replace(" ", ""), None, allowed_tags=frozenset({1}))


def test_bool_key_cannot_shadow_int_key() -> None:
    bad("a2 01 00 f5 01".replace(" ", ""), "map key")


def test_huge_item_count() -> None:
    """Attack: many tiny items (CPU/memory amplification) are bounded by max_cbor_items."""
    data = b"\x99\xff\xff" + b"\x00" * 0xFFFF
    with pytest.raises(MalformedInputError, match="more than 1000 data items"):
        cbor.loads(data, limits=Limits(max_cbor_items=1000))
    assert len(cbor.loads(data)) == 0xFFFF


def test_oversized_input() -> None:
    """Attack: input larger than max_cbor_bytes is refused before scanning."""
    data = cbor.dumps(b"\x00" * 2000)
    with pytest.raises(MalformedInputError, match="exceeds the limit of 1000"):
        cbor.loads(data, limits=Limits(max_cbor_bytes=1000))
    with pytest.raises(MalformedInputError, match="exceeds"):
        cbor.loads(memoryview(data), limits=Limits(max_cbor_bytes=1000))


@pytest.mark.parametrize("payload", ["ff", "c328", "eda080", "f4908080", "80", "c0"])
def test_invalid_utf8_text(payload: str) -> None:
    """Attack: invalid UTF-8 (overlong, surrogates, out of range) in text strings."""
    n = len(payload) // 2
    bad(f"{0x60 | n:02x}{payload}", "UTF-8")


def test_simple_values_refused() -> None:
    bad("f7", "simple value 23")  # undefined
    bad("e0", "simple value 0")
    bad("f8 20".replace(" ", ""), "simple value 32")
    bad("f8 00".replace(" ", ""), "two-byte simple value")


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        cbor.loads("a0")  # type: ignore[arg-type]  # the wrong type on purpose


# --- deterministic encoding (RFC 8949 §4.2.1) ------------------------------------------------


def test_dumps_sorts_keys_bytewise_not_length_first() -> None:
    # bytewise: 0a < 1864 (100) < 20 (-1) < 6161 ("a"); cbor2 canonical would put -1 before 100
    assert cbor.dumps({-1: 1, 100: 2, "a": 3, 10: 4}).hex() == "a40a041864022001616103"


def test_dumps_shortest_forms() -> None:
    assert cbor.dumps(23) == b"\x17"
    assert cbor.dumps(24) == b"\x18\x18"
    assert cbor.dumps(-25) == b"\x38\x18"
    assert cbor.dumps(1.5) == b"\xf9\x3e\x00"
    assert cbor.dumps(100000.0) == b"\xfa\x47\xc3\x50\x00"
    assert cbor.dumps(1.1) == b"\xfb" + bytes.fromhex("3ff199999999999a")
    assert cbor.dumps(2**64 - 1) == b"\x1b" + b"\xff" * 8


def test_dumps_rejects_unsupported() -> None:
    with pytest.raises(TypeError):
        cbor.dumps(object())
    with pytest.raises(ValueError):
        cbor.dumps(2**64)


# --- fuzzing ---------------------------------------------------------------------------------

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-100, 100) | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=30,
)

DEEP = Limits(max_cbor_depth=64)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    """Attack: arbitrary bytes give a value or MalformedInputError, never another exception."""
    try:
        cbor.loads(data, allowed_tags=frozenset({18}))
    except MalformedInputError:
        pass


@FUZZ
@given(values, st.data())
def test_fuzz_mutations_of_valid_encodings(value: object, data: st.DataObject) -> None:
    """Attack: bit flips, truncations and insertions in valid encodings."""
    enc = bytearray(cbor.dumps(value))
    assert cbor.loads(bytes(enc), limits=DEEP) == value
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "set"]))
    i = data.draw(st.integers(0, len(enc)))
    if op == "flip" and i < len(enc):
        enc[i] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        del enc[i:]
    elif op == "insert":
        enc[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    elif i < len(enc):
        enc[i] = data.draw(st.integers(0, 255))
    try:
        cbor.loads(bytes(enc), allowed_tags=frozenset({18}))
    except MalformedInputError:
        pass


@FUZZ
@given(values)
def test_fuzz_dumps_is_deterministic_and_agrees_with_cbor2(value: object) -> None:
    enc = cbor.dumps(value)
    decoded = cbor2.loads(enc)
    assert cbor.dumps(decoded) == enc


@pytest.mark.parametrize("arg", [0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1])
@pytest.mark.parametrize("major", [cbor.UINT, cbor.BSTR, cbor.TSTR, 4, 5, 6])
def test_head_is_the_preferred_head(major: int, arg: int) -> None:
    """The one head encoder the fast paths (envelope, Sig_structure) use: shortest form, §4.2.1."""
    got = cbor.head(major, arg)
    if major == cbor.UINT:
        assert got == cbor2.dumps(arg)
    assert got[0] >> 5 == major
    extra = 0 if arg < 24 else 1 if arg < 256 else 2 if arg < 65_536 else 4 if arg < 2**32 else 8
    assert len(got) == 1 + extra
    assert int.from_bytes(got[1:], "big") == arg if extra else got[0] & 0x1F == arg


@pytest.mark.parametrize("arg", [-1, 2**64])
def test_head_refuses_arguments_out_of_range(arg: int) -> None:
    with pytest.raises(ValueError):
        cbor.head(cbor.UINT, arg)
