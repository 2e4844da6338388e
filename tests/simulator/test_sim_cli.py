"""``edgeward sim``: the command is registered, picks and explains its mode, and turns mistakes
into one line and exit 1 before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeward.core.errors import DeviceError
from edgeward.simulator import cli

EDGEWARD = [sys.executable, "-c", "from edgeward.agent.cli import main; main()"]


def edgeward(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEWARD, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_sim_is_a_command_with_run_and_image_build(tmp_path: Path) -> None:
    p = edgeward("--help", cwd=tmp_path)
    assert p.returncode == 0 and "sim" in p.stdout
    p = edgeward("sim", "run", "--help", cwd=tmp_path)
    for opt in ("--board", "--devices", "--scenario", "--mode", "--report", "--junit", "--seed"):
        assert opt in p.stdout
    assert edgeward("sim", "image", "build", "--help", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(("args", "says"), [
    (["--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["--board", "esp32-lock"], "not a Linux board"),
    (["--devices", "0"], "Invalid value"),
    (["--mode", "vm"], "Invalid value"),
])
def test_mistakes_are_one_line_and_exit_1(tmp_path: Path, args: list[str], says: str) -> None:
    mode = [] if "--mode" in args else ["--mode", "process"]
    p = edgeward("sim", "run", *mode, *args, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert says in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "sim-out").exists()  # nothing was started or written


def test_a_workdir_we_did_not_make_is_refused_not_emptied(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    p = edgeward("sim", "run", "--mode", "process", "--scenario", "healthy", "--workdir",
                 str(mine), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "--workdir" in p.stderr
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_mode_choice_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.choose_mode("process", "rpi4b") == ("process", "--mode process was given")
    monkeypatch.setattr(cli.shutil, "which", lambda _name: None)
    mode, why = cli.choose_mode("auto", "rpi4b")
    assert mode == "process" and "qemu-system-aarch64 is not installed" in why
    with pytest.raises(DeviceError, match="cannot run in QEMU mode"):
        cli.choose_mode("qemu", "rpi4b")
