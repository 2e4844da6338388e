"""Operator sanity beyond the schema: builtin options and declared shapes of common operators.

The validator checks every options table as a table (bounds, vtable); for the operators below it
also reads the fields the kernels divide by or index with, and compares the declared shapes the
kernels would otherwise trust. Each rule stands for a crash (SIGFPE, SIGSEGV, heap corruption)
that fuzzing tflite-runtime 2.14 or LiteRT 2.3 with mutated models produced after the structural
checks had passed:

* an operator listed in :data:`EXPECTED_TAG` carries no options or options of its own union type;
* strides, dilations, filter sizes and depth multipliers are in 1..65536 (the schema default 0
  for strides counts as missing), and strides and dilations do not exceed the input's height or
  width; padding and fused activation are known enum values; ``SOFTMAX`` beta is finite;
* ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` / ``*_POOL_2D`` inputs and filters are 4-D with no empty
  dimension, a ``CONV_2D`` input's channels fit its filter (groups allowed), and a
  ``FULLY_CONNECTED`` input splits into rows of the weights' width;
* ``SPLIT`` / ``SPLIT_V`` split into 1..65536 parts, as many as they have outputs, and
  ``LOCAL_RESPONSE_NORMALIZATION``'s radius is in 0..1024 (found in review for issue 9,
  :data:`_INT_RANGES`);
* the declared output of those convolutions and pools is the shape the kernel computes
  (:func:`check_output_shape`): LiteRT resizes to the computed shape, whatever the file says.

It does not infer shapes through the graph (a declared input that makes a later pool produce an
empty tensor still passes; tflite-runtime 2.14 crashes on that, LiteRT does not). No I/O.
"""
from __future__ import annotations

import math
import struct

from edgeward.core.errors import MalformedModelError
from edgeward.models.tflite.flatbuf import Table

_B = struct.Struct("<b")
_I32 = struct.Struct("<i")
_F32 = struct.Struct("<f")

# operator -> BuiltinOptions union tag (schema.fbs)
EXPECTED_TAG: dict[str, int] = {
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 2,
    "AVERAGE_POOL_2D": 5,
    "MAX_POOL_2D": 5,
    "L2_POOL_2D": 5,
    "FULLY_CONNECTED": 8,
    "SOFTMAX": 9,
    "RESHAPE": 17,
}

MAX_WINDOW = 1 << 16
"""Upper bound for strides, dilations, filter sizes: huge values overflow output-size arithmetic
(SIGSEGV in tflite-runtime 2.14, found by fuzzing)."""
PADDINGS = range(2)  # SAME, VALID
ACTIVATIONS = range(6)  # NONE, RELU, RELU_N1_TO_1, RELU6, TANH, SIGN_BIT

# tag -> (padding slot, activation slot, {slot: (name, default)} that must be >= 1)
_LAYOUT: dict[int, tuple[int | None, int | None, dict[int, tuple[str, int]]]] = {
    1: (0, 3, {1: ("stride_w", 0), 2: ("stride_h", 0), 4: ("dilation_w", 1),
               5: ("dilation_h", 1)}),
    2: (0, 4, {1: ("stride_w", 0), 2: ("stride_h", 0), 3: ("depth_multiplier", 0),
               5: ("dilation_w", 1), 6: ("dilation_h", 1)}),
    5: (0, 5, {1: ("stride_w", 0), 2: ("stride_h", 0), 3: ("filter_width", 0),
               4: ("filter_height", 0)}),
    8: (None, 0, {}),
}  # fmt: skip


MAX_LRN_RADIUS = 1024
"""LOCAL_RESPONSE_NORMALIZATION's radius: LiteRT loops over it unclamped (1e9 hangs)."""

# operator -> (union tag, {slot: (field, default, lowest, highest)}): integer options the kernels
# trust. Review for issue 9: SPLIT / SPLIT_V with num_splits <= 0 crash LiteRT 2.3 with XNNPACK
# (SIGSEGV); LOCAL_RESPONSE_NORMALIZATION with a negative radius crashes it (SIGSEGV) and a huge
# one hangs it.
_INT_RANGES: dict[str, tuple[int, dict[int, tuple[str, int, int, int]]]] = {
    "SPLIT": (35, {0: ("num_splits", 0, 1, MAX_WINDOW)}),
    "SPLIT_V": (79, {0: ("num_splits", 0, 1, MAX_WINDOW)}),
    "LOCAL_RESPONSE_NORMALIZATION": (13, {0: ("radius", 0, 0, MAX_LRN_RADIUS)}),
}


def _check_int_ranges(op_name: str, tag: int, options: Table | None, where: str,
                      n_outputs: int | None) -> None:
    expected, fields = _INT_RANGES[op_name]
    if tag not in (0, expected):
        raise MalformedModelError(
            f"{where} is {op_name} but carries options of union type {tag} (expected {expected})"
        )
    for slot, (name, default, lo, hi) in fields.items():
        value = int(options.scalar(slot, _I32, default, where)) if options is not None else default
        if not lo <= value <= hi:
            raise MalformedModelError(f"{where} has {op_name} {name} {value}; it must be in "
                                      f"{lo}..{hi}")
        if name == "num_splits" and n_outputs is not None and value != n_outputs:
            # the XNNPACK delegate writes num_splits outputs (SIGSEGV with fewer, review)
            raise MalformedModelError(f"{where} has {op_name} num_splits {value} but "
                                      f"{n_outputs} outputs")


def check_options(
    op_name: str,
    tag: int,
    options: Table | None,
    where: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    n_outputs: int | None = None,
) -> None:
    """Raise :class:`MalformedModelError` when ``op_name``'s options are unusable.

    With a known NHWC ``input_shape``, strides and dilations may not exceed the input's height
    or width (tflite-runtime 2.14 with XNNPACK corrupts its heap on such a CONV_2D, found by
    fuzzing; no useful model needs a step larger than the image).
    """
    if op_name in _INT_RANGES:
        _check_int_ranges(op_name, tag, options, where, n_outputs)
        return
    expected = EXPECTED_TAG.get(op_name)
    if expected is None:
        return
    if tag not in (0, expected):
        raise MalformedModelError(
            f"{where} is {op_name} but carries options of union type {tag} (expected {expected})"
        )
    layout = _LAYOUT.get(expected)
    if layout is not None:
        padding_slot, activation_slot, positive = layout
        if options is None and positive:
            raise MalformedModelError(f"{where} is {op_name} without options (strides unknown)")
        if options is None:
            return
        if padding_slot is not None:
            padding = int(options.scalar(padding_slot, _B, 0, where))
            if padding not in PADDINGS:
                raise MalformedModelError(f"{where} has unknown padding {padding}")
        if activation_slot is not None:
            act = int(options.scalar(activation_slot, _B, 0, where))
            if act not in ACTIVATIONS:
                raise MalformedModelError(f"{where} has unknown fused activation {act}")
        for slot, (name, default) in positive.items():
            value = int(options.scalar(slot, _I32, default, where))
            if not 1 <= value <= MAX_WINDOW:
                raise MalformedModelError(
                    f"{where} has {name} {value}; it must be in 1..{MAX_WINDOW}"
                )
            if input_shape is not None and len(input_shape) == 4 and name[-2:] in ("_w", "_h"):
                extent = input_shape[2] if name.endswith("_w") else input_shape[1]
                if extent >= 1 and value > extent:
                    raise MalformedModelError(
                        f"{where} has {name} {value}, larger than the input's {extent}"
                    )
    if expected == 9 and options is not None:
        beta = float(options.scalar(0, _F32, 0.0, where))
        if not math.isfinite(beta):
            raise MalformedModelError(f"{where} has SOFTMAX beta {beta}")


def check_output_shape(
    op_name: str,
    options: Table | None,
    x: tuple[int, ...] | None,
    w: tuple[int, ...] | None,
    y: tuple[int, ...] | None,
    where: str,
) -> None:
    """The declared output of a ``CONV_2D``, ``DEPTHWISE_CONV_2D`` or ``*_POOL_2D`` must be the
    shape its kernel computes from the input (TFLite ``ComputeOutSize``: SAME ``ceil(n / s)``,
    VALID ``(n + s - ((f - 1) * d + 1)) // s``; batch kept; channels from the filter).

    LiteRT resizes the output to the computed shape, so a declared shape that differs hides the
    memory the model needs: fuzzing LiteRT 2.3 found a 12 KB CNN declaring a [1, 8, 8, 16]
    convolution output over a [1, 16775432, 8, 1] input; it passed and made LiteRT take more
    than 9 GB and 90 s. Shapes with a ``-1`` (dynamic) dimension are not judged here.
    """
    tag = EXPECTED_TAG.get(op_name)
    if tag not in (1, 2, 5) or options is None or x is None or y is None:
        return
    if len(x) != 4 or len(y) != 4 or min(x) < 1 or -1 in y:
        return  # dynamic, or not 4-D with every dimension >= 1: check_shapes says what is wrong
    stride_w = int(options.scalar(1, _I32, 0, where))
    stride_h = int(options.scalar(2, _I32, 0, where))
    if tag == 5:
        fw, fh = int(options.scalar(3, _I32, 0, where)), int(options.scalar(4, _I32, 0, where))
        dw = dh = 1
        channels = x[3]
    else:
        if w is None or len(w) != 4 or min(w) < 1:
            return
        fh, fw = w[1], w[2]
        dslot = 4 if tag == 1 else 5
        dw = int(options.scalar(dslot, _I32, 1, where))
        dh = int(options.scalar(dslot + 1, _I32, 1, where))
        channels = w[0] if tag == 1 else w[3]
    valid = int(options.scalar(0, _B, 0, where)) == 1

    def out(n: int, f: int, stride: int, dilation: int) -> int:
        if valid:
            return (n + stride - ((f - 1) * dilation + 1)) // stride
        return (n + stride - 1) // stride

    expected = (x[0], out(x[1], fh, stride_h, dh), out(x[2], fw, stride_w, dw), channels)
    if tuple(y) != expected:
        raise MalformedModelError(
            f"{where} declares output shape {list(y)}, but {op_name} computes {list(expected)} "
            f"from input {list(x)}"
        )


def _dims_ok(shape: tuple[int, ...], rank: int) -> bool:
    return len(shape) == rank and all(d >= 1 or d == -1 for d in shape)


def check_shapes(
    op_name: str, inputs: tuple[int, ...], shapes: list[tuple[int, ...]], where: str
) -> None:
    """Declared shapes that crash kernels before they can complain (tflite-runtime 2.14 raises
    SIGFPE on a CONV_2D whose input channels do not match its filter, found by fuzzing).

    ``-1`` (dynamic) dimensions are not judged. Other shape rules are the kernels' business.
    """
    if op_name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and not op_name.endswith(
        "POOL_2D"
    ):
        return
    if not inputs or inputs[0] < 0:
        return
    x = shapes[inputs[0]]
    if op_name.endswith("POOL_2D"):
        if not _dims_ok(x, 4):
            raise MalformedModelError(f"{where} pools an input of shape {list(x)} (needs 4-D)")
        return
    if len(inputs) < 2 or inputs[1] < 0:
        return
    w = shapes[inputs[1]]
    if op_name == "FULLY_CONNECTED":
        if not _dims_ok(w, 2) or not all(d >= 1 or d == -1 for d in x):
            raise MalformedModelError(
                f"{where} has weights {list(w)} and input {list(x)} (needs 2-D weights)"
            )
        n = math.prod(x)
        if w[1] > 0 and n > 0 and n % w[1]:
            raise MalformedModelError(
                f"{where} input of {n} elements does not split into rows of {w[1]}"
            )
        return
    if not _dims_ok(x, 4) or not _dims_ok(w, 4):
        raise MalformedModelError(
            f"{where} convolves input {list(x)} with filter {list(w)} (both must be 4-D, >= 1)"
        )
    if op_name == "CONV_2D" and x[3] > 0 and w[3] > 0:
        groups, rest = divmod(x[3], w[3])
        if rest or w[0] % groups:
            raise MalformedModelError(
                f"{where} input has {x[3]} channels but the filter takes {w[3]} "
                f"(and has {w[0]} outputs)"
            )
