"""The TFLite runtime adapter: the only module that imports a TFLite interpreter.

It prefers LiteRT (``ai_edge_litert.interpreter``) and falls back to ``tflite_runtime.interpreter``
(tflite-runtime 2.14, which needs ``numpy<2``). Models are always loaded from memory
(``model_content=``), never from a path, so the bytes that were hashed and validated are the
bytes that run; a path could be swapped between check and use.

Copy or reference? Both runtimes' Python ``Interpreter`` keep a reference to the ``bytes`` object
(``self._model_content = model_content``) and the C++ wrapper builds the ``FlatBufferModel`` on
that memory (``PyBytes_AsStringAndSize``, ``FlatBufferModel::VerifyAndBuildFromBuffer``), without
copying it. Constant tensors point into that buffer too. Measured with a 200 MB model
(tests/models/test_runtime.py, ``test_model_content_is_not_copied``): resident memory grows by far
less than the model size on load. Two consequences: callers must pass immutable ``bytes`` (a
``bytearray`` could be changed after verification; :func:`load_interpreter` refuses it), and the
interpreter must keep the bytes alive, which it does. XNNPACK (on by default in both runtimes)
repacks float weights of the layers it delegates on first ``allocate_tensors``, which does cost a
second copy of those weights. So by default (``use_xnnpack=None``) XNNPACK is used for models up
to :data:`XNNPACK_AUTO_MAX_BYTES` and not above, where a second copy of the weights would double
the memory a Pi-class board needs; pass ``use_xnnpack=True`` or ``False`` to decide yourself.
docs/BENCHMARKS.md gives the memory and speed of both.

Runtime errors are translated at this edge and chained: a model the runtime refuses to build or
prepare is a :class:`MalformedModelError`; a failing ``invoke`` is a :class:`DeviceError`;
no importable runtime is a :class:`RuntimeMissingError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import warnings
from types import ModuleType
from typing import Any

import numpy as np

from edgeward.core.errors import DeviceError, MalformedModelError, RuntimeMissingError

logger = logging.getLogger(__name__)

# (short name, module, distribution)
_BACKENDS: tuple[tuple[str, str, str], ...] = (
    ("litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
)
_ALIASES = {
    "litert": "litert",
    "ai_edge_litert": "litert",
    "ai-edge-litert": "litert",
    "tflite_runtime": "tflite_runtime",
    "tflite-runtime": "tflite_runtime",
}
XNNPACK_AUTO_MAX_BYTES = 64 * 1024 * 1024
INSTALL_HINT = "pip install 'edgeward[litert]' (or 'edgeward[tflite]' for tflite-runtime 2.14)"


def _order(prefer: str | None) -> list[tuple[str, str, str]]:
    if prefer is None:
        return list(_BACKENDS)
    key = _ALIASES.get(prefer)
    if key is None:
        raise ValueError(f"unknown TFLite runtime {prefer!r}; use 'litert' or 'tflite_runtime'")
    return sorted(_BACKENDS, key=lambda b: b[0] != key)


def _backend(prefer: str | None = None) -> tuple[ModuleType, str]:
    """The first importable interpreter module and its distribution name."""
    failures = []
    for _name, module, dist in _order(prefer):
        try:
            return importlib.import_module(module), dist
        except ImportError as e:
            failures.append(f"{module}: {e}")
    logger.debug("no TFLite runtime: %s", "; ".join(failures))
    raise RuntimeMissingError(
        "no TFLite runtime: neither ai-edge-litert nor tflite-runtime can be imported",
        hint=INSTALL_HINT,
    )


def runtime_name(prefer: str | None = None) -> str:
    """``"ai-edge-litert 2.3.0"`` or ``"tflite-runtime 2.14.0"``: the runtime that would load."""
    _, dist = _backend(prefer)
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{dist} {version}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_interpreter(
    model: bytes,
    *,
    num_threads: int | None = None,
    prefer: str | None = None,
    use_xnnpack: bool | None = None,
    preserve_all_tensors: bool = False,
) -> Any:
    """Build an interpreter on ``model`` (kept by reference, not copied) and allocate tensors.

    ``model`` must be ``bytes``: immutable, so what was verified cannot change under the runtime.
    ``preserve_all_tensors`` keeps intermediate tensors readable after ``invoke`` (the guard reads
    logits that way); it costs memory, and the runtime's warning about that is silenced here.
    """
    if not isinstance(model, bytes):
        raise TypeError(f"model must be bytes (immutable, as verified), not {type(model).__name__}")
    mod, dist = _backend(prefer)
    kwargs: dict[str, Any] = {"model_content": model, "num_threads": num_threads}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if use_xnnpack is None:
        use_xnnpack = len(model) <= XNNPACK_AUTO_MAX_BYTES
        if not use_xnnpack:
            logger.info(
                "model of %d MiB: XNNPACK off, so its weights are not copied (use_xnnpack=True "
                "to trade memory for speed)",
                len(model) >> 20,
            )
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = (
            mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            interpreter = mod.Interpreter(**kwargs)
    except (ValueError, RuntimeError, MemoryError) as e:
        raise MalformedModelError(f"{dist} refused the model: {_first_line(e)}") from e
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError, MemoryError) as e:
        raise MalformedModelError(f"{dist} could not prepare the model: {_first_line(e)}") from e
    return interpreter


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating) and scale:
        info = np.iinfo(dtype)
        q = np.round(x / scale) + zero
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(y.dtype, np.integer) and scale:
        out: np.ndarray = ((y.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(
            np.float32
        )
        return out
    return y


class Runner:
    """Run a single-input, single-output model on one sample or a batch of N samples.

    ``model`` is the model's ``bytes`` (loaded with :func:`load_interpreter`) or an interpreter
    that :func:`load_interpreter` already made.
    ``run`` accepts one sample (the input shape, with or without its batch axis of 1) or
    ``[N, ...]`` whose samples have the input's element count (so ``[N, 64]`` feeds an
    ``[1, 8, 8, 1]`` model). Float data is quantised for int8/uint8 inputs with the input's
    scale and zero point; quantised outputs are dequantised to float32 (``dequantize=True``).
    Batches resize the input to ``[N, ...]`` (at most ``max_batch`` at a time) when the model
    allows it and loop one sample at a time when it does not. Not thread-safe.
    """

    def __init__(
        self,
        model: bytes | Any,
        *,
        num_threads: int | None = None,
        prefer: str | None = None,
        use_xnnpack: bool | None = None,
        dequantize: bool = True,
        max_batch: int = 256,
    ) -> None:
        if isinstance(model, bytes | bytearray | memoryview):
            self.interpreter = load_interpreter(
                model,  # type: ignore[arg-type]  # load_interpreter refuses non-bytes
                num_threads=num_threads,
                prefer=prefer,
                use_xnnpack=use_xnnpack,
            )
        else:
            self.interpreter = model  # its Python object holds the model bytes alive
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(
                f"Runner needs one input and one output; the model has {len(ins)} and {len(outs)}"
            )
        self.input = ins[0]
        self.output = outs[0]
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self.input["shape"])
        self.output_shape: tuple[int, ...] = tuple(int(d) for d in self.output["shape"])
        self.dequantize = dequantize
        self.max_batch = max(1, max_batch)
        self._batch = self.input_shape[0] if self.input_shape else 1
        self._can_batch = len(self.input_shape) >= 1 and self.input_shape[0] == 1

    def _resize(self, n: int) -> bool:
        if n == self._batch:
            return True
        if not self._can_batch:
            return False
        try:
            self.interpreter.resize_tensor_input(self.input["index"], [n, *self.input_shape[1:]])
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, MemoryError) as e:
            logger.debug("model does not batch (%s); looping", _first_line(e))
            self._can_batch = False
            self._restore()
            return False
        self._batch = n
        return True

    def _restore(self) -> None:
        self.interpreter.resize_tensor_input(self.input["index"], list(self.input_shape))
        self.interpreter.allocate_tensors()
        self._batch = self.input_shape[0]

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        try:
            self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
            self.interpreter.invoke()
            y = np.array(self.interpreter.get_tensor(self.output["index"]))
        except (ValueError, RuntimeError, MemoryError) as e:
            raise DeviceError(f"inference failed: {_first_line(e)}") from e
        return _dequantize(y, self.output) if self.dequantize else y

    def _invoke_one(self, x: np.ndarray) -> np.ndarray:
        y = self._invoke(x)
        return y if y.ndim and y.shape[0] == 1 else y[np.newaxis]  # output without batch axis

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``[N, ...]`` for ``N`` samples (``N = 1`` for a single sample)."""
        x = np.asarray(x)
        if self.input_shape and self.input_shape[0] != 1:  # a fixed batch: feed it as it is
            if tuple(x.shape) != self.input_shape:
                raise ValueError(f"input of shape {x.shape} is not {list(self.input_shape)}")
            return self._invoke(x)
        per_sample = int(np.prod(self.input_shape[1:])) if self.input_shape else 1
        single = x.size == per_sample and x.ndim < len(self.input_shape)
        if single or tuple(x.shape) == self.input_shape:
            n = 1
        elif x.ndim >= 1 and x.shape[0] > 0 and x.size == x.shape[0] * per_sample:
            n = int(x.shape[0])
        else:
            raise ValueError(
                f"input of shape {x.shape} does not fit the model input {list(self.input_shape)}"
            )
        x = x.reshape(n, *self.input_shape[1:])
        results = []
        step = self.max_batch if self._can_batch else 1
        for start in range(0, n, step):
            chunk = x[start : start + step]
            if self._resize(len(chunk)):
                y = self._invoke(chunk)
                if y.shape[0] == len(chunk):
                    results.append(y)
                    continue
                self._can_batch = False  # output did not follow the batch: loop instead
                self._restore()
            if self._batch != 1:
                self._restore()
            results.extend(self._invoke_one(chunk[i : i + 1]) for i in range(len(chunk)))
        return np.concatenate(results, axis=0)
