"""Fixtures for the guard tests (helpers in guard_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# The suite runs with --import-mode=importlib: make this folder's helper modules importable.
sys.path.insert(0, str(Path(__file__).parent))

from guard_helpers import D, FakeInterp, K, sample_clean


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
def guard_models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Folder with the reference .tflite models (the shared ``examples_dir`` when present)."""
    try:
        return request.getfixturevalue("examples_dir")
    except pytest.FixtureLookupError:
        from edgeward.models.refmodels import write_examples

        out = tmp_path_factory.mktemp("guard-models")
        write_examples(out)
        return out
