"""What the fleet runner needs from one simulated device, whatever runs it.

Two implementations: a local agent process with its own swtpm (``--mode process``) and a QEMU
``-M virt`` ARM64 guest (``--mode qemu``). The runner and the scenarios speak only to this
interface, so a scenario runs unchanged in both modes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SimDevice(Protocol):
    """One simulated device running the real ``edgeward agent run``."""

    name: str
    board: str

    def start(self) -> None:
        """Boot or spawn the device; returns once it is started (not necessarily online)."""

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM or an ACPI power-down), then for good; idempotent."""

    def alive(self) -> bool:
        """True while the device's process or virtual machine runs."""

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of its console or log, for a report on a device that failed."""

    def run(self, command: str, timeout: float = 30.0) -> str:
        """Run a shell command on the device (e.g. to tamper with a model) and return its output."""

    def set_link(self, up: bool) -> None:
        """Cut or restore the device's network link."""

    def workdir(self) -> Path:
        """The host folder with this device's identity, keys, configuration and logs."""
