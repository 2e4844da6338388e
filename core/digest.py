"""SHA-256 over model bytes, whole and in shards hashed in parallel.

A manifest binds each file's plain SHA-256 (what ``sha256sum`` prints) and, for files larger
than one shard, the SHA-256 of every consecutive ``shard_size`` slice. Verification checks every
shard digest, so every byte is covered by a signed SHA-256, and the shards are hashed on all
cores at once: hashlib releases the GIL while it hashes, so threads scale.

Pure apart from the thread pool: bytes (or a memoryview of a mapped file) in, digests out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

DEFAULT_SHARD_SIZE = 4 * 1024 * 1024
MIN_SHARD_SIZE = 64 * 1024
MAX_SHARD_SIZE = 1 << 30
MAX_SHARDS = 1 << 16


def shard_count(size: int, shard_size: int) -> int:
    return -(-size // shard_size)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def shard_digests(data: bytes | memoryview, shard_size: int = DEFAULT_SHARD_SIZE) -> list[bytes]:
    """The SHA-256 of each ``shard_size`` slice of ``data``, computed in parallel."""
    view = memoryview(data).cast("B")
    n = shard_count(view.nbytes, shard_size)
    slices = [view[i * shard_size : (i + 1) * shard_size] for i in range(n)]
    if n <= 1:
        return [hashlib.sha256(s).digest() for s in slices]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        return list(pool.map(lambda s: hashlib.sha256(s).digest(), slices))


_CHUNK = 1024 * 1024


def _fd_range_sha256(fd: int, start: int, end: int) -> bytes:
    """SHA-256 of bytes start..end of a file, read with pread into one reused 1 MiB buffer
    (stays in cache; no page faults on a mapping, no copy of the file in memory)."""
    h = hashlib.sha256()
    buf = bytearray(min(_CHUNK, max(1, end - start)))
    view = memoryview(buf)
    off = start
    while off < end:
        n = os.preadv(fd, [view[: min(len(buf), end - off)]], off)
        if n <= 0:
            raise OSError(f"file ended at byte {off}, before {end}")
        h.update(view[:n])
        off += n
    return h.digest()


def fd_sha256(fd: int, size: int) -> bytes:
    """The plain SHA-256 of the first ``size`` bytes of an open file."""
    return _fd_range_sha256(fd, 0, size)


def fd_shard_digests(fd: int, size: int, shard_size: int) -> list[bytes]:
    """The shard digests of an open file, shards hashed in parallel."""
    ranges = [(i, min(i + shard_size, size)) for i in range(0, size, shard_size)]
    if len(ranges) <= 1:
        return [_fd_range_sha256(fd, a, b) for a, b in ranges]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        return list(pool.map(lambda r: _fd_range_sha256(fd, *r), ranges))


def first_mismatch(actual: Sequence[bytes], expected: Sequence[bytes]) -> int:
    """-1 if the digests all match, else the index of the first that differs."""
    if len(actual) != len(expected):
        return min(len(actual), len(expected))
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if not hmac.compare_digest(a, e):
            return i
    return -1
