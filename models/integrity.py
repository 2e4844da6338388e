"""Model integrity: sign a model, and verify-then-load it from one read of its bytes.

The order of checks is the point of this module (DESIGN.md, part 1):

1. the signature file is read (bounded) and its signature checked against the trust store
   before anything parses the model; the signed model name must be the expected one, when the
   caller names it (the agent's configuration does for every model);
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

import contextlib
import hashlib
import hmac
import logging
import mmap
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core.digest import (
    DEFAULT_SHARD_SIZE,
    fd_sha256,
    fd_shard_digests,
    first_mismatch,
    read_shards,
    shard_digests,
)
from edgeward.core.errors import (
    ConfigError,
    DeviceError,
    DigestMismatchError,
    IntegrityError,
    MalformedInputError,
)
from edgeward.core.fileio import open_bounded, read_bounded
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

from .manifest import FileEntry, Manifest, open_manifest, sign_manifest
from .ossf import is_ossf_bundle, open_ossf_bundle
from .rollback import RollbackState
from .tflite import ModelSummary, validate

logger = logging.getLogger(__name__)

SIG_SUFFIX = ".ewsig"
MAX_SIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ModelCheck:
    """The verdict on a model file: every check passed. Holds no copy of the model."""

    path: Path
    sha256: bytes
    size: int
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
            "size": self.size,
            "signer_key_id": self.signer_key_id.hex(),
            "operators": list(self.summary.operators),
            "profile_sha256": (
                self.manifest.profile_sha256.hex()
                if self.manifest and self.manifest.profile_sha256
                else None
            ),
        }


@dataclass(frozen=True)
class VerifiedModel(ModelCheck):
    """A verified model and ``content``, the exact bytes checked: give them to the interpreter."""

    content: bytes = field(default=b"", repr=False)


def default_sig_path(model: Path) -> Path:
    return model.with_name(model.name + SIG_SUFFIX)


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
        hint="the file name is signed: if this model was renamed, give it back its signed name; "
        "otherwise the signature belongs to another model (mix-and-match): use the model's own",
    )


def _check_name(path: Path, manifest: Manifest | None, expected: str | None) -> None:
    """The signed model name must be the one this path is configured to hold.

    The file name alone binds nothing: a vendor's other model, signed under another name but
    installed under this file name, would otherwise pass, and anti-rollback (keyed by the
    signed name) would compare it with nothing.
    """
    if expected is None:
        return
    if manifest is None:
        raise ConfigError(
            f"model {path.name}: an expected name ({expected!r}) needs a signature that names "
            "the model, which OpenSSF model-signing bundles do not",
            hint="sign the model with `edgeward model sign --name`",
        )
    if manifest.name != expected:
        raise IntegrityError(
            f"model {path.name} is signed as {manifest.name!r}, not the expected {expected!r}",
            hint="another model was installed under this file name; install the right one",
        )


def _check_size(path: Path, size: int, entry: Any) -> None:
    signed_size = getattr(entry, "size", None)
    if signed_size is not None and signed_size != size:
        raise DigestMismatchError(
            f"model {path.name} is {size} bytes but the signed size is {signed_size}",
            hint="the model was modified or truncated; reinstall it from a trusted source",
        )


def _check_shards(path: Path, actual: list[bytes], size: int, entry: Any) -> bytes:
    """Every shard's SHA-256 is signed, so matching them all covers every byte; the file's
    SHA-256, signed beside them, is then the one the signer computed from these bytes."""
    bad = first_mismatch(actual, entry.shards)
    if bad >= 0:
        lo = bad * entry.shard_size
        raise DigestMismatchError(
            f"model {path.name} differs from the signed digest in bytes "
            f"{lo}..{min(lo + entry.shard_size, size) - 1} (shard {bad})",
            hint="the model was modified; reinstall it from a trusted source",
        )
    return bytes(entry.sha256)


def _shrunk(path: Path, e: EOFError) -> DigestMismatchError:
    return DigestMismatchError(f"model {path.name} got shorter while it was read ({e})",
                               hint="the model is being replaced; verify it again once it is "
                               "in place, or reinstall it from a trusted source")


def _check_digest(path: Path, data: bytes | memoryview | int, size: int, entry: Any) -> bytes:
    """Compare the bytes (or an open file's, given its descriptor) with the signed entry.

    Returns their SHA-256.
    """
    _check_size(path, size, entry)
    try:
        if getattr(entry, "shards", ()):
            actual = (
                fd_shard_digests(data, size, entry.shard_size)
                if isinstance(data, int)
                else shard_digests(data, entry.shard_size)
            )
            return _check_shards(path, actual, size, entry)
        digest = fd_sha256(data, size) if isinstance(data, int) else hashlib.sha256(data).digest()
    except EOFError as e:
        raise _shrunk(path, e) from e
    if not hmac.compare_digest(digest, entry.sha256):
        raise DigestMismatchError(
            f"model {path.name} has SHA-256 {digest.hex()[:16]}… but the signed digest is "
            f"{entry.sha256.hex()[:16]}…",
            hint="the model was modified; reinstall it from a trusted source",
        )
    return digest


def _read_checked(path: Path, entry: Any, limit: int) -> tuple[bytes, bytes]:
    """One read of the model and its SHA-256, checked against the signed entry.

    With shard digests in the entry, the shards are read and hashed in parallel straight into
    the bytes returned (:func:`read_shards`); otherwise one read and one SHA-256.
    """
    if not getattr(entry, "shards", ()):
        content = read_bounded(path, limit, what="model")
        return content, _check_digest(path, content, len(content), entry)
    with open_bounded(path, limit, what="model") as f:
        size = f.stat.st_size
        _check_size(path, size, entry)  # before reading a byte
        try:
            content, actual = read_shards(f.fd, size, entry.shard_size)
        except EOFError as e:
            raise _shrunk(path, e) from e
        except OSError as e:
            raise DeviceError(f"cannot read model {path}: {e.strerror or e}") from e
    return content, _check_shards(path, actual, size, entry)


@contextlib.contextmanager
def _mapped(path: Path, limit: int) -> Iterator[tuple[int, memoryview]]:
    """An open file and a read-only mapping of it (no copy in process memory)."""
    with open_bounded(path, limit, what="model") as f:
        fd, st = f.fd, f.stat
        if st.st_size == 0:
            yield fd, memoryview(b"")
            return
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            yield fd, view
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a view still held: closed when collected
                mm.close()


def _compare_summary(summary: ModelSummary, signed: dict[str, Any]) -> None:
    actual = summary.to_manifest()
    if actual != signed:
        diff = sorted(k for k in set(actual) | set(signed) if actual.get(k) != signed.get(k))
        raise IntegrityError(
            f"the model's structure differs from the signed summary ({', '.join(diff)})"
        )


def _open_signature(
    model_path: Path,
    trust: TrustStore | VerifyingKey,
    sig_path: Path | None,
    state: RollbackState | None,
    limits: Limits,
    name: str | None = None,
) -> tuple[Manifest | None, Any, bytes, str]:
    sig_path = Path(sig_path) if sig_path else default_sig_path(model_path)
    _require_file(model_path, what="model")
    sig = read_bounded(sig_path, MAX_SIG_BYTES, what="signature")
    if is_ossf_bundle(sig):
        if state is not None:
            raise ConfigError(
                "anti-rollback (--state) needs a version, which OpenSSF model-signing bundles "
                "do not carry",
                hint="sign the model with `edgeward model sign` or drop --state",
            )
        statement = open_ossf_bundle(sig, trust, limits=limits)
        _check_name(model_path, None, name)
        return None, _entry_for(model_path, statement.files), statement.key_id, (
            "openssf-model-signing"
        )
    manifest = open_manifest(sig, trust, limits=limits)
    _check_name(model_path, manifest, name)
    return manifest, _entry_for(model_path, manifest.files), manifest.key_id, "edgeward-manifest"


def _check_bytes(
    model_path: Path,
    view: bytes | memoryview,
    manifest: Manifest | None,
    entry: Any,
    state: RollbackState | None,
    limits: Limits,
    fd: int | None = None,
) -> tuple[bytes, ModelSummary]:
    size = memoryview(view).nbytes
    digest = _check_digest(model_path, view if fd is None else fd, size, entry)
    return digest, _check_structure(view, manifest, state, limits)


def _check_structure(
    view: bytes | memoryview,
    manifest: Manifest | None,
    state: RollbackState | None,
    limits: Limits,
) -> ModelSummary:
    """Anti-rollback, structural validation and the signed summary (after the digest)."""
    if manifest is not None and state is not None:
        state.check(manifest.name, manifest.version)
    allow_custom = manifest.allow_custom_ops if manifest else False
    summary = validate(view, allow_custom_ops=allow_custom, limits=limits)
    if manifest is not None:
        _compare_summary(summary, manifest.tflite)
        if state is not None:
            state.accept(manifest.name, manifest.version)
    return summary


def verify_model(
    model_path: Path,
    trust: TrustStore | VerifyingKey,
    *,
    sig_path: Path | None = None,
    state: RollbackState | None = None,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> VerifiedModel:
    """Verify ``model_path`` against its signature and return the verified bytes to load.

    Order: the signature (nothing parses the model before it passes) and the signed model name
    (when ``name`` is given, it must match: the file name alone binds nothing), one read of the
    model, size and SHA-256 against the signed entry, anti-rollback, structural validation and the
    signed summary. Raises the :class:`IntegrityError` family for a negative verdict (exit 2),
    :class:`ConfigError` for a missing or wrong path (exit 1), :class:`DeviceError` for I/O
    failures (exit 3).
    """
    model_path = Path(model_path)
    manifest, entry, key_id, scheme = _open_signature(model_path, trust, sig_path, state, limits,
                                                      name)
    content, digest = _read_checked(model_path, entry, limits.max_model_bytes)
    summary = _check_structure(content, manifest, state, limits)
    logger.info("verified %s (%s, sha256 %s, key %s)", model_path.name, scheme,
                digest.hex()[:16], key_id.hex()[:16])
    return VerifiedModel(path=model_path, sha256=digest, size=len(content), summary=summary,
                         signer_key_id=key_id, scheme=scheme, manifest=manifest, content=content)


def check_model(
    model_path: Path,
    trust: TrustStore | VerifyingKey,
    *,
    sig_path: Path | None = None,
    state: RollbackState | None = None,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> ModelCheck:
    """The same checks as :func:`verify_model` on a read-only mapping, keeping no copy.

    For a verdict about a file (``edgeward model verify``, the agent's re-verification watch),
    not for loading: a model to run must come from :func:`verify_model`, whose bytes are the
    ones checked.
    """
    model_path = Path(model_path)
    manifest, entry, key_id, scheme = _open_signature(model_path, trust, sig_path, state, limits,
                                                      name)
    with _mapped(model_path, limits.max_model_bytes) as (fd, view):
        size = view.nbytes
        # Hashing reads the file with pread into a small buffer on every core; the structural
        # check walks the mapping. The verdict is about the file as it was during the check.
        digest, summary = _check_bytes(model_path, view, manifest, entry, state, limits, fd)
    logger.info("checked %s (%s, sha256 %s, key %s)", model_path.name, scheme,
                digest.hex()[:16], key_id.hex()[:16])
    return ModelCheck(path=model_path, sha256=digest, size=size, summary=summary,
                      signer_key_id=key_id, scheme=scheme, manifest=manifest)


def _shard_size_for(size: int) -> int:
    """4 MiB shards, doubled until a file needs at most 1,024 of them."""
    shard = DEFAULT_SHARD_SIZE
    while -(-size // shard) > 1024:
        shard *= 2
    return shard


def file_entry_with_shards(path: str, content: bytes | memoryview) -> FileEntry:
    """A manifest entry: size, SHA-256 and, above one shard, the shard digests."""
    size = memoryview(content).nbytes
    shard = _shard_size_for(size)
    shards = tuple(shard_digests(content, shard)) if size > shard else ()
    return FileEntry(path=path, size=size, sha256=hashlib.sha256(content).digest(),
                     shard_size=shard if shards else 0, shards=shards)


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
        files=(file_entry_with_shards(model_path.name, content),),
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
