"""Parallel shard hashing and the one-read model load: the bytes returned are the bytes hashed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgeward.core import digest

SHARD = 64 * 1024


def _slices(data: bytes, shard: int) -> list[bytes]:
    return [hashlib.sha256(data[i : i + shard]).digest() for i in range(0, len(data), shard)]


@pytest.mark.parametrize("size", [1, SHARD - 1, SHARD, SHARD + 1, 5 * SHARD + 3, 17 * SHARD])
def test_read_shards_returns_the_file_and_the_digest_of_each_shard(tmp_path: Path, size: int):
    data = os.urandom(size)
    path = tmp_path / "m.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        content, shards = digest.read_shards(fd, size, SHARD)
    finally:
        os.close(fd)
    assert type(content) is bytes and content == data
    assert shards == _slices(data, SHARD)
    assert hashlib.sha256(content).digest() == hashlib.sha256(data).digest()


def test_attack_model_truncated_while_it_is_read_is_an_eof_not_zero_bytes(tmp_path: Path):
    """A file shorter than its fstat size (cut while being read) never yields padded bytes."""
    path = tmp_path / "m.bin"
    path.write_bytes(os.urandom(3 * SHARD))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(EOFError, match="file ended"):
            digest.read_shards(fd, 4 * SHARD, SHARD)
    finally:
        os.close(fd)


def test_a_failing_read_on_a_helper_thread_is_raised_to_the_caller(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: every pread fails
    try:
        with pytest.raises(OSError):
            digest.read_shards(fd, 8 * SHARD, SHARD)
    finally:
        os.close(fd)


def test_shard_digests_and_fd_shard_digests_agree(tmp_path: Path):
    data = os.urandom(9 * SHARD + 5)
    path = tmp_path / "m.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert digest.fd_shard_digests(fd, len(data), SHARD) == _slices(data, SHARD)
    finally:
        os.close(fd)
    assert digest.shard_digests(data, SHARD) == _slices(data, SHARD)
    assert digest.shard_digests(b"", SHARD) == []


def test_every_index_runs_once_and_the_first_error_is_raised():
    seen: list[int] = []
    digest._parallel(50, seen.append)
    assert sorted(seen) == list(range(50))

    def boom(i: int) -> None:
        if i == 3:
            raise ValueError("shard 3")

    with pytest.raises(ValueError, match="shard 3"):
        digest._parallel(8, boom)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_hashes_with_threads_of_its_own():
    """The helper pool belongs to the process that started it: a child would wait for ever."""
    data = os.urandom(6 * SHARD)
    digest.shard_digests(data, SHARD)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = digest.shard_digests(data, SHARD) == _slices(data, SHARD)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
