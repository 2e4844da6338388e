"""The TPM path end to end against a real swtpm: AK-signed evidence with PCRs and a quote."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from edgeward.attestation import claims as C
from edgeward.attestation.evidence import BootState, sign_evidence
from edgeward.attestation.tpm_quote import qualifying_data


@pytest.fixture
def tpm_world(tmp_path, swtpm, world_factory):
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    signer = TpmSigner(swtpm.tcti)
    signer.extend_pcr(7, hashlib.sha256(b"secure boot: enabled").digest())
    w = world_factory(tmp_path, signer=signer, key_kind="tpm", tcti=swtpm.tcti)
    w.install_refvalues(w.refvalues(pcrs=signer.read_pcrs(range(8)), require_tpm=True))
    yield w
    signer.close()


def test_tpm_evidence_is_affirming_with_genuine_hardware(tpm_world):
    result = tpm_world.verifier.verify(tpm_world.fresh_evidence())
    assert result.ear.affirming, result.ear.reasons
    assert result.ear.vector.hardware == C.GENUINE_HARDWARE
    assert any("PCRs" in r and "matches" in r for r in result.ear.reasons)


def test_attack_pcrs_differ_from_reference(tpm_world):
    tpm_world.attester.signer.extend_pcr(4, hashlib.sha256(b"evil bootloader").digest())
    result = tpm_world.verifier.verify(tpm_world.fresh_evidence())
    assert not result.ear.affirming
    assert result.ear.vector.executables == C.UNRECOGNIZED_RUNTIME
    assert any("PCRs 4 differ" in r for r in result.ear.reasons)


def test_attack_quote_over_another_nonce(tpm_world):
    w = tpm_world
    tpm = w.attester.signer
    nonce = w.verifier.challenge("lock-0001")
    old = tpm.quote(qualifying_data(b"an older nonce!!"), range(8))
    ev = w.attester.claims(nonce)
    ev = dataclasses.replace(ev, boot=BootState(ev.boot.pcrs, old.attest, old.signature))
    result = w.verifier.verify(sign_evidence(ev, tpm, x5chain=w.attester.cert_chain))
    assert not result.ear.affirming
    assert result.ear.vector.hardware == C.CRYPTO_VALIDATION_FAILED
    assert any("another nonce" in r for r in result.ear.reasons)


def test_attack_reported_pcrs_forged_to_match_reference(tpm_world):
    w = tpm_world
    tpm = w.attester.signer
    good = tpm.read_pcrs(range(8))
    tpm.extend_pcr(4, hashlib.sha256(b"evil bootloader").digest())
    nonce = w.verifier.challenge("lock-0001")
    ev = w.attester.claims(nonce)
    ev = dataclasses.replace(ev, boot=BootState(good, ev.boot.quote, ev.boot.quote_sig))
    result = w.verifier.verify(sign_evidence(ev, tpm, x5chain=w.attester.cert_chain))
    assert not result.ear.affirming
    assert any("PCR digest" in r for r in result.ear.reasons)


def test_tpm_required_but_software_key_used(tmp_path, world_factory):
    w = world_factory(tmp_path)
    w.install_refvalues(w.refvalues(require_tpm=True))
    result = w.verifier.verify(w.fresh_evidence())
    assert result.ear.vector.hardware == C.CONTRAINDICATED_HARDWARE


def test_attester_from_agent_config_with_tpm(tmp_path, swtpm, world_factory):
    from edgeward.attestation.attester import Attester
    from edgeward.attestation.config import load_attester_config
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    signer = TpmSigner(swtpm.tcti)
    w = world_factory(tmp_path, signer=signer, key_kind="tpm", tcti=swtpm.tcti)
    signer.close()  # swtpm serves one client at a time
    att = Attester.from_config(load_attester_config(w.config_path), clock=w.clock)
    try:
        assert att.signer.kind == "tpm" and att.cert_chain
        result = w.verifier.verify(att.evidence(w.verifier.challenge("lock-0001")))
    finally:
        att.close()
    assert result.ear.affirming, result.ear.reasons
    assert result.ear.vector.hardware == C.GENUINE_HARDWARE
