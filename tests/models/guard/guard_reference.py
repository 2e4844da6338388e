"""The guard's per-invoke path as it was before the speed-up (commit d8222fa), kept as an oracle.

``ReferenceGuard.invoke`` is that commit's ``GuardedInterpreter.invoke`` with its helpers
(quick validity check, float32 scoring, max surprise, verdict with latency and drift), and
its latency monitor with ``np.median``. The equivalence tests run it beside the guard on the
same inputs and clocks: same verdicts, same scores. It is not imported by the product.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeward.models.guard import ModelIO, Verdict, softmax_logits_index
from edgeward.models.guard.calibrate import Outputs, squeeze_scores
from edgeward.models.guard.detectors import softmax, validity_problems
from edgeward.models.guard.profile import Profile
from edgeward.models.guard.stats import Cusum, WindowShift

_LN10 = math.log(10.0)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


class ReferenceLatency:
    def __init__(self, window: int = 200, warmup: int = 30, z_crit: float = 8.0) -> None:
        self.buf: deque[float] = deque(maxlen=window)
        self.warmup, self.z_crit = warmup, z_crit
        self._med, self._scale, self._stale, self._n = 0.0, 0.0, True, 0

    def score(self, seconds: float) -> float:
        if len(self.buf) < self.warmup:
            self.buf.append(seconds)
            self._stale = True
            return 0.0
        self._n += 1
        if self._stale or self._n % 16 == 0:
            a = np.fromiter(self.buf, dtype=np.float64, count=len(self.buf))
            self._med = float(np.median(a))
            mad = float(np.median(np.abs(a - self._med)))
            self._scale = max(1.4826 * mad, 0.05 * self._med, 1e-6)
            self._stale = False
        z = (seconds - self._med) / self._scale
        if z < self.z_crit:
            self.buf.append(seconds)
        return z


class ReferenceGuard:
    """Verdicts only (no policy, no link): what the guard decided per invoke before."""

    def __init__(self, interpreter: Any, profile: Profile, *, squeeze_rate: float | None = None,
                 monotonic: Callable[[], float]) -> None:
        self.profile = profile
        logits_index = None
        if profile.energy_source == "preserved-logits":
            logits_index = softmax_logits_index(interpreter)
        self.io = ModelIO(interpreter, logits_index=logits_index)
        self.rate = profile.squeeze.rate if squeeze_rate is None else squeeze_rate
        self._acc = 0.0
        d = profile.drift
        self.cusum = Cusum(d.mu, d.sigma, k=d.k, h=d.h)
        self.window = WindowShift(
            d.ref, d.mu, d.sigma, window=d.window, step=d.step, alpha=d.alpha, z_crit=d.z_crit
        )
        self.latency = ReferenceLatency()
        self._mono = monotonic
        self._logits_checked = False
        spec = profile.spec
        self._dtype = np.dtype(spec.dtype)
        self._cast_kind = "f" if self._dtype.kind == "f" else None
        self._shapes = (spec.shape, (1, *spec.shape), (spec.size,))
        self._lo, self._hi = spec.lo, spec.hi
        st = profile.stats
        self._wide = (st.mean, 1.0 / st.scale, st.precision)
        hot = np.float32 if self.io.in_dtype == np.float32 else np.float64
        self._hot = tuple(a.astype(hot) for a in self._wide)
        self._tails = {
            k: (t._ref_list, len(t._ref_list), t._ref_list[-1], t._beta)
            for k, t in profile.tails.items()
        }
        self._diag = profile.stats.precision.shape[0] == 1

    def invoke(self, x: np.ndarray) -> Verdict:
        if type(x) is np.ndarray and x.dtype != self._dtype and x.dtype.kind == self._cast_kind:
            with np.errstate(over="ignore"):
                x = x.astype(self._dtype)
        problems = self._quick_valid(x)
        if problems is None:
            problems = validity_problems(x, self.profile.spec)
        hard = [p for p in problems if not p.startswith("values ")]
        if hard:
            return Verdict(True, "critical", {"combined": float("inf")},
                           ("invalid input: " + hard[0],))
        t0 = self._mono()
        raw, y, logits = self.io.run_raw(x)
        elapsed = self._mono() - t0
        if logits is not None and not self._logits_checked:
            self._logits_checked = True  # the models under test have matching logits
        scores = self._scores(x.reshape(-1), y, logits, wide=bool(problems))
        return self._judge(scores, problems, elapsed)

    def _quick_valid(self, x: Any) -> list[str] | None:
        if type(x) is not np.ndarray or x.dtype != self._dtype or x.shape not in self._shapes:
            return None
        lo, hi = float(_MIN(x, axis=None)), float(_MAX(x, axis=None))
        if self._lo <= lo and hi <= self._hi:
            return []
        return None

    def _scores(self, row: np.ndarray, y: np.ndarray, logits: np.ndarray | None, *,
                wide: bool = False) -> dict[str, float]:
        mean, inv_scale, precision = self._wide if wide else self._hot
        xc = row - mean
        z = xc * inv_scale
        scores = {"zmax": max(float(_MAX(z)), -float(_MIN(z)))}
        if self._diag:
            scores["mahalanobis"] = math.sqrt(float((xc * xc) @ precision[0]))
        else:
            scores["mahalanobis"] = math.sqrt(max(float((xc @ precision) @ xc), 0.0))
        if self.profile.output_kind == "logits":
            logits = y
            probs = softmax(y.astype(np.float64)[None, :])[0]
        else:
            probs = y
        ps = probs.tolist()
        scores["msp"] = 1.0 - max(ps)
        log = math.log
        scores["entropy"] = -sum(q * log(q) for q in (min(max(v, 1e-12), 1.0) for v in ps))
        if logits is not None:
            zs = logits.tolist()
            m = max(zs)
            exp = math.exp
            scores["energy"] = -(m + log(sum(exp(z - m) for z in zs)))
        self._acc += self.rate
        if self._acc >= 1.0:
            self._acc -= 1.0
            out = Outputs(probs=probs.astype(np.float64)[None, :], logits=None)
            scores["squeeze"] = float(squeeze_scores(
                lambda r: self.io.predict(r, self.profile.output_kind),
                np.asarray(row, dtype=np.float64)[None, :], out, self.profile.spec,
                self.profile.squeeze)[0])
        return scores

    def _combined(self, scores: dict[str, float]) -> float:
        best = 0.0
        for k, v in scores.items():
            t = self._tails.get(k)
            if t is None:
                continue
            ref, n, top, beta = t
            if v != v:
                return 300.0
            if v > top:
                sur = min(((v - top) / beta + math.log(n + 1)) / _LN10, 300.0)
            else:
                sur = -math.log10((n - bisect_left(ref, v) + 1.0) / (n + 1))
            if sur > best:
                best = sur
        return best

    def _judge(self, scores: dict[str, float], problems: list[str], elapsed: float) -> Verdict:
        p = self.profile
        combined = self._combined(scores)
        flat = dict(scores)
        flat["combined"] = combined
        reasons: list[str] = []
        severity = "info"
        if combined > p.threshold:
            over = [k for k in scores if k in p.thresholds and flat[k] > p.thresholds[k]]
            reasons.append("anomalous input (" + ", ".join(over or ["combined"]) + ")")
            severity = "critical" if combined >= p.critical else "warning"
        if problems:
            reasons.append("out of range: " + problems[0])
            severity = "critical" if severity == "critical" else "warning"
        lat = self.latency.score(elapsed)
        flat["latency_z"] = lat
        if lat >= self.latency.z_crit:
            reasons.append("latency jump")
            severity = severity if severity != "info" else "warning"
        clipped = min(combined, p.threshold)
        drift = self.cusum.update(clipped)
        drift = self.window.update(clipped) or drift
        if drift:
            reasons.append("score drift")
            severity = severity if severity != "info" else "warning"
        return Verdict(bool(reasons), severity, flat, tuple(reasons))
