"""The one interface the agent sees of the hardware, and the choice of backend.

A :class:`Platform` gives the agent what it needs of the board besides the evidence key
(:mod:`.signer`): who the device is (:meth:`Platform.identity`), how hot its CPU runs, a
hardware watchdog to feed from the agent's loop, the measured-boot event log where the firmware
keeps one, and monotonic counters. Backends:

* ``linux`` (:class:`edgeward.firmware_shim.linux.system.LinuxPlatform`): a Pi-class board;
  device tree or ``/proc/cpuinfo`` serial, the thermal zone, ``/dev/watchdog``, the kernel's
  event log, and the TPM 2.0 (:mod:`.linux.tpm`) for the evidence key;
* ``sim`` (:class:`edgeward.firmware_shim.sim.platform.SimPlatform`): software keys and
  file-backed state, for tests and the simulator;
* ``mcu``: code that runs *on* a lock's microcontroller (:mod:`edgeward.firmware_shim.mcu`,
  MicroPython); the gateway reaches it through :mod:`.serial_link`, so it is no backend for
  the agent itself.

:func:`open_platform` picks the backend from a board definition (or detection when none is
named). This module does no I/O itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeward.core.errors import ConfigError

AGENT_BACKENDS = ("linux", "sim")


@dataclass(frozen=True)
class Identity:
    """A stable hardware identifier and where it came from (``device-tree``, ``cpuinfo``,
    ``machine-id`` or ``sim``)."""

    serial: str
    source: str


class Watchdog(Protocol):
    """A watchdog that reboots the device unless fed; ``close`` disarms it (magic close)."""

    timeout: int

    def feed(self, now: float) -> bool: ...  # True when it wrote to the device

    def close(self) -> None: ...


class Counter(Protocol):
    """A monotonic counter that survives restarts."""

    def read(self) -> int: ...

    def increment(self) -> int: ...


class Platform(Protocol):
    backend: str

    def identity(self) -> Identity: ...

    def cpu_temperature(self) -> float | None: ...  # degrees Celsius; None without a sensor

    def open_watchdog(self, timeout: int, *, feed_interval: float | None = None) -> Watchdog: ...

    def boot_event_log(self) -> bytes | None: ...  # raw log, None where the kernel has none

    def counter(self, name: str) -> Counter: ...


def detect_backend(*, tpm_paths: tuple[str, ...] = ("/dev/tpmrm0", "/dev/tpm0"),
                   exists: Callable[[str], bool] = os.path.exists) -> str:
    """``linux`` on a board with a TPM device, else ``sim`` (software keys)."""
    return "linux" if any(exists(p) for p in tpm_paths) else "sim"


def open_platform(backend: str, *, state_dir: Path, root: Path = Path("/")) -> Platform:
    """The platform for ``backend`` (``linux``/``sim``); ``root`` prefixes every system path,
    so tests can give a folder that looks like ``/proc``, ``/sys`` and ``/dev``."""
    if backend == "linux":
        from edgeward.firmware_shim.linux.system import LinuxPlatform

        return LinuxPlatform(root=root, state_dir=state_dir)
    if backend == "sim":
        from edgeward.firmware_shim.sim.platform import SimPlatform

        return SimPlatform(state_dir)
    raise ConfigError(f"firmware backend '{backend}' cannot run the agent",
                      hint=f"use one of: {', '.join(AGENT_BACKENDS)}")


def backend_for_board(board: str | None, *, extra_dirs: tuple[Path, ...] = ()) -> str:
    """The board definition's backend, or detection when no board is named."""
    if board is None:
        return detect_backend()
    from edgeward.boards import load_board

    b = load_board(board, extra_dirs)
    if b.backend not in AGENT_BACKENDS:
        raise ConfigError(f"board '{b.name}' is a microcontroller ({b.backend}); the agent "
                          "runs on its gateway", hint="name the gateway's board instead")
    return b.backend
