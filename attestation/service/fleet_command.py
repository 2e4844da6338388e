"""``edgeward fleet command``: sign a command, publish it, and wait for the device's answer.

The command is the agent's format (:func:`edgeward.agent.commands.make_command`): bound to one
device, numbered by the store's per-device command seq (the same counter the workers use, so a
seq is never reused), with an expiry (``[commands] ttl``), and published on
``edgeward/v1/<device>/cmd`` with the same MQTT message expiry, so a broker never hands a device
a command it would refuse as stale. The answer is the device's ``command.accepted`` event
naming that seq, or a ``command.refused`` event (with its reason), read from the device's event
topic; none within ``timeout`` is a timeout.

Fleet-wide, commands go out at most ``rate`` per second (so a thousand devices do not all
answer, and attest, at the same instant) and answers are collected as they come.

The operator's client connects with a clean session under its certificate's name (the broker
makes that the client id): give it a certificate of its own (``fleet ca issue --role worker
--name edgeward-verifier-ops``), not a running worker's, or the broker disconnects the worker.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeward.agent.commands import make_command
from edgeward.agent.envelope import decode, parse_topic, topic
from edgeward.agent.events import Incoming
from edgeward.core.errors import EdgewardError, TransportError

from .config import ServiceConfig
from .store import FleetStoreAPI


@dataclass(frozen=True)
class Answer:
    device: str
    seq: int
    outcome: str  # accepted | refused | timeout
    detail: str = ""


def answer_of(device: str, seq: int, type_: str, body: Any) -> Answer | None:
    """The answer an event gives to command ``seq`` of ``device``, if it is one (pure)."""
    if not isinstance(body, dict):
        return None
    if type_ == "command.accepted" and body.get("seq") == seq:
        return Answer(device, seq, "accepted", str(body.get("op", "")))
    if type_ == "command.refused":  # the agent does not echo a seq it could not read
        return Answer(device, seq, "refused",
                      f"{body.get('reason', '?')}: {body.get('detail', '')}")
    return None


def exit_code(answers: list[Answer]) -> int:
    """0 all accepted, 3 any timed out (operational), else 2 any refused (DESIGN.md)."""
    if any(a.outcome == "timeout" for a in answers):
        return 3
    if any(a.outcome == "refused" for a in answers):
        return 2
    return 0


class CommandSender:
    def __init__(self, cfg: ServiceConfig, key: Any, store: FleetStoreAPI, devices: list[str], *,
                 clock: Callable[[], float] = time.time, transport: Any = None) -> None:
        from edgeward.agent.transport import MqttTransport

        from .service import worker_client_id

        self.cfg, self.key, self.store, self.clock = cfg, key, store, clock
        self.q: queue.SimpleQueue[object] = queue.SimpleQueue()
        mq = dataclasses.replace(
            cfg.mqtt, client_id=worker_client_id(cfg.mqtt.cert, cfg.mqtt.client_id + "-ops"),
            clean_start=True, session_expiry=0, manual_ack=False)
        self.transport = transport or MqttTransport(
            mq, self.q.put, subscriptions=[topic(d, "event") for d in devices])

    def start(self, timeout: float = 10.0) -> None:
        self.transport.start()
        if not self.transport.wait_connected(timeout):
            self.transport.stop()
            raise TransportError(f"cannot reach the broker {self.cfg.mqtt.host}:"
                                 f"{self.cfg.mqtt.port} within {timeout:.0f}s",
                                 hint="is it running, and is [mqtt] in the config right?")
        time.sleep(0.2)  # the SUBACK: an answer must not arrive before the subscription

    def stop(self) -> None:
        self.transport.stop()

    def send(self, device: str, op: str, args: dict[str, Any]) -> int:
        seq = self.store.next_command_seq(device)
        data = make_command(self.key, device, seq, op, args, now=self.clock(),
                            ttl=self.cfg.command_ttl)
        self.transport.publish(topic(device, "cmd"), data, expiry=int(self.cfg.command_ttl))
        return seq

    def poll(self, pending: dict[str, int], wait: float) -> list[Answer]:
        """Answers among the events received within ``wait`` s; removes them from ``pending``."""
        out = []
        deadline = time.monotonic() + wait
        while pending:
            left = deadline - time.monotonic()
            try:
                ev = self.q.get(timeout=max(0.0, left)) if left > 0 else self.q.get_nowait()
            except queue.Empty:
                break
            if not isinstance(ev, Incoming):
                continue
            try:
                device, _ = parse_topic(ev.topic)
                env = decode(ev.payload)
            except EdgewardError:
                continue
            if device not in pending or env.device != device:
                continue
            a = answer_of(device, pending[device], env.type, env.body)
            if a is not None:
                del pending[device]
                out.append(a)
        return out

    def run(self, devices: list[str], op: str, args: dict[str, Any], *, timeout: float,
            rate: float, progress: Callable[[Answer], None] = lambda a: None) -> list[Answer]:
        """Send to every device (at most ``rate`` per second), then wait up to ``timeout`` s
        after the last send; answers in the order they came, timeouts last."""
        pending: dict[str, int] = {}
        sent: dict[str, int] = {}
        answers: list[Answer] = []
        for i, d in enumerate(devices):
            if i:
                for a in self.poll(pending, 1.0 / rate):
                    answers.append(a)
                    progress(a)
            pending[d] = sent[d] = self.send(d, op, args)
        end = time.monotonic() + timeout
        while pending and time.monotonic() < end:
            for a in self.poll(pending, min(0.2, max(0.0, end - time.monotonic()))):
                answers.append(a)
                progress(a)
        for d, seq in pending.items():
            a = Answer(d, seq, "timeout", f"no answer within {timeout:g}s")
            answers.append(a)
            progress(a)
        return answers
