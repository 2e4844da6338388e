"""What the validator learned about a model: frozen, plain data for manifests and inspection.

:class:`ModelSummary` is returned by :func:`edgeward.models.tflite.validate.validate`. Its
:meth:`ModelSummary.to_manifest` is the part a signed manifest embeds (operator set, inputs and
outputs; DESIGN.md "Wire formats"), so it must stay stable and CBOR/JSON-able: only str, int,
float, list and dict. :func:`tensor_data` reads a constant tensor's weights out of the validated
bytes (numpy is imported lazily, only there).

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeward.models.tflite.schema import NUMPY_DTYPES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


@dataclass(frozen=True)
class Quantization:
    """``QuantizationParameters`` of a tensor: per-tensor when there is one scale."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int = 0

    def per_tensor(self) -> tuple[float, int] | None:
        if len(self.scale) == 1:
            return (self.scale[0], self.zero_point[0] if self.zero_point else 0)
        return None


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: what a caller must feed or will get."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    quantization: tuple[float, int] | None = None

    def to_manifest(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor, for inspection. ``data_offset`` is -1 when its buffer holds no data."""

    subgraph: int
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    buffer: int
    data_bytes: int
    data_offset: int
    quantization: Quantization | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subgraph": self.subgraph,
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "buffer": self.buffer,
            "data_bytes": self.data_bytes,
        }
        if self.quantization is not None:
            out["quantization"] = {
                "scale": list(self.quantization.scale),
                "zero_point": list(self.quantization.zero_point),
                "quantized_dimension": self.quantization.quantized_dimension,
            }
        return out


@dataclass(frozen=True)
class ModelSummary:
    """The structure of a validated TFLite model."""

    schema_version: int
    size: int
    operators: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    subgraph_count: int
    tensor_count: int
    operator_count: int
    buffer_count: int
    tensors: tuple[TensorInfo, ...]
    findings: tuple[str, ...] = ()
    description: str = ""

    def to_manifest(self) -> dict[str, Any]:
        """``{"ops", "inputs", "outputs"}``: what a signed manifest binds (compared as a dict)."""
        return {
            "ops": list(self.operators),
            "inputs": [t.to_manifest() for t in self.inputs],
            "outputs": [t.to_manifest() for t in self.outputs],
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, for ``edgeward model inspect --json``."""

        def spec(t: TensorSpec) -> dict[str, Any]:
            d = t.to_manifest()
            d["quantization"] = list(t.quantization) if t.quantization else None
            return d

        return {
            "schema_version": self.schema_version,
            "size": self.size,
            "description": self.description,
            "operators": list(self.operators),
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            "counts": {
                "subgraphs": self.subgraph_count,
                "tensors": self.tensor_count,
                "operators": self.operator_count,
                "buffers": self.buffer_count,
            },
            "tensors": [t.to_json() for t in self.tensors],
            "findings": list(self.findings),
        }

    def tensor(self, index: int, subgraph: int = 0) -> TensorInfo:
        for info in self.tensors:
            if info.subgraph == subgraph and info.index == index:
                return info
        raise KeyError(f"no tensor {index} in subgraph {subgraph}")


def tensor_data(
    buf: bytes | bytearray | memoryview, summary: ModelSummary, index: int, subgraph: int = 0
) -> np.ndarray:
    """The constant data of tensor ``index``: a numpy view into ``buf`` (no copy; read-only for
    ``bytes``).

    ``buf`` must be the very bytes ``summary`` was made from (its length is checked). Raises
    ``ValueError`` when the tensor has no data or a type numpy cannot view (STRING, INT4, ...).
    """
    import numpy as np

    if len(buf) != summary.size:
        raise ValueError(f"buffer of {len(buf)} bytes is not the {summary.size}-byte model")
    info = summary.tensor(index, subgraph)
    if info.data_offset < 0:
        raise ValueError(f"tensor {index} ({info.name!r}) has no constant data")
    dtype = NUMPY_DTYPES.get(info.dtype)
    if dtype is None:
        raise ValueError(f"tensor {index} has type {info.dtype}, which numpy cannot view")
    count = 1
    for d in info.shape:
        count *= d
    arr = np.frombuffer(buf, dtype=np.dtype(dtype), count=count, offset=info.data_offset)
    return arr.reshape(info.shape)
