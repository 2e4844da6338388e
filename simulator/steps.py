"""How the demo and the simulator say what they do: numbered steps, one line per finding.

Shared by :mod:`edgeward.simulator.demo` and :mod:`edgeward.simulator.demo_fleet`. Output only;
no other I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import click

from edgeward.core.errors import IntegrityError

T = TypeVar("T")


class DemoFailed(Exception):
    """A demo step did not behave as it should (the demo then exits non-zero)."""


def step(n: int, title: str) -> None:
    click.secho(f"\n[{n}] {title}", bold=True)


def ok(msg: str) -> None:
    click.echo(f"    ok   {msg}")


def info(msg: str) -> None:
    click.echo(f"    ..   {msg}")


def expect_rejection(what: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` and require an :class:`IntegrityError`; anything else fails the step."""
    try:
        fn()
    except IntegrityError as e:
        ok(f"{what}: refused (exit {e.exit_code}): {e}")
        return
    raise DemoFailed(f"{what} was NOT refused")


def wait(what: str, pred: Callable[[], T], timeout: float = 20.0) -> T:
    """Poll ``pred`` until it returns something true, or fail the step after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
