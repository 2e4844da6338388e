"""Model identity: a path holds the model it is configured for, not any model of the same signer.

On 979eb13 the signature's file entry was matched by file name only: a vendor's other model,
signed under its own name and installed under this file name, verified, and anti-rollback
(keyed by the signed name) compared it with nothing. The expected name closes both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeward.core.errors import ConfigError, IntegrityError
from edgeward.core.keys import TrustStore, generate, write_keypair
from edgeward.core.persist import write_atomic
from edgeward.models.integrity import check_model, default_sig_path, sign_model, verify_model
from edgeward.models.rollback import RollbackState
from edgeward.models.watch import ModelWatch

EDGEWARD = str(Path(sys.executable).parent / "edgeward")


@pytest.fixture
def vendor(tmp_path: Path, examples_dir: Path):
    """One signer; the lock's face model, and the vendor's other model under the same file name."""
    key = generate("ed25519")
    _, pub = write_keypair(tmp_path / "keys", key)
    face = tmp_path / "device" / "lockface.tflite"
    face.parent.mkdir()
    shutil.copy(examples_dir / "digits_mlp.tflite", face)
    sig, _ = sign_model(face, key, name="lockface", version=5)
    write_atomic(default_sig_path(face), sig)
    other = tmp_path / "vendor" / "lockface.tflite"  # another product's model, same file name
    other.parent.mkdir()
    shutil.copy(examples_dir / "digits_cnn.tflite", other)
    other_sig, _ = sign_model(other, key, name="doorbell-person", version=1)
    write_atomic(default_sig_path(other), other_sig)
    return key, TrustStore.from_path(pub), pub, face, other


def _swap_in(face: Path, other: Path) -> None:
    shutil.copy(other, face)
    shutil.copy(default_sig_path(other), default_sig_path(face))


def test_attack_other_model_under_the_same_file_name_refused(vendor):
    _, trust, _, face, other = vendor
    assert verify_model(face, trust, name="lockface").name == "lockface"
    _swap_in(face, other)
    # without the expected name the file name is all that binds: the swap passes
    assert verify_model(face, trust).name == "doorbell-person"
    with pytest.raises(IntegrityError, match="signed as 'doorbell-person', not the expected "
                                             "'lockface'"):
        verify_model(face, trust, name="lockface")
    with pytest.raises(IntegrityError, match="not the expected"):
        check_model(face, trust, name="lockface")


def test_attack_rollback_sidestepped_by_another_model_name_refused(vendor, tmp_path):
    """Rollback state is keyed by the signed name: another name has no history to compare."""
    _, trust, _, face, other = vendor
    state = RollbackState(tmp_path / "state")
    verify_model(face, trust, state=state, name="lockface")  # lockface v5 accepted
    _swap_in(face, other)  # version 1 of another name
    with pytest.raises(IntegrityError, match="not the expected"):
        verify_model(face, trust, state=state, name="lockface")
    assert state.highest("doorbell-person") is None, "a refused model leaves no rollback state"


def test_openssf_bundle_cannot_satisfy_an_expected_name(vendor, monkeypatch):
    _, trust, _, face, _ = vendor
    from edgeward.models import integrity

    monkeypatch.setattr(integrity, "is_ossf_bundle", lambda sig: True)
    monkeypatch.setattr(integrity, "open_ossf_bundle", lambda *a, **k: None)
    with pytest.raises(ConfigError, match="OpenSSF model-signing bundles do not"):
        verify_model(face, trust, name="lockface")


def test_attack_swapped_model_seen_by_the_watch_with_its_expected_name(vendor):
    _, trust, _, face, other = vendor
    w = ModelWatch(trust, interval=1.0)
    w.add(face, name="lockface")
    assert [e.ok for e in w.poll(0.0)] == [True]
    _swap_in(face, other)
    (ev,) = w.poll(5.0)
    assert not ev.ok and "not the expected 'lockface'" in ev.reason


def test_cli_model_verify_name_refuses_another_model(vendor):
    _, _, pub, face, other = vendor
    ok = subprocess.run([EDGEWARD, "model", "verify", face, "--trust", pub, "--name", "lockface"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    _swap_in(face, other)
    r = subprocess.run([EDGEWARD, "model", "verify", face, "--trust", pub, "--name", "lockface"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not the expected 'lockface'" in lines[0], r.stderr
    j = subprocess.run([EDGEWARD, "model", "verify", face, "--trust", pub, "--name", "lockface",
                        "--json"], capture_output=True, text=True)
    assert j.returncode == 2
    assert json.loads(j.stdout)["verified"] is False
