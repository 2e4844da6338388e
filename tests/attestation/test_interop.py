"""Interop with independent COSE/CWT implementations from PyPI (python-cwt, pycose).

1. python-cwt and pycose verify and decode our evidence with the device's public key;
2. our verifier accepts a token pycose built from the same claims with the same key.
"""

from __future__ import annotations

import cbor2
import pytest

from edgeward.attestation import claims as C
from edgeward.core import cose as ew_cose

cwt = pytest.importorskip("cwt")
pycose_messages = pytest.importorskip("pycose.messages")


def _device_pems(world):
    key = world.attester.signer.signing_key
    return key.private_pem(), key.public.to_pem(), key.key_id


def test_python_cwt_verifies_our_evidence(world):
    token = world.fresh_evidence()
    _priv, pub_pem, kid = _device_pems(world)
    key = cwt.COSEKey.from_pem(pub_pem, alg="EdDSA", kid=kid)
    payload = cwt.COSE.new().decode(token, key)
    claims = cbor2.loads(payload)
    assert claims[C.EW_DEVICE] == "lock-0001"
    assert claims[C.EW_KEY_KIND] == "software"
    assert len(claims[C.EAT_NONCE]) == 32


def test_pycose_verifies_our_evidence(world):
    from pycose.keys import OKPKey
    from pycose.messages import Sign1Message

    token = world.fresh_evidence()
    priv_pem, _pub, _kid = _device_pems(world)
    msg = Sign1Message.decode(token)
    msg.key = OKPKey.from_pem_private_key(priv_pem.decode())
    assert msg.verify_signature()


def test_our_verifier_accepts_a_pycose_token(world):
    from pycose.algorithms import EdDSA
    from pycose.headers import KID, Algorithm, X5chain
    from pycose.keys import OKPKey
    from pycose.messages import Sign1Message

    # enroll the device with one of our own tokens first (x5chain), then use pycose only
    assert world.verifier.verify(world.fresh_evidence()).ear.affirming
    nonce = world.verifier.challenge("lock-0001")
    ours = ew_cose.decode_sign1(world.attester.evidence(nonce))
    claims = cbor2.loads(ours.payload)  # the same claims, re-encoded by cbor2
    priv_pem, _pub, kid = _device_pems(world)
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid},
                       uhdr={X5chain: world.attester.cert_chain[0]},
                       payload=cbor2.dumps(claims))
    msg.key = OKPKey.from_pem_private_key(priv_pem.decode())
    token = msg.encode(tag=True)
    result = world.verifier.verify(token)
    assert result.ear.affirming, result.ear.reasons


def test_python_cwt_can_check_our_ear(world):
    result = world.verifier.verify(world.fresh_evidence())
    vk = world.verifier.public_key
    key = cwt.COSEKey.from_pem(vk.to_pem(), alg="EdDSA", kid=vk.key_id)
    claims = cbor2.loads(cwt.COSE.new().decode(result.signed, key))
    assert claims[C.SUBMODS]["edgeward-agent"][C.EAR_STATUS] == C.TIER_AFFIRMING
