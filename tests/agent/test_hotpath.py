"""The agent's hot path: the envelope's fast encoder and sending freshly stored messages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from edgeward.agent.envelope import (
    PRIORITY_EVIDENCE,
    PRIORITY_METRICS,
    PRIORITY_SECURITY,
    Envelope,
    decode,
    encode,
    encode_fields,
)
from edgeward.agent.events import Acked, PayloadTooLargeError
from edgeward.agent.outbox import NewMessage, Outbox, Stored

BODIES: list[dict[Any, Any]] = [
    {},
    {"a": 1, "bb": [1, 2.5, None, True, False], "c": {"z": b"x", "y": -3, "aa": "t"}},
    {"src_ts": 0.0, "pid": 0, "uid": 0, "data": {"pad": "x" * 480}},
    {"f": 1e300, "g": -0.0, "h": float("nan"), "i": float("inf"), "j": 2**70, "k": -(2**70)},
    {1: "int", -1: "neg", "s": "mixed keys", b"b": "bytes key"},
    {"é": "ü", "long": "y" * 70_000, "l": list(range(30)), "t": (1, 2), "set": {3, 1, 2}},
    {"nested": {"z": {"y": {"x": [{"b": 1, "a": 2}]}}}, "f16": 1.5, "f32": 3.4028234663852886e38},
]
SEQS = [1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1]
TSS: list[float] = [1000, 0, 0.0, -0.0, 1.5, 1_732_600_000.123456, 65504.0, 1e-8, float("inf"),
                    float("nan"), 2**64]
TYPES = ["a", "x" * 23, "x" * 24, "app.bench.report", "y" * 64]
DEVICES = ["d", "lock-1", "z" * 23, "z" * 24, "x" * 64]


@pytest.mark.parametrize("body", BODIES)
def test_fast_encoding_is_byte_identical_to_cbor2_canonical(body: dict[Any, Any]) -> None:
    for seq in SEQS:
        for ts in TSS:
            for typ in TYPES:
                for dev in DEVICES:
                    env = Envelope(seq=seq, ts=ts, device=dev, type=typ, body=body)
                    want = cbor2.dumps(env.to_map(), canonical=True)
                    assert encode(env) == want, (seq, ts, typ, dev)
                    assert encode_fields(seq, ts, dev, typ, body) == want


def test_fast_encoding_errors_and_recovers() -> None:
    with pytest.raises(ValueError):
        encode(Envelope(seq=1, ts=1.0, device="d", type="Bad Type"))
    with pytest.raises(ValueError):
        encode(Envelope(seq=0, ts=1.0, device="d", type="t"))
    with pytest.raises(Exception):  # noqa: B017 - the reference encoder names the problem
        encode(Envelope(seq=1, ts=1.0, device="d", type="t", body={"o": object()}))
    env = Envelope(seq=9, ts=2.5, device="d", type="t", body={"k": [1, {"a": "b"}]})
    assert encode(env) == cbor2.dumps(env.to_map(), canonical=True)  # the encoder still works
    assert decode(encode(env)) == env


def test_put_keep_gives_what_pending_reads_back(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", clock=lambda: 1000.5)
    kept: list[Stored] = []
    msgs = [NewMessage("report", "metrics", {"i": 1}, PRIORITY_METRICS),
            NewMessage("event", "model.rejected", {"i": 2}, PRIORITY_SECURITY),
            NewMessage("attest/evidence", "attest.evidence", {"i": 3}, PRIORITY_EVIDENCE)]
    assert ob.put(msgs, keep=kept) == [1, 2, 3]
    assert sorted(kept) == sorted(ob.pending(10))
    ob.close()


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str]] = []
        self.mid = 0
        self.refuse_next = False

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def take_acks(self) -> list[Acked]:
        return []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry: int | None = None) -> int | None:
        if len(payload) > 3000:
            raise PayloadTooLargeError("too large")
        if self.refuse_next:
            self.refuse_next = False
            return None
        env = decode(payload)
        self.sent.append((topic.rsplit("/", 1)[1], env.seq, env.type))
        self.mid += 1
        return self.mid


def _scenario(tmp_path: Path, *, fresh: bool) -> tuple[list[tuple[str, int, str]], int]:
    from edgeward.agent.compose import Root
    from edgeward.agent.config import load_agent_config
    from edgeward.agent.loop import Agent

    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text('[device]\nname = "lock-1"\n[mqtt]\ntls = false\n')
    cfg = load_agent_config(cfg_path)
    fake = FakeTransport()
    agent = Agent(cfg, Root().parts(cfg, lambda ev: None), transport=fake, clock=time.time)
    d = agent.delivery
    if not fresh:
        d._fresh.add = lambda stored: d._fresh.stop()  # type: ignore[method-assign]  # a spy
    d.on_connect()
    reads = [0]
    pending = agent.outbox.pending

    def counted(*a: Any, **kw: Any) -> list[Stored]:
        reads[0] += 1
        return pending(*a, **kw)

    agent.outbox.pending = counted  # type: ignore[method-assign]  # a spy

    def emit(*specs: tuple[int, int]) -> None:  # (priority, body size)
        for p, size in specs:
            kind = {PRIORITY_METRICS: "report", PRIORITY_EVIDENCE: "attest/evidence"}.get(p, "event")
            agent.emit(kind, f"t{p}", {"pad": "x" * size}, p)
        agent.commit()
        agent.pump()

    agent.pump()  # nothing stored: from here on, stored messages may be sent from memory
    emit((0, 1), (2, 1), (0, 1), (1, 1), (2, 1))
    window = agent.cfg.outbox.window
    d.inflight.update({10**6 + i: 0 for i in range(window - 2)})  # room for two
    emit((0, 1), (2, 1), (0, 1), (2, 1))
    for i in range(window - 2):
        del d.inflight[10**6 + i]
    fake.refuse_next = True
    emit((2, 1))
    emit((0, 1))
    for mid in list(d.inflight)[:4]:
        agent.handle(Acked(mid, True, ""))
    emit((2, 5000), (0, 1), (2, 1))  # too large: dropped, and the drop report is read back
    emit()
    d.resync()  # as after a reload: everything kept is sent again
    emit((1, 1))
    assert agent.outbox.count() > 0 and len(fake.sent) > 15
    agent.outbox.close()
    return fake.sent, reads[0]


def test_sending_from_memory_sends_what_reading_the_outbox_sends(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sent, reads = _scenario(tmp_path / "a", fresh=True)
    sent_read_back, reads_read_back = _scenario(tmp_path / "b", fresh=False)
    assert sent == sent_read_back  # same messages, same order: security first, then by seq
    assert reads < reads_read_back / 2  # and most of them were sent from memory


def test_pubacks_wake_the_loop_once_per_batch_or_when_nothing_is_in_flight() -> None:
    """A busy link signals the loop once per ACK_SIGNAL_BATCH PUBACKs; the last PUBACK of a
    burst always signals, so no acknowledgement waits for traffic that may never come."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edgeward.agent.config import MqttSettings
    from edgeward.agent.events import AcksReady
    from edgeward.agent.transport import ACK_SIGNAL_BATCH, MqttTransport

    events: list[object] = []
    t = MqttTransport(MqttSettings(client_id="unit", tls=False), events.append, batch_acks=True)
    n = ACK_SIGNAL_BATCH + 8
    sent = [t.publish("edgeward/v1/unit/report", b"x") for _ in range(n)]  # queued, no broker
    mids = [m for m in sent if m is not None]
    assert len(mids) == n
    ok = ReasonCode(PacketTypes.PUBACK, "Success")
    for mid in mids[: ACK_SIGNAL_BATCH - 1]:
        t._on_publish(None, None, mid, ok, None)
    assert events == []  # a batch is still filling and more are in flight
    t._on_publish(None, None, mids[ACK_SIGNAL_BATCH - 1], ok, None)
    assert events == [AcksReady()]
    assert [a.mid for a in t.take_acks()] == mids[:ACK_SIGNAL_BATCH]
    for mid in mids[ACK_SIGNAL_BATCH:]:
        t._on_publish(None, None, mid, ok, None)
    assert events == [AcksReady(), AcksReady()]  # the last one in flight signalled
    assert [a.mid for a in t.take_acks()] == mids[ACK_SIGNAL_BATCH:]
    assert t.take_acks() == []
