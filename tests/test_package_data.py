"""An installed edgeward (a wheel, not a source checkout) carries the files it needs at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgeward.deploy import FILES, deploy_file

REPO = Path(__file__).resolve().parents[1]


def test_deploy_files_resolve() -> None:
    for name in FILES:
        assert deploy_file(name).is_file(), name
    with pytest.raises(KeyError):
        deploy_file("../setup.py")


def test_wheel_ships_deploy_files_and_board_definitions(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("edgeward-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in FILES:
        assert f"edgeward/deploy/{name}" in names, name
    assert any(n.startswith("edgeward/boards/") and n.endswith(".toml") for n in names)
    assert "edgeward/core/py.typed" in names
    assert not any(n.startswith("edgeward/tests/") for n in names)
