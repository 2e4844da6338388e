"""Databases and their -wal/-shm files are 0600 whatever the umask of the shell (docs say 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgeward.core.errors import DeviceError
from edgeward.core.persist import private_file


@pytest.fixture()
def lax_umask():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(db: Path) -> dict[str, int]:
    files = [db, *db.parent.glob(db.name + "-*")]
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}


def _assert_private(db: Path) -> None:
    modes = _modes(db)
    assert any(n.endswith("-wal") for n in modes), modes  # the test saw the WAL files
    assert set(modes.values()) == {0o600}, modes


def test_outbox_files_private(tmp_path: Path, lax_umask) -> None:
    from edgeward.agent.outbox import Outbox

    ob = Outbox(tmp_path / "outbox.sqlite", "lock-0001")
    _assert_private(tmp_path / "outbox.sqlite")
    ob.close()


def test_fleet_store_files_private(tmp_path: Path, lax_umask) -> None:
    from edgeward.attestation.service.fleet_store import FleetStore

    st = FleetStore(tmp_path / "fleet.sqlite")
    _assert_private(tmp_path / "fleet.sqlite")
    st.close()


def test_verifier_store_files_private(tmp_path: Path, lax_umask) -> None:
    from edgeward.attestation.service.verifier_store import Store

    st = Store(tmp_path / "state.sqlite")
    _assert_private(tmp_path / "state.sqlite")
    st.close()


def test_private_file_tightens_an_existing_file(tmp_path: Path) -> None:
    p = tmp_path / "db"
    p.write_text("x")
    p.chmod(0o644)
    private_file(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "x"


def test_private_file_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """Attack: a symlink planted where the database will be must not get chmodded or written."""
    target = tmp_path / "target"
    target.write_text("t")
    target.chmod(0o644)
    (tmp_path / "db").symlink_to(target)
    with pytest.raises(DeviceError, match="0600"):
        private_file(tmp_path / "db")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
