"""The ``linux`` backend: identity, CPU temperature, the hardware watchdog, the boot event log.

Every system path is taken under ``root`` (``/`` on a board), so tests hand in a folder laid
out like ``/proc``, ``/sys`` and ``/dev`` with temp files. Reads are bounded; a missing or
garbled file is a :class:`~edgeward.core.errors.DeviceError` with what to check, never a crash.
The TPM (evidence key, PCRs, quote) is :mod:`.tpm`.

* identity: the Raspberry Pi's serial from the device tree (``/proc/device-tree/serial-number``,
  NUL-terminated), else the ``Serial`` line of ``/proc/cpuinfo``, else ``/etc/machine-id``;
* CPU temperature: ``/sys/class/thermal/thermal_zone0/temp``, millidegrees Celsius;
* watchdog: ``/dev/watchdog`` (Linux watchdog API, Documentation/watchdog/watchdog-api.rst):
  the timeout is set with ``WDIOC_SETTIMEOUT`` where the driver allows, every write feeds it,
  and writing ``V`` before closing is the *magic close* that disarms it on a clean stop (a
  driver built with ``nowayout`` ignores it, and the board then reboots after the timeout, as
  the operator asked). :meth:`LinuxWatchdog.feed` writes at most once per ``feed_interval``,
  so the agent can call it every turn at the cost of a clock read;
* event log: ``/sys/kernel/security/tpm0/binary_bios_measurements`` (:mod:`.eventlog`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
from pathlib import Path

from edgeward.core.errors import DeviceError
from edgeward.firmware_shim.linux.eventlog import DEFAULT_PATH as EVENT_LOG_PATH
from edgeward.firmware_shim.linux.eventlog import MAX_LOG_BYTES
from edgeward.firmware_shim.platform import Identity
from edgeward.firmware_shim.state import FileCounter

logger = logging.getLogger(__name__)

DT_SERIAL = "proc/device-tree/serial-number"
CPUINFO = "proc/cpuinfo"
MACHINE_ID = "etc/machine-id"
THERMAL = "sys/class/thermal/thermal_zone0/temp"
WATCHDOG = "dev/watchdog"
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
_SERIAL_RE = re.compile(r"\A[0-9A-Za-z]{4,64}\Z")
_CPUINFO_SERIAL = re.compile(r"^Serial\s*:\s*([0-9A-Za-z]+)\s*$", re.MULTILINE)


def _read(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes of ``path``; None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DeviceError(f"cannot read {path}: {e.strerror}") from e


class LinuxWatchdog:
    """``/dev/watchdog``, opened and armed; feed it, and :meth:`close` it cleanly."""

    def __init__(self, path: Path, timeout: int, *, feed_interval: float | None = None) -> None:
        if not 1 <= timeout <= 3600:
            raise ValueError("watchdog timeout must be 1..3600 s")
        self.path = path
        self.timeout = timeout
        self.feed_interval = feed_interval if feed_interval is not None else timeout / 3
        self._last: float | None = None
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise DeviceError(f"no hardware watchdog at {path}",
                              hint="enable it (dtparam=watchdog=on on a Pi) or turn the "
                              "agent's watchdog off") from e
        except OSError as e:
            raise DeviceError(f"cannot open the watchdog {path}: {e.strerror}",
                              hint="is another process (systemd, watchdogd) holding it?") from e
        try:
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
        except OSError as e:
            if e.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                self._abort()
                raise DeviceError(f"cannot set the watchdog timeout: {e.strerror}") from e
            logger.info("watchdog %s keeps its own timeout (%s)", path, e.strerror)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("the watchdog is closed")
        try:
            os.write(self._fd, data)
        except OSError as e:
            raise DeviceError(f"cannot feed the watchdog {self.path}: {e.strerror}") from e

    def feed(self, now: float) -> bool:
        """Feed unless fed less than ``feed_interval`` ago; True when it wrote."""
        if self._last is not None and now - self._last < self.feed_interval:
            return False
        self._write(b"\0")
        self._last = now
        return True

    def _abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Magic close: ``V`` then close, so a clean stop does not reboot the board."""
        if self._fd is None:
            return
        try:
            self._write(b"V")
        finally:
            self._abort()


class LinuxPlatform:
    backend = "linux"

    def __init__(self, *, root: Path = Path("/"), state_dir: Path) -> None:
        self.root = Path(root)
        self.state_dir = Path(state_dir)

    def identity(self) -> Identity:
        raw = _read(self.root / DT_SERIAL, 256)
        if raw is not None:
            serial = raw.rstrip(b"\0\n").decode("ascii", "replace").strip()
            if _SERIAL_RE.match(serial):
                return Identity(serial.lower(), "device-tree")
            logger.warning("device-tree serial number is not a serial; trying /proc/cpuinfo")
        raw = _read(self.root / CPUINFO, 64 * 1024)
        if raw is not None:
            m = _CPUINFO_SERIAL.search(raw.decode("ascii", "replace"))
            if m and _SERIAL_RE.match(m.group(1)) and set(m.group(1)) != {"0"}:
                return Identity(m.group(1).lower(), "cpuinfo")
        raw = _read(self.root / MACHINE_ID, 256)
        if raw is not None:
            mid = raw.decode("ascii", "replace").strip()
            if re.fullmatch(r"[0-9a-f]{32}", mid):
                return Identity(mid, "machine-id")
            raise DeviceError(f"{self.root / MACHINE_ID} is not a machine id",
                              hint="run systemd-machine-id-setup")
        raise DeviceError("no device identity: no Pi serial in the device tree or "
                          "/proc/cpuinfo and no /etc/machine-id",
                          hint="run systemd-machine-id-setup")

    def cpu_temperature(self) -> float | None:
        raw = _read(self.root / THERMAL, 64)
        if raw is None:
            return None
        try:
            milli = int(raw.strip())
        except ValueError as e:
            raise DeviceError(f"{self.root / THERMAL} does not hold a temperature") from e
        if not -100_000 <= milli <= 200_000:
            raise DeviceError(f"{self.root / THERMAL} reports an impossible {milli} m°C")
        return milli / 1000.0

    def open_watchdog(self, timeout: int, *, feed_interval: float | None = None
                      ) -> LinuxWatchdog:
        return LinuxWatchdog(self.root / WATCHDOG, timeout, feed_interval=feed_interval)

    def boot_event_log(self) -> bytes | None:
        path = self.root / EVENT_LOG_PATH.lstrip("/")
        raw = _read(path, MAX_LOG_BYTES + 1)
        if raw is not None and len(raw) > MAX_LOG_BYTES:
            raise DeviceError(f"{path} is larger than {MAX_LOG_BYTES} bytes")
        return raw

    def counter(self, name: str) -> FileCounter:
        return FileCounter(self.state_dir, name)
