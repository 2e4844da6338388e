"""The fleet store in PostgreSQL: the same contract as :class:`.fleet_store.FleetStore` (SQLite),
for many workers on many hosts sharing one database.

Tables ``fleet_messages``, ``fleet_drops``, ``fleet_devices``, ``fleet_appraisals``
(migrations/fleet/postgresql). Exactly-once effects are the database's: a message is stored once
per ``(device, seq)`` (``ON CONFLICT DO NOTHING``, whatever the redeliveries and whichever worker
they reach); an evidence is claimed for appraisal once; a due challenge is claimed by one worker
(``FOR UPDATE SKIP LOCKED``: workers take disjoint sets without waiting on each other); the
contiguous seq only moves up (``GREATEST``). Gap analysis reads what every worker stored, so
consecutive messages of one device landing on different workers are one sequence.

I/O: the database of ``[store] url`` only (through :class:`.pg.PgDatabase`).
"""

from __future__ import annotations

import logging
from typing import Any

from edgeward.agent.envelope import Envelope
from edgeward.attestation.config import PostgresSettings
from edgeward.core import cbor

from .gaps import GapReport, Range, analyse, contiguous
from .pg import PgDatabase

logger = logging.getLogger(__name__)


class PgFleetStore:
    """PostgreSQL-backed fleet store (:class:`.store.FleetStoreAPI`). Thread-safe (a pool)."""

    def __init__(self, settings: PostgresSettings, *, worker: str = "w0") -> None:
        self.db = PgDatabase(settings, "fleet")
        self.path = self.db.where
        self.worker = worker

    def record(self, env: Envelope, now: float) -> bool:
        """Store one envelope; False if ``(device, seq)`` was already there (a duplicate)."""
        cur = self.db.execute(
            "WITH ins AS (INSERT INTO fleet_messages (device, seq, type, ts, received, worker, "
            "body) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING device) "
            "INSERT INTO fleet_devices (device, last_seen) SELECT device, %s FROM ins "
            "ON CONFLICT (device) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            (env.device, env.seq, env.type, env.ts, now, self.worker, cbor.dumps(env.body), now))
        return bool(cur.rowcount == 1)

    def record_drops(self, device: str, ranges: list[Range], reported_seq: int) -> None:
        if ranges:
            with self.db.connection() as conn, conn.cursor() as cur:
                cur.executemany("INSERT INTO fleet_drops VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT DO NOTHING",
                                [(device, a, b, reported_seq) for a, b in ranges])

    def seen(self, device: str, now: float, status: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO fleet_devices (device, last_seen, status) VALUES (%s, %s, %s) "
            "ON CONFLICT (device) DO UPDATE SET last_seen = EXCLUDED.last_seen, "
            "status = COALESCE(EXCLUDED.status, fleet_devices.status)", (device, now, status))

    def gaps(self, device: str) -> GapReport:
        seqs = [r[0] for r in self.db.execute(
            "SELECT seq FROM fleet_messages WHERE device=%s ORDER BY seq", (device,))]
        drops = [(r[0], r[1]) for r in self.db.execute(
            "SELECT first, last FROM fleet_drops WHERE device=%s", (device,))]
        return analyse(seqs, drops)

    def contiguous(self, device: str, *, window: int = 100_000) -> int:
        """As :meth:`.fleet_store.FleetStore.contiguous`; only ever moves up (``GREATEST``)."""
        row = self.db.execute("SELECT contig FROM fleet_devices WHERE device=%s",
                              (device,)).fetchone()
        start = int(row[0]) if row else 0
        seqs = [r[0] for r in self.db.execute(
            "SELECT seq FROM fleet_messages WHERE device=%s AND seq>%s ORDER BY seq LIMIT %s",
            (device, start, window))]
        drops = [(r[0], r[1]) for r in self.db.execute(
            "SELECT first, last FROM fleet_drops WHERE device=%s AND last>%s", (device, start))]
        n = contiguous(start, seqs, drops)
        if n > start:
            self.db.execute(
                "INSERT INTO fleet_devices (device, contig) VALUES (%s, %s) ON CONFLICT (device) "
                "DO UPDATE SET contig = GREATEST(fleet_devices.contig, EXCLUDED.contig)",
                (device, n))
        return n

    def highest(self, device: str) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM fleet_messages WHERE device=%s",
                              (device,)).fetchone()
        return int(row[0] or 0) if row else 0

    def messages(self, device: str, type_: str | None = None) -> list[tuple[int, str, Any]]:
        sql = "SELECT seq, type, body FROM fleet_messages WHERE device=%s"
        args: tuple[Any, ...] = (device,)
        if type_ is not None:
            sql += " AND type=%s"
            args += (type_,)
        rows = self.db.execute(sql + " ORDER BY seq", args)
        return [(r[0], r[1], cbor.loads(bytes(r[2]))) for r in rows]

    def devices(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT device FROM fleet_devices ORDER BY device")]

    def status(self, device: str) -> str | None:
        row = self.db.execute("SELECT status FROM fleet_devices WHERE device=%s",
                              (device,)).fetchone()
        return None if row is None else row[0]

    # --- races between workers are settled in the database -----------------------------------

    def schedule_challenge(self, device: str, when: float) -> None:
        self.db.execute(
            "INSERT INTO fleet_devices (device, next_challenge) VALUES (%s, %s) "
            "ON CONFLICT (device) DO UPDATE SET next_challenge = EXCLUDED.next_challenge",
            (device, when))

    def claim_due_challenges(self, now: float, interval: float,
                             limit: int | None = None) -> list[str]:
        """Devices whose challenge is due, each claimed by exactly one worker; at most
        ``limit``, longest due first (the others stay due for the next call)."""
        rows = self.db.execute(
            "UPDATE fleet_devices SET next_challenge = %s WHERE device IN (SELECT device FROM "
            "fleet_devices WHERE status = 'online' AND next_challenge <= %s "
            "ORDER BY next_challenge, device LIMIT %s "
            "FOR UPDATE SKIP LOCKED) AND next_challenge <= %s RETURNING device",
            (now + interval, now, limit, now))
        return sorted(r[0] for r in rows)

    def next_command_seq(self, device: str) -> int:
        row = self.db.execute(
            "INSERT INTO fleet_devices (device, cmd_seq) VALUES (%s, 1) ON CONFLICT (device) "
            "DO UPDATE SET cmd_seq = fleet_devices.cmd_seq + 1 RETURNING cmd_seq",
            (device,)).fetchone()
        assert row is not None  # RETURNING of an upsert always has its row
        return int(row[0])

    def claim_appraisal(self, device: str, evidence_seq: int, now: float) -> bool:
        """Claim one evidence for appraisal; False if it was already claimed (a redelivery)."""
        cur = self.db.execute(
            "INSERT INTO fleet_appraisals VALUES (%s, %s, 'pending', %s, %s, NULL) "
            "ON CONFLICT DO NOTHING", (device, evidence_seq, self.worker, now))
        return bool(cur.rowcount == 1)

    def finish_appraisal(self, device: str, evidence_seq: int, status: str,
                         ear: bytes | None) -> None:
        self.db.execute("UPDATE fleet_appraisals SET status=%s, ear=%s WHERE device=%s AND "
                        "evidence_seq=%s", (status, ear, device, evidence_seq))

    def appraisals(self, device: str | None = None) -> list[tuple[str, int, str, str]]:
        sql = "SELECT device, evidence_seq, status, worker FROM fleet_appraisals"
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device=%s"
            args = (device,)
        return [tuple(r) for r in self.db.execute(sql + " ORDER BY device, evidence_seq", args)]

    # --- reads for the operator's view (edgeward.attestation.service.fleet_view) -------------

    def device_rows(self) -> list[tuple[str, str | None, float | None, int]]:
        return [tuple(r) for r in self.db.execute(
            "SELECT device, status, last_seen, cmd_seq FROM fleet_devices ORDER BY device")]

    def latest_appraisals(self) -> dict[str, tuple[str, float]]:
        rows = self.db.execute(
            "SELECT DISTINCT ON (device) device, status, at FROM fleet_appraisals "
            "WHERE status != 'pending' ORDER BY device, evidence_seq DESC")
        return {r[0]: (r[1], r[2]) for r in rows}

    def appraisal_history(self, device: str, limit: int) -> list[tuple[int, str, float,
                                                                          bytes | None]]:
        return [(r[0], r[1], r[2], None if r[3] is None else bytes(r[3]))
                for r in self.db.execute(
                    "SELECT evidence_seq, status, at, ear FROM fleet_appraisals WHERE device=%s "
                    "ORDER BY evidence_seq DESC LIMIT %s", (device, limit))]

    def recent(self, device: str, types: tuple[str, ...], *, exclude: bool,
               limit: int) -> list[tuple[int, int, str, float, float, Any]]:
        rows = self.db.execute(
            "SELECT id, seq, type, ts, received, body FROM fleet_messages WHERE device=%s AND "
            "(type = ANY(%s)) != %s ORDER BY seq DESC LIMIT %s",
            (device, list(types), exclude, limit))
        return [(r[0], r[1], r[2], r[3], r[4], cbor.loads(bytes(r[5]))) for r in rows]

    # ``fleet events --follow`` continues after the last event it showed. An id is handed out at
    # insert but becomes visible at commit, so "id > last shown" would pass over a lower id that a
    # slower worker commits after a higher one was shown. The standard PostgreSQL answer (as in
    # outbox/CDC readers): each row records its inserting transaction (``xid``,
    # ``pg_current_xact_id()``); readers see only rows of transactions older than the oldest one
    # still open (``pg_snapshot_xmin(pg_current_snapshot())``: every such transaction has ended,
    # so nothing below that horizon can still appear) and walk them in ``(xid, id)`` order,
    # continuing after the ``(xid, id)`` of the last row shown. Each committed event is shown
    # once; a new one waits until every transaction that began writing before it has ended (a
    # session left idle in a transaction holds the follow back until it ends).
    def events_after(self, after: int, *, since: float | None, types: tuple[str, ...],
                     skip: tuple[str, ...], device: str | None, limit: int,
                     newest: bool = False) -> list[tuple[int, str, int, str, float, float, Any]]:
        """Settled messages after row ``after`` in ``(xid, id)`` order (see above)."""
        sql = ("SELECT id, device, seq, type, ts, received, body FROM fleet_messages "
               "WHERE xid < pg_snapshot_xmin(pg_current_snapshot())")
        args: list[Any] = []
        if after > 0:
            row = self.db.execute("SELECT xid::text FROM fleet_messages WHERE id = %s",
                                  (after,)).fetchone()
            if row is None:  # not a stored id: continue after it as a plain id
                sql += " AND id > %s"
                args.append(after)
            else:
                sql += " AND (xid, id) > (%s::xid8, %s)"
                args += [row[0], after]
        if since is not None:
            sql += " AND received >= %s"
            args.append(since)
        if types:
            sql += " AND type = ANY(%s)"
            args.append(list(types))
        if skip:
            sql += " AND NOT (type = ANY(%s))"
            args.append(list(skip))
        if device is not None:
            sql += " AND device = %s"
            args.append(device)
        sql += (" ORDER BY xid DESC, id DESC LIMIT %s" if newest
                else " ORDER BY xid, id LIMIT %s")
        rows = self.db.execute(sql, (*args, limit)).fetchall()
        if newest:
            rows.reverse()
        return [(r[0], r[1], r[2], r[3], r[4], r[5], cbor.loads(bytes(r[6]))) for r in rows]

    def last_rowid(self) -> int:
        """The last settled row in follow order (0 if none): a follow continues after it."""
        row = self.db.execute("SELECT id FROM fleet_messages WHERE xid < pg_snapshot_xmin("
                              "pg_current_snapshot()) ORDER BY xid DESC, id DESC LIMIT 1"
                              ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()
