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
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .calibrate import Outputs, combine, input_scores, output_scores, squeeze_scores
from .combine import weighted_one
from .detectors import softmax, validity_problems
from .featuretap import FeatureHook, run_features
from .link import AgentLink
from .modelio import ModelIO, softmax_logits_index
from .policy import Policy, PolicyConfig, Verdict, info_verdict
from .profile import Profile
from .stats import Cusum, LatencyMonitor, WindowShift

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]
_LN10 = math.log(10.0)
_ndarray = np.ndarray
_sub, _mul, _abs, _dot = np.subtract, np.multiply, np.abs, np.dot
_new = object.__new__


@dataclass(frozen=True)
class GuardedResult:
    outputs: np.ndarray | None  # the model's own output tensor; None if the input was refused
    verdict: Verdict


def _result(outputs: np.ndarray, verdict: Verdict) -> GuardedResult:
    """``GuardedResult(outputs, verdict)`` without the frozen ``__init__`` (see info_verdict)."""
    r = _new(GuardedResult)
    d = r.__dict__
    d["outputs"] = outputs
    d["verdict"] = verdict
    return r


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
        self._d = spec.size
        self._diag = profile.stats.precision.shape[0] == 1
        self._lo, self._hi = spec.lo, spec.hi
        self._logits_kind = profile.output_kind == "logits"
        st = profile.stats
        # Float32 copies of the statistics for a float32 input (no mixed-type casts; an input
        # outside [lo, hi], which could overflow float32, is scored in float64 by _wide_inputs).
        hot = np.float32 if self.io.in_dtype == np.float32 else np.float64
        self._mean = st.mean.astype(hot)
        self._inv = (1.0 / st.scale).astype(hot)
        self._prec = st.precision[0 if self._diag else slice(None)].astype(hot)
        self._xc, self._z, self._t = (np.empty(self._d, hot) for _ in range(3))
        # Per detector: sorted calibration scores, their top, the exponential tail's beta,
        # log(n + 1), and the surprise at each bisection point (looked up, not computed). Flat
        # double arrays, not lists of float objects: after a large model has swept the caches
        # a bisection costs a cache miss per probe, not two.
        self._tails = {}
        for k, t in profile.tails.items():
            ref, n = t._ref_list, len(t._ref_list)
            table = array("d", (-math.log10((n - i + 1.0) / (n + 1)) for i in range(n + 1)))
            self._tails[k] = (array("d", ref), ref[-1], t._beta, math.log(n + 1), table)
        self._threshold, self._critical = profile.threshold, profile.critical
        self._thresholds = profile.thresholds
        self._step = d.step
        self._lat_crit = self.latency.z_crit
        self._drift_batch: list[float] = []
        # Feature detectors (sampled, featuretap.py) and a weighted combination, when the profile
        # has them; a profile naming a tensor this model lacks is refused here.
        self.features = FeatureHook(interpreter, profile.features) if profile.features else None
        if profile.weights is not None:
            self._combined = weighted_one(profile.tails, profile.weights)  # type: ignore[method-assign,assignment]

    def invoke(self, x: np.ndarray) -> GuardedResult:
        """Run one sample (shape as the model's input, with or without the batch axis, or flat)."""
        self.invokes += 1
        if (
            type(x) is not _ndarray
            or x.dtype is not self._dtype
            or x.shape not in self._shapes
            # range check; a NaN is its own argmin and argmax and fails both comparisons
            or not self._lo <= x.item(x.argmin())
            or not x.item(x.argmax()) <= self._hi
        ):
            return self._invoke_checked(x)
        return self._run(x, ())

    def _invoke_checked(self, x: Any) -> GuardedResult:
        """The full validity check, for whatever :meth:`invoke`'s quick test did not pass."""
        if type(x) is np.ndarray and x.dtype != self._dtype and x.dtype.kind == self._cast_kind:
            x = self._cast(x)
        problems = validity_problems(x, self.profile.spec)
        hard = [p for p in problems if not p.startswith("values ")]
        if hard:
            v = Verdict(
                True, "critical", {"combined": float("inf")}, ("invalid input: " + hard[0],)
            )
            self._report(v)
            return GuardedResult(None, v)
        return self._run(x, tuple(problems))

    def _run(self, x: np.ndarray, problems: tuple[str, ...]) -> GuardedResult:
        """One inference on a valid input, the detectors, the verdict and its report.

        The per-invoke path: a handful of numpy calls on preallocated rows for the input
        statistics, plain Python over the ten-odd class scores, no allocation beyond the
        score map and the verdict. Rare work (squeezing, the windowed drift test, the latency
        baseline) runs every so many invokes.
        """
        if problems:
            zmax, maha = self._wide_inputs(x)
        else:
            xc, z, t = self._xc, self._z, self._t
            _sub(x.reshape(self._d), self._mean, out=xc)
            _mul(xc, self._inv, out=z)
            _abs(z, out=z)
            zmax = z.item(z.argmax())
            if self._diag:
                _mul(xc, xc, out=t)
                maha = math.sqrt(float(_dot(t, self._prec)))
            else:
                _dot(xc, self._prec, out=t)
                q = float(_dot(t, xc))
                maha = math.sqrt(q) if q > 0.0 else 0.0
        io = self.io
        if io.plain:  # float tensors: ModelIO.run_raw, inlined
            it = io.interp
            t0 = self._mono()
            it.set_tensor(io._in_index, x.reshape(io.in_shape))
            it.invoke()
            raw = it.get_tensor(io._out_index)
            li = io.logits_index
            logits = None if li is None else it.get_tensor(li).reshape(-1)
            elapsed = self._mono() - t0
            y = raw.reshape(-1)
        else:
            t0 = self._mono()
            raw, y, logits = io.run_raw(x)
            elapsed = self._mono() - t0
        if logits is not None and not self._logits_checked:
            logits = self._check_logits(y, logits)
        if self._logits_kind:
            logits = y
            probs = softmax(y.astype(np.float64)[None, :])[0]
        else:
            probs = y
        # Ten-odd class scores: plain Python is cheaper than a dozen numpy calls. Same
        # arithmetic in the same order as calibrate.py's: entropy of the probabilities clipped
        # to [1e-12, 1] (a clipped 1 adds 1 * log 1 = 0), max-shifted log-sum-exp for energy.
        ps = probs.tolist()
        log = math.log
        h = 0.0
        for q in ps:
            if q < 1e-12:
                q = 1e-12
            elif q >= 1.0:
                continue
            h += q * log(q)
        scores = {"zmax": zmax, "mahalanobis": maha, "msp": 1.0 - max(ps), "entropy": -h}
        if logits is not None:
            zs = logits.tolist()
            m = max(zs)
            exp = math.exp
            s = 0.0
            for v in zs:
                s += exp(v - m)
            scores["energy"] = -(m + log(s))
        if self.features is not None:  # before squeezing, whose inferences overwrite the tensor
            self.features(scores)
        self._acc += self.rate
        if self._acc >= 1.0:
            self._acc -= 1.0
            self._sampled(scores, x, probs)
        # The verdict. Scores become its score map, with "combined" and "latency_z".
        combined = scores["combined"] = self._combined(scores)
        lat = scores["latency_z"] = self.latency.score(elapsed)
        threshold = self._threshold
        clipped = combined if combined < threshold else threshold
        drift = self.cusum.update(clipped)
        # The windowed test only looks at the window every ``step`` scores: it gets them in
        # batches of ``step``, each ending on the invoke it would have tested on.
        batch = self._drift_batch
        batch.append(clipped)
        if len(batch) >= self._step:
            drift = self.window.extend(batch) or drift
            batch.clear()
        if combined > threshold or problems or lat >= self._lat_crit or drift:
            v = self._flagged(scores, problems, drift)
        else:
            v = info_verdict(scores)
        events = self.policy.observe(v, self._wall())
        if events:
            self._send(events)
        return _result(raw, v)

    def _wide_inputs(self, x: np.ndarray) -> tuple[float, float]:
        """zmax and Mahalanobis in float64, for an input outside the calibrated range."""
        row = np.asarray(x, dtype=np.float64).reshape(1, -1)
        st = self.profile.stats
        return float(st.zmax(row)[0]), float(st.mahalanobis(row)[0])

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

    def _sampled(self, scores: dict[str, float], x: np.ndarray, probs: np.ndarray) -> None:
        """The detectors that cost extra inferences, on the invokes their rate picks."""
        self.squeezed += 1
        out = Outputs(probs=probs.astype(np.float64)[None, :], logits=None)
        scores["squeeze"] = float(
            squeeze_scores(
                lambda r: self.io.predict(r, self.profile.output_kind),
                np.asarray(x, dtype=np.float64).reshape(1, -1),
                out,
                self.profile.spec,
                self.profile.squeeze,
            )[0]
        )

    def _combined(self, scores: dict[str, float]) -> float:
        """max over detectors of TailModel.surprise1, inlined (the per-invoke hot path)."""
        best = 0.0
        tails = self._tails
        for k, v in scores.items():
            t = tails.get(k)
            if t is None:
                continue
            ref, top, beta, log_n1, table = t
            if v != v:
                return 300.0
            if v > top:
                sur = min(((v - top) / beta + log_n1) / _LN10, 300.0)
            else:
                sur = table[bisect_left(ref, v)]
            if sur > best:
                best = sur
        return best

    def _flagged(self, scores: dict[str, float], problems: tuple[str, ...], drift: bool) -> Verdict:
        """The verdict of an invoke with at least one reason (see :meth:`_run`)."""
        combined, threshold = scores["combined"], self._threshold
        reasons: list[str] = []
        severity = "info"
        if combined > threshold:
            th = self._thresholds
            over = [k for k, v in scores.items() if k in th and v > th[k]]
            reasons.append("anomalous input (" + ", ".join(over or ["combined"]) + ")")
            severity = "critical" if combined >= self._critical else "warning"
        if problems:
            reasons.append("out of range: " + problems[0])
            severity = "critical" if severity == "critical" else "warning"
        if scores["latency_z"] >= self._lat_crit:
            reasons.append("latency jump")
            severity = severity if severity != "info" else "warning"
        if drift:
            reasons.append("score drift")
            severity = severity if severity != "info" else "warning"
        return Verdict(True, severity, scores, tuple(reasons))

    def _report(self, v: Verdict) -> None:
        events = self.policy.observe(v, self._wall())
        if events:
            self._send(events)

    def _send(self, events: list[dict[str, Any]]) -> None:
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
            if self.features is not None:
                tap = self.features.tap
                scores.update(self.features.model.scores(run_features(self.io, tap, good)))
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
