"""The agent's code measurement covers exactly the code that runs on a device.

A fix to the backend, the simulator or the demo must not change the measured code of every
device in the field (and force new reference values for the whole fleet); a change to device
code must.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeward.attestation.measure import DEVICE_CODE, agent_code_digest, installed_parts

REPO = Path(__file__).resolve().parents[2]
PARTS = ("core", "models", "attestation", "agent", "firmware_shim", "boards", "simulator")


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, list[Path]]:
    for part in PARTS:
        shutil.copytree(REPO / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return {part: [tmp_path / part] for part in PARTS}


def _touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


@pytest.mark.parametrize("rel", [
    "attestation/service/service.py",
    "attestation/service/fleet_store.py",
    "simulator/demo.py",
    "simulator/devbroker.py",
])
def test_server_and_simulator_edits_leave_device_measurement_unchanged(tree, rel):
    before = agent_code_digest(parts=tree)
    _touch(tree[rel.split("/")[0]][0].parent / rel)
    assert agent_code_digest(parts=tree) == before


@pytest.mark.parametrize("rel", [
    "agent/loop.py", "core/cbor.py", "models/integrity.py", "attestation/attester.py",
    # the gateway's serial link runs the lock's frame codec: an implant there must show
    "firmware_shim/mcu/frame.py",
])
def test_device_code_edit_changes_measurement(tree, rel):
    before = agent_code_digest(parts=tree)
    _touch(tree[rel.split("/")[0]][0].parent / rel)
    assert agent_code_digest(parts=tree) != before


def test_new_file_in_device_code_changes_measurement(tree):
    before = agent_code_digest(parts=tree)
    (tree["agent"][0] / "implant.py").write_text("x = 1\n")
    assert agent_code_digest(parts=tree) != before


def test_installed_parts_are_the_listed_device_parts():
    assert set(installed_parts()) == {part for part, _skip in DEVICE_CODE}
    assert "simulator" not in installed_parts()
