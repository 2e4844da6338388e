"""Write TFLite flatbuffers without TensorFlow: a small table writer over ``flatbuffers.Builder``.

A model is described with plain dataclasses (:class:`ModelDef`, :class:`TensorDef`,
:class:`OperatorDef`, :class:`OpCodeDef`, :class:`BufferDef`) and serialised by :func:`build`
following TensorFlow Lite's ``schema.fbs`` (schema version 3, file identifier ``TFL3``; field
slots from :mod:`edgeward.models.tflite.schema`). Only the ``flatbuffers`` package is needed at
run time; the ``tflite`` package's generated code is not used.

The builder does not validate: it writes what it is told, including out-of-range indices,
custom operators and external buffers, so tests can make hostile models with it. Run
:func:`edgeward.models.tflite.validate.validate` on what you build.

:func:`write_model` streams one large constant buffer (placed last in the file) to a binary file
object without holding it in memory, for benchmark models of hundreds of megabytes.

This module does no I/O beyond the file object handed to :func:`write_model`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import flatbuffers

from edgeward.models.tflite import schema as s

DATA_ALIGNMENT = 16  # schema.fbs: Buffer.data (force_align: 16)


@dataclass(frozen=True)
class OpCodeDef:
    builtin: int
    custom_code: str | None = None
    version: int = 1
    deprecated_code: int | None = None  # default: min(builtin, 127), as current writers do


@dataclass(frozen=True)
class BufferDef:
    data: bytes = b""
    offset: int = 0  # non-zero: data outside the flatbuffer (refused by the validator)
    size: int = 0


@dataclass(frozen=True)
class DimDef:
    """``DimensionMetadata``: DENSE (format 0) with ``dense_size``, or SPARSE_CSR (1) with int32
    ``segments`` and ``indices``."""

    format: int
    dense_size: int = 0
    segments: tuple[int, ...] = ()
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class SparsityDef:
    """``SparsityParameters`` of a tensor (schema.fbs): traversal order and dimension metadata."""

    traversal_order: tuple[int, ...]
    dim_metadata: tuple[DimDef, ...]
    block_map: tuple[int, ...] = ()


@dataclass(frozen=True)
class TensorDef:
    name: str | bytes  # bytes: a name that is not UTF-8 (a hostile model)
    dtype: str
    shape: tuple[int, ...]
    buffer: int = 0
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    shape_signature: tuple[int, ...] | None = None
    sparsity: SparsityDef | None = None


Option = tuple[int, str, Any]
"""``(slot, kind, value)`` of an options table field; kind is one of b, B, i, f, ivec."""


@dataclass(frozen=True)
class OperatorDef:
    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options_type: int = s.BuiltinOptions.NONE
    options: tuple[Option, ...] = ()
    custom_options: bytes | None = None


@dataclass
class ModelDef:
    opcodes: list[OpCodeDef] = field(default_factory=list)
    tensors: list[TensorDef] = field(default_factory=list)
    operators: list[OperatorDef] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    buffers: list[BufferDef] = field(default_factory=lambda: [BufferDef()])
    description: str = "edgeward"
    version: int = s.SCHEMA_VERSION
    subgraph_name: str = "main"
    operator_order: list[int] | None = None
    """Test hook: the subgraph's operator vector lists these operators (repeats share a table)."""

    def add_buffer(self, data: bytes) -> int:
        self.buffers.append(BufferDef(data))
        return len(self.buffers) - 1

    def add_tensor(self, t: TensorDef) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def opcode(self, builtin: int, custom_code: str | None = None, version: int = 1) -> int:
        """Index of the operator code, adding it on first use."""
        want = OpCodeDef(builtin, custom_code, version)
        for i, oc in enumerate(self.opcodes):
            if oc == want:
                return i
        self.opcodes.append(want)
        return len(self.opcodes) - 1


# -- low-level helpers -----------------------------------------------------------------------


def _int_vector(b: flatbuffers.Builder, values: Sequence[int], width: int = 4) -> int:
    b.StartVector(width, len(values), width)
    prepend = b.PrependInt32 if width == 4 else b.PrependInt64
    for v in reversed(values):
        prepend(int(v))
    return int(b.EndVector())


def _float_vector(b: flatbuffers.Builder, values: Sequence[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return int(b.EndVector())


def _offset_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return int(b.EndVector())


def _byte_vector(b: flatbuffers.Builder, data: bytes, alignment: int = DATA_ALIGNMENT) -> int:
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return int(b.EndVector())


def _options(b: flatbuffers.Builder, options: Iterable[Option]) -> int:
    options = list(options)
    vecs = {slot: _int_vector(b, value) for slot, kind, value in options if kind == "ivec"}
    b.StartObject(max((slot for slot, _, _ in options), default=-1) + 1)
    for slot, kind, value in options:
        if kind == "b":
            b.PrependInt8Slot(slot, int(value), None)
        elif kind == "B":
            b.PrependUint8Slot(slot, int(value), None)
        elif kind == "i":
            b.PrependInt32Slot(slot, int(value), None)
        elif kind == "f":
            b.PrependFloat32Slot(slot, float(value), None)
        elif kind == "ivec":
            b.PrependUOffsetTRelativeSlot(slot, vecs[slot], 0)
        else:
            raise ValueError(f"unknown option kind {kind!r}")
    return int(b.EndObject())


# -- tables ----------------------------------------------------------------------------------


def _int32_vector_table(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    vec = _int_vector(b, values)
    b.StartObject(1)  # table Int32Vector { values: [int] }
    b.PrependUOffsetTRelativeSlot(0, vec, 0)
    return int(b.EndObject())


def _sparsity(b: flatbuffers.Builder, sp: SparsityDef) -> int:
    dims = []
    for d in sp.dim_metadata:
        seg = _int32_vector_table(b, d.segments) if d.format else None
        idx = _int32_vector_table(b, d.indices) if d.format else None
        b.StartObject(6)  # table DimensionMetadata
        b.PrependInt8Slot(0, d.format, 0)
        b.PrependInt32Slot(1, d.dense_size, 0)
        if seg is not None and idx is not None:
            b.PrependUint8Slot(2, 1, 0)  # SparseIndexVector.Int32Vector
            b.PrependUOffsetTRelativeSlot(3, seg, 0)
            b.PrependUint8Slot(4, 1, 0)
            b.PrependUOffsetTRelativeSlot(5, idx, 0)
        dims.append(b.EndObject())
    order = _int_vector(b, sp.traversal_order)
    block = _int_vector(b, sp.block_map) if sp.block_map else None
    dim_vec = _offset_vector(b, dims)
    b.StartObject(3)  # table SparsityParameters
    b.PrependUOffsetTRelativeSlot(0, order, 0)
    if block is not None:
        b.PrependUOffsetTRelativeSlot(1, block, 0)
    b.PrependUOffsetTRelativeSlot(2, dim_vec, 0)
    return int(b.EndObject())


def _tensor(b: flatbuffers.Builder, t: TensorDef) -> int:
    f = s.TensorField
    sparsity = _sparsity(b, t.sparsity) if t.sparsity is not None else None
    name = b.CreateString(t.name)
    shape = _int_vector(b, t.shape)
    sig = _int_vector(b, t.shape_signature) if t.shape_signature is not None else None
    quant = None
    if t.scale or t.zero_point:
        scale = _float_vector(b, t.scale)
        zero = _int_vector(b, t.zero_point, width=8)
        q = s.QuantizationField
        b.StartObject(q.COUNT)
        b.PrependUOffsetTRelativeSlot(q.SCALE, scale, 0)
        b.PrependUOffsetTRelativeSlot(q.ZERO_POINT, zero, 0)
        b.PrependInt32Slot(q.QUANTIZED_DIMENSION, t.quantized_dimension, 0)
        quant = b.EndObject()
    b.StartObject(f.COUNT)
    b.PrependUOffsetTRelativeSlot(f.SHAPE, shape, 0)
    b.PrependInt8Slot(f.TYPE, s.TENSOR_TYPE_CODES[t.dtype], 0)
    b.PrependUint32Slot(f.BUFFER, t.buffer, 0)
    b.PrependUOffsetTRelativeSlot(f.NAME, name, 0)
    if quant is not None:
        b.PrependUOffsetTRelativeSlot(f.QUANTIZATION, quant, 0)
    if sig is not None:
        b.PrependUOffsetTRelativeSlot(f.SHAPE_SIGNATURE, sig, 0)
    if sparsity is not None:
        b.PrependUOffsetTRelativeSlot(f.SPARSITY, sparsity, 0)
    return int(b.EndObject())


def _operator(b: flatbuffers.Builder, op: OperatorDef) -> int:
    f = s.OperatorField
    ins = _int_vector(b, op.inputs)
    outs = _int_vector(b, op.outputs)
    opts = _options(b, op.options) if op.options_type else None
    custom = _byte_vector(b, op.custom_options, 4) if op.custom_options is not None else None
    b.StartObject(f.COUNT)
    b.PrependUint32Slot(f.OPCODE_INDEX, op.opcode_index, 0)
    b.PrependUOffsetTRelativeSlot(f.INPUTS, ins, 0)
    b.PrependUOffsetTRelativeSlot(f.OUTPUTS, outs, 0)
    if opts is not None:
        b.PrependUint8Slot(f.BUILTIN_OPTIONS_TYPE, op.options_type, 0)
        b.PrependUOffsetTRelativeSlot(f.BUILTIN_OPTIONS, opts, 0)
    if custom is not None:
        b.PrependUOffsetTRelativeSlot(f.CUSTOM_OPTIONS, custom, 0)
    return int(b.EndObject())


def _opcode(b: flatbuffers.Builder, oc: OpCodeDef) -> int:
    f = s.OperatorCodeField
    custom = b.CreateString(oc.custom_code) if oc.custom_code is not None else None
    b.StartObject(f.COUNT)
    dep = oc.deprecated_code
    if dep is None:
        dep = min(oc.builtin, s.PLACEHOLDER_FOR_GREATER_OP_CODES)
    b.PrependInt8Slot(f.DEPRECATED_BUILTIN_CODE, dep, 0)
    if custom is not None:
        b.PrependUOffsetTRelativeSlot(f.CUSTOM_CODE, custom, 0)
    b.PrependInt32Slot(f.VERSION, oc.version, 1)
    b.PrependInt32Slot(f.BUILTIN_CODE, oc.builtin, 0)
    return int(b.EndObject())


def _buffer(b: flatbuffers.Builder, buf: BufferDef, data_vec: int | None) -> int:
    f = s.BufferField
    if data_vec is None and buf.data:
        data_vec = _byte_vector(b, buf.data)
    b.StartObject(f.COUNT)
    if data_vec is not None:
        b.PrependUOffsetTRelativeSlot(f.DATA, data_vec, 0)
    b.PrependUint64Slot(f.OFFSET, buf.offset, 0)
    b.PrependUint64Slot(f.SIZE, buf.size, 0)
    return int(b.EndObject())


def _serialise(m: ModelDef, tail: tuple[int, int] | None) -> tuple[bytearray, int | None]:
    """Serialise ``m``; ``tail=(buffer index, nbytes)`` reserves an empty last vector whose
    length field is patched to ``nbytes`` and whose data the caller appends.
    Returns the bytes and the position of that length field."""
    size_hint = sum(len(x.data) for x in m.buffers) + 1024 + 256 * len(m.tensors)
    b = flatbuffers.Builder(size_hint)
    tail_vec = None
    if tail is not None:
        # Created first, so it ends up last in the file: its data can follow the flatbuffer.
        tail_vec = _byte_vector(b, b"")
    buffers = [
        _buffer(b, x, tail_vec if tail is not None and i == tail[0] else None)
        for i, x in enumerate(m.buffers)
    ]
    tensors = [_tensor(b, t) for t in m.tensors]
    operators = [_operator(b, op) for op in m.operators]
    opcodes = [_opcode(b, oc) for oc in m.opcodes]
    t_vec = _offset_vector(b, tensors)
    in_vec = _int_vector(b, m.inputs)
    out_vec = _int_vector(b, m.outputs)
    if m.operator_order is not None:
        operators = [operators[i] for i in m.operator_order]
    op_vec = _offset_vector(b, operators)
    sg_name = b.CreateString(m.subgraph_name)
    f = s.SubGraphField
    b.StartObject(f.COUNT)
    b.PrependUOffsetTRelativeSlot(f.TENSORS, t_vec, 0)
    b.PrependUOffsetTRelativeSlot(f.INPUTS, in_vec, 0)
    b.PrependUOffsetTRelativeSlot(f.OUTPUTS, out_vec, 0)
    b.PrependUOffsetTRelativeSlot(f.OPERATORS, op_vec, 0)
    b.PrependUOffsetTRelativeSlot(f.NAME, sg_name, 0)
    subgraph = b.EndObject()
    sg_vec = _offset_vector(b, [subgraph])
    oc_vec = _offset_vector(b, opcodes)
    buf_vec = _offset_vector(b, buffers)
    desc = b.CreateString(m.description)
    mf = s.ModelField
    b.StartObject(mf.COUNT)
    b.PrependUint32Slot(mf.VERSION, m.version, 0)
    b.PrependUOffsetTRelativeSlot(mf.OPERATOR_CODES, oc_vec, 0)
    b.PrependUOffsetTRelativeSlot(mf.SUBGRAPHS, sg_vec, 0)
    b.PrependUOffsetTRelativeSlot(mf.DESCRIPTION, desc, 0)
    b.PrependUOffsetTRelativeSlot(mf.BUFFERS, buf_vec, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=s.FILE_IDENTIFIER)
    out = b.Output()
    out = out if isinstance(out, bytearray) else bytearray(out)
    tail_pos = None
    if tail_vec is not None:
        tail_pos = len(out) - tail_vec
        if tail_pos + 4 != len(out) or len(out) % DATA_ALIGNMENT:
            raise AssertionError("tail vector is not last and aligned")  # builder invariant
    return out, tail_pos


def build(m: ModelDef) -> bytes:
    """Serialise ``m`` as a ``.tflite`` flatbuffer."""
    out, _ = _serialise(m, None)
    return bytes(out)


def build_head(m: ModelDef, tail_buffer: int, tail_size: int) -> bytearray:
    """Serialise ``m`` except the data of buffer ``tail_buffer``, which must follow the head.

    The head ends with that buffer's vector length (``tail_size``) and is a multiple of 16
    bytes long, so the appended data is aligned as ``schema.fbs`` asks (``force_align: 16``).
    """
    if not 0 <= tail_size < 1 << 31:
        raise ValueError(f"tail buffer of {tail_size} bytes does not fit a flatbuffer vector")
    head, pos = _serialise(m, (tail_buffer, tail_size))
    assert pos is not None
    struct.pack_into("<I", head, pos, tail_size)
    return head


def write_model(
    m: ModelDef,
    out: IO[bytes],
    tail_buffer: int,
    tail_size: int,
    chunks: Callable[[], Iterable[bytes]],
) -> int:
    """Write ``m`` to ``out`` with buffer ``tail_buffer`` streamed from ``chunks()`` last.

    ``chunks()`` must yield exactly ``tail_size`` bytes in total. Memory stays O(largest chunk)
    however large the buffer. Returns the number of bytes written.
    """
    head = build_head(m, tail_buffer, tail_size)
    out.write(head)
    written = 0
    for chunk in chunks():
        out.write(chunk)
        written += len(chunk)
    if written != tail_size:
        raise ValueError(f"chunks yielded {written} bytes, expected {tail_size}")
    return len(head) + written
