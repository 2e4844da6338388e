"""What the guard does with verdicts: severities, aggregation, rate limits, the fail-safe hook.

A flood of odd inputs must yield a few useful events, not one per inference. Verdicts are grouped
by ``(severity, reason)`` in fixed windows of ``window_s`` seconds:

* the first verdict of a group in a window becomes an event at once (if the window's budget of
  ``max_immediate`` events is not spent; a critical group always gets its first event);
* later verdicts of the group are counted, and when the window closes one summary event per
  group reports the count, the first and last time and the worst combined score;
* verdicts below ``min_severity`` make no event at all.

The fail-safe callback the product supplies (a smart lock falls back to PIN entry) is called for
*every* critical verdict, never rate limited: the budget limits reports, not safety.

Pure: verdicts and a clock reading in, event maps out. Sending them is ``link.py``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Verdict:
    """The guard's judgement of one invoke. ``scores`` are raw detector scores plus "combined"."""

    flagged: bool
    severity: str
    scores: dict[str, float]
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "severity": self.severity,
            # JSON has no Inf or NaN: a score that is not finite is null.
            "scores": {
                k: (round(float(v), 6) if math.isfinite(v) else None)
                for k, v in sorted(self.scores.items())
            },
            "reasons": list(self.reasons),
        }


_new = object.__new__


def info_verdict(scores: dict[str, float]) -> Verdict:
    """``Verdict(False, "info", scores)``, built for the per-invoke path.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; an info
    verdict is made on almost every invoke, so its fields go straight into a fresh instance's
    ``__dict__`` (equal to the constructor's result: tests/models/guard/test_guard_policy.py).
    """
    v = _new(Verdict)
    d = v.__dict__
    d["flagged"] = False
    d["severity"] = "info"
    d["scores"] = scores
    d["reasons"] = ()
    return v


@dataclass(frozen=True)
class PolicyConfig:
    min_severity: str = "warning"
    window_s: float = 60.0
    max_immediate: int = 5

    def __post_init__(self) -> None:
        if self.min_severity not in RANK:
            raise ValueError(f"min_severity must be one of {SEVERITIES}")
        if self.window_s <= 0 or self.max_immediate < 0:
            raise ValueError("window_s must be positive and max_immediate not negative")


@dataclass
class _Group:
    severity: str
    reason: str
    first_ts: float
    last_ts: float
    count: int = 0
    reported: int = 0
    worst: float = float("-inf")
    worst_scores: dict[str, float] = field(default_factory=dict)


class Policy:
    """Turns verdicts into events (see the module doc). Not thread-safe; one per guard."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        on_critical: Callable[[Verdict], None] | None = None,
        model: str = "",
    ) -> None:
        self.config = config or PolicyConfig()
        self.on_critical = on_critical
        self.model = model
        self._groups: dict[tuple[str, str], _Group] = {}
        self._window_start: float | None = None
        self._immediate = 0
        self.suppressed = 0  # verdicts folded into summaries instead of their own event
        self._info_quiet = RANK[self.config.min_severity] > RANK["info"]

    def observe(self, verdict: Verdict, now: float) -> list[dict[str, Any]]:
        """Account for one verdict at wall-clock ``now``; returns the events to send now."""
        start = self._window_start
        if (  # the common case, an info verdict inside the current window: nothing to do
            verdict.severity == "info"
            and self._info_quiet
            and start is not None
            and now - start < self.config.window_s
        ):
            return []
        events = self._roll(now)
        if verdict.severity == "critical" and self.on_critical is not None:
            self.on_critical(verdict)
        if RANK[verdict.severity] < RANK[self.config.min_severity]:
            return events
        reason = verdict.reasons[0] if verdict.reasons else "anomalous input"
        key = (verdict.severity, reason)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(verdict.severity, reason, now, now)
        g.count += 1
        g.last_ts = now
        combined = float(verdict.scores.get("combined", 0.0))
        if combined > g.worst or not g.worst_scores:
            g.worst, g.worst_scores = combined, dict(verdict.scores)
        first = g.count == 1
        budget = self._immediate < self.config.max_immediate
        if first and (budget or verdict.severity == "critical"):
            self._immediate += 1
            g.reported = 1
            events.append(self._event(g, now, verdict, summary=False))
        else:
            self.suppressed += 1
        return events

    def flush(self, now: float) -> list[dict[str, Any]]:
        """Close the current window (at shutdown, or from a timer) and return its summaries."""
        events = [self._summary(g, now) for g in self._groups.values() if g.count > g.reported]
        self._groups.clear()
        self._window_start = None
        self._immediate = 0
        return events

    def _roll(self, now: float) -> list[dict[str, Any]]:
        if self._window_start is None:
            self._window_start = now
            return []
        if now - self._window_start < self.config.window_s:
            return []
        events = self.flush(now)
        self._window_start = now
        return events

    def _event(self, g: _Group, now: float, v: Verdict, *, summary: bool) -> dict[str, Any]:
        return {
            "type": "anomaly",
            "ts": float(now),
            "body": {
                "severity": g.severity,
                "reason": g.reason,
                "count": 1,
                "summary": summary,
                "model": self.model,
                "reasons": list(v.reasons),
                "scores": {k: float(x) for k, x in sorted(v.scores.items())},
            },
        }

    def _summary(self, g: _Group, now: float) -> dict[str, Any]:
        return {
            "type": "anomaly",
            "ts": float(now),
            "body": {
                "severity": g.severity,
                "reason": g.reason,
                "count": g.count,
                "unreported": g.count - g.reported,
                "summary": True,
                "model": self.model,
                "first_ts": g.first_ts,
                "last_ts": g.last_ts,
                "scores": {k: float(x) for k, x in sorted(g.worst_scores.items())},
            },
        }
