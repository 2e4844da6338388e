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


def test_wheel_ships_deploy_files_board_definitions_and_scenarios(tmp_path: Path) -> None:
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
    scenarios = sorted(p.name for p in (REPO / "simulator" / "scenarios").glob("*.toml"))
    assert scenarios, "the simulator has no scenarios to ship"
    for name in scenarios:  # `edgeward sim run` reads them from the installed package
        assert f"edgeward/simulator/scenarios/{name}" in names, name
    for store in ("verifier", "fleet"):  # `edgeward verifier migrate` reads them at run time
        for dialect in ("sqlite", "postgresql"):
            assert f"edgeward/attestation/service/migrations/{store}/{dialect}/0001_initial.sql" \
                in names, (store, dialect)
    assert not any(n.startswith("edgeward/tests/") for n in names)


def test_systemd_unit_points_at_what_the_install_puts_there(tmp_path: Path) -> None:
    """Documentation= and ExecStart= name files an install into the /opt/edgeward venv makes."""
    unit = deploy_file("edgeward-agent.service").read_text()
    doc = next(ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith("Documentation="))
    exe = next(ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert doc.startswith("file:///opt/edgeward/") and exe.startswith("/opt/edgeward/bin/edgeward ")
    venv = tmp_path / "venv"  # install the wheel into a prefix and look where the files land
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "benchmarks"))
    # --ignore-installed: without it pip uninstalls the running venv's own (editable) edgeward
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "-q", "--prefix", str(venv), str(src)], check=True,
                   capture_output=True)
    assert (venv / doc.removeprefix("file:///opt/edgeward/")).is_file()
    assert (venv / "bin" / "edgeward").is_file()
    assert "/opt/edgeward" in (REPO / "docs" / "INSTALL-PI.md").read_text()
