"""``edgeward sim``: run a simulated fleet through scenarios, and build its QEMU image.

``sim run`` picks its mode (QEMU when ``qemu-system-aarch64`` and an image for the board are
there, else local processes, and says why), sets the fleet up (:class:`SimFleet`), runs the
scenarios in order (:class:`Runner`) with a live line per device state change, prints the
summary, and writes ``--junit`` and ``--report``. Exit codes as DESIGN.md: 0 every step passed,
2 a security expectation failed, 3 the simulator could not run or a device failed.
``sim image build`` hands over to the image builder (``edgeward.simulator.image``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from edgeward.core.errors import ConfigError, DeviceError, EdgewardError
from edgeward.core.persist import write_atomic

PATH = click.Path(path_type=Path)


def choose_mode(requested: str, board_name: str) -> tuple[str, str]:
    """``(mode, reason)``; a DeviceError if QEMU was asked for and cannot run."""
    if requested == "process":
        return "process", "--mode process was given"
    problem = None
    if shutil.which("qemu-system-aarch64") is None:
        problem = "qemu-system-aarch64 is not installed (make setup installs qemu-system-arm)"
    else:
        try:
            importlib.import_module("edgeward.simulator.qemu_device")
            image = importlib.import_module("edgeward.simulator.image")
            find = getattr(image, "cached_image", None)
            if find is None or find(board_name) is None:
                problem = (f"no simulator image for board {board_name} "
                           f"(build it with: edgeward sim image build --board {board_name})")
        except ImportError:
            problem = "this build has no QEMU device support"
    if problem is None:
        return "qemu", f"qemu-system-aarch64 and an image for {board_name} are available"
    if requested == "qemu":
        raise DeviceError(f"cannot run in QEMU mode: {problem}", hint="or use --mode process")
    return "process", problem


def run_simulation(*, board_name: str, devices: int, scenario_names: list[str], mode: str,
                   workdir: Path, seed: int, fault_scale: float = 1.0,
                   echo: Callable[[str], None] = click.echo, tty: bool = False) -> object:
    """Set up a fleet, run the scenarios, tear down; returns the :class:`RunResult`.

    ``tty``: the device states as a table redrawn in place (``echo`` must then be the
    terminal's), else one line per state change."""
    from edgeward.simulator.board import board
    from edgeward.simulator.fleet import SimFleet
    from edgeward.simulator.results import RunResult
    from edgeward.simulator.runner import Runner
    from edgeward.simulator.scenario import available, find_scenario
    from edgeward.simulator.view import LiveView

    sim_board = board(board_name)
    scenarios = [find_scenario(n) for n in (scenario_names or available())]
    chosen, reason = choose_mode(mode, sim_board.name)
    echo(f"edgeward sim: {devices} x {sim_board.description}, mode {chosen}: {reason}")
    echo(f"seed {seed} (rerun with --seed {seed} for the same inputs, faults and timings)")
    result = RunResult(seed, chosen, reason, sim_board.name, [s.name for s in scenarios])
    locks = sorted({i for sc in scenarios for i in sc.locks if i < devices})
    t0 = time.monotonic()
    live = LiveView(None, echo, tty=tty)  # the fleet follows: its set-up talks through it
    say = live.say
    fleet = SimFleet(workdir, sim_board, devices, chosen, lambda m: say(f"    ..   {m}"),
                     locks=locks)
    live.fleet = fleet
    runner = Runner(fleet, result, fault_scale=fault_scale, say=say, on_tick=live.tick)
    try:
        try:
            fleet.setup()
        except ConfigError:
            raise
        except (EdgewardError, OSError, RuntimeError) as e:
            result.setup_error = str(e)
            say(f"the simulator could not run: {e}")
            return result
        runner.run(scenarios)
        runner.collect()
    finally:
        live.finish()
        fleet.close()
        result.duration = round(time.monotonic() - t0, 1)
    return result


@click.group()
def sim() -> None:
    """Simulated fleets: QEMU or local-process devices running the real agent."""


@sim.command("run")
@click.option("--board", "board_name", default="rpi4b", show_default=True,
              help="Board the devices stand for (edgeward boards list).")
@click.option("--devices", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--scenario", "scenarios", multiple=True,
              help="Scenario name or .toml file (repeatable); default: all shipped, in order.")
@click.option("--mode", type=click.Choice(["auto", "qemu", "process"]), default="auto",
              show_default=True, help="auto: QEMU when it can run here, else processes.")
@click.option("--report", "report_dir", type=PATH, help="Write DIR/index.html.")
@click.option("--junit", "junit_file", type=PATH, help="Write JUnit XML (one case per step).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Seed for inputs, faults and timings (default: random, printed).")
@click.option("--fault-scale", type=click.FloatRange(0.05, 10), default=1.0, show_default=True,
              help="Multiply fault durations (broker down, waits) by this.")
@click.option("--workdir", type=PATH, default=Path("sim-out"), show_default=True,
              help="Folder for the fleet's keys, devices and logs (recreated).")
def run_cmd(board_name: str, devices: int, scenarios: tuple[str, ...], mode: str,
            report_dir: Path | None, junit_file: Path | None, seed: int | None,
            fault_scale: float, workdir: Path) -> int:
    """Boot a fleet and run scenarios against a real broker and verifier."""
    from edgeward.simulator.results import RunResult

    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    result = run_simulation(board_name=board_name, devices=devices,
                            scenario_names=list(scenarios), mode=mode, workdir=workdir,
                            seed=seed, fault_scale=fault_scale,
                            tty=sys.stdout.isatty() and os.environ.get("TERM") != "dumb")
    assert isinstance(result, RunResult)
    write_reports(result, report_dir, junit_file)
    from edgeward.simulator.view import summary

    click.echo("\n" + summary(result))
    if result.setup_error:
        raise DeviceError(f"the simulator could not run: {result.setup_error}",
                          hint=f"see the logs under {workdir}")
    return result.exit_code


def write_reports(result: object, report_dir: Path | None, junit_file: Path | None) -> None:
    from edgeward.simulator.report_html import render
    from edgeward.simulator.report_junit import junit_xml
    from edgeward.simulator.results import RunResult

    assert isinstance(result, RunResult)
    if junit_file is not None:
        junit_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(junit_file, junit_xml(result))
        click.echo(f"JUnit XML: {junit_file}")
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(report_dir / "index.html", render(result).encode())
        click.echo(f"report: {report_dir / 'index.html'}")


@sim.group()
def image() -> None:
    """Simulator images (QEMU)."""


@image.command("build")
@click.option("--board", "board_name", default="rpi4b", show_default=True)
def image_build(board_name: str) -> None:
    """Build (or find cached) the bootable ARM64 image for a board."""
    from edgeward.simulator.board import board

    sim_board = board(board_name)
    try:
        mod = importlib.import_module("edgeward.simulator.image")
    except ImportError as e:
        raise ConfigError("this build has no simulator image builder",
                          hint="use edgeward sim run --mode process") from e
    build = getattr(mod, "build_image", None)
    if build is None:
        raise ConfigError("the simulator image builder has no build_image()")
    path = build(sim_board.name)
    click.echo(f"image: {path}")
