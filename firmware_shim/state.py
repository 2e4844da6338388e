"""File-backed monotonic counters, shared by the ``sim`` and ``linux`` backends. An edge.

A counter is one small JSON file ``<state_dir>/counter-<name>.json`` written atomically (temp
file, fsync, ``os.replace``; :func:`edgeward.core.persist.write_atomic`), so a power cut leaves
the old or the new value, never a torn one. It only goes up. A file that is not a counter is a
:class:`~edgeward.core.errors.DeviceError` telling the operator what deleting it would do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgeward.core.errors import ConfigError, DeviceError, MissingFileError
from edgeward.core.fileio import DEVICE_STATE, read_bounded
from edgeward.core.persist import write_atomic

_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
MAX_COUNTER = (1 << 63) - 1


class FileCounter:
    def __init__(self, state_dir: Path, name: str) -> None:
        if not _NAME.match(name):
            raise ConfigError(f"counter name '{name}' must be lowercase letters, digits, - or _")
        self.path = Path(state_dir) / f"counter-{name}.json"

    def read(self) -> int:
        try:
            raw = read_bounded(self.path, 4096, what="counter", faults=DEVICE_STATE)
        except MissingFileError:
            return 0
        try:
            value = json.loads(raw)["value"]
        except (ValueError, KeyError, TypeError) as e:
            raise DeviceError(f"counter {self.path} is corrupt",
                              hint="restore it from backup; deleting it resets the counter, "
                              "which a verifier sees as a rollback") from e
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
            raise DeviceError(f"counter {self.path} holds {value!r}, not a counter value")
        return value

    def increment(self) -> int:
        value = self.read() + 1
        if value > MAX_COUNTER:
            raise DeviceError(f"counter {self.path} is exhausted")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceError(f"cannot create {self.path.parent}: {e.strerror}") from e
        write_atomic(self.path, json.dumps({"value": value}).encode(), mode=0o600)
        return value
