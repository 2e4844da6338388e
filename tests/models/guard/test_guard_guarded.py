"""GuardedInterpreter end to end over a numpy stand-in interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from guard_helpers import FAKE_SHA, FakeInterp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_guard_link import Server

from edgeward.models.guard import (
    AgentLink,
    GuardedInterpreter,
    ModelIO,
    PolicyConfig,
    SqueezeConfig,
    Verdict,
    calibrate,
    softmax_logits_index,
)
from edgeward.models.guard.profile import Profile


@pytest.fixture
def profile(fake_interp: FakeInterp, clean: np.ndarray) -> Profile:
    io = ModelIO(fake_interp, logits_index=softmax_logits_index(fake_interp))
    return calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,),
                     energy_source="preserved-logits", squeeze=SqueezeConfig(bits=4, rate=0.25))


def test_calibration_finds_logits_and_all_detectors(profile: Profile) -> None:
    assert profile.output_kind == "probs" and profile.energy_source == "preserved-logits"
    assert set(profile.detectors) == {"zmax", "mahalanobis", "msp", "entropy", "energy", "squeeze"}
    assert profile.critical > profile.threshold > 0


def test_clean_fpr_near_target_and_noise_detected(fake_interp: FakeInterp, profile: Profile,
                                                  clean_test: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile)
    clean_flags = [g.invoke(x).verdict for x in clean_test[:400]]
    fpr = np.mean([vd.flagged and "anomalous input" in vd.reasons[0] for vd in clean_flags])
    assert fpr < 0.12  # target 0.05; 300 held calibration samples
    rng = np.random.default_rng(9)
    noise = rng.uniform(-8, 8, size=(100, 16)).astype(np.float32)
    tpr = np.mean([g.invoke(x).verdict.flagged for x in noise])
    assert tpr > 0.9
    assert 0.2 < g.squeezed / g.invokes < 0.3  # sampled at the profile's rate


def test_outputs_are_the_models_own(fake_interp: FakeInterp, profile: Profile,
                                    clean_test: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.0)
    fake_interp.invokes = 0
    x = clean_test[0]
    r = g.invoke(x)
    ref = FakeInterp(fake_interp.w, fake_interp.b)
    ref.set_tensor(0, x.reshape(1, 16))
    ref.invoke()
    np.testing.assert_array_equal(r.outputs, ref.get_tensor(1))
    assert fake_interp.invokes == 1 and set(r.verdict.scores) >= {"combined", "energy", "latency_z"}


@pytest.mark.parametrize(
    "x",
    [
        np.full(16, np.nan, np.float32),  # attack: NaN
        np.full(16, np.inf, np.float32),  # attack: Inf
        np.zeros(15, np.float32),  # attack: wrong shape
        np.zeros(0, np.float32),  # attack: empty array
        np.zeros((1000, 16), np.float32),  # attack: huge array
        np.zeros(16, np.int32),  # wrong dtype (a float64 input is cast: see below)
    ],
)
def test_attack_invalid_input_never_reaches_the_model_and_is_critical(
    fake_interp: FakeInterp, profile: Profile, x: np.ndarray
) -> None:
    calls: list[Verdict] = []
    g = GuardedInterpreter(fake_interp, profile, on_critical=calls.append)
    fake_interp.invokes = 0
    r = g.invoke(x)
    assert r.outputs is None and r.verdict.severity == "critical" and r.verdict.flagged
    assert fake_interp.invokes == 0 and len(calls) == 1


def test_attack_far_out_of_range_input_is_critical(fake_interp: FakeInterp, profile: Profile) -> None:
    g = GuardedInterpreter(fake_interp, profile)
    r = g.invoke(np.full(16, 1e4, np.float32))
    assert r.outputs is not None and r.verdict.severity == "critical"
    assert any("out of range" in s for s in r.verdict.reasons)


def test_drift_is_detected_after_a_gradual_shift(fake_interp: FakeInterp, profile: Profile,
                                                 clean_test: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.0)
    quiet = [g.invoke(x).verdict for x in clean_test[:600]]
    assert sum("score drift" in vd.reasons for vd in quiet) == 0
    ramp = clean_test[600:1200] + np.linspace(0, 3, 600)[:, None].astype(np.float32)
    alarms = [i for i, x in enumerate(ramp) if "score drift" in g.invoke(x).verdict.reasons]
    assert alarms and alarms[0] < 400


def test_latency_jump_is_reported(fake_interp: FakeInterp, profile: Profile,
                                  clean_test: np.ndarray) -> None:
    t = [0.0]

    def clock() -> float:
        return t[0]

    orig = fake_interp.invoke

    def slow() -> None:
        t[0] += step[0]
        orig()

    step = [0.001]
    fake_interp.invoke = slow  # type: ignore[method-assign]
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.0, monotonic=clock)
    for x in clean_test[:100]:
        step[0] = 0.001 * (1 + 0.01 * np.sin(t[0] * 1e4))
        assert "latency jump" not in g.invoke(x).verdict.reasons
    step[0] = 0.004
    assert "latency jump" in g.invoke(clean_test[100]).verdict.reasons


def test_events_and_fail_safe_through_a_real_socket(tmp_path: Path, fake_interp: FakeInterp,
                                                    profile: Profile, clean_test: np.ndarray) -> None:
    path = str(tmp_path / "agent.sock")
    srv = Server(path)
    pins: list[Verdict] = []
    now = [1000.0]
    try:
        g = GuardedInterpreter(fake_interp, profile, link=AgentLink(path), on_critical=pins.append,
                               policy=PolicyConfig(window_s=60, max_immediate=3),
                               wallclock=lambda: now[0])
        for x in clean_test[:50]:
            g.invoke(x)
        for _ in range(200):  # a flood of NaN: 200 fail-safe calls, one event, one summary
            g.invoke(np.full(16, np.nan, np.float32))
            now[0] += 0.01
        g.close()
        events = srv.wait_for(2, severity="critical")
        crit = [e for e in events if e["body"]["severity"] == "critical"]
        assert len(pins) == 200
        assert len(crit) == 2 and crit[0]["body"]["count"] == 1
        assert crit[1]["body"]["summary"] and crit[1]["body"]["count"] == 200
        assert len(events) <= 6
    finally:
        srv.close()


def test_logits_output_model(centers: np.ndarray, clean: np.ndarray) -> None:
    interp = FakeInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1), softmax=False)
    io = ModelIO(interp)
    p = calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,))
    assert p.output_kind == "logits" and p.energy_source == "logits"
    assert "energy" in p.detectors
    g = GuardedInterpreter(interp, p)
    assert not np.isnan(g.invoke(clean[0]).verdict.scores["energy"])


def test_calibration_refuses_bad_data(fake_interp: FakeInterp, clean: np.ndarray) -> None:
    io = ModelIO(fake_interp)
    with pytest.raises(ValueError, match="too few"):
        calibrate(clean[:10], io.predict, model_sha256=FAKE_SHA, input_shape=(16,))
    bad = clean.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calibrate(bad, io.predict, model_sha256=FAKE_SHA, input_shape=(16,))
    with pytest.raises(ValueError, match="values"):
        calibrate(clean[:, :8], io.predict, model_sha256=FAKE_SHA, input_shape=(16,))


def test_per_invoke_fast_path_matches_batch_scores(fake_interp: FakeInterp, profile: Profile,
                                                   clean_test: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.0)
    xs = np.r_[clean_test[:20], np.random.default_rng(3).uniform(-9, 9, (5, 16)).astype(np.float32)]
    batch = g.score_batch(xs)
    for x, b in zip(xs, batch, strict=True):
        s = g.invoke(x).verdict.scores
        for k in ("zmax", "mahalanobis", "msp", "entropy", "energy"):
            assert s[k] == pytest.approx(b.scores[k], rel=1e-4, abs=1e-5), k
        # combined may differ only through the sampled squeeze score, absent here
        assert s["combined"] <= b.scores["combined"] * (1 + 1e-4) + 1e-6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int8, np.uint8, np.float16, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=20),
        elements=None,
    )
)
def test_attack_arbitrary_arrays_never_crash_the_guard(fake_interp: FakeInterp, profile: Profile,
                                                       x: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.5)
    r = g.invoke(x)
    assert r.verdict.severity in ("info", "warning", "critical")
    if r.outputs is None:
        assert r.verdict.severity == "critical"
    else:
        assert x.dtype.kind == "f" and x.size == 16  # float16/64 are cast to float32


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hnp.arrays(np.float32, 16, elements=st.floats(width=32)))
def test_attack_any_float32_values_get_a_verdict(fake_interp: FakeInterp, profile: Profile,
                                                 x: np.ndarray) -> None:
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=1.0)
    v = g.invoke(x).verdict
    if not np.isfinite(x).all():
        assert v.severity == "critical"
    assert all(isinstance(s, float) for s in v.scores.values())


def test_logits_found_behind_dequantize_and_delegates() -> None:
    class Ops:
        def __init__(self, ops: list[dict[str, Any]], out: int) -> None:
            self.ops, self.out = ops, out

        def get_output_details(self) -> list[dict[str, int]]:
            return [{"index": self.out}]

        def _get_ops_details(self) -> list[dict[str, object]]:
            return self.ops

    int8 = [
        {"op_name": "FULLY_CONNECTED", "inputs": [0, 2, 3], "outputs": [7]},
        {"op_name": "SOFTMAX", "inputs": [7], "outputs": [8]},
        {"op_name": "DEQUANTIZE", "inputs": [8], "outputs": [9]},
        {"op_name": "DELEGATE", "inputs": [8], "outputs": [9]},
    ]
    assert softmax_logits_index(Ops(int8, 9)) == 7
    no_softmax = [{"op_name": "FULLY_CONNECTED", "inputs": [0, 1], "outputs": [2]}]
    assert softmax_logits_index(Ops(no_softmax, 2)) is None
    assert softmax_logits_index(Ops([], 2)) is None


def test_logits_that_do_not_match_the_output_switch_energy_off(
    fake_interp: FakeInterp, profile: Profile, clean_test: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """A runtime that reused the logits tensor (no preserve_all_tensors) must not feed energy."""
    g = GuardedInterpreter(fake_interp, profile, logits_index=0)  # the input tensor: wrong
    v = g.invoke(clean_test[0]).verdict
    assert "energy" not in v.scores and "preserve_all_tensors" in caplog.text
    assert "energy" not in g.invoke(clean_test[1]).verdict.scores
    good = GuardedInterpreter(fake_interp, profile)
    assert "energy" in good.invoke(clean_test[0]).verdict.scores


def test_float64_input_is_cast_not_critical(fake_interp: FakeInterp, profile: Profile,
                                            clean_test: np.ndarray, caplog) -> None:
    """numpy's default float64 for a float32 model: same verdict as float32, said once."""
    failsafe: list[Verdict] = []
    g = GuardedInterpreter(fake_interp, profile, squeeze_rate=0.0, on_critical=failsafe.append)
    for x in clean_test[:50]:
        a = g.invoke(x.astype(np.float64)).verdict
        b = g.invoke(x.astype(np.float32)).verdict
        assert a.severity != "critical"
        for name in ("zmax", "mahalanobis", "msp", "entropy", "energy"):  # not latency: noisy
            assert a.scores[name] == pytest.approx(b.scores[name], rel=1e-5), name
    assert not any("invalid input" in v.reasons[0] for v in failsafe)
    assert sum("float64" in r.message for r in caplog.records) == 1
    huge = np.full(16, 1e300)  # beyond float32: becomes inf, refused as invalid
    assert g.invoke(huge).verdict.severity == "critical"
