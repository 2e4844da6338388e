"""Tail probabilities, thresholds and the streaming change detectors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.models.guard import stats as s


def test_tail_surprise_is_monotone_and_ranks_beyond_calibration() -> None:
    rng = np.random.default_rng(0)
    tm = s.TailModel.fit(rng.normal(size=300))
    grid = np.linspace(-5, 20, 400)
    sur = tm.surprise(grid)
    assert (np.diff(sur) >= -1e-12).all()
    assert sur[-1] > sur[np.searchsorted(grid, tm.ref[-1])] + 3  # keeps rising past the max
    assert tm.surprise(np.array([np.nan]))[0] >= 100  # NaN scores count as extreme
    # About 5% of fresh clean draws exceed the 5% surprise level.
    level = -np.log10(0.05)
    fresh = tm.surprise(rng.normal(size=20000))
    assert 0.03 < (fresh > level).mean() < 0.07


def test_tail_model_compresses_large_references() -> None:
    tm = s.TailModel.fit(np.arange(10_000.0), max_points=100)
    assert tm.ref.size == 100 and tm.ref[0] == 0 and tm.ref[-1] == 9999


def test_quantile_threshold_hits_target_fpr() -> None:
    x = np.random.default_rng(1).exponential(size=10_000)
    t = s.quantile_threshold(x, 0.05)
    assert (x > t).mean() == pytest.approx(0.05, abs=0.002)
    with pytest.raises(ValueError):
        s.quantile_threshold(x, 0.0)


def test_cusum_detects_shift_and_is_quiet_on_clean() -> None:
    rng = np.random.default_rng(2)
    c = s.Cusum(0.0, 1.0, k=0.5, h=8.0)
    assert sum(c.update(x) for x in rng.normal(size=10_000)) <= 2
    c.reset()
    delay = next(i for i, x in enumerate(rng.normal(1.5, 1, size=1000)) if c.update(x))
    assert delay < 20


def test_page_hinkley_detects_increase() -> None:
    rng = np.random.default_rng(3)
    ph = s.PageHinkley(delta=0.2, lam=20.0)
    assert not any(ph.update(x) for x in rng.normal(size=500))
    assert any(ph.update(x) for x in rng.normal(2.0, 1, size=200))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=50),
       st.lists(st.floats(-100, 100), min_size=1, max_size=50))
def test_ks_statistic_matches_scipy(a: list[float], b: list[float]) -> None:
    from scipy.stats import ks_2samp

    want = ks_2samp(a, b, method="asymp").statistic
    assert s.ks_statistic(np.array(a), np.sort(np.array(b))) == pytest.approx(want, abs=1e-9)


def test_window_shift_fires_on_shift_only() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=300)
    w = s.WindowShift(ref, 0.0, 1.0, window=100, step=25)
    assert not any(w.update(x) for x in rng.normal(size=5000))
    assert any(w.update(x) for x in rng.normal(1.0, 1, size=200))


def test_latency_monitor_flags_jump_and_keeps_baseline() -> None:
    rng = np.random.default_rng(5)
    m = s.LatencyMonitor(window=100, warmup=20, z_crit=8.0)
    zs = [m.score(0.001 + 1e-5 * rng.normal()) for _ in range(200)]
    assert max(zs) < 8.0
    jumps = [m.score(0.003) for _ in range(100)]
    assert min(jumps) >= 8.0  # a sustained slowdown keeps scoring; it never becomes normal


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=30), st.integers(0, 3))
def test_window_shift_in_batches_alarms_as_one_by_one(sizes: list[int], seed: int) -> None:
    """The guard hands the windowed test its scores in batches: same alarms, same statistics."""
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.normal(size=300))
    xs = np.r_[rng.normal(size=sum(sizes) // 2), rng.normal(1.5, 1, sum(sizes) - sum(sizes) // 2)]
    one, many = (s.WindowShift(ref, 0.0, 1.0, window=40, step=10) for _ in range(2))
    i = 0
    for n in sizes:
        batch = [float(v) for v in xs[i : i + n]]
        i += n
        singles = [one.update(v) for v in batch]
        assert many.extend(batch) == any(singles)
        assert (many.count, list(many.buf)) == (one.count, list(one.buf))
        assert (many.last_d, many.last_z) == (one.last_d, one.last_z)


def test_median_mad_matches_numpy_median() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 30, 31, 199, 200):
        for a in (rng.lognormal(size=n) * 1e-3, np.round(rng.uniform(size=n), 2)):
            med = float(np.median(a))
            assert s.median_mad(a) == (med, float(np.median(np.abs(a - med))))
