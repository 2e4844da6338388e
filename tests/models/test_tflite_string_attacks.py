"""Hostile constant STRING tensors: offset tables that make LiteRT read outside the model.

A constant STRING tensor carries its own offset table (TFLite ``string_util.h``). LiteRT trusts
it: on 979eb13 a FILL or TILE whose string value pointed past its buffer passed ``validate()``,
and LiteRT then copied process memory into the output (or died with SIGSEGV). The hostile
models are built with the project's own flatbuffer writer; anything the validator lets through
runs in LiteRT only in a child process.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeward.core.errors import MalformedModelError
from edgeward.models.tflite import schema as s
from edgeward.models.tflite import validate
from edgeward.models.tflite.builder import ModelDef, OpCodeDef, OperatorDef, TensorDef, build

EDGEWARD = str(Path(sys.executable).parent / "edgeward")
Offsets = Callable[[list[int]], list[int]]


def string_buffer(strings: list[bytes], tamper: Offsets | None = None, count: int | None = None
                  ) -> bytes:
    """TFLite's string layout: int32 count, count + 1 int32 offsets, then the bytes."""
    n = len(strings)
    offsets, data = [], b""
    for x in strings:
        offsets.append(4 * (n + 2) + len(data))
        data += x
    offsets.append(4 * (n + 2) + len(data))
    if tamper is not None:
        offsets = tamper(offsets)
    head = struct.pack("<i", n if count is None else count)
    return head + b"".join(struct.pack("<i", o) for o in offsets) + data


def fill_model(value: bytes, n: int = 4) -> bytes:
    """FILL(dims = [n], value = one constant string) -> n strings."""
    m = ModelDef()
    dims = m.add_buffer(struct.pack("<i", n))
    val = m.add_buffer(value)
    m.tensors += [
        TensorDef("dims", "INT32", (1,), dims),
        TensorDef("value", "STRING", (), val),
        TensorDef("out", "STRING", (n,)),
    ]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES["FILL"]))
    m.operators.append(OperatorDef(0, (0, 1), (2,)))
    m.inputs, m.outputs = [], [2]
    return build(m)


def tile_model(value: bytes, strings: int = 2, times: int = 3) -> bytes:
    """TILE(constant strings [strings], multiples = [times]) -> strings * times strings."""
    m = ModelDef()
    val = m.add_buffer(value)
    mult = m.add_buffer(struct.pack("<i", times))
    m.tensors += [
        TensorDef("value", "STRING", (strings,), val),
        TensorDef("multiples", "INT32", (1,), mult),
        TensorDef("out", "STRING", (strings * times,)),
    ]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES["TILE"]))
    m.operators.append(OperatorDef(0, (0, 1), (2,)))
    m.inputs, m.outputs = [], [2]
    return build(m)


def run_in_litert(models: list[bytes]) -> list[list[str]]:
    """Invoke each model in a child LiteRT; a crash there fails the test, not the run."""
    code = (
        "import json, sys\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "out = []\n"
        "for h in json.load(sys.stdin):\n"
        "    it = Interpreter(model_content=bytes.fromhex(h)); it.allocate_tensors(); it.invoke()\n"
        "    t = it.get_tensor(it.get_output_details()[0]['index'])\n"
        "    out.append([bytes(x).hex() for x in t.reshape(-1)])\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps([m.hex() for m in models]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"LiteRT died on a validator-passing model: rc {r.returncode} " \
                              f"{r.stderr[-500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def refused(buf: bytes, match: str) -> None:
    with pytest.raises(MalformedModelError, match=match):
        validate(buf)


# -- the attacks -----------------------------------------------------------------------------


def test_fill_with_string_offset_past_the_buffer_refused():
    """The reviewer's proof: LiteRT copied a megabyte of process memory into FILL's output."""
    refused(fill_model(string_buffer([b"hello"], lambda o: [o[0], 1 << 20])), "string offset 1")


def test_tile_with_string_offset_past_the_buffer_refused():
    refused(tile_model(string_buffer([b"ab", b"cd"], lambda o: [o[0], o[1], 1 << 24])),
            "string offset 2")


def test_string_offset_before_the_table_refused():
    """An offset pointing back into the count and offsets (or before the buffer)."""
    refused(fill_model(string_buffer([b"hello"], lambda o: [0, o[1]])), "string offset 0")
    refused(fill_model(string_buffer([b"hello"], lambda o: [-64, o[1]])), "string offset 0")


def test_string_offsets_going_backwards_refused():
    """A negative length: string i would end before it starts."""
    refused(tile_model(string_buffer([b"ab", b"cd"], lambda o: [o[0], o[2], o[1]])),
            "string offset 2")


def test_string_count_larger_than_the_offset_table_refused():
    """A count that makes the runtime read offsets from past the buffer."""
    refused(fill_model(string_buffer([b"x"], count=1 << 20)), "elements but its buffer says")


def test_string_count_differing_from_the_element_count_refused():
    """Kernels index strings by element: fewer strings than elements reads past the table."""
    refused(tile_model(string_buffer([b"ab"]), strings=2), "2 elements but its buffer says 1")


def test_string_buffer_too_short_for_a_table_refused():
    refused(fill_model(b"\x01\x00\x00"), "holds 3 bytes")


def test_string_data_not_ending_at_the_buffer_end_refused():
    refused(fill_model(string_buffer([b"hello"], lambda o: [o[0], o[1] - 2])), "ends at")


def test_resource_tensor_with_constant_data_refused():
    """RESOURCE and VARIANT tensors are runtime handles; file data there would be pointers."""
    m = ModelDef()
    b = m.add_buffer(b"\x00" * 8)
    m.tensors += [TensorDef("r", "RESOURCE", (), b), TensorDef("out", "FLOAT32", (1,))]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES["RELU"]))
    m.operators.append(OperatorDef(0, (0,), (1,)))
    m.inputs, m.outputs = [], [1]
    refused(build(m), "RESOURCE but holds constant data")


# -- what passes runs cleanly in LiteRT ------------------------------------------------------


def test_random_string_offset_tables_refused_or_run_cleanly_in_litert():
    """Mutated offset tables: each is refused, or LiteRT (in a child) returns exactly the
    strings the table declares, never bytes from outside the buffer."""
    rng = random.Random(9)
    passing, expected = [], []
    base = [b"ab", b"cde"]
    for _ in range(300):
        def tamper(o: list[int]) -> list[int]:
            o = list(o)
            o[rng.randrange(len(o))] += rng.choice((-9, -4, -1, 1, 3, 1 << 16, -(1 << 31)))
            return o
        value = string_buffer(base, tamper if rng.random() < 0.9 else None)
        model = tile_model(value)
        try:
            validate(model)
        except MalformedModelError:
            continue
        (count,) = struct.unpack_from("<i", value)
        offs = struct.unpack_from(f"<{count + 1}i", value, 4)
        strings = [value[offs[i]:offs[i + 1]].hex() for i in range(count)]
        passing.append(model)
        expected.append(strings * 3)
    assert passing, "the unmodified tables must pass"
    assert run_in_litert(passing) == expected


def test_well_formed_string_fill_runs_in_litert():
    assert run_in_litert([fill_model(string_buffer([b"hello"]), n=3)]) == [[b"hello".hex()] * 3]


# -- signing and calibration refuse what verification refuses ---------------------------------


@pytest.fixture
def hostile_model(tmp_path: Path) -> Path:
    p = tmp_path / "hostile.tflite"
    p.write_bytes(fill_model(string_buffer([b"hello"], lambda o: [o[0], 1 << 20])))
    subprocess.run([EDGEWARD, "keys", "generate", "--out", tmp_path / "keys"], check=True,
                   capture_output=True)
    return p


def test_model_sign_refuses_a_model_with_hostile_string_offsets(hostile_model: Path):
    key = hostile_model.parent / "keys/private.pem"
    r = subprocess.run([EDGEWARD, "model", "sign", hostile_model, "--key", key, "--name", "m",
                        "--version", "1"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "string offset" in r.stderr
    assert not hostile_model.with_suffix(".tflite.ewsig").exists()


def test_guard_calibrate_refuses_a_model_with_hostile_string_offsets(hostile_model: Path):
    import numpy as np

    data = hostile_model.parent / "clean.npy"
    np.save(data, np.zeros((4, 4), dtype=np.float32))
    r = subprocess.run([EDGEWARD, "guard", "calibrate", hostile_model, "--data", data,
                        "--out", hostile_model.parent / "p.ewprof"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "string offset" in r.stderr
