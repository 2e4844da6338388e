"""Small numpy trainers for the reference models: an MLP and a CNN for 8x8 digits.

Weights are kept in TFLite's layouts so export is a plain copy: fully-connected weights are
``[out, in]``, convolution filters ``[out_channels, kh, kw, in_channels]`` over NHWC inputs
(schema.fbs, ``CONV_2D`` and ``FULLY_CONNECTED``). Training is deterministic for a given seed
(numpy ``default_rng``, full-batch order shuffles drawn from it) and takes about a second.

This module does no I/O; it needs numpy only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

Layer = tuple[np.ndarray, np.ndarray]  # (weights [out, in], bias [out]), float32


@dataclass(frozen=True)
class MlpWeights:
    """Fully-connected layers; ReLU after every layer but the last, softmax at the end."""

    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class CnnWeights:
    """3x3 SAME conv + ReLU, 2x2 max-pool, then :class:`MlpWeights`-style dense layers."""

    conv_w: np.ndarray  # [C, 3, 3, 1]
    conv_b: np.ndarray  # [C]
    dense: tuple[Layer, ...]
    image: tuple[int, int] = (8, 8)


class _Adam:
    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mh = m / (1 - b1**self.t)
            vh = v / (1 - b2**self.t)
            p -= self.lr * mh / (np.sqrt(vh) + eps)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _dense_forward(layers: list[Layer], h: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    acts = [h]
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
        acts.append(h)
    return h, acts


def _dense_backward(
    layers: list[Layer], acts: list[np.ndarray], grad: np.ndarray, l2: float
) -> tuple[list[np.ndarray], np.ndarray]:
    grads: list[np.ndarray] = []
    for k in range(len(layers) - 1, -1, -1):
        w, _ = layers[k]
        if k < len(layers) - 1:
            grad = grad * (acts[k + 1] > 0)
        grads[:0] = [grad.T @ acts[k] + l2 * w, grad.sum(axis=0)]
        grad = grad @ w
    return grads, grad


def _init_dense(rng: np.random.Generator, sizes: list[int]) -> list[Layer]:
    layers = []
    for n_in, n_out in itertools.pairwise(sizes):
        w = rng.normal(0, np.sqrt(2.0 / n_in), size=(n_out, n_in)).astype(np.float32)
        layers.append((w, np.zeros(n_out, np.float32)))
    return layers


def mlp_predict(weights: MlpWeights, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, classes]`` for ``x [N, features]``."""
    logits, _ = _dense_forward(list(weights.layers), x.reshape(len(x), -1).astype(np.float32))
    return softmax(logits)


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int = 10,
    hidden: tuple[int, ...] = (64,),
    seed: int = 0,
    epochs: int = 60,
    batch: int = 32,
    lr: float = 0.003,
    l2: float = 1e-4,
    augment: bool = True,
) -> MlpWeights:
    """Train a ReLU MLP with softmax cross-entropy and Adam; deterministic for ``seed``.

    With ``augment`` and 64 features (8x8 images), each batch is shifted by up to one pixel.
    """
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), -1).astype(np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    layers = _init_dense(rng, [x.shape[1], *hidden, n_classes])
    params = [p for layer in layers for p in layer]
    opt = _Adam(params, lr)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb = x[idx]
            if augment and x.shape[1] == 64:
                xb = _shift(rng, xb.reshape(-1, 8, 8)).reshape(-1, 64)
            logits, acts = _dense_forward(layers, xb)
            grad = (softmax(logits) - onehot[idx]) / len(idx)
            grads, _ = _dense_backward(layers, acts, grad, l2)
            opt.step(grads)
    return MlpWeights(tuple((w.copy(), b.copy()) for w, b in layers))


# -- CNN -------------------------------------------------------------------------------------


def _patches(x: np.ndarray) -> np.ndarray:
    """im2col for a 3x3 SAME convolution: ``[N, H, W]`` -> ``[N, H, W, 9]`` (kh, kw order)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
    return win.reshape(x.shape[0], x.shape[1], x.shape[2], 9)


def _cnn_forward(
    conv_w: np.ndarray, conv_b: np.ndarray, dense: list[Layer], x: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], list[np.ndarray]]:
    n, h, w = x.shape
    c = conv_w.shape[0]
    p = _patches(x)
    a = np.maximum(p @ conv_w.reshape(c, 9).T + conv_b, 0)  # [N, H, W, C]
    blocks = a.reshape(n, h // 2, 2, w // 2, 2, c)
    pooled = blocks.max(axis=(2, 4))  # [N, H/2, W/2, C]
    logits, acts = _dense_forward(dense, pooled.reshape(n, -1))
    return logits, {"p": p, "a": a, "pooled": pooled}, acts


def cnn_predict(weights: CnnWeights, x: np.ndarray) -> np.ndarray:
    """Class probabilities for ``x`` of shape ``[N, 8, 8]``, ``[N, 8, 8, 1]`` or ``[N, 64]``."""
    h, w = weights.image
    x = x.reshape(len(x), h, w).astype(np.float32)
    logits, _, _ = _cnn_forward(weights.conv_w, weights.conv_b, list(weights.dense), x)
    return softmax(logits)


def _shift(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Shift each image by up to one pixel (zero fill): cheap augmentation."""
    out = np.zeros_like(x)
    dy, dx = rng.integers(-1, 2, size=2)
    h, w = x.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def train_cnn(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int = 10,
    channels: int = 16,
    hidden: tuple[int, ...] = (),
    seed: int = 0,
    epochs: int = 40,
    batch: int = 32,
    lr: float = 0.003,
    l2: float = 1e-4,
    augment: bool = True,
) -> CnnWeights:
    """Train conv(3x3, SAME) + ReLU + max-pool(2x2) + dense layers; deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), 8, 8).astype(np.float32)
    n = len(x)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    conv_w = rng.normal(0, np.sqrt(2.0 / 9), size=(channels, 9)).astype(np.float32)
    conv_b = np.zeros(channels, np.float32)
    dense = _init_dense(rng, [16 * channels, *hidden, n_classes])
    params = [conv_w, conv_b] + [p for layer in dense for p in layer]
    opt = _Adam(params, lr)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb = _shift(rng, x[idx]) if augment else x[idx]
            logits, cache, acts = _cnn_forward(conv_w.reshape(channels, 3, 3, 1), conv_b, dense, xb)
            grad = (softmax(logits) - onehot[idx]) / len(idx)
            dgrads, g = _dense_backward(dense, acts, grad, l2)
            a, pooled = cache["a"], cache["pooled"]
            m = len(idx)
            g = g.reshape(pooled.shape)
            mask = a.reshape(m, 4, 2, 4, 2, channels) == pooled[:, :, None, :, None, :]
            ga = (mask * g[:, :, None, :, None, :]).reshape(a.shape) * (a > 0)
            gw = ga.reshape(-1, channels).T @ cache["p"].reshape(-1, 9) + l2 * conv_w
            opt.step([gw, ga.reshape(-1, channels).sum(axis=0), *dgrads])
    return CnnWeights(
        conv_w=conv_w.reshape(channels, 3, 3, 1).copy(),
        conv_b=conv_b.copy(),
        dense=tuple((w.copy(), b.copy()) for w, b in dense),
    )
