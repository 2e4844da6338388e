"""Helpers for agent tests: write an AGENT.toml, and a backend-side collector of envelopes."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from fixtures_mqtt import Mosquitto, TestCA

from edgeward.agent.config import MqttSettings
from edgeward.agent.envelope import Envelope, decode, parse_topic
from edgeward.agent.events import Incoming
from edgeward.agent.transport import MqttTransport
from edgeward.attestation.service.config import ServiceConfig
from edgeward.attestation.service.service import VerifierService


def wait_until(pred: Any, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def write_agent_config(
    path: Path, broker: Mosquitto, ca: TestCA, device: str, *, extra: str = "",
    interval: float = 0.2, max_bytes: int = 1024 * 1024, socket: Path | None = None,
    command_trust: Path | None = None, window: int = 1024, e2e_ack: bool = True,
    ack_timeout: float = 60.0, register: bool = True,
) -> Path:
    c = ca.issue(device, register=register)
    text = f"""
[device]
name = "{device}"

[agent]
state_dir = "{path.parent / ('state-' + device)}"

[mqtt]
host = "127.0.0.1"
port = {broker.port}
ca = "{ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
backoff_base = 0.05
backoff_cap = 0.5
keepalive = 5

[outbox]
max_bytes = {max_bytes}
window = {window}
e2e_ack = {str(e2e_ack).lower()}
ack_timeout = {ack_timeout}

[metrics]
interval = {interval}
"""
    if socket is not None:
        text += f'\n[local]\nsocket = "{socket}"\n'
    if command_trust is not None:
        text += f'\n[commands]\ntrust = "{command_trust}"\n'
    path.write_text(text + extra)
    return path


class Collector:
    """Plays the backend: subscribes as edgeward-verifier and keeps envelopes by (device, seq)."""

    def __init__(self, broker: Mosquitto, ca: TestCA, *, persistent: bool = False) -> None:
        c = ca.issue("edgeward-verifier-collector")  # the broker's client id is the cert's CN
        self.q: queue.Queue[object] = queue.Queue()
        s = MqttSettings(host=broker.host, port=broker.port, client_id="collector", ca=ca.ca,
                         cert=c.cert, key=c.key, backoff_base=0.05, backoff_cap=0.3,
                         clean_start=not persistent, session_expiry=3600 if persistent else 0)
        self.t = MqttTransport(s, self.q.put, subscriptions=[
            "edgeward/v1/+/report", "edgeward/v1/+/event", "edgeward/v1/+/status",
            "edgeward/v1/+/attest/evidence"])
        self.by_seq: dict[str, dict[int, Envelope]] = {}
        self.received = 0
        self.status: dict[str, bytes] = {}
        self.raw: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._th = threading.Thread(target=self._drain, daemon=True)

    def start(self) -> Collector:
        self.t.start()
        assert self.t.wait_connected(5)
        self._th.start()
        time.sleep(0.2)
        return self

    def _drain(self) -> None:
        while not self._stop:
            try:
                ev = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if not isinstance(ev, Incoming):
                continue
            with self._lock:
                self.raw.append((ev.topic, ev.payload))
                device, kind = parse_topic(ev.topic)
                if kind == "status":
                    self.status[device] = ev.payload
                    continue
                env = decode(ev.payload)
                self.received += 1
                self.by_seq.setdefault(env.device, {})[env.seq] = env

    def seqs(self, device: str) -> list[int]:
        with self._lock:
            return sorted(self.by_seq.get(device, {}))

    def envelopes(self, device: str, type_: str | None = None) -> list[Envelope]:
        with self._lock:
            envs = [self.by_seq.get(device, {})[s] for s in sorted(self.by_seq.get(device, {}))]
        return [e for e in envs if type_ is None or e.type == type_]

    def wait_for(self, pred: Any, timeout: float = 10.0) -> bool:
        return wait_until(pred, timeout)

    def stop(self) -> None:
        self._stop = True
        self.t.stop()


def service_cfg(broker: Mosquitto, ca: TestCA, tmp: Path, worker: str, **kw: Any) -> ServiceConfig:
    c = ca.issue(f"edgeward-verifier-{worker}")  # one certificate per worker: CN = client id
    mq = MqttSettings(host=broker.host, port=broker.port, client_id=f"edgeward-verifier-{worker}",
                      ca=ca.ca, cert=c.cert, key=c.key, backoff_base=0.05, backoff_cap=0.3,
                      clean_start=False, session_expiry=600, manual_ack=True)
    return ServiceConfig(source=tmp / "v.toml", worker=worker, store=tmp / "fleet.sqlite",
                         mqtt=mq, tick=0.1, **kw)


def start(svc: VerifierService) -> threading.Thread:
    th = threading.Thread(target=svc.run, daemon=True)
    th.start()
    assert svc.transport.wait_connected(5)
    return th


