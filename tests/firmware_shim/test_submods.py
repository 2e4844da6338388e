"""Gateway and lock attested together: the lock's token rides in the gateway's evidence as a
submods entry and the verifier gives it a vector of its own (pair tests, no broker)."""

from __future__ import annotations

import functools
import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcu_helpers import KEY, KID, FakeKeys, LoopbackPort, cpython_lock, firmware, registration

from edgeward.attestation import claims as C
from edgeward.attestation.appraisal import EnrolledDevice, Policy, appraise
from edgeward.attestation.ear import decode_ear, sign_ear
from edgeward.attestation.evidence import EvidenceClaims, Measurements, sign_evidence
from edgeward.attestation.nonces import Session
from edgeward.attestation.refvalues import RefValues, Release
from edgeward.attestation.submods import (
    MAX_SUBMODS,
    SUBMOD_ERROR,
    appraise_one,
    gateway_submods,
)
from edgeward.core import cbor, keys
from edgeward.firmware_shim.mcu import cbor as mcbor
from edgeward.firmware_shim.mcu import cose as mcose
from edgeward.firmware_shim.serial_link import McuLink
from edgeward.firmware_shim.sim.signer import SoftwareSigner

BOARD = "gateway-pi5"
CODE, CONF = hashlib.sha256(b"code").digest(), hashlib.sha256(b"conf").digest()


class Gateway:
    def __init__(self) -> None:
        self.signer = SoftwareSigner(keys.generate("ed25519"))
        self.now = time.time()

    def evidence(self, nonce: bytes, submods: dict) -> bytes:
        ev = EvidenceClaims(nonce=nonce, device="gw-0001", ueid=b"\x01" + bytes(16),
                            hwmodel=BOARD, swname="edgeward", swversion="0.1.0",
                            iat=int(self.now), bootcount=1, key_kind="software",
                            measurements=Measurements(CODE, CONF), submods=submods)
        return sign_evidence(ev, self.signer)

    def appraise(self, token: bytes, nonce: bytes, reg=None):
        dev = EnrolledDevice("gw-0001", self.signer.public, "x509", board=BOARD)
        rv = RefValues(BOARD, 1, "0.1.0", (Release("0.1.0", frozenset({CODE}),
                                                   frozenset({CONF})),), ())
        def registry(device, name):
            return (reg if (device, name) == ("gw-0001", "lock-mcu")
                            else None)
        return appraise(token, devices=lambda kid: dev,
                        sessions={nonce: Session(nonce, "gw-0001", self.now, self.now + 60)}.get,
                        refvalues={BOARD: rv}, now=self.now,
                        policy=Policy(software_keys="affirming"), submod_registry=registry)


@functools.lru_cache(maxsize=8)
def lock_token(nonce: bytes, fw: bytes | None = None) -> bytes:
    lock, uart = cpython_lock(fw)
    return McuLink(LoopbackPort(lock, uart), timeout=0.5).challenge(nonce)


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


NONCE = hashlib.sha256(b"challenge").digest()


def test_gateway_and_lock_both_affirming_and_the_ear_carries_both(gw: Gateway) -> None:
    token = gw.evidence(NONCE, {"lock-mcu": lock_token(NONCE)})
    v = gw.appraise(token, NONCE, registration())
    assert v.ear.affirming, (v.ear.reasons, v.ear.submods)
    (lock,) = v.ear.submods
    assert lock.name == "lock-mcu" and lock.vector.executables == C.APPROVED_RUNTIME
    verifier = keys.generate("ed25519")
    back = decode_ear(sign_ear(v.ear, verifier), verifier.public)
    assert back.submods == v.ear.submods and back.status == v.ear.status
    assert back.to_json()["submods"]["lock-mcu"]["ear.status"] == "affirming"


def test_tampered_lock_firmware_makes_the_whole_result_contraindicated(gw: Gateway) -> None:
    fw = bytearray(firmware())
    fw[4096] ^= 0x80  # attack: a patched bolt controller
    token = gw.evidence(NONCE, {"lock-mcu": lock_token(NONCE, bytes(fw))})
    v = gw.appraise(token, NONCE, registration())
    assert v.ear.vector.status() == C.TIER_AFFIRMING  # the gateway itself is fine
    assert v.ear.status == C.TIER_CONTRAINDICATED
    assert v.ear.submods[0].vector.executables == C.CONTRAINDICATED_RUNTIME
    verifier = keys.generate("ed25519")
    assert decode_ear(sign_ear(v.ear, verifier), verifier.public).status == 96


def test_replayed_lock_mac_from_an_earlier_challenge_is_refused(gw: Gateway) -> None:
    # Attack: a recorded token of the healthy lock is attached to fresh gateway evidence.
    old = lock_token(hashlib.sha256(b"yesterday").digest())
    v = gw.appraise(gw.evidence(NONCE, {"lock-mcu": old}), NONCE, registration())
    assert v.ear.submods[0].vector.instance_identity == C.CRYPTO_VALIDATION_FAILED
    assert "replayed MAC" in " ".join(v.ear.submods[0].reasons)
    assert v.ear.status == C.TIER_CONTRAINDICATED


def test_unreachable_lock_is_said_in_evidence_and_result(gw: Gateway) -> None:
    class DeadPort:
        def write(self, data: bytes) -> int:
            return len(data)

        def read(self, size: int = 1) -> bytes:
            time.sleep(0.01)
            return b""

    subs = gateway_submods({"lock-mcu": McuLink(DeadPort(), timeout=0.05, retries=2)}, NONCE)
    assert "sub-attester unreachable" in subs["lock-mcu"][SUBMOD_ERROR]
    v = gw.appraise(gw.evidence(NONCE, subs), NONCE, registration())
    assert v.ear.status == C.TIER_WARNING
    assert "sub-attester unreachable" in " ".join(v.ear.submods[0].reasons)


def test_lock_not_registered_or_wrong_key(gw: Gateway) -> None:
    token = gw.evidence(NONCE, {"lock-mcu": lock_token(NONCE)})
    v = gw.appraise(token, NONCE, None)
    assert v.ear.submods[0].vector.instance_identity == C.UNRECOGNIZED_INSTANCE
    v = gw.appraise(token, NONCE, registration(key=bytes(32)))
    assert v.ear.submods[0].vector.instance_identity == C.CRYPTO_VALIDATION_FAILED


def test_lock_bootcount_going_backwards_is_a_cloned_or_reset_lock(gw: Gateway) -> None:
    token = gw.evidence(NONCE, {"lock-mcu": lock_token(NONCE)})
    v = gw.appraise(token, NONCE, registration(last_bootcount=50))
    assert v.ear.submods[0].vector.instance_identity == C.UNTRUSTWORTHY_INSTANCE


def forged(protected: dict, unprotected: dict | None = None, key: bytes = KEY) -> bytes:
    payload = mcbor.dumps({10: NONCE, 267: 1, 273: [[65101, mcbor.dumps(
        {"firmware": hashlib.sha256(firmware()).digest(), "scripts": []})]]})
    prot = mcbor.dumps(protected)
    tag = mcose.hmac_sha256(key, mcose.mac_structure(prot, payload))
    return mcbor.tag(17, mcbor.dumps([prot, unprotected or {}, payload, tag]))


@pytest.mark.parametrize(("protected", "unprotected", "why"), [
    ({1: 4, 4: KID}, None, "not HMAC 256/256"),          # truncated HMAC 256/64
    ({1: 5}, None, "exactly {alg, kid}"),                # no kid
    ({1: 5, 4: KID, 3: 0}, None, "exactly {alg, kid}"),  # extra protected header
    ({1: 5, 4: KID}, {4: b"other"}, "unprotected"),      # kid swap in the unprotected bucket
])
def test_algorithm_and_header_substitution_is_malformed(protected, unprotected, why) -> None:
    res = appraise_one("lock-mcu", forged(protected, unprotected), nonce=NONCE,
                       registration=registration(scripts={}))
    assert res.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED
    assert why in " ".join(res.reasons)


def test_well_formed_forgery_with_registered_key_affirms_only_with_the_key() -> None:
    ok = appraise_one("lock-mcu", forged({1: 5, 4: KID}), nonce=NONCE,
                      registration=registration(scripts={}))
    assert ok.status == C.TIER_AFFIRMING
    bad = appraise_one("lock-mcu", forged({1: 5, 4: KID}, key=b"x" * 32), nonce=NONCE,
                       registration=registration(scripts={}))
    assert bad.vector.instance_identity == C.CRYPTO_VALIDATION_FAILED


def test_modified_or_missing_lock_script_is_contraindicated() -> None:
    lock, uart = cpython_lock()
    lock.scripts = ("/main.py",)  # bolt.py no longer measured
    token = McuLink(LoopbackPort(lock, uart), timeout=0.5).challenge(NONCE)
    res = appraise_one("lock-mcu", token, nonce=NONCE, registration=registration())
    assert res.vector.file_system == C.CONTRAINDICATED_FILES and "bolt.py" in res.reasons[-2]


def test_submods_flood_and_odd_entries_never_raise(gw: Gateway) -> None:
    flood = {f"m{i}": b"x" for i in range(MAX_SUBMODS + 1)}
    v = gw.appraise(gw.evidence(NONCE, flood), NONCE, registration())
    assert v.ear.status == C.TIER_CONTRAINDICATED
    odd = {"lock-mcu": 12, "x": [1, 2], "y": {}}
    v = gw.appraise(gw.evidence(NONCE, odd), NONCE, registration())
    assert len(v.ear.submods) == 3 and v.ear.status == C.TIER_CONTRAINDICATED


def test_evidence_without_submods_gives_the_same_ear_as_before(gw: Gateway) -> None:
    v = gw.appraise(gw.evidence(NONCE, {}), NONCE, registration())
    assert v.ear.submods == () and v.ear.affirming
    assert list(v.ear.to_claims()[C.SUBMODS]) == ["edgeward-agent"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_lock_tokens_always_give_a_verdict(junk: bytes) -> None:
    good = lock_token(NONCE)
    for data in (junk, good[: len(junk) % len(good)] + junk, cbor.dumps(junk)):
        res = appraise_one("lock-mcu", data, nonce=NONCE, registration=registration())
        assert res.status in (C.TIER_CONTRAINDICATED, C.TIER_WARNING)


def test_lock_key_store_without_a_key_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="no provisioned key"):
        cpython_lock(keys=FakeKeys(kid=KID))


def test_deleted_lock_script_still_gets_an_answer_that_says_so() -> None:
    lock, uart = cpython_lock()
    lock.scripts = ("/main.py", "/lib/deleted.py")  # the file is gone from the lock
    orig = lock.opener

    def opener(path, mode):
        if path == "/lib/deleted.py":
            raise OSError(2, "ENOENT")
        return orig(path, mode)

    lock.opener = opener
    token = McuLink(LoopbackPort(lock, uart), timeout=0.5).challenge(NONCE)
    res = appraise_one("lock-mcu", token, nonce=NONCE, registration=registration())
    assert res.vector.file_system == C.CONTRAINDICATED_FILES
