"""SHA-256 over model bytes, whole and in shards hashed in parallel.

A manifest binds each file's plain SHA-256 (what ``sha256sum`` prints) and, for files larger
than one shard, the SHA-256 of every consecutive ``shard_size`` slice. Verification checks every
shard digest, so every byte is covered by a signed SHA-256, and the shards are hashed on all
cores at once: hashlib releases the GIL while it hashes, so threads scale.

To load a model, :func:`read_shards` reads a file once, straight into the ``bytes`` object
handed to the interpreter, each worker reading and then hashing whole shards, so the read is
spread over the cores as well as the hashing. The workers are one long-lived thread pool per
process (started on first use), so a verification pays no thread start-up.

Pure apart from the thread pool and the reads: bytes (or an open file) in, digests out.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

DEFAULT_SHARD_SIZE = 4 * 1024 * 1024
MIN_SHARD_SIZE = 64 * 1024
MAX_SHARD_SIZE = 1 << 30
MAX_SHARDS = 1 << 16


def shard_count(size: int, shard_size: int) -> int:
    return -(-size // shard_size)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """This process's helper threads (the caller's own thread is the last worker).

    Keyed by process id: a forked child has none of its parent's threads, so it starts its own.
    """
    global _POOL
    pid = os.getpid()
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid:
            _POOL = (pid, ThreadPoolExecutor(max_workers=max(1, _workers() - 1),
                                             thread_name_prefix="edgeward-digest"))
        return _POOL[1]


def _parallel(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(0) .. work(n - 1)`` on the caller's thread and the helpers, each index once.

    Workers take the next index as they finish one (a slow or busy helper takes fewer), and the
    caller waits only for indices some worker took, never for a helper that had none to take.
    The first exception is raised once every taken index is finished.
    """
    if n <= 1 or _workers() == 1:
        for i in range(n):
            work(i)
        return
    todo = itertools.count()  # next() on it is atomic: each index is taken once
    lock, finished = threading.Lock(), threading.Event()
    left = n
    errors: list[BaseException] = []

    def run() -> None:
        nonlocal left
        while (i := next(todo)) < n:
            if not errors:
                try:
                    work(i)
                except BaseException as e:  # re-raised on the caller's thread
                    errors.append(e)
            with lock:
                left -= 1
                if left == 0:
                    finished.set()

    pool = _pool()
    for _ in range(min(n, _workers()) - 1):
        pool.submit(run)
    run()
    finished.wait()
    if errors:
        raise errors[0]


def shard_digests(data: bytes | memoryview, shard_size: int = DEFAULT_SHARD_SIZE) -> list[bytes]:
    """The SHA-256 of each ``shard_size`` slice of ``data``, computed in parallel."""
    view = memoryview(data).cast("B")
    n = shard_count(view.nbytes, shard_size)
    out = [b""] * n

    def one(i: int) -> None:
        out[i] = hashlib.sha256(view[i * shard_size : (i + 1) * shard_size]).digest()

    _parallel(n, one)
    return out


# CPython's documented way to build a bytes object in place: PyBytes_FromStringAndSize(NULL, n)
# returns a new, unshared object whose contents are "uninitialized", to be filled by its creator
# before anyone else sees it. read_shards fills it with pread (no second copy of the model).
_bytes_new = ctypes.pythonapi.PyBytes_FromStringAndSize
_bytes_new.restype = ctypes.py_object
_bytes_new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_bytes_at = ctypes.pythonapi.PyBytes_AsString
_bytes_at.restype = ctypes.c_void_p
_bytes_at.argtypes = (ctypes.py_object,)


def _pread_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from the file at ``offset``; EOFError if the file ends first."""
    done = 0
    while done < view.nbytes:
        k = os.preadv(fd, [view[done:]], offset + done)
        if k <= 0:
            raise EOFError(f"file ended at byte {offset + done}, before {offset + view.nbytes}")
        done += k


def read_shards(fd: int, size: int, shard_size: int) -> tuple[bytes, list[bytes]]:
    """The first ``size`` bytes of an open file, read once, and the SHA-256 of each shard.

    Each worker reads a whole shard into its place in the result and hashes it from there, so
    the digests are of exactly the bytes returned. Raises EOFError if the file is shorter than
    ``size`` (it was truncated while being read) and OSError if a read fails.
    """
    if size <= 0:
        return b"", []
    content: bytes = _bytes_new(None, size)
    buf = (ctypes.c_char * size).from_address(_bytes_at(content))
    view = memoryview(buf).cast("B")
    n = shard_count(size, shard_size)
    out = [b""] * n

    def one(i: int) -> None:
        part = view[i * shard_size : min((i + 1) * shard_size, size)]
        _pread_exact(fd, part, i * shard_size)
        out[i] = hashlib.sha256(part).digest()

    try:
        _parallel(n, one)
    finally:
        view.release()
        del buf  # no writable view of the result outlives the read
    return content, out


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
            raise EOFError(f"file ended at byte {off}, before {end}")
        h.update(view[:n])
        off += n
    return h.digest()


def fd_sha256(fd: int, size: int) -> bytes:
    """The plain SHA-256 of the first ``size`` bytes of an open file."""
    return _fd_range_sha256(fd, 0, size)


def fd_shard_digests(fd: int, size: int, shard_size: int) -> list[bytes]:
    """The shard digests of an open file, shards hashed in parallel."""
    n = shard_count(size, shard_size)
    out = [b""] * n

    def one(i: int) -> None:
        out[i] = _fd_range_sha256(fd, i * shard_size, min((i + 1) * shard_size, size))

    _parallel(n, one)
    return out


def first_mismatch(actual: Sequence[bytes], expected: Sequence[bytes]) -> int:
    """-1 if the digests all match, else the index of the first that differs."""
    if len(actual) != len(expected):
        return min(len(actual), len(expected))
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if not hmac.compare_digest(a, e):
            return i
    return -1
