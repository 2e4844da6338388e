"""Smoke test of the evaluation's building blocks (the full run is benchmarks/eval_guard.py)."""

from __future__ import annotations

from pathlib import Path

import eval_guard as ev  # benchmarks/ is on pytest's pythonpath
import numpy as np
import pytest

from edgeward.models.guard import ModelIO, softmax_logits_index
from edgeward.models.refmodels import load_digits_split


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = load_digits_split()
    return x[:40], y[:40]


@pytest.mark.parametrize("name", ["digits_mlp.tflite", "digits_cnn.tflite"])
def test_numpy_net_matches_interpreter_and_gradient_is_right(
    guard_models: Path, digits: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    content = (guard_models / name).read_bytes()
    net = ev.NumpyNet(content)
    it = ev.interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    x, y = digits
    ref = io.predict(x.reshape(len(x), *io.in_shape[1:]), "probs").logits
    assert ref is not None
    np.testing.assert_allclose(net.logits(x), ref, atol=1e-4)
    # Central finite differences on a few pixels of one sample.
    x0, y0 = x[:1].astype(np.float64), y[:1]
    g = net.grad(x0, y0)

    def loss(v: np.ndarray) -> float:
        z = net.logits(v)[0]
        return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[y0[0]])

    for i in (20, 27, 36, 44):
        e = np.zeros_like(x0)
        e[0, i] = 1e-4
        num = (loss(x0 + e) - loss(x0 - e)) / 2e-4
        assert g[0, i] == pytest.approx(num, rel=1e-2, abs=1e-4)
    adv = ev.fgsm(net, x, y, 0.2)
    assert adv.min() >= 0 and adv.max() <= 1 and np.abs(adv - x).max() <= 0.2 + 1e-6
    assert (net.logits(adv).argmax(1) != y).mean() > (net.logits(x).argmax(1) != y).mean()


def test_shifts_and_metrics(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = digits
    sets = ev.shifts(x)
    assert len(sets) >= 10
    for v in sets.values():
        assert v.shape == x.shape and v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1
    clean, shifted = np.arange(100.0), np.arange(100.0) + 1000
    m = ev.metrics(clean, shifted, threshold=95.0)
    assert m == {"auroc": 1.0, "fpr95": 0.0, "det": 1.0, "tpr05": 1.0}
    m = ev.metrics(clean, clean.copy(), threshold=95.0)
    assert m["auroc"] == pytest.approx(0.5) and m["fpr95"] > 0.9
