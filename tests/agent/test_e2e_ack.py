"""End-to-end acknowledgement, pure cores: outbox states, ack checks, the backend's counter."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgeward.agent.commands import make_command
from edgeward.agent.e2eack import check_ack, make_ack
from edgeward.agent.envelope import PRIORITY_METRICS, PRIORITY_SECURITY, decode
from edgeward.agent.outbox import DROP_EVENT_TYPE, NewMessage, Outbox
from edgeward.agent.outbox_rules import ack_verdict
from edgeward.attestation.service.gaps import contiguous
from edgeward.core import cbor
from edgeward.core.errors import MalformedInputError, ReplayError, SignatureError
from edgeward.core.keys import TrustStore, generate

NOW = 1_800_000_000.0


def metric(i: int = 0, pad: int = 0) -> NewMessage:
    return NewMessage("report", "metrics", {"i": i, "pad": "x" * pad}, PRIORITY_METRICS)


def security(i: int = 0, pad: int = 0) -> NewMessage:
    return NewMessage("event", "model.rejected", {"i": i, "pad": "x" * pad}, PRIORITY_SECURITY)


# --- outbox state transitions --------------------------------------------------------------


def test_puback_marks_delivered_and_keeps_until_backend_ack(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", clock=lambda: NOW)
    ob.put([metric(i) for i in range(5)])
    assert ob.delivered_upto() == 0 and ob.oldest_delivery() is None
    ob.mark_delivered([1, 2, 4])
    st = ob.stats()
    assert (st.count, st.delivered) == (5, 3), "delivered to the broker, still kept"
    assert ob.delivered_upto() == 4 and ob.oldest_delivery() == NOW
    assert ob.ack_upto(2) == 2
    assert [m.seq for m in ob.pending(10)] == [3, 4, 5]
    ob.close()
    ob = Outbox(tmp_path / "o.db", "d")
    assert ob.delivered_upto() == 4, "persisted across restarts"
    assert ob.stats().delivered == 1


def test_resend_order_after_reconnect_skips_what_the_transport_holds(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d")
    ob.put([metric(0), security(1), metric(2), security(3), metric(4)])
    ob.mark_delivered([1, 2, 3, 4])
    # the cursor says everything was handed out; a new broker session clears it (loop), so
    # every kept message comes back in sending order, except those paho still holds (seq 5)
    assert [m.seq for m in ob.pending(10, after={PRIORITY_SECURITY: 4, PRIORITY_METRICS: 5})] == []
    assert [m.seq for m in ob.pending(10, skip={5})] == [2, 4, 1, 3]
    assert [m.seq for m in ob.pending(3, skip={2})] == [4, 1, 3]


def test_eviction_takes_kept_messages_in_the_same_order_and_reports_them(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", max_bytes=16 * 1024)
    ob.put([security(0, pad=500)])
    for i in range(10):
        ob.put([metric(i, pad=500)])
    ob.mark_delivered(range(1, 12))  # all delivered, none acknowledged by the backend
    for i in range(40):
        ob.put([metric(100 + i, pad=500)])
    st = ob.stats()
    assert st.bytes <= ob.max_bytes and st.dropped_total > 0
    left = {m.seq for m in ob.pending(1000)}
    assert 1 in left, "the kept security event outlives metrics"
    assert not left & set(range(2, 12)), "the oldest (kept) metrics went first"
    seq = ob.report_drops()
    assert seq is not None
    body = next(decode(m.payload).body for m in ob.pending(1000) if m.seq == seq)
    assert body["reason"] == "outbox full" and body["ranges"][0][0] == 2


def test_discard_reports_refused_and_expired_messages(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d")
    ob.put([metric(0), metric(1), security(2)])
    assert ob.discard([1], "refused by broker") == 1
    assert ob.discard([2, 99], "expired") == 1
    seq = ob.report_drops()
    env = next(decode(m.payload) for m in ob.pending(10) if m.seq == seq)
    assert env.type == DROP_EVENT_TYPE
    assert env.body["reason"] == "expired, refused by broker"
    assert env.body["ranges"] == [[1, 2]] and env.body["count"] == 2


def test_ack_beyond_what_the_broker_acknowledged_is_not_applied() -> None:
    """Attack/bug: an ack naming seqs this device never delivered (e.g. a backend that remembers
    an earlier device of the same name) must not make it drop unsent data."""
    assert ack_verdict(upto=10, acked=0, delivered_upto=9) == "beyond"
    assert ack_verdict(upto=9, acked=0, delivered_upto=9) == "apply"
    assert ack_verdict(upto=5, acked=9, delivered_upto=20) == "stale"
    assert ack_verdict(upto=9, acked=9, delivered_upto=20) == "stale"


def test_old_outbox_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
        CREATE TABLE msg (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, type TEXT NOT NULL,
            priority INTEGER NOT NULL, ts REAL NOT NULL, size INTEGER NOT NULL,
            payload BLOB NOT NULL);
        CREATE TABLE dropped (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, size INTEGER NOT NULL);
        INSERT INTO meta VALUES ('next_seq', 7), ('dropped_total', 1);
        INSERT INTO dropped VALUES (3, 'metrics', 100);
    """)
    con.commit()
    con.close()
    ob = Outbox(db, "d")
    assert ob.put([metric()]) == [7] and ob.delivered_upto() == 0
    ob.mark_delivered([7])
    seq = ob.report_drops()
    body = next(decode(m.payload).body for m in ob.pending(10) if m.seq == seq)
    assert body["reason"] == "outbox full" and body["ranges"] == [[3, 3]]


# --- the signed ack -------------------------------------------------------------------------


@pytest.fixture
def key():
    return generate("ed25519")


def test_signed_ack_is_accepted(key) -> None:
    ack = check_ack(make_ack(key, "dev-a", 42, now=NOW), "dev-a", TrustStore([key.public]))
    assert (ack.device, ack.upto, ack.ts) == ("dev-a", 42, NOW)


def test_forged_and_unsigned_acks_are_refused(key) -> None:
    """Attack: a broker (or anyone the ACL lets publish) makes the device drop unsent data."""
    trust = TrustStore([key.public])
    rogue = generate("ed25519")
    with pytest.raises(SignatureError):
        check_ack(make_ack(rogue, "dev-a", 42, now=NOW), "dev-a", trust)
    plain = cbor.dumps({"v": 1, "device": "dev-a", "upto": 42, "ts": NOW})
    with pytest.raises(SignatureError):
        check_ack(plain, "dev-a", trust)
    with pytest.raises(SignatureError):  # no trust configured: nothing is believed
        check_ack(make_ack(key, "dev-a", 42, now=NOW), "dev-a", None)
    with pytest.raises(MalformedInputError):
        check_ack(b"\x00" * 600, "dev-a", trust)


def test_ack_for_another_device_or_a_command_is_refused(key) -> None:
    """Attack: B's genuine ack replayed onto A's topic; a signed command passed off as an ack."""
    trust = TrustStore([key.public])
    with pytest.raises(ReplayError):
        check_ack(make_ack(key, "dev-b", 42, now=NOW), "dev-a", trust)
    with pytest.raises(SignatureError):
        check_ack(make_command(key, "dev-a", 42, "attest", now=NOW), "dev-a", trust)


# --- the backend's contiguous counter -------------------------------------------------------


def test_contiguous_counts_stored_and_reported_drops() -> None:
    assert contiguous(0, [], []) == 0
    assert contiguous(0, [1, 2, 3, 5], []) == 3
    assert contiguous(0, [1, 2, 3, 5], [(4, 4)]) == 5
    assert contiguous(0, [5, 1, 2, 2, 3], [(4, 4), (6, 9)]) == 9
    assert contiguous(3, [5, 6], []) == 3
    assert contiguous(3, [4, 6], [(5, 5), (2, 2)]) == 6
    assert contiguous(0, [2, 3], [(1, 1)]) == 3
    assert contiguous(0, [1, 6], [(2, 3), (3, 5)]) == 6


def test_state_transition_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d")
    ob.put([metric(i) for i in range(4)])
    assert ob.mark_delivered([1, 2, 3]) == 3
    assert ob.mark_delivered([]) == 0 and ob.ack_upto(2) == 2 and ob.ack_upto(2) == 0
    assert ob.ack([3, 4]) == 2 and ob.count() == 0
