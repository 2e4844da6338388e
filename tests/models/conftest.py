"""Session fixtures: the reference models, built once per test session by project code.

Other test modules reuse ``examples_dir``, ``digits_mlp_bytes`` and ``digits_cnn_bytes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeward.models.refmodels import load_digits_split, write_examples


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    write_examples(out)
    return out


@pytest.fixture(scope="session")
def digits_mlp_bytes(examples_dir: Path) -> bytes:
    return (examples_dir / "digits_mlp.tflite").read_bytes()


@pytest.fixture(scope="session")
def digits_cnn_bytes(examples_dir: Path) -> bytes:
    return (examples_dir / "digits_cnn.tflite").read_bytes()


@pytest.fixture(scope="session")
def digits_mlp_int8_bytes(examples_dir: Path) -> bytes:
    return (examples_dir / "digits_mlp_int8.tflite").read_bytes()


@pytest.fixture(scope="session")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return load_digits_split()
