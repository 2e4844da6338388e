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


# --- issue 9, hole 1: TPM downgrade ------------------------------------------------------------


class _Claiming:
    """The device's own key (here the TPM AK), declaring another key kind in its evidence."""

    def __init__(self, signer, kind):
        self.alg, self.key_id, self.public, self.kind = signer.alg, signer.key_id, signer.public, kind
        self.sign = signer.sign


def test_attack_tpm_downgrade_to_software_key(tpm_world):
    """Root on a TPM board signs evidence declaring a software key with the AK (TPM2_Hash +
    TPM2_Sign), skipping the quote; the board's reference values do not even require a TPM."""
    w = tpm_world
    tpm = w.attester.signer
    w.install_refvalues(w.refvalues(pcrs=tpm.read_pcrs(range(8)), require_tpm=False))
    nonce = w.verifier.challenge("lock-0001")
    ev = dataclasses.replace(w.attester.claims(nonce), key_kind="software", boot=None)
    token = sign_evidence(ev, _Claiming(tpm, "software"), x5chain=w.attester.cert_chain)
    result = w.verifier.verify(token)
    assert not result.ear.affirming
    assert result.ear.vector.hardware == C.CONTRAINDICATED_HARDWARE
    assert any("downgrade" in r for r in result.ear.reasons), result.ear.reasons


def test_attack_tpm_enrolled_device_sends_no_quote(tpm_world):
    w = tpm_world
    w.install_refvalues(w.refvalues(require_tpm=False))
    nonce = w.verifier.challenge("lock-0001")
    ev = dataclasses.replace(w.attester.claims(nonce), boot=None)
    result = w.verifier.verify(sign_evidence(ev, w.attester.signer, x5chain=w.attester.cert_chain))
    assert not result.ear.affirming
    assert result.ear.vector.hardware == C.CONTRAINDICATED_HARDWARE
    assert any("sent no TPM quote" in r for r in result.ear.reasons)


def test_attack_tpm_device_names_a_board_without_pcr_reference(tpm_world):
    """The hwmodel claim picked the reference values: a device with another bootloader named a
    board whose reference values list no PCRs and do not require a TPM."""
    w = tpm_world
    assert w.verifier.verify(w.fresh_evidence()).ear.affirming  # enrolled, board pinned
    w.attester.signer.extend_pcr(4, hashlib.sha256(b"evil bootloader").digest())
    lax = w.refvalues(board="gateway-pi4", require_tpm=False)
    w.verifier.refvalues = {**w.verifier.refvalues, "gateway-pi4": lax}
    nonce = w.verifier.challenge("lock-0001")
    ev = dataclasses.replace(w.attester.claims(nonce), hwmodel="gateway-pi4")
    result = w.verifier.verify(sign_evidence(ev, w.attester.signer, x5chain=w.attester.cert_chain))
    assert not result.ear.affirming
    assert result.ear.vector.hardware == C.CONTRAINDICATED_HARDWARE
    assert any("enrolled as 'smartlock-pi4'" in r for r in result.ear.reasons)
    assert any("PCRs 4 differ" in r for r in result.ear.reasons)


def test_attack_ak_signs_a_digest_handed_in_from_outside(swtpm):
    """The AK is restricted: TPM2_Sign of an outside digest (no hashcheck ticket) is refused."""
    import tpm2_pytss as t

    from edgeward.firmware_shim.linux.tpm import TpmSigner

    with TpmSigner(swtpm.tcti) as signer:
        digest = hashlib.sha256(b"evidence the TPM never hashed").digest()
        null_ticket = t.TPMT_TK_HASHCHECK(tag=t.TPM2_ST.HASHCHECK, hierarchy=t.TPM2_RH.NULL)
        with pytest.raises(t.TSS2_Exception):
            signer._esys.sign(signer._ak, digest, t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL),
                              null_ticket)


def test_attack_ak_forges_a_quote_through_hash_and_sign(swtpm):
    """Data that starts with TPM_GENERATED_VALUE gets no ticket, so TPM2_Hash + TPM2_Sign with the
    AK cannot make a home-made TPMS_ATTEST that would pass as a quote."""
    import struct

    from edgeward.core.errors import TpmError
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    with TpmSigner(swtpm.tcti) as signer:
        forged = struct.pack(">IH", 0xFF544347, 0x8018) + b"\0" * 80
        with pytest.raises(TpmError):
            signer.sign(forged)
        assert len(signer.sign(b"ordinary evidence bytes")) == 64


def test_attack_unrestricted_key_planted_at_the_ak_handle(swtpm):
    """A signing key without the restricted attribute at the AK handle would sign any digest:
    the TPM signer refuses to use it."""
    import tpm2_pytss as t
    from tpm2_pytss.TCTILdr import TCTILdr

    from edgeward.core.errors import TpmError
    from edgeward.firmware_shim.linux.tpm import DEFAULT_AK_HANDLE, TpmSigner

    tcti = TCTILdr.parse(swtpm.tcti)
    esys = t.ESAPI(tcti)
    try:
        attrs = (t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT
                 | t.TPMA_OBJECT.SENSITIVEDATAORIGIN | t.TPMA_OBJECT.USERWITHAUTH
                 | t.TPMA_OBJECT.SIGN_ENCRYPT)
        pub = t.TPM2B_PUBLIC(t.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attrs))
        tr, *_ = esys.create_primary(None, pub, t.ESYS_TR.OWNER)
        esys.evict_control(t.ESYS_TR.OWNER, tr, DEFAULT_AK_HANDLE)
        esys.flush_context(tr)
    finally:
        esys.close()
    with pytest.raises(TpmError, match="not a restricted TPM signing key"):
        TpmSigner(swtpm.tcti)
def test_tpm_library_errors_are_one_line_not_raw_tss_logs(tmp_path) -> None:
    """A missing TPM is one edgeward line, not the TSS library's 'ERROR:tcti:' lines."""
    import subprocess
    import sys

    code = ("from edgeward.firmware_shim.linux.tpm import TpmSigner\n"
            "TpmSigner('device:/dev/edgeward-no-such-tpm')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TSS2_LOG"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode != 0
    assert "ERROR:tcti" not in p.stderr
    assert "cannot open the TPM" in p.stderr
