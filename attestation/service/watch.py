"""Fleet events the backend raises itself: unexplained gaps, contraindicated results, silent
devices (pure core; ``[fleet_events]`` in VERIFIER.toml).

The worker stores each event under the pseudo-device ``@fleet`` (beside ``fleet.early_warning``),
so ``edgeward fleet events --type fleet.gap`` shows them, and counts it in its metrics
(``edgeward_verifier_fleet_events{type=...}``). The body names the device.

``fleet.gap``
    A message arrives whose ``seq`` jumps past the next one expected (``high + 1``): the worker
    notes the jump. Reordering and resends fill most jumps within seconds (the agent sends again
    after its ack timeout); only if, ``gap_grace`` seconds later, seqs inside the jump are still
    missing *and* not named in an ``outbox.dropped`` report (:mod:`.gaps`) is one event raised,
    naming those ranges. Only the worker that received the jumping message watches it, so with
    several workers on a ``$share`` subscription one event is raised, not one per worker.
``fleet.contraindicated``
    An appraisal whose status is ``contraindicated`` or ``refused`` (a failed attestation).
``fleet.silent``
    A device not heard from (any message, its status included) for ``silent_after`` seconds,
    once per silence: again only after it has been heard from and fallen silent anew. Every
    worker looks every ``check_interval`` seconds, and first reads the ``fleet.silent`` events
    already stored (by any worker), so a silence another worker reported is not reported again.

No I/O and no clock of its own: the worker hands in the store's answers and the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeward.core.tomlconf import setting

from .gaps import GapReport, Range

GAP, CONTRAINDICATED, SILENT = "fleet.gap", "fleet.contraindicated", "fleet.silent"
FAILED = frozenset({"contraindicated", "refused"})
MAX_WATCHED = 100_000  # devices with a jump under watch; beyond it new jumps are not watched
MAX_RANGES = 32  # ranges named in one gap event


@dataclass(frozen=True)
class WatchConfig:
    """``[fleet_events]``."""

    gap_grace: float = setting(120.0, min=0.0)  # 0: no gap events
    silent_after: float = setting(600.0, min=0.0)  # 0: no silent events
    check_interval: float = setting(30.0, min=0.05, max=3600)


WATCH = WatchConfig()


@dataclass(frozen=True)
class WatchEvent:
    type: str
    device: str
    detail: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"device": self.device, **self.detail}


def _overlap(ranges: Iterable[Range], lo: int, hi: int) -> list[Range]:
    return [(max(a, lo), min(b, hi)) for a, b in ranges if a <= hi and b >= lo]


class FleetWatch:
    def __init__(self, cfg: WatchConfig = WATCH) -> None:
        self.cfg = cfg
        self._jumps: dict[str, tuple[float, int, int]] = {}  # device -> (since, first, last)
        self._silent: dict[str, float] = {}  # device -> last_seen already reported silent
        self._next_scan = 0.0

    # --- gaps --------------------------------------------------------------------------------

    def on_stored(self, device: str, seq: int, high: int, now: float) -> None:
        """A new message ``seq`` was stored; ``high`` was the device's highest seq before it."""
        if not self.cfg.gap_grace or seq <= high + 1:
            return
        old = self._jumps.get(device)
        if old is not None:
            self._jumps[device] = (old[0], min(old[1], high + 1), max(old[2], seq - 1))
        elif len(self._jumps) < MAX_WATCHED:
            self._jumps[device] = (now, high + 1, seq - 1)

    def gaps_due(self, now: float) -> list[tuple[str, int, int]]:
        """Devices whose jump is ``gap_grace`` old: ``(device, first, last)``, now unwatched."""
        due = [(d, a, b) for d, (t, a, b) in self._jumps.items()
               if now - t >= self.cfg.gap_grace]
        for d, _, _ in due:
            del self._jumps[d]
        return due

    @staticmethod
    def gap_event(device: str, first: int, last: int, report: GapReport) -> WatchEvent | None:
        """The event for the seqs ``first..last`` still unexplained in ``report``, or None."""
        left = _overlap(report.unexplained, first, last)
        if not left:
            return None
        return WatchEvent(GAP, device, {
            "ranges": [list(r) for r in left[:MAX_RANGES]],
            "missing": sum(b - a + 1 for a, b in left), "highest": report.highest})

    # --- appraisals --------------------------------------------------------------------------

    @staticmethod
    def appraised(device: str, seq: int, status: str) -> WatchEvent | None:
        if status not in FAILED:
            return None
        return WatchEvent(CONTRAINDICATED, device, {"evidence_seq": seq, "status": status})

    # --- silence -----------------------------------------------------------------------------

    def scan_due(self, now: float) -> bool:
        if not self.cfg.silent_after or now < self._next_scan:
            return False
        self._next_scan = now + self.cfg.check_interval
        return True

    def reported(self, bodies: Iterable[Any]) -> None:
        """``fleet.silent`` bodies already stored (by any worker): not to be raised again."""
        for b in bodies:
            if isinstance(b, dict) and isinstance(b.get("device"), str) \
                    and isinstance(b.get("last_seen"), int | float):
                self._silent[b["device"]] = float(b["last_seen"])

    def silent(self, rows: Iterable[tuple[str, str | None, float | None]],
               now: float) -> list[WatchEvent]:
        """``(device, status, last_seen)`` of every device -> the newly silent ones."""
        out = []
        for device, status, seen in rows:
            if device.startswith("@") or seen is None or now - seen < self.cfg.silent_after:
                continue
            if self._silent.get(device) == seen:
                continue
            self._silent[device] = seen
            out.append(WatchEvent(SILENT, device, {
                "last_seen": seen, "silent_for": round(now - seen, 1),
                "status": status or "unknown"}))
        return out
