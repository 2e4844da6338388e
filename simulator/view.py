"""The terminal side of a run: a live line per device state change, and the summary table.

:class:`LiveView` is ticked by the runner while it waits. On a terminal it keeps a table of
the devices' states (``booting``, ``enrolled``, ``attested``, ``reporting``, or ``offline``,
``failed``) redrawn in place under the run's output; elsewhere it prints one line whenever a
device changes state, so a CI log reads in order. Output only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import click

from edgeward.simulator.fleet import SimFleet
from edgeward.simulator.results import RunResult

logger = logging.getLogger(__name__)

COLOURS = {"booting": "yellow", "enrolled": "cyan", "attested": "green", "reporting": "green",
           "offline": "yellow", "failed": "red"}


class LiveView:
    """Device states while a run waits: a table redrawn in place on a terminal, else lines.

    On a terminal (``tty``) the table (device, state, since when) stays under the run's own
    output: :meth:`say` erases it, prints the line, and draws it again, and :meth:`tick` redraws
    it when a state changes (at most every ``min_interval`` seconds). Elsewhere (a pipe, a CI
    log) each state change is one line, ``[  t s] device  old -> new``, so logs read in order.
    """

    def __init__(self, fleet: SimFleet | None, echo: Callable[[str], None] = click.echo,
                 min_interval: float = 0.5, *, tty: bool = False,
                 write: Callable[[str], None] | None = None) -> None:
        self.fleet = fleet
        self.echo = echo
        self.tty = tty
        self.write = write or (lambda text: click.echo(text, nl=False))
        self.states: dict[str, str] = {}
        self.since: dict[str, float] = {}
        self.t0 = time.monotonic()
        self._last = 0.0
        self._min = min_interval
        self._drawn = 0  # lines of the table now on screen

    def say(self, line: str) -> None:
        """Print one line of the run's output (above the table on a terminal)."""
        if not self.tty:
            self.echo(line)
            return
        self._erase()
        self.write(line + "\n")
        self._draw()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last < self._min or self.fleet is None or self.fleet.view is None:
            return
        self._last = now
        changed = False
        for i, name in enumerate(self.fleet.names):
            try:
                st = self.fleet.state(i)
            except Exception as e:  # the store may be mid-write; the next tick will see it
                logger.debug("state of %s not read: %s", name, e)
                continue
            if self.states.get(name) != st:
                old = self.states.get(name, "started")
                self.states[name] = st
                self.since[name] = now - self.t0
                changed = True
                if not self.tty:
                    self.echo(f"    [{now - self.t0:6.1f} s] {name:<14} {old} -> "
                              + click.style(st, fg=COLOURS.get(st)))
        if self.tty and (changed or not self._drawn):
            self._erase()
            self._draw()

    def finish(self) -> None:
        """Leave the last table on a terminal (the summary follows it)."""
        self._drawn = 0

    def table(self) -> list[str]:
        now = time.monotonic() - self.t0
        out = [f"  {'device':<16} {'state':<10} since      (fleet {now:5.0f} s)"]
        for name in self.fleet.names if self.fleet is not None else []:
            st = self.states.get(name, "started")
            out.append(f"  {name:<16} " + click.style(f"{st:<10}", fg=COLOURS.get(st))
                       + f" {self.since.get(name, 0.0):6.1f} s")
        return out

    def _erase(self) -> None:
        if self._drawn:  # to the start of the table's first line, then clear to the end
            self.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        rows = self.table()
        self.write("\n".join(rows) + "\n")
        self._drawn = len(rows)


def summary(result: RunResult) -> str:
    """The fleet and step tables printed at the end of a run."""
    lines = [f"seed {result.seed}, mode {result.mode} ({result.mode_reason}), board "
             f"{result.board}, {result.duration:.1f} s", "",
             f"{'device':<14} {'state':<10} {'attestation':<16} {'hw':>2} {'msgs':>5} "
             f"{'seq':>5}  missing"]
    for d in result.devices:
        lines.append(f"{d.name:<14} {d.state:<10} {d.attestation:<16} {d.hardware:>2} "
                     f"{d.messages:>5} {d.highest:>5}  {d.missing}")
    lines += ["", f"{'scenario':<14} {'step':<58} {'result':<6} {'time':>6}"]
    for s in result.steps:
        lines.append(f"{s.scenario:<14} {s.step[:58]:<58} {'pass' if s.ok else 'FAIL':<6} "
                     f"{s.duration:>5.1f}s")
    lines.append("")
    lines.append(f"{result.passed} of {len(result.steps)} steps passed; exit {result.exit_code}")
    return "\n".join(lines)
