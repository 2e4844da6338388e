"""COSE_Sign1 (RFC 9052 §4.2, §4.4): round trips, known vectors, interop and attacks."""

from __future__ import annotations

import base64
import contextlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.core import cbor, cose, keys
from edgeward.core.errors import (
    IntegrityError,
    MalformedInputError,
    SignatureError,
    UntrustedKeyError,
)
from edgeward.core.limits import Limits


@pytest.fixture(params=["ed25519", "p256"])
def key(request: pytest.FixtureRequest) -> keys.SigningKey:
    return keys.generate(request.param)


def reencode(data: bytes, edit) -> bytes:
    """Decode a tagged COSE_Sign1 with cbor2, let ``edit`` change the body, re-encode."""
    obj = cbor2.loads(data)
    body = list(obj.value)
    body = edit(body) or body
    return cbor2.dumps(cbor2.CBORTag(18, body))


# --- round trips -----------------------------------------------------------------------------


def test_round_trip(key: keys.SigningKey) -> None:
    data = cose.sign1(b"payload", key, content_type="application/x")
    assert data[0] == 0xD2  # tag 18
    msg = cose.verify1(data, keys.TrustStore([key.public]))
    assert msg.payload == b"payload"
    assert msg.alg == (-8 if key.alg == "EdDSA" else -7)
    assert msg.kid == key.key_id
    assert msg.content_type == "application/x"
    assert msg.protected == {1: msg.alg, 4: key.key_id, 3: "application/x"}
    assert cose.verify1(data, key.public).payload == b"payload"


def test_round_trip_untagged_external_aad_and_headers(key: keys.SigningKey) -> None:
    data = cose.sign1(
        b"",
        key,
        content_type=60,
        extra_protected={-70000: "x"},
        unprotected={-70001: b"hint"},
        external_aad=b"aad",
        tagged=False,
    )
    assert data[0] == 0x84
    msg = cose.verify1(data, key.public, external_aad=b"aad")
    assert msg.payload == b"" and msg.content_type == 60
    assert msg.protected[-70000] == "x" and msg.unprotected == {-70001: b"hint"}
    with pytest.raises(SignatureError):
        cose.verify1(data, key.public, external_aad=b"other")
    with pytest.raises(SignatureError):
        cose.verify1(data, key.public)


def test_sign1_misuse() -> None:
    k = keys.generate()
    with pytest.raises(ValueError):
        cose.sign1(b"x", k, extra_protected={1: -7})
    with pytest.raises(ValueError):
        cose.sign1(b"x", k, unprotected={4: b"other"})
    with pytest.raises(ValueError):
        cose.sign1(b"x", k, extra_protected={-1: 1}, unprotected={-1: 2})
    with pytest.raises(TypeError):
        cose.sign1("x", k)  # type: ignore[arg-type]  # the wrong type on purpose


# --- known vectors (COSE WG Examples, sign1-tests; RFC 9052 Appendix C.2.1 key "11") --------

_KEY11 = {
    "x": "usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8",
    "y": "IBOL-C3BttVivg-lSreASjpkttcsz-1rb7btKLv8EX4",
}


def _b64(s: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")


def _key11() -> keys.VerifyingKey:
    pub = ec.EllipticCurvePublicNumbers(_b64(_KEY11["x"]), _b64(_KEY11["y"]), ec.SECP256R1())
    return keys.VerifyingKey.from_crypto(pub.public_key(), key_id=b"11")


# sign-pass-02: "External", external AAD 11aa22bb33cc44dd55006699
_PASS02 = (
    "D28443A10126A10442313154546869732069732074686520636F6E74656E742E5840EAE868ECC176883766C5DC5B"
    "A5B8DCA25DAB3C2E56A551CE5705B793914348E155388B10C4F1B59A6733EAB416870A945111A4B2FBDBEF33A7"
    "7234B1DEFF2F9B"
)
_PASS02_TBS = (
    "846A5369676E61747572653143A101264C11AA22BB33CC44DD5500669954546869732069732074686520636F6E"
    "74656E742E"
)
# sign-pass-03: "Remove CBOR Tag" (untagged)
_PASS03 = (
    "8443A10126A10442313154546869732069732074686520636F6E74656E742E5840EAE868ECC176883766C5DC5BA5"
    "B8DCA25DAB3C2E56A551CE5705B793914348E19F43D6C6BA654472DA301B645B293C9BA939295B97C4BDB84778"
    "2BFF384C5794"
)
# sign-pass-01: "Redo protected": alg only in the *unprotected* header
_PASS01 = (
    "D28441A0A201260442313154546869732069732074686520636F6E74656E742E5840EAE868ECC176883766C5DC5B"
    "A5B8DCA25DAB3C2E56A551CE5705B793914348E11A02E5F0344BF2D4EE5C7FD75A68A9F5E0B3CC1F1FC1409C18"
    "9566586FF9D610"
)


def test_cose_wg_vector_external_aad() -> None:
    data = bytes.fromhex(_PASS02)
    aad = bytes.fromhex("11aa22bb33cc44dd55006699")
    msg = cose.verify1(data, keys.TrustStore([_key11()]), external_aad=aad)
    assert msg.payload == b"This is the content." and msg.kid == b"11"
    assert cose.sig_structure(msg.protected_bytes, aad, msg.payload) == bytes.fromhex(_PASS02_TBS)
    with pytest.raises(SignatureError):
        cose.verify1(data, _key11())  # AAD missing


def test_cose_wg_vector_untagged() -> None:
    msg = cose.verify1(bytes.fromhex(_PASS03), _key11())
    assert msg.payload == b"This is the content."


def test_cose_wg_vector_alg_only_unprotected_refused() -> None:
    """Attack: alg in the unprotected header can be swapped in transit; it must be protected."""
    with pytest.raises(MalformedInputError, match="no alg in the protected header"):
        cose.verify1(bytes.fromhex(_PASS01), _key11())


# --- interop with pycose ---------------------------------------------------------------------


def test_pycose_message_verifies_with_verify1(key: keys.SigningKey) -> None:
    from pycose.algorithms import EdDSA, Es256
    from pycose.headers import KID, Algorithm
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message as PycoseSign1

    m = PycoseSign1(
        phdr={Algorithm: EdDSA if key.alg == "EdDSA" else Es256, KID: key.key_id},
        payload=b"from pycose",
    )
    m.key = CoseKey.from_pem_private_key(key.private_pem().decode())
    assert cose.verify1(m.encode(), keys.TrustStore([key.public])).payload == b"from pycose"


def test_our_sign1_verifies_in_pycose(key: keys.SigningKey) -> None:
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message as PycoseSign1

    m = PycoseSign1.decode(cose.sign1(b"from edgeward", key, content_type="text/plain"))
    m.key = CoseKey.from_pem_public_key(key.public.to_pem().decode())
    assert m.verify_signature()
    assert m.payload == b"from edgeward"


# --- attacks ---------------------------------------------------------------------------------


def test_wrong_key_same_kid_refused(key: keys.SigningKey) -> None:
    """Attack: a trust store entry whose id collides with the signer's, but another key."""
    other = keys.generate("ed25519" if key.alg == "EdDSA" else "p256")
    impostor = keys.VerifyingKey.from_crypto(other.public.crypto_key, key_id=key.key_id)
    with pytest.raises(SignatureError):
        cose.verify1(cose.sign1(b"x", key), keys.TrustStore([impostor]))


def test_untrusted_kid(key: keys.SigningKey) -> None:
    """Attack: a message signed by a key that is not in the trust store."""
    trusted = keys.generate()
    with pytest.raises(UntrustedKeyError, match=key.key_id.hex()[:16]):
        cose.verify1(cose.sign1(b"x", key), keys.TrustStore([trusted.public]))
    with pytest.raises(UntrustedKeyError):
        cose.verify1(cose.sign1(b"x", key), trusted.public)


def test_alg_swap_es256_header_with_ed25519_key() -> None:
    """Attack: algorithm substitution: header says ES256, the kid names an Ed25519 key."""
    ed = keys.generate("ed25519")
    protected = cbor.dumps({1: -7, 4: ed.key_id})
    tbs = cose.sig_structure(protected, b"", b"x")
    forged = cbor.dumps(cbor2.CBORTag(18, [protected, {}, b"x", ed.sign(tbs)]))
    with pytest.raises(SignatureError, match="alg -7"):
        cose.verify1(forged, keys.TrustStore([ed.public]))


def test_unknown_alg_refused() -> None:
    k = keys.generate()
    for alg in (-35, -257, 5, "EdDSA", True, [1]):
        protected = cbor.dumps({1: alg, 4: k.key_id})
        data = cbor.dumps([protected, {}, b"x", b"\x00" * 64])
        with pytest.raises(MalformedInputError, match="alg"):
            cose.decode_sign1(data)


def test_edited_payload(key: keys.SigningKey) -> None:
    """Attack: payload changed after signing."""
    data = reencode(cose.sign1(b"version 5", key), lambda b: b.__setitem__(2, b"version 9"))
    with pytest.raises(SignatureError):
        cose.verify1(data, key.public)


def test_edited_protected_header(key: keys.SigningKey) -> None:
    """Attack: content type in the protected header changed after signing."""

    def edit(body: list) -> None:
        hdr = cbor2.loads(body[0])
        hdr[3] = "application/other"
        body[0] = cbor.dumps(hdr)

    data = reencode(cose.sign1(b"x", key, content_type="application/a"), edit)
    with pytest.raises(SignatureError):
        cose.verify1(data, key.public)


def test_unprotected_kid_injection(key: keys.SigningKey) -> None:
    """Attack: an unprotected kid added next to the protected one to steer key selection."""
    other = keys.generate()
    data = reencode(cose.sign1(b"x", key), lambda b: b.__setitem__(1, {4: other.key_id}))
    with pytest.raises(MalformedInputError, match="both header buckets"):
        cose.verify1(data, keys.TrustStore([key.public, other.public]))


def test_unprotected_kid_only_is_still_bound_by_the_signature(key: keys.SigningKey) -> None:
    """Attack: with kid only unprotected, rewriting it selects another key, which fails."""
    other = keys.generate("ed25519" if key.alg == "EdDSA" else "p256")
    protected = cbor.dumps({1: -8 if key.alg == "EdDSA" else -7})
    sig = key.sign(cose.sig_structure(protected, b"", b"x"))
    good = cbor.dumps([protected, {4: key.key_id}, b"x", sig])
    store = keys.TrustStore([key.public, other.public])
    assert cose.verify1(good, store).kid == key.key_id
    bad = cbor.dumps([protected, {4: other.key_id}, b"x", sig])
    with pytest.raises(SignatureError):
        cose.verify1(bad, store)


def test_other_tags_refused(key: keys.SigningKey) -> None:
    """Attack: tag 98 (COSE_Sign), 17 (COSE_Mac0) or nested tags instead of 18."""
    body = cbor2.loads(cose.sign1(b"x", key, tagged=False))
    for tag in (98, 17, 16, 61):
        with pytest.raises(MalformedInputError, match=f"tag {tag}"):
            cose.verify1(cbor2.dumps(cbor2.CBORTag(tag, body)), key.public)
    with pytest.raises(MalformedInputError):
        cose.verify1(cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, body))), key.public)


def test_signature_truncated_or_extended(key: keys.SigningKey) -> None:
    """Attack: truncated / padded signatures."""
    for edit in (lambda s: s[:-1], lambda s: s + b"\x00", lambda s: b"", lambda s: s[:32]):
        data = reencode(cose.sign1(b"x", key), lambda b, e=edit: b.__setitem__(3, e(b[3])))
        with pytest.raises(SignatureError):
            cose.verify1(data, key.public)


def test_message_truncated(key: keys.SigningKey) -> None:
    data = cose.sign1(b"payload", key)
    for n in range(len(data)):
        with pytest.raises(MalformedInputError):
            cose.decode_sign1(data[:n])


def test_structure_errors() -> None:
    k = keys.generate()
    p = cbor.dumps({1: -8, 4: k.key_id})
    cases = {
        "array of 4": [p, {}, b"x"],
        "not an array": {1: 2},
        "protected header is not a byte string": [{1: -8}, {}, b"x", b"s"],
        "protected header is not a map": [cbor.dumps([1]), {}, b"x", b"s"],
        "unprotected header is not a map": [p, [], b"x", b"s"],
        "detached payload": [p, {}, None, b"s"],
        "payload is not a byte string": [p, {}, "x", b"s"],
        "signature is not a byte string": [p, {}, b"x", None],
        "kid": [cbor.dumps({1: -8, 4: "text kid"}), {}, b"x", b"s"],
        "content type": [cbor.dumps({1: -8, 3: -1}), {}, b"x", b"s"],
    }
    for reason, body in cases.items():
        with pytest.raises(MalformedInputError, match=reason):
            cose.decode_sign1(cbor.dumps(body))


def test_protected_header_bad_cbor() -> None:
    """Attack: the protected bstr itself holds malformed / trailing / deep CBOR."""
    for prot in (b"\xa1\x01", b"\xa0\x00", b"\x81" * 40 + b"\x00", b"\xbf\xff"):
        with pytest.raises(MalformedInputError):
            cose.decode_sign1(cbor.dumps([prot, {}, b"x", b"s"]))


def test_empty_protected_header_decodes_but_has_no_alg() -> None:
    with pytest.raises(MalformedInputError, match="no alg"):
        cose.decode_sign1(cbor.dumps([b"", {1: -8}, b"x", b"s"]))


def test_crit_header_refused() -> None:
    """Attack: a critical header this verifier does not understand must fail closed."""
    k = keys.generate()
    data = cose.sign1(b"x", k, extra_protected={2: [-70000], -70000: 1})
    with pytest.raises(MalformedInputError, match="critical"):
        cose.verify1(data, k.public)
    with pytest.raises(MalformedInputError, match="crit header is not an array"):
        cose.verify1(cose.sign1(b"x", k, extra_protected={2: 5}), k.public)
    # an empty crit array names nothing critical
    assert cose.verify1(cose.sign1(b"x", k, extra_protected={2: []}), k.public).payload == b"x"


def test_trust_store_needs_a_kid() -> None:
    k = keys.generate()
    protected = cbor.dumps({1: -8})
    data = cbor.dumps([protected, {}, b"x", k.sign(cose.sig_structure(protected, b"", b"x"))])
    with pytest.raises(UntrustedKeyError, match="no kid"):
        cose.verify1(data, keys.TrustStore([k.public]))
    assert cose.verify1(data, k.public).kid is None  # a single pinned key may omit kid


def test_limits_are_applied() -> None:
    k = keys.generate()
    data = cose.sign1(b"\x00" * 5000, k)
    with pytest.raises(MalformedInputError, match="exceeds"):
        cose.verify1(data, k.public, limits=Limits(max_cbor_bytes=4096))


# --- fuzzing ---------------------------------------------------------------------------------

_FUZZ_KEY = keys.generate()
_FUZZ_MSG = cose.sign1(b"fuzz payload", _FUZZ_KEY, content_type="x")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_messages_only_integrity_errors(data: st.DataObject) -> None:
    """Attack: bit flips / byte edits / truncation of a valid COSE_Sign1: the verifier raises
    an IntegrityError (malformed, untrusted or bad signature) and never anything else; and a
    mutated message never verifies with a changed payload."""
    enc = bytearray(_FUZZ_MSG)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(enc) - 1))
        enc[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del enc[data.draw(st.integers(0, len(enc))) :]
    try:
        msg = cose.verify1(bytes(enc), keys.TrustStore([_FUZZ_KEY.public]))
    except IntegrityError:
        return
    assert msg.payload == b"fuzz payload"  # only harmless re-encodings may verify


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedInputError):
        cose.decode_sign1(data)
