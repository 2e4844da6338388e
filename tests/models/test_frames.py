"""Local-socket frames: a length-prefixed CBOR event per frame, bounded, decoded incrementally."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.core import cbor
from edgeward.core.errors import MalformedInputError
from edgeward.core.frames import MAX_FRAME, FrameDecoder, encode_frame

EV = {"type": "anomaly", "ts": 1.5, "body": {"severity": "critical", "score": 7.25}}


def test_round_trip_split_at_every_byte():
    data = encode_frame(EV) + encode_frame({"type": "b", "body": {}})
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        got = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert got == [EV, {"type": "b", "body": {}}]
        assert dec.pending == 0 and dec.rejected == []


def test_truncated_frame_waits_for_the_rest():
    data = encode_frame(EV)
    dec = FrameDecoder()
    assert dec.feed(data[:-1]) == [] and dec.pending == len(data) - 1


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 0xFFFFFFFF])
def test_attack_oversized_or_zero_length_prefix_poisons_the_stream(length):
    with pytest.raises(MalformedInputError, match="frame length"):
        FrameDecoder().feed(struct.pack(">I", length) + b"\x00" * 8)


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"\xff\xff", "garbage CBOR"),
        (cbor.dumps([1, 2, 3]), "not a map"),
        (cbor.dumps({"body": {}}), "no type"),
        (cbor.dumps({"type": "", "body": {}}), "empty type"),
        (cbor.dumps({"type": "x", "body": [1]}), "body not a map"),
        (cbor.dumps({"type": "x", "ts": "yesterday"}), "ts not a number"),
        (b"\x81" * 40 + b"\x00", "nested too deeply"),
    ],
)
def test_attack_bad_frame_is_skipped_and_counted_good_neighbours_kept(payload, why):
    bad = struct.pack(">I", len(payload)) + payload
    dec = FrameDecoder()
    got = dec.feed(encode_frame(EV) + bad + encode_frame(EV))
    assert got == [EV, EV], why
    assert len(dec.rejected) == 1


def test_encode_refuses_an_event_larger_than_a_frame():
    with pytest.raises(ValueError, match="larger than"):
        encode_frame({"type": "x", "body": {"pad": "x" * MAX_FRAME}})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes_give_events_or_a_clean_error(data):
    dec = FrameDecoder()
    try:
        events = dec.feed(data)
    except MalformedInputError:
        return
    assert all(isinstance(e, dict) and isinstance(e["type"], str) for e in events)
