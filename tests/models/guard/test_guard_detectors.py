"""Pure detectors: validity, input statistics, confidence scores, squeezers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeward.models.guard import detectors as d

SPEC = d.InputSpec(shape=(8, 8, 1), dtype="float32", lo=0.0, hi=1.0)


def test_valid_input_has_no_problems() -> None:
    x = np.full((8, 8, 1), 0.5, np.float32)
    assert d.validity_problems(x, SPEC) == []
    assert d.validity_problems(x.reshape(1, 8, 8, 1), SPEC) == []
    assert d.validity_problems(x.reshape(64), SPEC) == []


@pytest.mark.parametrize(
    "x, needle",
    [
        (np.zeros((8, 7, 1), np.float32), "shape"),  # attack: wrong shape
        (np.zeros((0,), np.float32), "shape"),  # attack: empty array
        (np.zeros((10_000, 64), np.float32), "shape"),  # attack: huge batch
        (np.zeros((2, 8, 8, 1), np.float32), "shape"),  # a batch is not one sample
        (np.zeros((8, 8, 1), np.float64), "dtype"),  # wrong dtype
        (np.array(["a"] * 64).reshape(8, 8, 1), "not numeric"),  # strings
        (np.full((8, 8, 1), np.nan, np.float32), "NaN/Inf"),  # attack: NaN
        (np.full((8, 8, 1), np.inf, np.float32), "NaN/Inf"),  # attack: Inf
        (np.full((8, 8, 1), 7.0, np.float32), "outside"),  # saturated / wrong scale
    ],
)
def test_invalid_inputs_are_named(x: np.ndarray, needle: str) -> None:
    problems = d.validity_problems(x, SPEC)
    assert problems and any(needle in p for p in problems)


def test_non_array_is_refused() -> None:
    not_array: Any = [0.0] * 64  # what a caller without types may hand over
    assert "not a numpy array" in d.validity_problems(not_array, SPEC)[0]


def test_mahalanobis_matches_direct_formula_and_shrinkage_keeps_it_finite() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    st = d.InputStats.fit(a, shrinkage=0.0)
    cov = np.cov(a, rowvar=False, bias=True)
    x = rng.normal(size=(3, 5))
    xc = x - a.mean(axis=0)
    want = np.sqrt(np.einsum("ij,jk,ik->i", xc, np.linalg.inv(cov), xc))
    np.testing.assert_allclose(st.mahalanobis(x), want, rtol=1e-4)
    # Fewer samples than features, and a constant feature: the raw covariance is singular.
    few = rng.normal(size=(10, 40))
    few[:, 3] = 1.0
    st2 = d.InputStats.fit(few)
    assert 0.0 < st2.shrinkage <= 1.0
    assert np.isfinite(st2.mahalanobis(rng.normal(size=(4, 40)))).all()
    assert np.isfinite(st2.zmax(rng.normal(size=(4, 40)))).all()


def test_ledoit_wolf_matches_sklearn() -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage

    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))
    st = d.InputStats.fit(a)
    assert st.shrinkage == pytest.approx(ledoit_wolf_shrinkage(a), rel=1e-6)


def test_far_points_score_higher() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8))
    st = d.InputStats.fit(a)
    near, far = np.zeros((1, 8)), np.full((1, 8), 4.0)
    assert st.mahalanobis(far)[0] > 3 * st.mahalanobis(near)[0] + 5
    assert st.zmax(far)[0] > 3.5


def test_confidence_scores() -> None:
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(d.msp_score(p), [0.0, 0.75])
    np.testing.assert_allclose(d.entropy_score(p), [0.0, np.log(4)], atol=1e-9)
    logits = np.array([[10.0, 0.0], [0.1, 0.0]])
    e = d.energy_score(logits)
    assert e[0] < e[1]  # confident input has lower energy
    np.testing.assert_allclose(e[0], -np.log(np.exp(10.0) + 1.0))
    np.testing.assert_allclose(d.softmax(logits).sum(axis=1), 1.0)


def test_energy_of_log_probs_is_constant() -> None:
    """Why energy needs the pre-softmax logits: log-probs lose the per-input constant."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 5, size=(20, 10))
    e_from_probs = d.energy_score(d.log_probs(d.softmax(z)))
    np.testing.assert_allclose(e_from_probs, 0.0, atol=1e-6)
    assert d.energy_score(z).std() > 0.5


def test_squeezers() -> None:
    x = np.array([[0.0, 0.1, 0.49, 0.51, 0.9, 1.0]])
    np.testing.assert_allclose(d.squeeze_bits(x, 1, 0.0, 1.0), [[0, 0, 0, 1, 1, 1]])
    img = np.zeros((1, 9))
    img[0, 4] = 1.0  # a single hot pixel in a 3x3 image is removed by 2x2 median smoothing
    sm = d.squeeze_median(img, (3, 3, 1))
    assert sm.max() <= 0.5 and sm.shape == (1, 9)
    flat = np.ones((1, 9))
    np.testing.assert_allclose(d.squeeze_median(flat, (3, 3, 1)), flat)
    p = np.array([[1.0, 0.0]])
    assert d.squeeze_distance(p, [np.array([[0.0, 1.0]]), p])[0] == pytest.approx(2.0)


def test_wide_inputs_keep_a_diagonal_precision() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=(50, 300)) * np.linspace(0.5, 2.0, 300)
    st = d.InputStats.fit(a)
    assert st.precision.shape == (1, 300)
    x = rng.normal(size=(2, 300))
    want = np.sqrt((((x - st.mean) / st.scale) ** 2).sum(axis=1))
    np.testing.assert_allclose(st.mahalanobis(x), want)
