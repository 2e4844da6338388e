"""Feature-space detectors on a model's penultimate layer: fit, score, encode, decode.

* **Mahalanobis** (Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution
  Samples and Adversarial Attacks", NeurIPS 2018): class-conditional means and one shared
  covariance; the score is the smallest squared distance to a class mean. The covariance is
  shrunk towards a scaled identity (Ledoit-Wolf intensity) so it is invertible with fewer
  calibration samples than features, and kept as the Cholesky factor ``L`` of its inverse:
  a score is then ``min_k |f L - mu_k L|^2``, one d x d product per input.
* **Deep k-nearest neighbours** (Sun et al., "Out-of-Distribution Detection with Deep Nearest
  Neighbors", ICML 2022): the distance from the L2-normalised feature vector to its k-th nearest
  neighbour in a bank of normalised clean features.
* **ReAct** (Sun et al., "ReAct: Out-of-distribution Detection With Rectified Activations",
  NeurIPS 2021): features are clipped at an upper percentile of the clean activations before
  either score (``clip``; infinity when off).

Class labels for the means come from the caller (true labels when known, otherwise the model's
own predictions). The fitted :class:`FeatureModel` names the tensor it reads (``tensor``) and its
flat size (``dim``); the profile that carries it is signed and bound to the model, so the tensor
choice is bound too. Every size is bounded on decode (a hostile profile cannot make a device
allocate a huge bank or covariance).

Pure numpy: no I/O, no interpreter (reading the tensor is ``featuretap.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeward.core.errors import MalformedInputError

from .detectors import ledoit_wolf_shrinkage

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

MAHALANOBIS = "feature_mahalanobis"
KNN = "feature_knn"
FEATURE_DETECTORS = (MAHALANOBIS, KNN)

MAX_FEATURE_DIM = 1024  # features per input
MAX_COV_DIM = 512  # above this, a full d x d whitening matrix is refused
MAX_CLASSES = 1024
MAX_BANK_ROWS = 4096
MAX_BANK_VALUES = 1 << 19  # rows x dim of the kNN bank (2 MiB as float32)
MAX_K = 64
MAX_TENSOR_NAME = 256


@dataclass(frozen=True)
class FeatureModel:
    """The fitted feature detectors for one model tensor."""

    tensor: str  # name of the feature tensor in the model (an output, or preserved)
    dim: int  # flat size of that tensor per input
    clip: float  # ReAct clip threshold; math.inf when clipping is off
    means: F64  # (K, dim) class means of the clipped features
    whiten: F64  # (dim, dim) L with L L^T = shared precision
    bank: F32  # (N, dim) L2-normalised clipped clean features
    k: int  # k of the kNN score
    rate: float  # fraction of invokes that compute the feature scores
    cost_s: float = 0.0  # seconds per scored input, measured at calibration (0: not measured)
    _mw: F64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mw", self.means @ self.whiten)

    @property
    def mean_cost_s(self) -> float:
        """Expected feature-detector cost per invoke: the sampled rate times the measured cost."""
        return self.rate * self.cost_s

    # --- scoring ----------------------------------------------------------------------------

    def check(self, f: np.ndarray) -> F64:
        """Features as (N, dim) float64; a wrong size is a :class:`MalformedInputError`."""
        a = np.asarray(f)
        if a.dtype.kind not in "fiu":
            raise MalformedInputError(f"feature tensor {self.tensor!r} is not numeric")
        n = a.shape[0] if a.ndim > 1 else 1
        if a.size != n * self.dim:
            raise MalformedInputError(
                f"feature tensor {self.tensor!r} has {a.size // max(n, 1)} values per input, "
                f"the profile expects {self.dim}",
                hint="recalibrate the guard for this model (the profile names another tensor)",
            )
        return a.reshape(n, self.dim).astype(np.float64)

    def scores(self, f: np.ndarray) -> dict[str, F64]:
        """``{feature_mahalanobis, feature_knn}`` for rows of features (higher = more odd)."""
        x = np.minimum(self.check(f), self.clip)
        g = x @ self.whiten
        d2 = (g * g).sum(1)[:, None] - 2.0 * (g @ self._mw.T) + (self._mw * self._mw).sum(1)
        maha = np.maximum(d2.min(axis=1), 0.0)
        u = _normalise(x).astype(np.float32)
        sim = u @ self.bank.T  # cosine similarity; |u - b|^2 = 2 - 2 sim
        k = min(self.k, self.bank.shape[0])
        kth = np.partition(-sim, k - 1, axis=1)[:, k - 1]
        knn = np.sqrt(np.maximum(2.0 + 2.0 * kth.astype(np.float64), 0.0))
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():  # NaN/Inf features: as odd as it gets, never a crash
            maha = np.where(bad, np.inf, maha)
            knn = np.where(bad, np.inf, knn)
        return {MAHALANOBIS: maha, KNN: knn}

    # --- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        tensor: str,
        k: int = 1,
        react_percentile: float | None = 90.0,
        rate: float = 0.1,
        max_bank: int = MAX_BANK_ROWS,
        seed: int = 0,
    ) -> FeatureModel:
        """Fit on clean features (N, dim) with class labels (N,)."""
        f = np.asarray(features, dtype=np.float64)
        f = f.reshape(len(f), -1)
        y = np.asarray(labels).reshape(-1)
        n, d = f.shape
        if len(y) != n:
            raise ValueError(f"{n} feature rows but {len(y)} labels")
        if not 0 < d <= MAX_COV_DIM:
            raise ValueError(f"features of size {d}: the guard takes 1 to {MAX_COV_DIM}")
        if not np.isfinite(f).all():
            raise ValueError("calibration features hold NaN or Inf")
        if n < 10:
            raise ValueError(f"{n} feature rows are too few to fit the feature detectors")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"feature rate {rate} must be in [0, 1]")
        clip = math.inf
        if react_percentile is not None:
            clip = float(np.percentile(f, react_percentile))
            if clip <= 0:  # a mostly-zero layer: clipping at 0 would erase it
                clip = float(f.max()) or math.inf
            f = np.minimum(f, clip)
        classes = np.unique(y)
        if len(classes) > MAX_CLASSES:
            raise ValueError(f"{len(classes)} classes: the guard takes at most {MAX_CLASSES}")
        means = np.stack([f[y == c].mean(axis=0) for c in classes])
        xc = f - means[np.searchsorted(classes, y)]
        cov = xc.T @ xc / n
        mu = float(np.trace(cov)) / d or 1e-6
        lam = ledoit_wolf_shrinkage(xc, cov, mu)
        shrunk = (1.0 - lam) * cov + lam * mu * np.eye(d)
        precision = np.linalg.inv(shrunk)
        whiten = np.asarray(np.linalg.cholesky((precision + precision.T) / 2), dtype=np.float64)
        rows = min(max_bank, MAX_BANK_ROWS, max(1, MAX_BANK_VALUES // d))
        if n > rows:
            f = f[np.random.default_rng(seed).choice(n, size=rows, replace=False)]
        bank = _normalise(f).astype(np.float32)
        return cls(
            tensor=tensor,
            dim=d,
            clip=clip,
            means=means,
            whiten=whiten,
            bank=bank,
            k=int(min(max(k, 1), MAX_K, len(bank))),
            rate=float(rate),
        )

    def with_cost(self, cost_s: float) -> FeatureModel:
        return FeatureModel(
            self.tensor, self.dim, self.clip, self.means, self.whiten, self.bank, self.k,
            self.rate, float(cost_s),
        )


def _normalise(x: F64) -> F64:
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float64)


# --- encoding (the profile's "features" map) ---------------------------------------------------


def _arr(a: np.ndarray, dtype: str) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype="<" + dtype)
    return {"shape": list(a.shape), dtype: a.tobytes()}


def _unarr(obj: Any, what: str, dtype: str, max_shape: tuple[int, ...]) -> np.ndarray:
    """A bounded array: each axis at most ``max_shape``, checked before any allocation."""
    if not isinstance(obj, dict) or set(obj) != {"shape", dtype}:
        raise MalformedInputError(f"profile field features.{what} is not a {dtype} array")
    shape, raw = obj["shape"], obj[dtype]
    if (
        not isinstance(shape, list)
        or len(shape) != len(max_shape)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
        or not all(0 < v <= m for v, m in zip(shape, max_shape, strict=True))
        or not isinstance(raw, bytes)
    ):
        raise MalformedInputError(
            f"profile field features.{what} has shape {shape!r}; at most {list(max_shape)}"
        )
    width = int(dtype[1])
    if len(raw) != width * math.prod(shape):
        raise MalformedInputError(f"profile field features.{what} has {len(raw)} bytes")
    out = np.frombuffer(raw, dtype="<" + dtype).reshape(shape)
    if not np.isfinite(out).all():
        raise MalformedInputError(f"profile field features.{what} holds NaN or Inf")
    return out


def encode_features(m: FeatureModel) -> dict[str, Any]:
    return {
        "tensor": m.tensor,
        "dim": m.dim,
        "clip": None if math.isinf(m.clip) else float(m.clip),
        "means": _arr(m.means, "f8"),
        "whiten": _arr(m.whiten, "f8"),
        "bank": _arr(m.bank, "f4"),
        "k": m.k,
        "rate": float(m.rate),
        "cost_s": float(m.cost_s),
    }


def _num(m: dict[str, Any], key: str) -> float:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise MalformedInputError(f"profile field features.{key} is not a finite number")
    return float(v)


def decode_features(m: Any) -> FeatureModel:
    """Parse the profile's ``features`` map; bounds first, so a hostile one allocates little."""
    if not isinstance(m, dict):
        raise MalformedInputError("profile field features is not a map")
    tensor, dim, k = m.get("tensor"), m.get("dim"), m.get("k")
    if not isinstance(tensor, str) or not 0 < len(tensor) <= MAX_TENSOR_NAME:
        raise MalformedInputError("profile field features.tensor is not a tensor name")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_FEATURE_DIM:
        raise MalformedInputError(f"profile features.dim {dim!r} is not in 1..{MAX_FEATURE_DIM}")
    if dim > MAX_COV_DIM:
        raise MalformedInputError(
            f"profile features.dim {dim} needs a {dim}x{dim} covariance; at most {MAX_COV_DIM}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= MAX_K:
        raise MalformedInputError(f"profile features.k {k!r} is not in 1..{MAX_K}")
    clip_v = m.get("clip")
    clip = math.inf if clip_v is None else _num(m, "clip")
    rate, cost = _num(m, "rate"), _num(m, "cost_s")
    if not 0.0 <= rate <= 1.0 or cost < 0:
        raise MalformedInputError("profile features.rate or cost_s out of range")
    bank_shape = m.get("bank", {}).get("shape") if isinstance(m.get("bank"), dict) else None
    if (
        isinstance(bank_shape, list)
        and len(bank_shape) == 2
        and all(isinstance(v, int) for v in bank_shape)
        and bank_shape[0] * bank_shape[1] > MAX_BANK_VALUES
    ):
        raise MalformedInputError(
            f"profile kNN bank of {bank_shape[0]}x{bank_shape[1]} exceeds {MAX_BANK_VALUES} values"
        )
    means = _unarr(m.get("means"), "means", "f8", (MAX_CLASSES, dim))
    whiten = _unarr(m.get("whiten"), "whiten", "f8", (dim, dim))
    bank = _unarr(m.get("bank"), "bank", "f4", (MAX_BANK_ROWS, dim))
    if means.shape[1] != dim or whiten.shape != (dim, dim) or bank.shape[1] != dim:
        raise MalformedInputError(f"profile feature arrays do not all have {dim} features")
    if k > bank.shape[0]:
        raise MalformedInputError("profile features.k exceeds the kNN bank")
    return FeatureModel(
        tensor=tensor,
        dim=dim,
        clip=clip,
        means=means.astype(np.float64),
        whiten=whiten.astype(np.float64),
        bank=bank.astype(np.float32),
        k=k,
        rate=rate,
        cost_s=cost,
    )
