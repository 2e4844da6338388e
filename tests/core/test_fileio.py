"""The one bounded file reader: oversized, special and missing files, each refused one way."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edgeward.core.errors import (
    ConfigError,
    DeviceError,
    MalformedInputError,
    MissingFileError,
)
from edgeward.core.fileio import (
    DEVICE_STATE,
    OPERATOR,
    open_bounded,
    read_bounded,
)


def test_reads_a_file_up_to_and_at_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100)
    assert read_bounded(p, 100, what="model") == b"x" * 100
    with open_bounded(p, 1000, what="model") as f:
        assert f.read() == b"x" * 100 and f.stat.st_size == 100
    (tmp_path / "empty").write_bytes(b"")
    assert read_bounded(tmp_path / "empty", 0, what="model") == b""


def test_attack_one_byte_over_the_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 101)
    with pytest.raises(MalformedInputError, match=r"model .*f is 101 bytes, larger than the "
                       r"limit of 100 bytes"):
        read_bounded(p, 100, what="model")


def test_attack_huge_sparse_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A 64 GiB file (sparse: no disk used) is refused from fstat; reading it would not end."""
    p = tmp_path / "huge"
    with open(p, "wb") as f:
        f.truncate(64 << 30)
    with pytest.raises(MalformedInputError, match=str(64 << 30)):
        read_bounded(p, 1 << 20, what="evidence")


def test_attack_proc_file_reporting_size_zero_is_still_bounded() -> None:
    """/proc files stat as 0 bytes: the read itself must stop at limit + 1 and refuse."""
    status = Path("/proc/self/status")
    assert os.stat(status).st_size == 0
    with pytest.raises(MalformedInputError, match="grew while being read"):
        read_bounded(status, 16, what="status")
    assert read_bounded(status, 1 << 20, what="status").startswith(b"Name:")


def test_attack_fifo_in_place_of_a_model_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "m.tflite"
    os.mkfifo(fifo)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(ConfigError, match="not a regular file"):
            read_bounded(fifo, 100, what="model")
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set(), "reading a FIFO blocked"


def test_missing_file_and_folder_are_the_operators(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"model .*nope does not exist"):
        read_bounded(tmp_path / "nope", 10, what="model")
    with pytest.raises(ConfigError, match="is a directory; give a file"):
        read_bounded(tmp_path, 10, what="model")
    assert issubclass(MissingFileError, ConfigError)


def test_attack_symlink_refused_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"{}")
    link = tmp_path / "state"
    link.symlink_to(target)
    assert read_bounded(link, 10, what="state") == b"{}"
    with pytest.raises(DeviceError, match="symlink"):
        read_bounded(link, 10, what="state", faults=DEVICE_STATE, follow_symlinks=False)


def test_whose_file_decides_the_error(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 11)
    for faults, cls in ((OPERATOR, ConfigError), (DEVICE_STATE, DeviceError)):
        with pytest.raises(cls, match="larger than the limit of 10 bytes") as e:
            read_bounded(p, 10, what="file", faults=faults, hint="do this")
        assert not isinstance(e.value, MalformedInputError)
        assert str(e.value).endswith("; do this")
    with pytest.raises(DeviceError, match="is a directory"):
        read_bounded(tmp_path, 10, what="state", faults=DEVICE_STATE)


def test_open_bounded_checks_before_the_caller_maps(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    with open_bounded(p, 3, what="model") as f:
        assert f.stat.st_size == 3 and os.pread(f.fd, 3, 0) == b"abc"
    with pytest.raises(OSError):
        os.fstat(f.fd)  # closed on leaving the block
    with pytest.raises(MalformedInputError), open_bounded(p, 2, what="model"):
        pass
