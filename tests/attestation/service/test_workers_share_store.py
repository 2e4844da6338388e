"""Two verifier workers sharing one store (the SQLite file, or one PostgreSQL database): a
device's consecutive messages landing on different workers are still one sequence.

The workers are real :class:`VerifierService` instances with a link that records what they
publish (no broker: the real-broker run is tests/attestation/service/test_workers_postgres.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from edgeward.agent.config import MqttSettings
from edgeward.agent.e2eack import check_ack
from edgeward.agent.envelope import Envelope, encode, topic
from edgeward.agent.events import Incoming
from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.nonces import Session
from edgeward.attestation.service.config import ServiceConfig
from edgeward.attestation.service.service import VerifierService
from edgeward.attestation.service.verifier_store_pg import PgStore
from edgeward.core.errors import ReplayError
from edgeward.core.keys import generate


class Link:
    """The worker's side of a broker that is not there: publishes and acks are recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked = 0

    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...

    def publish(self, t: str, payload: bytes, **_: Any) -> int:
        self.published.append((t, payload))
        return 0

    def ack(self, msg: Incoming) -> None:
        self.acked += 1


def worker(name: str, tmp: Path, backend: PostgresSettings | None, key: Any) -> VerifierService:
    cfg = ServiceConfig(source=tmp / "v.toml", worker=name, store=tmp / "fleet.sqlite",
                        mqtt=MqttSettings(), ack_interval=0.0, postgres=backend)
    return VerifierService(cfg, command_key=key, transport=Link(), clock=lambda: 100.0)


def link(svc: VerifierService) -> Link:
    assert isinstance(svc.transport, Link)
    return svc.transport


def deliver(svc: VerifierService, device: str, seq: int, type_: str = "metrics",
            **body: Any) -> None:
    kind = "event" if type_ != "metrics" else "report"
    data = encode(Envelope(seq=seq, ts=1.0, device=device, type=type_, body=body))
    svc.handle(Incoming(topic(device, kind), data, retain=False))


def test_gap_detection_when_a_device_alternates_between_workers(
        store_backend: PostgresSettings | None, tmp_path: Path) -> None:
    """Seq 1..8 of one device alternate between two workers, seq 4 never arrives, seq 3 is
    redelivered to the other worker. Either worker sees one sequence with one unexplained gap;
    once the device reports 4 dropped, the gap is explained and both ack up to 8."""
    key = generate("ed25519")
    a, b = worker("a", tmp_path, store_backend, key), worker("b", tmp_path, store_backend, key)
    try:
        for seq in (1, 2, 3, 5, 6, 7, 8):
            deliver(a if seq % 2 else b, "lock-1", seq, cpu=seq)
        deliver(b, "lock-1", 3, cpu=3)  # redelivered to the other worker
        assert b.counters.get("duplicates") == 1 and not a.counters.get("duplicates")
        for svc in (a, b):
            g = svc.store.gaps("lock-1")
            assert (g.received, g.highest, g.unexplained) == (7, 8, ((4, 4),))
        assert [m[0] for m in a.store.messages("lock-1")] == [1, 2, 3, 5, 6, 7, 8]
        a.send_acks(100.0)
        uptos = [check_ack(p, "lock-1", key.public).upto for t, p in link(a).published]
        assert uptos == [3]  # not past the hole: seq 4 may still come
        deliver(b, "lock-1", 9, "outbox.dropped", ranges=[[4, 4]])
        for svc in (a, b):
            g = svc.store.gaps("lock-1")
            assert g.unexplained == () and g.explained == ((4, 4),)
        b.send_acks(100.0)
        assert check_ack(link(b).published[-1][1], "lock-1", key.public).upto == 9
        assert a.store.contiguous("lock-1") == 9  # and a sees what b advanced
    finally:
        a.store.close()
        b.store.close()


def test_nonce_race_waits_on_the_row_lock_and_loses(postgres: PostgresSettings) -> None:
    """Attack: one evidence appraised on two hosts at once. Worker A has consumed the nonce but
    not yet committed; worker B's conditional UPDATE waits on A's row lock, re-reads the row
    after A commits, finds the nonce used and is refused: no process memory involved."""
    a, b = PgStore(postgres), PgStore(postgres)
    nonce = b"r" * 32
    a.put_session(Session(nonce, "lock-1", 1.0, 100.0))
    outcome: list[BaseException | None] = []
    try:
        with a.db.transaction() as conn:
            conn.execute("UPDATE verifier_sessions SET used_at = 2.0 WHERE nonce = %s AND "
                         "used_at IS NULL", (nonce,))

            def spend() -> None:
                try:
                    b.record_appraisal(device=None, nonce=nonce, now=3.0, status=2,
                                       evidence_sha256=b"h" * 32, ear=b"e", bootcount=None)
                    outcome.append(None)
                except BaseException as e:
                    outcome.append(e)

            th = threading.Thread(target=spend)
            th.start()
            th.join(1.0)
            assert th.is_alive() and outcome == []  # B is waiting on A's uncommitted row
        th.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], ReplayError), outcome
        s = b.session(nonce)
        assert s is not None and s.used_at == 2.0  # A's, not B's
        assert b.history("lock-1") == [] and a.history("lock-1") == []
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("seqs", [[1, 2, 3], [3, 1, 2]])
def test_redelivery_storm_stored_once(store_backend: PostgresSettings | None, tmp_path: Path,
                                      seqs: list[int]) -> None:
    """Fault: after a broker restart every message arrives again at every worker, in any order;
    each is stored and counted once in the whole fleet."""
    ws = [worker(f"w{i}", tmp_path, store_backend, None) for i in range(3)]
    try:
        for _ in range(3):
            for svc in ws:
                for seq in seqs:
                    deliver(svc, "lock-9", seq)
        assert [m[0] for m in ws[0].store.messages("lock-9")] == [1, 2, 3]
        assert sum(svc.counters.get("duplicates", 0) for svc in ws) == 3 * 3 * 3 - 3
        assert all(link(svc).acked == 9 for svc in ws)  # every copy acked to the broker
    finally:
        for svc in ws:
            svc.store.close()


def test_store_survives_a_postgres_restart(postgres_server: Any) -> None:
    """Fault: the database restarts under a running worker; its pooled connections are dead.
    The next message is stored on a fresh connection instead of failing."""
    from fixtures_postgres import migrated

    from edgeward.attestation.service.fleet_store_pg import PgFleetStore

    st = PgFleetStore(migrated(postgres_server), worker="w")
    try:
        assert st.record(Envelope(seq=1, ts=1.0, device="lock-1", type="metrics"), 1.0)
        postgres_server.restart()
        assert st.record(Envelope(seq=2, ts=1.0, device="lock-1", type="metrics"), 2.0)
        assert [m[0] for m in st.messages("lock-1")] == [1, 2]
    finally:
        st.close()
