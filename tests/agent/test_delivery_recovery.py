"""The delivery core's timing after a broker restart (pure: an injected clock, no broker).

The failure these stand for: the devices' backlog, resent while no worker was subscribed, went
nowhere; every PUBACK of such a resend restarted the 60 s ack timeout, so the backlog waited a
minute or more. Now the timeout counts from a message's *first* delivery (the outbox keeps the
first PUBACK time), a timeout resend is not repeated before another whole timeout, and the
backend's presence (a worker subscribed again) sends everything unacknowledged at once, and
once more if what was delivered before the backend came back is still unacknowledged
:data:`~edgeward.agent.delivery.BACKEND_SETTLE` seconds later. The real-broker test beside it
is tests/agent/test_recovery.py.
"""

from __future__ import annotations

from pathlib import Path

from edgeward.agent.delivery import BACKEND_SETTLE, Delivery
from edgeward.agent.outbox import Outbox
from edgeward.agent.outbox_rules import NewMessage, Stored


def _msg(seq: int) -> Stored:
    return Stored(seq, "event", "t", 1, 0.0, b"")


def core(ack_timeout: float = 60.0, e2e: bool = True) -> Delivery:
    d = Delivery(window=8, e2e=e2e, metrics_expiry=300, ack_timeout=ack_timeout, now=0.0)
    d.on_connect()
    d.sent(_msg(1), mid=1)
    return d


def test_ack_timeout_counts_from_the_first_delivery_not_the_resends_puback(tmp_path: Path) -> None:
    """A copy resent on reconnect (to a broker with no worker) is PUBACKed again: the outbox
    keeps the first PUBACK time, so the timeout still runs from the first delivery."""
    now = [100.0]
    ob = Outbox(tmp_path / "o.db", "dev", clock=lambda: now[0])
    try:
        [seq] = ob.put([NewMessage("event", "model.rejected", {})])
        assert ob.mark_delivered([seq]) == 1
        now[0] = 130.0  # the broker restarted; the resent copy is PUBACKed again
        ob.mark_delivered([seq])
        assert ob.oldest_delivery() == 100.0
    finally:
        ob.close()
    d = core(60.0)
    assert not d.check_ack_timeout(159.0, oldest_delivery=100.0)
    assert d.check_ack_timeout(160.0, oldest_delivery=100.0)  # 60 s after the first delivery


def test_a_timeout_resend_waits_a_whole_timeout_before_the_next() -> None:
    """The oldest delivery stays old while the backend is away: resend once per timeout, not at
    every check (a device must not flood a broker whose workers are gone)."""
    d = core(60.0)
    assert d.check_ack_timeout(60.0, oldest_delivery=0.0)
    d.sent(_msg(1), mid=2)
    assert not d.check_ack_timeout(90.0, oldest_delivery=0.0)
    assert not d.check_ack_timeout(119.0, oldest_delivery=0.0)
    assert d.check_ack_timeout(120.0, oldest_delivery=0.0)
    assert d.counters["e2e_resend"] == 2


def test_backend_presence_heard_live_sends_everything_again_at_once() -> None:
    d = core(60.0)
    assert d.cursor
    assert d.on_backend_online(5.0, retained=False)
    assert d.cursor == {} and d.counters["backend_resend"] == 1  # read again from the outbox
    assert d.held() == {1}  # the copy paho still holds is not read twice


def test_backend_presence_retained_or_without_e2e_changes_nothing() -> None:
    """A retained presence is the broker's memory, heard on every subscribe (the connect resync
    already sent everything); without end-to-end acks a PUBACK deleted the message anyway."""
    d = core(60.0)
    assert not d.on_backend_online(5.0, retained=True) and d.cursor
    plain = core(60.0, e2e=False)
    assert not plain.on_backend_online(5.0, retained=False) and plain.cursor
    d.on_disconnect()
    assert not d.on_backend_online(6.0, retained=False)


def test_after_presence_what_was_delivered_before_is_resent_once_more_if_unacked() -> None:
    """A message PUBACKed before the workers subscribed (in flight while the presence arrived)
    went nowhere too: BACKEND_SETTLE seconds after the presence, if the oldest unacknowledged
    message was first delivered before it, everything is sent again, once."""
    d = core(60.0)
    assert d.on_backend_online(10.0, retained=False)
    assert not d.ack_check_due(10.0 + BACKEND_SETTLE - 0.01)
    assert d.ack_check_due(10.0 + BACKEND_SETTLE)
    d.sent(_msg(1), mid=2)
    assert d.check_ack_timeout(10.0 + BACKEND_SETTLE, oldest_delivery=9.0)
    d.sent(_msg(1), mid=3)
    assert not d.check_ack_timeout(10.0 + 2 * BACKEND_SETTLE, oldest_delivery=9.0)  # once

    fresh = core(60.0)
    assert fresh.on_backend_online(10.0, retained=False)
    fresh.sent(_msg(1), mid=2)
    # delivered after the presence: the backend had it; the normal timeout applies
    assert not fresh.check_ack_timeout(10.0 + BACKEND_SETTLE, oldest_delivery=10.5)
