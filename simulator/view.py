"""The terminal side of a run: a live line per device state change, and the summary table.

:class:`LiveView` is ticked by the runner while it waits; it prints one line whenever a device
moves between ``booting``, ``enrolled``, ``attested``, ``reporting`` (or ``offline``,
``failed``), so the output reads the same on a terminal and in a CI log. Output only.
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
    def __init__(self, fleet: SimFleet, echo: Callable[[str], None] = click.echo,
                 min_interval: float = 0.5) -> None:
        self.fleet = fleet
        self.echo = echo
        self.states: dict[str, str] = {}
        self.t0 = time.monotonic()
        self._last = 0.0
        self._min = min_interval

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last < self._min or self.fleet.view is None:
            return
        self._last = now
        for i, name in enumerate(self.fleet.names):
            try:
                st = self.fleet.state(i)
            except Exception as e:  # the store may be mid-write; the next tick will see it
                logger.debug("state of %s not read: %s", name, e)
                continue
            if self.states.get(name) != st:
                old = self.states.get(name, "started")
                self.states[name] = st
                self.echo(f"    [{now - self.t0:6.1f} s] {name:<14} {old} -> "
                          + click.style(st, fg=COLOURS.get(st)))


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
