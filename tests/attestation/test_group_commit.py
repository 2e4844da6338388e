"""Group commit: one commit per store for many messages, and nothing answered before it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from edgeward.agent.config import MqttSettings
from edgeward.agent.envelope import Envelope, encode, topic
from edgeward.agent.events import Incoming
from edgeward.attestation.nonces import Session
from edgeward.attestation.service.config import ServiceConfig
from edgeward.attestation.service.fleet_store import FleetStore
from edgeward.attestation.service.service import VerifierService
from edgeward.attestation.service.verifier_store import Store
from edgeward.core.errors import DeviceError, ReplayError


class Recorder:
    """A transport without a broker that notes, for each answer, what another reader sees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, str, int]] = []

    def _committed(self) -> int:
        with sqlite3.connect(self.path) as db:  # another connection: committed rows only
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def ack(self, msg: Incoming) -> None:
        self.calls.append(("ack", msg.topic, self._committed()))

    def publish(self, t: str, payload: bytes, **kw: Any) -> None:
        self.calls.append(("publish", t, self._committed()))


class Appraiser:
    def challenge(self, device: str, now: float) -> bytes:
        return b"n" * 16

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        return b"ear:" + evidence, "affirming"


def _service(tmp_path: Path) -> tuple[VerifierService, Recorder]:
    cfg = ServiceConfig(source=tmp_path / "v.toml", worker="w0", store=tmp_path / "fleet.sqlite",
                        mqtt=MqttSettings(host="127.0.0.1", port=1, client_id="w0"))
    rec = Recorder(tmp_path / "fleet.sqlite")
    return VerifierService(cfg, appraiser=Appraiser(), transport=rec), rec


def _msg(device: str, seq: int, type_: str = "report", body: dict | None = None) -> Incoming:
    kind = "attest/evidence" if type_ == "attest.evidence" else "report"
    payload = encode(Envelope(seq=seq, ts=1.0, device=device, type=type_, body=body or {}))
    return Incoming(topic(device, kind), payload, False, mid=seq, qos=1)


def test_every_ack_and_ear_of_a_group_is_sent_after_its_commit(tmp_path: Path) -> None:
    svc, rec = _service(tmp_path)
    events: list[object] = [_msg("lock-1", i) for i in range(1, 6)]
    events.append(_msg("lock-2", 1, "attest.evidence", {"eat": b"token"}))
    svc.handle_group(events)
    assert [c[0] for c in rec.calls].count("ack") == 6
    assert ("publish", topic("lock-2", "attest/result"), 6) in rec.calls
    assert all(seen == 6 for _, _, seen in rec.calls)  # every answer saw all six stored
    svc.store.close()


def test_attack_worker_cannot_commit_so_nothing_is_acknowledged(tmp_path: Path) -> None:
    """Another writer holds the database: the group fails, no PUBACK, the broker resends."""
    svc, rec = _service(tmp_path)
    assert isinstance(svc.store, FleetStore)  # the SQLite store, whose lock is held below
    svc.store._db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "fleet.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        svc.handle_group([_msg("lock-1", 1), _msg("lock-1", 2)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert rec.calls == [] and svc.counters.get("errors") == 1
    svc.handle_group([_msg("lock-1", 1), _msg("lock-1", 2)])  # redelivered: stored, acked
    assert [c[0] for c in rec.calls] == ["ack", "ack"] and svc.store.highest("lock-1") == 2
    svc.store.close()


def test_gather_takes_what_is_queued_within_the_delay_and_stops_at_a_stop(tmp_path: Path) -> None:
    svc, _ = _service(tmp_path)
    for i in range(2, 5):
        svc.queue.put(_msg("lock-1", i))
    svc.queue.put(None)  # a stop request
    t0 = time.monotonic()
    got = svc._gather(_msg("lock-1", 1))
    assert len(got) == 4 and time.monotonic() - t0 < 1.0
    assert svc.queue.get_nowait() is None  # left for the loop to see
    svc.store.close()


def _session(nonce: bytes) -> Session:
    return Session(nonce, "lock-1", 0.0, 1e12)


def _appraisal(store: Store, nonce: bytes, status: int = 2) -> None:
    store.record_appraisal(device="lock-1", nonce=nonce, now=1.0, status=status,
                           evidence_sha256=b"h" * 32, ear=b"ear", bootcount=None)


def test_verifier_store_group_is_one_commit_and_a_replay_undoes_only_itself(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "v.sqlite")
    for n in (b"a" * 16, b"b" * 16):
        store.put_session(_session(n))
    _appraisal(store, b"a" * 16)  # consumed before the group

    def results() -> int:
        with sqlite3.connect(tmp_path / "v.sqlite") as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    with store.group():
        _appraisal(store, b"b" * 16)
        with pytest.raises(ReplayError):
            _appraisal(store, b"a" * 16)  # the replay: its own savepoint is undone
        assert results() == 1  # nothing of the group is visible (durable) yet
    assert results() == 2
    with pytest.raises(RuntimeError), store.group():
        store.put_session(_session(b"c" * 16))
        raise RuntimeError("crash before the commit")
    assert store.session(b"c" * 16) is None
    store.close()


def test_fleet_store_group_commits_once_or_not_at_all(tmp_path: Path) -> None:
    fs = FleetStore(tmp_path / "f.sqlite")
    env = Envelope(seq=1, ts=1.0, device="lock-1", type="report", body={})
    with pytest.raises(RuntimeError), fs.group():
        fs.record(env, 1.0)
        raise RuntimeError("crash before the commit")
    assert fs.highest("lock-1") == 0
    with fs.group():
        assert fs.record(env, 1.0)
    assert fs.highest("lock-1") == 1
    fs.close()
    with pytest.raises(DeviceError):  # a closed store: the group cannot start
        with fs.group():
            pass
