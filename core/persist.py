"""Atomic file writes: temp file in the same folder, fsync, ``os.replace``, fsync the folder.

A reader sees either the old file or the new one, never a torn write, even across power loss.
The temp file is created with O_EXCL and mode 0600 (``mkstemp``) and only then given ``mode``,
so a private file is never readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from edgeward.core.errors import ConfigError, DeviceError


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically.

    ``overwrite=False`` moves the file into place with ``os.link``, which fails with
    :class:`FileExistsError` if ``path`` exists (no check-then-write race). Other OS errors
    become :class:`DeviceError`; a missing folder is a :class:`ConfigError`.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError as e:
        raise ConfigError(f"cannot write {path}: folder {folder} does not exist") from e
    except OSError as e:
        raise DeviceError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
        fsync_dir(folder)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, FileExistsError) or not isinstance(e, OSError):
            raise
        raise DeviceError(f"cannot write {path}: {e.strerror or e}") from e


def private_file(path: Path) -> None:
    """Make ``path`` a file only its owner can read (0600), creating it empty if missing.

    For SQLite databases: SQLite gives the ``-wal``, ``-shm`` and journal files the mode of the
    database file, so calling this before ``sqlite3.connect`` keeps all of them private,
    whatever the umask of the shell that started the program.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except FileNotFoundError as e:
        raise ConfigError(f"cannot create {path}: folder {path.parent} does not exist") from e
    except OSError as e:
        raise DeviceError(f"cannot create {path} with mode 0600: {e.strerror or e}") from e
