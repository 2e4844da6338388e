"""Profile encoding, signing and binding to the model: the attacks on the profile."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from guard_helpers import FAKE_SHA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.core import cbor
from edgeward.core.errors import (
    DigestMismatchError,
    IntegrityError,
    MalformedInputError,
    SignatureError,
    UntrustedKeyError,
)
from edgeward.core.keys import TrustStore, generate
from edgeward.models.guard import GuardedInterpreter, ModelIO, calibrate
from edgeward.models.guard.profile import (
    MAX_PROFILE_BYTES,
    Profile,
    check_manifest_binding,
    decode_profile,
    encode_profile,
    open_profile,
    profile_digest,
    sign_profile,
)


@pytest.fixture(scope="module")
def key():
    return generate("ed25519")


@pytest.fixture(scope="module")
def profile(centers, clean) -> Profile:
    from guard_helpers import FakeInterp

    interp = FakeInterp(centers.T * 0.8, -0.4 * (centers**2).sum(axis=1))
    io = ModelIO(interp, logits_index=2)
    return calibrate(clean, io.predict, model_sha256=FAKE_SHA, input_shape=(16,))


def test_roundtrip_is_exact_and_deterministic(profile: Profile) -> None:
    data = encode_profile(profile)
    back = decode_profile(data)
    assert encode_profile(back) == data
    np.testing.assert_array_equal(back.stats.precision, profile.stats.precision)
    assert back.threshold == profile.threshold and back.detectors == profile.detectors


def test_signed_profile_opens_with_trusted_key(profile: Profile, key) -> None:
    data = sign_profile(profile, key)
    for trust in (key.public, TrustStore([key.public])):
        p = open_profile(data, model_sha256=FAKE_SHA, trust=trust)
        assert p.threshold == profile.threshold


def test_attack_tampered_profile_is_refused(profile: Profile, key) -> None:
    data = bytearray(sign_profile(profile, key))
    # Raise the combined threshold so nothing would ever be flagged: change one payload byte.
    raw = encode_profile(profile)
    pos = bytes(data).index(raw) + len(raw) // 2
    data[pos] ^= 0x01
    with pytest.raises(IntegrityError):
        open_profile(bytes(data), model_sha256=FAKE_SHA, trust=key.public)


def test_attack_profile_for_another_model(profile: Profile, key) -> None:
    data = sign_profile(profile, key)
    with pytest.raises(DigestMismatchError, match="calibrated for model"):
        open_profile(data, model_sha256=hashlib.sha256(b"other").digest(), trust=key.public)


def test_attack_profile_signed_by_untrusted_key(profile: Profile, key) -> None:
    data = sign_profile(profile, generate("ed25519"))
    with pytest.raises(UntrustedKeyError):
        open_profile(data, model_sha256=FAKE_SHA, trust=TrustStore([key.public]))


def test_attack_unsigned_profile_needs_explicit_flag(profile: Profile, caplog) -> None:
    raw = encode_profile(profile)
    with pytest.raises(SignatureError, match="not signed"):
        open_profile(raw, model_sha256=FAKE_SHA, trust=None)
    p = open_profile(raw, model_sha256=FAKE_SHA, trust=None, allow_unsigned=True)
    assert p.threshold == profile.threshold
    assert "UNSIGNED" in caplog.text


def test_signed_profile_without_trust_is_refused(profile: Profile, key) -> None:
    with pytest.raises(SignatureError):
        open_profile(sign_profile(profile, key), model_sha256=FAKE_SHA, trust=None)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -1])
def test_attack_truncated_profile(profile: Profile, key, cut: int) -> None:
    data = sign_profile(profile, key)
    with pytest.raises(IntegrityError):
        open_profile(data[:cut], model_sha256=FAKE_SHA, trust=key.public)


def test_attack_oversized_profile(key) -> None:
    with pytest.raises(MalformedInputError, match="exceeds"):
        open_profile(b"\xa0" * (MAX_PROFILE_BYTES + 1), model_sha256=FAKE_SHA, trust=key.public)


def test_attack_signed_payload_that_is_not_a_profile(key) -> None:
    from edgeward.models.guard.profile import cbor_sign

    for payload in (cbor.dumps({"v": 1}), cbor.dumps([1, 2]), b"\xff"):
        with pytest.raises(MalformedInputError):
            open_profile(cbor_sign(payload, key), model_sha256=FAKE_SHA, trust=key.public)


def test_attack_mis_shaped_arrays_in_payload(profile: Profile) -> None:
    m = cbor.loads(encode_profile(profile), limits=__import__(
        "edgeward.core.limits", fromlist=["Limits"]).Limits(max_cbor_bytes=1 << 20))
    m["stats"]["precision"]["shape"] = [16, 15]
    with pytest.raises(MalformedInputError):
        decode_profile(cbor.dumps(m))
    m["stats"]["precision"]["shape"] = [16, 16]
    m["stats"]["mean"]["f8"] = np.full(16, np.nan).tobytes()
    with pytest.raises(MalformedInputError, match="NaN"):
        decode_profile(cbor.dumps(m))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_garbage_bytes_only_raise_integrity_errors(data: bytes) -> None:
    for allow in (False, True):
        with pytest.raises(IntegrityError):
            open_profile(data, model_sha256=FAKE_SHA, trust=None, allow_unsigned=allow)


def test_manifest_binding(profile: Profile, key) -> None:
    data = sign_profile(profile, key)
    check_manifest_binding(data, profile_digest(data))
    with pytest.raises(DigestMismatchError):
        check_manifest_binding(data, hashlib.sha256(b"x").digest())
    with pytest.raises(DigestMismatchError, match="names no guard profile"):
        check_manifest_binding(data, None)


def test_profile_for_other_input_size_is_refused_by_the_guard(profile: Profile) -> None:
    from guard_helpers import FakeInterp

    other = FakeInterp(np.zeros((8, 4)), np.zeros(4), shape=(1, 8))
    with pytest.raises(ValueError, match="inputs of"):
        GuardedInterpreter(other, profile)
