"""Feature-space detectors (Mahalanobis, deep kNN, ReAct), their profile binding and hostile profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from guard_helpers import FAKE_SHA, D, FeatureInterp, K, sample_clean

from edgeward.core import cbor
from edgeward.core.errors import MalformedInputError
from edgeward.core.keys import generate
from edgeward.models.guard import GuardedInterpreter, ModelIO, calibrate
from edgeward.models.guard.features import (
    KNN,
    MAHALANOBIS,
    MAX_BANK_VALUES,
    FeatureModel,
    decode_features,
    encode_features,
)
from edgeward.models.guard.featuretap import FeatureTap, run_features
from edgeward.models.guard.profile import decode_profile, encode_profile, open_profile, sign_profile

H = 8  # penultimate features of the fake model


def _classes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tight, well separated classes of 6-d features; (features, labels, means)."""
    rng = np.random.default_rng(seed)
    means = np.array([[5.0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0], [0, 0, 5.0, 0, 0, 0]])
    y = rng.integers(0, 3, size=n)
    return means[y] + rng.normal(0, 0.5, size=(n, 6)), y, means


def test_mahalanobis_is_class_conditional() -> None:
    f, y, means = _classes(600)
    m = FeatureModel.fit(f, y, tensor="t", react_percentile=None)
    inside = m.scores(means + 0.1)[MAHALANOBIS]
    # The mean of all classes is close to the data's global mean, so a single-Gaussian distance
    # would call it typical; it is far from every class mean, which the detector must see.
    between = m.scores(means.mean(axis=0, keepdims=True))[MAHALANOBIS]
    assert between[0] > 10 * inside.max()
    # The shared covariance whitens: 1 unit along a tight axis counts as 2 sigma, ~4 squared.
    step = means[:1] + np.array([[0, 0, 0, 1.0, 0, 0]])
    assert m.scores(step)[MAHALANOBIS][0] == pytest.approx(4, rel=0.3)


def test_knn_uses_normalised_features() -> None:
    f, y, means = _classes(600)
    m = FeatureModel.fit(f, y, tensor="t", react_percentile=None, k=5)
    s = m.scores(np.r_[means[:1], 3 * means[:1], -means[:1]])[KNN]
    assert s[0] == pytest.approx(s[1], abs=1e-5)  # the same direction, any length
    assert s[2] > 1.2 > 0.3 > s[0]  # the opposite direction: far from every neighbour


def test_react_clips_before_scoring() -> None:
    f, y, _ = _classes(600)
    f = np.maximum(f, 0)
    m = FeatureModel.fit(f, y, tensor="t", react_percentile=90.0)
    assert m.clip == pytest.approx(np.percentile(f, 90))
    a = np.array([[100.0, 0, 0, 0, 0, 0]])
    b = np.array([[1000.0, 0, 0, 0, 0, 0]])
    sa, sb = m.scores(a), m.scores(b)
    assert sa[MAHALANOBIS][0] == sb[MAHALANOBIS][0]  # both clipped to the same activation
    off = FeatureModel.fit(f, y, tensor="t", react_percentile=None)
    assert math.isinf(off.clip) and off.scores(b)[MAHALANOBIS][0] > off.scores(a)[MAHALANOBIS][0]


def test_nan_features_score_as_extreme_not_a_crash() -> None:
    f, y, _ = _classes(100)
    m = FeatureModel.fit(f, y, tensor="t")
    s = m.scores(np.full((1, 6), np.nan))
    assert np.isinf(s[MAHALANOBIS][0]) and np.isinf(s[KNN][0])


def test_feature_model_roundtrip_is_exact() -> None:
    f, y, _ = _classes(300)
    m = FeatureModel.fit(f, y, tensor="dense_0/relu", k=3)
    blob = cbor.dumps(encode_features(m))
    back = decode_features(cbor.loads(blob))
    assert cbor.dumps(encode_features(back)) == blob
    np.testing.assert_array_equal(back.scores(f[:20])[KNN], m.scores(f[:20])[KNN])


# --- hostile profiles ----------------------------------------------------------------------


def _encoded() -> dict:
    f, y, _ = _classes(300)
    return encode_features(FeatureModel.fit(f, y, tensor="t", k=2))


def test_attack_huge_knn_bank_is_refused_before_allocation() -> None:
    m = _encoded()
    m["bank"] = {"shape": [4096, 512], "f4": b"\0" * 16}  # claims 2M values, brings 16 bytes
    m["dim"] = 512
    with pytest.raises(MalformedInputError, match=r"exceeds|bank|features"):
        decode_features(m)
    m = _encoded()
    m["bank"]["shape"] = [MAX_BANK_VALUES, 6]
    with pytest.raises(MalformedInputError, match="exceeds"):
        decode_features(m)


def test_attack_huge_covariance_is_refused() -> None:
    m = _encoded()
    m["dim"] = 1024
    m["whiten"] = {"shape": [1024, 1024], "f8": b""}
    with pytest.raises(MalformedInputError, match="covariance"):
        decode_features(m)


@pytest.mark.parametrize(
    "field,value",
    [
        ("k", 0),
        ("k", 10_000),
        ("k", True),
        ("rate", 1.5),
        ("clip", float("nan")),
        ("tensor", ""),
        ("tensor", "x" * 10_000),
        ("dim", 7),  # arrays have 6 features
        ("means", {"shape": [3, 6], "f8": b"\0" * 8}),  # bytes do not match the shape
        ("whiten", {"shape": [6, 6], "f8": np.full(36, np.inf).tobytes()}),
        ("bank", [1, 2, 3]),
    ],
)
def test_attack_malformed_feature_fields(field: str, value: object) -> None:
    m = _encoded()
    m[field] = value
    with pytest.raises(MalformedInputError):
        decode_features(m)


def test_attack_k_beyond_bank() -> None:
    m = _encoded()
    m["bank"] = {"shape": [1, 6], "f4": np.ones(6, dtype="<f4").tobytes()}
    with pytest.raises(MalformedInputError, match="k exceeds"):
        decode_features(m)


# --- binding to the model's tensor ---------------------------------------------------------


@pytest.fixture(scope="module")
def feat_interp(centers) -> FeatureInterp:
    a = np.random.default_rng(5).normal(0, 1, size=(D, H))
    return FeatureInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1), a)


@pytest.fixture(scope="module")
def feat_profile(feat_interp: FeatureInterp, clean: np.ndarray):
    io = ModelIO(feat_interp, logits_index=2)
    tap = FeatureTap(feat_interp, "dense_0/relu", H)
    return calibrate(
        clean, io.predict, model_sha256=FAKE_SHA, input_shape=(D,),
        feature_fn=lambda r: run_features(io, tap, r), feature_tensor="dense_0/relu",
        feature_rate=0.25,
    )


def test_signed_profile_carries_the_feature_detectors(feat_profile, feat_interp) -> None:
    key = generate("ed25519")
    p = open_profile(sign_profile(feat_profile, key), model_sha256=FAKE_SHA, trust=key.public)
    assert p.features is not None and p.features.tensor == "dense_0/relu" and p.features.dim == H
    assert {MAHALANOBIS, KNN} <= set(p.tails)
    assert p.invoke_s > 0 and p.features.cost_s > 0
    assert p.features.mean_cost_s == pytest.approx(0.25 * p.features.cost_s)
    GuardedInterpreter(feat_interp, p)  # binds: the tensor exists with the recorded size


def test_attack_profile_names_another_tensor(feat_profile, feat_interp) -> None:
    m = cbor.loads(encode_profile(feat_profile), limits=_big())
    m["features"]["tensor"] = "conv/relu"  # a layer this model does not have
    p = decode_profile(cbor.dumps(m))
    with pytest.raises(MalformedInputError, match="does not have"):
        GuardedInterpreter(feat_interp, p)


def test_attack_profile_names_a_tensor_of_another_size(feat_profile, feat_interp) -> None:
    m = cbor.loads(encode_profile(feat_profile), limits=_big())
    m["features"]["tensor"] = "logits"  # exists (preserved), but has K values, not H
    p = decode_profile(cbor.dumps(m))
    with pytest.raises(MalformedInputError, match="expects 8"):
        GuardedInterpreter(feat_interp, p)


def test_attack_features_of_the_wrong_shape_at_scoring(feat_profile) -> None:
    assert feat_profile.features is not None
    with pytest.raises(MalformedInputError, match="expects 8"):
        feat_profile.features.scores(np.zeros((2, H + 1)))


def test_profile_with_features_but_no_tails_is_refused(feat_profile) -> None:
    m = cbor.loads(encode_profile(feat_profile), limits=_big())
    for k in (MAHALANOBIS, KNN):
        del m["tails"][k], m["thresholds"][k]
    with pytest.raises(MalformedInputError, match="no tails"):
        decode_profile(cbor.dumps(m))


def _big():
    from edgeward.core.limits import Limits

    return Limits(max_cbor_bytes=4 << 20)


# --- the sampled hook ----------------------------------------------------------------------


def test_feature_detectors_run_at_the_profile_rate(feat_profile, feat_interp, centers) -> None:
    g = GuardedInterpreter(feat_interp, feat_profile)
    xs = sample_clean(centers, 100, seed=9)
    with_features = [KNN in g.invoke(x).verdict.scores for x in xs]
    assert sum(with_features) == 25 and g.features is not None and g.features.scored == 25
    assert with_features[3] and not with_features[0]  # every fourth invoke, deterministic


def test_sampled_features_read_the_input_not_a_squeezed_copy(feat_profile, feat_interp) -> None:
    """Squeezing runs extra inferences that overwrite the feature tensor: features come first."""
    g = GuardedInterpreter(feat_interp, feat_profile, squeeze_rate=1.0)
    g.features.rate = 1.0  # type: ignore[union-attr]
    x = (np.random.default_rng(3).normal(0, 1, size=D) * 2.7).astype(np.float32)
    got = g.invoke(x).verdict.scores
    want = feat_profile.features.scores(np.maximum(x.astype(np.float64) @ feat_interp.a, 0))
    assert got[KNN] == pytest.approx(float(want[KNN][0]), rel=1e-5)


def test_feature_detectors_catch_a_shift_the_output_does_not(feat_profile, feat_interp,
                                                             centers) -> None:
    """Inputs moved along directions the classifier ignores but the features see."""
    g = GuardedInterpreter(feat_interp, feat_profile)
    rng = np.random.default_rng(4)
    clean = sample_clean(centers, 200, seed=11)
    # Directions orthogonal to the classifier's weights: outputs unchanged, features moved.
    w = feat_interp.w
    q, _ = np.linalg.qr(np.c_[w, rng.normal(size=(D, D - K))])
    null = q[:, K:]
    shifted = (clean + 6.0 * rng.normal(size=(200, D - K)) @ null.T).astype(np.float32)
    c = [v.scores for v in g.score_batch(clean)]
    s = [v.scores for v in g.score_batch(shifted)]
    t = feat_profile.thresholds[KNN]
    assert np.mean([v[KNN] > t for v in s]) > 0.8 > 0.1 > np.mean([v[KNN] > t for v in c])
    tm = feat_profile.thresholds["msp"]
    assert np.mean([v["msp"] > tm for v in s]) < 0.5


def test_attack_feature_tensor_resized_under_the_guard(feat_profile, centers) -> None:
    """The tensor changes size after the guard was built: anomalous verdicts, never a crash."""
    a = np.random.default_rng(5).normal(0, 1, size=(D, H))
    interp = FeatureInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1), a)
    g = GuardedInterpreter(interp, feat_profile, squeeze_rate=0.0)
    assert g.features is not None
    g.features.rate = 1.0
    interp.a = np.ones((D, H + 3))  # now H + 3 features per input
    v = g.invoke(sample_clean(centers, 1, seed=12)[0]).verdict
    assert v.flagged and v.severity == "critical" and math.isinf(v.scores[KNN])
    assert g.features.broken


# --- the reference models in LiteRT --------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn", "mlp_int8"])
def test_reference_models_expose_their_penultimate_layer(digits_split, kind: str) -> None:
    """The feature output of a real model in LiteRT: named, sized, and equal to numpy's layer."""
    from edgeward.models import refmodels as rm
    from edgeward.models.runtime import load_interpreter

    x_tr, y_tr, x_te, _ = digits_split
    if kind == "cnn":
        w = rm.train_cnn(x_tr[:300], y_tr[:300], epochs=2)
        content, name, dim = rm.cnn_tflite(w, features=True), "pool", 4 * 4 * 16
    else:
        mlp = rm.train_mlp(x_tr[:300], y_tr[:300], epochs=5)
        content = (rm.mlp_tflite(mlp, features=True) if kind == "mlp"
                   else rm.mlp_int8_tflite(mlp, x_tr, features=True))
        name = "dense_0/relu" if kind == "mlp" else "dense_0/relu_int8"
        dim = 64
    it = load_interpreter(content)  # no preserved tensors: the feature tensor is an output
    assert it.get_output_details()[1]["name"] == name
    tap = FeatureTap(it, name, dim)
    assert tap.is_output
    io = ModelIO(it)
    f = run_features(io, tap, x_te[:5].astype(np.float64))
    assert f.shape == (5, dim) and (f >= 0).all() and f.max() > 0
    if kind != "cnn":
        w0, b0 = mlp.layers[0]
        want = np.maximum(x_te[:5] @ w0.T + b0, 0)
        atol = 1e-4 if kind == "mlp" else 0.1 * float(want.max())  # int8: a few quantisation steps
        np.testing.assert_allclose(f, want, atol=atol)
    with pytest.raises(MalformedInputError, match="expects"):
        FeatureTap(it, name, dim + 1)
    # The default examples keep one output (Runner and the demo take exactly one).
    plain = rm.mlp_tflite(rm.train_mlp(x_tr[:100], y_tr[:100], epochs=1))
    assert len(load_interpreter(plain).get_output_details()) == 1
