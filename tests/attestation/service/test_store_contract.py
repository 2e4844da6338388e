"""One suite, both stores: every test here runs on SQLite and on a private PostgreSQL
(``store_backend``), and with several workers (stores opened separately, threads racing) the
exactly-once promises hold in the database, not in the memory of one process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeward.agent.envelope import Envelope
from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.nonces import Session
from edgeward.attestation.service import fleet_view
from edgeward.attestation.service.store import (
    FleetStoreAPI,
    VerifierStore,
    open_fleet_store,
    open_verifier_store,
)
from edgeward.attestation.service.verifier_store import DeviceRecord
from edgeward.core.errors import ReplayError, UnknownDeviceError

Backend = PostgresSettings | None


def fleet(backend: Backend, tmp: Path, worker: str = "w0") -> FleetStoreAPI:
    return open_fleet_store(tmp / "fleet.sqlite", backend, worker=worker)


def verifier(backend: Backend, tmp: Path) -> VerifierStore:
    return open_verifier_store(tmp / "verifier.sqlite", backend)


def env(device: str, seq: int, type_: str = "metrics", **body: Any) -> Envelope:
    return Envelope(seq=seq, ts=float(seq), device=device, type=type_, body=body)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(0..n-1)`` on n threads released at once; their results (or exceptions)."""
    gate = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # the test looks at which ones raised
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def record(device: str = "lock-1", key: bytes = b"k" * 32) -> DeviceRecord:
    return DeviceRecord(device=device, key_id=key, spki=b"spki", endorsement="x509",
                        issuer="CN=maker", enrolled_at=1.0, last_bootcount=None)


# --- the fleet store ---------------------------------------------------------------------------


def test_redelivered_report_stored_once_whichever_worker_gets_it(
        store_backend: Backend, tmp_path: Path) -> None:
    """Attack/fault: QoS 1 redelivery (a broker restart, a worker killed before its PUBACK) hands
    the same report to several workers at once; it is stored once."""
    workers = [fleet(store_backend, tmp_path, f"w{i}") for i in range(4)]
    try:
        results = race(4, lambda i: [workers[i].record(env("lock-1", s), 10.0)
                                     for s in range(1, 31)])
        assert not any(isinstance(r, Exception) for r in results), results
        for s in range(30):  # each seq stored by exactly one worker
            assert sum(r[s] for r in results) == 1
        assert [m[0] for m in workers[0].messages("lock-1")] == list(range(1, 31))
        assert workers[1].gaps("lock-1").unexplained == ()
        assert workers[2].record(env("lock-1", 7), 11.0) is False
    finally:
        for w in workers:
            w.close()


def test_evidence_appraised_once_across_workers(store_backend: Backend, tmp_path: Path) -> None:
    """Attack: evidence redelivered to every worker must not be appraised (and its nonce
    spent, its EAR published) more than once."""
    workers = [fleet(store_backend, tmp_path, f"w{i}") for i in range(4)]
    try:
        won = race(4, lambda i: [workers[i].claim_appraisal("lock-1", s, 5.0)
                                 for s in range(1, 11)])
        assert [sum(w[s] for w in won) for s in range(10)] == [1] * 10
        workers[0].finish_appraisal("lock-1", 3, "affirming", b"ear")
        rows = workers[1].appraisals("lock-1")
        assert [(r[1], r[2]) for r in rows][:3] == [(1, "pending"), (2, "pending"),
                                                     (3, "affirming")]
    finally:
        for w in workers:
            w.close()


def test_due_challenge_claimed_by_one_worker(store_backend: Backend, tmp_path: Path) -> None:
    workers = [fleet(store_backend, tmp_path, f"w{i}") for i in range(3)]
    try:
        for d in range(20):
            workers[0].seen(f"lock-{d:02d}", 1.0, "online")
            workers[0].schedule_challenge(f"lock-{d:02d}", 5.0)
        workers[0].seen("lock-off", 1.0, "offline")
        workers[0].schedule_challenge("lock-off", 5.0)
        claimed = race(3, lambda i: workers[i].claim_due_challenges(10.0, 3600.0))
        flat = [d for c in claimed for d in c]
        assert sorted(flat) == [f"lock-{d:02d}" for d in range(20)]  # each once, none offline
        assert workers[1].claim_due_challenges(11.0, 3600.0) == []  # next slot is an hour away
        assert workers[2].claim_due_challenges(3611.0, 3600.0) != []
    finally:
        for w in workers:
            w.close()


def test_due_challenges_claimed_at_most_limit_longest_due_first(store_backend: Backend,
                                                               tmp_path: Path) -> None:
    """The thundering herd: a worker claims at most its rate's worth per tick; the rest stay
    due (none dropped) and the longest due go first."""
    w = fleet(store_backend, tmp_path)
    try:
        for d in range(10):
            w.seen(f"lock-{d}", 1.0, "online")
            w.schedule_challenge(f"lock-{d}", 9.0 - d)  # lock-9 has been due the longest
        assert sorted(w.claim_due_challenges(10.0, 3600.0, limit=3)) == \
            ["lock-7", "lock-8", "lock-9"]
        assert w.claim_due_challenges(10.0, 3600.0, limit=0) == []
        rest = w.claim_due_challenges(10.0, 3600.0, limit=None)
        assert sorted(rest) == [f"lock-{d}" for d in range(7)]
    finally:
        w.close()


def test_command_seqs_unique_across_workers(store_backend: Backend, tmp_path: Path) -> None:
    """Attack surface: two workers giving two commands the same seq would let the device
    refuse one as a replay (or accept a replay); the database hands out each seq once."""
    workers = [fleet(store_backend, tmp_path, f"w{i}") for i in range(3)]
    try:
        seqs = race(3, lambda i: [workers[i].next_command_seq("lock-1") for _ in range(10)])
        flat = sorted(s for batch in seqs for s in batch)
        assert flat == list(range(1, 31))
    finally:
        for w in workers:
            w.close()


def test_contiguous_seq_counts_drops_and_never_moves_back(
        store_backend: Backend, tmp_path: Path) -> None:
    a, b = fleet(store_backend, tmp_path, "a"), fleet(store_backend, tmp_path, "b")
    try:
        for s in (1, 2, 3, 6, 7):
            a.record(env("lock-1", s), 1.0)
        assert b.contiguous("lock-1") == 3
        b.record_drops("lock-1", [(4, 5)], reported_seq=8)
        b.record_drops("lock-1", [(4, 5)], reported_seq=8)  # the drop report redelivered
        assert a.contiguous("lock-1") == 7
        assert b.contiguous("lock-1") == 7
        g = a.gaps("lock-1")
        assert g.explained == ((4, 5),) and g.unexplained == () and g.highest == 7
        assert a.highest("lock-1") == 7 and a.highest("nobody") == 0
    finally:
        a.close()
        b.close()


def test_operator_view_reads_the_same_on_both_stores(store_backend: Backend,
                                                     tmp_path: Path) -> None:
    st = fleet(store_backend, tmp_path, "w0")
    try:
        st.seen("lock-1", 5.0, "online")
        st.record(env("lock-1", 1, "agent.started", version="1.0"), 6.0)
        st.record(env("lock-1", 2, "metrics", cpu=3), 7.0)
        st.record(env("lock-1", 4, "model.rejected", why="digest"), 8.0)
        st.record(env("lock-2", 1, "metrics", cpu=1), 9.0)
        st.claim_appraisal("lock-1", 9, 8.5)
        st.finish_appraisal("lock-1", 9, "contraindicated", None)
        st.claim_appraisal("lock-1", 11, 8.6)  # still pending: not the latest finished
        rows = {r.name: r for r in fleet_view.devices(st)}
        assert rows["lock-1"].state == "online" and rows["lock-1"].attestation == \
            "contraindicated" and rows["lock-1"].unexplained == 1
        assert rows["lock-2"].state == "unknown" and rows["lock-2"].attestation is None
        assert [r.name for r in fleet_view.devices(st, "contraindicated")] == ["lock-1"]
        d = fleet_view.show(st, "lock-1")
        assert d is not None and d.identity == {"agent.version": "1.0"}
        assert [m.seq for m in d.reports] == [2]
        assert [m.type for m in d.events] == ["model.rejected", "agent.started"]
        assert [a.seq for a in d.attestations] == [11, 9]
        evs = fleet_view.events(st)
        assert [(m.device, m.type) for m in evs] == [("lock-1", "agent.started"),
                                                     ("lock-1", "model.rejected")]
        assert fleet_view.events(st, after=evs[0].id, types=("model.rejected",))[0].seq == 4
        assert [m.seq for m in fleet_view.events(st, limit=1, newest=True)] == [4]
        assert st.last_rowid() >= evs[-1].id
        assert st.status("lock-1") == "online" and st.devices() == ["lock-1", "lock-2"]
        assert st.device_rows()[0][:2] == ("lock-1", "online")
    finally:
        st.close()


# --- the verifier store ------------------------------------------------------------------------


def test_nonce_consumed_once_by_racing_workers(store_backend: Backend, tmp_path: Path) -> None:
    """Attack: the same evidence (one nonce) sent to several workers at once, hoping two accept
    it; two connections race on the conditional UPDATE and exactly one wins."""
    stores = [verifier(store_backend, tmp_path) for _ in range(2)]
    try:
        for n in range(8):
            nonce = bytes([n]) * 32
            stores[0].put_session(Session(nonce, "lock-1", 1.0, 100.0))

            def spend(i: int, nonce: bytes = nonce) -> None:
                stores[i].record_appraisal(device=None, nonce=nonce, now=2.0, status=2,
                                           evidence_sha256=b"h" * 32, ear=b"ear",
                                           bootcount=None)

            out = race(2, spend)
            assert sum(r is None for r in out) == 1, out
            assert sum(isinstance(r, ReplayError) for r in out) == 1, out
            got = stores[1].session(nonce)
            assert got is not None and got.used_at == 2.0
    finally:
        for st in stores:
            st.close()


def test_enrollment_rules(store_backend: Backend, tmp_path: Path) -> None:
    st = verifier(store_backend, tmp_path)
    try:
        assert st.put_device(record()) is True
        assert st.put_device(record()) is False  # the same key again
        with pytest.raises(UnknownDeviceError, match="already enrolled"):
            st.put_device(record(key=b"x" * 32))  # attack: a second key for an enrolled name
        with pytest.raises(UnknownDeviceError, match="another device name"):
            st.put_device(record("lock-2"))  # attack: one key enrolled under two names
        assert st.put_device(record(key=b"x" * 32), replace=True) is True
        got = st.device("lock-1")
        assert got is not None and got.key_id == b"x" * 32
        assert st.device_by_key(b"x" * 32) == got and st.device_by_key(b"k" * 32) is None
        assert st.device("nobody") is None
    finally:
        st.close()


def test_appraisal_commit_raises_bootcount_pins_board_and_keeps_history(
        store_backend: Backend, tmp_path: Path) -> None:
    st = verifier(store_backend, tmp_path)
    try:
        st.put_device(record())
        st.put_session(Session(b"n" * 32, "lock-1", 1.0, 100.0))
        st.record_appraisal(device="lock-1", nonce=b"n" * 32, now=2.0, status=2,
                            evidence_sha256=b"h" * 32, ear=b"ear1", bootcount=5,
                            board="pi4", ueid=b"u1")
        st.record_appraisal(device="lock-1", nonce=None, now=2.5, status=2,
                            evidence_sha256=b"h" * 32, ear=b"ear1", bootcount=5,
                            lock_bootcounts={"mcu": 7})
        st.record_appraisal(device="lock-1", nonce=None, now=3.0, status=96,
                            evidence_sha256=b"h" * 32, ear=b"ear2", bootcount=3,
                            board="pi5", ueid=b"u2",
                            lock_bootcounts={"mcu": 2, "mcu2": 1})  # attack: rollback
        assert (st.lock_bootcount("lock-1", "mcu"), st.lock_bootcount("lock-1", "mcu2"),
                st.lock_bootcount("lock-2", "mcu")) == (7, 1, None)
        d = st.device("lock-1")
        assert d is not None and (d.last_bootcount, d.board, d.ueid) == (5, "pi4", b"u1")
        assert st.history("lock-1") == [(3.0, 96, b"ear2"), (2.5, 2, b"ear1"), (2.0, 2, b"ear1")]
        with pytest.raises(ReplayError):
            st.record_appraisal(device="lock-1", nonce=b"n" * 32, now=4.0, status=2,
                                evidence_sha256=b"h" * 32, ear=b"ear3", bootcount=6)
        assert len(st.history("lock-1")) == 3  # the refused commit left nothing behind
        d = st.device("lock-1")
        assert d is not None and d.last_bootcount == 5
    finally:
        st.close()


def test_expired_sessions_are_forgotten(store_backend: Backend, tmp_path: Path) -> None:
    st = verifier(store_backend, tmp_path)
    try:
        st.put_session(Session(b"a" * 32, "lock-1", 1.0, 60.0))
        st.put_session(Session(b"b" * 32, "lock-1", 100_000.0, 100_060.0))
        assert st.session(b"a" * 32) is None  # a replay of its evidence: "never issued"
        s = st.session(b"b" * 32)
        assert s is not None and (s.nonce, s.device, s.used_at) == (b"b" * 32, "lock-1", None)
    finally:
        st.close()
