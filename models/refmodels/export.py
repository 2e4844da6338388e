"""Turn numpy-trained weights into ``.tflite`` bytes with edgeward's own flatbuffer writer.

* :func:`mlp_tflite`: float32 ``[1, F]`` -> ``FULLY_CONNECTED`` (fused ReLU) ... ->
  ``FULLY_CONNECTED`` -> ``SOFTMAX``;
* :func:`cnn_tflite`: float32 ``[1, 8, 8, 1]`` -> ``CONV_2D`` 3x3 SAME (fused ReLU) ->
  ``MAX_POOL_2D`` 2x2 -> ``FULLY_CONNECTED`` (the kernel flattens NHWC itself) ... -> ``SOFTMAX``;
* :func:`mlp_int8_tflite`: the MLP post-training quantised to int8 the way the TFLite converter
  does it for Pi-class CPUs: int8 activations (asymmetric, per tensor), int8 weights
  (symmetric, per tensor), int32 biases with scale ``s_in * s_w``, an int8 ``SOFTMAX`` with output
  scale 1/256 and zero point -128 (the kernel requires it), and float32 I/O through ``QUANTIZE`` /
  ``DEQUANTIZE`` (or int8 I/O with ``int8_io=True``).

Layouts and quantisation rules follow TensorFlow Lite's ``schema.fbs`` and its quantisation spec
(https://ai.google.dev/edge/litert/models/quantization_spec). No I/O.
"""

from __future__ import annotations

import numpy as np

from edgeward.models.refmodels.train import CnnWeights, Layer, MlpWeights
from edgeward.models.tflite import schema as s
from edgeward.models.tflite.builder import ModelDef, OperatorDef, TensorDef, build

FC = s.BUILTIN_CODES["FULLY_CONNECTED"]
CONV = s.BUILTIN_CODES["CONV_2D"]
MAXPOOL = s.BUILTIN_CODES["MAX_POOL_2D"]
SOFTMAX = s.BUILTIN_CODES["SOFTMAX"]
QUANTIZE = s.BUILTIN_CODES["QUANTIZE"]
DEQUANTIZE = s.BUILTIN_CODES["DEQUANTIZE"]


def _fc_options(relu: bool) -> tuple[tuple[int, str, int], ...]:
    return ((0, "b", s.ACTIVATION_RELU if relu else s.ACTIVATION_NONE),)


def _const(
    m: ModelDef,
    name: str,
    arr: np.ndarray,
    dtype: str,
    scale: tuple[float, ...] = (),
    zero_point: tuple[int, ...] = (),
) -> int:
    buf = m.add_buffer(np.ascontiguousarray(arr).tobytes())
    return m.add_tensor(TensorDef(name, dtype, tuple(arr.shape), buf, scale, zero_point))


def _dense_chain(
    m: ModelDef, x: int, layers: tuple[Layer, ...], prefix: str = "dense"
) -> tuple[int, int]:
    """(logits tensor, penultimate tensor: the input of the last layer)."""
    penultimate = x
    for k, (w, b) in enumerate(layers):
        penultimate = x
        last = k == len(layers) - 1
        wt = _const(m, f"{prefix}_{k}/weights", w.astype(np.float32), "FLOAT32")
        bt = _const(m, f"{prefix}_{k}/bias", b.astype(np.float32), "FLOAT32")
        name = "logits" if last else f"{prefix}_{k}/relu"
        y = m.add_tensor(TensorDef(name, "FLOAT32", (1, w.shape[0])))
        m.operators.append(
            OperatorDef(
                m.opcode(FC),
                (x, wt, bt),
                (y,),
                s.BuiltinOptions.FULLY_CONNECTED,
                _fc_options(not last),
            )
        )
        x = y
    return x, penultimate


def _softmax(m: ModelDef, x: int, n: int) -> int:
    y = m.add_tensor(TensorDef("probabilities", "FLOAT32", (1, n)))
    m.operators.append(
        OperatorDef(m.opcode(SOFTMAX), (x,), (y,), s.BuiltinOptions.SOFTMAX, ((0, "f", 1.0),))
    )
    return y


def mlp_tflite(
    weights: MlpWeights, description: str = "edgeward digits MLP", *, features: bool = False
) -> bytes:
    """The float32 MLP as a ``.tflite`` model: input ``[1, F]``, output probabilities.

    ``features=True`` names the penultimate layer as a second output, for the guard's
    feature-space detectors (the tensor's name is in ``get_output_details()[1]``).
    """
    m = ModelDef(description=description)
    n_in = weights.layers[0][0].shape[1]
    x = m.add_tensor(TensorDef("input", "FLOAT32", (1, n_in)))
    logits, pen = _dense_chain(m, x, weights.layers)
    y = _softmax(m, logits, weights.layers[-1][0].shape[0])
    m.inputs, m.outputs = [x], [y, pen] if features else [y]
    return build(m)


def cnn_tflite(
    weights: CnnWeights, description: str = "edgeward digits CNN", *, features: bool = False
) -> bytes:
    """The float32 CNN as a ``.tflite`` model: input ``[1, 8, 8, 1]``, output probabilities.

    ``features=True`` names the penultimate layer as a second output (see :func:`mlp_tflite`).
    """
    m = ModelDef(description=description)
    h, w = weights.image
    c = weights.conv_w.shape[0]
    x = m.add_tensor(TensorDef("input", "FLOAT32", (1, h, w, 1)))
    cw = _const(m, "conv/filter", weights.conv_w.astype(np.float32), "FLOAT32")
    cb = _const(m, "conv/bias", weights.conv_b.astype(np.float32), "FLOAT32")
    conv = m.add_tensor(TensorDef("conv/relu", "FLOAT32", (1, h, w, c)))
    m.operators.append(
        OperatorDef(
            m.opcode(CONV),
            (x, cw, cb),
            (conv,),
            s.BuiltinOptions.CONV_2D,
            ((0, "b", s.PADDING_SAME), (1, "i", 1), (2, "i", 1), (3, "b", s.ACTIVATION_RELU)),
        )
    )
    pool = m.add_tensor(TensorDef("pool", "FLOAT32", (1, h // 2, w // 2, c)))
    m.operators.append(
        OperatorDef(
            m.opcode(MAXPOOL),
            (conv,),
            (pool,),
            s.BuiltinOptions.POOL_2D,
            ((0, "b", s.PADDING_VALID), (1, "i", 2), (2, "i", 2), (3, "i", 2), (4, "i", 2)),
        )
    )
    logits, pen = _dense_chain(m, pool, weights.dense)
    y = _softmax(m, logits, weights.dense[-1][0].shape[0])
    m.inputs, m.outputs = [x], [y, pen] if features else [y]
    return build(m)


# -- int8 ------------------------------------------------------------------------------------


def _asym(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping ``[lo, hi]`` (widened to include 0) onto int8."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zp


def _quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def mlp_int8_tflite(
    weights: MlpWeights,
    calibration_x: np.ndarray,
    *,
    int8_io: bool = False,
    description: str = "edgeward digits MLP int8",
    features: bool = False,
) -> bytes:
    """Post-training int8 quantisation of the MLP, calibrated on ``calibration_x`` ``[N, F]``.

    ``features=True`` names the (int8) penultimate layer as a second output.

    Input range is taken from the calibration data, activation ranges from a float forward pass.
    """
    xs = calibration_x.reshape(len(calibration_x), -1).astype(np.float32)
    m = ModelDef(description=description)
    n_in = xs.shape[1]
    s_x, zp_x = _asym(xs.min(), xs.max())
    q_in = m.add_tensor(TensorDef("input_int8", "INT8", (1, n_in), 0, (s_x,), (zp_x,)))
    if int8_io:
        m.inputs = [q_in]
    else:
        x = m.add_tensor(TensorDef("input", "FLOAT32", (1, n_in)))
        m.operators.append(OperatorDef(m.opcode(QUANTIZE, version=2), (x,), (q_in,)))
        m.inputs = [x]
    h, s_h, cur = xs, s_x, q_in
    pen = cur
    for k, (w, b) in enumerate(weights.layers):
        pen = cur
        last = k == len(weights.layers) - 1
        s_w = float(np.abs(w).max()) / 127.0 or 1.0
        qw = _const(
            m, f"dense_{k}/weights", _quant(w, s_w, 0), "INT8", scale=(s_w,), zero_point=(0,)
        )
        s_b = s_h * s_w
        bias = np.round(b / s_b).astype(np.int32)
        qb = _const(m, f"dense_{k}/bias", bias, "INT32", scale=(s_b,), zero_point=(0,))
        h = h @ w.T + b
        if not last:
            h = np.maximum(h, 0)
        s_o, zp_o = _asym(h.min(), h.max())
        name = "logits_int8" if last else f"dense_{k}/relu_int8"
        out = m.add_tensor(TensorDef(name, "INT8", (1, w.shape[0]), 0, (s_o,), (zp_o,)))
        m.operators.append(
            OperatorDef(
                m.opcode(FC, version=4),
                (cur, qw, qb),
                (out,),
                s.BuiltinOptions.FULLY_CONNECTED,
                _fc_options(not last),
            )
        )
        cur, s_h = out, s_o
    n_out = weights.layers[-1][0].shape[0]
    probs_q = m.add_tensor(
        TensorDef("probabilities_int8", "INT8", (1, n_out), 0, (1.0 / 256.0,), (-128,))
    )
    m.operators.append(
        OperatorDef(
            m.opcode(SOFTMAX, version=2),
            (cur,),
            (probs_q,),
            s.BuiltinOptions.SOFTMAX,
            ((0, "f", 1.0),),
        )
    )
    if int8_io:
        m.outputs = [probs_q]
    else:
        probs = m.add_tensor(TensorDef("probabilities", "FLOAT32", (1, n_out)))
        m.operators.append(OperatorDef(m.opcode(DEQUANTIZE, version=2), (probs_q,), (probs,)))
        m.outputs = [probs]
    if features:
        m.outputs.append(pen)
    return build(m)
