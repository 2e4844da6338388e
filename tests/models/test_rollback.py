"""Anti-rollback state: the pure rule, persistence, corruption and concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from edgeward.core.errors import DeviceError, RollbackError
from edgeward.models import rollback
from edgeward.models.rollback import RollbackState, check_version

# --- the pure rule ---------------------------------------------------------------------------


def test_check_version_rule() -> None:
    check_version("m", 0, None)
    check_version("m", 5, 5)  # equal: re-verifying the same model
    check_version("m", 6, 5)
    with pytest.raises(RollbackError, match="version 3 is lower than version 5 already accepted"):
        check_version("m", 3, 5)


# --- state -----------------------------------------------------------------------------------


def test_lower_version_refused_after_higher(tmp_path: Path) -> None:
    """Attack: downgrade to an older, vulnerable model after a newer one was accepted."""
    st = RollbackState(tmp_path / "state")
    st.accept("lock-face", 3)
    st.accept("lock-face", 5)
    with pytest.raises(RollbackError, match="'lock-face' version 3 is lower than version 5"):
        st.accept("lock-face", 3)
    with pytest.raises(RollbackError):
        st.check("lock-face", 4)
    assert st.highest("lock-face") == 5


def test_equal_version_accepted_and_names_independent(tmp_path: Path) -> None:
    st = RollbackState(tmp_path)
    st.accept("a", 5)
    st.accept("a", 5)
    st.check("a", 5)
    st.accept("b", 1)
    assert st.highest("a") == 5 and st.highest("b") == 1 and st.highest("c") is None
    assert st.snapshot() == {"a": 5, "b": 1}


def test_check_does_not_record(tmp_path: Path) -> None:
    st = RollbackState(tmp_path)
    st.check("a", 9)
    assert st.highest("a") is None


def test_persisted_across_instances(tmp_path: Path) -> None:
    RollbackState(tmp_path).accept("m", 7)
    again = RollbackState(tmp_path)
    assert again.highest("m") == 7
    with pytest.raises(RollbackError):
        again.accept("m", 6)


def test_state_dir_created_0700_and_file_private(tmp_path: Path) -> None:
    d = tmp_path / "a" / "state"
    RollbackState(d).accept("m", 1)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / rollback.STATE_FILE).stat().st_mode) & 0o077 == 0
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_bad_arguments_are_misuse(tmp_path: Path) -> None:
    st = RollbackState(tmp_path)
    for name, version in (("", 1), ("a/b", 1), ("m", -1), ("m", 2**63), ("m", True)):
        with pytest.raises(ValueError):
            st.accept(name, version)


# --- corruption: must not silently reset -------------------------------------------------------


def _write_state(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / rollback.STATE_FILE).write_bytes(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'{"format": 1, "models": {}}',
        b'{"format": 2, "models": {}, "sha256": ""}',
        b'{"format": true, "models": {}, "sha256": ""}',
        b'{"format": 1, "models": {"m": -1}, "sha256": ""}',
        b'{"format": 1, "models": {"m": 1.5}, "sha256": ""}',
        b'{"format": 1, "models": {"../m": 1}, "sha256": ""}',
        b'{"format": 1, "models": [], "sha256": ""}',
        b"[" * 100_000,
    ],
)
def test_corrupted_state_file_raises(tmp_path: Path, raw: bytes) -> None:
    """Attack/fault: a truncated or garbled state file must not mean 'no versions accepted'."""
    _write_state(tmp_path, raw)
    st = RollbackState(tmp_path)
    with pytest.raises(DeviceError, match="corrupt"):
        st.highest("m")
    with pytest.raises(DeviceError):
        st.accept("m", 0)


def test_edited_version_detected_by_checksum(tmp_path: Path) -> None:
    """Attack/fault: a version lowered in place (bit flip or edit) is caught by the checksum."""
    st = RollbackState(tmp_path)
    st.accept("m", 5)
    path = tmp_path / rollback.STATE_FILE
    body = json.loads(path.read_text())
    body["models"]["m"] = 1
    path.write_text(json.dumps(body))
    with pytest.raises(DeviceError, match="checksum"):
        st.highest("m")


def test_truncated_state_file(tmp_path: Path) -> None:
    st = RollbackState(tmp_path)
    st.accept("m", 5)
    path = tmp_path / rollback.STATE_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DeviceError, match="corrupt"):
        st.accept("m", 1)


def test_duplicate_keys_in_state_file(tmp_path: Path) -> None:
    """Attack: JSON duplicate keys ({"m": 9, "m": 1}) read differently by different parsers."""
    _write_state(tmp_path, b'{"format": 1, "models": {"m": 9, "m": 1}, "sha256": ""}')
    with pytest.raises(DeviceError, match="duplicate"):
        RollbackState(tmp_path).highest("m")


def test_oversized_state_file(tmp_path: Path) -> None:
    _write_state(tmp_path, b" " * (rollback.MAX_STATE_BYTES + 1))
    with pytest.raises(DeviceError, match="bytes"):
        RollbackState(tmp_path).highest("m")


def test_state_file_symlink_refused(tmp_path: Path) -> None:
    """Attack: the state file replaced by a symlink to an attacker-controlled file."""
    other = tmp_path / "other.json"
    other.write_text("{}")
    (tmp_path / rollback.STATE_FILE).symlink_to(other)
    with pytest.raises(DeviceError):
        RollbackState(tmp_path).highest("m")


def test_state_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DeviceError):
        RollbackState(f).highest("m")


# --- concurrency -------------------------------------------------------------------------------


def _accept_many(state_dir: str, prefix: str, n: int) -> None:
    st = RollbackState(Path(state_dir))
    for i in range(n):
        st.accept(f"{prefix}-{i}", i)


def _bump(state_dir: str, versions: list[int], out: multiprocessing.Queue) -> None:
    st = RollbackState(Path(state_dir))
    refused = 0
    for v in versions:
        try:
            st.accept("shared", v)
        except RollbackError:
            refused += 1
    out.put(refused)


def test_concurrent_accept_from_two_processes_loses_nothing(tmp_path: Path) -> None:
    """Race: two processes read-modify-write at once; without the lock, names get lost."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_accept_many, args=(str(tmp_path), p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    snap = RollbackState(tmp_path).snapshot()
    assert len(snap) == 80
    assert snap["a-39"] == 39 and snap["b-39"] == 39


def test_concurrent_bumps_never_go_backwards(tmp_path: Path) -> None:
    """Race: interleaved accepts of one name; the recorded version is the max, never lower."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_bump, args=(str(tmp_path), list(range(0, 60, 2)), q)),
        ctx.Process(target=_bump, args=(str(tmp_path), list(range(1, 60, 2)), q)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert RollbackState(tmp_path).highest("shared") == 59
    assert os.path.exists(tmp_path / rollback.STATE_FILE)
