"""Calibrated tail probabilities and streaming change detection for the inference guard.

* :class:`TailModel`: the empirical upper-tail probability of a detector's score on clean
  calibration data, with an exponential tail fitted past the largest calibration score so that
  scores beyond anything seen in calibration still rank (and do not all tie at 1/(n+1)).
* :class:`Cusum`: one-sided CUSUM (Page 1954) on standardised scores, for a rise in the mean.
* :class:`PageHinkley`: the Page-Hinkley test (Page 1954; Hinkley 1971) with a running mean.
* :class:`WindowShift`: a windowed two-sample Kolmogorov-Smirnov test of the last ``window``
  scores against the calibration reference, plus a mean-shift z test on the same window.
* :class:`LatencyMonitor`: a robust (median/MAD) baseline of invoke latency.

Pure: numbers in, decisions out; time comes in as arguments. No I/O.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class TailModel:
    """Upper-tail probability P(S >= s) of a score S on clean data.

    ``ref`` holds the sorted calibration scores (at most a few hundred, quantiles if more).
    """

    ref: F64

    @classmethod
    def fit(cls, scores: np.ndarray, max_points: int = 512) -> TailModel:
        s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
        s = s[np.isfinite(s)]
        if s.size == 0:
            raise ValueError("no finite calibration scores")
        if s.size > max_points:
            s = np.quantile(s, np.linspace(0.0, 1.0, max_points))
        return cls(ref=s)

    @cached_property
    def _beta(self) -> float:
        n = self.ref.size
        med = float(np.median(self.ref))
        gap = float(self.ref[-1]) - med
        if gap <= 0:
            gap = max(abs(float(self.ref[-1])), 1.0) * 1e-3
        return gap / math.log((n + 1) / 2) if n > 1 else gap

    @cached_property
    def _ref_list(self) -> list[float]:
        return [float(v) for v in self.ref]

    def surprise1(self, s: float) -> float:
        """:meth:`surprise` of one score, in plain Python (the per-invoke path)."""
        if s != s:
            return 300.0
        ref = self._ref_list
        n = len(ref)
        top = ref[-1]
        if s > top:
            p = math.exp(-(s - top) / self._beta) / (n + 1)
        else:
            p = (n - bisect.bisect_left(ref, s) + 1.0) / (n + 1)
        return -math.log10(max(p, 1e-300))

    def surprise(self, s: F64) -> F64:
        """-log10 P(S >= s), non-decreasing in ``s``; NaN scores count as extreme."""
        s = np.asarray(s, dtype=np.float64)
        n = self.ref.size
        # Empirical tail (1 + #{ref >= s}) / (n + 1): ties count fully, so a score shared by
        # most clean inputs (an MSP of exactly 0) is not surprising.
        ge = n - np.searchsorted(self.ref, s, side="left")
        p = (ge + 1.0) / (n + 1)
        top = float(self.ref[-1])
        beyond = s > top
        if beyond.any():
            p = np.where(
                beyond, np.exp(-(np.where(beyond, s, top) - top) / self._beta) / (n + 1), p
            )
        out = -np.log10(np.clip(p, 1e-300, 1.0))
        return np.where(np.isnan(s), 300.0, out)


def quantile_threshold(scores: np.ndarray, fpr: float) -> float:
    """The threshold that flags a fraction ``fpr`` of the clean ``scores`` (flag when s > t)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must be in (0, 1)")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - fpr, method="higher"))


class Cusum:
    """One-sided CUSUM: g = max(0, g + (x - mu)/sigma - k); alarm when g > h, then restart."""

    def __init__(self, mu: float, sigma: float, k: float = 0.5, h: float = 8.0) -> None:
        self.mu, self.sigma, self.k, self.h = mu, max(sigma, 1e-12), k, h
        self.g = 0.0

    def update(self, x: float) -> bool:
        self.g = max(0.0, self.g + (x - self.mu) / self.sigma - self.k)
        if self.g > self.h:
            self.g = 0.0
            return True
        return False

    def reset(self) -> None:
        self.g = 0.0


class PageHinkley:
    """Page-Hinkley test for an increase of the mean, with a running mean and tolerance delta."""

    def __init__(self, delta: float, lam: float) -> None:
        self.delta, self.lam = delta, lam
        self.reset()

    def reset(self) -> None:
        self.n, self.mean, self.m, self.m_min = 0, 0.0, 0.0, 0.0

    def update(self, x: float) -> bool:
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.m += x - self.mean - self.delta
        self.m_min = min(self.m_min, self.m)
        if self.m - self.m_min > self.lam:
            self.reset()
            return True
        return False


def ks_statistic(a: F64, ref_sorted: F64) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D between ``a`` and a sorted reference."""
    a = np.sort(a)
    grid = np.concatenate([a, ref_sorted])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fr = np.searchsorted(ref_sorted, grid, side="right") / ref_sorted.size
    return float(np.abs(fa - fr).max())


def ks_critical(n: int, m: int, alpha: float) -> float:
    """Asymptotic critical D for a two-sample KS test at level ``alpha``."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


class WindowShift:
    """Every ``step`` scores, test the last ``window`` against the clean reference (KS, mean z)."""

    def __init__(
        self,
        ref: F64,
        mu: float,
        sigma: float,
        *,
        window: int = 100,
        step: int = 25,
        alpha: float = 1e-4,
        z_crit: float = 5.0,
    ) -> None:
        self.ref = np.sort(np.asarray(ref, dtype=np.float64))
        self.mu, self.sigma = mu, max(sigma, 1e-12)
        self.window, self.step, self.z_crit = window, step, z_crit
        self.d_crit = ks_critical(window, self.ref.size, alpha)
        self.buf: deque[float] = deque(maxlen=window)
        self.count = 0
        self.last_d = 0.0
        self.last_z = 0.0

    def update(self, x: float) -> bool:
        self.buf.append(x)
        self.count += 1
        if len(self.buf) < self.window or self.count % self.step:
            return False
        return self._test()

    def extend(self, xs: list[float]) -> bool:
        """:meth:`update` with each of ``xs`` in turn; True if any of those would have been.

        The test runs only when the count reaches a multiple of ``step``, so a caller that
        hands over its scores ``step`` at a time pays for one test and no per-score call.
        """
        alarm = False
        i, n = 0, len(xs)
        while i < n:
            k = min(n - i, self.step - self.count % self.step)  # up to the next test point
            self.buf.extend(xs[i : i + k])
            self.count += k
            i += k
            if len(self.buf) >= self.window and self.count % self.step == 0:
                alarm = self._test() or alarm
        return alarm

    def _test(self) -> bool:
        w = np.fromiter(self.buf, dtype=np.float64, count=len(self.buf))
        self.last_d = ks_statistic(w, self.ref)
        self.last_z = (float(w.mean()) - self.mu) / (self.sigma / math.sqrt(self.window))
        # Only a shift towards *more* anomalous scores is an alarm.
        if self.last_z > self.z_crit or (self.last_d > self.d_crit and self.last_z > 0):
            self.buf.clear()
            return True
        return False


def median_mad(a: F64) -> tuple[float, float]:
    """``np.median(a)`` and ``np.median(|a - median|)``, by partition (a tenth of the calls)."""
    n = a.size
    h = n // 2
    if n % 2:
        med = float(np.partition(a, h)[h])
        dev = np.abs(a - med)
        return med, float(np.partition(dev, h)[h])
    p = np.partition(a, (h - 1, h))
    med = float(p[h - 1] + p[h]) / 2
    dev = np.abs(a - med)
    p = np.partition(dev, (h - 1, h))
    return med, float(p[h - 1] + p[h]) / 2


class LatencyMonitor:
    """Robust latency baseline: score = (t - median) / (1.4826 MAD) over the last ``window``.

    The baseline only learns from latencies that were not jumps, so a sustained slowdown keeps
    scoring instead of becoming the new normal after a few samples.
    """

    def __init__(self, window: int = 200, warmup: int = 30, z_crit: float = 8.0) -> None:
        self.buf: deque[float] = deque(maxlen=window)
        self.warmup, self.z_crit = warmup, z_crit
        self._med = 0.0
        self._scale = 0.0
        self._stale = True
        self._n = 0

    def score(self, seconds: float) -> float:
        """The robust z of ``seconds``; 0 until ``warmup`` samples were seen."""
        if len(self.buf) < self.warmup:
            self.buf.append(seconds)
            self._stale = True
            return 0.0
        self._n += 1
        if self._stale or self._n % 16 == 0:
            a = np.fromiter(self.buf, dtype=np.float64, count=len(self.buf))
            self._med, mad = median_mad(a)
            self._scale = max(1.4826 * mad, 0.05 * self._med, 1e-6)
            self._stale = False
        z = (seconds - self._med) / self._scale
        if z < self.z_crit:
            self.buf.append(seconds)
        return z
