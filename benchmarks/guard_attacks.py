"""White-box attacks for the guard evaluation: numpy backprop through a reference model's weights.

:class:`NumpyNet` reads the weights out of the ``.tflite`` bytes themselves (``tensor_data`` on
the validated model), reproduces the forward pass of the refmodels MLP and CNN (checked against
the interpreter by ``tests/models/guard/test_guard_eval_smoke.py``) and gives the gradient of
the cross-entropy with respect to the input, for FGSM (Goodfellow et al. 2015) and L-inf PGD with
a random start (Madry et al. 2018).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeward.models.tflite import tensor_data, validate


class NumpyNet:
    """Forward and input-gradient of a reference model, from the weights in its .tflite bytes."""

    def __init__(self, content: bytes) -> None:
        summary = validate(content)
        w = {t.name: np.asarray(tensor_data(content, summary, t.index), dtype=np.float64)
             for t in summary.tensors if t.data_offset >= 0}
        self.dense = []
        k = 0
        while f"dense_{k}/weights" in w:
            self.dense.append((w[f"dense_{k}/weights"], w[f"dense_{k}/bias"]))
            k += 1
        self.conv = (w["conv/filter"].reshape(len(w["conv/bias"]), 9).T, w["conv/bias"]) \
            if "conv/filter" in w else None

    @staticmethod
    def _patches(x: np.ndarray) -> np.ndarray:
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
        return win.reshape(x.shape[0], 8, 8, 9)

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        n = len(x)
        cache: dict[str, Any] = {}
        h = x.reshape(n, -1).astype(np.float64)
        if self.conv is not None:
            wc, bc = self.conv
            p = self._patches(h.reshape(n, 8, 8))
            pre = p @ wc + bc
            a = np.maximum(pre, 0)
            c = a.shape[-1]
            blocks = a.reshape(n, 4, 2, 4, 2, c)
            pooled = blocks.max(axis=(2, 4))
            cache.update(pre=pre, blocks=blocks, pooled=pooled)
            h = pooled.reshape(n, -1)
        acts = [h]
        for i, (wd, bd) in enumerate(self.dense):
            h = h @ wd.T + bd
            if i < len(self.dense) - 1:
                h = np.maximum(h, 0)
            acts.append(h)
        cache["acts"] = acts
        return h, cache

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[0]

    def grad(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d cross-entropy(y) / d x, shape of ``x``."""
        n = len(x)
        z, cache = self._forward(x)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = p
        g[np.arange(n), y] -= 1.0
        acts = cache["acts"]
        for i in range(len(self.dense) - 1, -1, -1):
            wd, _ = self.dense[i]
            g = g @ wd
            if i > 0:
                g = g * (acts[i] > 0)
        if self.conv is None:
            return g.reshape(x.shape)
        wc, _ = self.conv
        blocks, pooled, pre = cache["blocks"], cache["pooled"], cache["pre"]
        c = pre.shape[-1]
        gp = g.reshape(n, 4, 4, c)
        mask = blocks == pooled[:, :, None, :, None, :]
        mask = mask / mask.sum(axis=(2, 4), keepdims=True)
        ga = (mask * gp[:, :, None, :, None, :]).reshape(n, 8, 8, c) * (pre > 0)
        gpatch = ga @ wc.T  # (n, 8, 8, 9)
        gx = np.zeros((n, 10, 10))
        for k in range(9):
            di, dj = divmod(k, 3)
            gx[:, di:di + 8, dj:dj + 8] += gpatch[..., k]
        return gx[:, 1:9, 1:9].reshape(x.shape)


def fgsm(net: NumpyNet, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    return np.clip(x + eps * np.sign(net.grad(x, y)), 0, 1).astype(np.float32)


def pgd(net: NumpyNet, x: np.ndarray, y: np.ndarray, eps: float, steps: int = 10,
        seed: int = 0, mask: np.ndarray | None = None) -> np.ndarray:
    """L-inf PGD with a random start; ``mask`` (64,) limits it to some pixels (adaptive)."""
    rng = np.random.default_rng(seed)
    alpha = eps / 4
    m = np.ones(x.shape[1:]) if mask is None else mask
    adv = np.clip(x + m * rng.uniform(-eps, eps, size=x.shape), 0, 1)
    for _ in range(steps):
        adv = adv + m * alpha * np.sign(net.grad(adv, y))
        adv = np.clip(np.clip(adv, x - eps, x + eps), 0, 1)
    return adv.astype(np.float32)


def active_pixels(x: np.ndarray, min_std: float = 0.1) -> np.ndarray:
    """Pixels whose clean standard deviation is at least ``min_std`` (a 0/1 mask)."""
    return (x.reshape(len(x), -1).std(axis=0) >= min_std).astype(np.float64)
