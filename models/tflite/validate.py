"""Structural validation of untrusted TFLite flatbuffers, in pure Python.

:func:`validate` walks a ``.tflite`` file (TensorFlow Lite ``schema.fbs``, schema version 3) with
the bounded reader of :mod:`edgeward.models.tflite.flatbuf` and checks what the TFLite runtime
would otherwise trust:

* file identifier ``TFL3`` (bytes 4..8), ``Model.version == 3``, size and count limits;
* every tensor's ``buffer`` index, every operator's ``opcode_index`` and tensor indices
  (``-1`` only for omitted optional inputs), subgraph inputs/outputs, metadata and signature
  indices;
* tensor types, ranks, dimensions (``-1`` only where ``shape_signature`` says the dimension is
  dynamic), element counts, and that a constant tensor's data is exactly dtype size x elements;
* constant STRING tensors' offset tables (LiteRT copies strings by these offsets, unchecked);
  RESOURCE and VARIANT tensors hold no constant data (:mod:`edgeward.models.tflite.tensors`);
* ``Buffer.offset``/``size`` and ``Operator.large_custom_options_*``: data outside the
  flatbuffer is refused (it escapes the bytes that were hashed and validated);
* ``OperatorCode``: the code is ``max(deprecated_builtin_code, builtin_code)`` as schema.fbs
  prescribes; ``CUSTOM`` ops are a policy decision (:class:`PolicyError` unless allowed).

Some rules go beyond the schema because LiteRT 2.3 crashed (SIGSEGV) on models without them,
found by fuzzing it with mutated models that passed the checks above: a tensor has at most one
writer (subgraph input or one operator output), no operator writes a constant tensor, operators
may omit (``-1``) only their optional inputs (:data:`schema.OPTIONAL_INPUTS`; the recurrent
ones any, :data:`schema.ANY_OPTIONAL_INPUTS`), and
quantisation scales and zero points are sane (:mod:`edgeward.models.tflite.tensors`), and the
options and declared shapes of common operators are usable (:mod:`edgeward.models.tflite.options`).
Reading a tensor before anything writes it is reported as a finding. Buffer 0 must be empty
(schema.fbs: the sentinel).

Bytes after the end of the flatbuffer (appended data) are not an error: FlatBuffers ignores them
and so does the runtime, and the signature covers the whole file anyway. They are reported as a
finding when there are more than 16 of them (more than alignment padding).

It does not check operator semantics (that a CONV_2D has a 4-D filter): the runtime's kernels do.
It imports neither ``flatbuffers`` nor ``tflite``; it does no I/O.

Only :class:`MalformedModelError` and :class:`PolicyError` leave :func:`validate`.
"""

from __future__ import annotations

import logging
import struct

from edgeward.core.errors import MalformedModelError, PolicyError
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.models.tflite import schema as s
from edgeward.models.tflite.flatbuf import Reader, Table
from edgeward.models.tflite.options import check_options, check_output_shape, check_shapes
from edgeward.models.tflite.summary import ModelSummary, TensorInfo, TensorSpec
from edgeward.models.tflite.tensors import TensorChecks

logger = logging.getLogger(__name__)

_B = struct.Struct("<b")
_UB = struct.Struct("<B")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

TRAILING_SLACK = 16


def validate(
    buf: bytes | bytearray | memoryview,
    *,
    allow_custom_ops: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> ModelSummary:
    """Check ``buf`` as a TFLite model and summarise it; raise on anything unsafe.

    Raises :class:`MalformedModelError` (structure, with what and where) or :class:`PolicyError`
    (custom operators unless ``allow_custom_ops``; data stored outside the flatbuffer; sparse
    tensors, whose index arrays the runtime trusts).
    """
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    try:
        return _Validator(mv, allow_custom_ops, limits).run()
    except (MalformedModelError, PolicyError):
        raise
    except (IndexError, struct.error, ValueError, OverflowError, RecursionError, MemoryError) as e:
        # Defence in depth: every read is checked first, so this is a validator bug. Still a
        # verdict, never a crash.
        logger.error("validator bug on hostile input: %r", e)
        raise MalformedModelError(f"model could not be parsed safely ({type(e).__name__})") from e


class _Validator(TensorChecks):
    def __init__(self, mv: memoryview, allow_custom_ops: bool, limits: Limits) -> None:
        self.mv = mv
        self.allow_custom_ops = allow_custom_ops
        self.limits = limits
        self.r = Reader(
            mv, max_vector_length=limits.max_vector_length, max_string_bytes=limits.max_string_bytes
        )
        self.findings: list[str] = []
        # Vectors read element by element become Python objects: bound them tighter.
        self.cap = min(limits.max_vector_length, limits.max_tensors)
        self.buffers: list[tuple[int, int]] = []  # (data start, data length); (-1, 0) if none
        self.n_tensors_total = 0
        self.n_operators_total = 0
        self.opcode_names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def run(self) -> ModelSummary:
        size = len(self.mv)
        lim = self.limits
        if size > lim.max_model_bytes:
            raise MalformedModelError(
                f"model is {size} bytes, over the limit of {lim.max_model_bytes}"
            )
        if size < 12:
            raise MalformedModelError(f"model is {size} bytes, too short for a flatbuffer")
        ident = bytes(self.mv[4:8])
        if ident != s.FILE_IDENTIFIER:
            raise MalformedModelError(
                f"file identifier is {ident!r}, not {s.FILE_IDENTIFIER!r}: not a TFLite model"
            )
        model = self.r.table(self.r.follow(0, "root"), "model")
        version = int(model.scalar(s.ModelField.VERSION, _U32, 0, "model version"))
        if version != s.SCHEMA_VERSION:
            raise MalformedModelError(
                f"model schema version is {version}, expected {s.SCHEMA_VERSION}"
            )
        description = model.string(s.ModelField.DESCRIPTION, "model description") or ""

        self._buffers(model)
        opcodes = self._opcodes(model)
        self.opcode_names = opcodes
        subgraphs = model.tables(s.ModelField.SUBGRAPHS, "subgraph", lim.max_subgraphs)
        if not subgraphs:
            raise MalformedModelError("model has no subgraphs")
        tensors: list[TensorInfo] = []
        io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] = ((), ())
        sub_sizes: list[int] = []
        used_ops: set[int] = set()
        for g, sg in enumerate(subgraphs):
            infos, ins, outs = self._subgraph(g, sg, len(opcodes), used_ops)
            tensors.extend(infos)
            sub_sizes.append(len(infos))
            if g == 0:
                io = (ins, outs)
        self._metadata(model)
        self._signatures(model, sub_sizes)

        names = sorted({opcodes[i] for i in range(len(opcodes))})
        unused = sorted({opcodes[i] for i in range(len(opcodes)) if i not in used_ops})
        if unused:
            self.findings.append(f"operator codes declared but not used: {', '.join(unused)}")
        trailing = size - self.r.extent
        if trailing > TRAILING_SLACK:
            self.findings.append(
                f"{trailing} bytes after the end of the flatbuffer are not referenced "
                "(appended data?)"
            )
        return ModelSummary(
            schema_version=version,
            size=size,
            operators=tuple(names),
            inputs=io[0],
            outputs=io[1],
            subgraph_count=len(subgraphs),
            tensor_count=self.n_tensors_total,
            operator_count=self.n_operators_total,
            buffer_count=len(self.buffers),
            tensors=tuple(tensors),
            findings=tuple(self.findings),
            description=description,
        )

    # -- model-level vectors --------------------------------------------------------------------

    def _buffers(self, model: Table) -> None:
        size = len(self.mv)
        for i, b in enumerate(
            model.tables(s.ModelField.BUFFERS, "buffer", self.limits.max_buffers)
        ):
            where = f"buffer {i}"
            offset = int(b.scalar(s.BufferField.OFFSET, _U64, 0, where))
            length = int(b.scalar(s.BufferField.SIZE, _U64, 0, where))
            if offset or length:
                if offset + length > size:
                    raise MalformedModelError(
                        f"{where} points at bytes {offset}..{offset + length}, outside the "
                        f"{size}-byte file"
                    )
                raise PolicyError(
                    f"{where} keeps its data by offset/size outside the flatbuffer; "
                    "not supported (re-export the model without external buffers)"
                )
            # Tensor data is bounded by the file size (max_model_bytes), not max_vector_length.
            vec = b.vector(s.BufferField.DATA, 1, where, limit=size)
            if vec is None or vec[1] == 0:
                self.buffers.append((-1, 0))
            elif i == 0:
                # schema.fbs: "the 0th entry of this array must be an empty buffer (sentinel)"
                raise MalformedModelError("buffer 0 holds data; it must be the empty sentinel")
            else:
                self.buffers.append(vec)

    def _opcodes(self, model: Table) -> list[str]:
        names: list[str] = []
        codes = model.tables(
            s.ModelField.OPERATOR_CODES, "operator code", self.limits.max_operators
        )
        for i, oc in enumerate(codes):
            where = f"operator code {i}"
            dep = int(oc.scalar(s.OperatorCodeField.DEPRECATED_BUILTIN_CODE, _B, 0, where))
            new = int(oc.scalar(s.OperatorCodeField.BUILTIN_CODE, _I32, 0, where))
            code = s.builtin_code(dep, new)
            if code < 0:
                raise MalformedModelError(f"{where} has negative builtin code {code}")
            if code >= len(s.BUILTIN_OPERATORS):
                raise PolicyError(
                    f"{where} has builtin code {code}, unknown to this validator "
                    f"(known: 0..{len(s.BUILTIN_OPERATORS) - 1})"
                )
            custom = oc.string(s.OperatorCodeField.CUSTOM_CODE, f"{where} custom_code")
            if code == s.CUSTOM:
                name = f"CUSTOM:{custom or ''}"
                if not self.allow_custom_ops:
                    raise PolicyError(
                        f"{where} is the custom operator {custom!r}; custom operators are "
                        "refused unless allowed (--allow-custom-ops)"
                    )
            else:
                name = s.BUILTIN_OPERATORS[code]
            names.append(name)
        return names

    def _metadata(self, model: Table) -> None:
        nb = len(self.buffers)
        for i, idx in enumerate(
            model.numbers(s.ModelField.METADATA_BUFFER, "i", "metadata_buffer", self.cap)
        ):
            if not 0 <= int(idx) < nb:
                raise MalformedModelError(f"metadata_buffer {i} references buffer {idx} of {nb}")
        for i, md in enumerate(model.tables(s.ModelField.METADATA, "metadata", nb + 64)):
            where = f"metadata {i}"
            md.string(s.MetadataField.NAME, f"{where} name")
            idx = int(md.scalar(s.MetadataField.BUFFER, _U32, 0, where))
            if idx >= nb:
                raise MalformedModelError(f"{where} references buffer {idx} of {nb}")

    def _signatures(self, model: Table, sub_sizes: list[int]) -> None:
        f = s.SignatureDefField
        sigs = model.tables(s.ModelField.SIGNATURE_DEFS, "signature", self.limits.max_subgraphs * 4)
        for i, sd in enumerate(sigs):
            where = f"signature {i}"
            sd.string(f.SIGNATURE_KEY, f"{where} key")
            g = int(sd.scalar(f.SUBGRAPH_INDEX, _U32, 0, where))
            if g >= len(sub_sizes):
                raise MalformedModelError(f"{where} references subgraph {g} of {len(sub_sizes)}")
            for slot, kind in ((f.INPUTS, "input"), (f.OUTPUTS, "output")):
                maps = sd.tables(slot, f"{where} {kind}", self.limits.max_tensors)
                for j, tm in enumerate(maps):
                    tm.string(f.MAP_NAME, f"{where} {kind} {j} name")
                    t = int(tm.scalar(f.MAP_TENSOR_INDEX, _U32, 0, where))
                    if t >= sub_sizes[g]:
                        raise MalformedModelError(
                            f"{where} {kind} {j} references tensor {t} of {sub_sizes[g]}"
                        )

    # -- subgraphs ------------------------------------------------------------------------------

    def _subgraph(
        self, g: int, sg: Table, n_opcodes: int, used_ops: set[int]
    ) -> tuple[list[TensorInfo], tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        lim = self.limits
        where = f"subgraph {g}"
        remaining_t = lim.max_tensors - self.n_tensors_total
        tensor_tables = sg.tables(s.SubGraphField.TENSORS, f"{where} tensor", remaining_t)
        self.n_tensors_total += len(tensor_tables)
        self.variables: set[int] = set()
        infos = [self._tensor(g, i, t) for i, t in enumerate(tensor_tables)]
        nt = len(infos)

        def indices(slot: int, what: str) -> tuple[int, ...]:
            values = tuple(int(v) for v in sg.numbers(slot, "i", f"{where} {what}", self.cap))
            for k, v in enumerate(values):
                if not 0 <= v < nt:
                    raise MalformedModelError(f"{where} {what} {k} references tensor {v} of {nt}")
            return values

        ins = indices(s.SubGraphField.INPUTS, "input")
        outs = indices(s.SubGraphField.OUTPUTS, "output")
        remaining_o = lim.max_operators - self.n_operators_total
        ops = sg.tables(s.SubGraphField.OPERATORS, f"{where} operator", remaining_o)
        self.n_operators_total += len(ops)
        constant = {t.index for t in infos if t.data_bytes} - self.variables
        # Tensors with a value before any operator runs; each operator output adds one.
        ready = set(ins) | constant | self.variables | {t.index for t in infos if 0 in t.shape}
        written = set(ins)
        self.shapes = [t.shape for t in infos]
        self.op_inputs: list[tuple[str, tuple[int, ...]]] = []
        for k, op in enumerate(ops):
            self._operator(
                f"{where} operator {k}", op, nt, n_opcodes, used_ops, constant, ready, written
            )
        for k, (name, op_inputs) in enumerate(self.op_inputs):
            check_shapes(name, op_inputs, self.shapes, f"{where} operator {k}")
        sg.string(s.SubGraphField.NAME, f"{where} name")

        def spec(i: int) -> TensorSpec:
            t = infos[i]
            q = t.quantization.per_tensor() if t.quantization else None
            return TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape, quantization=q)

        return infos, tuple(spec(i) for i in ins), tuple(spec(i) for i in outs)

    def _operator(
        self,
        where: str,
        op: Table,
        nt: int,
        n_opcodes: int,
        used_ops: set[int],
        constant: set[int],
        ready: set[int],
        written: set[int],
    ) -> None:
        f = s.OperatorField
        idx = int(op.scalar(f.OPCODE_INDEX, _U32, 0, where))
        if idx >= n_opcodes:
            raise MalformedModelError(f"{where} references operator code {idx} of {n_opcodes}")
        used_ops.add(idx)
        name = self.opcode_names[idx]
        optional = (None if name in s.ANY_OPTIONAL_INPUTS or name.startswith("CUSTOM:")
                    else s.OPTIONAL_INPUTS.get(name, frozenset()))
        n_outputs = 0
        op_outputs: tuple[int, ...] = ()
        for slot, what, lowest in (
            (f.INPUTS, "input", -1),
            (f.OUTPUTS, "output", 0),
            (f.INTERMEDIATES, "intermediate", 0),
        ):
            values = tuple(int(v) for v in op.numbers(slot, "i", f"{where} {what}s", self.cap))
            if slot == f.OUTPUTS:
                n_outputs = len(values)
            if slot == f.INPUTS:
                self.op_inputs.append((self.opcode_names[idx], values))
                need = s.MIN_INPUTS.get(name, 0)
                if len(values) < need:
                    raise MalformedModelError(
                        f"{where} is {name} with {len(values)} inputs; it takes at least {need}"
                    )
            elif slot == f.OUTPUTS:
                op_outputs = values
            for k, v in enumerate(values):
                if not lowest <= int(v) < nt:
                    raise MalformedModelError(f"{where} {what} {k} references tensor {v} of {nt}")
                if slot == f.OUTPUTS and v in constant:
                    # The runtime maps constant data read-only, in place: writing it would
                    # crash (or, with a writable buffer, rewrite the verified weights).
                    raise MalformedModelError(
                        f"{where} writes output {k} into tensor {v}, which holds constant data"
                    )
                if v == -1 and optional is not None and k not in optional:
                    raise MalformedModelError(
                        f"{where} omits input {k}, which {self.opcode_names[idx]} requires"
                    )
                if slot == f.INPUTS and v != -1 and v not in ready:
                    self.findings.append(f"{where} reads tensor {v} before anything writes it")
                if slot == f.OUTPUTS:
                    if v in written:
                        # One producer per tensor: the runtime's memory planner assumes it, and
                        # LiteRT 2.3 crashes on a second writer (found by fuzzing).
                        raise MalformedModelError(f"{where} writes tensor {v}, already written")
                    written.add(v)
                    ready.add(v)
        for type_slot, table_slot, max_tag in (
            (f.BUILTIN_OPTIONS_TYPE, f.BUILTIN_OPTIONS, s.BuiltinOptions.MAX_TAG),
            (f.BUILTIN_OPTIONS_2_TYPE, f.BUILTIN_OPTIONS_2, s.BuiltinOptions.MAX_TAG_2),
        ):
            # Options tables are checked as tables (header, vtable, bounds), not field by field:
            # the runtime's option parsers read them with the generated accessors.
            tag = int(op.scalar(type_slot, _UB, 0, where))
            if tag > max_tag:
                self.findings.append(f"{where} has options type {tag}, unknown to this validator")
            options = op.table(table_slot, f"{where} options")
            if type_slot == f.BUILTIN_OPTIONS_TYPE:
                first = self.op_inputs[-1][1][:2]
                x = self.shapes[first[0]] if first and first[0] >= 0 else None
                check_options(self.opcode_names[idx], tag, options, f"{where} options", x,
                              n_outputs=n_outputs)
                wt = self.shapes[first[1]] if len(first) > 1 and first[1] >= 0 else None
                y = self.shapes[op_outputs[0]] if op_outputs else None
                check_output_shape(self.opcode_names[idx], options, x, wt, y, f"{where} options")
        op.vector(f.CUSTOM_OPTIONS, 1, f"{where} custom_options", limit=len(self.mv))
        op.vector(f.MUTATING_VARIABLE_INPUTS, 1, f"{where} mutating_variable_inputs")
        large_off = int(op.scalar(f.LARGE_CUSTOM_OPTIONS_OFFSET, _U64, 0, where))
        large_size = int(op.scalar(f.LARGE_CUSTOM_OPTIONS_SIZE, _U64, 0, where))
        if large_off or large_size:
            raise PolicyError(
                f"{where} keeps custom options outside the flatbuffer "
                f"(offset {large_off}, size {large_size}); not supported"
            )
