"""The ``sim`` backend: a board made of files, for tests and the simulator. An edge.

Identity is a random serial made once and kept in ``state_dir/sim-serial``; the temperature is
whatever the test sets (:attr:`SimPlatform.temperature`); the watchdog records its feeds and
whether it was closed cleanly (a simulator scenario can "reboot" a device whose watchdog
starved); counters are the same file-backed counters the ``linux`` backend uses; the event log
is ``state_dir/event-log.bin`` if a test wrote one. The evidence key is a software key
(:class:`edgeward.firmware_shim.sim.signer.SoftwareSigner`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from edgeward.core.errors import DeviceError, MissingFileError
from edgeward.core.fileio import DEVICE_STATE, read_bounded
from edgeward.core.persist import write_atomic
from edgeward.firmware_shim.linux.eventlog import MAX_LOG_BYTES
from edgeward.firmware_shim.platform import Identity
from edgeward.firmware_shim.state import FileCounter


@dataclass
class SimWatchdog:
    timeout: int
    feed_interval: float
    feeds: list[float] = field(default_factory=list)
    closed_cleanly: bool = False
    closed: bool = False

    def feed(self, now: float) -> bool:
        if self.closed:
            raise RuntimeError("the watchdog is closed")
        if self.feeds and now - self.feeds[-1] < self.feed_interval:
            return False
        self.feeds.append(now)
        return True

    def starved(self, now: float) -> bool:
        """Would a real watchdog have rebooted the board by ``now``?"""
        last = self.feeds[-1] if self.feeds else None
        return not self.closed and last is not None and now - last > self.timeout

    def close(self) -> None:
        self.closed = self.closed_cleanly = True


class SimPlatform:
    backend = "sim"

    def __init__(self, state_dir: Path, *, temperature: float | None = 45.0) -> None:
        self.state_dir = Path(state_dir)
        self.temperature = temperature

    def identity(self) -> Identity:
        path = self.state_dir / "sim-serial"
        try:
            serial = path.read_text(encoding="ascii").strip()[:64]
        except FileNotFoundError:
            serial = secrets.token_hex(8)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, serial.encode(), mode=0o600)
        except (OSError, UnicodeDecodeError) as e:
            raise DeviceError(f"cannot read the simulated serial {path}: {e}") from e
        return Identity(serial, "sim")

    def cpu_temperature(self) -> float | None:
        return self.temperature

    def open_watchdog(self, timeout: int, *, feed_interval: float | None = None) -> SimWatchdog:
        return SimWatchdog(timeout, feed_interval if feed_interval is not None else timeout / 3)

    def boot_event_log(self) -> bytes | None:
        try:
            return read_bounded(self.state_dir / "event-log.bin", MAX_LOG_BYTES,
                                what="simulated event log", faults=DEVICE_STATE)
        except MissingFileError:
            return None

    def counter(self, name: str) -> FileCounter:
        return FileCounter(self.state_dir, name)
