"""Sign, verify and load models; each attack test names the attack it stands for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.core.errors import (
    ConfigError,
    DigestMismatchError,
    IntegrityError,
    RollbackError,
    SignatureError,
    UntrustedKeyError,
)
from edgeward.core.keys import TrustStore, generate, write_keypair
from edgeward.core.persist import write_atomic
from edgeward.models import integrity
from edgeward.models.integrity import default_sig_path, sign_model, verify_model
from edgeward.models.rollback import RollbackState

BIN = Path(sys.executable).parent


@pytest.fixture(params=["ed25519", "p256"])
def signer(request, tmp_path):
    key = generate(request.param)
    _, pub = write_keypair(tmp_path / f"keys-{request.param}", key)
    return key, TrustStore.from_path(pub), pub


@pytest.fixture
def work(tmp_path, examples_dir):
    d = tmp_path / "models"
    d.mkdir()
    for name in ("digits_mlp.tflite", "digits_cnn.tflite"):
        shutil.copy(examples_dir / name, d / name)
    return d


def _sign(model: Path, key, *, name=None, version=1, out=None, **kw) -> Path:
    sig, _ = sign_model(model, key, name=name or model.stem, version=version, **kw)
    out = out or default_sig_path(model)
    write_atomic(out, sig)
    return out


def test_sign_then_verify_returns_the_exact_bytes(work, signer):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key, version=7)
    vm = verify_model(model, trust)
    assert vm.content == model.read_bytes()
    assert vm.manifest is not None and vm.manifest.version == 7
    assert vm.signer_key_id == key.key_id
    assert "FULLY_CONNECTED" in vm.summary.operators


def test_verified_bytes_are_the_loaded_bytes_after_a_swap_on_disk(work, signer):
    """TOCTOU: the file is replaced right after the check; the interpreter gets the checked bytes."""
    from edgeward.models.runtime import load_interpreter

    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key)
    original = model.read_bytes()
    vm = verify_model(model, trust)
    shutil.copy(work / "digits_cnn.tflite", model)  # the swap
    interp = load_interpreter(vm.content)
    interp.allocate_tensors()
    assert vm.content == original
    assert list(interp.get_input_details()[0]["shape"]) == [1, 64]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_attack_byte_flip_in_the_weights(work, signer):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key)
    _flip(model, model.stat().st_size // 2)
    with pytest.raises(DigestMismatchError, match="SHA-256"):
        verify_model(model, trust)


def test_attack_appended_bytes(work, signer):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key)
    with open(model, "ab") as f:
        f.write(b"\x00" * 16)
    with pytest.raises(DigestMismatchError, match="bytes but the signed size"):
        verify_model(model, trust)


@pytest.mark.parametrize("keep", [0, 1, 100, 4096])
def test_attack_truncated_or_empty_model(work, signer, keep):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key)
    model.write_bytes(model.read_bytes()[:keep])
    with pytest.raises(DigestMismatchError):
        verify_model(model, trust)


def test_attack_random_bytes_in_place_of_the_model(work, signer):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, key)
    model.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DigestMismatchError):
        verify_model(model, trust)


def test_attack_mix_and_match_manifest_of_another_model(work, signer):
    key, trust, _ = signer
    mlp, cnn = work / "digits_mlp.tflite", work / "digits_cnn.tflite"
    _sign(mlp, key)
    cnn_sig = _sign(cnn, key)
    with pytest.raises(DigestMismatchError, match="mix-and-match"):
        verify_model(mlp, trust, sig_path=cnn_sig)


def test_attack_mix_and_match_model_renamed_to_the_signed_name(work, signer):
    """The CNN copied over under the MLP's name and signature: the digest gives it away."""
    key, trust, _ = signer
    mlp, cnn = work / "digits_mlp.tflite", work / "digits_cnn.tflite"
    _sign(mlp, key)
    shutil.copy(cnn, mlp)
    with pytest.raises(DigestMismatchError):
        verify_model(mlp, trust)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_attack_edited_manifest(work, signer, where):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    sig = _sign(model, key)
    size = sig.stat().st_size
    _flip(sig, {"start": 8, "middle": size // 2, "end": size - 3}[where])
    with pytest.raises(IntegrityError):
        verify_model(model, trust)


def test_attack_manifest_signed_by_an_untrusted_key(work, signer):
    _, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, generate("ed25519"))
    with pytest.raises(UntrustedKeyError):
        verify_model(model, trust)


def test_trust_store_directory_accepts_any_listed_key(work, tmp_path):
    a, b = generate("ed25519"), generate("p256")
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    (trust_dir / "a.pem").write_bytes(a.public.to_pem())
    (trust_dir / "b.pem").write_bytes(b.public.to_pem())
    trust = TrustStore.from_path(trust_dir)
    model = work / "digits_mlp.tflite"
    _sign(model, b)
    assert verify_model(model, trust).signer_key_id == b.key_id


def test_attack_rollback_lower_version_after_higher(work, signer, tmp_path):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    v5 = _sign(model, key, version=5, out=tmp_path / "v5.ewsig")
    v3 = _sign(model, key, version=3, out=tmp_path / "v3.ewsig")
    state_dir = tmp_path / "state"
    verify_model(model, trust, sig_path=v5, state=RollbackState(state_dir))
    # a new process: a fresh state object reads what the first one persisted
    with pytest.raises(RollbackError, match="lower"):
        verify_model(model, trust, sig_path=v3, state=RollbackState(state_dir))
    verify_model(model, trust, sig_path=v5, state=RollbackState(state_dir))  # same version: ok


def test_a_rejected_model_does_not_raise_the_rollback_floor(work, signer, tmp_path):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    v9 = _sign(model, key, version=9, out=tmp_path / "v9.ewsig")
    _sign(model, key, version=2)
    _flip(model, 200)
    state = RollbackState(tmp_path / "state")
    with pytest.raises(DigestMismatchError):
        verify_model(model, trust, sig_path=v9, state=state)
    assert state.highest("digits_mlp") is None


def test_signature_is_checked_before_the_model_is_parsed(work, signer, monkeypatch):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    _sign(model, generate("ed25519"))
    calls = []
    monkeypatch.setattr(integrity, "validate", lambda *a, **k: calls.append(1))
    with pytest.raises(SignatureError):
        verify_model(model, trust)
    assert calls == []


@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_directory_or_missing_model_is_a_usage_error(work, signer, kind):
    key, trust, _ = signer
    model = work / "digits_mlp.tflite"
    sig = _sign(model, key)
    target = work if kind == "directory" else work / "absent.tflite"
    with pytest.raises(ConfigError):
        verify_model(target, trust, sig_path=sig)
    with pytest.raises(ConfigError):
        verify_model(model, trust, sig_path=work / "absent.ewsig")


def test_sign_refuses_a_model_the_validator_rejects(tmp_path, signer):
    key, _, _ = signer
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(IntegrityError):
        sign_model(bad, key, name="bad", version=1)


def test_openssf_bundle_made_by_model_signing_verifies(work, tmp_path):
    key = generate("p256")
    priv, pub = write_keypair(tmp_path / "k", key)
    model = work / "digits_mlp.tflite"
    bundle = tmp_path / "model.sig"
    subprocess.run(
        [str(BIN / "model_signing"), "sign", "key", "--private_key", str(priv),
         "--signature", str(bundle), str(model)],
        check=True, capture_output=True,
    )
    trust = TrustStore.from_path(pub)
    vm = verify_model(model, trust, sig_path=bundle)
    assert vm.scheme == "openssf-model-signing"
    assert vm.content == model.read_bytes()
    _flip(model, model.stat().st_size // 3)
    with pytest.raises(DigestMismatchError):
        verify_model(model, trust, sig_path=bundle)
    with pytest.raises(ConfigError, match="anti-rollback"):
        verify_model(model, trust, sig_path=bundle, state=RollbackState(tmp_path / "s"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_mutated_model_or_manifest_always_gets_a_clean_verdict(
    work, digits_mlp_bytes, data
):
    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = work / "digits_mlp.tflite"
    model.write_bytes(digits_mlp_bytes)
    sig_path = _sign(model, key)
    target = data.draw(st.sampled_from([model, sig_path]))
    raw = bytearray(target.read_bytes())
    op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        del raw[pos:]
    else:
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    target.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        verify_model(model, trust)


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """A valid 9 MiB dense model: above one 4 MiB shard, so its manifest carries shard digests."""
    from edgeward.models.refmodels.dense import write_dense_model

    path = tmp_path_factory.mktemp("big") / "dense.tflite"
    write_dense_model(path, 9 * 1024 * 1024)
    return path


@pytest.mark.parametrize("where", [0.1, 0.5, 0.999])
def test_attack_byte_flip_in_any_shard_of_a_large_model(big_model, tmp_path, where):
    from edgeward.models.integrity import check_model

    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = tmp_path / big_model.name
    shutil.copy(big_model, model)
    _, manifest = sign_model(model, key, name="dense", version=1)
    _sign(model, key, name="dense")
    assert len(manifest.files[0].shards) == 3
    assert verify_model(model, trust).sha256 == manifest.files[0].sha256
    assert check_model(model, trust).sha256 == manifest.files[0].sha256
    _flip(model, int(model.stat().st_size * where))
    with pytest.raises(DigestMismatchError, match="shard"):
        verify_model(model, trust)
    with pytest.raises(DigestMismatchError, match="shard"):
        check_model(model, trust)


def test_check_model_is_verify_model_without_the_copy(work, signer):
    from edgeward.models.integrity import check_model

    key, trust, _ = signer
    model = work / "digits_cnn.tflite"
    _sign(model, key, version=4)
    a, b = verify_model(model, trust), check_model(model, trust)
    assert (a.sha256, a.size, a.summary, a.manifest) == (b.sha256, b.size, b.summary, b.manifest)
    assert not hasattr(b, "content")
    _flip(model, 100)
    with pytest.raises(IntegrityError):
        check_model(model, trust)


def _tiny_model(opcode=None, external=False) -> bytes:
    """x [1, 4] -> FULLY_CONNECTED -> y [1, 3], optionally a custom op or an external buffer."""
    import numpy as np

    from edgeward.models.tflite import schema as s
    from edgeward.models.tflite.builder import (
        BufferDef,
        ModelDef,
        OpCodeDef,
        OperatorDef,
        TensorDef,
        build,
    )

    m = ModelDef()
    w = (np.arange(12, dtype=np.float32) / 10).tobytes()
    m.buffers.append(BufferDef(offset=16, size=48) if external else BufferDef(w))
    m.tensors += [TensorDef("input", "FLOAT32", (1, 4)),
                  TensorDef("weights", "FLOAT32", (3, 4), 1),
                  TensorDef("output", "FLOAT32", (1, 3))]
    m.opcodes.append(opcode or OpCodeDef(s.BUILTIN_CODES["FULLY_CONNECTED"]))
    m.operators.append(OperatorDef(0, (0, 1, -1), (2,), s.BuiltinOptions.FULLY_CONNECTED,
                                   ((0, "b", 0),)))
    m.inputs, m.outputs = [0], [2]
    return build(m)


def test_attack_custom_op_model_needs_the_signers_explicit_consent(tmp_path):
    from edgeward.core.errors import PolicyError
    from edgeward.models.tflite import schema as s
    from edgeward.models.tflite.builder import OpCodeDef

    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = tmp_path / "custom.tflite"
    model.write_bytes(_tiny_model(OpCodeDef(s.CUSTOM, "EvilOp")))
    with pytest.raises(PolicyError, match="EvilOp"):
        sign_model(model, key, name="custom", version=1)
    _sign(model, key, name="custom", allow_custom_ops=True)
    vm = verify_model(model, trust)
    assert vm.manifest is not None and vm.manifest.allow_custom_ops
    assert "CUSTOM:EvilOp" in vm.summary.operators


def test_attack_custom_op_swapped_into_a_model_signed_without_consent(tmp_path):
    """The signer vouched for a builtin-only model; the same name now holds a custom op."""
    from edgeward.models.tflite import schema as s
    from edgeward.models.tflite.builder import OpCodeDef

    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = tmp_path / "m.tflite"
    model.write_bytes(_tiny_model())
    _sign(model, key, name="m")
    model.write_bytes(_tiny_model(OpCodeDef(s.CUSTOM, "EvilOp")))
    with pytest.raises(IntegrityError):
        verify_model(model, trust)


def test_attack_external_buffer_model_is_never_signed(tmp_path):
    from edgeward.core.errors import PolicyError

    key = generate("ed25519")
    model = tmp_path / "ext.tflite"
    model.write_bytes(_tiny_model(external=True))
    with pytest.raises(PolicyError, match="offset/size"):
        sign_model(model, key, name="ext", version=1)
    with pytest.raises(PolicyError):
        sign_model(model, key, name="ext", version=1, allow_custom_ops=True)


def test_a_renamed_model_is_told_to_take_its_signed_name_back(work, signer):
    """A newcomer renames a genuine model: the error says the name is signed, not only
    'mix-and-match' (issue: a renamed model was reported as mix-and-match alone)."""
    import shutil

    key, trust, _ = signer
    mlp = work / "digits_mlp.tflite"
    sig = _sign(mlp, key)
    renamed = work / "lockface.tflite"
    shutil.copy(mlp, renamed)
    with pytest.raises(DigestMismatchError) as e:
        verify_model(renamed, trust, sig_path=sig)
    assert "renamed" in (e.value.hint or "") and "digits_mlp.tflite" in str(e.value)


def test_attack_model_cut_short_while_it_is_read(big_model, tmp_path, monkeypatch):
    """The model is truncated between the size check and the read: a digest verdict, no bytes."""
    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = tmp_path / big_model.name
    shutil.copy(big_model, model)
    _sign(model, key, name="dense")
    real = integrity.read_shards

    def cut_then_read(fd, size, shard_size):
        os.truncate(model, size // 2)
        return real(fd, size, shard_size)

    monkeypatch.setattr(integrity, "read_shards", cut_then_read)
    with pytest.raises(DigestMismatchError, match="got shorter while it was read"):
        verify_model(model, trust)


def test_a_large_model_loads_from_the_bytes_its_shards_were_checked_in(big_model, tmp_path):
    from edgeward.models.runtime import load_interpreter

    key = generate("ed25519")
    trust = TrustStore([key.public])
    model = tmp_path / big_model.name
    shutil.copy(big_model, model)
    _sign(model, key, name="dense")
    vm = verify_model(model, trust)
    assert type(vm.content) is bytes and vm.content == big_model.read_bytes()
    load_interpreter(vm.content).allocate_tensors()
