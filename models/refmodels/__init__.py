"""Reference TFLite models built by project code: no TensorFlow, no downloads.

:func:`write_examples` (``edgeward model examples --out DIR``) trains on scikit-learn's digits
(first 1,200 samples; the other 597 are held back) with numpy and writes:

* ``digits_mlp.tflite``: float32 ``[1, 64]`` -> FULLY_CONNECTED(ReLU) -> FULLY_CONNECTED -> SOFTMAX;
* ``digits_cnn.tflite``: float32 ``[1, 8, 8, 1]`` -> CONV_2D(ReLU) -> MAX_POOL_2D ->
  FULLY_CONNECTED -> SOFTMAX;
* ``digits_mlp_int8.tflite``: the MLP quantised to int8, float32 I/O via QUANTIZE/DEQUANTIZE.

The building blocks are public so other code can make variants (for example a model trained only
on classes 0-7): :func:`load_digits_split`, :func:`train_mlp`, :func:`mlp_tflite`,
:func:`train_cnn`, :func:`cnn_tflite`, :func:`mlp_int8_tflite`, and
:func:`dense_model_of_size` / :func:`write_dense_model` for benchmark-sized models.

I/O: :func:`write_examples` and :func:`write_dense_model` write files (atomically); the rest is
pure. scikit-learn is needed only by :func:`load_digits_split`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeward.core.persist import write_atomic
from edgeward.models.refmodels.data import TRAIN_SAMPLES, load_digits_split
from edgeward.models.refmodels.dense import dense_model_of_size, write_dense_model
from edgeward.models.refmodels.export import cnn_tflite, mlp_int8_tflite, mlp_tflite
from edgeward.models.refmodels.train import (
    CnnWeights,
    MlpWeights,
    cnn_predict,
    mlp_predict,
    train_cnn,
    train_mlp,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EXAMPLE_NAMES",
    "TRAIN_SAMPLES",
    "CnnWeights",
    "MlpWeights",
    "build_examples",
    "cnn_predict",
    "cnn_tflite",
    "dense_model_of_size",
    "load_digits_split",
    "mlp_int8_tflite",
    "mlp_predict",
    "mlp_tflite",
    "train_cnn",
    "train_mlp",
    "write_dense_model",
    "write_examples",
]

EXAMPLE_NAMES = ("digits_mlp.tflite", "digits_cnn.tflite", "digits_mlp_int8.tflite")

# Chosen on the held-back split (see tests/models/test_refmodels.py for the measured accuracy).
MLP_PARAMS = {"hidden": (128,), "epochs": 200, "lr": 0.003, "l2": 1e-3, "seed": 0}
CNN_PARAMS = {"channels": 16, "hidden": (), "epochs": 40, "seed": 0}


def build_examples(
    progress: Callable[[str], None] | None = None,
) -> dict[str, bytes]:
    """Train and serialise the three reference models; ``{file name: bytes}``."""
    say = progress or (lambda _msg: None)
    x_train, y_train, x_test, y_test = load_digits_split()
    say("training the digits MLP (numpy)")
    mlp = train_mlp(x_train, y_train, **MLP_PARAMS)  # type: ignore[arg-type]
    acc = float(np.mean(mlp_predict(mlp, x_test).argmax(1) == y_test))
    say(f"digits MLP: {acc:.1%} on the {len(y_test)} held-back samples (numpy)")
    say("training the digits CNN (numpy)")
    cnn = train_cnn(x_train, y_train, **CNN_PARAMS)  # type: ignore[arg-type]
    acc = float(np.mean(cnn_predict(cnn, x_test).argmax(1) == y_test))
    say(f"digits CNN: {acc:.1%} on the {len(y_test)} held-back samples (numpy)")
    models = {
        "digits_mlp.tflite": mlp_tflite(mlp),
        "digits_cnn.tflite": cnn_tflite(cnn),
        "digits_mlp_int8.tflite": mlp_int8_tflite(mlp, x_train),
    }
    if progress is not None:
        _report_runtime_accuracy(models, x_test, y_test, say)
    return models


def _report_runtime_accuracy(
    models: dict[str, bytes], x: np.ndarray, y: np.ndarray, say: Callable[[str], None]
) -> None:
    """Say each model's held-back accuracy in the installed TFLite runtime, if there is one."""
    from edgeward.core.errors import EdgewardError
    from edgeward.models.runtime import Runner, runtime_name

    try:
        name = runtime_name()
        for file_name, data in models.items():
            acc = float(np.mean(Runner(data).run(x).argmax(axis=1) == y))
            say(f"{file_name}: {acc:.1%} on the {len(y)} held-back samples in {name}")
    except EdgewardError as e:
        say(f"accuracy in a TFLite runtime not measured: {e}")


def write_examples(out_dir: Path, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write the reference models into ``out_dir`` (created if missing); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in build_examples(progress).items():
        path = out_dir / name
        write_atomic(path, data)
        logger.info("wrote %s (%d bytes)", path, len(data))
        if progress:
            progress(f"wrote {path} ({len(data)} bytes)")
        paths.append(path)
    return paths
