"""Combining detector scores: max surprise, or a weighted sum of surprises fitted on clean data.

Every detector's score becomes a *surprise* ``-log10 P_clean(S >= s)`` (``TailModel``). The
default rule takes the maximum over the detectors that ran. It treats a noisy detector as loudly
as a sharp one, which costs detection on shifts only some detectors see (held-out classes).

The weighted rule is ``max(max_d surprise_d, sum_d w_d * surprise_d)`` over the detectors that
ran, with ``w_d >= 0`` (so a sampled detector that did not run can only lower the score: an
invoke without it is flagged at most as often as the calibrated rate). The sum catches weak
signals several detectors share; the maximum keeps a jump one detector alone sees, including
detectors the fit gave no weight (a pure sum lost the always-on detectors' catches whenever the
heavily weighted detector was a sampled one). The weights are fitted **on calibration data only**:

1. negatives: the held calibration inputs (clean, scored out of sample);
2. positives: *proxy outliers* built from those same inputs: pixel-wise blends and splices of two
   inputs the model puts in different classes (familiar parts, no familiar whole). No evaluation
   set and no test data is used, and none of the evaluation's shifts is a blend or a splice;
3. weights: a logistic regression of positive vs negative on the surprises, weights held
   non-negative, scaled so the largest is 1;
4. choice: the proxies and clean inputs are split in two; the rule fitted on one half is compared
   with max surprise on the other, by detection at the clean threshold for the target FPR. The
   weighted rule replaces max surprise only when it detects more there.

Pure numpy: no I/O; the model is not called here (the caller scores the proxies).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from .stats import TailModel, quantile_threshold

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]


def surprises(tails: Mapping[str, TailModel], scores: Mapping[str, F64]) -> dict[str, F64]:
    return {k: tails[k].surprise(v) for k, v in scores.items() if k in tails}


def combine_max(sur: Mapping[str, F64]) -> F64:
    return np.asarray(np.max(list(sur.values()), axis=0), dtype=np.float64)


def combine_weighted(sur: Mapping[str, F64], weights: Mapping[str, float]) -> F64:
    """max(max surprise, weighted sum of surprises): the sum for weak signals several detectors
    share, the maximum for a jump one detector alone sees (a detector the weights leave out,
    such as ``zmax`` on noise, still counts)."""
    if not sur:
        return np.zeros(0)
    parts = [weights[k] * v for k, v in sur.items() if weights.get(k)]
    top = combine_max(sur)
    if not parts:
        return top
    return np.asarray(np.maximum(top, np.sum(parts, axis=0)), dtype=np.float64)


def combine(
    tails: Mapping[str, TailModel], scores: Mapping[str, F64], weights: Mapping[str, float] | None
) -> F64:
    """The combined score of a batch, by the profile's rule."""
    sur = surprises(tails, scores)
    return combine_max(sur) if weights is None else combine_weighted(sur, weights)


def weighted_one(
    tails: Mapping[str, TailModel], weights: Mapping[str, float]
) -> Callable[[dict[str, float]], float]:
    """The per-invoke weighted combination: ``TailModel.surprise1`` inlined, the empirical tail
    looked up in a precomputed table (the hot path, as ``GuardedInterpreter._combined``)."""
    items = {}
    for k, t in tails.items():
        ref, n = t._ref_list, len(t._ref_list)
        table = [-math.log10((n - i + 1.0) / (n + 1)) for i in range(n + 1)]
        items[k] = (ref, ref[-1], t._beta, math.log(n + 1), table, float(weights.get(k, 0.0)))
    ln10 = math.log(10.0)

    def combined(scores: dict[str, float]) -> float:
        total = top = 0.0
        for k, v in scores.items():
            t = items.get(k)
            if t is None:
                continue
            ref, hi, beta, log_n1, table, w = t
            if v != v:
                return 300.0
            if v > hi:
                sur = min(((v - hi) / beta + log_n1) / ln10, 300.0)
            else:
                sur = table[bisect_left(ref, v)]
            total += w * sur
            if sur > top:
                top = sur
        return total if total > top else top

    return combined


def proxy_outliers(x: F64, labels: np.ndarray, rng: np.random.Generator, n: int) -> F64:
    """Blends (half) and splices (half) of pairs of rows of ``x`` with different labels."""
    rows = x.reshape(len(x), -1)
    out: list[F64] = []
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        i, j = rng.integers(0, len(rows), size=2)
        if labels[i] == labels[j]:
            continue
        if len(out) % 2 == 0:
            a = rng.uniform(0.35, 0.65)
            out.append(a * rows[i] + (1 - a) * rows[j])
        else:
            cut = int(rng.integers(rows.shape[1] // 4, 3 * rows.shape[1] // 4 + 1))
            out.append(np.r_[rows[i, :cut], rows[j, cut:]])
    return np.array(out, dtype=np.float64).reshape(len(out), rows.shape[1])


def fit_weights(
    clean: Mapping[str, F64], proxy: Mapping[str, F64], *, l2: float = 1e-2, steps: int = 800
) -> dict[str, float]:
    """Non-negative logistic-regression weights on surprises, the largest scaled to 1."""
    keys = sorted(clean)
    a = np.r_[np.stack([clean[k] for k in keys], 1), np.stack([proxy[k] for k in keys], 1)]
    y = np.r_[np.zeros(len(clean[keys[0]])), np.ones(len(proxy[keys[0]]))]
    a = np.minimum(a, 30.0)  # a few wild surprises must not dominate the fit
    scale = a.std(axis=0) + 1e-9
    z = a / scale
    w = np.zeros(len(keys))
    b = 0.0
    pos = y.mean()
    sample_w = np.where(y == 1, 0.5 / max(pos, 1e-9), 0.5 / max(1 - pos, 1e-9))
    lr = 0.5
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = (p - y) * sample_w / len(y)
        w = np.maximum(w - lr * (z.T @ g + l2 * w), 0.0)
        b -= lr * float(g.sum())
    w = w / scale
    if not (w > 0).any():
        return {}
    w = w / w.max()
    return {k: float(v) for k, v in zip(keys, w, strict=True) if v > 1e-3}


def _det(clean: F64, proxy: F64, fpr: float) -> float:
    t = quantile_threshold(clean, fpr)
    return float((proxy > t).mean())


def choose_rule(
    clean: Mapping[str, F64],
    proxy: Mapping[str, F64],
    fpr: float,
    rng: np.random.Generator,
) -> tuple[dict[str, float] | None, dict[str, float]]:
    """(weights or None for max surprise, {"max": det, "weighted": det} on the other half)."""
    n, m = len(next(iter(clean.values()))), len(next(iter(proxy.values())))
    ic, ip = rng.permutation(n), rng.permutation(m)
    halves = ((ic[: n // 2], ip[: m // 2]), (ic[n // 2 :], ip[m // 2 :]))
    dets = {"max": 0.0, "weighted": 0.0}
    for (fc, fp), (ec, ep) in (halves, halves[::-1]):
        w = fit_weights({k: v[fc] for k, v in clean.items()}, {k: v[fp] for k, v in proxy.items()})
        ce = {k: v[ec] for k, v in clean.items()}
        pe = {k: v[ep] for k, v in proxy.items()}
        dets["max"] += _det(combine_max(ce), combine_max(pe), fpr) / 2
        if w:
            dets["weighted"] += _det(combine_weighted(ce, w), combine_weighted(pe, w), fpr) / 2
    if dets["weighted"] <= dets["max"]:
        logger.info("combination: max surprise kept (proxy detection %s)", dets)
        return None, dets
    weights = fit_weights(clean, proxy)
    logger.info("combination: weighted surprise %s (proxy detection %s)", weights, dets)
    return (weights or None), dets
