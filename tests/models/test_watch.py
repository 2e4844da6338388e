"""The re-verification watch notices models replaced or altered on disk."""

from __future__ import annotations

import shutil

import pytest

from edgeward.core.keys import TrustStore, generate
from edgeward.core.persist import write_atomic
from edgeward.models.integrity import default_sig_path, sign_model
from edgeward.models.watch import ModelWatch


@pytest.fixture
def setup(tmp_path, examples_dir):
    key = generate("ed25519")
    model = tmp_path / "digits_mlp.tflite"
    shutil.copy(examples_dir / "digits_mlp.tflite", model)
    sig, _ = sign_model(model, key, name="digits_mlp", version=1)
    write_atomic(default_sig_path(model), sig)
    watch = ModelWatch(trust=TrustStore([key.public]), interval=60.0)
    watch.add(model)
    return watch, model, examples_dir


def test_first_poll_verifies_and_reports_a_change_of_verdict(setup):
    watch, model, _ = setup
    [ev] = watch.poll(now=0.0)
    assert ev.ok and ev.changed and ev.trigger == "initial"
    assert watch.poll(now=10.0) == []  # nothing changed, not due


def test_attack_model_replaced_on_disk_is_caught_at_the_next_poll(setup):
    watch, model, examples = setup
    watch.poll(now=0.0)
    shutil.copy(examples / "digits_cnn.tflite", model)
    [ev] = watch.poll(now=1.0)
    assert not ev.ok and ev.changed and ev.trigger == "file-changed"
    assert ev.error_kind == "DigestMismatchError"
    assert watch.status() == {"digits_mlp.tflite": False}


def test_attack_byte_flip_hidden_from_stat_is_caught_by_the_schedule(setup):
    """An attacker who also hides the change from stat (same size, times, inode)."""
    from edgeward.models.watch import _stat_key

    watch, model, _ = setup
    watch.poll(now=0.0)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x80
    with open(model, "r+b") as f:
        f.write(bytes(data))
    w = watch._models[model]
    w.stat_key = (_stat_key(model), _stat_key(w.sig_path))  # the change is invisible to stat
    assert watch.poll(now=30.0) == []
    [ev] = watch.poll(now=61.0)
    assert ev.trigger == "scheduled" and not ev.ok and ev.error_kind == "DigestMismatchError"


def test_a_restored_model_reports_recovery_once(setup):
    watch, model, examples = setup
    watch.poll(now=0.0)
    good = model.read_bytes()
    shutil.copy(examples / "digits_cnn.tflite", model)
    assert not watch.poll(now=1.0)[0].ok
    model.write_bytes(good)
    [ev] = watch.poll(now=2.0)
    assert ev.ok and ev.changed
    [ev] = watch.check_all(now=3.0)
    assert ev.ok and not ev.changed and ev.trigger == "requested"


def test_missing_model_is_a_failed_check_not_a_crash(setup):
    watch, model, _ = setup
    watch.poll(now=0.0)
    model.unlink()
    [ev] = watch.poll(now=1.0)
    assert not ev.ok and ev.error_kind == "ConfigError"
