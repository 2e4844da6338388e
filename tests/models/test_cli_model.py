"""The `edgeward keys` and `edgeward model` commands: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

EDGEWARD = str(Path(sys.executable).parent / "edgeward")


def ew(*args, check_rc=None):
    r = subprocess.run([EDGEWARD, *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, r.stdout, r.stderr)
    return r


def one_line_error(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def signed(tmp_path, examples_dir):
    ew("keys", "generate", "--out", tmp_path / "keys", check_rc=0)
    model = tmp_path / "digits_mlp.tflite"
    shutil.copy(examples_dir / "digits_mlp.tflite", model)
    ew("model", "sign", model, "--key", tmp_path / "keys/private.pem", "--name", "digits_mlp",
       "--version", "3", check_rc=0)
    return tmp_path, model


def test_keys_generate_writes_a_private_key_only_the_owner_can_read(tmp_path):
    r = ew("keys", "generate", "--out", tmp_path / "k", "--alg", "p256", "--json", check_rc=0)
    info = json.loads(r.stdout)
    assert len(bytes.fromhex(info["key_id"])) == 32
    mode = stat.S_IMODE((tmp_path / "k/private.pem").stat().st_mode)
    assert mode == 0o600
    r = ew("keys", "generate", "--out", tmp_path / "k")  # refuses to overwrite
    assert r.returncode == 1
    one_line_error(r)


def test_verify_ok_prints_one_line_and_json(signed):
    tmp, model = signed
    r = ew("model", "verify", model, "--trust", tmp / "keys/public.pem", check_rc=0)
    assert r.stdout.startswith("OK digits_mlp.tflite")
    r = ew("model", "verify", model, "--trust", tmp / "keys", "--json", check_rc=0)
    rep = json.loads(r.stdout)
    assert rep["verified"] and rep["version"] == 3 and rep["name"] == "digits_mlp"


def test_attack_tampered_model_exits_2_with_one_line(signed):
    tmp, model = signed
    data = bytearray(model.read_bytes())
    data[-100] ^= 1
    model.write_bytes(bytes(data))
    r = ew("model", "verify", model, "--trust", tmp / "keys/public.pem", check_rc=2)
    assert "rejected" in one_line_error(r)
    r = ew("model", "verify", model, "--trust", tmp / "keys/public.pem", "--json", check_rc=2)
    assert json.loads(r.stdout)["verified"] is False


def test_attack_rollback_through_the_command_line(signed):
    tmp, model = signed
    state = tmp / "state"
    ew("model", "verify", model, "--trust", tmp / "keys", "--state", state, check_rc=0)
    ew("model", "sign", model, "--key", tmp / "keys/private.pem", "--name", "digits_mlp",
       "--version", "2", "--out", tmp / "old.ewsig", check_rc=0)
    r = ew("model", "verify", model, "--trust", tmp / "keys", "--sig", tmp / "old.ewsig",
           "--state", state, check_rc=2)
    assert "lower" in one_line_error(r)


@pytest.mark.parametrize(
    "args, rc",
    [
        (["model", "verify", "{tmp}/absent.tflite", "--trust", "{tmp}/keys"], 1),
        (["model", "verify", "{tmp}", "--trust", "{tmp}/keys", "--sig", "{model}.ewsig"], 1),
        (["model", "verify", "{model}", "--trust", "{tmp}/nokeys"], 1),
        (["model", "verify", "{model}"], 1),
        (["model", "sign", "{model}", "--key", "{tmp}/keys/public.pem", "--name", "x",
          "--version", "1"], 1),
        (["model", "sign", "{model}", "--key", "{tmp}/keys/private.pem", "--name", "x",
          "--version", "-1"], 1),
    ],
)
def test_usage_errors_exit_1_with_one_line(signed, args, rc):
    tmp, model = signed
    r = ew(*[a.format(tmp=tmp, model=model) for a in args])
    assert r.returncode == rc, r.stderr
    assert "Traceback" not in r.stderr


def test_sign_refuses_a_malformed_model_with_exit_2(tmp_path, signed):
    tmp, _ = signed
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage" * 10)
    r = ew("model", "sign", bad, "--key", tmp / "keys/private.pem", "--name", "bad",
           "--version", "1", check_rc=2)
    one_line_error(r)
    assert not (tmp_path / "bad.tflite.ewsig").exists()


def test_inspect_shows_operators_and_io(signed):
    _, model = signed
    r = ew("model", "inspect", model, check_rc=0)
    assert "FULLY_CONNECTED" in r.stdout and "sha256" in r.stdout
    rep = json.loads(ew("model", "inspect", model, "--json", check_rc=0).stdout)
    assert rep["valid"] is True


def test_inspect_reports_a_malformed_model_with_exit_2(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 40)
    r = ew("model", "inspect", bad)
    assert r.returncode == 2
    one_line_error(r)


def test_debug_shows_the_traceback(tmp_path):
    r = ew("--debug", "model", "verify", tmp_path / "absent.tflite", "--trust", tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr
