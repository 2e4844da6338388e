"""``fleet events --follow`` on PostgreSQL, raced with real connections: an id is handed out at
insert but seen at commit, so two workers can commit in the other order than their ids. The
follower must still print every event once (issue 13; the SQLite path is
``tests/agent/test_worker_ops.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from edgeward.agent.envelope import Envelope
from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.service import fleet_view
from edgeward.attestation.service.fleet_store_pg import PgFleetStore
from edgeward.core import cbor

INSERT = ("INSERT INTO fleet_messages (device, seq, type, ts, received, worker, body) "
          "VALUES (%s, %s, 'model.rejected', %s, %s, 'slow', %s) RETURNING id")


class Follower:
    """What ``edgeward fleet events --follow`` does between its looks at the store."""

    def __init__(self, store: PgFleetStore) -> None:
        self.store = store
        ms = fleet_view.events(store, limit=100, newest=True)
        self.shown = [m.seq for m in ms]
        self.after = ms[-1].id if ms else store.last_rowid()

    def look(self) -> list[int]:
        ms = fleet_view.events(self.store, after=self.after, limit=1000)
        if ms:
            self.after = ms[-1].id
        self.shown += [m.seq for m in ms]
        return [m.seq for m in ms]


@pytest.fixture
def store(postgres: PostgresSettings) -> Iterator[PgFleetStore]:
    s = PgFleetStore(postgres, worker="fast")
    yield s
    s.close()


def event(seq: int) -> Envelope:
    return Envelope(seq, time.time(), "dev-1", "model.rejected", {"n": seq})


def test_follow_attack_lower_id_committed_after_higher_one_was_looked_at(
        postgres: PostgresSettings, store: PgFleetStore) -> None:
    """A slow worker takes id 1 and commits after a fast worker's id 2 has committed and a
    follower has looked: the follower prints both, each once (before the fix it printed 2 and
    passed over 1 for good)."""
    store.record(event(1), time.time())
    follower = Follower(store)
    assert follower.shown == [1]
    with psycopg.connect(postgres.url) as slow:  # a transaction: open until commit()
        row = slow.execute(INSERT, ("dev-1", 2, time.time(), time.time(),
                                    cbor.dumps({"n": 2}))).fetchone()
        assert row is not None
        low = row[0]
        assert store.record(event(3), time.time())
        high = store.db.execute("SELECT id FROM fleet_messages WHERE seq = 3").fetchone()[0]
        assert low < high
        assert follower.look() == []  # 3 is committed but held back behind the open 2
        slow.commit()
    assert follower.look() == [2, 3]
    assert follower.look() == []
    assert follower.shown == [1, 2, 3]


def test_follow_attack_transaction_older_than_its_id_commits_last(
        postgres: PostgresSettings, store: PgFleetStore) -> None:
    """The other interleaving: the slow worker's transaction began writing first (older xid)
    but took its id after the fast one's, and commits last. Every event once, none lost."""
    follower = Follower(store)
    assert follower.shown == [] and follower.after == 0
    with psycopg.connect(postgres.url) as slow:
        slow.execute("SELECT pg_current_xact_id()")  # the slow transaction starts writing first
        assert store.record(event(1), time.time())
        assert follower.look() == []
        slow.execute(INSERT, ("dev-1", 2, time.time(), time.time(), cbor.dumps({"n": 2})))
        assert store.record(event(3), time.time())
        assert follower.look() == []
        slow.commit()
    got = follower.look()
    assert sorted(got) == [1, 2, 3] and follower.look() == []
    store.record(event(4), time.time())
    assert follower.look() == [4] and sorted(follower.shown) == [1, 2, 3, 4]


def test_follow_rolled_back_id_does_not_stall_the_follower(
        postgres: PostgresSettings, store: PgFleetStore) -> None:
    """A worker that rolls back leaves a hole in the ids; the follower goes on past it."""
    follower = Follower(store)
    with psycopg.connect(postgres.url) as slow:
        slow.execute(INSERT, ("dev-1", 1, time.time(), time.time(), cbor.dumps({"n": 1})))
        store.record(event(2), time.time())
        assert follower.look() == []
        slow.rollback()
    assert follower.look() == [2]
    store.record(event(3), time.time())
    assert follower.look() == [3] and follower.shown == [2, 3]
