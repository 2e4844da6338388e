"""The digits data set the reference models learn: scikit-learn's ``load_digits()`` (8x8, 1,797).

scikit-learn is a development dependency only; it is imported lazily and its absence is a
:class:`~edgeward.core.errors.DeviceError` that says how to install it. The data set ships inside
the scikit-learn package, so nothing is downloaded. No other I/O.
"""

from __future__ import annotations

import numpy as np

from edgeward.core.errors import DeviceError

TRAIN_SAMPLES = 1200
"""The first 1,200 samples in shipped order train; the remaining 597 are held back."""


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: pixels / 16 as float32 ``[N, 64]``, int labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DeviceError(
            "scikit-learn is needed to build the reference models; pip install scikit-learn"
        ) from e
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    n = TRAIN_SAMPLES
    return x[:n], y[:n], x[n:], y[n:]
