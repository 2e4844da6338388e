"""Reading the penultimate-layer features out of an interpreter, and the sampled feature hook.

:class:`FeatureTap` finds the tensor the profile names (``FeatureModel.tensor``) in the
interpreter: first among the model's outputs (the robust way: the reference models name their
penultimate layer as a second output, and a runtime never reuses an output's memory), then among
all tensors, which is only meaningful when the interpreter was built with
``preserve_all_tensors=True`` (said once in the log). A profile naming a tensor the model does not
have, or one of another size, is refused when the guard is built (:class:`MalformedInputError`,
exit 2): features of the wrong layer would make every score meaningless.

:class:`FeatureHook` is what :class:`GuardedInterpreter` calls after each invoke: on a fraction
``rate`` of invokes (a deterministic accumulator, as for squeezing) it reads the features and adds
the feature scores; on the others it adds nothing, so the hot path pays one float addition.

The only I/O is ``get_tensor`` on the interpreter (duck-typed; no runtime is imported).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeward.core.errors import MalformedInputError

from .features import FEATURE_DETECTORS, FeatureModel

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]


class FeatureTap:
    """The feature tensor of one interpreter, dequantised to float64 rows."""

    def __init__(self, interpreter: Any, tensor: str, dim: int) -> None:
        self.interp = interpreter
        self.tensor = tensor
        detail = None
        self.is_output = False
        for d in interpreter.get_output_details():
            if d.get("name") == tensor:
                detail, self.is_output = d, True
                break
        if detail is None:
            details: list[dict[str, Any]] = getattr(
                interpreter, "get_tensor_details", lambda: []
            )()
            detail = next((d for d in details if d.get("name") == tensor), None)
        if detail is None:
            raise MalformedInputError(
                f"the guard profile reads features from tensor {tensor!r}, "
                "which this model does not have",
                hint="recalibrate the guard for this model (the profile is for another one)",
            )
        shape = [int(n) for n in detail.get("shape", [])]
        size = int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape or [0]))
        if size != dim:
            raise MalformedInputError(
                f"feature tensor {tensor!r} has {size} values per input ({shape}); "
                f"the guard profile expects {dim}",
                hint="recalibrate the guard for this model (the profile names another tensor)",
            )
        if np.dtype(detail.get("dtype", np.float32)).kind not in "fiu":
            raise MalformedInputError(f"feature tensor {tensor!r} is not numeric")
        if not self.is_output:
            logger.warning(
                "feature tensor %r is not a model output: its values are right only when the "
                "interpreter was built with preserve_all_tensors=True",
                tensor,
            )
        self.index = int(detail["index"])
        scale, zero = detail.get("quantization", (0.0, 0)) or (0.0, 0)
        self.q = (float(scale), int(zero))

    def read(self) -> F64:
        """The features of the last invoke, as a (1, dim) float64 row."""
        raw = np.asarray(self.interp.get_tensor(self.index))
        f = raw.astype(np.float64).reshape(1, -1)
        if raw.dtype.kind in "iu" and self.q[0]:
            f = (f - self.q[1]) * self.q[0]
        return f


class FeatureHook:
    """Sampled feature scores for :class:`GuardedInterpreter` (see module doc)."""

    def __init__(self, interpreter: Any, model: FeatureModel, rate: float | None = None) -> None:
        self.model = model
        self.tap = FeatureTap(interpreter, model.tensor, model.dim)
        self.rate = model.rate if rate is None else float(rate)
        self._acc = 0.0
        self.scored = 0
        self.broken = False
        self.seconds = 0.0  # time spent scoring features, for the measured mean cost

    def __call__(self, scores: dict[str, float]) -> None:
        """Add the feature scores to ``scores`` on this invoke's share of the rate."""
        self._acc += self.rate
        if self._acc < 1.0:
            return
        self._acc -= 1.0
        t0 = time.perf_counter()
        try:
            got = self.model.scores(self.tap.read())
        except (MalformedInputError, ValueError) as e:
            # The tensor changed size under the guard (a resized interpreter): the features
            # cannot be trusted, so they score as anomalous as it gets; never an exception
            # out of the invoke. Said once.
            if not self.broken:
                logger.error("feature detectors: %s; scoring features as anomalous", e)
            self.broken = True
            got = {k: np.array([np.inf]) for k in FEATURE_DETECTORS}
        for k, v in got.items():
            scores[k] = float(v[0])
        self.seconds += time.perf_counter() - t0
        self.scored += 1

    def batch(self, predict_features: Any, rows: F64) -> dict[str, F64]:
        """Offline (every row scored): ``predict_features(rows) -> (N, dim)``."""
        return self.model.scores(predict_features(rows))


def run_features(io: Any, tap: FeatureTap, rows: F64) -> F64:
    """Features of each row (one invoke per row through ``io``, a :class:`ModelIO`)."""
    out = []
    for r in np.asarray(rows, dtype=np.float64).reshape(len(rows), -1):
        io.run_one(r)
        out.append(tap.read()[0])
    if not out:
        return np.zeros((0, 0))
    return np.array(out, dtype=np.float64)
