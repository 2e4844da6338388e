"""The guard's view of a TFLite interpreter: float rows in, outputs and logits out.

:class:`ModelIO` runs a batch-1 interpreter (LiteRT or tflite-runtime, duck-typed: no runtime is
imported here) on flat float rows, quantising inputs and dequantising outputs and logits where
the model is quantised. :func:`softmax_logits_index` finds the pre-softmax logits tensor, which
the energy detector needs. The only I/O is the interpreter call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .calibrate import Outputs
from .detectors import softmax

F64 = NDArray[np.float64]


def softmax_logits_index(interpreter: Any) -> int | None:
    """The tensor feeding the model's final SOFTMAX (its logits), if the runtime can tell.

    Reading it is only meaningful when the interpreter was created with
    ``experimental_preserve_all_tensors=True``; otherwise the runtime may reuse its memory.
    A quantised model's SOFTMAX may be followed by DEQUANTIZE (or QUANTIZE, RESHAPE): the walk
    goes back from the output through those. Delegate nodes (XNNPACK) repeat the tensors of the
    ops they took over and are skipped.
    """
    out_idx = int(interpreter.get_output_details()[0]["index"])
    try:
        ops = interpreter._get_ops_details()
    except Exception:  # a runtime without op introspection
        return None
    producer: dict[int, dict[str, Any]] = {}
    for op in ops:
        if op.get("op_name") == "DELEGATE":
            continue
        for t in op.get("outputs", []):
            producer.setdefault(int(t), op)
    idx = out_idx
    for _ in range(8):
        op = producer.get(idx)
        if op is None or not len(op.get("inputs", [])):
            return None
        if op.get("op_name") == "SOFTMAX":
            return int(op["inputs"][0])
        if op.get("op_name") not in ("DEQUANTIZE", "QUANTIZE", "RESHAPE"):
            return None
        idx = int(op["inputs"][0])
    return None


class ModelIO:
    """Float rows in, float outputs out, over a batch-1 interpreter (quantised or not)."""

    def __init__(self, interpreter: Any, *, logits_index: int | None = None) -> None:
        self.interp = interpreter
        self.inp = interpreter.get_input_details()[0]
        self.out = interpreter.get_output_details()[0]
        self.in_shape = tuple(int(n) for n in self.inp["shape"])
        self.in_dtype = np.dtype(self.inp["dtype"])
        self.in_q = self.inp.get("quantization", (0.0, 0))
        self.out_q = self.out.get("quantization", (0.0, 0))
        # per-invoke constants of run_raw
        self._in_index, self._out_index = int(self.inp["index"]), int(self.out["index"])
        self._float_in = self.in_dtype.kind == "f"
        self._int_out = np.dtype(self.out["dtype"]).kind in "iu" and bool(self.out_q[0])
        self.logits_index = logits_index
        self.logits_q: tuple[float, int] = (0.0, 0)
        self._int_logits = False
        if logits_index is not None:
            details: list[dict[str, Any]] = getattr(interpreter, "get_tensor_details", lambda: [])()
            for t in details:
                if int(t["index"]) == logits_index:
                    scale, zero = t.get("quantization", (0.0, 0))
                    self.logits_q = (float(scale), int(zero))
                    kind = np.dtype(t["dtype"]).kind if "dtype" in t else "i"  # unknown: check
                    self._int_logits = kind in "iu" and bool(scale)
        # Float input, output and logits: nothing to quantise (the guard inlines run_raw).
        self.plain = self._float_in and not self._int_out and not self._int_logits

    def _logits(self) -> np.ndarray:
        assert self.logits_index is not None
        z = self.interp.get_tensor(self.logits_index).reshape(-1)
        if z.dtype.kind in "iu" and self.logits_q[0]:
            return (z.astype(np.float64) - self.logits_q[1]) * self.logits_q[0]
        return z

    def _to_input(self, row: F64) -> np.ndarray:
        x = row.reshape(self.in_shape)
        if self.in_dtype.kind in "iu" and self.in_q[0]:
            scale, zp = self.in_q
            info = np.iinfo(self.in_dtype)
            x = np.clip(np.round(x / scale + zp), info.min, info.max)
        return x.astype(self.in_dtype, copy=False)

    def _from(self, raw: np.ndarray, q: tuple[float, int]) -> F64:
        y = raw.astype(np.float64).reshape(1, -1)
        if raw.dtype.kind in "iu" and q[0]:
            y = (y - q[1]) * q[0]
        return y

    def run_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One invoke on a valid sample: (output tensor, dequantised flat output, logits)."""
        it = self.interp
        if self._float_in:
            it.set_tensor(self._in_index, x.reshape(self.in_shape))
        else:
            it.set_tensor(self._in_index, self._to_input(np.asarray(x, np.float64)))
        it.invoke()
        raw = it.get_tensor(self._out_index)
        y = raw.reshape(-1)
        if self._int_out:
            y = (y.astype(np.float64) - self.out_q[1]) * self.out_q[0]
        if self.logits_index is None:
            return raw, y, None
        if self._int_logits:
            return raw, y, self._logits()
        return raw, y, it.get_tensor(self.logits_index).reshape(-1)

    def run_one(self, row: F64) -> tuple[F64, F64 | None]:
        """(raw outputs (1, k) as float, logits (1, k) or None) for one flat row."""
        self.interp.set_tensor(self.inp["index"], self._to_input(row))
        self.interp.invoke()
        y = self._from(self.interp.get_tensor(self.out["index"]), self.out_q)
        logits = None
        if self.logits_index is not None:
            logits = self._logits().astype(np.float64).reshape(1, -1)
        return y, logits

    def predict(self, rows: F64, kind: str | None = None) -> Outputs:
        """Batch helper (one invoke per row), for calibration and offline scoring."""
        ys, ls = [], []
        for r in np.asarray(rows, dtype=np.float64).reshape(len(rows), -1):
            y, lg = self.run_one(r)
            ys.append(y[0])
            ls.append(lg[0] if lg is not None else None)
        y = np.array(ys, dtype=np.float64).reshape(len(ys), -1)
        return self.outputs(
            y, np.array(ls, dtype=np.float64) if ls and ls[0] is not None else None, kind
        )

    @staticmethod
    def outputs(y: F64, logits: F64 | None, kind: str | None) -> Outputs:
        if kind is None:
            # Probabilities: every row in [0, 1] summing to 1 within 0.05 (an int8 softmax
            # dequantised in steps of 1/256 does not sum to exactly 1).
            in_unit = bool(((y >= -1e-6) & (y <= 1 + 1e-6)).all())
            kind = "probs" if in_unit and np.allclose(y.sum(axis=1), 1.0, atol=0.05) else "logits"
        if kind == "logits":
            return Outputs(probs=softmax(y), logits=y, kind="logits")
        return Outputs(probs=y, logits=logits, kind="probs")
