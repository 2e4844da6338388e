"""Adversarial tests: each attack named in issue 3 gets a clean, negative verdict, never a crash."""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.attestation import claims as C
from edgeward.attestation.appraisal import Policy
from edgeward.attestation.enroll import issue_device_cert, make_ca
from edgeward.attestation.evidence import sign_evidence
from edgeward.core import cbor, keys
from edgeward.firmware_shim.signer import SignerKind
from edgeward.firmware_shim.sim.signer import SoftwareSigner


def _verify(world, token):
    result = world.verifier.verify(token)
    assert not result.ear.affirming
    assert result.ear.reasons, "a negative verdict must say why"
    return result.ear


def _resign(world, nonce, **changes):
    ev = dataclasses.replace(world.attester.claims(nonce), **changes)
    return sign_evidence(ev, world.attester.signer, x5chain=world.attester.cert_chain)


def test_attack_replay_of_used_evidence(world):
    token = world.fresh_evidence()
    assert world.verifier.verify(token).ear.affirming
    ear = _verify(world, token)
    assert ear.status == C.TIER_CONTRAINDICATED
    assert any("already used" in r for r in ear.reasons)


def test_attack_nonce_never_issued(world):
    ear = _verify(world, world.attester.evidence(b"\x42" * 32))
    assert any("never issued" in r for r in ear.reasons)


def test_attack_nonce_expired(world):
    nonce = world.verifier.challenge("lock-0001")
    world.clock.advance(61)
    ear = _verify(world, world.attester.evidence(nonce))
    assert any("expired" in r for r in ear.reasons)


def test_attack_nonce_issued_to_another_device(world):
    nonce = world.verifier.challenge("lock-0002")
    ear = _verify(world, world.attester.evidence(nonce))
    assert any("issued to device 'lock-0002'" in r for r in ear.reasons)


def test_attack_signature_by_unenrolled_key(world):
    world.attester.signer = SoftwareSigner(keys.generate("ed25519"))
    world.attester.cert_chain = []
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert any("not enrolled" in r for r in ear.reasons)


def test_attack_endorsement_from_untrusted_ca(world):
    rogue_key = keys.generate("p256")
    rogue = make_ca(rogue_key, "Rogue CA", now=world.clock())
    signer = SoftwareSigner(keys.generate("ed25519"))
    cert = issue_device_cert(rogue_key, rogue, signer.public, "lock-0001", now=world.clock())
    world.attester.signer = signer
    world.attester.cert_chain = [cert.public_bytes(Encoding.DER)]
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert any("not endorsed by a trusted maker CA" in r for r in ear.reasons)
    assert world.verifier.store.device_by_key(signer.key_id) is None


def test_attack_tampered_model(world):
    model = world.attester.config.models[0]
    model.write_bytes(model.read_bytes() + b"backdoor")
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.file_system == C.CONTRAINDICATED_FILES
    assert ear.status_name == "contraindicated"
    assert any("tampered model" in r for r in ear.reasons)


def test_attack_model_unknown_to_the_reference_values(world, model_writer):
    """A model the vendor never released (say, side-loaded): unrecognized, a warning."""
    import dataclasses as dc

    rv = world.refvalues()
    world.install_refvalues(dc.replace(rv, models=()))
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.file_system == C.UNRECOGNIZED_FILES
    assert any("not in the reference values" in r for r in ear.reasons)


def test_attack_model_rollback_below_min_version(world):
    rv = world.refvalues()
    ref = dataclasses.replace(rv.models[0], min_version=4)
    world.install_refvalues(dataclasses.replace(rv, models=(ref,)))
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.file_system == C.CONTRAINDICATED_FILES


def test_attack_older_agent_version_than_reference_allows(world):
    world.install_refvalues(world.refvalues(min_swversion="0.2.0"))
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert ear.status == C.TIER_CONTRAINDICATED
    assert any("older than the minimum 0.2.0" in r for r in ear.reasons)


def test_attack_modified_agent_code(world):
    rv = world.refvalues()
    rel = dataclasses.replace(rv.releases[0], agent_code=frozenset({b"\x07" * 32}))
    world.install_refvalues(dataclasses.replace(rv, releases=(rel,)))
    ear = _verify(world, world.fresh_evidence())
    assert ear.vector.executables == C.UNRECOGNIZED_RUNTIME


def test_attack_bootcount_went_backwards(world):
    nonce = world.verifier.challenge("lock-0001")
    assert world.verifier.verify(_resign(world, nonce, bootcount=7)).ear.affirming
    nonce = world.verifier.challenge("lock-0001")
    ear = _verify(world, _resign(world, nonce, bootcount=3))
    assert ear.vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE
    assert any("bootcount went backwards" in r for r in ear.reasons)
    assert world.verifier.store.device("lock-0001").last_bootcount == 7


def test_attack_iat_in_the_future(world):
    nonce = world.verifier.challenge("lock-0001")
    ear = _verify(world, _resign(world, nonce, iat=int(world.clock()) + 3600))
    assert any("in the future" in r for r in ear.reasons)


def test_attack_device_claims_another_name(world):
    nonce = world.verifier.challenge("lock-0001")
    ear = _verify(world, _resign(world, nonce, device="lock-0002"))
    assert ear.vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE


def test_attack_software_key_claims_tpm_quote(world):
    from edgeward.attestation.evidence import BootState

    nonce = world.verifier.challenge("lock-0001")
    boot = BootState({0: b"\0" * 32}, b"\xff\x54\x43\x47", b"\0" * 64)
    ear = _verify(world, _resign(world, nonce, boot=boot))
    assert ear.vector.hardware == C.CONTRAINDICATED_HARDWARE


def test_software_key_refused_when_policy_requires_tpm(tmp_path, world_factory):
    from edgeward.attestation.appraisal import Policy

    w = world_factory(tmp_path, policy=Policy(software_keys="refuse"))
    ear = _verify(w, w.fresh_evidence())
    assert ear.vector.hardware == C.CONTRAINDICATED_HARDWARE


def test_tofu_only_when_configured_and_loud(tmp_path, caplog, world_factory):
    w = world_factory(tmp_path, tofu=True)
    own_key = keys.generate("p256")
    own_ca = make_ca(own_key, "self", now=w.clock())
    cert = issue_device_cert(own_key, own_ca, w.attester.signer.public, "lock-0001",
                             now=w.clock())
    w.attester.cert_chain = [cert.public_bytes(Encoding.DER)]
    w.verifier.maker_cas = []
    result = w.verifier.verify(w.fresh_evidence())
    assert result.ear.affirming
    assert any("trust on first use" in r for r in result.ear.reasons)
    assert "TRUST ON FIRST USE" in caplog.text


# --- malformed input: bounded parsing, clean verdicts ------------------------------------------


def _nested(depth):
    obj: Any = b"x"
    for _ in range(depth):
        obj = [obj]
    return obj


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("truncated", lambda tok: tok[: len(tok) // 2]),
        ("empty", lambda tok: b""),
        ("oversized", lambda tok: tok + b"\x00" * (70 * 1024)),
        ("deeply_nested", lambda tok: cbor2.dumps(_nested(200))),
        ("duplicate_map_keys", lambda tok: b"\xd2\x84\x43\xa1\x01\x27\xa2\x04\x41a\x04\x41b"
                                           b"\x41x\x40"),
        ("wrong_tag", lambda tok: b"\xd1" + tok[1:]),
        ("cwt_tag_wrapping_unknown_tag", lambda tok: cbor2.dumps(cbor2.CBORTag(99, 1))),
        ("indefinite_length", lambda tok: b"\xd2\x9f\x40\xa0\x40\x40\xff"),
        ("not_cose", lambda tok: cbor.dumps({"hello": 1})),
    ],
)
def test_attack_malformed_cbor(world, name, make):
    ear = _verify(world, make(world.fresh_evidence()))
    assert ear.status == C.TIER_CONTRAINDICATED
    assert ear.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED


def test_attack_duplicate_keys_inside_signed_claims(world):
    """A correctly signed payload with a duplicate claim key is still refused."""
    from edgeward.core import cose

    assert world.verifier.verify(world.fresh_evidence()).ear.affirming  # enrolls the device
    nonce = world.verifier.challenge("lock-0001")
    good = cbor.loads(cose.decode_sign1(world.attester.evidence(nonce)).payload)
    body = cbor.dumps(good)
    # append a second eat_nonce (key 10) by rewriting the map head count + 1
    assert body[0] >> 5 == 5
    count = body[0] & 0x1F
    dup = bytes([0xA0 | (count + 1)]) + body[1:] + b"\x0a\x41z"
    token = cose.sign1(dup, world.attester.signer.signing_key)
    ear = _verify(world, token)
    assert any("duplicate" in r for r in ear.reasons), ear.reasons


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_crash(world, data):
    result = world.verifier.verify(data)
    assert result.ear.status == C.TIER_CONTRAINDICATED


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_bit_flips_never_crash_or_affirm(world, data):
    token = world.attester.evidence(b"\x11" * 32)
    i = data.draw(st.integers(0, len(token) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(token)
    flipped[i] ^= 1 << bit
    assert not world.verifier.verify(bytes(flipped)).ear.affirming


def test_attack_p256_software_key_fakes_a_tpm_quote(tmp_path, world_factory):
    """A P-256 software key claims "tpm" and signs a home-made TPMS_ATTEST itself."""
    import hashlib
    import struct

    from edgeward.attestation.evidence import BootState
    from edgeward.attestation.tpm_quote import qualifying_data

    signer = SoftwareSigner(keys.generate("p256"))
    w = world_factory(tmp_path, signer=signer)
    assert w.verifier.verify(w.fresh_evidence()).ear.affirming  # enrolled as a software key
    nonce = w.verifier.challenge("lock-0001")
    pcrs = {i: b"\0" * 32 for i in range(8)}
    extra = qualifying_data(nonce)
    attest = (struct.pack(">IH", 0xFF544347, 0x8018) + b"\0\0" + struct.pack(">H", 32) + extra
              + bytes(17) + bytes(8) + struct.pack(">IHB", 1, 0x000B, 3) + b"\xff\0\0"
              + struct.pack(">H", 32) + hashlib.sha256(b"".join(pcrs[i] for i in range(8))).digest())
    boot = BootState(pcrs, attest, signer.sign(attest))
    ev = dataclasses.replace(w.attester.claims(nonce), key_kind="tpm", boot=boot)

    class Claiming:  # the same key, lying about its kind
        alg, key_id, public = signer.alg, signer.key_id, signer.public
        kind: SignerKind = "tpm"
        sign = staticmethod(signer.sign)

    ear = _verify(w, sign_evidence(ev, Claiming(), x5chain=w.attester.cert_chain))
    assert ear.vector.hardware == C.CONTRAINDICATED_HARDWARE
    assert any("does not endorse" in r for r in ear.reasons)


# --- issue 9, hole 1: the enrollment fixes key kind and board; software keys are a warning -----


def test_attack_root_on_a_software_board_is_at_most_a_warning(tmp_path, world_factory):
    """docs/THREAT_MODEL.md: a software key can sign anything root wants; by default its evidence
    is a warning, never affirming."""
    w = world_factory(tmp_path, policy=Policy())
    result = w.verifier.verify(w.fresh_evidence())
    assert result.ear.status == C.TIER_WARNING
    assert result.ear.vector.hardware == C.UNSAFE_HARDWARE
    assert any("software key" in r for r in result.ear.reasons)


def test_attack_device_names_a_board_other_than_its_certificate(tmp_path, world_factory):
    """The maker's certificate fixes the board; evidence naming a laxer board is refused."""
    w = world_factory(tmp_path, cert_board="smartlock-pi4")
    w.install_refvalues(w.refvalues(require_tpm=True))
    lax = w.refvalues(board="gateway-pi4")
    w.verifier.refvalues = {**w.verifier.refvalues, "gateway-pi4": lax}
    nonce = w.verifier.challenge("lock-0001")
    ear = _verify(w, _resign(w, nonce, hwmodel="gateway-pi4"))
    assert ear.vector.hardware == C.CONTRAINDICATED_HARDWARE
    assert any("enrolled as 'smartlock-pi4'" in r for r in ear.reasons)
    assert w.verifier.store.device("lock-0001").board == "smartlock-pi4"


def test_attack_device_changes_its_board_after_first_contact(world):
    """Without a board in the certificate, the first appraised evidence pins it."""
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    assert world.verifier.store.device("lock-0001").board == "smartlock-pi4"
    world.verifier.refvalues = {**world.verifier.refvalues,
                                "gateway-pi4": world.refvalues(board="gateway-pi4")}
    nonce = world.verifier.challenge("lock-0001")
    ear = _verify(world, _resign(world, nonce, hwmodel="gateway-pi4"))
    assert ear.vector.hardware == C.CONTRAINDICATED_HARDWARE


def test_software_keys_policy_default_matches_the_threat_model(tmp_path):
    from edgeward.attestation.config import load_verifier_config
    from edgeward.core.errors import ConfigError

    base = '[verifier]\nkey_file = "k.pem"\n[enrollment]\nmaker_cas = ["ca.pem"]\n' \
           '[refvalues]\nvendor_keys = "v.pem"\ndir = "r"\n'
    p = tmp_path / "v.toml"
    p.write_text(base)
    assert load_verifier_config(p).software_keys == "warning"
    p.write_text(base + "[policy]\nallow_software_keys = true\n")
    with pytest.raises(ConfigError, match="software_keys"):
        load_verifier_config(p)


# --- issue 9, hole 2: a forged manifest must not hide a swapped model ---------------------------


def test_attack_forged_manifest_hides_a_swapped_model(world):
    """Replace the model, keep the genuine bytes as cache.bin, and write a self-signed manifest
    that lists cache.bin: the measurement is of the configured file, so the swap shows."""
    from edgeward.attestation.evidence import claims_from_cbor
    from edgeward.attestation.measure import sha256_file
    from edgeward.core import cose
    from edgeward.models.manifest import Manifest, file_entry, sign_manifest

    model = world.attester.config.models[0]
    genuine = model.read_bytes()
    (model.parent / "cache.bin").write_bytes(genuine)
    model.write_bytes(b"TFL3-backdoored-model" * 8)
    own = keys.generate("ed25519")
    forged = Manifest(name="lockface", version=3, files=(file_entry("cache.bin", genuine),),
                      tflite={"ops": [], "inputs": [], "outputs": []}, created=1,
                      key_id=own.key_id)
    model.with_name(model.name + ".ewsig").write_bytes(sign_manifest(forged, own))
    token = world.fresh_evidence()
    ear = _verify(world, token)
    assert ear.vector.file_system in (C.UNRECOGNIZED_FILES, C.CONTRAINDICATED_FILES)
    claims = claims_from_cbor(cbor.loads(cose.decode_sign1(token).payload))
    (measured,) = claims.measurements.models
    assert measured.files == ((model.name, sha256_file(model)),)
    assert measured.manifest is None  # the self-signed manifest did not verify


def test_genuine_manifest_names_the_measured_model(world):
    from edgeward.attestation.measure import load_model_trust, measure_model

    cfg = world.attester.config
    m = measure_model(cfg.models[0], trust=load_model_trust(cfg.model_trust))
    assert (m.name, m.version) == ("lockface", 3) and m.manifest is not None
    assert measure_model(cfg.models[0]).name == "lockface.tflite"  # no trust store: unsigned


def test_attack_evidence_hides_its_models(world):
    """Root re-signs evidence that lists no models at all, while the board has models."""
    nonce = world.verifier.challenge("lock-0001")
    meas = dataclasses.replace(world.attester.claims(nonce).measurements, models=())
    ear = _verify(world, _resign(world, nonce, measurements=meas))
    assert ear.vector.file_system == C.UNRECOGNIZED_FILES
    assert any("lists no models" in r for r in ear.reasons)
