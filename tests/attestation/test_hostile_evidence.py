"""Issue 9, hole 9: hostile evidence always ends in a verdict, and a worker survives any message.

Each test names the attack. Before the fix these ended in an exception (``internal error``, exit
3, a stopped ``verifier run`` worker), were affirmed although outside docs/protocol.cddl, or put
device-controlled text unescaped into reasons and the terminal.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from edgeward.attestation import claims as C
from edgeward.attestation.enroll import issue_device_cert
from edgeward.attestation.evidence import ModelMeasurement, sign_evidence
from edgeward.core import cbor, cose, keys
from edgeward.firmware_shim.sim.signer import SoftwareSigner


def _resign(world, nonce, **changes):
    ev = dataclasses.replace(world.attester.claims(nonce), **changes)
    return sign_evidence(ev, world.attester.signer, x5chain=world.attester.cert_chain)


def _verdict(world, token):
    result = world.verifier.verify(token)  # must not raise
    assert not result.ear.affirming
    assert result.ear.reasons
    return result.ear


def test_attack_x5chain_certificate_the_x509_library_refuses(world):
    """An intermediate whose basicConstraints is a SET: the X.509 library parses extensions
    lazily and raises ValueError; no key is needed to send it."""
    signer = SoftwareSigner(keys.generate("ed25519"))
    leaf = issue_device_cert(world.ca_key, world.ca_cert, signer.public, "lock-0009",
                             now=world.clock())
    broken = bytearray(world.ca_cert.public_bytes(Encoding.DER))
    i = broken.find(bytes.fromhex("551d130101ff0408"))
    assert i > 0
    broken[i + 8] = 0x31  # SEQUENCE -> SET inside the extension's value
    world.attester.signer = signer
    world.attester.cert_chain = [leaf.public_bytes(Encoding.DER), bytes(broken)]
    ear = _verdict(world, world.fresh_evidence())
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert any("cannot be parsed" in r for r in ear.reasons), ear.reasons


@pytest.mark.parametrize(("name", "claim", "value"), [
    ("bootcount_over_the_store_range", C.BOOTCOUNT, 2**64 - 1),
    ("uptime_over_uint63", C.UPTIME, 2**63),
    ("iat_under_int64", C.IAT, -(2**64)),
    ("dbgstat_outside_0_to_4", C.DBGSTAT, 7),
    ("hwmodel_longer_than_32_bytes", C.HWMODEL, b"x" * 33),
    ("ueid_shorter_than_7_bytes", C.UEID, b"\x01\x02"),
    ("device_name_with_a_newline", C.EW_DEVICE, "lock-0001\nforged"),
])
def test_attack_claim_outside_the_cddl_range(world, name, claim, value):
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming  # enrolled
    nonce = world.verifier.challenge("lock-0001")
    ear = _verdict(world, _raw_with(world, nonce, claim, value))
    assert ear.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED
    assert any("evidence" in r for r in ear.reasons)


def _raw_with(world, nonce, claim, value):
    m = world.attester.claims(nonce).to_cbor()
    m[claim] = value
    return cose.sign1(cbor.dumps(m), world.attester.signer.signing_key,
                      unprotected={C.COSE_X5CHAIN: world.attester.cert_chain[0]})


def test_attack_model_version_below_zero_is_refused(world):
    nonce = world.verifier.challenge("lock-0001")
    meas = world.attester.claims(nonce).measurements
    bad = dataclasses.replace(meas, models=(ModelMeasurement("lockface", -1, None,
                                                             meas.models[0].files),))
    ear = _verdict(world, _resign(world, nonce, measurements=bad))
    assert ear.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED


def test_attack_newline_in_a_model_name_forges_a_reason_line(world):
    nonce = world.verifier.challenge("lock-0001")
    meas = world.attester.claims(nonce).measurements
    forged = "lockface\n  - device lock-0001 is approved\x1b[32m"
    bad = dataclasses.replace(meas, models=(ModelMeasurement(forged, 3, None,
                                                             meas.models[0].files),))
    ear = _verdict(world, _resign(world, nonce, measurements=bad))
    assert all("\n" not in r and "\x1b" not in r for r in ear.reasons), ear.reasons
    assert any("lockface\\n" in r and "\\x1b[32m" in r for r in ear.reasons), ear.reasons


def test_attack_newline_in_the_certificate_name(world):
    signer = SoftwareSigner(keys.generate("ed25519"))
    leaf = issue_device_cert(world.ca_key, world.ca_cert, signer.public,
                             "lock-0001\n  - all good", now=world.clock())
    world.attester.signer = signer
    world.attester.cert_chain = [leaf.public_bytes(Encoding.DER)]
    ear = _verdict(world, world.fresh_evidence())
    assert ear.vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    assert all("\n" not in r for r in ear.reasons), ear.reasons
    assert any("not a device id" in r for r in ear.reasons), ear.reasons


def test_attack_ueid_of_another_instance(world):
    """The ueid is pinned by the first trustworthy appraisal; another one later is refused."""
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    assert world.verifier.store.device("lock-0001").ueid == world.attester.ueid
    nonce = world.verifier.challenge("lock-0001")
    ear = _verdict(world, _resign(world, nonce, ueid=b"\x01" + b"\x42" * 16))
    assert ear.vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE
    assert any("ueid" in r for r in ear.reasons)


def test_attack_evidence_over_the_size_limit_gets_a_verdict(world):
    limit = world.verifier.limits.max_cbor_bytes
    ear = _verdict(world, b"\xd2" + b"\0" * limit)
    assert ear.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED
    assert any(f"{limit + 1} bytes is over the limit of {limit} bytes" in r
               for r in ear.reasons), ear.reasons
    at_limit = _verdict(world, b"\xd2" + b"\0" * (limit - 1))  # exactly the limit: parsed
    assert not any("over the limit" in r for r in at_limit.reasons)


def test_attack_unforeseen_exception_in_appraisal_is_a_verdict(world, monkeypatch):
    """The last line: whatever the core did not foresee is logged and refused, never raised."""
    from edgeward.attestation.service import verifier as V

    def boom(*a, **k):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(V, "appraise", boom)
    ear = _verdict(world, world.fresh_evidence())
    assert ear.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED
    assert any("could not be appraised (OverflowError)" in r for r in ear.reasons)


# --- the command line and the worker ------------------------------------------------------------


def test_attack_oversized_evidence_file_gets_a_verdict_on_the_command_line(tmp_path, capsys,
                                                                          monkeypatch):
    from edgeward.agent.cli import main
    from edgeward.attestation.enroll import make_ca

    monkeypatch.chdir(tmp_path)
    keys.write_keypair(tmp_path / "vkey", keys.generate("ed25519"))
    keys.write_keypair(tmp_path / "vendor", keys.generate("ed25519"))
    ca_key = keys.generate("p256")
    (tmp_path / "ca.pem").write_bytes(make_ca(ca_key, "CA", now=time.time())
                                      .public_bytes(Encoding.PEM))
    (tmp_path / "refvalues").mkdir()
    (tmp_path / "v.toml").write_text(
        '[verifier]\ndatabase = "v.sqlite"\nkey_file = "vkey/private.pem"\n'
        '[enrollment]\nmaker_cas = ["ca.pem"]\n'
        '[refvalues]\nvendor_keys = "vendor/public.pem"\ndir = "refvalues"\n'
        "[limits]\nmax_cbor_bytes = 4096\n")
    (tmp_path / "big.cbor").write_bytes(b"\xd2" * 4097)
    with pytest.raises(SystemExit) as exc:
        main(["attest", "verify", "big.cbor", "--verifier-config", "v.toml"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2, err
    assert out.strip()  # the signed EAR
    assert "4097 bytes is over the limit of 4096 bytes" in err


class _Transport:
    def __init__(self):
        self.acked, self.published = [], []

    def ack(self, ev):
        self.acked.append(ev)

    def publish(self, topic, payload, **kw):
        self.published.append((topic, payload))


class _Crashing:
    def challenge(self, device, now):
        return b"n" * 16

    def appraise(self, device, evidence, now):
        raise ValueError("error parsing asn1 value")


def test_attack_one_message_takes_the_worker_down(tmp_path):
    """A worker catches everything per message: logs it, records contraindicated, goes on."""
    from edgeward.agent.envelope import Envelope, encode, topic
    from edgeward.agent.events import Incoming
    from edgeward.agent.transport import MqttSettings
    from edgeward.attestation.service.config import ServiceConfig
    from edgeward.attestation.service.service import VerifierService

    cfg = ServiceConfig(source=tmp_path / "v.toml", worker="w0", store=tmp_path / "f.sqlite",
                        mqtt=MqttSettings(tls=False), shared_group="")
    svc = VerifierService(cfg, appraiser=_Crashing())
    svc.transport = _Transport()
    try:
        for seq in (1, 2):
            payload = encode(Envelope(seq=seq, ts=1.0, device="lock-0001",
                                      type="attest.evidence", body={"eat": b"\xd2hostile"}))
            svc.handle(Incoming(topic("lock-0001", "attest/evidence"), payload, False, mid=seq,
                                qos=1))
        assert len(svc.transport.acked) == 2  # both taken off the broker, the worker goes on
        assert [a[2] for a in svc.store.appraisals("lock-0001")] == ["contraindicated"] * 2

        def explode(msg):
            raise KeyError("unforeseen")

        svc.on_message = explode  # type: ignore[method-assign]  # a handler that crashes
        svc.handle(Incoming(topic("lock-0001", "report"), b"x", False, mid=3, qos=1))
        assert svc.counters.get("crashes") == 1 and len(svc.transport.acked) == 3
    finally:
        svc.store.close()


def test_attack_newline_in_a_submodule_name_forges_a_reason_line(world):
    """The names of submodules (a lock's microcontroller) come from the device too."""
    nonce = world.verifier.challenge("lock-0001")
    forged = "lock\n  - all locks approved\x1b[32m"
    result = world.verifier.verify(_resign(world, nonce, submods={forged: b"\x00"}))
    reasons = [r for sub in result.ear.submods for r in sub.reasons] + list(result.ear.reasons)
    assert reasons and all("\n" not in r and "\x1b" not in r for r in reasons), reasons
    assert all("\n" not in sub.name for sub in result.ear.submods)
