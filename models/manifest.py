"""The signed model manifest (``.ewsig``): a COSE_Sign1 over a CBOR map (DESIGN.md "Wire formats").

Payload, in CDDL (RFC 8610), encoded deterministically (RFC 8949 §4.2.1)::

    manifest = {
      "fmt": 1,                      ; payload format version
      "name": tstr .regexp "[A-Za-z0-9._-]{1,128}",
      "ver": uint .le 9223372036854775807,   ; monotonic, for anti-rollback
      "files": [1*64 file],          ; up to Limits.max_manifest_files
      "tflite": tflite-summary,      ; ModelSummary.to_manifest()
      "created": uint,               ; unix seconds
      "kid": bstr .size 32,          ; signer's key id, equal to the COSE kid
      "custom_ops": bool,
      ? "profile": bstr .size 32,    ; SHA-256 of the signed inference-guard profile
    }
    file = { "path": tstr, "size": uint, "sha256": bstr .size 32,
             ? "shard": uint,              ; shard size, a power of two, 64 KiB .. 1 GiB
             ? "shards": [+ bstr .size 32] ; SHA-256 of each consecutive shard (core/digest.py)
           }
    tflite-summary = { "ops": [* tstr], "inputs": [* tensor], "outputs": [* tensor] }
    tensor = { "name": tstr, "dtype": tstr, "shape": [* int] }

Decoding is strict: unknown or missing keys, wrong types, out-of-range numbers, paths that are
absolute or climb (``..``), duplicate paths, and anything cbor.loads refuses raise
:class:`~edgeward.core.errors.MalformedInputError`. The COSE envelope has content type
``application/vnd.edgeward.manifest+cbor`` in its protected header (RFC 9052 §3.1).

:func:`open_manifest` verifies the signature before it parses the payload, then requires the
content type and that the manifest's ``kid`` equals the COSE ``kid``. It does not compare file
digests (the caller hashes the bytes it will load) nor check rollback (see :mod:`.rollback`).

This module does no I/O.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeward.core import cbor
from edgeward.core.cose import sign1, verify1
from edgeward.core.digest import MAX_SHARD_SIZE, MAX_SHARDS, MIN_SHARD_SIZE, shard_count
from edgeward.core.errors import MalformedInputError, SignatureError
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE",
    "MANIFEST_FORMAT",
    "FileEntry",
    "Manifest",
    "decode_manifest",
    "encode_manifest",
    "file_entry",
    "open_manifest",
    "sign_manifest",
]

CONTENT_TYPE = "application/vnd.edgeward.manifest+cbor"
MANIFEST_FORMAT = 1
MAX_U63 = 2**63 - 1
MAX_PATH_CHARS = 1024
MAX_TFLITE_OPS = 1024
MAX_TFLITE_TENSORS = 1024
MAX_DTYPE_CHARS = 32
MAX_OP_CHARS = 256

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_REQUIRED = frozenset({"fmt", "name", "ver", "files", "tflite", "created", "kid", "custom_ops"})
_OPTIONAL = frozenset({"profile"})
_FILE_KEYS = frozenset({"path", "size", "sha256"})


@dataclass(frozen=True)
class FileEntry:
    """One signed file: a relative path, its size in bytes and its SHA-256."""

    path: str
    size: int
    sha256: bytes
    shard_size: int = 0  # 0: no shard digests
    shards: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """The content of a model manifest. Trustworthy only when it came from :func:`open_manifest`."""

    name: str
    version: int
    files: tuple[FileEntry, ...]
    tflite: dict[str, Any]
    created: int
    key_id: bytes
    allow_custom_ops: bool = False
    profile_sha256: bytes | None = None
    format: int = MANIFEST_FORMAT


# --- validation ------------------------------------------------------------------------------


def _bad(reason: str) -> MalformedInputError:
    return MalformedInputError(f"manifest {reason}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_uint(v: Any, what: str, hi: int = MAX_U63) -> int:
    if not _is_int(v) or not 0 <= v <= hi:
        raise _bad(f"{what} must be an integer in 0..{hi}")
    return int(v)


def _check_digest(v: Any, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise _bad(f"{what} must be 32 bytes")
    return v


def _check_str(v: Any, what: str, max_chars: int, *, empty_ok: bool = False) -> str:
    if not isinstance(v, str) or len(v) > max_chars or (not v and not empty_ok):
        raise _bad(f"{what} must be a text string of {0 if empty_ok else 1}..{max_chars} chars")
    return v


def check_name(name: Any) -> str:
    """A model name: 1..128 of ``[A-Za-z0-9._-]``, not ``.`` or ``..``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise _bad(f"name {name!r} must be 1..128 characters of A-Z a-z 0-9 . _ -")
    return name


def check_path(path: Any) -> str:
    """A file path: relative, '/'-separated, no empty, '.' or '..' parts, no control chars."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS:
        raise _bad(f"file path must be a text string of 1..{MAX_PATH_CHARS} chars")
    if path.startswith("/") or "\\" in path:
        raise _bad(f"file path {path!r} must be relative and use '/'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise _bad(f"file path {path!r} contains control characters")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise _bad(f"file path {path!r} has an empty, '.' or '..' component")
    return path


def _check_shards(size: int, shard_size: Any, shards: Any) -> tuple[int, tuple[bytes, ...]]:
    if shard_size == 0 and not shards:
        return 0, ()
    shard_size = _check_uint(shard_size, "shard size", MAX_SHARD_SIZE)
    if shard_size < MIN_SHARD_SIZE or shard_size & (shard_size - 1):
        raise _bad(f"shard size {shard_size} is not a power of two in {MIN_SHARD_SIZE}..")
    if not isinstance(shards, list | tuple) or len(shards) > MAX_SHARDS:
        raise _bad(f"shards must be a list of at most {MAX_SHARDS} digests")
    if len(shards) != shard_count(size, shard_size):
        raise _bad(
            f"{len(shards)} shard digests do not cover {size} bytes in {shard_size}-byte shards"
        )
    return shard_size, tuple(_check_digest(d, "shard sha256") for d in shards)


def _check_files(files: Any, limits: Limits) -> tuple[FileEntry, ...]:
    if not isinstance(files, list | tuple) or not 1 <= len(files) <= limits.max_manifest_files:
        raise _bad(f"files must list 1..{limits.max_manifest_files} entries")
    out: list[FileEntry] = []
    seen: set[str] = set()
    for f in files:
        if isinstance(f, FileEntry):
            path, size, digest = f.path, f.size, f.sha256
            shard_size, shards = f.shard_size, f.shards
        elif isinstance(f, Mapping):
            if set(f) not in (_FILE_KEYS, _FILE_KEYS | {"shard", "shards"}):
                raise _bad("file entry must have the keys path, size, sha256 [, shard, shards]")
            path, size, digest = f["path"], f["size"], f["sha256"]
            shard_size, shards = f.get("shard", 0), f.get("shards", ())
        else:
            raise _bad("file entry is not a map")
        path = check_path(path)
        if path in seen:
            raise _bad(f"lists file {path!r} twice")
        seen.add(path)
        size = _check_uint(size, "file size")
        out.append(
            FileEntry(
                path,
                size,
                _check_digest(digest, "file sha256"),
                *_check_shards(size, shard_size, shards),
            )
        )
    return tuple(out)


def _check_tensors(v: Any, what: str, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(v, list) or len(v) > MAX_TFLITE_TENSORS:
        raise _bad(f"tflite {what} must be a list of at most {MAX_TFLITE_TENSORS} tensors")
    out = []
    for t in v:
        if not isinstance(t, Mapping) or set(t) != {"name", "dtype", "shape"}:
            raise _bad(f"tflite {what} entry must be a map with exactly name, dtype, shape")
        name = _check_str(t["name"], f"tflite {what} name", limits.max_string_bytes, empty_ok=True)
        dtype = _check_str(t["dtype"], f"tflite {what} dtype", MAX_DTYPE_CHARS)
        shape = t["shape"]
        if not isinstance(shape, list) or len(shape) > limits.max_tensor_rank:
            raise _bad(f"tflite {what} shape must be a list of at most {limits.max_tensor_rank}")
        for d in shape:
            if not _is_int(d) or not -1 <= d <= 2**31 - 1:
                raise _bad(f"tflite {what} shape dimension must be an integer in -1..2^31-1")
        out.append({"name": name, "dtype": dtype, "shape": list(shape)})
    return out


def _check_tflite(v: Any, limits: Limits) -> dict[str, Any]:
    if not isinstance(v, Mapping) or set(v) != {"ops", "inputs", "outputs"}:
        raise _bad("tflite summary must be a map with exactly ops, inputs, outputs")
    ops = v["ops"]
    if not isinstance(ops, list) or len(ops) > MAX_TFLITE_OPS:
        raise _bad(f"tflite ops must be a list of at most {MAX_TFLITE_OPS} names")
    for op in ops:
        _check_str(op, "tflite op", MAX_OP_CHARS)
    return {
        "ops": list(ops),
        "inputs": _check_tensors(v["inputs"], "inputs", limits),
        "outputs": _check_tensors(v["outputs"], "outputs", limits),
    }


def _validated(m: Manifest, limits: Limits) -> Manifest:
    if not _is_int(m.format) or m.format != MANIFEST_FORMAT:
        raise _bad(f"format {m.format!r} is not supported (expected {MANIFEST_FORMAT})")
    if not isinstance(m.allow_custom_ops, bool):
        raise _bad("custom_ops must be true or false")
    if not isinstance(m.key_id, bytes) or len(m.key_id) != 32:
        raise _bad("kid must be 32 bytes")
    return Manifest(
        name=check_name(m.name),
        version=_check_uint(m.version, "version"),
        files=_check_files(m.files, limits),
        tflite=_check_tflite(m.tflite, limits),
        created=_check_uint(m.created, "created"),
        key_id=m.key_id,
        allow_custom_ops=m.allow_custom_ops,
        profile_sha256=(
            None if m.profile_sha256 is None else _check_digest(m.profile_sha256, "profile")
        ),
        format=m.format,
    )


# --- encoding --------------------------------------------------------------------------------


def _encode_file(f: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": f.path, "size": f.size, "sha256": f.sha256}
    if f.shards:
        out["shard"] = f.shard_size
        out["shards"] = list(f.shards)
    return out


def encode_manifest(m: Manifest, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The deterministic CBOR payload of ``m``; MalformedInputError if a field is out of range."""
    m = _validated(m, limits)
    body: dict[str, Any] = {
        "fmt": m.format,
        "name": m.name,
        "ver": m.version,
        "files": [_encode_file(f) for f in m.files],
        "tflite": m.tflite,
        "created": m.created,
        "kid": m.key_id,
        "custom_ops": m.allow_custom_ops,
    }
    if m.profile_sha256 is not None:
        body["profile"] = m.profile_sha256
    return cbor.dumps(body)


def decode_manifest(payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """Parse and check a manifest payload strictly. Does not verify anything cryptographic."""
    obj = cbor.loads(payload, limits=limits)
    if not isinstance(obj, dict):
        raise _bad("payload is not a map")
    keys = set(obj)
    if keys - _REQUIRED - _OPTIONAL:
        unknown = sorted(map(str, keys - _REQUIRED - _OPTIONAL))
        raise _bad(f"has unknown key(s) {', '.join(unknown)}")
    if _REQUIRED - keys:
        raise _bad(f"lacks key(s) {', '.join(sorted(_REQUIRED - keys))}")
    if "profile" in obj and obj["profile"] is None:
        raise _bad("profile must be 32 bytes (omit the key when there is no profile)")
    if not _is_int(obj["fmt"]) or obj["fmt"] != MANIFEST_FORMAT:
        raise _bad(f"format {obj['fmt']!r} is not supported (expected {MANIFEST_FORMAT})")
    return _validated(
        Manifest(
            name=obj["name"],
            version=obj["ver"],
            files=obj["files"],
            tflite=obj["tflite"],
            created=obj["created"],
            key_id=obj["kid"],
            allow_custom_ops=obj["custom_ops"],
            profile_sha256=obj.get("profile"),
            format=obj["fmt"],
        ),
        limits,
    )


# --- signing and opening ---------------------------------------------------------------------


def sign_manifest(m: Manifest, key: SigningKey) -> bytes:
    """COSE_Sign1 over the manifest, content type :data:`CONTENT_TYPE`.

    ``m.key_id`` must be ``key.key_id`` (RuntimeError otherwise: a caller bug).
    """
    if m.key_id != key.key_id:
        raise RuntimeError("manifest key_id does not match the signing key's key_id")
    return sign1(encode_manifest(m), key, content_type=CONTENT_TYPE)


def open_manifest(
    sig: bytes, trust: TrustStore | VerifyingKey, *, limits: Limits = DEFAULT_LIMITS
) -> Manifest:
    """Verify a ``.ewsig`` against ``trust`` and return its manifest.

    Order: signature (verify1) first; then the signed content type; then the payload is parsed;
    then the manifest's key id must equal the COSE kid. SignatureError / UntrustedKeyError /
    MalformedInputError on failure.
    """
    msg = verify1(sig, trust, limits=limits)
    if msg.content_type != CONTENT_TYPE:
        raise SignatureError(
            f"signed object has content type {msg.content_type!r}, not an edgeward manifest",
            hint="give the model's .ewsig file",
        )
    m = decode_manifest(msg.payload, limits=limits)
    kid = (
        msg.kid
        if msg.kid is not None
        else (trust.key_id if isinstance(trust, VerifyingKey) else None)
    )
    if kid is None or m.key_id != kid:
        raise SignatureError("manifest key id does not match the key that signed it")
    logger.debug("manifest %s v%d signed by %s", m.name, m.version, m.key_id.hex()[:16])
    return m


def file_entry(path: str, data: bytes | memoryview) -> FileEntry:
    """A :class:`FileEntry` for ``data`` (SHA-256); ``path`` is checked as in a manifest."""
    view = memoryview(data)
    return FileEntry(check_path(path), view.nbytes, hashlib.sha256(view).digest())
