"""``edgeward sim``: the command is registered, picks and explains its mode, and turns mistakes
into one line and exit 1 before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
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


# -- the live view: a table redrawn in place on a terminal, lines elsewhere -----------------


class _Fleet:
    """The fleet as the live view sees it: names, a backend view, and each device's state."""

    def __init__(self) -> None:
        self.names = ["pi-01", "pi-02"]
        self.view = object()
        self.now = {"pi-01": "booting", "pi-02": "booting"}

    def state(self, i: int) -> str:
        return self.now[self.names[i]]


def _screen(data: str) -> list[str]:
    """What a terminal shows after ``data``: lines, with CSI n F (up n lines, to column 0) and
    CSI J (clear to the end) applied, colours dropped."""
    import re

    rows: list[str] = [""]
    y = 0
    for tok in re.split(r"(\x1b\[[0-9;]*[A-Za-z]|\n)", data):
        if not tok:
            continue
        if tok == "\n":
            y += 1
            if y == len(rows):
                rows.append("")
        elif tok.startswith("\x1b["):
            if tok.endswith("F"):
                y = max(0, y - int(tok[2:-1] or 1))
            elif tok.endswith("J"):
                del rows[y + 1:]
                rows[y] = ""
        else:
            rows[y] += tok
    return [r for r in rows if r]


def test_live_view_on_a_terminal_redraws_one_table_under_the_output() -> None:
    from edgeward.simulator.view import LiveView

    fleet = _Fleet()
    out: list[str] = []
    live = LiveView(fleet, tty=True, min_interval=0, write=out.append)  # type: ignore[arg-type]
    live.say("scenario healthy")
    live.tick()
    fleet.now["pi-01"] = "enrolled"
    live.tick()
    live.say("  ok   every device online")
    fleet.now.update({"pi-01": "reporting", "pi-02": "attested"})
    live.tick()
    live.finish()
    data = "".join(out)
    assert "\x1b[" in data and "->" not in data  # redrawn in place, no state-change lines
    screen = _screen(data)
    assert screen[0] == "scenario healthy" and screen[1] == "  ok   every device online"
    table = screen[2:]
    assert len(table) == 3 and "device" in table[0]  # one table, not one per redraw
    assert table[1].split()[:2] == ["pi-01", "reporting"]
    assert table[2].split()[:2] == ["pi-02", "attested"]


def test_live_view_elsewhere_prints_one_line_per_state_change() -> None:
    from edgeward.simulator.view import LiveView

    fleet = _Fleet()
    lines: list[str] = []
    live = LiveView(fleet, lines.append, min_interval=0)  # type: ignore[arg-type]
    live.say("scenario healthy")
    live.tick()
    live.tick()  # nothing changed: nothing printed
    fleet.now["pi-02"] = "enrolled"
    live.tick()
    text = [click.unstyle(x) for x in lines]
    assert text[0] == "scenario healthy"
    assert [t.split()[-3:] for t in text[1:]] == [["started", "->", "booting"]] * 2 + [
        ["booting", "->", "enrolled"]]
    assert not any("\x1b[" in t and "F" in t for t in lines)  # never moves the cursor


@pytest.mark.slow
def test_sim_run_on_a_terminal_draws_the_table_and_in_a_pipe_prints_lines(tmp_path: Path
                                                                          ) -> None:
    import os
    import pty
    import select
    import time

    args = [*EDGEWARD, "sim", "run", "--mode", "process", "--devices", "1", "--scenario",
            "healthy", "--seed", "5"]
    master, slave = pty.openpty()
    p = subprocess.Popen([*args, "--workdir", str(tmp_path / "a")], stdout=slave,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    data = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    assert p.wait(30) == 0, data.decode(errors="replace")[-2000:]
    text = data.decode(errors="replace").replace("\r\n", "\n")
    assert "\x1b[" in text and "F\x1b[J" in text  # the table redrawn in place
    assert "->" not in text
    assert "rpi4b-sim-01" in _screen(text)[-1] or any(
        "rpi4b-sim-01" in line and "reporting" in line for line in _screen(text))
    piped = subprocess.run([*args, "--workdir", str(tmp_path / "b")], capture_output=True,
                           timeout=180, text=True, stdin=subprocess.DEVNULL)
    assert piped.returncode == 0, piped.stdout[-2000:]
    assert "started -> booting" in piped.stdout and "\x1b[" not in piped.stdout
