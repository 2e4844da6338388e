"""The reference models: data split, deterministic training, export, benchmark-sized models.

Accuracy in a real runtime is tested in test_runtime.py; here the numpy side and the files.
"""

from __future__ import annotations

import re
import sys
import tracemalloc

import numpy as np
import pytest

from edgeward.core.errors import DeviceError
from edgeward.models.refmodels import (
    EXAMPLE_NAMES,
    cnn_tflite,
    dense_model_of_size,
    load_digits_split,
    mlp_int8_tflite,
    mlp_tflite,
    train_cnn,
    train_mlp,
    write_dense_model,
    write_examples,
)
from edgeward.models.tflite import tensor_data, validate


def test_digits_split_is_first_1200_then_the_rest(digits_split):
    x_train, y_train, x_test, y_test = digits_split
    assert x_train.shape == (1200, 64) and x_test.shape == (597, 64)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    from sklearn.datasets import load_digits

    d = load_digits()
    np.testing.assert_array_equal(x_train * 16.0, d.data[:1200])
    np.testing.assert_array_equal(y_test, d.target[1200:])


def test_missing_scikit_learn_is_a_device_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DeviceError, match="pip install scikit-learn") as info:
        load_digits_split()
    assert info.value.exit_code == 3


def test_training_is_deterministic(digits_split):
    x, y, _, _ = digits_split
    a = mlp_tflite(train_mlp(x, y, hidden=(16,), epochs=3, seed=3))
    b = mlp_tflite(train_mlp(x, y, hidden=(16,), epochs=3, seed=3))
    c = mlp_tflite(train_mlp(x, y, hidden=(16,), epochs=3, seed=4))
    assert a == b != c


def test_variant_on_classes_0_to_7(digits_split):
    """What the guard engineer builds: a model that never saw 8s and 9s."""
    x, y, _, _ = digits_split
    keep = y < 8
    weights = train_mlp(x[keep], y[keep], n_classes=8, epochs=5)
    summary = validate(mlp_tflite(weights))
    assert summary.outputs[0].shape == (1, 8)
    cnn = train_cnn(x[keep], y[keep], n_classes=8, epochs=1)
    assert validate(cnn_tflite(cnn)).outputs[0].shape == (1, 8)


def test_exported_weights_are_the_trained_weights(digits_split):
    x, y, _, _ = digits_split
    weights = train_mlp(x, y, hidden=(8,), epochs=2)
    buf = mlp_tflite(weights)
    summary = validate(buf)
    index = {t.name: t.index for t in summary.tensors}
    np.testing.assert_array_equal(tensor_data(buf, summary, index["dense_0/weights"]), weights.layers[0][0])
    np.testing.assert_array_equal(tensor_data(buf, summary, index["dense_1/bias"]), weights.layers[1][1])


def test_int8_model_is_int8_inside_with_float_io(digits_split):
    x, y, _, _ = digits_split
    weights = train_mlp(x, y, hidden=(16,), epochs=2)
    summary = validate(mlp_int8_tflite(weights, x))
    assert summary.inputs[0].dtype == "FLOAT32" and summary.outputs[0].dtype == "FLOAT32"
    by_name = {t.name: t for t in summary.tensors}
    assert by_name["dense_0/weights"].dtype == "INT8"
    wq, pq = by_name["dense_0/weights"].quantization, by_name["probabilities_int8"].quantization
    assert wq is not None and pq is not None
    assert wq.zero_point == (0,)
    assert by_name["dense_0/bias"].dtype == "INT32"
    assert pq.per_tensor() == (1 / 256, -128)
    io = validate(mlp_int8_tflite(weights, x, int8_io=True))
    assert io.inputs[0].dtype == "INT8" and io.inputs[0].quantization is not None


def test_write_examples_writes_three_valid_models(examples_dir, tmp_path):
    assert sorted(p.name for p in examples_dir.iterdir()) == sorted(EXAMPLE_NAMES)
    for name in EXAMPLE_NAMES:
        assert validate((examples_dir / name).read_bytes()).findings == ()


def test_write_examples_reports_progress_and_is_reproducible(examples_dir, tmp_path):
    messages: list[str] = []
    paths = write_examples(tmp_path / "new", progress=messages.append)
    assert [p.name for p in paths] == list(EXAMPLE_NAMES)
    accuracy = {
        m.group(1): float(m.group(2)) / 100
        for m in (re.match(r"digits (MLP|CNN): ([\d.]+)% on the 597 held-back", msg) for msg in messages)
        if m
    }
    assert accuracy["MLP"] >= 0.93 and accuracy["CNN"] >= 0.95, accuracy  # numpy forward pass
    for p in paths:
        assert p.read_bytes() == (examples_dir / p.name).read_bytes()
    assert not list((tmp_path / "new").glob("*.tmp"))


@pytest.mark.parametrize("nbytes", [3000, 1 << 20, 5 << 20])
def test_dense_model_of_size(nbytes):
    buf = dense_model_of_size(nbytes)
    assert abs(len(buf) - nbytes) <= max(0.02 * nbytes, 200)
    summary = validate(buf)
    assert summary.operators == ("FULLY_CONNECTED",) and summary.findings == ()


def test_streamed_dense_model_equals_in_memory_and_stays_small(tmp_path):
    nbytes = 48 << 20
    tracemalloc.start()
    try:
        size = write_dense_model(tmp_path / "dense.tflite", nbytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"streaming used {peak} bytes"
    data = (tmp_path / "dense.tflite").read_bytes()
    assert len(data) == size
    assert data == dense_model_of_size(nbytes)
    validate(data)
