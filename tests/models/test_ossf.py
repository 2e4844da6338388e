"""OpenSSF model-signing interop: bundles made by the real `model_signing` CLI, and attacks."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward.core import cose, keys
from edgeward.core.errors import (
    IntegrityError,
    MalformedInputError,
    SignatureError,
    UntrustedKeyError,
)
from edgeward.core.limits import Limits
from edgeward.models import ossf

CLI = Path(sys.executable).parent / "model_signing"
MODEL_BYTES = b"TFL3" + bytes(range(256)) * 8


def ms(*args: str | Path) -> None:
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One P-256 key; a single-file model and a directory model signed by the real CLI."""
    d = tmp_path_factory.mktemp("ossf")
    key = keys.generate("p256")
    priv, pub = keys.write_keypair(d / "key", key)
    model = d / "single" / "model.tflite"
    model.parent.mkdir()
    model.write_bytes(MODEL_BYTES)
    ms("sign", "key", "--private_key", priv, model, "--signature", d / "model.sig")
    mdir = d / "dirmodel"
    (mdir / "sub").mkdir(parents=True)
    (mdir / "a.tflite").write_bytes(b"a" * 100)
    (mdir / "sub" / "labels.txt").write_bytes(b"cat\ndog\n")
    ms("sign", "key", "--private_key", priv, mdir, "--signature", d / "dir.sig")
    return {
        "dir": d,
        "key": key,
        "pub": pub,
        "model": model,
        "mdir": mdir,
        "bundle": (d / "model.sig").read_bytes(),
        "dir_bundle": (d / "dir.sig").read_bytes(),
    }


def edit_bundle(data: bytes, fn) -> bytes:
    b = json.loads(data)
    fn(b)
    return json.dumps(b).encode()


def edit_payload(data: bytes, fn) -> bytes:
    def f(b: dict[str, Any]) -> None:
        stmt = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
        fn(stmt)
        b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()

    return edit_bundle(data, f)


def craft(statement: dict[str, Any], key: keys.SigningKey, **over: Any) -> bytes:
    """A bundle in model_signing's format, signed by ``key`` over any statement we like."""
    payload = json.dumps(statement).encode()
    ptype = over.get("payload_type", ossf.INTOTO_PAYLOAD_TYPE)
    priv = key.crypto_key
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    der = priv.sign(
        ossf.pae(ptype, payload),
        ec.ECDSA(hashes.SHA256()),
    )
    sig = {"sig": base64.b64encode(der).decode(), "keyid": ""}
    return json.dumps(
        {
            "mediaType": over.get("media_type", ossf.BUNDLE_MEDIA_TYPE),
            "verificationMaterial": {
                "publicKey": {"hint": ossf.key_hint(key.public)},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": ptype,
                "signatures": over.get("signatures", [sig]),
            },
        }
    ).encode()


def statement(signed: dict[str, Any]) -> dict[str, Any]:
    b = json.loads(signed["dir_bundle"])
    return dict(json.loads(base64.b64decode(b["dsseEnvelope"]["payload"])))


# --- accepted --------------------------------------------------------------------------------


def test_real_cli_single_file_bundle_accepted(signed: dict[str, Any]) -> None:
    data = signed["bundle"]
    assert ossf.is_ossf_bundle(data)
    st = ossf.open_ossf_bundle(data, keys.TrustStore.from_path(signed["pub"]))
    assert st.key_id == signed["key"].key_id
    assert st.predicate_type == "https://model_signing/signature/v1.0"
    assert st.hash_type == "sha256" and st.method == "files"
    assert st.single_file and st.model_name == "model.tflite"
    # model_signing names a single-file model's resource "."; we report it by file name
    assert [(f.path, f.sha256, f.size) for f in st.files] == [
        ("model.tflite", hashlib.sha256(MODEL_BYTES).digest(), None)
    ]
    assert ossf.open_ossf_bundle(data, signed["key"].public).files == st.files


def test_real_cli_directory_bundle_accepted(signed: dict[str, Any]) -> None:
    st = ossf.open_ossf_bundle(signed["dir_bundle"], keys.TrustStore([signed["key"].public]))
    assert not st.single_file and st.model_name == "dirmodel"
    assert {f.path: f.sha256 for f in st.files} == {
        "a.tflite": hashlib.sha256(b"a" * 100).digest(),
        "sub/labels.txt": hashlib.sha256(b"cat\ndog\n").digest(),
    }


def test_digests_match_model_signings_own_hashing(signed: dict[str, Any]) -> None:
    """Our extracted digests equal model_signing's own hashing of the same files."""
    import model_signing.hashing

    theirs = {
        str(d.identifier): d.digest.digest_value
        for d in model_signing.hashing.hash(signed["mdir"]).resource_descriptors()
    }
    ours = {
        f.path: f.sha256
        for f in ossf.open_ossf_bundle(signed["dir_bundle"], signed["key"].public).files
    }
    assert ours == theirs
    single = model_signing.hashing.hash(signed["model"]).resource_descriptors()
    (desc,) = list(single)
    st = ossf.open_ossf_bundle(signed["bundle"], signed["key"].public)
    assert st.files[0].sha256 == desc.digest.digest_value


def test_our_crafted_bundle_verifies_with_model_signing_cli(signed: dict[str, Any]) -> None:
    """Our PAE/hint reimplementation agrees with the real verifier (cross-check of the test kit)."""
    sig = signed["dir"] / "crafted.sig"
    sig.write_bytes(craft(statement(signed), signed["key"]))
    ms("verify", "key", "--public_key", signed["pub"], "--signature", sig, signed["mdir"])


def test_bundle_without_hint_tries_trusted_keys(signed: dict[str, Any]) -> None:
    data = edit_bundle(
        signed["bundle"], lambda b: b["verificationMaterial"]["publicKey"].update(hint="")
    )
    store = keys.TrustStore([keys.generate("p256").public, signed["key"].public])
    assert ossf.open_ossf_bundle(data, store).key_id == signed["key"].key_id


def test_sniff() -> None:
    k = keys.generate()
    assert not ossf.is_ossf_bundle(cose.sign1(b"x", k))
    assert not ossf.is_ossf_bundle(b"")
    assert not ossf.is_ossf_bundle(b'{"a": 1}')
    assert ossf.is_ossf_bundle(b'\n {"dsseEnvelope": {}}')


# --- refused ---------------------------------------------------------------------------------


def test_another_key_refused(signed: dict[str, Any]) -> None:
    """Attack: bundle verified against a trust store without the signer's key."""
    other = keys.generate("p256")
    with pytest.raises(UntrustedKeyError, match="not in the trust store"):
        ossf.open_ossf_bundle(signed["bundle"], keys.TrustStore([other.public]))
    with pytest.raises(UntrustedKeyError):
        ossf.open_ossf_bundle(signed["bundle"], other.public)
    with pytest.raises(UntrustedKeyError, match="P-256"):
        ossf.open_ossf_bundle(
            edit_bundle(
                signed["bundle"], lambda b: b["verificationMaterial"]["publicKey"].pop("hint")
            ),
            keys.TrustStore([keys.generate("ed25519").public]),
        )


def test_hint_pointing_at_trusted_key_but_signed_by_attacker(signed: dict[str, Any]) -> None:
    """Attack: attacker signs with own key and copies the trusted key's hint."""
    attacker = keys.generate("p256")
    forged = craft(statement(signed), attacker)
    forged = edit_bundle(
        forged,
        lambda b: b["verificationMaterial"]["publicKey"].update(
            hint=ossf.key_hint(signed["key"].public)
        ),
    )
    with pytest.raises(SignatureError):
        ossf.open_ossf_bundle(forged, keys.TrustStore([signed["key"].public]))
    no_hint = edit_bundle(forged, lambda b: b["verificationMaterial"].pop("publicKey"))
    with pytest.raises(SignatureError, match="any trusted key"):
        ossf.open_ossf_bundle(no_hint, keys.TrustStore([signed["key"].public]))


def test_edited_payload_refused(signed: dict[str, Any]) -> None:
    """Attack: swap a file digest in the signed statement."""

    def f(stmt: dict[str, Any]) -> None:
        stmt["predicate"]["resources"][0]["digest"] = "00" * 32

    with pytest.raises(SignatureError):
        ossf.open_ossf_bundle(edit_payload(signed["bundle"], f), signed["key"].public)


def test_edited_signature_refused(signed: dict[str, Any]) -> None:
    """Attack: flipped bits / truncated / empty DSSE signature."""

    def flip(b: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(b["dsseEnvelope"]["signatures"][0]["sig"]))
        raw[-1] ^= 1
        b["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()

    def trunc(b: dict[str, Any]) -> None:
        raw = base64.b64decode(b["dsseEnvelope"]["signatures"][0]["sig"])
        b["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(raw[:-4]).decode()

    for fn in (flip, trunc):
        with pytest.raises(SignatureError):
            ossf.open_ossf_bundle(edit_bundle(signed["bundle"], fn), signed["key"].public)
    empty = edit_bundle(
        signed["bundle"], lambda b: b["dsseEnvelope"]["signatures"][0].update(sig="")
    )
    with pytest.raises(MalformedInputError, match="base64"):
        ossf.open_ossf_bundle(empty, signed["key"].public)


def test_payload_type_swap_refused(signed: dict[str, Any]) -> None:
    """Attack: payloadType changed (PAE binds it; it must also be the in-toto type)."""
    data = edit_bundle(
        signed["bundle"], lambda b: b["dsseEnvelope"].update(payloadType="application/json")
    )
    with pytest.raises(MalformedInputError, match="payload type"):
        ossf.open_ossf_bundle(data, signed["key"].public)
    crafted = craft(statement(signed), signed["key"], payload_type="application/json")
    with pytest.raises(MalformedInputError, match="payload type"):
        ossf.open_ossf_bundle(crafted, signed["key"].public)


def test_non_json_file_refused(signed: dict[str, Any]) -> None:
    for data in (b"not json", b"\xff\xfe{", b"", b"[1,2]", b'"x"', b"[" * 50_000):
        with pytest.raises(MalformedInputError):
            ossf.open_ossf_bundle(data, signed["key"].public)


def test_oversized_file_refused(signed: dict[str, Any]) -> None:
    """Attack: a huge bundle is refused before json.loads runs."""
    with pytest.raises(MalformedInputError, match="exceeds"):
        ossf.open_ossf_bundle(b" " * (1024 * 1024 + 1), signed["key"].public)
    with pytest.raises(MalformedInputError, match="exceeds"):
        ossf.open_ossf_bundle(
            signed["bundle"], signed["key"].public, limits=Limits(max_ossf_bundle_bytes=100)
        )


def test_duplicate_json_keys_refused(signed: dict[str, Any]) -> None:
    """Attack: duplicate keys (first-wins vs last-wins parser differential)."""
    text = signed["bundle"].decode()
    dup = text.replace('"dsseEnvelope":', '"dsseEnvelope": {}, "dsseEnvelope":', 1)
    with pytest.raises(MalformedInputError, match="duplicate"):
        ossf.open_ossf_bundle(dup.encode(), signed["key"].public)
    stmt = json.dumps(statement(signed))
    dup_stmt = stmt.replace('"predicate":', '"predicate": {}, "predicate":', 1)
    payload = dup_stmt.encode()
    der = signed["key"].crypto_key.sign(
        ossf.pae(ossf.INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256())
    )
    data = edit_bundle(
        craft({}, signed["key"]),
        lambda b: b["dsseEnvelope"].update(
            payload=base64.b64encode(payload).decode(),
            signatures=[{"sig": base64.b64encode(der).decode(), "keyid": ""}],
        ),
    )
    with pytest.raises(MalformedInputError, match="duplicate"):
        ossf.open_ossf_bundle(data, signed["key"].public)


def _signed_statement_variants(base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def variant(name: str, fn) -> None:
        s = copy.deepcopy(base)
        fn(s)
        out.append((name, s))

    variant("_type", lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"))
    variant("predicate type", lambda s: s.update(predicateType="https://example/other"))
    variant("Digests/v0.1", lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"))
    variant("exactly one subject", lambda s: s["subject"].append(s["subject"][0]))
    variant(
        "serialization method", lambda s: s["predicate"]["serialization"].update(method="shards")
    )
    variant("hash type", lambda s: s["predicate"]["serialization"].update(hash_type="blake2"))
    variant("sha256", lambda s: s["predicate"]["resources"][0].update(algorithm="sha512"))
    variant("path", lambda s: s["predicate"]["resources"][0].update(name="../../etc/passwd"))
    variant("path", lambda s: s["predicate"]["resources"][0].update(name="/abs"))
    variant("hex digits", lambda s: s["predicate"]["resources"][0].update(digest="zz" * 32))
    variant("resources", lambda s: s["predicate"].update(resources=[]))
    variant("resources", lambda s: s["predicate"].pop("resources"))
    variant("twice", lambda s: s["predicate"]["resources"].append(s["predicate"]["resources"][0]))
    variant(
        "subject digest does not match",
        lambda s: s["subject"][0]["digest"].update(sha256="11" * 32),
    )
    return out


def test_signed_but_malformed_statements_refused(signed: dict[str, Any]) -> None:
    """Attack: statements a trusted key signed but that are wrong for a model (wrong types,
    traversal, unsupported serializations, inconsistent subject digest)."""
    base = statement(signed)
    variants = _signed_statement_variants(base)
    assert len(variants) == 14
    for reason, stmt in variants:
        with pytest.raises(MalformedInputError) as e:
            ossf.open_ossf_bundle(craft(stmt, signed["key"]), signed["key"].public)
        assert reason.split()[0].lower() in str(e.value).lower(), (reason, str(e.value))
    # the untouched base statement is accepted
    assert ossf.open_ossf_bundle(craft(base, signed["key"]), signed["key"].public)


def test_single_file_subject_name_must_be_a_file_name(signed: dict[str, Any]) -> None:
    b = json.loads(signed["bundle"])
    stmt = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    stmt["subject"][0]["name"] = "../model.tflite"
    with pytest.raises(MalformedInputError, match="file name"):
        ossf.open_ossf_bundle(craft(stmt, signed["key"]), signed["key"].public)


def test_envelope_shape_errors(signed: dict[str, Any]) -> None:
    st = statement(signed)
    k = signed["key"]
    sig = json.loads(craft(st, k))["dsseEnvelope"]["signatures"][0]
    cases = {
        "media type": craft(st, k, media_type="application/vnd.dev.sigstore.bundle.v0.1+json"),
        "exactly one DSSE signature": craft(st, k, signatures=[sig, sig]),
        "certificate": edit_bundle(
            craft(st, k), lambda b: b["verificationMaterial"].update(certificate={"rawBytes": ""})
        ),
        "transparency-log": edit_bundle(
            craft(st, k), lambda b: b["verificationMaterial"].update(tlogEntries=[{}])
        ),
        "dsseEnvelope": edit_bundle(craft(st, k), lambda b: b.pop("dsseEnvelope")),
    }
    for reason, data in cases.items():
        with pytest.raises(MalformedInputError, match=reason):
            ossf.open_ossf_bundle(data, k.public)


def test_pae_matches_dsse_spec() -> None:
    # DSSE protocol.md: PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
    assert ossf.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_bundle_only_integrity_errors(signed: dict[str, Any], data: Any) -> None:
    """Attack: byte edits of a real bundle: an IntegrityError or the original content, never a
    crash (KeyError/TypeError from an unchecked field) and never different digests."""
    enc = bytearray(signed["bundle"])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(enc) - 1))
        enc[i] = data.draw(st.integers(0, 255))
    try:
        st_ = ossf.open_ossf_bundle(bytes(enc), signed["key"].public)
    except IntegrityError:
        return
    assert st_.files[0].sha256 == hashlib.sha256(MODEL_BYTES).digest()
