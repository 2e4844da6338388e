"""TFLite flatbuffers without TensorFlow: a distrustful validator and a small writer.

* :func:`validate` checks untrusted ``.tflite`` bytes and returns a :class:`ModelSummary`
  (pure Python; imports neither ``flatbuffers`` nor ``tflite``);
* :func:`tensor_data` views a constant tensor's weights in the validated bytes (numpy, lazily);
* :mod:`edgeward.models.tflite.builder` writes models (needs the ``flatbuffers`` package; import
  it explicitly).

Nothing here runs a model: :mod:`edgeward.models.runtime` is the only module that imports a TFLite
runtime. Nothing here does I/O.
"""

from edgeward.models.tflite.summary import (
    ModelSummary,
    Quantization,
    TensorInfo,
    TensorSpec,
    tensor_data,
)
from edgeward.models.tflite.validate import validate

__all__ = ["ModelSummary", "Quantization", "TensorInfo", "TensorSpec", "tensor_data", "validate"]
