"""Bounded file reads: the one way edgeward reads a file whose size it does not control.

Every command and service that reads bytes from outside (models, signatures, evidence, EARs,
certificates, reference values, configuration and key files, device state) reads them through
:func:`read_bounded` (or, to map or hash a large file in place, :func:`open_bounded`), so
oversized input is refused the same way everywhere:

1. the file is opened without blocking (``O_NONBLOCK``: a FIFO named as a model cannot hang the
   command) and, if asked, without following a symlink (``O_NOFOLLOW``);
2. ``fstat`` on the open descriptor must show a regular file (not a folder, device or FIFO) no
   larger than the limit: a 4 GiB file is refused before one byte of it is read;
3. at most ``limit + 1`` bytes are read, so a file that grows after the ``fstat`` (or a
   ``/proc`` file that reports size 0) is still refused, and is never held in memory whole.

Errors say whose fault they are (:mod:`edgeward.core.errors`), and that depends on whose file it
is, so the caller names one of three :class:`Faults`:

* :data:`UNTRUSTED` (the default): input to be checked (a model, a signature, evidence, an EAR,
  reference values, a device certificate). A missing path or a folder is the operator's
  (:class:`ConfigError`), a file over the limit is rejected input (:class:`MalformedInputError`,
  exit 2), any other OS failure is local I/O (:class:`DeviceError`).
* :data:`OPERATOR`: the operator's own files (configuration, keys, CA certificates): every
  problem is a :class:`ConfigError` the operator can fix.
* :data:`DEVICE_STATE`: state the product keeps for itself (anti-rollback, counters): every
  problem is a :class:`DeviceError`.

A missing file is always :class:`MissingFileError` (a :class:`ConfigError`), so a caller for
which absence means "empty" catches just that. Each message names what the file is, its path,
and for an oversized file its size and the limit.

This module's I/O is the one read it is asked for; it writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeward.core.errors import (
    ConfigError,
    DeviceError,
    EdgewardError,
    MalformedInputError,
    MissingFileError,
)

__all__ = [
    "DEVICE_STATE",
    "OPERATOR",
    "UNTRUSTED",
    "BoundedFile",
    "Faults",
    "open_bounded",
    "read_bounded",
]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class Faults:
    """Which error each problem with a file raises (see the module docstring)."""

    not_a_file: type[EdgewardError]  # a folder, a device, a FIFO, a refused symlink
    too_large: type[EdgewardError]
    unreadable: type[EdgewardError]  # permissions, I/O errors


UNTRUSTED = Faults(ConfigError, MalformedInputError, DeviceError)
OPERATOR = Faults(ConfigError, ConfigError, ConfigError)
DEVICE_STATE = Faults(DeviceError, DeviceError, DeviceError)


def read_bounded(path: str | os.PathLike[str], limit: int, *, what: str,
                 faults: Faults = UNTRUSTED, follow_symlinks: bool = True,
                 hint: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (see the module doc).

    ``what`` names the file in messages ("model", "evidence", "configuration file"); ``hint``,
    if given, is added to every error raised here.
    """
    with open_bounded(path, limit, what=what, faults=faults, follow_symlinks=follow_symlinks,
                      hint=hint) as f:
        return f.read()


@dataclass(frozen=True)
class BoundedFile:
    """An open regular file that :func:`open_bounded` checked: its descriptor and ``fstat``."""

    fd: int
    stat: os.stat_result
    path: Path
    limit: int
    what: str
    faults: Faults
    hint: str | None

    def read(self) -> bytes:
        """Step 3 of the module doc: the bytes, at most ``limit``, in as few reads as it takes."""
        # The first read asks for the whole file plus one byte, so a regular file comes back in
        # one piece (no copy when joined); the loop is for short reads and for /proc files,
        # which report size 0. At most limit + 1 bytes are ever held.
        chunks: list[bytes] = []
        left = self.limit + 1
        size = self.stat.st_size + 1
        try:
            while left > 0:
                chunk = os.read(self.fd, min(left, max(size, 1 << 16)))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
                size = 1 << 20
        except OSError as e:
            raise _unreadable(self.faults, self.what, self.path, e, self.hint) from e
        data = b"".join(chunks)
        if len(data) > self.limit:
            raise self.faults.too_large(f"{self.what} {self.path} is larger than the limit of "
                                        f"{self.limit} bytes (it grew while being read)",
                                        hint=self.hint)
        return data


@contextlib.contextmanager
def open_bounded(path: str | os.PathLike[str], limit: int, *, what: str,
                 faults: Faults = UNTRUSTED, follow_symlinks: bool = True,
                 hint: str | None = None) -> Iterator[BoundedFile]:
    """Steps 1 and 2 of the module doc: an open, checked regular file within ``limit``.

    For a caller that needs the ``fstat`` of the very file it reads (owner and mode of a key
    file), or that maps or hashes the file instead of reading it into memory (a model of
    hundreds of MiB). The descriptor is closed on leaving the block. Errors raised inside the
    block are the caller's own.
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    path = Path(path)
    try:
        fd = os.open(path, _FLAGS | (0 if follow_symlinks else _NOFOLLOW))
    except FileNotFoundError as e:
        raise MissingFileError(f"{what} {path} does not exist", hint=hint) from e
    except IsADirectoryError as e:
        raise faults.not_a_file(f"{what} {path} is a directory; give a file", hint=hint) from e
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise faults.not_a_file(f"{what} {path} is a symlink, which is not accepted here",
                                    hint=hint) from e
        raise _unreadable(faults, what, path, e, hint) from e
    try:
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise _unreadable(faults, what, path, e, hint) from e
        if stat.S_ISDIR(st.st_mode):
            raise faults.not_a_file(f"{what} {path} is a directory; give a file", hint=hint)
        if not stat.S_ISREG(st.st_mode):
            raise faults.not_a_file(f"{what} {path} is not a regular file", hint=hint)
        if st.st_size > limit:
            raise faults.too_large(f"{what} {path} is {st.st_size} bytes, larger than the limit "
                                   f"of {limit} bytes", hint=hint)
        yield BoundedFile(fd, st, path, limit, what, faults, hint)
    finally:
        os.close(fd)


def _unreadable(faults: Faults, what: str, path: Path, e: OSError,
                hint: str | None) -> EdgewardError:
    reason = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e))
    return faults.unreadable(f"cannot read {what} {path}: {reason}", hint=hint)
