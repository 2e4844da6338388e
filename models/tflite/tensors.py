"""Tensor checks of the TFLite validator: type, shape, data size, quantisation parameters.

A mixin of :class:`edgeward.models.tflite.validate._Validator`, split out by idea: the rules a
single ``Tensor`` table (TensorFlow Lite ``schema.fbs``) must follow, with the bounds-checked
reads of :mod:`edgeward.models.tflite.flatbuf`. Rules beyond the schema come from what crashes
the runtime: subnormal, zero, negative or non-finite scales, and zero points outside the
quantised type's range, were found by fuzzing LiteRT 2.3 with models that passed the structural
checks.

No I/O.
"""

from __future__ import annotations

import math
import struct

from edgeward.core.errors import MalformedModelError, PolicyError
from edgeward.core.limits import Limits
from edgeward.models.tflite import schema as s
from edgeward.models.tflite.flatbuf import Table
from edgeward.models.tflite.summary import Quantization, TensorInfo

_B = struct.Struct("<b")
_UB = struct.Struct("<B")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")

_ZERO_POINT_RANGE = {
    "INT8": (-128, 127),
    "UINT8": (0, 255),
    "INT16": (-32768, 32767),
    "UINT16": (0, 65535),
    "INT4": (-8, 7),
}


class TensorChecks:
    """Reads and checks one tensor; the validator supplies the state below."""

    limits: Limits
    mv: memoryview
    buffers: list[tuple[int, int]]
    findings: list[str]
    variables: set[int]
    cap: int

    def _tensor(self, g: int, i: int, t: Table) -> TensorInfo:
        lim = self.limits
        f = s.TensorField
        where = f"tensor {i}" if g == 0 else f"subgraph {g} tensor {i}"
        code = int(t.scalar(f.TYPE, _B, 0, where))
        if not 0 <= code < len(s.TENSOR_TYPES):
            raise MalformedModelError(f"{where} has unknown type {code}")
        dtype = s.TENSOR_TYPES[code]
        name = t.string(f.NAME, f"{where} name") or ""
        shape = self._dims(t, f.SHAPE, f"{where} shape")
        signature = self._dims(t, f.SHAPE_SIGNATURE, f"{where} shape_signature")
        if signature and len(signature) != len(shape):
            raise MalformedModelError(
                f"{where} has rank {len(shape)} but shape_signature rank {len(signature)}"
            )
        elements = 1
        for k, d in enumerate(shape):
            if d < -1 or (d == -1 and (not signature or signature[k] != -1)):
                raise MalformedModelError(f"{where} has invalid dimension {d} at axis {k}")
            elements *= max(d, 0) if d != -1 else 1
            if elements > lim.max_tensor_elements:
                raise MalformedModelError(
                    f"{where} has more than {lim.max_tensor_elements} elements"
                )
        for k, d in enumerate(signature):
            if d < -1:
                raise MalformedModelError(f"{where} shape_signature has dimension {d} at axis {k}")

        buffer = int(t.scalar(f.BUFFER, _U32, 0, where))
        nb = len(self.buffers)
        if buffer >= nb:
            raise MalformedModelError(f"{where} references buffer {buffer} of {nb}")
        data_offset, data_bytes = self.buffers[buffer]
        if t.table(f.SPARSITY, f"{where} sparsity") is not None:
            # LiteRT trusts a sparse tensor's index arrays: an index past the dense size makes
            # DENSIFY write outside its output (SIGSEGV, SIGABRT, or silently, for a negative
            # one), found in review for issue 9. Refused rather than checked: rare in practice.
            raise PolicyError(
                f"{where} is sparse; sparse tensors are not supported (the runtime trusts "
                "their index arrays): densify the model before signing it"
            )
        if data_bytes:
            self._check_data_size(where, dtype, elements, data_bytes)
            if dtype == "STRING":
                self._check_strings(where, elements, data_offset, data_bytes)
        if int(t.scalar(f.IS_VARIABLE, _UB, 0, where)):
            self.variables.add(i)
        quant = self._quantization(where, t, shape, dtype)
        return TensorInfo(
            subgraph=g,
            index=i,
            name=name,
            dtype=dtype,
            shape=shape,
            buffer=buffer,
            data_bytes=data_bytes,
            data_offset=data_offset if data_bytes else -1,
            quantization=quant,
        )

    def _dims(self, t: Table, slot: int, where: str) -> tuple[int, ...]:
        vec = t.vector(slot, 4, where)
        if vec is not None and vec[1] > self.limits.max_tensor_rank:
            raise MalformedModelError(
                f"{where} has rank {vec[1]}, over the limit of {self.limits.max_tensor_rank}"
            )
        return tuple(int(d) for d in t.numbers(slot, "i", where, self.limits.max_tensor_rank))

    def _check_data_size(self, where: str, dtype: str, elements: int, data_bytes: int) -> None:
        if dtype in ("RESOURCE", "VARIANT"):
            # Handles the runtime creates itself; data from the file would be read as pointers.
            raise MalformedModelError(f"{where} is {dtype} but holds constant data")
        if dtype == "STRING":
            return  # variable length: the offset table is checked by _check_strings
        if dtype == "INT4":
            ok = data_bytes in ((elements + 1) // 2, elements)
            expected = (elements + 1) // 2
        else:
            expected = elements * s.ELEMENT_BYTES[dtype]
            ok = data_bytes == expected
        if not ok:
            raise MalformedModelError(
                f"{where} is {dtype} with {elements} elements ({expected} bytes) but its "
                f"buffer holds {data_bytes} bytes"
            )

    def _check_strings(self, where: str, elements: int, start: int, size: int) -> None:
        """A constant STRING tensor's offset table (TFLite ``string_util.h``).

        Layout: int32 count N, N + 1 int32 offsets from the start of the buffer, then the bytes;
        string i is ``[offset[i], offset[i+1])``. LiteRT trusts the table: an offset outside the
        buffer makes kernels such as FILL and TILE copy process memory into their output or
        crash (SIGSEGV). So: N equals the tensor's element count, the first offset is the end
        of the table, offsets never decrease, and the last one is the buffer's end.
        """
        if size < 8:
            raise MalformedModelError(f"{where} is STRING but its buffer holds {size} bytes")
        count = _I32.unpack_from(self.mv, start)[0]
        if count != elements:
            raise MalformedModelError(
                f"{where} is STRING with {elements} elements but its buffer says {count} strings"
            )
        table = 4 * (count + 2)
        if table > size:
            raise MalformedModelError(
                f"{where} is STRING with {count} strings; its offset table ({table} bytes) "
                f"overruns the {size}-byte buffer"
            )
        last = table
        for k, (off,) in enumerate(_I32.iter_unpack(self.mv[start + 4 : start + table])):
            if k == 0 and off != table:
                raise MalformedModelError(
                    f"{where} string offset 0 is {off}, not the table's end {table}"
                )
            if off < last or off > size:
                raise MalformedModelError(
                    f"{where} string offset {k} is {off}, outside {last}..{size}"
                )
            last = off
        if last != size:
            raise MalformedModelError(
                f"{where} string data ends at {last} but the buffer holds {size} bytes"
            )

    def _quantization(
        self, where: str, t: Table, shape: tuple[int, ...], dtype: str
    ) -> Quantization | None:
        f = s.QuantizationField
        q = t.table(s.TensorField.QUANTIZATION, f"{where} quantization")
        if q is None:
            return None
        qw = f"{where} quantization"
        q.numbers(f.MIN, "f", f"{qw} min", self.cap)
        q.numbers(f.MAX, "f", f"{qw} max", self.cap)
        scale = tuple(float(v) for v in q.numbers(f.SCALE, "f", f"{qw} scale", self.cap))
        zero = tuple(int(v) for v in q.numbers(f.ZERO_POINT, "q", f"{qw} zero_point", self.cap))
        dim = int(q.scalar(f.QUANTIZED_DIMENSION, _I32, 0, qw))
        details_type = int(q.scalar(f.DETAILS_TYPE, _UB, 0, qw))
        if details_type:
            q.table(f.DETAILS, f"{qw} details")
        if not scale and not zero:
            return None
        if zero and len(zero) != len(scale):
            raise MalformedModelError(f"{qw} has {len(scale)} scales but {len(zero)} zero points")
        if len(scale) > 1:
            if not 0 <= dim < len(shape) or shape[dim] != len(scale):
                raise MalformedModelError(
                    f"{qw} has {len(scale)} per-channel scales that do not match "
                    f"dimension {dim} of shape {list(shape)}"
                )
        for v in scale:
            if not math.isfinite(v) or v < s.MIN_NORMAL_FLOAT32:
                raise MalformedModelError(f"{qw} has scale {v}; scales must be normal positive")
        lo, hi = _ZERO_POINT_RANGE.get(dtype, (-(1 << 31), (1 << 31) - 1))
        for z in zero:
            if not lo <= z <= hi:
                raise MalformedModelError(f"{qw} has zero point {z}, outside {dtype}'s range")
        return Quantization(scale=scale, zero_point=zero, quantized_dimension=dim)
