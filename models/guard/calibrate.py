"""Calibration: fit the guard's statistics and thresholds on clean data for a target FPR.

The clean set is split in two (seeded shuffle): the first part fits the input statistics (mean,
scale, Ledoit-Wolf shrunk precision), the second part is scored by every detector, out of sample,
and gives each detector's clean score distribution (:class:`TailModel`) and its own threshold at
the target false-positive rate.

The combined score of an input is the largest *surprise* over the detectors that ran on it,
``max_d -log10 P_clean(S_d >= s_d)``; its threshold is the (1 - fpr) quantile of the combined
score on the second part with every detector running, so an invoke on which the sampled
squeezing detector did not run is flagged at most as often. A verdict is critical when the
combined score is ``critical_decades`` above the threshold (100 times rarer on clean data by
default), or when the input is invalid.

Drift thresholds (CUSUM ``h``) are set by bootstrap on the clean combined scores (clipped at the
flag threshold) for at most ``drift_false_alarms`` alarms per 10,000 clean inputs, then widened by
``drift_margin``, because scores of fresh clean inputs have a slightly heavier tail than the
in-sample scores the bootstrap draws from.

Pure: the model is a callable passed in (``predict``), data comes in as arrays. No I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .combine import choose_rule, proxy_outliers
from .combine import combine as combine_scores
from .detectors import (
    InputSpec,
    InputStats,
    energy_score,
    entropy_score,
    msp_score,
    squeeze_bits,
    squeeze_distance,
    squeeze_median,
)
from .features import FeatureModel
from .profile import DriftConfig, Profile, SqueezeConfig
from .stats import Cusum, TailModel, quantile_threshold

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Outputs:
    """A batch of model outputs: probabilities, and logits when the model or runtime has them."""

    probs: F64  # (N, k)
    logits: F64 | None  # (N, k)
    kind: str = "probs"  # what the model's output tensor holds: "probs" or "logits"


Predict = Callable[[F64], Outputs]  # (N, d) float64 inputs -> outputs
FeatureFn = Callable[[F64], F64]  # (N, d) float64 inputs -> (N, dim) penultimate features

ALWAYS_ON = ("zmax", "mahalanobis", "msp", "entropy", "energy")
SQUEEZE = "squeeze"


def input_scores(stats: InputStats, xflat: F64) -> dict[str, F64]:
    return {"zmax": stats.zmax(xflat), "mahalanobis": stats.mahalanobis(xflat)}


def output_scores(out: Outputs) -> dict[str, F64]:
    s = {"msp": msp_score(out.probs), "entropy": entropy_score(out.probs)}
    if out.logits is not None:
        s["energy"] = energy_score(out.logits)
    return s


def squeezed_inputs(xflat: F64, spec: InputSpec, sq: SqueezeConfig) -> list[F64]:
    xs = [squeeze_bits(xflat, sq.bits, spec.lo, spec.hi)]
    if sq.image_shape is not None:
        xs.append(squeeze_median(xflat, sq.image_shape))
    return xs


def squeeze_scores(
    predict: Predict, xflat: F64, out: Outputs, spec: InputSpec, sq: SqueezeConfig
) -> F64:
    preds = [predict(xs).probs for xs in squeezed_inputs(xflat, spec, sq)]
    return squeeze_distance(out.probs, preds)


def combine(profile: Profile, scores: dict[str, F64]) -> F64:
    """Combined score by the profile's rule over the detectors present in ``scores``."""
    return combine_scores(profile.tails, scores, profile.weights)


def all_scores(
    predict: Predict,
    xflat: F64,
    stats: InputStats,
    spec: InputSpec,
    sq: SqueezeConfig,
    features: tuple[FeatureModel, FeatureFn] | None,
) -> tuple[dict[str, F64], Outputs]:
    """Every detector's scores on rows ``xflat`` (calibration and offline scoring)."""
    out = predict(xflat)
    scores = {**input_scores(stats, xflat), **output_scores(out)}
    scores[SQUEEZE] = squeeze_scores(predict, xflat, out, spec, sq)
    if features is not None:
        scores.update(features[0].scores(features[1](xflat)))
    return scores, out


def _cusum_h(
    stream: F64,
    mu: float,
    sigma: float,
    k: float,
    max_alarms: float,
    rng: np.random.Generator,
    n: int = 20_000,
) -> float:
    draws = rng.choice(stream, size=n, replace=True)
    for h in (4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 60.0):
        c = Cusum(mu, sigma, k=k, h=h)
        alarms = sum(c.update(float(x)) for x in draws)
        if alarms * 10_000 / n <= max_alarms:
            return h
    return 100.0


def calibrate(
    x: np.ndarray,
    predict: Predict,
    *,
    model_sha256: bytes,
    input_shape: tuple[int, ...],
    input_dtype: str = "float32",
    fpr: float = 0.05,
    energy_source: str = "logits",
    squeeze: SqueezeConfig | None = None,
    fit_fraction: float = 0.5,
    critical_decades: float = 2.0,
    drift_false_alarms: float = 1.0,
    drift_margin: float = 1.5,
    range_margin: float = 0.1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    feature_fn: FeatureFn | None = None,
    feature_tensor: str = "",
    feature_labels: np.ndarray | None = None,
    feature_rate: float = 0.1,
    react_percentile: float | None = 90.0,
    knn_k: int = 1,
    combination: str = "auto",
    feature_reference: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> Profile:
    """Calibrate a profile on clean inputs ``x`` of shape (N, *input_shape) or (N, size).

    With ``feature_fn`` (rows -> penultimate features of the tensor named ``feature_tensor``),
    the feature detectors (``features.py``) are fitted on the first part, with class means by
    ``feature_labels`` (the true labels of ``x``) or else the model's own predictions, and run on
    a fraction ``feature_rate`` of invokes. ``feature_reference`` ``(rows, labels or None)``:
    other clean rows (typically the model's training set) to fit the feature detectors on
    instead of the first part, so the held part is as new to the kNN bank as a device's inputs
    will be (fitting both on one population, say the same writers, makes thresholds too tight).
    ``combination``: ``"max"`` keeps max surprise; ``"auto"`` fits a weighted rule on proxy
    outliers and keeps it only where it does better (``combine.py``).
    """
    say = progress or (lambda _m: None)
    if not 0.0 < fpr < 0.5:
        raise ValueError(f"fpr {fpr} must be in (0, 0.5)")
    if combination not in ("max", "auto"):
        raise ValueError(f"combination {combination!r} is not 'max' or 'auto'")
    if feature_fn is not None and not feature_tensor:
        raise ValueError("feature_fn needs the name of the feature tensor (feature_tensor)")
    size = int(np.prod(input_shape))
    xflat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if xflat.shape[1] != size:
        raise ValueError(f"calibration rows have {xflat.shape[1]} values, the model takes {size}")
    if not np.isfinite(xflat).all():
        raise ValueError("calibration data holds NaN or Inf")
    n = len(xflat)
    if n < 40 or n * (1 - fit_fraction) * fpr < 2:
        raise ValueError(f"{n} calibration samples are too few for fpr {fpr}; give more")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_fit = int(n * fit_fraction)
    fit, held = xflat[order[:n_fit]], xflat[order[n_fit:]]

    lo, hi = float(xflat.min()), float(xflat.max())
    span = hi - lo if hi > lo else 1.0
    spec = InputSpec(
        shape=tuple(input_shape),
        dtype=input_dtype,
        lo=lo - range_margin * span,
        hi=hi + range_margin * span,
    )
    say(f"fitting input statistics on {n_fit} samples ({size} features)")
    stats = InputStats.fit(fit)

    fm: FeatureModel | None = None
    if feature_fn is not None:
        say(f"fitting feature detectors on {n_fit} samples (tensor {feature_tensor!r})")
        if feature_reference is None:
            ffit = feature_fn(fit)
            labels = (
                np.asarray(feature_labels).reshape(-1)[order[:n_fit]]
                if feature_labels is not None
                else predict(fit).probs.argmax(axis=1)
            )
        else:
            rx = np.asarray(feature_reference[0], dtype=np.float64).reshape(
                len(feature_reference[0]), -1
            )
            ry = feature_reference[1]
            rlab = predict(rx).probs.argmax(axis=1) if ry is None else np.asarray(ry).reshape(-1)
            ffit, labels = feature_fn(rx), rlab
        fm = FeatureModel.fit(
            ffit, labels, tensor=feature_tensor, k=knn_k,
            react_percentile=react_percentile, rate=feature_rate, seed=seed,
        )
    feats = (fm, feature_fn) if fm is not None and feature_fn is not None else None
    sq = squeeze or SqueezeConfig()
    say(f"scoring {len(held)} held samples (feature squeezing: extra inferences)")
    t0 = time.perf_counter()
    probe = predict(held[: min(len(held), 50)])
    invoke_s = (time.perf_counter() - t0) / min(len(held), 50)
    if probe.logits is None and energy_source != "none":
        energy_source = "none"
    output_kind = probe.kind
    scores, out = all_scores(predict, held, stats, spec, sq, feats)
    if fm is not None:
        fm = fm.with_cost(_feature_cost(fm, feature_fn, held))

    tails = {k: TailModel.fit(v) for k, v in scores.items()}
    thresholds = {k: quantile_threshold(v, fpr) for k, v in scores.items()}
    weights = None
    if combination == "auto":
        say("fitting the combination rule on proxy outliers (blends and splices)")
        labels_held = out.probs.argmax(axis=1)
        proxies = proxy_outliers(held, labels_held, rng, len(held))
        pscores, _ = all_scores(predict, proxies, stats, spec, sq, feats)
        sur_c = {k: tails[k].surprise(v) for k, v in scores.items()}
        sur_p = {k: tails[k].surprise(v) for k, v in pscores.items()}
        weights, _dets = choose_rule(sur_c, sur_p, fpr, rng)
    surprise = combine_scores(tails, scores, weights)
    threshold = quantile_threshold(surprise, fpr)

    say("calibrating drift detection")
    # Drift watches the combined score clipped at the flag threshold: one wild input is the
    # per-input detectors' business, and a clean input scored out of sample can exceed every
    # in-sample score, so an unclipped stream would make single outliers look like drift.
    stream = np.minimum(surprise, threshold)
    mu, sigma = float(stream.mean()), float(stream.std()) or 1.0
    h = drift_margin * _cusum_h(stream, mu, sigma, 0.5, drift_false_alarms, rng)
    drift = DriftConfig(
        mu=mu,
        sigma=sigma,
        k=0.5,
        h=h,
        window=100,
        step=25,
        alpha=1e-4,
        z_crit=5.0,
        ref=np.sort(stream),
    )
    logger.info("calibrated on %d samples: combined threshold %.3f, CUSUM h %.1f", n, threshold, h)
    return Profile(
        model_sha256=model_sha256,
        fpr=fpr,
        spec=spec,
        stats=stats,
        output_kind=output_kind,
        energy_source=energy_source,
        tails=tails,
        thresholds=thresholds,
        threshold=threshold,
        critical=threshold + critical_decades,
        squeeze=sq,
        drift=drift,
        n_calibration=n,
        features=fm,
        weights=weights,
        invoke_s=float(invoke_s),
    )


def _feature_cost(fm: FeatureModel, feature_fn: FeatureFn | None, held: F64) -> float:
    """Median seconds to score one input's features (the per-invoke cost, tensor read aside)."""
    if feature_fn is None:
        return 0.0
    f = feature_fn(held[:20])
    times = []
    for row in f:
        t0 = time.perf_counter()
        fm.scores(row[None, :])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
