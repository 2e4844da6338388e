"""Session fixtures: the reference models, built once per test session by project code.

Other test modules reuse ``examples_dir``, ``digits_mlp_bytes`` and ``digits_cnn_bytes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from guard_helpers import D, FakeInterp, K, sample_clean

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


# --- the inference guard (helpers in guard/guard_helpers.py) ---------------------------------


@pytest.fixture(scope="session")
def centers() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(0, 3, size=(K, D))


@pytest.fixture
def fake_interp(centers: np.ndarray) -> FakeInterp:
    w = centers.T * 0.8
    b = -0.4 * (centers**2).sum(axis=1)
    return FakeInterp(w, b)


@pytest.fixture(scope="session")
def clean(centers: np.ndarray) -> np.ndarray:
    return sample_clean(centers, 600, seed=2)


@pytest.fixture(scope="session")
def clean_test(centers: np.ndarray) -> np.ndarray:
    return sample_clean(centers, 2000, seed=3)


@pytest.fixture(scope="session")
def guard_models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Folder with the reference .tflite models (the shared ``examples_dir`` when present)."""
    try:
        return request.getfixturevalue("examples_dir")
    except pytest.FixtureLookupError:
        from edgeward.models.refmodels import write_examples

        out = tmp_path_factory.mktemp("guard-models")
        write_examples(out)
        return out
