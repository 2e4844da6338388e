"""Anti-rollback: remember the highest accepted version of each model and refuse older ones.

:func:`check_version` is the pure rule: a version lower than the highest one already accepted
is refused (:class:`~edgeward.core.errors.RollbackError`); an equal version is accepted, so
the same model can be verified again.

:class:`RollbackState` is the edge that persists the highest versions in one small JSON file,
``rollback.json``, in a state directory (created with mode 0700)::

    {"format": 1, "models": {"<name>": <version>, ...}, "sha256": "<hex>"}

where ``sha256`` is the SHA-256 of the canonical JSON of ``models`` (sorted keys, no spaces), to
catch a truncated or bit-flipped file. Writes are atomic (temp file in the same directory,
fsync, ``os.replace``, fsync of the directory), and every read-check-write runs under an
exclusive ``fcntl.flock`` on ``rollback.lock``, so two processes accepting at once never lose an
update. The file is bounded in size and validated on every read: a corrupted file raises
:class:`~edgeward.core.errors.DeviceError` rather than silently meaning "no versions yet",
which would re-open rollback.

Limits of this design (see docs/ threat model): a missing file means a fresh device, so an
attacker who can delete files in the state directory can reset it; binding the state to a TPM
NV counter closes that gap and is not done here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError, MissingFileError, RollbackError
from edgeward.core.fileio import DEVICE_STATE, read_bounded
from edgeward.core.persist import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "RollbackState", "check_version"]

STATE_FILE = "rollback.json"
LOCK_FILE = "rollback.lock"
STATE_FORMAT = 1
MAX_STATE_BYTES = 1024 * 1024
MAX_MODELS = 10_000
MAX_VERSION = 2**63 - 1
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _check_args(name: str, version: int) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"model name {name!r} must be 1..128 characters of A-Z a-z 0-9 . _ -")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version {version!r} must be an integer in 0..2^63-1")


def check_version(name: str, version: int, highest: int | None) -> None:
    """Refuse ``version`` if it is lower than ``highest`` (the highest accepted so far)."""
    if highest is not None and version < highest:
        raise RollbackError(
            f"model {name!r} version {version} is lower than version {highest} already accepted",
            hint=f"install version {highest} or newer; older versions may have known flaws",
        )


def _digest(models: dict[str, int]) -> str:
    canonical = json.dumps(models, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _encode(models: dict[str, int]) -> bytes:
    body = {
        "format": STATE_FORMAT,
        "models": dict(sorted(models.items())),
        "sha256": _digest(models),
    }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _decode(raw: bytes, path: Path) -> dict[str, int]:
    def corrupt(reason: str) -> DeviceError:
        return DeviceError(
            f"anti-rollback state {path} is corrupt ({reason})",
            hint="restore it from a backup; deleting it removes rollback protection",
        )

    def no_dups(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise corrupt(f"duplicate key {k[:40]!r}")
            out[k] = v
        return out

    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    except DeviceError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise corrupt(f"not valid JSON: {type(e).__name__}") from None
    if not isinstance(body, dict) or set(body) != {"format", "models", "sha256"}:
        raise corrupt("unexpected structure")
    if body["format"] != STATE_FORMAT or isinstance(body["format"], bool):
        raise corrupt(f"unknown format {body['format']!r}")
    models = body["models"]
    if not isinstance(models, dict) or len(models) > MAX_MODELS:
        raise corrupt(f"models is not a map of at most {MAX_MODELS} entries")
    for name, version in models.items():
        try:
            _check_args(name, version)
        except ValueError as e:
            raise corrupt(str(e)) from None
    if body["sha256"] != _digest(models):
        raise corrupt("checksum mismatch")
    return dict(models)


class RollbackState:
    """The highest accepted version per model name, persisted in ``state_dir``.

    Safe to use from several processes at once (``fcntl.flock``). Raises DeviceError when the
    state cannot be read or written, or is corrupt.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self._lock_path = self.state_dir / LOCK_FILE

    # --- public API ------------------------------------------------------------------------

    def highest(self, name: str) -> int | None:
        """The highest accepted version of ``name``, or None if none was accepted yet."""
        with self._locked(fcntl.LOCK_SH):
            return self._read().get(name)

    def check(self, name: str, version: int) -> None:
        """Raise RollbackError if ``version`` is lower than the highest accepted one."""
        _check_args(name, version)
        check_version(name, version, self.highest(name))

    def accept(self, name: str, version: int) -> None:
        """Check, then record ``version`` if it is the new highest (atomic, under the lock)."""
        _check_args(name, version)
        with self._locked(fcntl.LOCK_EX):
            models = self._read()
            highest = models.get(name)
            check_version(name, version, highest)
            if highest is not None and version == highest:
                return
            models[name] = version
            self._write(models)
        logger.info("anti-rollback: %s now at version %d", name, version)

    def snapshot(self) -> dict[str, int]:
        """A copy of every recorded (name, highest version)."""
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    # --- edges -----------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceError(
                f"cannot create anti-rollback state directory {self.state_dir}: {e.strerror or e}",
                hint="check the --state path and its permissions",
            ) from e
        if not self.state_dir.is_dir():
            raise DeviceError(f"anti-rollback state path {self.state_dir} is not a directory")

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        self._ensure_dir()
        try:
            fd = os.open(
                self._lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600
            )
        except OSError as e:
            raise DeviceError(
                f"cannot open anti-rollback lock {self._lock_path}: {e.strerror or e}"
            ) from e
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self) -> dict[str, int]:
        try:
            raw = read_bounded(self.path, MAX_STATE_BYTES, what="anti-rollback state",
                               faults=DEVICE_STATE, follow_symlinks=False,
                               hint="restore it from a backup")
        except MissingFileError:
            return {}
        return _decode(raw, self.path)

    def _write(self, models: dict[str, int]) -> None:
        if len(models) > MAX_MODELS:
            raise DeviceError(f"anti-rollback state would exceed {MAX_MODELS} models")
        data = _encode(models)
        try:
            write_atomic(self.path, data, mode=0o600)
        except DeviceError as e:
            raise DeviceError(
                f"cannot write anti-rollback state {self.path}: {e}",
                hint="check free space and permissions of the --state directory",
            ) from e
