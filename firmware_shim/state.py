"""File-backed monotonic counters: the one counter of the agent, its backends and its bootcount.

A counter is one small JSON file ``<state_dir>/counter-<name>.json``, ``{"value": n}`` or
``{"value": n, "tag": t}``, written atomically (temp file, fsync, ``os.replace``;
:func:`edgeward.core.persist.write_atomic`), so a power cut leaves the old or the new value,
never a torn one. It only goes up: :meth:`FileCounter.increment` by one per call,
:meth:`FileCounter.once_per` by one per new tag (the attester's bootcount, tagged with the
kernel's boot id, so it counts boots however often the agent restarts). A file that is not a
counter is a :class:`~edgeward.core.errors.DeviceError` telling the operator what deleting it
would do. An edge.
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
MAX_TAG = 128


class FileCounter:
    """``legacy``: an older file to start from when the counter has none yet, in the format
    ``{"<name>": n, "boot_id": t}`` (the attester's ``bootcount.json`` before 0.2)."""

    def __init__(self, state_dir: Path, name: str, *, legacy: Path | None = None) -> None:
        if not _NAME.match(name):
            raise ConfigError(f"counter name '{name}' must be lowercase letters, digits, - or _")
        self.name = name
        self.path = Path(state_dir) / f"counter-{name}.json"
        self.legacy = legacy

    def _corrupt(self, path: Path) -> DeviceError:
        return DeviceError(f"counter {path} is corrupt",
                           hint="restore it from backup; deleting it resets the counter, "
                           "which a verifier sees as a rollback")

    def _load(self) -> tuple[int, str | None]:
        path, keys = self.path, ("value", "tag")
        try:
            raw = read_bounded(path, 4096, what="counter", faults=DEVICE_STATE)
        except MissingFileError:
            if self.legacy is None:
                return 0, None
            path, keys = self.legacy, (self.name, "boot_id")
            try:
                raw = read_bounded(path, 4096, what="counter", faults=DEVICE_STATE)
            except MissingFileError:
                return 0, None
        try:
            state = json.loads(raw)
            value, tag = state[keys[0]], state.get(keys[1])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise self._corrupt(path) from e
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
            raise DeviceError(f"counter {path} holds {value!r}, not a counter value")
        if tag is not None and not isinstance(tag, str):
            raise self._corrupt(path)
        return value, tag

    def _store(self, value: int, tag: str | None) -> int:
        if value > MAX_COUNTER:
            raise DeviceError(f"counter {self.path} is exhausted")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceError(f"cannot create {self.path.parent}: {e.strerror}") from e
        state: dict[str, object] = {"value": value}
        if tag is not None:
            state["tag"] = tag
        write_atomic(self.path, json.dumps(state).encode(), mode=0o600)
        return value

    def read(self) -> int:
        return self._load()[0]

    def increment(self) -> int:
        return self._store(self._load()[0] + 1, None)

    def once_per(self, tag: str) -> int:
        """The value, raised by one the first time it is asked with a new ``tag``."""
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG:
            raise ValueError(f"counter tag must be 1..{MAX_TAG} characters")
        value, seen = self._load()
        if seen == tag:
            return value
        return self._store(value + 1, tag)
