"""``GuardedInterpreter``: a verified TFLite interpreter with the guard in front and behind it.

A device maker wraps the interpreter it got from verified loading::

    profile = open_profile(profile_bytes, model_sha256=verified.sha256, trust=trust)
    guard = GuardedInterpreter(interpreter, profile, on_critical=lock.require_pin,
                               link=AgentLink("/run/edgeward/agent.sock"))
    result = guard.invoke(features)          # result.outputs, result.verdict
    if result.verdict.severity == "critical": ...

Each invoke: validity check (an invalid input never reaches the model), one inference (timed),
the always-on detectors (input z and Mahalanobis, MSP, entropy, energy), the sampled feature
squeezing, a combined score, latency and drift monitors, then the policy (events, fail-safe).

The interpreter is duck-typed (``get_input_details``, ``set_tensor``, ``invoke``, ``get_tensor``,
as LiteRT and tflite-runtime have), so this module imports no runtime. Its I/O is the
interpreter call and, through ``link``, the agent socket.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .calibrate import Outputs, combine, input_scores, output_scores, squeeze_scores
from .detectors import softmax, validity_problems
from .link import AgentLink
from .modelio import ModelIO, softmax_logits_index
from .policy import Policy, PolicyConfig, Verdict
from .profile import Profile
from .stats import Cusum, LatencyMonitor, WindowShift

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]
_LN10 = math.log(10.0)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


@dataclass(frozen=True)
class GuardedResult:
    outputs: np.ndarray | None  # the model's own output tensor; None if the input was refused
    verdict: Verdict


class GuardedInterpreter:
    """Wraps a verified interpreter; every :meth:`invoke` returns outputs and a verdict."""

    def __init__(
        self,
        interpreter: Any,
        profile: Profile,
        *,
        on_critical: Callable[[Verdict], None] | None = None,
        link: AgentLink | None = None,
        policy: PolicyConfig | None = None,
        logits_index: int | None = None,
        squeeze_rate: float | None = None,
        monotonic: Callable[[], float] = time.perf_counter,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        if logits_index is None and profile.energy_source == "preserved-logits":
            logits_index = softmax_logits_index(interpreter)
        self.io = ModelIO(interpreter, logits_index=logits_index)
        if int(np.prod(self.io.in_shape)) != profile.spec.size:
            raise ValueError(
                f"profile is for inputs of {profile.spec.shape}, "
                f"the interpreter takes {self.io.in_shape}"
            )
        self.link = link
        self.policy = Policy(policy, on_critical=on_critical, model=profile.model_sha256.hex()[:16])
        self.rate = profile.squeeze.rate if squeeze_rate is None else squeeze_rate
        self._acc = 0.0
        d = profile.drift
        self.cusum = Cusum(d.mu, d.sigma, k=d.k, h=d.h)
        self.window = WindowShift(
            d.ref, d.mu, d.sigma, window=d.window, step=d.step, alpha=d.alpha, z_crit=d.z_crit
        )
        self.latency = LatencyMonitor()
        self._mono, self._wall = monotonic, wallclock
        self.invokes = 0
        self.squeezed = 0
        self._logits_checked = False
        spec = profile.spec
        self._dtype = np.dtype(spec.dtype)
        self._cast_warned = False
        self._cast_kind = "f" if self._dtype.kind == "f" else None  # float inputs of other widths
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

    def invoke(self, x: np.ndarray) -> GuardedResult:
        """Run one sample (shape as the model's input, with or without the batch axis, or flat)."""
        self.invokes += 1
        if type(x) is np.ndarray and x.dtype != self._dtype and x.dtype.kind == self._cast_kind:
            x = self._cast(x)
        problems = self._quick_valid(x)
        if problems is None:
            problems = validity_problems(x, self.profile.spec)
        hard = [p for p in problems if not p.startswith("values ")]
        if hard:
            v = Verdict(
                True, "critical", {"combined": float("inf")}, ("invalid input: " + hard[0],)
            )
            self._report(v)
            return GuardedResult(None, v)
        t0 = self._mono()
        raw, y, logits = self.io.run_raw(x)
        elapsed = self._mono() - t0
        if logits is not None and not self._logits_checked:
            logits = self._check_logits(y, logits)
        scores = self._scores(x.reshape(-1), y, logits, wide=bool(problems))
        v = self._judge(scores, problems, elapsed)
        self._report(v)
        return GuardedResult(raw, v)

    def _check_logits(self, y: np.ndarray, logits: np.ndarray) -> np.ndarray | None:
        """Once: the logits read must reproduce the output, else the runtime reused the tensor."""
        if not (np.isfinite(logits).all() and np.isfinite(y).all()):
            return logits  # an extreme input proves nothing: check on the next one
        self._logits_checked = True
        if self.profile.output_kind != "probs":
            return logits
        if logits.size == y.size:
            probs = softmax(np.asarray(logits, dtype=np.float64)[None, :])[0]
            if np.abs(probs - y).max() <= 0.02:
                return logits
        logger.warning(
            "the logits tensor does not reproduce the model's output (was the interpreter built "
            "with preserve_all_tensors=True?); the energy detector is off"
        )
        self.io.logits_index = None
        return None

    def _cast(self, x: np.ndarray) -> np.ndarray:
        """A float input of another width (numpy's default float64) is cast to the model's type.

        Values outside the model type's range become inf and are then refused as invalid. Said
        once, at WARNING, because the cast is a copy on every invoke.
        """
        if not self._cast_warned:
            self._cast_warned = True
            logger.warning("input is %s but the model takes %s: cast once per invoke; pass "
                           "x.astype(np.%s) to avoid the copy", x.dtype, self._dtype, self._dtype)
        with np.errstate(over="ignore"):
            return x.astype(self._dtype)

    def _quick_valid(self, x: Any) -> list[str] | None:
        """[] for the common valid input, checked with the least work; None: ask the full check."""
        if type(x) is not np.ndarray or x.dtype != self._dtype or x.shape not in self._shapes:
            return None
        lo, hi = float(_MIN(x, axis=None)), float(_MAX(x, axis=None))
        if self._lo <= lo and hi <= self._hi:  # NaN compares False: falls to the full check
            return []
        return None

    def _scores(
        self, row: np.ndarray, y: np.ndarray, logits: np.ndarray | None, *, wide: bool = False
    ) -> dict[str, float]:
        """The always-on detectors for one sample, as floats (same values as calibrate.py's)."""
        # float32 copies of the statistics when the input is float32: no mixed-type casts. An
        # input outside the calibrated range could overflow float32, so it gets float64.
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
        # Ten-odd class scores: plain Python is cheaper than a dozen numpy calls on cold caches.
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
            self.squeezed += 1
            out = Outputs(probs=probs.astype(np.float64)[None, :], logits=None)
            scores["squeeze"] = float(
                squeeze_scores(
                    lambda r: self.io.predict(r, self.profile.output_kind),
                    np.asarray(row, dtype=np.float64)[None, :],
                    out,
                    self.profile.spec,
                    self.profile.squeeze,
                )[0]
            )
        return scores

    def _combined(self, scores: dict[str, float]) -> float:
        """max over detectors of TailModel.surprise1, inlined (the per-invoke hot path)."""
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

    def _report(self, v: Verdict) -> None:
        events = self.policy.observe(v, self._wall())
        if self.link is not None:
            for e in events:
                self.link.send(e)

    def close(self) -> None:
        """Flush the policy's open summaries to the agent and close the link."""
        events = self.policy.flush(self._wall())
        if self.link is not None:
            for e in events:
                self.link.send(e)
            self.link.close()

    def score_batch(self, x: np.ndarray) -> list[Verdict]:
        """Offline: verdicts for rows of ``x`` without latency, drift or policy (CLI, eval).

        Rows with NaN/Inf are judged critical and not run; out-of-range rows are run and flagged.
        """
        p = self.profile
        rows = np.asarray(x).reshape(len(x), -1)
        problems = [validity_problems(r.reshape(p.spec.shape), p.spec) for r in rows]
        ok = np.array([not any(not q.startswith("values ") for q in pr) for pr in problems], bool)
        verdicts: list[Verdict] = []
        good = rows[ok].astype(np.float64)
        combined: F64 = np.zeros(0)
        scores: dict[str, F64] = {}
        if len(good):
            out = self.io.predict(good, p.output_kind)
            if out.logits is not None and not self._logits_checked:
                if self._check_logits(out.probs[0], out.logits[0]) is None:
                    out = Outputs(probs=out.probs, logits=None, kind=out.kind)
            scores = {**input_scores(p.stats, good), **output_scores(out)}
            scores["squeeze"] = squeeze_scores(
                lambda r: self.io.predict(r, p.output_kind), good, out, p.spec, p.squeeze
            )
            combined = combine(p, scores)
        j = 0
        for i in range(len(rows)):
            if not ok[i]:
                verdicts.append(
                    Verdict(
                        True,
                        "critical",
                        {"combined": float("inf")},
                        ("invalid input: " + problems[i][0],),
                    )
                )
                continue
            flat = {k: float(v[j]) for k, v in scores.items()}
            c = flat["combined"] = float(combined[j])
            j += 1
            reasons = ["anomalous input"] if c > p.threshold else []
            sev = "critical" if c >= p.critical else "warning" if c > p.threshold else "info"
            if problems[i]:
                reasons.append("out of range: " + problems[i][0])
                sev = "warning" if sev == "info" else sev
            verdicts.append(Verdict(bool(reasons), sev, flat, tuple(reasons)))
        return verdicts
