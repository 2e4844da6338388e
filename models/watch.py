"""Re-verification watch: notice a model replaced or altered on disk.

The agent calls :meth:`ModelWatch.poll` from its loop. A model is re-verified when

* its file or signature changed on disk (size, modification time, inode or change time
  differ from the last look: a cheap ``stat``, no read), or
* its scheduled interval has passed since the last full verification (a change that keeps
  size and times, such as a flipped byte with a restored mtime, is caught here).

Each check yields a :class:`WatchEvent`; only changes of verdict are marked ``changed`` so a
caller can report transitions without flooding. The clock is injected; the filesystem is read
through :func:`~edgeward.models.integrity.check_model` (a read-only mapping, no copy kept)
and ``os.stat`` only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeward.core.errors import EdgewardError
from edgeward.core.keys import TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

from .integrity import ModelCheck, check_model, default_sig_path
from .rollback import RollbackState

logger = logging.getLogger(__name__)

StatKey = tuple[int, int, int, int] | None


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True)
class WatchEvent:
    """The result of one check of one model."""

    path: Path
    ok: bool
    changed: bool  # the verdict differs from the previous check (or this is the first)
    reason: str  # "verified" or the one-line rejection reason
    trigger: str  # "initial", "file-changed", "scheduled"
    sha256: bytes | None = None
    error_kind: str | None = None  # the error class name when not ok

    def body(self) -> dict[str, object]:
        """The event body the agent sends (see docs/protocol.cddl)."""
        return {
            "model": self.path.name,
            "ok": self.ok,
            "reason": self.reason,
            "trigger": self.trigger,
            "sha256": self.sha256,
            "error": self.error_kind,
        }


@dataclass
class _Watched:
    path: Path
    sig_path: Path
    name: str | None = None  # the signed model name this path must hold
    stat_key: tuple[StatKey, StatKey] | None = None
    last_check: float | None = None
    last_ok: bool | None = None
    sha256: bytes | None = None  # of the last verified bytes; the bytes themselves are not kept


@dataclass
class ModelWatch:
    """Watches a set of models; ``poll(now)`` re-verifies those that are due."""

    trust: TrustStore | VerifyingKey
    interval: float = 300.0
    state: RollbackState | None = None
    limits: Limits = DEFAULT_LIMITS
    verifier: Callable[..., ModelCheck] = check_model
    _models: dict[Path, _Watched] = field(default_factory=dict)

    def add(self, model: Path, sig: Path | None = None, name: str | None = None) -> None:
        """Watch ``model``; with ``name``, its signature must name that model."""
        model = Path(model)
        self._models[model] = _Watched(model, Path(sig) if sig else default_sig_path(model), name)

    def status(self) -> dict[str, bool | None]:
        """The last verdict per model file name (None: not checked yet)."""
        return {w.path.name: w.last_ok for w in self._models.values()}

    def poll(self, now: float) -> list[WatchEvent]:
        events = []
        for w in self._models.values():
            key = (_stat_key(w.path), _stat_key(w.sig_path))
            if w.last_check is None:
                trigger = "initial"
            elif key != w.stat_key:
                trigger = "file-changed"
            elif now - w.last_check >= self.interval:
                trigger = "scheduled"
            else:
                continue
            events.append(self._check(w, key, now, trigger))
        return events

    def check_all(self, now: float) -> list[WatchEvent]:
        """Re-verify every model now (a command from the backend asks for this)."""
        return [
            self._check(w, (_stat_key(w.path), _stat_key(w.sig_path)), now, "requested")
            for w in self._models.values()
        ]

    def _check(
        self, w: _Watched, key: tuple[StatKey, StatKey], now: float, trigger: str
    ) -> WatchEvent:
        w.stat_key = key
        w.last_check = now
        try:
            kw = {"name": w.name} if w.name is not None else {}
            vm = self.verifier(w.path, self.trust, sig_path=w.sig_path, state=self.state,
                               limits=self.limits, **kw)
        except EdgewardError as e:
            changed = w.last_ok is not False
            w.last_ok, w.sha256 = False, None
            logger.warning("model %s failed re-verification (%s): %s", w.path.name, trigger, e)
            return WatchEvent(w.path, False, changed, str(e), trigger,
                              error_kind=type(e).__name__)
        changed = w.last_ok is not True or w.sha256 != vm.sha256
        w.last_ok, w.sha256 = True, vm.sha256
        return WatchEvent(w.path, True, changed, "verified", trigger, sha256=vm.sha256)
