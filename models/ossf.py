"""OpenSSF model-signing interop: verify key-signed bundles offline.

``model_signing sign key --private_key KEY.pem MODEL --signature OUT.sig`` (PyPI
``model-signing`` 1.x) writes a Sigstore bundle (media type
``application/vnd.dev.sigstore.bundle.v0.3+json``) as JSON::

    {"mediaType": ..., "verificationMaterial": {"publicKey": {"hint": hex}, "tlogEntries": []},
     "dsseEnvelope": {"payload": b64, "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": b64(DER ECDSA), "keyid": ""}]}}

The DSSE signature (DSSE v1.0 protocol, "Signature definition") is ECDSA P-256 with SHA-256,
DER-encoded, over ``PAE(payloadType, payload)`` = ``"DSSEv1" SP len(type) SP type SP
len(body) SP body``. The ``hint`` is the hex SHA-256 of the signer's public key PEM
(SubjectPublicKeyInfo), as model_signing's ``sign_ec_key`` writes it. The payload is an in-toto
Statement v1 (``_type`` ``https://in-toto.io/Statement/v1``) with predicate type
``https://model_signing/signature/v1.0``:

* ``subject``: exactly one ``{name, digest: {sha256}}``: the model's name (its file or directory
  name) and a SHA-256 over the concatenated raw digests of the resources, in order;
* ``predicate.serialization``: ``{method: "files", hash_type: "sha256", allow_symlinks,
  ignore_paths}``;
* ``predicate.resources``: ``[{name, algorithm: "sha256", digest: hex}]``, one per file, named by
  the path relative to the model directory; a single-file model has one resource named ``"."``.

:func:`open_ossf_bundle` checks the size first, parses JSON with duplicate keys refused, verifies
the DSSE signature with a trusted P-256 key (chosen by the hint, or by trying each trusted
P-256 key when there is no hint) before it parses the payload, then checks the statement
strictly and that the subject digest matches the resources. A single-file model's ``"."``
resource is reported under the subject name (the file name it was signed as), so callers can
match files by name in both formats.

Not supported (refused with a clear error): Sigstore keyless / certificate bundles (they need
the transparency log and a CA, i.e. the network), the pre-1.0 ``Digests/v0.1`` predicate and its
buggy PAE, sharded serialization, hash types other than SHA-256, several DSSE signatures. File
digests are *not* compared here: the caller hashes the bytes it will load and compares them
with :attr:`OssfStatement.files`.

This module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edgeward.core.errors import MalformedInputError, SignatureError, UntrustedKeyError
from edgeward.core.keys import ALG_ES256, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.models.manifest import check_path

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "INTOTO_PAYLOAD_TYPE",
    "INTOTO_STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "OssfFile",
    "OssfStatement",
    "is_ossf_bundle",
    "key_hint",
    "open_ossf_bundle",
    "pae",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_COMPAT_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"
_MAX_SIG_B64 = 512
_MAX_NAME = 1024


@dataclass(frozen=True)
class OssfFile:
    """One signed file: ``path`` relative to the model (or the file name for a single file)."""

    path: str
    sha256: bytes
    size: int | None = None  # model_signing does not sign sizes


@dataclass(frozen=True)
class OssfStatement:
    """The verified content of a model_signing bundle."""

    files: tuple[OssfFile, ...]
    key_id: bytes  # edgeward key id (SHA-256 of SPKI DER) of the trusted key that verified
    predicate_type: str
    hash_type: str
    model_name: str
    root_digest: bytes  # subject digest: SHA-256 over the resources' digests, in order
    method: str = "files"
    single_file: bool = False
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = ()


def _bad(reason: str) -> MalformedInputError:
    return MalformedInputError(f"OpenSSF bundle {reason}")


def is_ossf_bundle(data: bytes) -> bool:
    """Cheap sniff: a JSON object that mentions a DSSE envelope or a Sigstore bundle type.

    Our manifests are CBOR (first byte 0xd2 or 0x84), never ``{``. This decides which parser
    runs; it verifies nothing.
    """
    head = bytes(data[:64]).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return False
    return b'"dsseEnvelope"' in data or b"application/vnd.dev.sigstore.bundle" in data


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding (lengths are byte lengths, in ASCII decimal)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_hint(key: VerifyingKey) -> str:
    """model_signing's public-key hint: hex SHA-256 of the key's SPKI PEM."""
    return hashlib.sha256(key.to_pem()).hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _bad(f"JSON has a duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except MalformedInputError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(f"{what} is not valid JSON ({type(e).__name__})") from None


def _b64(value: Any, what: str, max_len: int) -> bytes:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise _bad(f"{what} must be a non-empty base64 string")
    std = value.replace("-", "+").replace("_", "/")
    std += "=" * (-len(std) % 4)
    try:
        return base64.b64decode(std, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not valid base64") from None


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(f"{what} is not a JSON object")
    return v


def _str(v: Any, what: str, max_len: int = _MAX_NAME) -> str:
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise _bad(f"{what} must be a non-empty string of at most {max_len} chars")
    return v


def _hex32(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or len(v) != 64:
        raise _bad(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise _bad(f"{what} must be 64 hex digits") from None


def _verify_with(key: VerifyingKey, message: bytes, der_sig: bytes) -> bool:
    public = key.crypto_key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(der_sig, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _verify_envelope(
    bundle: dict[str, Any], trust: TrustStore | VerifyingKey
) -> tuple[bytes, VerifyingKey]:
    """Check the envelope's shape and its signature; return the payload and the signing key."""
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise _bad(f"media type {str(bundle.get('mediaType'))[:80]!r} is not {BUNDLE_MEDIA_TYPE}")
    material = _obj(bundle.get("verificationMaterial"), "verificationMaterial")
    if "certificate" in material or "x509CertificateChain" in material:
        raise _bad("is certificate/Sigstore-signed; only key-signed bundles verify offline")
    tlog = material.get("tlogEntries", [])
    if not isinstance(tlog, list) or tlog:
        raise _bad("has transparency-log entries; only key-signed bundles are supported offline")
    hint: str | None = None
    if "publicKey" in material:
        pk = _obj(material["publicKey"], "verificationMaterial.publicKey")
        h = pk.get("hint")
        if h is not None:
            if not isinstance(h, str) or len(h) > 128:
                raise _bad("public key hint is not a string")
            hint = h.lower() or None
    envelope = _obj(bundle.get("dsseEnvelope"), "dsseEnvelope")
    if envelope.get("payloadType") != INTOTO_PAYLOAD_TYPE:
        raise _bad(f"payload type is not {INTOTO_PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "payload", 4 * 1024 * 1024)
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1:
        raise _bad("must carry exactly one DSSE signature")
    sig_obj = _obj(sigs[0], "signature")
    der_sig = _b64(sig_obj.get("sig"), "signature", _MAX_SIG_B64)
    message = pae(INTOTO_PAYLOAD_TYPE, payload)

    if isinstance(trust, VerifyingKey):
        candidates = [trust] if trust.alg == ALG_ES256 else []
    elif isinstance(trust, TrustStore):
        candidates = trust.with_alg(ALG_ES256)
    else:
        raise TypeError("trust must be a TrustStore or a VerifyingKey")
    if hint is not None:
        candidates = [k for k in candidates if hmac.compare_digest(key_hint(k), hint)]
        if not candidates:
            raise UntrustedKeyError(
                f"signed by key with hint {hint[:16]}, which is not in the trust store",
                hint="add the signer's P-256 public key to the trust store if you trust it",
            )
    elif not candidates:
        raise UntrustedKeyError(
            "OpenSSF bundle needs a trusted P-256 key, and the trust store has none",
            hint="add the signer's P-256 public key to the trust store",
        )
    for key in candidates:
        if _verify_with(key, message, der_sig):
            return payload, key
    raise SignatureError(
        "OpenSSF bundle signature does not verify"
        + (f" with key {candidates[0].key_id.hex()[:16]}" if hint else " with any trusted key")
    )


def _statement(stmt: Any, limits: Limits) -> tuple[str, bytes, dict[str, Any], list[Any]]:
    stmt = _obj(stmt, "statement")
    if stmt.get("_type") != INTOTO_STATEMENT_TYPE:
        raise _bad(f"statement _type is not {INTOTO_STATEMENT_TYPE}")
    ptype = stmt.get("predicateType")
    if ptype == _COMPAT_PREDICATE_TYPE:
        raise _bad("uses the pre-1.0 predicate Digests/v0.1; re-sign with model-signing >= 1.0")
    if ptype != PREDICATE_TYPE:
        raise _bad(f"predicate type {str(ptype)[:80]!r} is not {PREDICATE_TYPE}")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise _bad("statement must have exactly one subject")
    subject = _obj(subjects[0], "subject")
    name = _str(subject.get("name"), "subject name")
    digest = _obj(subject.get("digest"), "subject digest")
    root = _hex32(digest.get("sha256"), "subject sha256 digest")
    predicate = _obj(stmt.get("predicate"), "predicate")
    ser = _obj(predicate.get("serialization"), "predicate serialization")
    resources = predicate.get("resources")
    if not isinstance(resources, list) or not 1 <= len(resources) <= limits.max_manifest_files:
        raise _bad(f"must list 1..{limits.max_manifest_files} resources")
    return name, root, ser, resources


def open_ossf_bundle(
    data: bytes,
    trust: TrustStore | VerifyingKey,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> OssfStatement:
    """Verify a key-signed model_signing bundle and return the signed file digests.

    UntrustedKeyError: no trusted P-256 key matches; SignatureError: the DSSE signature does
    not verify; MalformedInputError: anything else about the bundle or statement.
    """
    if len(data) > limits.max_ossf_bundle_bytes:
        raise _bad(f"of {len(data)} bytes exceeds the limit of {limits.max_ossf_bundle_bytes}")
    bundle = _obj(_json(bytes(data), "bundle"), "bundle")
    payload, key = _verify_envelope(bundle, trust)

    # Only now is the payload authentic; parse it.
    name, root, ser, resources = _statement(_json(payload, "payload"), limits)
    method = ser.get("method")
    if method != "files":
        raise _bad(f"serialization method {str(method)[:40]!r} is not supported (only 'files')")
    hash_type = ser.get("hash_type")
    if hash_type != "sha256":
        raise _bad(f"hash type {str(hash_type)[:40]!r} is not supported (only 'sha256')")
    allow_symlinks = ser.get("allow_symlinks", False)
    if not isinstance(allow_symlinks, bool):
        raise _bad("allow_symlinks is not a boolean")
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise _bad("ignore_paths is not a list of strings")

    files: list[OssfFile] = []
    seen: set[str] = set()
    hasher = hashlib.sha256()
    single = (
        len(resources) == 1 and isinstance(resources[0], dict) and resources[0].get("name") == "."
    )
    for res in resources:
        res = _obj(res, "resource")
        rname = _str(res.get("name"), "resource name")
        if res.get("algorithm") != "sha256":
            raise _bad(f"resource {rname[:80]!r} is not hashed with sha256")
        digest = _hex32(res.get("digest"), f"resource {rname[:80]!r} digest")
        hasher.update(digest)
        if single:
            # A single-file model: the resource is the model file itself, signed as `name`.
            if "/" in name or name in (".", ".."):
                raise _bad(f"single-file subject name {name[:80]!r} is not a file name")
            path = name
        else:
            try:
                path = check_path(rname)
            except MalformedInputError as e:
                raise _bad(f"resource name: {e.message}") from None
        if path in seen:
            raise _bad(f"lists {path[:80]!r} twice")
        seen.add(path)
        files.append(OssfFile(path=path, sha256=digest))
    if not hmac.compare_digest(hasher.digest(), root):
        raise _bad("subject digest does not match its resources (inconsistent statement)")
    logger.debug(
        "OpenSSF bundle for %s (%d files) verified with key %s",
        name,
        len(files),
        key.key_id.hex()[:16],
    )
    return OssfStatement(
        files=tuple(files),
        key_id=key.key_id,
        predicate_type=PREDICATE_TYPE,
        hash_type="sha256",
        model_name=name,
        root_digest=root,
        method="files",
        single_file=single,
        allow_symlinks=allow_symlinks,
        ignore_paths=tuple(ignore),
    )
