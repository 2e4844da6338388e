"""The sped-up per-invoke path decides exactly as the path it replaced (guard_reference.py).

Both run on the same inputs, in the same order, with the same injected clock: clean digits,
noise, inversions, dead pixels, out-of-range and invalid inputs, a latency jump and a slow drift.
Every verdict must match (flag, severity, reasons) and every score must match to float
rounding; the sequence must raise each kind of warning, so a detection lost on the way fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from guard_helpers import FAKE_SHA, FakeInterp
from guard_reference import ReferenceGuard

from edgeward.models.guard import (
    GuardedInterpreter,
    ModelIO,
    SqueezeConfig,
    Verdict,
    calibrate,
    softmax_logits_index,
)
from edgeward.models.guard.detectors import InputStats
from edgeward.models.guard.profile import Profile
from edgeward.models.refmodels import load_digits_split
from edgeward.models.runtime import load_interpreter


class Clock:
    """Monotonic clock for one guard: inference k takes ``durations[k]`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.durations, self.t, self.calls = durations, 0.0, 0

    def __call__(self) -> float:
        if self.calls % 2:  # the reading after an inference
            self.t += self.durations[self.calls // 2]
        else:
            self.t += 1e-4
        self.calls += 1
        return self.t


def durations(n: int) -> list[float]:
    rng = np.random.default_rng(5)
    d = list(1e-3 * (1 + 0.01 * rng.standard_normal(n)))
    for i in (150, 151, 400):  # the model suddenly 4x slower: attack on the runtime
        d[i] = 4e-3
    return d


def digit_stream(x: np.ndarray, more: np.ndarray) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(7)
    for i in range(290):  # clean held-out digits, one latency jump among them
        yield x[i]
    for _ in range(40):  # attack: uniform noise
        yield rng.uniform(0, 1, 64).astype(np.float32)
    for i in range(20):  # attack: inverted digits
        yield (1.0 - x[i]).astype(np.float32)
    for i in range(20):  # attack: eight dead (stuck-on) pixels
        v = x[i].copy()
        v[rng.choice(64, 8, replace=False)] = 1.0
        yield v
    for i in range(10):  # out of the calibrated range: a saturated or mis-scaled sensor
        yield (x[i] * 1.6).astype(np.float32)
    yield np.full(64, np.nan, np.float32)  # attack: NaN
    yield np.full(64, np.inf, np.float32)  # attack: Inf
    yield np.zeros(63, np.float32)  # attack: wrong shape
    yield x[0].astype(np.float64)  # numpy's float64: cast, same verdict as float32
    yield x[1].reshape(1, 8, 8, 1)  # with the batch axis
    ramp = np.linspace(0, 0.35, 300)[:, None].astype(np.float32)
    yield from np.clip(more[:300] + ramp, 0, 1).astype(np.float32)  # slow drift


def same(a: Verdict, b: Verdict) -> None:
    assert (a.flagged, a.severity, a.reasons) == (b.flagged, b.severity, b.reasons)
    assert list(a.scores) == list(b.scores)
    for k in a.scores:
        assert a.scores[k] == pytest.approx(b.scores[k], rel=1e-6, abs=1e-9), k


def run_both(interp: Any, profile: Profile, xs: list[np.ndarray], rate: float) -> list[Verdict]:
    n = len(xs)
    guard = GuardedInterpreter(interp, profile, squeeze_rate=rate, monotonic=Clock(durations(n)))
    ref = ReferenceGuard(interp, profile, squeeze_rate=rate, monotonic=Clock(durations(n)))
    out = []
    for x in xs:
        v = guard.invoke(x).verdict
        same(v, ref.invoke(x))
        out.append(v)
    return out


def reasons(vs: list[Verdict]) -> set[str]:
    return {r.split(" (")[0].split(":")[0] for v in vs for r in v.reasons}


@pytest.mark.parametrize("name", ["digits_cnn.tflite", "digits_mlp_int8.tflite"])
def test_real_model_verdicts_and_scores_unchanged(guard_models: Path, name: str) -> None:
    it = load_interpreter((guard_models / name).read_bytes(), preserve_all_tensors=True)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    x_train, _, x, _ = load_digits_split()
    profile = calibrate(x[:300].reshape(300, *shape), io.predict, model_sha256=FAKE_SHA,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1),
                        combination="max")  # the reference implements max surprise
    xs = [v.reshape(shape) if v.size == 64 and v.ndim == 1 else v
          for v in digit_stream(x[300:], x_train)]
    vs = run_both(it, profile, xs, rate=0.1)
    seen = reasons(vs)
    assert {"anomalous input", "out of range", "invalid input", "latency jump",
            "score drift"} <= seen, seen
    assert {v.severity for v in vs} == {"info", "warning", "critical"}


@pytest.mark.parametrize("diagonal", [False, True])
def test_fake_model_verdicts_and_scores_unchanged(
    fake_interp: FakeInterp, clean: np.ndarray, clean_test: np.ndarray, diagonal: bool
) -> None:
    io = ModelIO(fake_interp, logits_index=softmax_logits_index(fake_interp))
    profile = calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,),
                        energy_source="preserved-logits", squeeze=SqueezeConfig(bits=4, rate=0.25),
                        combination="max")  # the reference implements max surprise
    if diagonal:  # the per-feature precision kept for wide inputs (over MAX_FULL_DIM features)
        profile = dataclasses.replace(profile, stats=InputStats.fit(clean, max_full_dim=8))
    rng = np.random.default_rng(11)
    xs = [*clean_test[:300], *rng.uniform(-8, 8, (50, 16)).astype(np.float32),
          *(clean_test[300:320] * 40).astype(np.float32),
          *(clean_test[320:620] + np.linspace(0, 3, 300)[:, None]).astype(np.float32)]
    vs = run_both(fake_interp, profile, xs, rate=0.25)
    assert {"anomalous input", "out of range", "latency jump", "score drift"} <= reasons(vs)
