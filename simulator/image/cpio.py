"""A cpio "newc" archive writer for the Linux initramfs (buffer-format.rst in the kernel tree).

Writes a folder tree as root-owned entries in sorted order with a fixed mtime, so the same
tree gives the same bytes. Only the output stream is touched; the tree is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

MTIME = 1_700_000_000  # fixed, so images are reproducible


def _header(ino: int, mode: int, size: int, nlink: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(f"{f:08X}".encode() for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(out: BinaryIO, ino: int, mode: int, name: bytes, data: bytes, nlink: int = 1) -> None:
    head = _header(ino, mode, len(data), nlink, name) + name + b"\0"
    out.write(head + _pad(len(head)))
    out.write(data + _pad(len(data)))


def write_newc(root: Path, out: BinaryIO) -> int:
    """Archive every file, folder and symlink under ``root``; returns the number of entries."""
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        paths.extend(base / d for d in dirnames)
        paths.extend(base / f for f in sorted(filenames))
    ino = 1
    for p in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        name = p.relative_to(root).as_posix().encode()
        st = p.lstat()
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            _entry(out, ino, stat.S_IFLNK | 0o777, name, os.readlink(p).encode())
        elif stat.S_ISDIR(st.st_mode):
            _entry(out, ino, stat.S_IFDIR | perm, name, b"", nlink=2)
        elif stat.S_ISREG(st.st_mode):
            _entry(out, ino, stat.S_IFREG | perm, name, p.read_bytes())
        else:
            continue  # devices and fifos: devtmpfs makes them in the guest
        ino += 1
    _entry(out, 0, 0, b"TRAILER!!!", b"")
    return ino - 1
