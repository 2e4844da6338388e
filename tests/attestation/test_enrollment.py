"""Issue 9, hole 7: enrollment never replaces a key except through an explicit re-enrollment,
and revoked certificates (device and maker) are refused at enrollment and at every appraisal.

Each test names its attack; before the fix the verifier enrolled from the evidence's certificate
chain on whatever topic it came and replaced an enrolled device's key.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from edgeward.attestation import claims as C
from edgeward.attestation.enroll import issue_device_cert, make_ca, make_crl, revoked_ids
from edgeward.core import keys
from edgeward.firmware_shim.sim.signer import SoftwareSigner


def _impostor(world, name="lock-0001", ca=None):
    """A new key with a certificate for ``name`` (from the maker CA unless ``ca`` is given)."""
    ca_key, ca_cert = ca or (world.ca_key, world.ca_cert)
    signer = SoftwareSigner(keys.generate("ed25519"))
    cert = issue_device_cert(ca_key, ca_cert, signer.public, name, now=world.clock())
    return signer, cert


def test_attack_new_certificate_replaces_an_enrolled_devices_key(world):
    """A second valid certificate for lock-0001 (a leaked or mis-issued one) on the next evidence
    used to overwrite the enrolled key; now the enrolled key stays and the newcomer is refused."""
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    enrolled_key = world.verifier.store.device("lock-0001").key_id
    signer, cert = _impostor(world)
    world.attester.signer = signer
    world.attester.cert_chain = [cert.public_bytes(Encoding.DER)]
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert not ear.affirming
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert any("already enrolled" in r for r in ear.reasons), ear.reasons
    assert world.verifier.store.device("lock-0001").key_id == enrolled_key


def test_attack_tofu_device_overwrites_another_devices_enrollment(tmp_path, world_factory):
    w = world_factory(tmp_path, tofu=True)
    assert w.verifier.verify(w.fresh_evidence()).ear.affirming
    own_key = keys.generate("p256")
    own_ca = make_ca(own_key, "self", now=w.clock())
    signer, cert = _impostor(w, ca=(own_key, own_ca))
    w.attester.signer = signer
    w.attester.cert_chain = [cert.public_bytes(Encoding.DER)]
    ear = w.verifier.verify(w.fresh_evidence()).ear
    assert not ear.affirming and ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert w.verifier.store.device("lock-0001").key_id != signer.key_id


def test_attack_certificate_presented_on_another_devices_topic(world):
    """lock-0007 sends its first evidence, with its certificate, on lock-0001's topic."""
    signer, cert = _impostor(world, "lock-0007")
    world.attester.signer = signer
    world.attester.cert_chain = [cert.public_bytes(Encoding.DER)]
    nonce = world.verifier.challenge("lock-0001")
    result = world.verifier.verify(world.attester.evidence(nonce), device="lock-0001")
    assert not result.ear.affirming
    assert any("topic" in r for r in result.ear.reasons), result.ear.reasons
    assert world.verifier.store.device("lock-0007") is None


def test_attack_enrolled_device_evidence_on_another_devices_topic(world):
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    result = world.verifier.verify(world.fresh_evidence(), device="lock-0002")
    assert not result.ear.affirming
    assert result.ear.vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE


def test_explicit_reenrollment_replaces_the_key(world):
    """The operator's `attest enroll --replace` with a new maker-signed certificate."""
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    old_signer, old_chain = world.attester.signer, world.attester.cert_chain
    signer, cert = _impostor(world)
    with pytest.raises(Exception, match="already enrolled"):
        world.verifier.enroll([cert])
    world.verifier.enroll([cert], replace=True)
    world.attester.signer, world.attester.cert_chain = signer, []
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    world.attester.signer, world.attester.cert_chain = old_signer, old_chain
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert not ear.affirming and ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE


def test_attack_revoked_device_certificate_keeps_attesting(world):
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    from edgeward.attestation.enroll import load_certs

    leaf = load_certs(world.attester.cert_chain[0])[0]
    crl = make_crl(world.ca_key, world.ca_cert, [leaf.serial_number], now=world.clock())
    world.verifier.revoked = revoked_ids([crl], [world.ca_cert])
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert not ear.affirming and ear.vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE
    assert any("revoked" in r for r in ear.reasons)


def test_attack_revoked_certificate_enrolls(world):
    from edgeward.attestation.enroll import load_certs

    leaf = load_certs(world.attester.cert_chain[0])[0]
    crl = make_crl(world.ca_key, world.ca_cert, [leaf.serial_number], now=world.clock())
    world.verifier.revoked = revoked_ids([crl], [world.ca_cert])
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert any("revoked" in r for r in ear.reasons)
    assert world.verifier.store.device("lock-0001") is None


def test_attack_device_of_a_maker_ca_no_longer_trusted(world):
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    world.verifier.maker_cas = [make_ca(keys.generate("p256"), "Other maker", now=world.clock())]
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert not ear.affirming
    assert any("maker CA that endorsed it is no longer trusted" in r for r in ear.reasons)


def test_attack_crl_not_signed_by_a_maker_ca(world):
    from edgeward.core.errors import IntegrityError

    rogue_key = keys.generate("p256")
    rogue = make_ca(rogue_key, world.ca_cert.subject.rfc4514_string().removeprefix("CN="),
                    now=world.clock())
    crl = make_crl(rogue_key, rogue, [1, 2, 3], now=world.clock())
    with pytest.raises(IntegrityError, match="not signed by a trusted maker CA"):
        revoked_ids([crl], [world.ca_cert])


def test_ca_revoke_writes_a_crl_the_verifier_loads(tmp_path, capsys, monkeypatch):
    """`attest ca revoke` then `[enrollment] crls`: the revoked device's evidence exits 2."""
    from edgeward.agent.cli import main
    from edgeward.attestation.config import load_verifier_config
    from edgeward.attestation.service.verifier import Verifier

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return e.value.code, out, err

    monkeypatch.chdir(tmp_path)
    assert run("attest", "ca", "init", "--out", "maker-ca", "--name", "Acme CA")[0] == 0
    assert run("keys", "generate", "--out", "dev")[0] == 0
    assert run("keys", "generate", "--out", "vkey")[0] == 0
    assert run("keys", "generate", "--out", "vendor")[0] == 0
    for name in ("lock-0001", "lock-0002"):
        code, _, err = run("attest", "ca", "issue", "--ca", "maker-ca", "--pubkey",
                           "dev/public.pem", "--device", name, "--out", f"{name}.pem")
        assert code == 0, err
    code, out, err = run("attest", "ca", "revoke", "--ca", "maker-ca", "--cert", "lock-0001.pem")
    assert code == 0 and "1 certificate(s) revoked" in out, err
    code, out, _ = run("attest", "ca", "revoke", "--ca", "maker-ca", "--cert", "lock-0002.pem")
    assert "2 certificate(s) revoked" in out  # cumulative
    (tmp_path / "refvalues").mkdir()
    (tmp_path / "v.toml").write_text(
        '[verifier]\ndatabase = "v.sqlite"\nkey_file = "vkey/private.pem"\n'
        '[enrollment]\nmaker_cas = ["maker-ca/ca.pem"]\ncrls = ["maker-ca/crl.pem"]\n'
        '[refvalues]\nvendor_keys = "vendor/public.pem"\ndir = "refvalues"\n')
    v = Verifier.from_config(load_verifier_config(tmp_path / "v.toml"))
    try:
        assert len(v.revoked) == 2
        code, _, err = run("attest", "enroll", "--verifier-config", "v.toml",
                           "--cert", "lock-0001.pem")
        assert code == 2 and "revoked" in err
    finally:
        v.close()
