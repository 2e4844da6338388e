"""Signed model manifests: round trips and attacks on the payload and its envelope."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.core import cbor, cose, keys
from edgeward.core.errors import MalformedInputError, SignatureError, UntrustedKeyError
from edgeward.core.limits import Limits
from edgeward.models import manifest
from edgeward.models.manifest import FileEntry, Manifest

TFLITE = {
    "ops": ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
    "inputs": [{"name": "input", "dtype": "int8", "shape": [1, 28, 28, 1]}],
    "outputs": [{"name": "probs", "dtype": "float32", "shape": [1, 10]}],
}


@pytest.fixture(params=["ed25519", "p256"])
def key(request: pytest.FixtureRequest) -> keys.SigningKey:
    return keys.generate(request.param)


def make(key: keys.SigningKey, **kw: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "lock-face",
        "version": 5,
        "files": (manifest.file_entry("model.tflite", b"model bytes"),),
        "tflite": TFLITE,
        "created": 1_764_000_000,
        "key_id": key.key_id,
    }
    fields.update(kw)
    return Manifest(**fields)


def payload_dict(key: keys.SigningKey) -> dict[str, Any]:
    return dict(cbor2.loads(manifest.encode_manifest(make(key))))


def resign(key: keys.SigningKey, body: dict[str, Any]) -> bytes:
    return cose.sign1(cbor.dumps(body), key, content_type=manifest.CONTENT_TYPE)


# --- round trip ------------------------------------------------------------------------------


def test_round_trip(key: keys.SigningKey) -> None:
    m = make(key, allow_custom_ops=True, profile_sha256=hashlib.sha256(b"p").digest())
    sig = manifest.sign_manifest(m, key)
    opened = manifest.open_manifest(sig, keys.TrustStore([key.public]))
    assert opened == m
    assert opened.tflite == TFLITE  # lists, compares equal to ModelSummary.to_manifest()
    assert opened.files[0] == FileEntry("model.tflite", 11, hashlib.sha256(b"model bytes").digest())


def test_encoding_is_deterministic_and_short_keys(key: keys.SigningKey) -> None:
    m = make(key)
    a, b = manifest.encode_manifest(m), manifest.encode_manifest(m)
    assert a == b
    assert set(cbor2.loads(a)) == {
        "fmt", "name", "ver", "files", "tflite", "created", "kid", "custom_ops"
    }  # fmt: skip
    assert manifest.decode_manifest(a) == m


def test_content_type_is_protected(key: keys.SigningKey) -> None:
    msg = cose.decode_sign1(manifest.sign_manifest(make(key), key))
    assert msg.protected[3] == "application/vnd.edgeward.manifest+cbor"


def test_file_entry_helper() -> None:
    e = manifest.file_entry("a/b.tflite", memoryview(b"xyz"))
    assert e == FileEntry("a/b.tflite", 3, hashlib.sha256(b"xyz").digest())
    with pytest.raises(MalformedInputError):
        manifest.file_entry("../x", b"")


def test_sign_with_mismatched_key_is_misuse(key: keys.SigningKey) -> None:
    with pytest.raises(RuntimeError):
        manifest.sign_manifest(make(key), keys.generate())


# --- attacks on the signed object -------------------------------------------------------------


def test_edited_manifest_refused(key: keys.SigningKey) -> None:
    """Attack: bump the version / swap the digest inside a signed manifest."""
    sig = manifest.sign_manifest(make(key), key)
    obj = cbor2.loads(sig)
    body = cbor2.loads(obj.value[2])
    body["ver"] = 99
    obj.value[2] = cbor.dumps(body)
    with pytest.raises(SignatureError):
        manifest.open_manifest(cbor2.dumps(obj), key.public)


def test_signed_by_untrusted_key(key: keys.SigningKey) -> None:
    """Attack: a well-formed manifest signed by the attacker's own key."""
    attacker = keys.generate()
    sig = manifest.sign_manifest(make(attacker), attacker)
    with pytest.raises(UntrustedKeyError, match="not in the trust store"):
        manifest.open_manifest(sig, keys.TrustStore([key.public]))


def test_kid_key_id_mismatch(key: keys.SigningKey) -> None:
    """Attack: a signed payload whose key id names another (e.g. more privileged) key."""
    other = keys.generate()
    body = payload_dict(key)
    body["kid"] = other.key_id
    with pytest.raises(SignatureError, match="key id"):
        manifest.open_manifest(resign(key, body), keys.TrustStore([key.public, other.public]))


def test_wrong_content_type(key: keys.SigningKey) -> None:
    """Attack: type confusion: another signed object from the same key presented as a manifest."""
    good = manifest.encode_manifest(make(key))
    for ct in (None, "application/cbor", 60):
        sig = cose.sign1(good, key, content_type=ct)
        with pytest.raises(SignatureError, match="content type"):
            manifest.open_manifest(sig, key.public)


def test_payload_not_parsed_before_signature(key: keys.SigningKey) -> None:
    """Attack: malformed payload from an untrusted signer must fail on trust, not parsing."""
    attacker = keys.generate()
    sig = cose.sign1(b"\xff\xff", attacker, content_type=manifest.CONTENT_TYPE)
    with pytest.raises(UntrustedKeyError):
        manifest.open_manifest(sig, keys.TrustStore([key.public]))


# --- strict payload decoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "a" * 129),
        ("name", "bad name"),
        ("name", "../etc"),
        ("name", ".."),
        ("name", 5),
        ("ver", -1),
        ("ver", 2**63),
        ("ver", 2**64 - 1),
        ("ver", "5"),
        ("ver", True),
        ("ver", 5.0),
        ("created", -5),
        ("created", None),
        ("kid", b"short"),
        ("kid", "text"),
        ("custom_ops", 1),
        ("custom_ops", None),
        ("profile", b"\x00" * 31),
        ("profile", None),
        ("fmt", 2),
        ("fmt", True),
        ("files", []),
        ("files", "model.tflite"),
        ("files", [{"path": "a", "size": 1}]),
        ("files", [{"path": "a", "size": 1, "sha256": b"\x00" * 32, "x": 1}]),
        ("files", [{"path": "a", "size": -1, "sha256": b"\x00" * 32}]),
        ("files", [{"path": "a", "size": 1, "sha256": b"\x00" * 31}]),
        ("files", [{"path": "a", "size": 1, "sha256": "00" * 32}]),
        ("files", [{"path": "a", "size": 1, "sha256": b"\x00" * 32}] * 2),
        ("tflite", {}),
        ("tflite", {**TFLITE, "extra": 1}),
        ("tflite", {**TFLITE, "ops": "CONV_2D"}),
        ("tflite", {**TFLITE, "ops": [1]}),
        ("tflite", {**TFLITE, "ops": [""]}),
        ("tflite", {**TFLITE, "inputs": [{"name": "x", "dtype": "int8"}]}),
        ("tflite", {**TFLITE, "inputs": [{"name": "x", "dtype": "int8", "shape": [1.0]}]}),
        ("tflite", {**TFLITE, "inputs": [{"name": "x", "dtype": "int8", "shape": [-2]}]}),
        ("tflite", {**TFLITE, "inputs": [{"name": "x", "dtype": "int8", "shape": [1] * 9}]}),
        ("tflite", {**TFLITE, "outputs": [{"name": 1, "dtype": "int8", "shape": []}]}),
        ("tflite", {**TFLITE, "outputs": [{"name": "y", "dtype": "", "shape": []}]}),
    ],
)
def test_bad_field_types_and_ranges(key: keys.SigningKey, field: str, value: Any) -> None:
    """Attack: wrong types / out-of-range values in an otherwise signed manifest."""
    body = payload_dict(key)
    body[field] = value
    with pytest.raises(MalformedInputError):
        manifest.open_manifest(resign(key, body), key.public)


@pytest.mark.parametrize(
    "path",
    [
        "../model.tflite",
        "a/../../model.tflite",
        "/etc/passwd",
        "a//b",
        "./model.tflite",
        "a/.",
        "..",
        "",
        "a\\..\\b",
        "model\x00.tflite",
        "a\nb",
        "x" * 1025,
    ],
)
def test_path_traversal_in_file_paths(key: keys.SigningKey, path: str) -> None:
    """Attack: path traversal / absolute paths / NUL tricks in signed file paths."""
    body = payload_dict(key)
    body["files"] = [{"path": path, "size": 1, "sha256": b"\x00" * 32}]
    with pytest.raises(MalformedInputError, match="path"):
        manifest.open_manifest(resign(key, body), key.public)


def test_unknown_and_missing_keys(key: keys.SigningKey) -> None:
    """Attack: smuggled fields a newer/older parser might interpret differently."""
    body = payload_dict(key)
    body["admin"] = True
    with pytest.raises(MalformedInputError, match="unknown key"):
        manifest.decode_manifest(cbor.dumps(body))
    body2: dict[Any, Any] = payload_dict(key)
    body2[1] = 2
    with pytest.raises(MalformedInputError, match="unknown key"):
        manifest.decode_manifest(cbor.dumps(body2))
    body = payload_dict(key)
    del body["ver"]
    with pytest.raises(MalformedInputError, match="lacks key"):
        manifest.decode_manifest(cbor.dumps(body))


def test_payload_not_a_map_or_bad_cbor(key: keys.SigningKey) -> None:
    for payload in (cbor.dumps([1]), b"\xa1", b"", b"\xa0\x00"):
        with pytest.raises(MalformedInputError):
            manifest.decode_manifest(payload)


def test_too_many_files(key: keys.SigningKey) -> None:
    files = tuple(manifest.file_entry(f"f{i}", b"") for i in range(65))
    with pytest.raises(MalformedInputError, match=r"1\.\.64"):
        manifest.encode_manifest(make(key, files=files))
    body = payload_dict(key)
    body["files"] = [
        {"path": f"f{i}", "size": 0, "sha256": hashlib.sha256(b"").digest()} for i in range(65)
    ]
    with pytest.raises(MalformedInputError):
        manifest.decode_manifest(cbor.dumps(body))
    assert manifest.decode_manifest(cbor.dumps(body), limits=Limits(max_manifest_files=100))


def test_encode_refuses_invalid_manifest(key: keys.SigningKey) -> None:
    with pytest.raises(MalformedInputError):
        manifest.encode_manifest(make(key, name="bad/name"))
    with pytest.raises(MalformedInputError):
        manifest.encode_manifest(make(key, version=-1))
    with pytest.raises(MalformedInputError):
        manifest.encode_manifest(dataclasses.replace(make(key), format=2))


def test_max_version_accepted(key: keys.SigningKey) -> None:
    m = make(key, version=2**63 - 1, created=0)
    assert manifest.open_manifest(manifest.sign_manifest(m, key), key.public).version == 2**63 - 1


# --- fuzzing ---------------------------------------------------------------------------------

_FUZZ_KEY = keys.generate()
_FUZZ_PAYLOAD = manifest.encode_manifest(make(_FUZZ_KEY))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_payloads_only_malformed(data: st.DataObject) -> None:
    """Attack: byte edits of a valid payload: decode gives a valid Manifest or
    MalformedInputError, never another exception."""
    enc = bytearray(_FUZZ_PAYLOAD)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(enc) - 1))
        enc[i] = data.draw(st.integers(0, 255))
    try:
        m = manifest.decode_manifest(bytes(enc))
    except MalformedInputError:
        return
    assert manifest.decode_manifest(manifest.encode_manifest(m)) == m


def test_attack_shard_digests_that_do_not_cover_the_file_are_refused():
    from edgeward.models.manifest import encode_manifest

    base: dict[str, Any] = dict(name="m", version=1, created=0, key_id=b"k" * 32,
                                tflite={"ops": [], "inputs": [], "outputs": []})
    ok = FileEntry("m.tflite", 5 * 1024 * 1024, b"a" * 32, 4 * 1024 * 1024, (b"b" * 32, b"c" * 32))
    manifest.decode_manifest(encode_manifest(Manifest(files=(ok,), **base)))
    for bad in (
        FileEntry("m.tflite", 5 * 1024 * 1024, b"a" * 32, 4 * 1024 * 1024, (b"b" * 32,)),
        FileEntry("m.tflite", 5 * 1024 * 1024, b"a" * 32, 3 * 1024 * 1024, (b"b" * 32, b"c" * 32)),
        FileEntry("m.tflite", 5 * 1024 * 1024, b"a" * 32, 1024, (b"b" * 32,) * 5120),
        FileEntry("m.tflite", 5 * 1024 * 1024, b"a" * 32, 4 * 1024 * 1024, (b"b" * 31, b"c" * 32)),
    ):
        with pytest.raises(MalformedInputError):
            encode_manifest(Manifest(files=(bad,), **base))
