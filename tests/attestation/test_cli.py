"""The vendor walk-through of docs/ATTESTATION.md through the real command line."""

from __future__ import annotations

import json

import pytest

from edgeward.agent.cli import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


VERIFIER_TOML = """
[verifier]
database = "verifier/state.sqlite"
key_file = "verifier/key/private.pem"

[enrollment]
maker_cas = ["maker-ca/ca.pem"]

[refvalues]
vendor_keys = "vendor/public.pem"
dir = "refvalues"

[policy]
software_keys = "affirming"
nonce_ttl = 60
"""

AGENT_TOML = """
[device]
name = "lock-0001"
board = "smartlock-pi4"
key = "software"
key_file = "device/private.pem"
cert_file = "device/cert.pem"

[attestation]
state_dir = "state"
models = ["models/lockface.tflite"]
dbgstat = "disabled"
agent_root = "code"
"""


@pytest.mark.parametrize("key", ["software", "tpm"])
def test_walkthrough_key_generation_to_affirming(tmp_path, capsys, monkeypatch, model_writer,
                                                 key, request):
    monkeypatch.chdir(tmp_path)
    agent_toml = AGENT_TOML
    if key == "tpm":
        tcti = request.getfixturevalue("swtpm").tcti
        agent_toml = agent_toml.replace('key = "software"', f'key = "tpm"\ntpm_tcti = "{tcti}"')
    (tmp_path / "models").mkdir()
    model_writer(tmp_path / "models")
    (tmp_path / "refvalues").mkdir()
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "agent.py").write_text("print('hi')\n")
    (tmp_path / "verifier.toml").write_text(VERIFIER_TOML)
    (tmp_path / "agent.toml").write_text(agent_toml)

    assert run(capsys, "keys", "generate", "--out", "vendor")[0] == 0
    assert run(capsys, "keys", "generate", "--out", "verifier/key")[0] == 0
    assert run(capsys, "keys", "generate", "--out", "device")[0] == 0
    assert run(capsys, "attest", "ca", "init", "--out", "maker-ca", "--name", "Acme CA")[0] == 0
    assert run(capsys, "attest", "pubkey", "--config", "agent.toml", "--out", "dev.pub")[0] == 0
    code, _, err = run(capsys, "attest", "ca", "issue", "--ca", "maker-ca", "--pubkey",
                       "dev.pub", "--device", "lock-0001", "--out", "device/cert.pem",
                       *(["--tpm"] if key == "tpm" else []))
    assert code == 0, err
    code, ref, err = run(capsys, "attest", "measure", "--config", "agent.toml")
    assert code == 0, err
    assert ("[pcrs]" in ref) == (key == "tpm")
    (tmp_path / "ref.toml").write_text(ref)
    code, _, err = run(capsys, "attest", "refvalues", "sign", "ref.toml", "--key",
                       "vendor/private.pem", "--out", "refvalues/smartlock-pi4.ewref")
    assert code == 0, err

    from edgeward.attestation.config import load_verifier_config
    from edgeward.attestation.service.verifier import Verifier

    v = Verifier.from_config(load_verifier_config(tmp_path / "verifier.toml"))
    assert v.reload_refvalues() == 1
    v.close()

    code, nonce, err = run(capsys, "attest", "challenge", "--verifier-config", "verifier.toml",
                           "--device", "lock-0001")
    assert code == 0, err
    code, _, err = run(capsys, "attest", "evidence", "--config", "agent.toml", "--nonce",
                       nonce.strip(), "--out", "evidence.cbor")
    assert code == 0, err
    code, out, err = run(capsys, "attest", "verify", "evidence.cbor", "--verifier-config",
                         "verifier.toml", "--json", "--out", "ear.cbor")
    assert code == 0, (out, err)
    ear = json.loads(out)
    assert ear["submods"]["edgeward-agent"]["ear.status"] == "affirming"
    hardware = ear["submods"]["edgeward-agent"]["ear.trustworthiness-vector"]["hardware"]
    assert hardware == (2 if key == "tpm" else 0)

    code, out, _ = run(capsys, "attest", "check-ear", "ear.cbor", "--verifier-key",
                       "verifier/key/public.pem", "--nonce", nonce.strip(),
                       "--device", "lock-0001")
    assert code == 0

    # replay: the same evidence again is refused with exit 2, EAR still printed
    code, out, err = run(capsys, "attest", "verify", "evidence.cbor", "--verifier-config",
                         "verifier.toml")
    assert code == 2
    assert out.strip() and "contraindicated" in err and "already used" in err


def test_challenge_requires_device_and_bad_config_exits_1(tmp_path, capsys):
    (tmp_path / "v.toml").write_text("[verifier]\nkey_file='x'\n")
    code, _, err = run(capsys, "attest", "challenge", "--verifier-config", tmp_path / "v.toml",
                       "--device", "d")
    assert code == 1 and "refvalues" in err
    code, _, _ = run(capsys, "attest", "challenge", "--verifier-config", tmp_path / "v.toml")
    assert code == 1
