"""Model integrity: sign a model, and verify-then-load it from one read of its bytes.

The order of checks is the point of this module (DESIGN.md, part 1):

1. the signature file is read (bounded) and its signature checked against the trust store
   before anything parses the model;
2. the model file is read once; its size and SHA-256 are compared with the signed entry;
3. anti-rollback: the signed version must not be lower than one already accepted;
4. the flatbuffer is validated structurally and its summary compared with the signed summary;
5. the caller gets :class:`VerifiedModel` whose ``content`` is exactly the bytes that were
   checked, to hand to the interpreter as ``model_content``. Nothing re-opens the path, so a
   file swapped after the check is never loaded (no time-of-check/time-of-use gap), and no
   second copy of the model is made.

The signature may be an edgeward manifest (COSE_Sign1) or an OpenSSF model-signing bundle
(key-signed, verified offline). I/O here is limited to reading the two files and the rollback
state; the checks themselves live in :mod:`.manifest`, :mod:`.ossf`, :mod:`.tflite`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    ConfigError,
    DeviceError,
    DigestMismatchError,
    IntegrityError,
    MalformedInputError,
)
from .keys import SigningKey, TrustStore, VerifyingKey
from .limits import DEFAULT_LIMITS, Limits
from .manifest import FileEntry, Manifest, open_manifest, sign_manifest
from .ossf import is_ossf_bundle, open_ossf_bundle
from .rollback import RollbackState
from .tflite import ModelSummary, validate

logger = logging.getLogger(__name__)

SIG_SUFFIX = ".ewsig"
MAX_SIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose bytes passed every check. ``content`` is what the interpreter gets."""

    path: Path
    content: bytes = field(repr=False)
    sha256: bytes
    summary: ModelSummary
    signer_key_id: bytes
    scheme: str  # "edgeward-manifest" or "openssf-model-signing"
    manifest: Manifest | None = None

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.path.name

    @property
    def version(self) -> int | None:
        return self.manifest.version if self.manifest else None

    def report(self) -> dict[str, Any]:
        """A JSON-able account of what was verified (for ``model verify --json``)."""
        return {
            "verified": True,
            "path": str(self.path),
            "scheme": self.scheme,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256.hex(),
            "size": len(self.content),
            "signer_key_id": self.signer_key_id.hex(),
            "operators": list(self.summary.operators),
            "profile_sha256": (
                self.manifest.profile_sha256.hex()
                if self.manifest and self.manifest.profile_sha256
                else None
            ),
        }


def default_sig_path(model: Path) -> Path:
    return model.with_name(model.name + SIG_SUFFIX)


def read_bounded(path: Path, limit: int, *, what: str) -> bytes:
    """Read a regular file in one call, refusing directories, devices and oversize files."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{what} {path} is not a regular file")
            if st.st_size > limit:
                raise IntegrityError(
                    f"{what} {path} is {st.st_size} bytes, above the limit of {limit}"
                )
            data = f.read(limit + 1)
    except IsADirectoryError as e:
        raise ConfigError(f"{what} {path} is a directory; give a file") from e
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {path} does not exist") from e
    except PermissionError as e:
        raise DeviceError(f"cannot read {what} {path}: permission denied") from e
    except OSError as e:
        raise DeviceError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise IntegrityError(f"{what} {path} grew above the limit of {limit} bytes while read")
    return data


def _require_file(path: Path, *, what: str) -> None:
    """A cheap look before the expensive work: a missing path or a folder is the operator's."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise DeviceError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path} is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file")


def _entry_for(path: Path, files: Any) -> Any:
    for entry in files:
        if entry.path == path.name:
            return entry
    names = ", ".join(repr(e.path) for e in files)
    raise DigestMismatchError(
        f"the signature covers {names}, not {path.name!r}",
        hint="it belongs to another model (mix-and-match); use the model's own signature",
    )


def _check_digest(path: Path, content: bytes, entry: Any) -> bytes:
    size = getattr(entry, "size", None)
    if size is not None and size != len(content):
        raise DigestMismatchError(
            f"model {path.name} is {len(content)} bytes but the signed size is {size}",
            hint="the model was modified or truncated; reinstall it from a trusted source",
        )
    digest = hashlib.sha256(content).digest()
    if not hmac.compare_digest(digest, entry.sha256):
        raise DigestMismatchError(
            f"model {path.name} has SHA-256 {digest.hex()[:16]}… but the signed digest is "
            f"{entry.sha256.hex()[:16]}…",
            hint="the model was modified; reinstall it from a trusted source",
        )
    return digest


def _compare_summary(summary: ModelSummary, signed: dict[str, Any]) -> None:
    actual = summary.to_manifest()
    if actual != signed:
        diff = sorted(k for k in set(actual) | set(signed) if actual.get(k) != signed.get(k))
        raise IntegrityError(
            f"the model's structure differs from the signed summary ({', '.join(diff)})"
        )


def verify_model(
    model_path: Path,
    trust: TrustStore | VerifyingKey,
    *,
    sig_path: Path | None = None,
    state: RollbackState | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedModel:
    """Verify ``model_path`` against its signature and return the verified bytes.

    Raises the :class:`IntegrityError` family for a negative verdict (exit 2),
    :class:`ConfigError` for a missing or wrong path (exit 1) and :class:`DeviceError` for I/O
    failures (exit 3).
    """
    model_path = Path(model_path)
    sig_path = Path(sig_path) if sig_path else default_sig_path(model_path)
    _require_file(model_path, what="model")
    sig = read_bounded(sig_path, MAX_SIG_BYTES, what="signature")

    # 1. Signature first: nothing below parses the model before this passes.
    manifest: Manifest | None = None
    if is_ossf_bundle(sig):
        if state is not None:
            raise ConfigError(
                "anti-rollback (--state) needs a version, which OpenSSF model-signing bundles "
                "do not carry",
                hint="sign the model with `edgeward model sign` or drop --state",
            )
        statement = open_ossf_bundle(sig, trust, limits=limits)
        files: Any = statement.files
        key_id = statement.key_id
        scheme = "openssf-model-signing"
    else:
        manifest = open_manifest(sig, trust, limits=limits)
        files = manifest.files
        key_id = manifest.key_id
        scheme = "edgeward-manifest"
    entry = _entry_for(model_path, files)

    # 2. One read of the model; size and digest against the signed entry.
    content = read_bounded(model_path, limits.max_model_bytes, what="model")
    digest = _check_digest(model_path, content, entry)

    # 3. Anti-rollback before the version is recorded anywhere.
    if manifest is not None and state is not None:
        state.check(manifest.name, manifest.version)

    # 4. Structure of the exact bytes that will be loaded.
    allow_custom = manifest.allow_custom_ops if manifest else False
    summary = validate(content, allow_custom_ops=allow_custom, limits=limits)
    if manifest is not None:
        _compare_summary(summary, manifest.tflite)

    if manifest is not None and state is not None:
        state.accept(manifest.name, manifest.version)
    logger.info(
        "verified %s (%s, sha256 %s, key %s)",
        model_path.name,
        scheme,
        digest.hex()[:16],
        key_id.hex()[:16],
    )
    return VerifiedModel(
        path=model_path,
        content=content,
        sha256=digest,
        summary=summary,
        signer_key_id=key_id,
        scheme=scheme,
        manifest=manifest,
    )


def sign_model(
    model_path: Path,
    key: SigningKey,
    *,
    name: str,
    version: int,
    allow_custom_ops: bool = False,
    profile: bytes | None = None,
    created: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[bytes, Manifest]:
    """Validate a model and return its signed manifest (COSE_Sign1 bytes) and the manifest.

    A model that fails validation is refused (:class:`MalformedModelError` or
    :class:`PolicyError`, exit 2): a signer never vouches for a model it could not parse.
    """
    model_path = Path(model_path)
    content = read_bounded(model_path, limits.max_model_bytes, what="model")
    summary = validate(content, allow_custom_ops=allow_custom_ops, limits=limits)
    if version < 0:
        raise ConfigError(f"version {version} is negative; versions are unsigned integers")
    manifest = Manifest(
        name=name,
        version=version,
        files=(
            FileEntry(
                path=model_path.name,
                size=len(content),
                sha256=hashlib.sha256(content).digest(),
            ),
        ),
        tflite=summary.to_manifest(),
        created=int(time.time()) if created is None else created,
        key_id=key.key_id,
        allow_custom_ops=allow_custom_ops,
        profile_sha256=hashlib.sha256(profile).digest() if profile is not None else None,
    )
    try:
        return sign_manifest(manifest, key), manifest
    except MalformedInputError as e:  # a name or field the manifest schema refuses
        raise ConfigError(f"cannot sign: {e}") from e
