"""Helpers for the guard tests: a numpy stand-in for a TFLite interpreter and synthetic data.

The fake interpreter has the LiteRT interface the guard uses (``get_input_details``,
``set_tensor``, ``invoke``, ``get_tensor``), so the guard's logic is tested without a runtime;
the real-model tests use the session fixtures of tests/models/conftest.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

D, K = 16, 4


class FakeInterp:
    """A linear classifier y = softmax(x W + b) with batch-1 tensors; counts invokes."""

    def __init__(self, w: np.ndarray, b: np.ndarray, *, softmax: bool = True,
                 shape: tuple[int, ...] = (1, D)) -> None:
        self.w, self.b, self.softmax, self.shape = w, b, softmax, shape
        self.tensors: dict[int, np.ndarray] = {}
        self.invokes = 0

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"index": 0, "shape": np.array(self.shape), "dtype": np.float32,
                 "quantization": (0.0, 0)}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"index": 1, "shape": np.array([1, K]), "dtype": np.float32,
                 "quantization": (0.0, 0)}]

    def _get_ops_details(self) -> list[dict[str, Any]]:
        return [{"op_name": "FULLY_CONNECTED", "inputs": [0], "outputs": [2]},
                {"op_name": "SOFTMAX", "inputs": [2], "outputs": [1]}]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        assert value.shape == self.shape and value.dtype == np.float32
        self.tensors[index] = value.copy()

    def invoke(self) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow, like a runtime
            self._invoke()

    def _invoke(self) -> None:
        self.invokes += 1
        x = self.tensors[0].reshape(1, -1).astype(np.float64)
        z = x @ self.w + self.b
        self.tensors[2] = z.astype(np.float32)
        if self.softmax:
            e = np.exp(z - z.max())
            self.tensors[1] = (e / e.sum()).astype(np.float32)
        else:
            self.tensors[1] = z.astype(np.float32)

    def get_tensor(self, index: int) -> np.ndarray:
        return self.tensors[index].copy()


def sample_clean(centers: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, D))).astype(np.float32)


FAKE_SHA = hashlib.sha256(b"fake model").digest()


class FeatureInterp(FakeInterp):
    """FakeInterp with a penultimate layer h = relu(x A) named as a second output."""

    def __init__(self, w: np.ndarray, b: np.ndarray, a: np.ndarray, *,
                 name: str = "dense_0/relu") -> None:
        super().__init__(w, b)
        self.a, self.name = a, name

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"index": 1, "name": "probabilities", "shape": np.array([1, K]),
                 "dtype": np.float32, "quantization": (0.0, 0)},
                {"index": 3, "name": self.name, "shape": np.array([1, self.a.shape[1]]),
                 "dtype": np.float32, "quantization": (0.0, 0)}]

    def get_tensor_details(self) -> list[dict[str, Any]]:
        return [{"index": 0, "name": "input", "shape": np.array(self.shape), "dtype": np.float32},
                {"index": 2, "name": "logits", "shape": np.array([1, K]), "dtype": np.float32},
                *self.get_output_details()]

    def _invoke(self) -> None:
        super()._invoke()
        x = self.tensors[0].reshape(1, -1).astype(np.float64)
        self.tensors[3] = np.maximum(x @ self.a, 0).astype(np.float32)
