"""The fleet store: reports, events, drops, appraisals and per-device schedules, in SQLite.

Several verifier workers may share one file (WAL mode, ``busy_timeout``); every decision that two
workers could race on is one conditional UPDATE whose row count says who won (claiming a
challenge slot, taking the next command seq). Messages are keyed by ``(device, seq)``, so a
message delivered twice (QoS 1 is at-least-once; a broker restart resends) is stored once.
:mod:`.fleet_store_pg` is the same contract in PostgreSQL, for many hosts (DESIGN.md, "Real parts").

I/O: the database file only. Gap analysis is the pure :mod:`.gaps`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeward.agent.envelope import Envelope
from edgeward.core import cbor
from edgeward.core.errors import DeviceError
from edgeward.core.persist import private_file

from .gaps import GapReport, Range, analyse, contiguous
from .migrate import sqlite_migrate

logger = logging.getLogger(__name__)

# The schema is migrations/fleet/sqlite/NNNN_*.sql, applied when the file is opened (.migrate).


def _legacy(db: sqlite3.Connection) -> None:
    """A store made before versioned migrations: the column its devices table lacks."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(devices)")}
    if cols and "contig" not in cols:
        db.execute("ALTER TABLE devices ADD COLUMN contig INTEGER NOT NULL DEFAULT 0")


class FleetStore:
    """SQLite-backed fleet store (:class:`.store.FleetStoreAPI`)."""

    def __init__(self, path: Path, *, worker: str = "w0") -> None:
        self.path = Path(path)
        self.worker = worker
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)  # and so its -wal and -shm files
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            sqlite_migrate(self._db, "fleet", str(self.path), legacy=_legacy)
        except sqlite3.Error as e:
            raise DeviceError(f"cannot open fleet store {self.path}: {e}") from e

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: every statement inside joins one transaction, made durable by one COMMIT
        (one fsync with ``synchronous=FULL``) when the block ends, or rolled back if it raises.
        Outside a group each statement commits on its own. Nothing inside is durable before the
        block ends: acknowledge what it stored only after it. Not nested."""
        self._tx("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise
        try:
            self._tx("COMMIT")
        except DeviceError:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise

    def _tx(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.Error as e:
                raise DeviceError(f"fleet store {self.path}: {e}") from e

    def record(self, env: Envelope, now: float) -> bool:
        """Store one envelope; False if ``(device, seq)`` was already there (a duplicate)."""
        cur = self._tx(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (env.device, env.seq, env.type, env.ts, now, self.worker, cbor.dumps(env.body)),
        )
        new = cur.rowcount == 1
        if new:
            self.seen(env.device, now)
        return new

    def record_drops(self, device: str, ranges: list[Range], reported_seq: int) -> None:
        for a, b in ranges:
            self._tx("INSERT OR IGNORE INTO drops VALUES (?, ?, ?, ?)",
                     (device, a, b, reported_seq))

    def seen(self, device: str, now: float, status: str | None = None) -> None:
        self._tx("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
        if status is None:
            self._tx("UPDATE devices SET last_seen=? WHERE device=?", (now, device))
        else:
            self._tx("UPDATE devices SET last_seen=?, status=? WHERE device=?",
                     (now, status, device))

    def gaps(self, device: str) -> GapReport:
        seqs = [r[0] for r in self._tx(
            "SELECT seq FROM messages WHERE device=? ORDER BY seq", (device,)).fetchall()]
        drops = [(r[0], r[1]) for r in self._tx(
            "SELECT first, last FROM drops WHERE device=?", (device,)).fetchall()]
        return analyse(seqs, drops)

    def contiguous(self, device: str, *, window: int = 100_000) -> int:
        """Advance and return the device's contiguous seq (what the backend acknowledges).

        Monotonic in the store (``MAX``), so workers sharing it never move it back; each call
        reads at most ``window`` messages above it.
        """
        row = self._tx("SELECT contig FROM devices WHERE device=?", (device,)).fetchone()
        start = int(row[0]) if row else 0
        seqs = [r[0] for r in self._tx(
            "SELECT seq FROM messages WHERE device=? AND seq>? ORDER BY seq LIMIT ?",
            (device, start, window)).fetchall()]
        drops = [(r[0], r[1]) for r in self._tx(
            "SELECT first, last FROM drops WHERE device=? AND last>?", (device, start)).fetchall()]
        n = contiguous(start, seqs, drops)
        if n > start:
            self._tx("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
            self._tx("UPDATE devices SET contig=MAX(contig, ?) WHERE device=?", (n, device))
        return n

    def highest(self, device: str) -> int:
        row = self._tx("SELECT MAX(seq) FROM messages WHERE device=?", (device,)).fetchone()
        return int(row[0] or 0)

    def messages(self, device: str, type_: str | None = None) -> list[tuple[int, str, Any]]:
        sql = "SELECT seq, type, body FROM messages WHERE device=?"
        args: tuple[Any, ...] = (device,)
        if type_ is not None:
            sql += " AND type=?"
            args += (type_,)
        rows = self._tx(sql + " ORDER BY seq", args).fetchall()
        return [(r[0], r[1], cbor.loads(r[2])) for r in rows]

    def devices(self) -> list[str]:
        return [r[0] for r in self._tx("SELECT device FROM devices ORDER BY device").fetchall()]

    def status(self, device: str) -> str | None:
        row = self._tx("SELECT status FROM devices WHERE device=?", (device,)).fetchone()
        return None if row is None else row[0]

    # --- races between workers are settled by row counts ------------------------------------

    def schedule_challenge(self, device: str, when: float) -> None:
        self._tx("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
        self._tx("UPDATE devices SET next_challenge=? WHERE device=?", (when, device))

    def claim_due_challenges(self, now: float, interval: float,
                             limit: int | None = None) -> list[str]:
        """Devices whose challenge is due, each claimed by exactly one worker; at most
        ``limit``, longest due first (the others stay due for the next call)."""
        due = [r[0] for r in self._tx(
            "SELECT device FROM devices WHERE status='online' AND next_challenge IS NOT NULL "
            "AND next_challenge<=? ORDER BY next_challenge LIMIT ?",
            (now, -1 if limit is None else limit)).fetchall()]
        won = []
        for d in due:
            cur = self._tx(
                "UPDATE devices SET next_challenge=? WHERE device=? AND next_challenge<=?",
                (now + interval, d, now))
            if cur.rowcount == 1:
                won.append(d)
        return won

    def next_command_seq(self, device: str) -> int:
        self._tx("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE devices SET cmd_seq=cmd_seq+1 WHERE device=?", (device,))
                seq = self._db.execute("SELECT cmd_seq FROM devices WHERE device=?",
                                       (device,)).fetchone()[0]
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._db.execute("ROLLBACK")
                raise DeviceError(f"fleet store {self.path}: {e}") from e
        return int(seq)

    def claim_appraisal(self, device: str, evidence_seq: int, now: float) -> bool:
        """Claim one evidence for appraisal; False if it was already claimed (a redelivery)."""
        cur = self._tx("INSERT OR IGNORE INTO appraisals VALUES (?, ?, 'pending', ?, ?, NULL)",
                       (device, evidence_seq, self.worker, now))
        return cur.rowcount == 1

    def finish_appraisal(self, device: str, evidence_seq: int, status: str,
                         ear: bytes | None) -> None:
        self._tx("UPDATE appraisals SET status=?, ear=? WHERE device=? AND evidence_seq=?",
                 (status, ear, device, evidence_seq))

    def appraisals(self, device: str | None = None) -> list[tuple[str, int, str, str]]:
        sql = "SELECT device, evidence_seq, status, worker FROM appraisals"
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device=?"
            args = (device,)
        return [tuple(r) for r in self._tx(sql + " ORDER BY device, evidence_seq", args)]

    # --- reads for the operator's view (edgeward.attestation.service.fleet_view) -------------

    def device_rows(self) -> list[tuple[str, str | None, float | None, int]]:
        """``(device, status, last_seen, cmd_seq)`` of every known device, by name."""
        return [tuple(r) for r in self._tx(
            "SELECT device, status, last_seen, cmd_seq FROM devices ORDER BY device")]

    def latest_appraisals(self) -> dict[str, tuple[str, float]]:
        """Each device's latest finished appraisal: ``device -> (status, at)``."""
        rows = self._tx(
            "SELECT device, status, at FROM appraisals AS a WHERE status != 'pending' AND "
            "evidence_seq = (SELECT MAX(evidence_seq) FROM appraisals AS b WHERE "
            "b.device = a.device AND b.status != 'pending')").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def appraisal_history(self, device: str, limit: int) -> list[tuple[int, str, float,
                                                                          bytes | None]]:
        """``(evidence_seq, status, at, ear)``, newest first."""
        return [tuple(r) for r in self._tx(
            "SELECT evidence_seq, status, at, ear FROM appraisals WHERE device=? "
            "ORDER BY evidence_seq DESC LIMIT ?", (device, limit))]

    def recent(self, device: str, types: tuple[str, ...], *, exclude: bool,
               limit: int) -> list[tuple[int, int, str, float, float, Any]]:
        """A device's newest messages of (or, ``exclude``: not of) ``types``, newest first:
        ``(rowid, seq, type, ts, received, body)``."""
        marks = ",".join("?" * len(types)) or "''"
        op = "NOT IN" if exclude else "IN"
        sql = "SELECT rowid, seq, type, ts, received, body FROM messages WHERE device=? AND "
        sql += f"type {op} ({marks}) ORDER BY seq DESC LIMIT ?"  # only "?" marks formatted in
        rows = self._tx(sql, (device, *types, limit)).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], cbor.loads(r[5])) for r in rows]

    def events_after(self, after: int, *, since: float | None, types: tuple[str, ...],
                     skip: tuple[str, ...], device: str | None, limit: int,
                     newest: bool = False) -> list[tuple[int, str, int, str, float, float, Any]]:
        """Messages stored after rowid ``after`` (oldest first; ``newest``: the last ``limit``),
        for ``fleet events``:
        ``(rowid, device, seq, type, ts, received, body)``."""
        sql = "SELECT rowid, device, seq, type, ts, received, body FROM messages WHERE rowid>?"
        args: list[Any] = [after]
        if since is not None:
            sql += " AND received>=?"
            args.append(since)
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            args += types
        if skip:
            sql += f" AND type NOT IN ({','.join('?' * len(skip))})"
            args += skip
        if device is not None:
            sql += " AND device=?"
            args.append(device)
        order = " ORDER BY rowid DESC LIMIT ?" if newest else " ORDER BY rowid LIMIT ?"
        rows = self._tx(sql + order, (*args, limit)).fetchall()
        if newest:  # the last ``limit`` of them, still oldest first
            rows.reverse()
        return [(r[0], r[1], r[2], r[3], r[4], r[5], cbor.loads(r[6])) for r in rows]

    def last_rowid(self) -> int:
        return int(self._tx("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0])

    def close(self) -> None:
        self._db.close()
