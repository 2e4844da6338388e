"""Per-input anomaly detectors of the inference guard: small, pure numpy functions.

Every score is "higher is more anomalous". Nothing here does I/O or calls a model; the squeezers
return transformed inputs and :func:`squeeze_distance` compares predictions the caller obtained.

* input validity: shape, dtype, NaN/Inf, range against the calibrated envelope;
* input statistics: per-feature z (max |z|) and the Mahalanobis distance against calibration
  statistics, with Ledoit-Wolf shrinkage so the covariance is always invertible
  (Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices", 2004);
* output confidence: 1 - maximum softmax probability (Hendrycks & Gimpel 2017), entropy, and the
  energy score E(x) = -T logsumexp(f(x)/T) (Liu et al., NeurIPS 2020) from logits;
* feature squeezing (Xu et al., NDSS 2018): bit-depth reduction and median smoothing, scored by
  the L1 distance between the predictions on the original and the squeezed input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

_MIN, _MAX = np.minimum.reduce, np.maximum.reduce

MAX_FULL_DIM = 256  # above this many input features, the precision matrix is kept diagonal


# --- input validity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """What a valid input looks like: its shape without the batch axis, dtype and value range.

    ``lo``/``hi`` are the calibrated envelope widened by ``margin`` of the span; a value outside is
    a range violation (a saturated sensor, a wrong scale), not necessarily an attack.
    """

    shape: tuple[int, ...]
    dtype: str
    lo: float
    hi: float

    @cached_property
    def size(self) -> int:
        return math.prod(self.shape)


def validity_problems(x: np.ndarray, spec: InputSpec) -> list[str]:
    """The reasons ``x`` (one sample, batch axis optional) is not a valid input; empty if valid.

    Accepts ``x`` of shape ``spec.shape``, ``(1, *spec.shape)`` or the flat ``(spec.size,)``.
    """
    if not isinstance(x, np.ndarray):
        return [f"input is a {type(x).__name__}, not a numpy array"]
    if x.dtype.kind not in "fiu":
        return [f"input dtype {x.dtype} is not numeric"]
    if x.size != spec.size or x.shape not in (spec.shape, (1, *spec.shape), (spec.size,)):
        return [f"input shape {x.shape} does not match {spec.shape}"]
    problems = []
    if x.dtype.name != spec.dtype:
        problems.append(f"input dtype {x.dtype} is not {spec.dtype}")
    # NaN propagates through min/max and Inf shows; the bare ufunc reductions skip numpy's
    # Python-level wrappers (this runs on every invoke).
    lo, hi = float(_MIN(x, axis=None)), float(_MAX(x, axis=None))
    if x.dtype.kind == "f" and not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(x.size - np.isfinite(x).sum())
        if bad:
            problems.append(f"{bad} NaN/Inf values")
            return problems
    if lo < spec.lo or hi > spec.hi:
        problems.append(f"values [{lo:.4g}, {hi:.4g}] outside [{spec.lo:.4g}, {spec.hi:.4g}]")
    return problems


def range_excess(xflat: F64, spec: InputSpec) -> F64:
    """Fraction of features outside the calibrated range, per row of ``xflat`` (N, d)."""
    return ((xflat < spec.lo) | (xflat > spec.hi)).mean(axis=1).astype(np.float64)


# --- input statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputStats:
    """Calibration statistics of the flattened inputs: mean, scale and a shrunk precision matrix."""

    mean: F64  # (d,)
    scale: F64  # (d,) standard deviation, floored
    precision: F64  # (d, d) inverse of the shrunk covariance
    shrinkage: float

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        *,
        shrinkage: float | None = None,
        floor: float = 1e-3,
        max_full_dim: int = MAX_FULL_DIM,
    ) -> InputStats:
        """Fit on clean rows ``x`` (N, d). ``shrinkage`` None picks the Ledoit-Wolf intensity.

        Above ``max_full_dim`` features the full d x d precision is too big for a device profile
        and too slow per invoke; the statistics keep its diagonal only (shape (1, d)), and the
        "Mahalanobis" score becomes the norm of the per-feature z vector.
        """
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        n, d = x.shape
        if n < 2:
            raise ValueError("need at least two calibration samples")
        mean = x.mean(axis=0)
        xc = x - mean
        std = np.sqrt((xc**2).mean(axis=0))
        span = float(std.max()) if std.max() > 0 else 1.0
        scale = np.maximum(std, floor * span)
        if d > max_full_dim:
            return cls(mean=mean, scale=scale, precision=(1.0 / scale**2)[None, :], shrinkage=0.0)
        cov = xc.T @ xc / n
        mu = float(np.trace(cov)) / d
        target = mu * np.eye(d)
        if shrinkage is None:
            shrinkage = ledoit_wolf_shrinkage(xc, cov, mu)
        shrunk = (1.0 - shrinkage) * cov + shrinkage * target
        shrunk += np.eye(d) * (1e-6 * max(mu, 1e-12))  # constant features stay invertible
        precision = np.linalg.inv(shrunk)
        return cls(
            mean=mean, scale=scale, precision=(precision + precision.T) / 2, shrinkage=shrinkage
        )

    def zmax(self, xflat: F64) -> F64:
        """max over features of |x - mean| / scale, per row."""
        return np.abs((xflat - self.mean) / self.scale).max(axis=1)

    def mahalanobis(self, xflat: F64) -> F64:
        """sqrt((x - mean)^T P (x - mean)) per row (P diagonal when stored as (1, d))."""
        xc = xflat - self.mean
        if self.precision.shape[0] == 1:
            return np.sqrt((xc**2 * self.precision[0]).sum(axis=1))
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", xc, self.precision, xc), 0.0))


def ledoit_wolf_shrinkage(xc: F64, cov: F64, mu: float) -> float:
    """Ledoit-Wolf (2004) optimal shrinkage intensity towards ``mu * I`` for centred rows ``xc``."""
    n = xc.shape[0]
    delta = float(((cov - mu * np.eye(cov.shape[0])) ** 2).sum())
    if delta <= 0:
        return 1.0
    x2 = xc**2
    beta = float(((x2.T @ x2) / n - cov**2).sum()) / n
    return float(min(max(beta / delta, 0.0), 1.0))


# --- output confidence -------------------------------------------------------------------------


def softmax(logits: F64) -> F64:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float64)


def logsumexp(z: F64) -> F64:
    m = z.max(axis=-1)
    return np.asarray(m + np.log(np.exp(z - m[..., None]).sum(axis=-1)), dtype=np.float64)


def log_probs(probs: F64, eps: float = 1e-12) -> F64:
    """Log-probabilities: the logits of a softmax model *up to an unknown per-input constant*.

    A softmax output throws that constant away, and the energy score is exactly that constant
    (logsumexp of the true logits), so the energy of log-probs is zero for every input. Use the
    pre-softmax logits tensor where the runtime exposes it (see ``guarded.py``).
    """
    return np.log(np.clip(probs, eps, 1.0))


def msp_score(probs: F64) -> F64:
    """1 - max softmax probability."""
    return 1.0 - probs.max(axis=-1)


def entropy_score(probs: F64, eps: float = 1e-12) -> F64:
    p = np.clip(probs, eps, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=-1), dtype=np.float64)


def energy_score(logits: F64, temperature: float = 1.0) -> F64:
    """E(x) = -T logsumexp(logits / T); higher energy means less like the training data."""
    return -temperature * logsumexp(logits / temperature)


# --- feature squeezing -------------------------------------------------------------------------


def squeeze_bits(x: F64, bits: int, lo: float, hi: float) -> F64:
    """Reduce ``x`` to ``2**bits`` levels over [lo, hi] (Xu et al. §3.1)."""
    levels = (1 << bits) - 1
    span = hi - lo if hi > lo else 1.0
    q = np.round(np.clip((x - lo) / span, 0.0, 1.0) * levels) / levels
    return np.asarray(q * span + lo, dtype=np.float64)


def squeeze_median(x: F64, image_shape: tuple[int, int, int]) -> F64:
    """2x2 median smoothing of each row of ``x`` (N, d) seen as images (H, W, C) (Xu et al. §3.2).

    The 2x2 window has no centre; as in the paper, it reaches down and right (edge padded), and
    the median of four values is the mean of the middle two.
    """
    h, w, c = image_shape
    img = x.reshape(len(x), h, w, c)
    p = np.pad(img, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    stack = np.stack([p[:, :h, :w], p[:, 1:, :w], p[:, :h, 1:], p[:, 1:, 1:]], axis=0)
    stack.sort(axis=0)
    return np.asarray(((stack[1] + stack[2]) / 2).reshape(len(x), -1), dtype=np.float64)


def squeeze_distance(p: F64, squeezed: list[F64]) -> F64:
    """max over squeezers of the L1 distance between prediction vectors, per row."""
    return np.max([np.abs(p - q).sum(axis=-1) for q in squeezed], axis=0)
