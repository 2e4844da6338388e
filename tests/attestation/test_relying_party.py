"""Issue 9, hole 8: the relying party's and the agent's checks of an EAR.

An EAR says something about one device: ``check_ear`` and ``attest check-ear --device`` refuse
an EAR about another; the agent checks EARs with the verifier's EAR key in a trust store of its
own (``[attestation] verifier_key``), never with the command trust store.
"""

from __future__ import annotations

import pytest

from edgeward.attestation.ear import check_ear
from edgeward.core.errors import UnknownDeviceError


def test_attack_affirming_ear_of_another_device(world):
    """lock-0002 presents lock-0001's affirming EAR to a relying party expecting lock-0002."""
    result = world.verifier.verify(world.fresh_evidence())
    assert result.ear.affirming
    key = world.verifier.public_key
    with pytest.raises(UnknownDeviceError, match="about device lock-0001, not lock-0002"):
        check_ear(result.signed, key, now=world.clock(), max_age=60, device="lock-0002")
    assert check_ear(result.signed, key, now=world.clock(), max_age=60,
                     device="lock-0001").affirming


def test_attack_affirming_ear_of_another_device_on_the_command_line(world, tmp_path, capsys):
    from edgeward.agent.cli import main
    from edgeward.core.keys import write_keypair

    result = world.verifier.verify(world.fresh_evidence())
    (tmp_path / "ear.cbor").write_bytes(result.signed)
    write_keypair(tmp_path / "vk", world.verifier.ear_key)

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        return e.value.code, *capsys.readouterr()

    base = ("attest", "check-ear", tmp_path / "ear.cbor", "--verifier-key",
            tmp_path / "vk" / "public.pem", "--max-age", "86400")
    code, _, err = run(*base)
    assert code == 1 and "--device" in err  # the device is not optional
    code, _, err = run(*base, "--device", "lock-0002")
    assert code == 2 and "not lock-0002" in err
    code, out, _ = run(*base, "--device", "lock-0001")
    assert code == 0 and '"affirming"' in out


def test_attack_ear_key_in_the_command_trust_store(world, tmp_path):
    """The agent checked EARs against its command trust store; now only against the EAR key of
    [attestation] verifier_key, and a result signed by the command key is not accepted."""
    from edgeward.agent.seams import ear_trust, parse_result
    from edgeward.attestation.config import load_attester_config
    from edgeward.core import keys

    result = world.verifier.verify(world.fresh_evidence())
    keys.write_keypair(tmp_path / "ear-key", world.verifier.ear_key)
    cfg_path = world.config_path
    text = cfg_path.read_text().replace(
        "[attestation]\n", f'[attestation]\nverifier_key = "{tmp_path / "ear-key" / "public.pem"}"\n')
    cfg_path.write_text(text)
    trust = ear_trust(load_attester_config(cfg_path))
    now = world.clock()
    from edgeward.core.limits import DEFAULT_LIMITS

    assert parse_result(result.signed, DEFAULT_LIMITS, trust, now=now,
                        device="lock-0001") == "affirming"
    assert parse_result(result.signed, DEFAULT_LIMITS, trust, now=now, device="lock-0002") is None
    command_key = keys.generate("ed25519")
    from edgeward.attestation.ear import sign_ear

    forged = sign_ear(result.ear, command_key)  # the backend's command key signs a "result"
    assert parse_result(forged, DEFAULT_LIMITS, trust, now=now, device="lock-0001") is None
    assert ear_trust(None) is None


def test_mqtt_server_name_is_refused_not_ignored(tmp_path):
    from edgeward.agent.config import mqtt_settings
    from edgeward.core.errors import ConfigError
    from edgeward.core.tomlconf import Section

    sec = Section({"host": "127.0.0.1", "insecure": True, "server_name": "broker.example"},
                  source=tmp_path / "agent.toml", prefix="mqtt.")
    with pytest.raises(ConfigError, match="server_name"):
        mqtt_settings(sec, tmp_path, "dev-a")


def test_check_ear_with_the_wrong_key_points_at_verifier_key(world, tmp_path, capsys):
    """A newcomer passes the vendor's key: the answer names --verifier-key, not a trust store."""
    from edgeward.agent.cli import main
    from edgeward.core.keys import generate, write_keypair

    (tmp_path / "ear.cbor").write_bytes(world.verifier.verify(world.fresh_evidence()).signed)
    write_keypair(tmp_path / "other", generate())
    with pytest.raises(SystemExit) as e:
        main(["attest", "check-ear", str(tmp_path / "ear.cbor"), "--verifier-key",
              str(tmp_path / "other" / "public.pem"), "--device", "lock-0001",
              "--max-age", "60"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--verifier-key" in err and "trust store" not in err


def test_malformed_evidence_is_said_once(world):
    """A PNG given as evidence: one reason, not the same CBOR error twice."""
    result = world.verifier.verify(b"\x89PNG\r\n\x1a\n0000000000")
    assert not result.ear.affirming
    assert len(result.ear.reasons) == 1, result.ear.reasons
