"""Fleet-level early warning (attestation/service/early_warning.py) on a simulated fleet.

The fleet: 50 devices on one model version, windows of 60 s. Each device runs 20 inferences a
window; a clean input is flagged by the guard with probability 0.001 (about one device in 50
warns per window), a shifted input (the attack: adversarial or out-of-distribution inputs aimed
at this model) with probability 0.15. Every flagged inference is one ``app.anomaly`` event with
the body the guard's policy sends. Seeds are fixed, so each run is the same.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from edgeward.attestation.service.early_warning import (
    EVENT_TYPE,
    EarlyWarning,
    EarlyWarningConfig,
    FleetEvent,
)

W = 60.0
MODEL = "3f2a9c0d11e4b5a6"
N_DEVICES = 50
INFERENCES = 20
P_CLEAN = 0.001
P_SHIFTED = 0.15


def names(n: int = N_DEVICES) -> list[str]:
    return [f"cam-{i:03d}" for i in range(n)]


def body(model: str = MODEL, severity: str = "warning", **extra: Any) -> dict[str, Any]:
    return {"severity": severity, "reason": "input out of distribution", "count": 1,
            "summary": False, "model": model, "reasons": ["ood"], "scores": {"combined": 4.2},
            **extra}


def run(ew: EarlyWarning, rng: random.Random, first: int, windows: int,
        p: dict[str, float], bodies: dict[str, dict[str, Any]] | None = None,
        ) -> list[tuple[int, FleetEvent]]:
    """Simulate ``windows`` windows from index ``first``; the events raised, with their window."""
    out: list[tuple[int, FleetEvent]] = []
    for w in range(first, first + windows):
        for dev, pd in p.items():
            for _ in range(INFERENCES):
                if rng.random() < pd:
                    t = w * W + rng.random() * W
                    out += [(w, e) for e in ew.observe(dev, (bodies or {}).get(dev, body()), t)]
        out += [(w, e) for e in ew.advance((w + 1) * W)]
    return out


def clean(devs: list[str]) -> dict[str, float]:
    return {d: P_CLEAN for d in devs}


def test_campaign_on_ten_devices_raises_one_fleet_event_naming_them() -> None:
    """Attack: a campaign feeds shifted inputs to 10 of 50 devices running one model version."""
    ew = EarlyWarning(EarlyWarningConfig(window=W))
    rng = random.Random(1401)
    devs = names()
    assert run(ew, rng, 0, 40, clean(devs)) == []  # learning, then clean
    state = ew.state(MODEL)
    assert state is not None and 0.2 < state["baseline"] < 3.0
    targets = devs[5:15]
    p = clean(devs) | {d: P_SHIFTED for d in targets}
    raised = run(ew, rng, 40, 60, p)  # the campaign goes on for an hour: one alert
    assert len(raised) == 1
    w, ev = raised[0]
    assert w - 40 < 4  # within 4 windows of the campaign's start
    assert ev.type == EVENT_TYPE and ev.model == MODEL and ev.version == ""
    assert ev.devices == tuple(sorted(targets)) and ev.devices_total == 10
    assert ev.rate > 3 * ev.baseline
    b = ev.body()
    assert b["devices"] == sorted(targets) and b["model"] == MODEL
    assert b["rate"] > b["baseline"]


def test_a_second_campaign_after_a_quiet_spell_is_a_second_alert() -> None:
    """Attack: the campaign pauses and resumes; a new campaign is not hidden by the first."""
    ew = EarlyWarning(EarlyWarningConfig(window=W))
    rng = random.Random(7)
    devs = names()
    run(ew, rng, 0, 20, clean(devs))
    hit = clean(devs) | {d: P_SHIFTED for d in devs[:10]}
    assert len(run(ew, rng, 20, 15, hit)) == 1
    assert run(ew, rng, 35, 30, clean(devs)) == []
    state = ew.state(MODEL)
    assert state is not None and not state["in_campaign"]
    second = run(ew, rng, 65, 10, clean(devs) | {d: P_SHIFTED for d in devs[30:40]})
    assert len(second) == 1 and second[0][1].devices == tuple(devs[30:40])


def test_no_false_alarm_over_a_long_clean_run() -> None:
    """A clean fleet for 3 × 1,500 windows (three weeks of minutes, three seeds): no alert."""
    false_alarms = 0
    for seed in (1, 2, 3):
        ew = EarlyWarning(EarlyWarningConfig(window=W))
        false_alarms += len(run(ew, random.Random(seed), 0, 1500, clean(names())))
    assert false_alarms == 0


def test_one_noisy_device_is_a_local_event_not_a_fleet_one() -> None:
    """Attack: one device (broken camera or a hostile one) floods warnings with huge counts."""
    ew = EarlyWarning(EarlyWarningConfig(window=W))
    rng = random.Random(11)
    devs = names()
    run(ew, rng, 0, 20, clean(devs))
    p = clean(devs) | {"cam-007": 1.0}
    loud = {"cam-007": body(count=10**9, severity="critical")}
    assert run(ew, rng, 20, 500, p, loud) == []
    two = clean(devs) | {"cam-007": 1.0, "cam-008": 1.0}  # below min_devices = 3 as well
    assert run(ew, rng, 520, 200, two, loud) == []


def test_model_versions_are_tracked_apart() -> None:
    """A campaign against version B of a model does not move version A, and is named as B."""
    ew = EarlyWarning(EarlyWarningConfig(window=W))
    rng = random.Random(5)
    devs = names()
    a, b = devs[:25], devs[25:]
    bodies = {d: body(version="1.4.0") for d in a} | {d: body(version="1.5.0") for d in b}
    bodies_other = {d: body(model="77aa00bb11cc22dd") for d in devs}
    run(ew, rng, 0, 20, clean(devs), bodies)
    run(ew, rng, 0, 20, {}, bodies_other)  # same windows: a third model version, silent later
    p = clean(devs) | {d: P_SHIFTED for d in b[:8]}
    raised = run(ew, rng, 20, 20, p, bodies)
    assert len(raised) == 1
    ev = raised[0][1]
    assert (ev.model, ev.version) == (MODEL, "1.5.0") and ev.devices == tuple(b[:8])
    sa = ew.state(MODEL, "1.4.0")
    assert sa is not None and not sa["in_campaign"]


def test_configured_baseline_skips_learning() -> None:
    """A fleet already under attack at start-up: a configured baseline still catches it."""
    ew = EarlyWarning(EarlyWarningConfig(window=W, baseline=1.0))
    devs = names()
    p = clean(devs) | {d: P_SHIFTED for d in devs[:10]}
    raised = run(ew, random.Random(3), 0, 10, p)
    assert len(raised) == 1 and raised[0][0] < 4 and raised[0][1].devices == tuple(devs[:10])


def test_hostile_event_bodies_do_not_crash_it() -> None:
    """Attack: devices send app.anomaly bodies of the wrong shape, huge, or with odd text."""
    ew = EarlyWarning(EarlyWarningConfig(window=W))
    hostile: list[Any] = [
        None, [], "warning", 7, b"\x00" * 1000, {}, {"model": 5, "severity": "warning"},
        {"model": {"x": 1}, "severity": "warning"}, {"model": "m", "severity": ["warning"]},
        {"model": "m", "severity": "warning", "version": 3},
        {"model": "", "severity": "warning"}, {"model": "m", "severity": "info"},
        {"model": "\x1b[2J\u202e" * 10, "severity": "critical"},
        {"model": "x" * 1_000_000, "severity": "warning", "version": "y" * 1_000_000},
    ]
    for i, bad in enumerate(hostile):
        assert ew.observe(f"cam-{i}", bad, 10.0) == []
    assert ew.observe("", body(), 10.0) == []
    assert ew.observe(None, body(), 10.0) == []  # type: ignore[arg-type]
    for t in (float("nan"), float("inf"), -1e300, 1e300):
        ew.observe("cam-1", body(), t)
        ew.advance(t)
    assert ew.ignored == 14  # all but the two with model text, and the two bad devices
    assert ew.state("x" * 64, "y" * 64) is not None  # cut to 64 characters
    assert ew.state("x" * 1_000_000, "y" * 1_000_000) is None


def test_model_versions_beyond_the_bound_are_dropped() -> None:
    """Attack: devices invent a new model name in every event to grow the backend's state."""
    ew = EarlyWarning(EarlyWarningConfig(window=W, max_models=32))
    for i in range(1000):
        ew.observe("cam-1", body(model=f"m{i}"), 1.0)
    assert len(ew._tracks) == 32 and ew.dropped == 1000 - 32
    ew.advance(1e9)  # a long silence: bounded catch-up, no crash


def test_early_warning_section_in_verifier_toml(tmp_path: Path) -> None:
    from edgeward.attestation.service.config import load_service_config
    from edgeward.core.errors import ConfigError

    base = '[service]\nworker = "w0"\n[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\n'
    p = tmp_path / "v.toml"
    p.write_text(base)
    assert load_service_config(p).early_warning == EarlyWarningConfig()
    p.write_text(base + "[early_warning]\nwindow = 300\nbaseline = 2.5\nmin_devices = 5\n")
    cfg = load_service_config(p).early_warning
    assert (cfg.window, cfg.baseline, cfg.min_devices, cfg.enabled) == (300, 2.5, 5, True)
    for bad in ("window = 0", "slack = -1", "min_devices = 0", "typo = 1"):
        p.write_text(base + f"[early_warning]\n{bad}\n")
        try:
            load_service_config(p)
        except ConfigError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_fleet_event_through_the_verifier_service(tmp_path: Path) -> None:
    """The service feeds stored app.anomaly events to the core and stores the fleet event.

    Attack: a campaign on 6 of 20 devices; the envelopes go through the worker's real path
    (decode, fleet store, dedup) with a controlled clock, and a duplicate delivery of every
    message (QoS 1 redelivery) must not count twice.
    """
    from edgeward.agent.envelope import Envelope, encode, topic
    from edgeward.agent.events import Incoming
    from edgeward.attestation.service.config import load_service_config
    from edgeward.attestation.service.service import FLEET, VerifierService

    p = tmp_path / "v.toml"
    p.write_text('[service]\nworker = "w0"\nstore = "fleet.sqlite"\n'
                 '[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\n'
                 "[early_warning]\nwindow = 60\nlearn_windows = 5\n")
    now = [0.0]
    svc = VerifierService(load_service_config(p), clock=lambda: now[0])
    rng = random.Random(21)
    devs = names(20)
    seqs = dict.fromkeys(devs, 0)
    try:
        for w in range(30):
            hit = set(devs[:6]) if w >= 15 else set()
            for d in devs:
                if rng.random() < (0.95 if d in hit else 0.03):
                    seqs[d] += 1
                    now[0] = w * W + rng.random() * W
                    env = Envelope(seq=seqs[d], ts=now[0], device=d, type="app.anomaly",
                                   body=body())
                    msg = Incoming(topic(d, "event"), encode(env), False)
                    svc.on_message(msg)
                    svc.on_message(msg)  # redelivered: stored once, counted once
            now[0] = (w + 1) * W
            svc.tick(now[0])
        stored = svc.store.messages(FLEET, EVENT_TYPE)
        assert len(stored) == 1 and svc.counters["fleet_warnings"] == 1
        _, _, b = stored[0]
        assert b["devices"] == devs[:6] and b["model"] == MODEL and b["rate"] > b["baseline"]
        assert 15 * W <= b["window_start"] < 19 * W
    finally:
        svc.store.close()
