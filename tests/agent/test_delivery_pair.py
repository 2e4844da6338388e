"""Pair tests: the device's delivery core against the backend's ack logic, with no broker.

The device is the real agent (delivery core, loop, SQLite outbox) with a fake link for a
transport and a fake clock; the backend is the real verifier service (fleet store, gap
accounting, signed end-to-end acks) on the other end of the link. The link plays the broker and
what goes wrong with one: it loses messages before or after its PUBACK (a broker that dies
before it forwarded or saved them), delivers twice, reorders, and drops connections. Whatever
it does, the device never deletes a message the backend does not hold, and in the end every
seq is stored at the backend or reported dropped, and the device's outbox is empty.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edgeward.agent.compose import Root
from edgeward.agent.config import MqttSettings, load_agent_config
from edgeward.agent.delivery import AckUpTo, Delete, Delivery, Discard, MarkDelivered
from edgeward.agent.envelope import PRIORITY_METRICS, PRIORITY_SECURITY
from edgeward.agent.events import Acked, Connected, Disconnected, Incoming
from edgeward.agent.localsock import LocalEvent
from edgeward.agent.loop import Agent
from edgeward.agent.outbox_rules import Stored
from edgeward.attestation.service.config import ServiceConfig
from edgeward.attestation.service.service import VerifierService
from edgeward.core.keys import generate, write_keypair

DEV = "lock-p"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class DeviceEnd:
    """The device's transport: publishes go onto the link; paho's mids are numbered here."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.mid = 0

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def take_acks(self) -> list[Acked]:
        return []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry: int | None = None) -> int | None:
        self.mid += 1
        self.link.up.append((self.mid, topic, payload))
        return self.mid


class BackendEnd:
    def __init__(self, link: Link) -> None:
        self.link = link

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry: int | None = None) -> int:
        self.link.down.append((topic, payload))
        return 1

    def ack(self, msg: Incoming) -> None: ...


class Link:
    """The broker between one device and one backend worker, with a chosen kind of trouble."""

    def __init__(self, rng: random.Random, *, lose_before: float = 0.0, lose_after: float = 0.0,
                 duplicate: float = 0.0, reorder: bool = False, lose_acks: float = 0.0) -> None:
        self.rng = rng
        self.lose_before, self.lose_after = lose_before, lose_after
        self.duplicate, self.reorder, self.lose_acks = duplicate, reorder, lose_acks
        self.up: list[tuple[int, str, bytes]] = []
        self.down: list[tuple[str, bytes]] = []
        self.held: dict[int, tuple[int, str, bytes]] = {}  # no PUBACK yet: paho resends these

    def clean(self) -> None:
        self.lose_before = self.lose_after = self.duplicate = self.lose_acks = 0.0
        self.reorder = False


class Pair:
    def __init__(self, tmp: Path, link: Link, *, ack_timeout: float = 5.0) -> None:
        key = generate("ed25519")
        _, pub = write_keypair(tmp / "backend", key)
        cfg_path = tmp / "agent.toml"
        cfg_path.write_text(
            f'[device]\nname = "{DEV}"\n[mqtt]\ntls = false\n[commands]\ntrust = "{pub}"\n'
            f"[outbox]\nwindow = 16\nack_timeout = {ack_timeout}\n")
        cfg = load_agent_config(cfg_path)
        self.clock = Clock()
        self.link = link
        parts = Root(clock=self.clock).parts(cfg, lambda ev: None)
        parts.metrics = None
        self.agent = Agent(cfg, parts, transport=DeviceEnd(link), clock=self.clock)
        scfg = ServiceConfig(source=tmp / "v.toml", worker="w0", store=tmp / "fleet.sqlite",
                             mqtt=MqttSettings(tls=False), ack_interval=0.5)
        self.svc = VerifierService(scfg, command_key=key, clock=self.clock,
                                   transport=BackendEnd(link))
        self.emitted = 0
        self.agent.handle(Connected(False))

    def emit(self, n: int) -> None:
        for _ in range(n):
            self.emitted += 1
            self.agent.queue.put(LocalEvent("app.reading", 0.0, {"i": self.emitted}, 0, 0))

    def reconnect(self) -> None:
        """The connection drops and comes back: paho sends again what it holds (same mid)."""
        self.agent.handle(Disconnected("link"))
        self.agent.handle(Connected(False))
        self.link.up.extend(self.link.held.values())
        self.link.held.clear()

    def step(self, dt: float = 0.1) -> None:
        self.agent.turn(max_wait=0)
        link, rng = self.link, self.link.rng
        up, link.up = link.up, []
        if link.reorder:
            rng.shuffle(up)
        for mid, topic, payload in up:
            if rng.random() < link.lose_before:  # no PUBACK, not forwarded: paho holds it
                link.held[mid] = (mid, topic, payload)
                continue
            self.agent.queue.put(Acked(mid, True, ""))
            if rng.random() < link.lose_after:  # PUBACKed, then the broker died with it
                continue
            for _ in range(2 if rng.random() < link.duplicate else 1):
                self.svc.handle(Incoming(topic, payload, False, qos=1))
        self.svc.send_acks(self.clock())
        down, link.down = link.down, []
        for topic, payload in down:
            if rng.random() >= link.lose_acks:
                self.agent.queue.put(Incoming(topic, payload, True))
        self.clock.t += dt
        self.check_nothing_lost()

    def outbox_seqs(self) -> set[int]:
        return {m.seq for m in self.agent.outbox.pending(10**6)}

    def check_nothing_lost(self) -> None:
        """Every seq the device ever assigned is in its outbox, at the backend, or reported."""
        store = self.svc.store
        top = self.agent.outbox.stats().next_seq - 1
        held = self.outbox_seqs()
        at_backend = {s for s, _t, _b in store.messages(DEV)}
        g = store.gaps(DEV)
        reported = {s for a, b in g.explained for s in range(a, b + 1)}
        listed = {r[0] for r in self.agent.outbox._db.execute("SELECT seq FROM dropped")}
        lost = set(range(1, top + 1)) - held - at_backend - reported - listed
        assert not lost, f"deleted on the device, never at the backend: {sorted(lost)[:10]}"

    def settle(self, steps: int = 400) -> None:
        """A clean link until the device's outbox is empty (everything acked end to end)."""
        self.link.clean()
        self.reconnect()
        for _ in range(steps):
            self.step()
            if not self.outbox_seqs() and not self.agent._new:
                break

    def close(self) -> None:
        self.agent.outbox.close()
        self.svc.store.close()


def _run(tmp: Path, link: Link, *, rounds: int = 60, per: int = 5, reconnect_every: int = 0,
         ack_timeout: float = 5.0) -> Pair:
    p = Pair(tmp, link, ack_timeout=ack_timeout)
    for i in range(rounds):
        p.emit(per)
        p.step()
        if reconnect_every and i % reconnect_every == reconnect_every - 1:
            p.reconnect()
    p.settle()
    assert p.outbox_seqs() == set(), "the device still holds messages after a clean link"
    g = p.svc.store.gaps(DEV)
    assert g.unexplained == () and g.explained == ()
    apps = [m for m in p.svc.store.messages(DEV) if m[1] == "app.reading"]
    assert sorted(b["data"]["i"] for _s, _t, b in apps) == list(range(1, p.emitted + 1))
    assert p.svc.store.contiguous(DEV) == p.agent.outbox.stats().next_seq - 1
    return p


def test_clean_link_every_message_acked_end_to_end(tmp_path: Path) -> None:
    p = _run(tmp_path, Link(random.Random(1)))
    assert p.agent.counters.get("e2e_resend", 0) == 0 and p.svc.counters.get("acks", 0) > 0
    p.close()


@pytest.mark.parametrize("seed", [2, 3])
def test_broker_loses_messages_after_its_puback_the_ack_timeout_sends_them_again(
    tmp_path: Path, seed: int
) -> None:
    """Attack/fault: a broker acknowledges and then loses messages (SIGKILL, power loss): only
    the backend's ack frees the outbox, and its absence makes the device send them again."""
    p = _run(tmp_path, Link(random.Random(seed), lose_after=0.2), ack_timeout=3.0)
    assert p.agent.counters["e2e_resend"] >= 1
    p.close()


def test_loss_before_puback_is_resent_by_the_session_after_reconnect(tmp_path: Path) -> None:
    p = _run(tmp_path, Link(random.Random(4), lose_before=0.2), reconnect_every=10)
    p.close()


def test_redelivery_and_reordering_are_dropped_by_seq(tmp_path: Path) -> None:
    p = _run(tmp_path, Link(random.Random(5), duplicate=0.3, reorder=True), reconnect_every=7)
    assert p.svc.counters["duplicates"] > 0
    p.close()


def test_lost_acks_are_repaired_by_later_acks(tmp_path: Path) -> None:
    p = _run(tmp_path, Link(random.Random(6), lose_acks=0.6, reorder=True), ack_timeout=3.0)
    p.close()


def test_everything_at_once(tmp_path: Path) -> None:
    link = Link(random.Random(7), lose_before=0.1, lose_after=0.1, duplicate=0.2, reorder=True,
                lose_acks=0.3)
    p = _run(tmp_path, link, rounds=80, reconnect_every=9, ack_timeout=2.0)
    assert p.svc.counters["duplicates"] > 0
    p.close()


# --- the core alone: events and the time in, actions out ------------------------------------


def _msg(seq: int, priority: int = PRIORITY_SECURITY, ts: float = 0.0) -> Stored:
    return Stored(seq, "event", "t", priority, ts, b"")


def test_core_a_backend_ack_beyond_the_brokers_pubacks_waits() -> None:
    """Attack: a backend (or whoever holds its key) acks seqs the device never delivered, to
    make it delete messages it has not sent: the ack waits until the broker has PUBACKed."""
    d = Delivery(window=8, e2e=True, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    for i, seq in enumerate((1, 2, 3), start=1):
        d.sent(_msg(seq), mid=i)
    d.on_puback(1, True)
    d.on_backend_ack(3)
    assert d.record(1.0) == [MarkDelivered([1])]
    assert d.counters["ack_beyond_sent"] == 1
    d.on_puback(2, True)
    d.on_puback(3, True)
    assert d.record(2.0, force=True) == [MarkDelivered([2, 3]), AckUpTo(3)]
    d.on_backend_ack(2)  # an older (replayed) ack changes nothing
    assert d.record(3.0, force=True) == []


def test_core_without_e2e_a_puback_deletes_and_a_refusal_is_reported() -> None:
    d = Delivery(window=8, e2e=False, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    d.sent(_msg(1), mid=7)
    d.sent(_msg(2), mid=8)
    d.on_puback(7, True)
    d.on_puback(8, False, "not authorized")
    d.on_puback(99, True)  # a mid it never sent: ignored
    assert d.record(0.0, force=True) == [Delete([1]), Discard([2], "refused by broker")]
    assert d.inflight == {} and d.room() == 8


def test_core_pubacks_are_recorded_together_unless_something_waits() -> None:
    d = Delivery(window=8, e2e=True, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    d.sent(_msg(1), mid=1)
    d.on_puback(1, True)
    assert d.record(0.01) == []  # gathered for ACK_DELAY
    assert d.record(0.01, storing=True) == [MarkDelivered([1])]  # before new messages


def test_core_old_metrics_expire_instead_of_being_sent() -> None:
    d = Delivery(window=8, e2e=True, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    old, fresh = _msg(1, PRIORITY_METRICS, ts=0.0), _msg(2, PRIORITY_METRICS, ts=250.0)
    assert d.expiry(old, 400.0) == -1 and d.expiry(fresh, 400.0) == 150
    d.sent(fresh, mid=1)
    acts = d.batch_done(room=8, taken=2, done=2, from_memory=False)
    assert acts == [Discard([1], "expired")] and d.cursor == {PRIORITY_METRICS: 2}


def test_core_ack_timeout_and_reconnect_send_everything_again() -> None:
    d = Delivery(window=8, e2e=True, metrics_expiry=300, ack_timeout=10, now=0.0)
    assert d.room() == 0  # not connected: nothing to send
    d.on_connect()
    d.sent(_msg(5), mid=1)
    assert d.cursor and not d.ack_check_due(9.0) and d.ack_check_due(10.0)
    assert not d.check_ack_timeout(10.0, oldest_delivery=5.0)  # delivered 5 s ago: wait
    assert d.check_ack_timeout(16.0, oldest_delivery=5.0) and d.cursor == {}
    assert d.counters["e2e_resend"] == 1 and d.held() == {5}
    d.sent(_msg(6), mid=2)
    d.on_disconnect()
    assert d.room() == 0
    d.on_connect()
    assert d.cursor == {} and d.held() == {5, 6}  # paho resends those two itself
