"""The runtime adapter against the real runtime of this venv (LiteRT here, tflite-runtime 2.14 in
.venv-tflite): accuracy of the reference models, batching, quantised I/O, error translation,
and that ``model_content`` is referenced, not copied."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from edgeward.core.errors import MalformedModelError, RuntimeMissingError
from edgeward.models import runtime
from edgeward.models.refmodels import dense_model_of_size, mlp_int8_tflite, train_mlp
from edgeward.models.runtime import Runner, load_interpreter, runtime_name

LITERT = ("ai_edge_litert", "ai_edge_litert.interpreter")
TFLITE_RUNTIME = ("tflite_runtime", "tflite_runtime.interpreter")


def _hide(monkeypatch, modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError


def _accuracy(model: bytes, x: np.ndarray, y: np.ndarray) -> float:
    probs = Runner(model).run(x)
    assert probs.shape == (len(x), 10)
    return float(np.mean(probs.argmax(axis=1) == y))


def test_runtime_name():
    assert re.fullmatch(r"(ai-edge-litert|tflite-runtime) \d+\.\d+\.\d+.*", runtime_name())


def test_mlp_accuracy_in_runtime(digits_mlp_bytes, digits_split):
    _, _, x, y = digits_split
    acc = _accuracy(digits_mlp_bytes, x, y)
    print(f"digits_mlp in {runtime_name()}: {acc:.4f}")
    assert acc >= 0.93


def test_cnn_accuracy_in_runtime(digits_cnn_bytes, digits_split):
    _, _, x, y = digits_split
    acc = _accuracy(digits_cnn_bytes, x.reshape(-1, 8, 8, 1), y)
    print(f"digits_cnn in {runtime_name()}: {acc:.4f}")
    assert acc >= 0.95


def test_int8_mlp_accuracy_in_runtime(digits_mlp_int8_bytes, digits_split):
    _, _, x, y = digits_split
    acc = _accuracy(digits_mlp_int8_bytes, x, y)
    print(f"digits_mlp_int8 in {runtime_name()}: {acc:.4f}")
    assert acc >= 0.90


def test_int8_io_model_quantises_and_dequantises(digits_split):
    x, y, xt, yt = digits_split
    model = mlp_int8_tflite(train_mlp(x, y, hidden=(32,), epochs=30), x, int8_io=True)
    runner = Runner(model)
    assert np.dtype(runner.input["dtype"]) == np.int8
    probs = runner.run(xt)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.05)
    assert np.mean(probs.argmax(axis=1) == yt) >= 0.85
    raw = Runner(model, dequantize=False).run(xt[:3])
    assert raw.dtype == np.int8


def test_batch_and_loop_agree(digits_cnn_bytes, digits_split):
    _, _, x, _ = digits_split
    batched = Runner(digits_cnn_bytes, max_batch=64).run(x[:100])
    looped = np.concatenate([Runner(digits_cnn_bytes).run(s) for s in x[:5]])
    np.testing.assert_allclose(batched[:5], looped, rtol=1e-5, atol=1e-6)
    assert batched.shape == (100, 10)


def test_runner_shapes(digits_cnn_bytes, digits_split):
    _, _, x, _ = digits_split
    runner = Runner(digits_cnn_bytes)
    assert runner.run(x[0]).shape == (1, 10)  # one sample, flat
    assert runner.run(x[0].reshape(1, 8, 8, 1)).shape == (1, 10)  # exactly the input shape
    assert runner.run(x[:7].reshape(7, 8, 8, 1)).shape == (7, 10)
    with pytest.raises(ValueError, match="does not fit"):
        runner.run(np.zeros((3, 5), np.float32))


def test_runner_accepts_an_interpreter(digits_mlp_bytes, digits_split):
    _, _, x, _ = digits_split
    a = Runner(load_interpreter(digits_mlp_bytes)).run(x[:4])
    np.testing.assert_allclose(a, Runner(digits_mlp_bytes).run(x[:4]), rtol=1e-6)


def test_preserve_all_tensors_exposes_logits(digits_mlp_bytes, digits_split):
    _, _, x, _ = digits_split
    interp = load_interpreter(digits_mlp_bytes, preserve_all_tensors=True)
    interp.set_tensor(interp.get_input_details()[0]["index"], x[:1])
    interp.invoke()
    names = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    logits = interp.get_tensor(names["logits"])
    probs = interp.get_tensor(interp.get_output_details()[0]["index"])
    e = np.exp(logits - logits.max())
    np.testing.assert_allclose(e / e.sum(), probs, rtol=1e-4, atol=1e-6)


def test_only_immutable_bytes_are_loaded(digits_mlp_bytes):
    with pytest.raises(TypeError, match="must be bytes"):
        load_interpreter(bytearray(digits_mlp_bytes))  # type: ignore[arg-type]  # on purpose


@pytest.mark.parametrize(
    "content", [b"\0" * 64, b"\x10\x00\x00\x00TFL3" + b"\0" * 56], ids=["zeros", "empty-model"]
)
def test_model_the_runtime_rejects_is_malformed(content):
    with pytest.raises(MalformedModelError) as info:
        load_interpreter(content)
    assert info.value.__cause__ is not None and info.value.exit_code == 2


def test_no_runtime_raises_runtime_missing(monkeypatch):
    _hide(monkeypatch, LITERT + TFLITE_RUNTIME)
    with pytest.raises(RuntimeMissingError, match=r"pip install 'edgeward\[litert\]'") as info:
        load_interpreter(b"irrelevant")
    assert info.value.exit_code == 3 and "\n" not in str(info.value)
    with pytest.raises(RuntimeMissingError):
        runtime_name()


def test_falls_back_to_tflite_runtime_without_litert(monkeypatch, digits_mlp_bytes):
    _hide(monkeypatch, LITERT)
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeMissingError):
            load_interpreter(digits_mlp_bytes)
        return
    assert runtime_name().startswith("tflite-runtime ")
    assert type(load_interpreter(digits_mlp_bytes)).__module__.startswith("tflite_runtime")


def test_prefer_names_a_runtime():
    assert runtime_name(prefer="litert") == runtime_name(prefer="ai-edge-litert")
    with pytest.raises(ValueError, match="unknown TFLite runtime"):
        runtime_name(prefer="tensorflow")


@pytest.mark.tflite_runtime
def test_tflite_runtime_venv_uses_tflite_runtime():
    """In .venv-tflite (no LiteRT, numpy<2) the adapter must pick tflite-runtime 2.14.

    `make test` deselects this marker in .venv (where LiteRT is installed) and runs it in
    .venv-tflite."""
    import importlib.util

    assert importlib.util.find_spec("ai_edge_litert") is None, "LiteRT must be absent here"
    assert runtime_name() == "tflite-runtime 2.14.0"
    assert np.__version__.startswith("1.")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")
    return 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_model_content_is_not_copied():
    """The interpreter keeps a reference to the bytes and builds on them in place: loading a
    64 MiB model (XNNPACK off, which would repack the weights) grows memory by far less."""
    model = dense_model_of_size(64 << 20)
    before = _rss_mib()
    interp = load_interpreter(model, use_xnnpack=False)
    grown = _rss_mib() - before
    assert grown < 16, f"loading grew resident memory by {grown:.0f} MiB"
    assert any(v is model for v in vars(interp).values()), "interpreter must hold the bytes"
    out = interp.get_output_details()[0]
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((1, 1024), np.float32))
    interp.invoke()
    assert interp.get_tensor(out["index"]).shape == tuple(out["shape"])
    assert runtime  # the module under test


def _fixed_batch_model() -> bytes:
    """x [1, 4] -> RESHAPE(new_shape [1, 4]) -> y: resizing the batch fails at prepare."""
    from edgeward.models.tflite import schema as s
    from edgeward.models.tflite.builder import ModelDef, OperatorDef, TensorDef, build

    m = ModelDef()
    x = m.add_tensor(TensorDef("x", "FLOAT32", (1, 4)))
    y = m.add_tensor(TensorDef("y", "FLOAT32", (1, 4)))
    m.operators.append(
        OperatorDef(
            m.opcode(s.BUILTIN_CODES["RESHAPE"]),
            (x,),
            (y,),
            s.BuiltinOptions.RESHAPE,
            ((0, "ivec", (1, 4)),),
        )
    )
    m.inputs, m.outputs = [x], [y]
    return build(m)


def test_runner_loops_when_the_model_does_not_batch():
    runner = Runner(_fixed_batch_model())
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(runner.run(x), x)
    assert not runner._can_batch
    np.testing.assert_array_equal(runner.run(x[:1]), x[:1])  # still usable afterwards


def test_large_models_load_without_the_xnnpack_copy_by_default():
    """Above 64 MiB the default leaves XNNPACK off, so verify-and-load holds one copy."""
    from edgeward.models import runtime

    big = dense_model_of_size(runtime.XNNPACK_AUTO_MAX_BYTES + (4 << 20))
    before = _rss_mib()
    interp = load_interpreter(big)
    interp.invoke()
    grown = _rss_mib() - before
    assert grown < 16, f"default load of a large model grew memory by {grown:.0f} MiB"
