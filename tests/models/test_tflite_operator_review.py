"""What LiteRT trusts from the file, operator by operator: hostile constant operands.

Review for issue 9 (hole 4): besides STRING offset tables (test_tflite_string_attacks.py), the
operands a file can make hostile are constant indices, sizes, axes and subgraph indices. The
validator does not check their values; these models show that LiteRT's kernels do (a clean
error at prepare or invoke, or clamping), so a validator-passing model with such values cannot
make LiteRT read or write out of bounds. They run in LiteRT only in a child process: a crash
there fails this test, not the run. If a runtime upgrade drops one of these checks, this test
names the operator to add to the validator.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tflite.BuiltinOptions import BuiltinOptions as BO

from edgeward.core.errors import MalformedModelError, PolicyError
from edgeward.models.tflite import schema as s
from edgeward.models.tflite import validate
from edgeward.models.tflite.builder import ModelDef, OpCodeDef, OperatorDef, TensorDef, build

T = tuple[str, str, tuple[int, ...], bytes | None]


def i32(*v: int) -> bytes:
    return np.array(v, dtype=np.int32).tobytes()


def f32(n: int) -> bytes:
    return np.arange(n, dtype=np.float32).tobytes()


def model(op: str, tensors: list[T], inputs: tuple[int, ...], outputs: tuple[int, ...],
          tag: int = 0, opts: tuple = ()) -> bytes:
    m = ModelDef()
    for name, dtype, shape, data in tensors:
        m.tensors.append(TensorDef(name, dtype, shape, m.add_buffer(data) if data else 0))
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES[op]))
    m.operators.append(OperatorDef(0, inputs, outputs, tag, opts))
    m.inputs = [i for i, t in enumerate(tensors) if t[3] is None and i not in outputs]
    m.outputs = list(outputs)
    return build(m)


HOSTILE = {
    "GATHER index 10^6": model("GATHER", [("p", "FLOAT32", (4,), f32(4)),
                               ("i", "INT32", (2,), i32(1, 10**6)),
                               ("o", "FLOAT32", (2,), None)], (0, 1), (2,)),
    "GATHER_ND index 10^6": model("GATHER_ND", [("p", "FLOAT32", (4,), f32(4)),
                                  ("i", "INT32", (2, 1), i32(1, 10**6)),
                                  ("o", "FLOAT32", (2,), None)], (0, 1), (2,)),
    "EMBEDDING_LOOKUP id 10^5": model("EMBEDDING_LOOKUP", [("i", "INT32", (2,), i32(0, 10**5)),
                                      ("v", "FLOAT32", (4, 2), f32(8)),
                                      ("o", "FLOAT32", (2, 2), None)], (0, 1), (2,)),
    "SCATTER_ND index 10^5": model("SCATTER_ND", [("i", "INT32", (2, 1), i32(0, 10**5)),
                                   ("u", "FLOAT32", (2,), f32(2)),
                                   ("sh", "INT32", (1,), i32(4)),
                                   ("o", "FLOAT32", (4,), None)], (0, 1, 2), (3,)),
    "SPARSE_TO_DENSE index 10^5": model("SPARSE_TO_DENSE", [("i", "INT32", (2,), i32(0, 10**5)),
                                        ("sh", "INT32", (1,), i32(4)),
                                        ("v", "FLOAT32", (2,), f32(2)),
                                        ("d", "FLOAT32", (), f32(1)),
                                        ("o", "FLOAT32", (4,), None)], (0, 1, 2, 3), (4,)),
    "SEGMENT_SUM unsorted ids": model("SEGMENT_SUM", [("d", "FLOAT32", (3,), f32(3)),
                                      ("s", "INT32", (3,), i32(0, 5, 1)),
                                      ("o", "FLOAT32", (6,), None)], (0, 1), (2,)),
    "UNSORTED_SEGMENT_SUM id 10^5": model("UNSORTED_SEGMENT_SUM", [
        ("d", "FLOAT32", (3,), f32(3)), ("s", "INT32", (3,), i32(0, 10**5, 1)),
        ("n", "INT32", (), i32(2)), ("o", "FLOAT32", (2,), None)], (0, 1, 2), (3,)),
    "ONE_HOT depth -5": model("ONE_HOT", [("i", "INT32", (2,), i32(0, 1)),
                              ("dp", "INT32", (), i32(-5)), ("on", "FLOAT32", (), f32(1)),
                              ("off", "FLOAT32", (), f32(1)),
                              ("o", "FLOAT32", (2, 4), None)], (0, 1, 2, 3), (4,)),
    "REVERSE_V2 axis 9": model("REVERSE_V2", [("x", "FLOAT32", (2, 2), f32(4)),
                               ("a", "INT32", (1,), i32(9)),
                               ("o", "FLOAT32", (2, 2), None)], (0, 1), (2,)),
    "SLICE size past the end": model("SLICE", [("x", "FLOAT32", (4,), f32(4)),
                                     ("b", "INT32", (1,), i32(3)),
                                     ("sz", "INT32", (1,), i32(100)),
                                     ("o", "FLOAT32", (100,), None)], (0, 1, 2), (3,)),
    "DYNAMIC_UPDATE_SLICE index 10^5": model("DYNAMIC_UPDATE_SLICE", [
        ("x", "FLOAT32", (4,), f32(4)), ("u", "FLOAT32", (2,), f32(2)),
        ("i", "INT32", (1,), i32(10**5)), ("o", "FLOAT32", (4,), None)], (0, 1, 2), (3,)),
    "WHILE subgraphs 7 and 9 of 1": model("WHILE", [("x", "FLOAT32", (2,), None),
                                          ("y", "FLOAT32", (2,), None)], (0,), (1,),
                                          BO.WhileOptions, ((0, "i", 7), (1, "i", 9))),
    "CALL_ONCE subgraph 7 of 1": model("CALL_ONCE", [("x", "FLOAT32", (2,), None)], (), (),
                                       BO.CallOnceOptions, ((0, "i", 7),)),
}

CHILD = r"""
import json, sys
from ai_edge_litert.interpreter import Interpreter
out = {}
for name, h in json.load(sys.stdin).items():
    try:
        it = Interpreter(model_content=bytes.fromhex(h)); it.allocate_tensors(); it.invoke()
        outs = it.get_output_details()
        out[name] = ["ran", [int(it.get_tensor(d["index"]).size) for d in outs]]
    except Exception as e:
        out[name] = ["error", str(e).splitlines()[0][:200]]
print(json.dumps(out))
"""


def test_hostile_constant_operands_are_refused_or_checked_by_litert_kernels() -> None:
    passing = {}
    for name, buf in HOSTILE.items():
        try:
            validate(buf)
        except MalformedModelError:
            continue
        passing[name] = buf.hex()
    r = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(passing),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"LiteRT died (rc {r.returncode}) on one of {sorted(passing)}"
    verdicts = json.loads(r.stdout.strip().splitlines()[-1])
    ran = {k: v for k, v in verdicts.items() if v[0] == "ran"}
    # the two that run clamp to the input: no element comes from outside it
    assert set(ran) <= {"SLICE size past the end", "DYNAMIC_UPDATE_SLICE index 10^5"}, ran
    assert ran.get("SLICE size past the end", ["ran", [1]])[1] == [1]
    assert ran.get("DYNAMIC_UPDATE_SLICE index 10^5", ["ran", [4]])[1] == [4]


# -- sparse tensors: LiteRT trusts their index arrays -------------------------------------------


def _densify(indices: tuple[int, ...]) -> bytes:
    from edgeward.models.tflite.builder import DimDef, SparsityDef

    m = ModelDef()
    data = m.add_buffer(f32(4))
    sparsity = SparsityDef((0, 1), (DimDef(0, 4), DimDef(1, 0, (0, 1, 2, 3, 4), indices)))
    m.tensors += [TensorDef("w", "FLOAT32", (4, 4), data, sparsity=sparsity),
                  TensorDef("o", "FLOAT32", (4, 4))]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES["DENSIFY"]))
    m.operators.append(OperatorDef(0, (0,), (1,)))
    m.outputs = [1]
    return build(m)


@pytest.mark.parametrize("indices", [(0, 99, 1, 2), (0, 10**7, 1, 2), (0, -100000, 1, 2),
                                     (0, 1, 2, 3)])
def test_attack_sparse_tensor_with_hostile_indices_refused(indices: tuple[int, ...]) -> None:
    """On 979eb13 these passed validate() (with a finding); without a delegate LiteRT's DENSIFY
    then died (SIGABRT for index 99, SIGSEGV for 10^7) or wrote before its output (-100000).
    Sparse tensors are refused as a policy, well-formed ones included."""
    with pytest.raises(PolicyError, match="sparse tensors are not supported"):
        validate(_densify(indices))


# -- omitted inputs: only where the kernel takes an optional one -----------------------------

CRASHED_ON_979EB13 = [("FAKE_QUANT", (-1,)), ("CUMSUM", (0, -1)), ("CUMSUM", (-1, 0)),
                      ("IMAG", (-1,)), ("REAL", (-1,)), ("COMPLEX_ABS", (-1,)),
                      ("BROADCAST_ARGS", (-1, 0)), ("ATAN2", (0, -1)), ("ATAN2", (-1, 0)),
                      ("SIGN", (-1,)), ("DILATE", (0, -1, 0))]


def _omitting(op: str, inputs: tuple[int, ...]) -> bytes:
    m = ModelDef()
    m.tensors += [TensorDef("x", "FLOAT32", (2, 2)), TensorDef("y", "FLOAT32", (2, 2))]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES[op]))
    m.operators.append(OperatorDef(0, inputs, (1,)))
    m.inputs, m.outputs = [0], [1]
    return build(m)


@pytest.mark.parametrize(("op", "inputs"), CRASHED_ON_979EB13)
def test_attack_omitted_required_input_of_an_unlisted_operator_refused(
    op: str, inputs: tuple[int, ...]
) -> None:
    """On 979eb13 operators outside the optional-input table could omit any input; these
    passed validate() and LiteRT (without a delegate) died with SIGSEGV on the null tensor."""
    with pytest.raises(MalformedModelError, match=f"which {op} requires"):
        validate(_omitting(op, inputs))


def test_recurrent_operators_still_omit_optional_inputs() -> None:
    m = ModelDef()
    m.tensors += [TensorDef("x", "FLOAT32", (1, 2)), TensorDef("y", "FLOAT32", (1, 2))]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES["UNIDIRECTIONAL_SEQUENCE_LSTM"]))
    m.operators.append(OperatorDef(0, (0, -1, -1), (1,)))
    m.inputs, m.outputs = [0], [1]
    validate(build(m))  # structure only; the kernel checks which ones it needs


# -- integer options the kernels trust ---------------------------------------------------------

X4 = ("x", "FLOAT32", (1, 4, 4, 4), None)


def _split(num: int) -> bytes:
    return model("SPLIT", [("a", "INT32", (), i32(3)), X4, ("y", "FLOAT32", (1, 4, 4, 4), None)],
                 (0, 1), (2,), BO.SplitOptions, ((0, "i", num),))


def _lrn(radius: int) -> bytes:
    return model("LOCAL_RESPONSE_NORMALIZATION", [X4, ("y", "FLOAT32", (1, 4, 4, 4), None)],
                 (0,), (1,), BO.LocalResponseNormalizationOptions,
                 ((0, "i", radius), (1, "f", 1.0), (2, "f", 1.0), (3, "f", 0.5)))


@pytest.mark.parametrize(("buf", "needle"), [
    (_split(0), "num_splits 0"), (_split(-3), "num_splits -3"), (_split(2), "but 1 outputs"),
    (_lrn(-5), "radius -5"), (_lrn(10**9), "radius 1000000000"),
])
def test_attack_hostile_integer_options_refused(buf: bytes, needle: str) -> None:
    """On 979eb13 these passed validate(): SPLIT with num_splits <= 0 crashed LiteRT with
    XNNPACK (SIGSEGV), LOCAL_RESPONSE_NORMALIZATION with radius -5 crashed it, radius 10^9 hung
    it (a CPU denial of service from a signed-looking model)."""
    with pytest.raises(MalformedModelError, match=needle):
        validate(buf)


def test_attack_split_into_more_parts_than_outputs_refused() -> None:
    """On 979eb13 a SPLIT with num_splits 9 and one output passed validate(); LiteRT's XNNPACK
    delegate wrote nine outputs (SIGSEGV; found by the options sweep)."""
    with pytest.raises(MalformedModelError, match="num_splits 9 but 1 outputs"):
        validate(_split(9))


def test_usable_split_and_lrn_options_pass() -> None:
    validate(model("SPLIT", [("a", "INT32", (), i32(3)), X4, ("y", "FLOAT32", (1, 4, 4, 2), None),
                             ("z", "FLOAT32", (1, 4, 4, 2), None)], (0, 1), (2, 3),
                   BO.SplitOptions, ((0, "i", 2),)))
    validate(_lrn(5))


# -- too few inputs: the XNNPACK delegate reads the ones it expects ----------------------------


@pytest.mark.parametrize(("op", "n"), [("STRIDED_SLICE", 1), ("STRIDED_SLICE", 2),
                                       ("STRIDED_SLICE", 3), ("SLICE", 1), ("BATCH_MATMUL", 0),
                                       ("BATCH_MATMUL", 1), ("ASSIGN_VARIABLE", 1)])
def test_attack_operator_with_too_few_inputs_refused(op: str, n: int) -> None:
    """On 979eb13 these passed validate(), and LiteRT with its default XNNPACK delegate died
    (SIGSEGV) reading inputs the operator did not have (a sweep of every builtin operator with
    0 to 4 inputs, each run in a child process, found these)."""
    m = ModelDef()
    m.tensors += [TensorDef(f"t{i}", "FLOAT32", (1, 4, 4, 4)) for i in range(5)]
    m.opcodes.append(OpCodeDef(s.BUILTIN_CODES[op]))
    m.operators.append(OperatorDef(0, tuple(range(n)), (4,)))
    m.inputs, m.outputs = list(range(n)), [4]
    with pytest.raises(MalformedModelError, match=f"is {op} with {n} inputs"):
        validate(build(m))
