"""A mass reconnect (every device online at once) is challenged at a bounded rate, not at once.

Attack / failure it stands for: the thundering herd. After a broker restart or an outage every
device publishes its ``online`` birth in the same second; a worker that challenged them all in
one tick got the evidence back faster than it could appraise it, so most nonces expired in the
queue (refused) and those devices went unattested until the next hourly round. The worker now
sends at most ``[service] challenge_rate`` scheduled challenges per second; the rest stay due in
the store and go out in the next ticks, each device exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edgeward.agent.envelope import parse_topic, topic
from edgeward.agent.events import Incoming
from edgeward.attestation.service.config import load_service_config
from edgeward.attestation.service.service import VerifierService
from edgeward.core.errors import ConfigError


class Link:
    """The worker's transport, recording what it publishes (no broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []
        self.now = 0.0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ack(self, ev: Any) -> None: ...

    def publish(self, name: str, data: bytes, **_: Any) -> None:
        self.sent.append((self.now, name))


class Nonces:
    def challenge(self, device: str, now: float) -> bytes:
        return device.encode().ljust(16, b"-")[:64]

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        raise AssertionError("not used")


def service(tmp_path: Path, extra: str = "") -> tuple[VerifierService, Link, list[float]]:
    p = tmp_path / "v.toml"
    p.write_text(f'[service]\nworker = "w0"\nstore = "fleet.sqlite"\n{extra}\n'
                 '[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\n')
    now = [1000.0]
    link = Link()
    svc = VerifierService(load_service_config(p), appraiser=Nonces(), transport=link,
                          clock=lambda: now[0])
    return svc, link, now


def test_mass_reconnect_is_spread_at_the_rate_and_nobody_is_dropped(tmp_path: Path) -> None:
    svc, link, now = service(tmp_path, "challenge_rate = 50")
    devices = [f"lock-{i:04d}" for i in range(500)]
    try:
        for d in devices:  # the herd: every birth in the same instant
            svc.on_message(Incoming(topic(d, "status"), b"online", False))
        for _ in range(60):  # 15 s of ticks, 0.25 s apart
            link.now = now[0]
            svc.tick(now[0])
            now[0] += 0.25
    finally:
        svc.store.close()
    challenged = [parse_topic(t)[0] for _at, t in link.sent if t.endswith("attest/challenge")]
    assert sorted(challenged) == devices  # every device, each exactly once
    times = [at for at, t in link.sent]
    first = times[0]
    for start in range(10):  # no second carries more than the rate (plus the first burst)
        in_window = sum(first + start <= t < first + start + 1 for t in times)
        assert in_window <= 50 + (50 if start == 0 else 0), (start, in_window)
    assert times[-1] - first >= 500 / 50 - 2  # spread over ~10 s, not sent in one tick


def test_a_small_fleet_is_still_challenged_at_once(tmp_path: Path) -> None:
    svc, link, now = service(tmp_path)  # the default rate
    try:
        for i in range(5):
            svc.on_message(Incoming(topic(f"lock-{i}", "status"), b"online", False))
        svc.tick(now[0])
    finally:
        svc.store.close()
    assert len(link.sent) == 5


def test_a_worker_that_is_behind_holds_scheduled_challenges_back(tmp_path: Path) -> None:
    """Messages waiting for the worker (it was never idle since the last tick): challenges
    sent now would bring evidence that queues behind them past its nonce's lifetime. They stay
    due and go out once the worker has idle time again."""
    svc, link, now = service(tmp_path, "challenge_rate = 100")
    try:
        for i in range(30):
            svc.on_message(Incoming(topic(f"lock-{i}", "status"), b"online", False))
        svc.looping = True  # as in run(): the loop's waiting time is measured
        svc.idle = 10.0  # it had been waiting: the first 30 go out at once
        svc.tick(now[0])
        assert len(link.sent) == 30
        link.sent.clear()
        time.sleep(0.1)  # busy the whole time: no idle measured
        for i in range(30, 60):
            svc.on_message(Incoming(topic(f"lock-{i}", "status"), b"online", False))
        now[0] += 1
        svc.tick(now[0])
        assert link.sent == []
        time.sleep(0.1)
        svc.idle = 0.09  # mostly waiting for messages again
        now[0] += 1
        svc.tick(now[0])
    finally:
        svc.store.close()
    assert sorted(parse_topic(t)[0] for _at, t in link.sent) == [f"lock-{i}" for i in range(30, 60)]


@pytest.mark.parametrize("bad", ["challenge_rate = 0", "challenge_rate = -5"])
def test_challenge_rate_must_be_positive(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError):
        service(tmp_path, bad)
