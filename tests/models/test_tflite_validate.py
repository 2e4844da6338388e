"""Byte-level tests of the TFLite validator, each named for the attack it stands for.

Every verdict must be a ModelSummary, a MalformedModelError or a PolicyError: any other exception
(IndexError, struct.error, UnicodeDecodeError, RecursionError, MemoryError...) fails the test.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.core.errors import MalformedModelError, PolicyError
from edgeward.core.limits import Limits
from edgeward.models.refmodels import MlpWeights, mlp_tflite
from edgeward.models.tflite import ModelSummary, tensor_data, validate
from edgeward.models.tflite import schema as s
from edgeward.models.tflite.builder import (
    BufferDef,
    ModelDef,
    OpCodeDef,
    OperatorDef,
    TensorDef,
    build,
)
from edgeward.models.tflite.flatbuf import Reader, Table

FC = s.BUILTIN_CODES["FULLY_CONNECTED"]
W = (np.arange(12, dtype=np.float32).reshape(3, 4) / 10).astype(np.float32)


def tiny(
    *,
    weights: bytes | None = None,
    w_buffer: int = 1,
    w_shape: tuple[int, ...] = (3, 4),
    inputs: tuple[int, ...] = (0, 1, -1),
    outputs: tuple[int, ...] = (2,),
    opcode: OpCodeDef | None = None,
    name: str | bytes = "input",
    **model_kw,
) -> ModelDef:
    """x [1, 4] -> FULLY_CONNECTED(weights [3, 4], no bias) -> y [1, 3]."""
    m = ModelDef(**model_kw)
    m.buffers.append(BufferDef(W.tobytes() if weights is None else weights))
    m.tensors += [
        TensorDef(name, "FLOAT32", (1, 4)),
        TensorDef("weights", "FLOAT32", w_shape, w_buffer),
        TensorDef("output", "FLOAT32", (1, 3)),
    ]
    m.opcodes.append(opcode or OpCodeDef(FC))
    m.operators.append(
        OperatorDef(0, inputs, outputs, s.BuiltinOptions.FULLY_CONNECTED, ((0, "b", 0),))
    )
    if not m.inputs:
        m.inputs = [0]
    if not m.outputs:
        m.outputs = [2]
    return m


TINY = build(tiny())


def verdict(buf: bytes | bytearray | memoryview, **kw) -> str:
    """'ok', 'malformed' or 'policy'; anything else propagates and fails the test."""
    try:
        validate(buf, **kw)
    except MalformedModelError:
        return "malformed"
    except PolicyError:
        return "policy"
    return "ok"


def malformed(buf: bytes, match: str | None = None, **kw) -> MalformedModelError:
    with pytest.raises(MalformedModelError, match=match) as info:
        validate(buf, **kw)
    assert "\n" not in str(info.value), "messages are one line"
    return info.value


def _reader(buf: bytes) -> tuple[Reader, Table]:
    r = Reader(memoryview(buf), max_vector_length=1 << 24, max_string_bytes=1 << 16)
    return r, r.table(r.follow(0, "root"), "model")


def tensor_table(buf: bytes, index: int) -> Table:
    _, model = _reader(buf)
    sub = model.tables(s.ModelField.SUBGRAPHS, "subgraph", 16)[0]
    return sub.tables(s.SubGraphField.TENSORS, "tensor", 1000)[index]


def vector_pos(table: Table, slot: int) -> int:
    """Byte position of the length prefix of the vector (or string) in ``slot``."""
    pos = table.field(slot, 4)
    assert pos is not None
    return table.reader.follow(pos, "test")


def patched(buf: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(buf)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


# -- legitimate models -----------------------------------------------------------------------


def test_tiny_model_summary_is_exact():
    summary = validate(TINY)
    assert summary.schema_version == 3
    assert summary.operators == ("FULLY_CONNECTED",)
    assert [t.name for t in summary.inputs] == ["input"]
    assert summary.inputs[0].dtype == "FLOAT32" and summary.inputs[0].shape == (1, 4)
    assert summary.outputs[0].shape == (1, 3)
    assert (summary.subgraph_count, summary.tensor_count) == (1, 3)
    assert (summary.operator_count, summary.buffer_count) == (1, 2)
    assert summary.findings == ()
    assert summary.to_manifest() == {
        "ops": ["FULLY_CONNECTED"],
        "inputs": [{"name": "input", "dtype": "FLOAT32", "shape": [1, 4]}],
        "outputs": [{"name": "output", "dtype": "FLOAT32", "shape": [1, 3]}],
    }
    json.dumps(summary.to_json())


def test_reference_models_validate(digits_mlp_bytes, digits_cnn_bytes, digits_mlp_int8_bytes):
    mlp = validate(digits_mlp_bytes)
    assert mlp.operators == ("FULLY_CONNECTED", "SOFTMAX")
    assert mlp.inputs[0].shape == (1, 64) and mlp.outputs[0].shape == (1, 10)
    cnn = validate(digits_cnn_bytes)
    assert cnn.operators == ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "SOFTMAX")
    assert cnn.inputs[0].shape == (1, 8, 8, 1)
    q = validate(digits_mlp_int8_bytes)
    assert q.operators == ("DEQUANTIZE", "FULLY_CONNECTED", "QUANTIZE", "SOFTMAX")
    int8 = [t for t in q.tensors if t.dtype == "INT8"]
    assert int8 and all(t.quantization is not None for t in int8)
    for summary in (mlp, cnn, q):
        assert summary.findings == ()
        json.dumps(summary.to_json())
        json.dumps(summary.to_manifest())


def test_tensor_data_reads_the_weights_in_place():
    rng = np.random.default_rng(1)
    layers = (
        (rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)),
        (rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)),
    )
    buf = mlp_tflite(MlpWeights(layers))
    summary = validate(buf)
    by_name = {t.name: t.index for t in summary.tensors}
    np.testing.assert_array_equal(tensor_data(buf, summary, by_name["dense_0/weights"]), layers[0][0])
    np.testing.assert_array_equal(tensor_data(buf, summary, by_name["dense_1/bias"]), layers[1][1])
    with pytest.raises(ValueError, match="no constant data"):
        tensor_data(buf, summary, by_name["input"])
    with pytest.raises(ValueError, match="is not the"):
        tensor_data(buf + b"\0", summary, by_name["dense_0/weights"])


def test_accepts_bytearray_and_memoryview():
    assert validate(bytearray(TINY)) == validate(memoryview(TINY)) == validate(TINY)


def test_validator_imports_no_flatbuffers_or_tflite_package():
    code = (
        "import sys, edgeward.models.tflite as t; "
        "assert 'flatbuffers' not in sys.modules and 'tflite' not in sys.modules, sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- file-level attacks ----------------------------------------------------------------------


def test_empty_file():
    malformed(b"", "too short")


def test_wrong_identifier():
    bad = TINY[:4] + b"TFL2" + TINY[8:]
    malformed(bad, "identifier")


def test_wrong_schema_version():
    malformed(build(tiny(version=2)), "schema version is 2")


def test_oversized_model_refused_by_limit():
    malformed(TINY, "over the limit", limits=Limits(max_model_bytes=len(TINY) - 1))


def test_random_bytes():
    rng = random.Random(7)
    for n in (0, 1, 7, 8, 12, 64, 512, 4096):
        for _ in range(20):
            junk = bytes(rng.getrandbits(8) for _ in range(n))
            assert verdict(junk) == "malformed"
            with_id = junk[:4] + b"TFL3" + junk[8:] if n >= 8 else junk
            assert verdict(with_id) == "malformed"


def test_byte_flip_at_every_position():
    outcomes = set()
    for pos in range(len(TINY)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(TINY)
            bad[pos] ^= mask
            outcomes.add(verdict(bytes(bad)))
    assert "malformed" in outcomes  # most structural bytes matter
    assert outcomes <= {"ok", "malformed", "policy"}


def test_truncated_at_every_position():
    for n in range(len(TINY)):
        assert verdict(TINY[:n]) == "malformed", n


def test_appended_bytes_still_validate_with_a_finding():
    """Decision: trailing data is ignored by FlatBuffers and the runtime, and the signature
    covers it, so it is not fatal; more than alignment padding is reported as a finding."""
    assert validate(TINY + b"\0" * 16).findings == ()
    summary = validate(TINY + b"X" * 1000)
    assert any("1000 bytes after the end" in f for f in summary.findings)
    assert summary.to_manifest() == validate(TINY).to_manifest()


# -- policy: custom ops and data outside the file -----------------------------------------------


def test_custom_op_refused_unless_allowed():
    buf = build(tiny(opcode=OpCodeDef(s.CUSTOM, "EvilOp")))
    with pytest.raises(PolicyError, match="EvilOp"):
        validate(buf)
    assert validate(buf, allow_custom_ops=True).operators == ("CUSTOM:EvilOp",)


def test_external_buffer_inside_file_refused_by_policy():
    m = tiny()
    m.buffers[1] = BufferDef(offset=16, size=48)
    with pytest.raises(PolicyError, match=r"buffer 1 .*offset/size"):
        validate(build(m))


def test_buffer_zero_must_be_the_empty_sentinel():
    m = tiny()
    m.buffers[0] = BufferDef(b"\0" * 16)
    malformed(build(m), "buffer 0 holds data")


def test_external_buffer_pointing_outside_the_file():
    m = tiny()
    m.buffers[1] = BufferDef(offset=1 << 40, size=48)
    malformed(build(m), "buffer 1 points at bytes .* outside")


# -- index attacks -----------------------------------------------------------------------------


def test_out_of_range_buffer_index():
    malformed(build(tiny(w_buffer=99)), "tensor 1 references buffer 99 of 2")


def test_out_of_range_tensor_index_in_operator():
    malformed(build(tiny(inputs=(0, 57, -1))), "operator 0 input 1 references tensor 57 of 3")


def test_negative_tensor_index_other_than_minus_one():
    malformed(build(tiny(inputs=(0, 1, -2))), "input 2 references tensor -2")


def test_omitted_required_input_refused():
    """FULLY_CONNECTED without weights: LiteRT 2.3 dereferences a null tensor (found by fuzzing)."""
    malformed(build(tiny(inputs=(0, -1, -1))), "operator 0 omits input 1, which FULLY_CONNECTED")
    malformed(build(tiny(inputs=(-1, 1))), "omits input 0")


def test_minus_one_output_refused():
    malformed(build(tiny(outputs=(-1,))), "output 0 references tensor -1")


def test_out_of_range_opcode_index():
    m = tiny()
    m.operators[0] = OperatorDef(5, (0, 1, -1), (2,))
    malformed(build(m), "references operator code 5 of 1")


def test_out_of_range_subgraph_input():
    m = tiny()
    m.inputs = [3]
    malformed(build(m), "subgraph 0 input 0 references tensor 3 of 3")


# -- shape and data attacks ----------------------------------------------------------------------


def test_huge_rank():
    malformed(build(tiny(w_shape=(1,) * 9, weights=b"")), "rank 9")


def test_huge_dims():
    malformed(build(tiny(w_shape=(1 << 30, 1 << 30), weights=b"")), "more than")


def test_negative_dim():
    malformed(build(tiny(w_shape=(3, -4), weights=b"")), "invalid dimension -4")


def test_dynamic_dim_only_where_shape_signature_allows():
    m = tiny()
    m.tensors[0] = TensorDef("input", "FLOAT32", (-1, 4))
    malformed(build(m), "invalid dimension -1 at axis 0")
    m.tensors[0] = TensorDef("input", "FLOAT32", (-1, 4), shape_signature=(-1, 4))
    assert validate(build(m)).inputs[0].shape == (-1, 4)


def test_data_size_inconsistent_with_dtype_and_shape():
    malformed(build(tiny(weights=W.tobytes()[:-1])), "48 bytes.*holds 47 bytes")


def test_unknown_tensor_type():
    m = tiny()
    m.tensors[2] = TensorDef("output", "INT32", (1, 3))  # FLOAT32 (0) is the default, omitted
    buf = build(m)
    pos = tensor_table(buf, 2).field(s.TensorField.TYPE, 1)
    assert pos is not None
    malformed(patched(buf, pos, "<b", 50), "tensor 2 has unknown type 50")


@pytest.mark.parametrize("scale", [0.0, -1.0, 1e-40, float("nan"), float("inf")])
def test_degenerate_quantization_scale(scale):
    """A subnormal QUANTIZE scale crashes LiteRT 2.3 (found by fuzzing): refuse it up front."""
    m = tiny()
    m.tensors[0] = TensorDef("input", "INT8", (1, 4), scale=(scale,), zero_point=(0,))
    malformed(build(m), "scales must be normal positive")


@pytest.mark.parametrize(("dtype", "zero"), [("INT8", 128), ("INT8", -129), ("UINT8", -1)])
def test_zero_point_outside_the_dtype_range(dtype, zero):
    m = tiny()
    m.tensors[0] = TensorDef("input", dtype, (1, 4), scale=(0.5,), zero_point=(zero,))
    malformed(build(m), f"zero point {zero}, outside {dtype}")


def test_quantization_scale_and_zero_point_counts_disagree():
    m = tiny()
    m.tensors[0] = TensorDef("input", "INT8", (1, 4), scale=(0.1, 0.2), zero_point=(0,))
    malformed(build(m), "2 scales but 1 zero points")


# -- flatbuffer-level attacks ------------------------------------------------------------------


@pytest.mark.parametrize("slot", [s.TensorField.SHAPE, s.TensorField.NAME])
def test_absurd_vector_length_in_tensor(slot):
    pos = vector_pos(tensor_table(TINY, 1), slot)
    assert verdict(patched(TINY, pos, "<I", 0xFFFFFFFF)) == "malformed"


def test_absurd_tensor_count():
    _, model = _reader(TINY)
    sub = model.tables(s.ModelField.SUBGRAPHS, "subgraph", 16)[0]
    pos = vector_pos(sub, s.SubGraphField.TENSORS)
    malformed(patched(TINY, pos, "<I", 0xFFFFFFFF), "vector length 4294967295")
    malformed(patched(TINY, pos, "<I", 1 << 20), "outside the")


def test_vector_longer_than_the_limit():
    malformed(TINY, "exceeds the limit", limits=Limits(max_vector_length=2))


def test_root_offset_zero_self_loop():
    malformed(patched(TINY, 0, "<I", 0), "invalid offset 0")


def test_backward_offset_would_loop():
    malformed(patched(TINY, 0, "<I", 0xFFFFFFFC), "invalid offset")


def test_vtable_outside_file():
    root = struct.unpack_from("<I", TINY, 0)[0]
    malformed(patched(TINY, root, "<i", -(1 << 30)), "vtable")


def test_vtable_claims_huge_table():
    _, model = _reader(TINY)
    malformed(patched(TINY, model.vt + 2, "<H", 0xFFFF), "outside the")


def test_field_offset_pointing_into_table_header():
    _, model = _reader(TINY)
    malformed(patched(TINY, model.vt + 4, "<H", 2), "outside the table")


def test_operator_listed_twice_writes_its_output_twice():
    """Shared tables are legal FlatBuffers (every model shares vtables), but an operator entry
    repeated makes two writers of one tensor, which crashes LiteRT 2.3 (found by fuzzing)."""
    m = tiny()
    m.operator_order = [0, 0]
    malformed(build(m), "operator 1 writes tensor 2, already written")


def test_operator_output_into_constant_weights():
    """Writing into a constant would hit the read-only model bytes (or rewrite verified weights)."""
    malformed(build(tiny(outputs=(1,))), "writes output 0 into tensor 1, which holds constant data")


def test_tensor_read_before_written_is_a_finding():
    m = tiny()
    m.tensors.append(TensorDef("orphan", "FLOAT32", (1, 4)))
    m.operators[0] = OperatorDef(0, (3, 1, -1), (2,))
    assert any("reads tensor 3 before" in f for f in validate(build(m)).findings)


def test_overlapping_offsets_amplification_is_bounded():
    """20,000 operator entries all point at one table whose inputs vector has 50,000 entries:
    a naive walk does 10**9 steps. The work budget refuses it quickly."""
    m = tiny(inputs=(0,) * 50_000, outputs=())
    m.operator_order = [0] * 20_000
    buf = build(m)
    started = time.monotonic()
    malformed(buf, "shares structure")
    assert time.monotonic() - started < 5


def test_non_utf8_tensor_name():
    malformed(build(tiny(name=b"in\xff\xfeput")), "tensor 0 name.*not valid UTF-8")


def test_string_not_nul_terminated():
    t = tensor_table(TINY, 0)
    pos = vector_pos(t, s.TensorField.NAME)
    length = struct.unpack_from("<I", TINY, pos)[0]
    bad = bytearray(TINY)
    bad[pos + 4 + length] = ord("!")
    malformed(bytes(bad), "NUL")


def test_string_longer_than_the_limit():
    malformed(TINY, "exceeds the limit of 3", limits=Limits(max_string_bytes=3))


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (Limits(max_subgraphs=0), "subgraph: 1 entries exceed"),
        (Limits(max_tensors=2), "tensor: 3 entries exceed"),
        (Limits(max_operators=0), "entries exceed the limit of 0"),
        (Limits(max_buffers=1), "buffer: 2 entries exceed"),
        (Limits(max_tensor_rank=1), "rank 2"),
        (Limits(max_tensor_elements=5), "more than 5 elements"),
    ],
)
def test_count_limits(limits, match):
    malformed(TINY, match, limits=limits)


# -- builtin options ---------------------------------------------------------------------------


def _conv(options) -> bytes:
    m = ModelDef()
    m.buffers.append(BufferDef(np.zeros((2, 3, 3, 1), np.float32).tobytes()))
    x = m.add_tensor(TensorDef("x", "FLOAT32", (1, 8, 8, 1)))
    w = m.add_tensor(TensorDef("w", "FLOAT32", (2, 3, 3, 1), 1))
    y = m.add_tensor(TensorDef("y", "FLOAT32", (1, 8, 8, 2)))
    m.operators.append(
        OperatorDef(m.opcode(s.BUILTIN_CODES["CONV_2D"]), (x, w, -1), (y,), 1, options)
    )
    m.inputs, m.outputs = [x], [y]
    return build(m)


def test_conv_options_sane():
    assert validate(_conv(((0, "b", 0), (1, "i", 1), (2, "i", 1)))).operators == ("CONV_2D",)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (((0, "b", 0), (1, "i", 1), (2, "i", 0)), "stride_h 0"),  # SIGFPE in tflite-runtime 2.14
        (((0, "b", 0), (1, "i", 1)), "stride_h 0"),  # absent: schema default 0
        (((0, "b", 0), (1, "i", 1), (2, "i", 1), (4, "i", -3)), "dilation_w -3"),
        (((0, "b", 0), (1, "i", 0x7FFF01FF), (2, "i", 1)), "stride_w 2147418623"),  # SIGSEGV
        (((0, "b", 7), (1, "i", 1), (2, "i", 1)), "unknown padding 7"),
        (((0, "b", 0), (1, "i", 1), (2, "i", 1), (3, "b", 9)), "unknown fused activation 9"),
    ],
)
def test_conv_options_that_crash_kernels(options, match):
    malformed(_conv(options), match)


def test_conv_stride_larger_than_the_image():
    """tflite-runtime 2.14 + XNNPACK corrupts its heap on this (found by fuzzing)."""
    malformed(_conv(((0, "b", 0), (1, "i", 1), (2, "i", 172))), "stride_h 172, larger than")


def _conv_with_input(shape) -> bytes:
    m = ModelDef()
    m.buffers.append(BufferDef(np.zeros((2, 3, 3, 1), np.float32).tobytes()))
    x = m.add_tensor(TensorDef("x", "FLOAT32", shape))
    w = m.add_tensor(TensorDef("w", "FLOAT32", (2, 3, 3, 1), 1))
    y = m.add_tensor(TensorDef("y", "FLOAT32", (1, 8, 8, 2)))
    options = ((0, "b", 0), (1, "i", 1), (2, "i", 1))
    m.operators.append(
        OperatorDef(m.opcode(s.BUILTIN_CODES["CONV_2D"]), (x, w, -1), (y,), 1, options)
    )
    m.inputs, m.outputs = [x], [y]
    return build(m)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 8, 8, 254), "254 channels but the filter takes 1"),  # SIGFPE in tflite-runtime 2.14
        ((1, 0, 8, 1), "both must be 4-D"),
        ((8, 8, 1), "both must be 4-D"),
    ],
)
def test_conv_input_that_does_not_fit_the_filter(shape, match):
    malformed(_conv_with_input(shape), match)


def test_fully_connected_input_that_does_not_split_into_rows():
    m = tiny()
    m.tensors[0] = TensorDef("input", "FLOAT32", (1, 5))
    malformed(build(m), "5 elements does not split into rows of 4")


def test_options_of_the_wrong_union_type():
    m = tiny()
    m.operators[0] = OperatorDef(0, (0, 1, -1), (2,), s.BuiltinOptions.CONV_2D, ((1, "i", 1),))
    malformed(build(m), "FULLY_CONNECTED but carries options of union type 1")


# -- operator codes ------------------------------------------------------------------------------


def test_deprecated_builtin_code_only():
    buf = build(tiny(opcode=OpCodeDef(0, deprecated_code=FC)))
    assert validate(buf).operators == ("FULLY_CONNECTED",)


def test_builtin_code_above_127_uses_the_new_field():
    code = s.BUILTIN_CODES["BROADCAST_ARGS"]
    assert code > 127
    buf = build(tiny(opcode=OpCodeDef(code), inputs=(0, 1)))  # BROADCAST_ARGS omits no input
    assert validate(buf).operators == ("BROADCAST_ARGS",)


def test_unknown_builtin_code_refused():
    with pytest.raises(PolicyError, match="builtin code 1000"):
        validate(build(tiny(opcode=OpCodeDef(1000))))


def test_negative_builtin_code():
    add = tiny(opcode=OpCodeDef(0, deprecated_code=-5), inputs=(0, 1))
    assert validate(build(add)).operators == ("ADD",)
    malformed(build(tiny(opcode=OpCodeDef(-3, deprecated_code=-5))), "negative builtin code -3")


def test_builtin_operator_table_is_complete():
    assert len(s.BUILTIN_OPERATORS) == len(set(s.BUILTIN_OPERATORS)) >= 209
    assert s.BUILTIN_OPERATORS[0] == "ADD" and s.BUILTIN_OPERATORS[32] == "CUSTOM"
    assert s.BUILTIN_OPERATORS[114] == "QUANTIZE" and s.BUILTIN_OPERATORS[208] == "STABLEHLO_CBRT"


def test_builtin_operator_table_matches_the_generated_schema():
    tflite = pytest.importorskip("tflite")
    generated = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    assert [generated[i] for i in range(len(s.BUILTIN_OPERATORS))] == list(s.BUILTIN_OPERATORS)
    types = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    assert [types[i] for i in range(len(s.TENSOR_TYPES))] == list(s.TENSOR_TYPES)


def test_summary_agrees_with_the_generated_parser(digits_cnn_bytes, digits_mlp_int8_bytes):
    """Our writer and reader against the tflite package's generated accessors."""
    tflite = pytest.importorskip("tflite")
    for buf in (digits_cnn_bytes, digits_mlp_int8_bytes):
        model = tflite.Model.GetRootAsModel(buf, 0)
        sub = model.Subgraphs(0)
        summary = validate(buf)
        assert model.Version() == summary.schema_version
        assert sub.TensorsLength() == summary.tensor_count
        assert model.BuffersLength() == summary.buffer_count
        for i in range(sub.TensorsLength()):
            t, info = sub.Tensors(i), summary.tensors[i]
            assert t.Name().decode() == info.name
            assert tuple(t.ShapeAsNumpy()) == info.shape
            assert t.Buffer() == info.buffer
            assert s.TENSOR_TYPES[t.Type()] == info.dtype
        codes = {
            s.BUILTIN_OPERATORS[max(oc.DeprecatedBuiltinCode(), oc.BuiltinCode())]
            for oc in (model.OperatorCodes(k) for k in range(model.OperatorCodesLength()))
        }
        assert tuple(sorted(codes)) == summary.operators


# -- property tests: mutated models get a clean verdict ------------------------------------------

PROPERTY = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, len(TINY) - 1), st.integers(0, 255)), max_size=8))
def test_property_byte_overwrites(edits):
    bad = bytearray(TINY)
    for pos, value in edits:
        bad[pos] = value
    assert verdict(bytes(bad)) in {"ok", "malformed", "policy"}


INTERESTING = [0, 1, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, (len(TINY) - 4) // 4), st.sampled_from(INTERESTING)), max_size=4
    )
)
def test_property_word_overwrites(edits):
    bad = bytearray(TINY)
    for word, value in edits:
        struct.pack_into("<I", bad, word * 4, value)
    assert verdict(bytes(bad)) in {"ok", "malformed", "policy"}


@PROPERTY
@given(st.integers(0, len(TINY)), st.binary(min_size=1, max_size=64), st.integers(0, 64))
def test_property_insertions_and_deletions(pos, insert, delete):
    assert verdict(TINY[:pos] + insert + TINY[pos:]) in {"ok", "malformed", "policy"}
    assert verdict(TINY[:pos] + TINY[pos + delete :]) in {"ok", "malformed", "policy"}


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_property_mutated_cnn(digits_cnn_bytes, data):
    buf = bytearray(digits_cnn_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(buf) // 2, len(buf)))
    assert verdict(bytes(buf[:cut])) in {"ok", "malformed", "policy"}


def test_summary_is_frozen():
    summary = validate(TINY)
    assert isinstance(summary, ModelSummary)
    with pytest.raises(AttributeError):
        summary.schema_version = 4  # type: ignore[misc]  # the assignment it refuses
