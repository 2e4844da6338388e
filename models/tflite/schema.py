"""Constants of the TFLite flatbuffer schema that edgeward reads and writes.

This module mirrors the parts of TensorFlow Lite's ``schema.fbs`` (``tensorflow/compiler/mlir/
lite/schema/schema.fbs``, schema version 3) that the validator and the builder need: the file
identifier, the vtable slot of every field we touch (a field's slot is its declaration order in
``schema.fbs``), the ``TensorType`` and ``BuiltinOperator`` enums, and a few ``BuiltinOptions``
union tags.

It does not parse anything and does no I/O.
"""

from __future__ import annotations

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3


class ModelField:
    """``table Model`` (schema.fbs)."""

    VERSION = 0
    OPERATOR_CODES = 1
    SUBGRAPHS = 2
    DESCRIPTION = 3
    BUFFERS = 4
    METADATA_BUFFER = 5
    METADATA = 6
    SIGNATURE_DEFS = 7
    COUNT = 8


class OperatorCodeField:
    """``table OperatorCode``: the builtin code lives in two fields (see :func:`builtin_code`)."""

    DEPRECATED_BUILTIN_CODE = 0  # byte
    CUSTOM_CODE = 1  # string
    VERSION = 2  # int, default 1
    BUILTIN_CODE = 3  # BuiltinOperator (int32)
    COUNT = 4


class SubGraphField:
    """``table SubGraph``."""

    TENSORS = 0
    INPUTS = 1
    OUTPUTS = 2
    OPERATORS = 3
    NAME = 4
    DEBUG_METADATA_INDEX = 5
    COUNT = 6


class TensorField:
    """``table Tensor``."""

    SHAPE = 0
    TYPE = 1  # TensorType (byte)
    BUFFER = 2  # uint
    NAME = 3
    QUANTIZATION = 4
    IS_VARIABLE = 5
    SPARSITY = 6
    SHAPE_SIGNATURE = 7
    HAS_RANK = 8
    VARIANT_TENSORS = 9
    COUNT = 10


class QuantizationField:
    """``table QuantizationParameters``."""

    MIN = 0  # [float]
    MAX = 1  # [float]
    SCALE = 2  # [float]
    ZERO_POINT = 3  # [long]
    DETAILS_TYPE = 4
    DETAILS = 5
    QUANTIZED_DIMENSION = 6  # int
    COUNT = 7


class OperatorField:
    """``table Operator``."""

    OPCODE_INDEX = 0  # uint
    INPUTS = 1  # [int], -1 marks an omitted optional input
    OUTPUTS = 2
    BUILTIN_OPTIONS_TYPE = 3  # ubyte union tag
    BUILTIN_OPTIONS = 4
    CUSTOM_OPTIONS = 5  # [ubyte]
    CUSTOM_OPTIONS_FORMAT = 6
    MUTATING_VARIABLE_INPUTS = 7
    INTERMEDIATES = 8
    LARGE_CUSTOM_OPTIONS_OFFSET = 9  # ulong, data outside the flatbuffer
    LARGE_CUSTOM_OPTIONS_SIZE = 10
    BUILTIN_OPTIONS_2_TYPE = 11
    BUILTIN_OPTIONS_2 = 12
    DEBUG_METADATA_INDEX = 13
    COUNT = 14


class BufferField:
    """``table Buffer``: ``offset``/``size`` put the data outside the flatbuffer (> 2 GB models)."""

    DATA = 0  # [ubyte] (force_align: 16)
    OFFSET = 1  # ulong
    SIZE = 2  # ulong
    COUNT = 3


class MetadataField:
    """``table Metadata``."""

    NAME = 0
    BUFFER = 1
    COUNT = 2


class SignatureDefField:
    """``table SignatureDef`` and ``table TensorMap``."""

    INPUTS = 0
    OUTPUTS = 1
    SIGNATURE_KEY = 2
    DEPRECATED_TAG = 3
    SUBGRAPH_INDEX = 4
    COUNT = 5
    MAP_NAME = 0
    MAP_TENSOR_INDEX = 1
    MAP_COUNT = 2


# enum TensorType : byte; name -> (code, bytes per element; 0 = variable or packed)
TENSOR_TYPES: tuple[str, ...] = (
    "FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16", "COMPLEX64",
    "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT", "UINT32", "UINT16", "INT4",
    "BFLOAT16",
)  # fmt: skip
TENSOR_TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(TENSOR_TYPES)}
ELEMENT_BYTES: dict[str, int] = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
    "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4,
    "UINT16": 2, "BFLOAT16": 2,
}  # fmt: skip
"""Fixed element sizes; STRING, RESOURCE, VARIANT and INT4 (two per byte) are sized otherwise."""

# Numpy dtype strings for the types whose bytes numpy can view directly.
NUMPY_DTYPES: dict[str, str] = {
    "FLOAT32": "<f4", "FLOAT16": "<f2", "INT32": "<i4", "UINT8": "u1", "INT64": "<i8",
    "BOOL": "?", "INT16": "<i2", "COMPLEX64": "<c8", "INT8": "i1", "FLOAT64": "<f8",
    "COMPLEX128": "<c16", "UINT64": "<u8", "UINT32": "<u4", "UINT16": "<u2",
}  # fmt: skip

# enum BuiltinOperator : int32 (schema.fbs), indexed by code.
BUILTIN_OPERATORS: tuple[str, ...] = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION", "L2_POOL_2D", "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION",
    "LSTM", "MAX_POOL_2D", "MUL", "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH", "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL",
    "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD", "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER",
    "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB", "DIV", "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP",
    "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU",
    "MAXIMUM", "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL",
    "LESS_EQUAL", "SELECT", "SLICE", "SIN", "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE",
    "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT", "SHAPE", "POW", "ARG_MIN",
    "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT", "LOGICAL_AND",
    "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE",
    "FILL", "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE",
    "MIRROR_PAD", "ABS", "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS",
    "WHERE", "RANK", "ELU", "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG",
    "ROUND", "HARD_SWISH", "IF", "WHILE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5",
    "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM", "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT",
    "HASHTABLE_SIZE", "REDUCE_ALL", "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE",
    "ASSIGN_VARIABLE", "BROADCAST_ARGS", "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM",
    "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE", "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD",
    "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2", "UNSORTED_SEGMENT_MIN", "SIGN",
    "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC", "STABLEHLO_ADD",
    "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE",
    "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM",
    "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE",
    "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL",
    "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE", "STABLEHLO_OR",
    "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT",
    "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE",
    "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE",
    "STABLEHLO_PAD", "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW",
    "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE", "DILATE",
    "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT",
    "STABLEHLO_CBRT",
)  # fmt: skip
BUILTIN_CODES: dict[str, int] = {name: code for code, name in enumerate(BUILTIN_OPERATORS)}

CUSTOM = BUILTIN_CODES["CUSTOM"]
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
"""``deprecated_builtin_code`` is a byte; codes above 127 store this placeholder there."""


def builtin_code(deprecated_builtin_code: int, builtin_code: int) -> int:
    """The operator code of an ``OperatorCode`` table, as schema.fbs prescribes.

    Old writers only set ``deprecated_builtin_code`` (a byte); new writers set both, with the
    placeholder 127 in the byte field for codes above 127. The effective code is the larger.
    """
    return max(deprecated_builtin_code, builtin_code)


# union BuiltinOptions: the tags edgeward's builder writes.
class BuiltinOptions:
    NONE = 0
    CONV_2D = 1
    POOL_2D = 5
    FULLY_CONNECTED = 8
    SOFTMAX = 9
    RESHAPE = 17
    DEQUANTIZE = 38
    QUANTIZE = 89
    MAX_TAG = 126
    MAX_TAG_2 = 22


# enum Padding, enum ActivationFunctionType
PADDING_SAME = 0
PADDING_VALID = 1
ACTIVATION_NONE = 0
ACTIVATION_RELU = 1


# Which inputs an operator may omit (tensor index -1). From the TFLite kernels
# (tensorflow/lite/kernels/*.cc): FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D take an optional
# bias, TRANSPOSE_CONV an optional bias as its fourth input, RESHAPE an optional shape tensor;
# the other operators listed take none. A -1 where a kernel expects a tensor makes some runtime
# versions dereference a null tensor (found by fuzzing LiteRT 2.3 with validated models).
# Operators in ANY_OPTIONAL_INPUTS (the recurrent ones, with many optional inputs) and custom
# operators may use -1 anywhere; every other operator may omit none: on 979eb13 unlisted
# operators could, and LiteRT 2.3 dereferences the missing tensor (SIGSEGV) in FAKE_QUANT, CUMSUM,
# IMAG, REAL, COMPLEX_ABS, BROADCAST_ARGS, ATAN2, SIGN and DILATE (review for issue 9).
ANY_OPTIONAL_INPUTS = frozenset({
    "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM",
    "BIDIRECTIONAL_SEQUENCE_RNN",
})
OPTIONAL_INPUTS: dict[str, frozenset[int]] = {
    "SVDF": frozenset({3}),
    "CONV_3D": frozenset({2}),
    "CONV_3D_TRANSPOSE": frozenset({3}),
    "LSH_PROJECTION": frozenset({2}),
    "FULLY_CONNECTED": frozenset({2}),
    "CONV_2D": frozenset({2}),
    "DEPTHWISE_CONV_2D": frozenset({2}),
    "TRANSPOSE_CONV": frozenset({3}),
    "RESHAPE": frozenset({1}),
    **{
        name: frozenset()
        for name in (
            "ADD", "SUB", "MUL", "DIV", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D",
            "SOFTMAX", "LOG_SOFTMAX", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
            "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "PRELU", "ELU", "CONCATENATION",
            "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "PAD", "PADV2", "SQUEEZE",
            "TRANSPOSE", "ARG_MAX", "ARG_MIN", "L2_NORMALIZATION", "GATHER", "STRIDED_SLICE",
            "SLICE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "EXP", "LOG", "SQRT", "RSQRT",
            "MAXIMUM", "MINIMUM", "BATCH_MATMUL", "PACK", "UNPACK", "SPLIT", "EXPAND_DIMS",
            "FLOOR", "ABS", "NEG", "SQUARE", "POW", "CAST", "SHAPE", "TILE", "SPACE_TO_DEPTH",
            "DEPTH_TO_SPACE", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND",
        )
    },
}  # fmt: skip

# The fewest inputs an operator's kernel reads (tensorflow/lite/kernels/*.cc NumInputs checks).
# The XNNPACK delegate of LiteRT 2.3 reads the inputs it expects without counting them: on
# 979eb13 a STRIDED_SLICE with fewer than 4 inputs, a SLICE with 1, a BATCH_MATMUL with fewer
# than 2 and an ASSIGN_VARIABLE with 1 passed the validator and crashed it (SIGSEGV, review for
# issue 9). The common operators are listed too; the others are left to their kernels.
MIN_INPUTS: dict[str, int] = {
    "STRIDED_SLICE": 4, "SLICE": 3, "BATCH_MATMUL": 2, "ASSIGN_VARIABLE": 2,
    "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3,
    "ADD": 2, "SUB": 2, "MUL": 2, "DIV": 2, "MAXIMUM": 2, "MINIMUM": 2, "SQUARED_DIFFERENCE": 2,
    "PAD": 2, "PADV2": 3, "MEAN": 2, "SUM": 2, "REDUCE_MAX": 2, "REDUCE_MIN": 2,
    "REDUCE_PROD": 2, "TRANSPOSE": 2, "GATHER": 2, "SPLIT": 2, "SPLIT_V": 3, "TILE": 2,
    "EXPAND_DIMS": 2, "ARG_MAX": 2, "ARG_MIN": 2, "RESIZE_BILINEAR": 2,
    "RESIZE_NEAREST_NEIGHBOR": 2, "PRELU": 2, "FILL": 2, "SELECT": 3, "SELECT_V2": 3,
    "SPACE_TO_BATCH_ND": 3, "BATCH_TO_SPACE_ND": 3,
    "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1, "L2_POOL_2D": 1, "SOFTMAX": 1, "LOGISTIC": 1,
    "RESHAPE": 1, "CONCATENATION": 1, "QUANTIZE": 1, "DEQUANTIZE": 1, "RELU": 1, "RELU6": 1,
    "TANH": 1, "HARD_SWISH": 1, "SQUEEZE": 1, "PACK": 1, "UNPACK": 1,
}  # fmt: skip

MIN_NORMAL_FLOAT32 = 2.0**-126
"""Quantisation scales below this (subnormal) crash some runtime versions in QUANTIZE."""
