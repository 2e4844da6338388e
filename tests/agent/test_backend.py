"""The verifier service: shared subscriptions, exactly-once appraisal, gaps, bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from agent_helpers import service_cfg, start
from fixtures_mqtt import Mosquitto, TestCA

from edgeward.agent.config import MqttSettings
from edgeward.agent.envelope import Envelope, encode, topic
from edgeward.agent.transport import MqttTransport
from edgeward.attestation.service.gaps import analyse, missing_ranges
from edgeward.attestation.service.service import VerifierService
from edgeward.core import cbor


class FakeAppraiser:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, bytes]] = []

    def challenge(self, device: str, now: float) -> bytes:
        return b"n" * 16

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        with self.lock:
            self.seen.append((device, evidence))
        return b"ear:" + evidence, "affirming"


def device(broker: Mosquitto, ca: TestCA, name: str) -> MqttTransport:
    c = ca.issue(name)
    t = MqttTransport(MqttSettings(host=broker.host, port=broker.port, client_id=name, ca=ca.ca,
                                   cert=c.cert, key=c.key), lambda e: None)
    t.start()
    assert t.wait_connected(5)
    return t


def env(dev: str, seq: int, type_: str, body: dict) -> bytes:
    return encode(Envelope(seq=seq, ts=1.0, device=dev, type=type_, body=body))


def test_gap_analysis_pure() -> None:
    assert missing_ranges([1, 2, 5, 9]) == [(3, 4), (6, 8)]
    r = analyse([1, 2, 5, 9, 9], dropped=[(3, 4), (7, 7)])
    assert r.explained == ((3, 4), (7, 7)) and r.unexplained == ((6, 6), (8, 8))
    assert (r.highest, r.received, r.missing_count, r.unexplained_count) == (9, 4, 5, 2)
    assert analyse([], []).highest == 0


def test_two_workers_appraise_every_evidence_exactly_once(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    apps = [FakeAppraiser(), FakeAppraiser()]
    svcs = [VerifierService(service_cfg(mosquitto, test_ca, tmp_path, f"w{i}"), appraiser=apps[i])
            for i in range(2)]
    ths = [start(s) for s in svcs]
    time.sleep(0.3)
    devs = {n: device(mosquitto, test_ca, n) for n in ("lock-1", "lock-2", "lock-3")}
    n_each = 30
    for seq in range(1, n_each + 1):
        for name, t in devs.items():
            t.publish(topic(name, "attest/evidence"),
                      env(name, seq, "attest.evidence", {"nonce": b"x" * 16, "eat": f"{name}/{seq}".encode()}))
    deadline = time.monotonic() + 20
    total = 3 * n_each
    while time.monotonic() < deadline and len(svcs[0].store.appraisals()) < total:
        time.sleep(0.1)
    rows = svcs[0].store.appraisals()
    assert len(rows) == total
    seen = apps[0].seen + apps[1].seen
    assert len(seen) == total and len(set(seen)) == total, "each evidence appraised exactly once"
    assert apps[0].seen and apps[1].seen, "both workers took a share"
    assert {r[3] for r in rows} == {"w0", "w1"}
    for s in svcs:
        s.request_stop()
    for t in devs.values():
        t.stop()
    for th in ths:
        th.join(10)


def test_bad_input_is_counted_not_fatal(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "w0", shared_group=""))
    th = start(svc)
    time.sleep(0.3)
    d = device(mosquitto, test_ca, "lock-9")
    t = topic("lock-9", "report")
    d.publish(t, b"\xff\xfe not cbor")
    d.publish(t, cbor.dumps({"v": 1}))
    d.publish(t, b"\xa0" * (100 * 1024))  # over the service's max_cbor_bytes (64 KiB)
    d.publish(t, env("lock-8", 1, "metrics", {}))  # claims another device
    d.publish(t, env("lock-9", 1, "metrics", {}))
    d.publish(t, env("lock-9", 1, "metrics", {}))  # duplicate
    d.publish(t, env("lock-9", 3, "metrics", {}))
    d.publish(t, env("lock-9", 4, "outbox.dropped", {"ranges": [[2, 2]]}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and svc.store.highest("lock-9") < 4:
        time.sleep(0.05)
    time.sleep(0.3)
    assert svc.counters.get("malformed") == 2
    assert svc.counters.get("oversized") == 1
    assert svc.counters.get("spoofed") == 1
    assert svc.counters.get("duplicates") == 1
    g = svc.store.gaps("lock-9")
    assert g.explained == ((2, 2),) and g.unexplained == ()
    # over the broker's announced maximum packet size: refused before it can kill the link
    import pytest

    from edgeward.agent.events import PayloadTooLargeError

    with pytest.raises(PayloadTooLargeError):
        d.publish(t, b"\xa0" * (1024 * 1024))
    d.publish(t, env("lock-9", 5, "metrics", {}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and svc.store.highest("lock-9") < 5:
        time.sleep(0.05)
    assert svc.store.highest("lock-9") == 5 and th.is_alive()
    svc.request_stop()
    th.join(10)
    d.stop()


def test_signed_command_from_service_reaches_only_its_device(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    import queue

    from edgeward.agent.commands import CommandGate
    from edgeward.agent.events import Incoming
    from edgeward.core.keys import generate

    key = generate("ed25519")
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "w0"), command_key=key)
    th = start(svc)
    c = test_ca.issue("lock-c")
    q: queue.Queue[object] = queue.Queue()
    dev = MqttTransport(MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="lock-c",
                                     ca=test_ca.ca, cert=c.cert, key=c.key), q.put,
                        subscriptions=[topic("lock-c", "cmd")])
    dev.start()
    assert dev.wait_connected(5)
    time.sleep(0.3)
    assert svc.send_command("lock-c", "reverify") == 1
    assert svc.send_command("lock-c", "attest") == 2
    got: list[Any] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(got) < 2:
        try:
            ev = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(ev, Incoming):
            got.append(ev.payload)
    gate = CommandGate("lock-c", key.public)
    assert [gate.check(g, time.time()).op for g in got] == ["reverify", "attest"]
    svc.request_stop()
    th.join(10)
    dev.stop()


def test_verifier_cli_runs_records_and_stops_on_sigterm(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    from edgeward.attestation.service.fleet_store import FleetStore

    c = test_ca.issue("edgeward-verifier")
    cfg = tmp_path / "VERIFIER.toml"
    cfg.write_text(f"""
[service]
worker = "cli-w"
store = "fleet.sqlite"
tick = 0.2

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
ca = "{test_ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
""")
    p = subprocess.Popen([str(Path(sys.executable).parent / "edgeward"), "verifier", "run",
                          "--config", str(cfg)], stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        d = device(mosquitto, test_ca, "lock-cli")
        d.publish(topic("lock-cli", "event"), env("lock-cli", 1, "model.rejected", {"m": 1}))
        store = FleetStore(tmp_path / "fleet.sqlite", worker="reader")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and store.highest("lock-cli") < 1:
            time.sleep(0.1)
        assert store.messages("lock-cli") == [(1, "model.rejected", {"m": 1})]
        d.stop()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, p.stderr.read() if p.stderr else ""
    finally:
        if p.poll() is None:
            p.kill()
