"""Fleet-level early warning: many devices on one model version warning at once (pure core).

One device seeing odd inputs is a local event (the guard already reports it). Many devices running
the same model version seeing a rising warning rate at the same time is a campaign against that
model or a drifting population, and is raised here as one fleet event, ``fleet.early_warning``.

Input: the guard's ``app.anomaly`` events as the service stored them (device, body, receive time);
output: :class:`FleetEvent` values. No I/O, no clock of its own: time comes in with each call.

What is counted
    Events are grouped by ``(model, version)``: ``body["model"]`` is what the guard's policy puts
    there (the profile's model SHA-256 prefix, which names the exact model bytes, so it is a version
    in itself); ``body["version"]`` is used as well when an application sends one. Only
    ``warning`` and ``critical`` severities count. Time is cut into windows of ``window`` seconds of
    the *receive* time (a device's own ``ts`` is not trusted). The per-window statistic ``x`` is
    the number of **distinct devices** that warned in the window: a device counts at most once per
    window however many events (or however large a ``count``) it sends, so one noisy or hostile
    device moves ``x`` by at most one.

Detector: a one-sided, standardised CUSUM on ``x``
    ``S <- max(0, S + (x - b) / sigma - k)`` with ``sigma = sqrt(max(b, 1))`` (the Poisson spread of
    a count, floored at one device so a near-zero baseline does not turn one warning into a huge
    step), slack ``k`` (default 1.5 sigma) and threshold ``h`` (default 5 sigma). Since
    ``1 / sigma <= 1 < k``, a constant excess of one device has negative drift and never alarms.
    The baseline ``b`` (devices warning per window) is configured, or learnt as the mean ``x`` of
    the first ``learn_windows`` windows of that model version (default 10; learning only then, so
    a campaign cannot teach itself into the baseline later; a fleet that is already under attack
    while learning needs a configured baseline).

Alarm, devices named, one alert per campaign
    The *run* is the windows since ``S`` last left zero. The devices named are those that warned in
    at least two windows and at least half of the windows of the run (a clean device's chance
    warning is not enough, nor are a few chance warnings over a long run that two chronic devices
    keep open).
    An alarm needs ``S >= h``, a run of at least ``CONFIRM_WINDOWS`` (3) windows (so a device hit
    by the campaign has had three chances to show up twice), and at least ``min_devices`` devices
    named (default 3). After an alarm ``S`` and the run restart and the model version is *in
    campaign*: no further alarm (``S`` is held at or below ``h``, so it drains quickly when the
    campaign ends) until ``S`` has stayed at zero for ``quiet_windows`` windows (default 5).

Bounds: at most ``max_models`` model versions are tracked (further ones are counted in
:attr:`EarlyWarning.dropped` and ignored), at most ``MAX_DEVICES`` devices per window and run,
model and version strings are cut to 64 characters, and at most ``MAX_CATCHUP`` empty windows are
replayed after a long silence. Hostile bodies (not a map, wrong types, huge strings) are ignored
and counted, never raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeward.core.tomlconf import setting

EVENT_TYPE = "fleet.early_warning"
COUNTED = frozenset({"warning", "critical"})
MAX_TEXT = 64
MAX_DEVICES = 10_000  # distinct devices held per model version (per window, per run)
MAX_CATCHUP = 10_000  # empty windows replayed after a silence; beyond it the rest are skipped
MAX_NAMED = 100  # devices listed in one fleet event (all are counted)
CONFIRM_WINDOWS = 3  # an alarm needs a run at least this long


@dataclass(frozen=True)
class EarlyWarningConfig:
    """``[early_warning]`` in VERIFIER.toml (see the module doc for what each one does)."""

    enabled: bool = setting(True)
    window: float = setting(60.0, min=1.0, max=86400.0)  # seconds per window
    baseline: float = setting(0.0, min=0.0)  # devices warning per window; 0: learn it
    learn_windows: int = setting(10, min=1, max=10_000)
    slack: float = setting(1.5, min=0.0, max=100.0)  # k, in sigmas
    threshold: float = setting(5.0, min=0.5, max=1000.0)  # h, in sigmas
    min_devices: int = setting(3, min=1, max=MAX_DEVICES)
    quiet_windows: int = setting(5, min=1, max=10_000)
    max_models: int = setting(256, min=1, max=100_000)


EARLY_WARNING = EarlyWarningConfig()  # the defaults, when VERIFIER.toml has no [early_warning]


@dataclass(frozen=True)
class FleetEvent:
    """One fleet-level warning for one model version."""

    model: str
    version: str
    window_start: float  # start of the window in which the alarm was raised
    window: float
    rate: float  # mean devices warning per window over the run
    baseline: float  # devices warning per window, as learnt or configured
    score: float  # the CUSUM statistic S at the alarm, in sigmas
    windows: int  # length of the run
    devices: tuple[str, ...]  # the devices named (at most MAX_NAMED of them)
    devices_total: int
    type: str = EVENT_TYPE

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "window_start": self.window_start,
            "window": self.window,
            "rate": round(self.rate, 4),
            "baseline": round(self.baseline, 4),
            "score": round(self.score, 3),
            "windows": self.windows,
            "devices": list(self.devices),
            "devices_total": self.devices_total,
        }


@dataclass
class _Track:
    """The detector's state for one (model, version)."""

    baseline: float | None
    learnt: list[int] = field(default_factory=list)
    now: set[str] = field(default_factory=set)  # devices that warned in the current window
    run: dict[str, int] = field(default_factory=dict)  # device -> windows warned in the run
    run_windows: int = 0
    run_sum: int = 0
    s: float = 0.0
    in_campaign: bool = False
    quiet: int = 0


def _text(v: Any) -> str | None:
    return v[:MAX_TEXT] if isinstance(v, str) else None


class EarlyWarning:
    """Aggregates the guard's warnings per model version across the fleet (see the module doc)."""

    def __init__(self, cfg: EarlyWarningConfig | None = None) -> None:
        self.cfg = cfg or EarlyWarningConfig()
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._window: int | None = None  # index of the current window
        self.ignored = 0  # events not counted (malformed, or not a warning)
        self.dropped = 0  # warnings for model versions beyond max_models

    def observe(self, device: str, body: Any, now: float) -> list[FleetEvent]:
        """Account for one ``app.anomaly`` event from ``device``, received at ``now``."""
        out = self.advance(now)
        if not isinstance(body, dict) or not isinstance(device, str) or not device:
            self.ignored += 1
            return out
        model, version = _text(body.get("model")), _text(body.get("version", ""))
        if not model or version is None or _text(body.get("severity")) not in COUNTED:
            self.ignored += 1
            return out
        key = (model, version)
        track = self._tracks.get(key)
        if track is None:
            if len(self._tracks) >= self.cfg.max_models:
                self.dropped += 1
                return out
            track = self._tracks[key] = _Track(self.cfg.baseline or None)
        if len(track.now) < MAX_DEVICES:
            track.now.add(device[:MAX_TEXT])
        return out

    def advance(self, now: float) -> list[FleetEvent]:
        """Close every window that ended before ``now``; the fleet events they raise."""
        if not isinstance(now, int | float) or not math.isfinite(now):
            return []
        idx = math.floor(now / self.cfg.window)
        if self._window is None:
            self._window = idx
        out: list[FleetEvent] = []
        if idx > self._window + MAX_CATCHUP:  # a long silence: the tail of it only
            self._window = idx - MAX_CATCHUP
        while self._window < idx:  # a clock that goes back stays in the current window
            for key, track in self._tracks.items():
                ev = self._close(key, track, self._window)
                if ev is not None:
                    out.append(ev)
            self._window += 1
        return out

    def state(self, model: str, version: str = "") -> dict[str, Any] | None:
        """The detector's state for one model version (for the operator and tests)."""
        t = self._tracks.get((model, version))
        if t is None:
            return None
        return {"baseline": t.baseline, "score": t.s, "in_campaign": t.in_campaign,
                "run_windows": t.run_windows}

    def _close(self, key: tuple[str, str], t: _Track, window: int) -> FleetEvent | None:
        x = len(t.now)
        warned, t.now = t.now, set()
        if t.baseline is None:  # learning: the first learn_windows windows of this version
            t.learnt.append(x)
            if len(t.learnt) >= self.cfg.learn_windows:
                t.baseline = sum(t.learnt) / len(t.learnt)
                t.learnt = []
            return None
        sigma = math.sqrt(max(t.baseline, 1.0))
        t.s = max(0.0, t.s + (x - t.baseline) / sigma - self.cfg.slack)
        if t.s == 0.0:
            t.run.clear()
            t.run_windows = t.run_sum = 0
            t.quiet += 1
            if t.in_campaign and t.quiet >= self.cfg.quiet_windows:
                t.in_campaign = False
            return None
        t.quiet = 0
        t.run_windows += 1
        t.run_sum += x
        for d in warned:
            if d in t.run or len(t.run) < MAX_DEVICES:
                t.run[d] = t.run.get(d, 0) + 1
        if t.s < self.cfg.threshold:
            return None
        if t.in_campaign:  # one alert per campaign; hold S so it drains soon after it ends
            t.s = self.cfg.threshold
            return None
        least = max(2, math.ceil(t.run_windows / 2))
        named = sorted(d for d, n in t.run.items() if n >= least)
        if t.run_windows < CONFIRM_WINDOWS or len(named) < self.cfg.min_devices:
            t.s = min(t.s, 2 * self.cfg.threshold)  # too few devices yet: bounded, to drain
            return None
        ev = FleetEvent(
            model=key[0], version=key[1], window_start=window * self.cfg.window,
            window=self.cfg.window, rate=t.run_sum / t.run_windows, baseline=t.baseline,
            score=t.s, windows=t.run_windows, devices=tuple(named[:MAX_NAMED]),
            devices_total=len(named),
        )
        t.in_campaign = True
        t.s = 0.0
        t.run.clear()
        t.run_windows = t.run_sum = 0
        return ev
