"""The combination rule: weights fitted on calibration data only, kept only where they help."""

from __future__ import annotations

import numpy as np
import pytest
from guard_helpers import FAKE_SHA, FakeInterp

from edgeward.core import cbor
from edgeward.core.errors import MalformedInputError
from edgeward.core.limits import Limits
from edgeward.models.guard import GuardedInterpreter, ModelIO, calibrate
from edgeward.models.guard.combine import (
    choose_rule,
    combine_max,
    combine_weighted,
    fit_weights,
    proxy_outliers,
    weighted_one,
)
from edgeward.models.guard.profile import decode_profile, encode_profile
from edgeward.models.guard.stats import TailModel


def _surprises(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    """Three noisy detectors that see nothing, three ('weak') that each see a small shift."""
    s = {f"noise{i}": rng.exponential(0.4, n) for i in range(3)}
    for i in range(3):
        s[f"weak{i}"] = rng.exponential(0.4, n) + shift
    return s


def test_fit_weights_favours_the_informative_detectors() -> None:
    rng = np.random.default_rng(0)
    w = fit_weights(_surprises(rng, 400, 0.0), _surprises(rng, 400, 1.0))
    assert max(w[f"weak{i}"] for i in range(3)) == 1.0
    assert min(w[f"weak{i}"] for i in range(3)) > 0.5
    assert all(w.get(f"noise{i}", 0.0) < 0.3 for i in range(3))
    assert all(v >= 0 for v in w.values())


def test_weighted_rule_replaces_max_where_it_detects_more() -> None:
    """A weak shift three detectors share: their sum sees it, their maximum barely does."""
    rng = np.random.default_rng(1)
    clean, proxy = _surprises(rng, 400, 0.0), _surprises(rng, 400, 0.6)
    weights, dets = choose_rule(clean, proxy, 0.05, rng)
    assert weights is not None and dets["weighted"] > dets["max"]


def test_max_is_kept_where_weighting_does_not_help() -> None:
    """Each outlier jumps in one detector, a different one each time: the maximum sees every
    jump, a weighted sum dilutes it with the other detectors' noise."""
    rng = np.random.default_rng(2)
    clean = {f"d{i}": rng.exponential(0.4, 400) for i in range(5)}
    proxy = {f"d{i}": rng.exponential(0.4, 400) for i in range(5)}
    which = rng.integers(0, 5, size=400)
    for i in range(5):
        proxy[f"d{i}"] = proxy[f"d{i}"] + 2.5 * (which == i)
    weights, dets = choose_rule(clean, proxy, 0.05, rng)
    assert weights is None and dets["max"] > 0.9 and dets["weighted"] < dets["max"]


def test_per_invoke_weighted_score_equals_the_batch_score() -> None:
    rng = np.random.default_rng(3)
    raw = {k: rng.normal(size=300) for k in ("a", "b", "c")}
    tails = {k: TailModel.fit(v) for k, v in raw.items()}
    weights = {"a": 1.0, "b": 0.25}
    one = weighted_one(tails, weights)
    sur = {k: tails[k].surprise(v[:20]) for k, v in raw.items()}
    batch = combine_weighted(sur, weights)
    for i in range(20):
        assert one({k: float(v[i]) for k, v in raw.items()}) == pytest.approx(batch[i])
    # A detector that did not run (sampled) can only lower the score: never more flags.
    assert one({"a": 5.0}) <= one({"a": 5.0, "b": 5.0})
    assert (combine_max(sur) >= 0).all()


def test_proxy_outliers_mix_inputs_of_different_classes_only() -> None:
    rng = np.random.default_rng(4)
    x = np.r_[np.zeros((10, 8)), np.ones((10, 8))]
    y = np.r_[np.zeros(10), np.ones(10)]
    p = proxy_outliers(x, y, rng, 40)
    assert p.shape == (40, 8)
    assert not any((r == 0).all() or (r == 1).all() for r in p)  # never a copy of one class
    assert proxy_outliers(x, np.zeros(20), rng, 5).shape == (0, 8)  # one class: no proxies


def test_weights_roundtrip_and_drive_the_guard(centers, clean) -> None:
    import dataclasses

    interp = FakeInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1))
    io = ModelIO(interp, logits_index=2)
    p = calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,), combination="max")
    assert p.weights is None
    pw = dataclasses.replace(p, weights={"mahalanobis": 1.0, "zmax": 0.5})
    back = decode_profile(encode_profile(pw))
    assert back.weights == {"mahalanobis": 1.0, "zmax": 0.5}
    assert decode_profile(encode_profile(p)).weights is None
    g = GuardedInterpreter(interp, back)
    scores = {k: float(np.quantile(p.tails[k].ref, 0.9))
              for k in ("mahalanobis", "zmax", "energy")}
    sur = {k: p.tails[k].surprise1(v) for k, v in scores.items()}
    want = max(sur["mahalanobis"] + 0.5 * sur["zmax"], *sur.values())
    assert want > max(sur.values())  # here the sum decides
    assert g._combined(scores) == pytest.approx(want)
    huge = dict(scores, energy=float(p.tails["energy"].ref[-1]) + 50.0)  # only energy sees it
    assert g._combined(huge) == pytest.approx(p.tails["energy"].surprise1(huge["energy"]))
    assert g._combined(huge) > sur["mahalanobis"] + 0.5 * sur["zmax"]  # the max: energy
    with pytest.raises(ValueError, match="combination"):
        calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,), combination="sum")


@pytest.mark.parametrize(
    "weights",
    [{"msp": -1.0}, {"nope": 1.0}, {"msp": 0.0}, {}, {"msp": float("inf")}, {"msp": True}, [1]],
)
def test_attack_hostile_weights_are_refused(centers, clean, weights: object) -> None:
    interp = FakeInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1))
    io = ModelIO(interp, logits_index=2)
    p = calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,), combination="max")
    m = cbor.loads(encode_profile(p), limits=Limits(max_cbor_bytes=4 << 20))
    m["weights"] = weights
    with pytest.raises(MalformedInputError, match="weight"):
        decode_profile(cbor.dumps(m))
