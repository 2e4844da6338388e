"""Pair tests: the attester core against the verifier core, no broker (software key path)."""

from __future__ import annotations

import dataclasses

import pytest

from edgeward.attestation import claims as C
from edgeward.attestation.ear import check_ear, decode_ear
from edgeward.attestation.refvalues import open_refvalues
from edgeward.core.errors import FreshnessError, SignatureError


def test_software_evidence_is_affirming(world):
    result = world.verifier.verify(world.fresh_evidence())
    assert result.ear.affirming, result.ear.reasons
    v = result.ear.vector
    assert v.instance_identity == C.TRUSTWORTHY_INSTANCE
    assert v.executables == C.APPROVED_RUNTIME
    assert v.configuration == C.APPROVED_CONFIG
    assert v.file_system == C.APPROVED_FILES
    assert v.hardware == C.NO_CLAIM  # software key: hardware not attested
    assert any("software key" in r for r in result.ear.reasons)
    assert result.device == "lock-0001"


def test_ear_offline_check_nonce_and_age(world):
    ev = world.fresh_evidence()
    result = world.verifier.verify(ev)
    key = world.verifier.public_key
    ear = check_ear(result.signed, key, now=world.clock(), max_age=60)
    assert ear.affirming and ear.device == "lock-0001"
    assert check_ear(result.signed, key, now=world.clock(), nonce=ear.nonce).affirming
    with pytest.raises(FreshnessError):
        check_ear(result.signed, key, now=world.clock() + 3600, max_age=60)
    with pytest.raises(FreshnessError):
        check_ear(result.signed, key, now=world.clock(), nonce=b"x" * 32)
    forged = bytearray(result.signed)
    forged[-3] ^= 1
    with pytest.raises(SignatureError):
        check_ear(bytes(forged), key, now=world.clock(), max_age=60)


def test_evidence_declares_key_kind_and_claims(world):
    from edgeward.core import cbor, cose

    msg = cose.verify1(world.fresh_evidence(), world.attester.signer.public)
    claims = cbor.loads(msg.payload)
    assert claims[C.EW_KEY_KIND] == "software"
    for key in (C.EAT_NONCE, C.UEID, C.HWMODEL, C.SWNAME, C.SWVERSION, C.IAT, C.BOOTCOUNT,
                C.MEASUREMENTS, C.DBGSTAT, C.HWVERSION):
        assert key in claims
    assert claims[C.UEID][0] == C.UEID_RAND


def test_bootcount_is_persisted_and_monotonic(world, tmp_path):
    from edgeward.attestation.attester import boot_count

    boot_id = tmp_path / "boot_id"
    boot_id.write_text("a")
    assert boot_count(tmp_path / "bc", boot_id_path=boot_id) == 1
    assert boot_count(tmp_path / "bc", boot_id_path=boot_id) == 1  # agent restart, same boot
    boot_id.write_text("b")
    assert boot_count(tmp_path / "bc", boot_id_path=boot_id) == 2
    assert (tmp_path / "bc" / "counter-bootcount.json").exists()


def test_bootcount_carries_on_from_the_older_bootcount_file(tmp_path):
    # A device upgraded from the bootcount.json format must not restart at 1: the verifier
    # would read that as a rolled-back device.
    from edgeward.attestation.attester import boot_count

    (tmp_path / "bc").mkdir()
    (tmp_path / "bc" / "bootcount.json").write_text('{"bootcount": 41, "boot_id": "a"}')
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("a\n")
    assert boot_count(tmp_path / "bc", boot_id_path=boot_id) == 41
    boot_id.write_text("b\n")
    assert boot_count(tmp_path / "bc", boot_id_path=boot_id) == 42


def test_result_history_is_stored(world):
    world.verifier.verify(world.fresh_evidence())
    hist = world.verifier.store.history("lock-0001")
    assert len(hist) == 1 and hist[0][1] == C.TIER_AFFIRMING
    assert decode_ear(hist[0][2], world.verifier.public_key).device == "lock-0001"


def test_refvalues_must_be_signed_by_the_vendor(world, signed_refvalues):
    from edgeward.core import keys
    from edgeward.core.errors import UntrustedKeyError

    rv = open_refvalues(signed_refvalues, world.vendor.public)
    assert rv.board == "smartlock-pi4"
    with pytest.raises(UntrustedKeyError):
        open_refvalues(signed_refvalues, keys.generate("ed25519").public)
    tampered = signed_refvalues.replace(b"smartlock-pi4", b"smartlock-pi5")
    with pytest.raises(SignatureError):
        open_refvalues(tampered, world.vendor.public)


def test_refvalues_dir_refuses_unsigned_and_wrongly_signed(world, tmp_path, caplog):
    from edgeward.attestation.refvalues import sign_refvalues
    from edgeward.attestation.service.verifier import load_refvalues_dir
    from edgeward.core import cbor, keys
    from edgeward.core.keys import TrustStore

    d = tmp_path / "refs"
    d.mkdir()
    (d / "unsigned.ewref").write_bytes(cbor.dumps(world.refvalues().to_cbor()))
    (d / "rogue.ewref").write_bytes(sign_refvalues(world.refvalues(), keys.generate()))
    assert load_refvalues_dir(d, TrustStore([world.vendor.public]), world.verifier.limits) == {}
    assert "refusing reference values" in caplog.text
    (d / "good.ewref").write_bytes(sign_refvalues(world.refvalues(issued=5), world.vendor))
    got = load_refvalues_dir(d, TrustStore([world.vendor.public]), world.verifier.limits)
    assert got["smartlock-pi4"].issued == 5


def test_no_refvalues_for_board_is_not_affirming(world):
    world.verifier.refvalues = {}
    result = world.verifier.verify(world.fresh_evidence())
    assert result.ear.status == C.TIER_WARNING
    assert any("no signed reference values" in r for r in result.ear.reasons)


def test_config_change_is_flagged(world):
    rv = world.refvalues()
    rel = dataclasses.replace(rv.releases[0], agent_config=frozenset({b"\x01" * 32}))
    world.install_refvalues(dataclasses.replace(rv, releases=(rel,)))
    result = world.verifier.verify(world.fresh_evidence())
    assert result.ear.vector.configuration == C.UNSAFE_CONFIG
    assert not result.ear.affirming


def test_sig_structure_is_the_deterministic_encoding():
    """The fast Sig_structure (one per appraisal) is byte for byte the reference encoder's."""
    from edgeward.core import cbor, cose

    for n in (0, 23, 24, 255, 256, 65535, 65536, 70000):
        p = b"p" * n
        for aad in (b"", b"a" * 24):
            want = cbor.dumps(["Signature1", b"\xa1\x01\x27", aad, p])
            assert cose.sig_structure(b"\xa1\x01\x27", aad, p) == want


def test_agent_code_digest_covers_names_and_contents(tmp_path):
    from edgeward.attestation.measure import agent_code_digest

    (tmp_path / "a.py").write_text("x = 1\n")
    d1 = agent_code_digest(tmp_path)
    assert agent_code_digest(tmp_path) == d1
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert agent_code_digest(tmp_path) == d1
    (tmp_path / "a.py").write_text("x = 2\n")
    assert agent_code_digest(tmp_path) != d1
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert agent_code_digest(tmp_path) != d1
    assert len(agent_code_digest()) == 32  # the installed agent


def test_config_digest_ignores_device_table(tmp_path):
    from edgeward.attestation.measure import config_digest

    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('[device]\nname = "lock-0001"\n[mqtt]\nhost = "x"\n')
    b.write_text('[mqtt]\nhost = "x"\n[device]\nname = "lock-0002"\n')
    assert config_digest(a) == config_digest(b)
    b.write_text('[mqtt]\nhost = "y"\n[device]\nname = "lock-0002"\n')
    assert config_digest(a) != config_digest(b)


def test_refvalues_from_vendor_toml():
    from edgeward.attestation.refvalues import from_toml
    from edgeward.core.errors import ConfigError
    from edgeward.core.tomlconf import parse_toml

    h = "ab" * 32
    text = f"""
board = "smartlock-pi4"
min_swversion = "1.2.0"
require_tpm = true
[[releases]]
swversion = "1.2.0"
agent_code = ["{h}"]
agent_config = []
[[models]]
name = "lockface"
min_version = 3
digests = ["{h}"]
[pcrs]
0 = "{h}"
7 = "{h}"
"""
    rv = from_toml(parse_toml(text), issued=9)
    assert rv.require_tpm and rv.pcrs == {0: bytes.fromhex(h), 7: bytes.fromhex(h)}
    release, model = rv.release("1.2.0"), rv.model("lockface")
    assert release is not None and release.agent_code == {bytes.fromhex(h)}
    assert model is not None and model.min_version == 3
    with pytest.raises(ConfigError):
        from_toml(parse_toml(text.replace(f'0 = "{h}"', '0 = "abc"')), issued=9)
    with pytest.raises(ConfigError):
        from_toml(parse_toml(text + "\nbogus = 1\n"), issued=9)
