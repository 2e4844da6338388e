"""Benchmark models of a chosen size: one float32 ``FULLY_CONNECTED`` layer, weights last.

The weights ``[units, 1024]`` (random, deterministic) are the model's last buffer, so
:func:`write_dense_model` streams them to a file in 4 MiB chunks after the small flatbuffer
head: writing a 200 MB model needs a few MiB of memory. :func:`dense_model_of_size` returns
bytes instead and so holds the model twice for a moment (numpy buffer, then ``bytes``).
The bias input is omitted (tensor index -1), which TFLite allows for ``FULLY_CONNECTED``.

I/O: only :func:`write_dense_model` writes, to the path it is given (temp file + ``os.replace``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeward.models.tflite import schema as s
from edgeward.models.tflite.builder import (
    BufferDef,
    ModelDef,
    OperatorDef,
    TensorDef,
    build_head,
    write_model,
)

CHUNK_BYTES = 4 * 1024 * 1024


def _shape_for(nbytes: int) -> tuple[int, int]:
    """``(units, inputs)`` so that head plus weights come to about ``nbytes``."""
    inputs = 1024 if nbytes >= 64 * 1024 else 16
    m = _model(1, inputs)
    head = len(build_head(m, len(m.buffers) - 1, 4 * inputs))
    units = max(1, (nbytes - head) // (4 * inputs))
    return units, inputs


def _model(units: int, inputs: int) -> ModelDef:
    m = ModelDef(description=f"edgeward dense benchmark {units}x{inputs}")
    x = m.add_tensor(TensorDef("input", "FLOAT32", (1, inputs)))
    m.buffers.append(BufferDef())  # the weights: streamed after the head
    w = m.add_tensor(TensorDef("weights", "FLOAT32", (units, inputs), len(m.buffers) - 1))
    y = m.add_tensor(TensorDef("output", "FLOAT32", (1, units)))
    m.operators.append(
        OperatorDef(
            m.opcode(s.BUILTIN_CODES["FULLY_CONNECTED"]),
            (x, w, -1),
            (y,),
            s.BuiltinOptions.FULLY_CONNECTED,
            ((0, "b", s.ACTIVATION_NONE),),
        )
    )
    m.inputs, m.outputs = [x], [y]
    return m


def _chunks(units: int, inputs: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_BYTES // (4 * inputs))
    scale = np.float32(1.0 / np.sqrt(inputs))
    for start in range(0, units, rows):
        n = min(rows, units - start)
        block = (rng.random((n, inputs), dtype=np.float32) - np.float32(0.5)) * scale
        yield block.tobytes()


def write_dense_model(path: Path, nbytes: int, seed: int = 0) -> int:
    """Write a valid, loadable dense model of about ``nbytes`` to ``path``; returns its size."""
    units, inputs = _shape_for(nbytes)
    m = _model(units, inputs)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            size = write_model(
                m, f, len(m.buffers) - 1, units * inputs * 4, lambda: _chunks(units, inputs, seed)
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def dense_model_of_size(nbytes: int, seed: int = 0) -> bytes:
    """A valid, loadable dense model of about ``nbytes`` bytes, in memory."""
    units, inputs = _shape_for(nbytes)
    m = _model(units, inputs)
    tail = units * inputs * 4
    head = build_head(m, len(m.buffers) - 1, tail)
    out = np.empty(len(head) + tail, dtype=np.uint8)
    out[: len(head)] = np.frombuffer(bytes(head), dtype=np.uint8)
    at = len(head)
    for chunk in _chunks(units, inputs, seed):
        out[at : at + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        at += len(chunk)
    return out.tobytes()
