"""The durable outbox: every report and event is written here before it is sent.

SQLite in WAL mode, one file per device. A message is assigned its ``seq`` and encoded as an
envelope inside the transaction that stores it. With end-to-end acknowledgement (the default) the
broker's PUBACK only marks it delivered (:meth:`Outbox.mark_delivered`); it is deleted when the
backend's signed ``ack`` covers it (:meth:`Outbox.ack_upto`). Without it, the PUBACK deletes it
(:meth:`Outbox.ack`). The states and rules are in the pure :mod:`.outbox_rules`. The sequence
counter lives in the same database, so ``seq`` is gap-free and never reused, across crashes,
SIGKILL and power loss.

Durability: ``synchronous=FULL``. In WAL mode ``NORMAL`` keeps the database consistent but may
lose the last committed transactions on power loss; here that would roll back the sequence
counter, so after a reboot the device would reuse ``seq`` values the backend already holds and
the backend would silently discard the new messages as duplicates. ``FULL`` fsyncs the WAL on each
commit; the agent loop pays that once per batch (group commit), not once per message.

Bound and eviction: the outbox is bounded in bytes of stored envelopes. When a new batch does not
fit, :func:`plan_eviction` (pure) drops the lowest priority first (metrics, then evidence, then
security events), oldest first within a priority, delivered-but-unacknowledged messages included.
Dropped messages keep their ``seq`` (the backend sees the gap) and are listed, in the same
transaction, in a ``dropped`` table. The loop calls :meth:`Outbox.report_drops` when it is
connected: that turns the list into one ``outbox.dropped`` security event naming how many of each
type were dropped and which ``seq`` ranges, so the backend can tell a reported drop from an
unexplained loss. (One report per connection turn, not one per eviction: during a long outage, per-
eviction reports would themselves fill the outbox.) A message evicted while paho still holds it in
flight may still arrive; the backend counts it as received. Messages the broker refused, that are
too large for it, or metrics that expired before they could be sent are listed the same way
(:meth:`Outbox.discard`), so that every ``seq`` is either stored at the backend or reported, and
the backend's contiguous acknowledgement can move past it.

I/O: this module's only I/O is the SQLite file. The eviction rule is a pure function.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError
from edgeward.core.persist import private_file

from .envelope import PRIORITIES, PRIORITY_SECURITY, encode_fields
from .outbox_rules import (
    MAX_RANGES_REPORTED,
    Candidate,
    NewMessage,
    OutboxStats,
    Stored,
    drop_report_body,
    plan_eviction,
    seq_ranges,
)

__all__ = ["DROP_EVENT_TYPE", "MAX_RANGES_REPORTED", "Candidate", "NewMessage", "Outbox",
           "OutboxStats", "Stored", "drop_report_body", "plan_eviction", "seq_ranges"]

logger = logging.getLogger(__name__)

DROP_EVENT_TYPE = "outbox.dropped"
DROP_EVENT_RESERVE = 2048  # bytes kept free for the drop report itself
REASON_FULL = "outbox full"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msg (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ts REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    delivered REAL  -- time of the broker's PUBACK; NULL while not delivered
);
CREATE TABLE IF NOT EXISTS dropped (seq INTEGER PRIMARY KEY, type TEXT NOT NULL,
    size INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT 'outbox full');
CREATE INDEX IF NOT EXISTS msg_evict ON msg (priority, seq);
"""


class Outbox:
    """The durable, bounded outbox of one device. Use from one thread (the agent loop)."""

    def __init__(
        self,
        path: Path,
        device: str,
        *,
        max_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 4 * DROP_EVENT_RESERVE:
            raise ValueError(f"outbox bound {max_bytes} is below {4 * DROP_EVENT_RESERVE} bytes")
        self.path = Path(path)
        self.device = device
        self.max_bytes = max_bytes
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)  # and so its -wal and -shm files
            # one owner at a time (the loop thread); it may be created on another thread
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DeviceError(f"outbox {self.path}: SQLite refused WAL mode ({mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            for k, v in (("next_seq", 1), ("dropped_total", 0), ("delivered_upto", 0)):
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (k, v))
            self.path.chmod(0o600)
        except sqlite3.Error as e:
            raise DeviceError(f"cannot open outbox {self.path}: {e}") from e
        self._dropped_by_type: dict[str, int] = {}
        self.evictions = 0  # puts that evicted messages (also counted when rolled back)
        self.skipped = 0  # messages the last pending() left out because of ``skip``
        self.has_drops = self.drops_pending() > 0

    def _migrate(self) -> None:
        """Add the columns of end-to-end acknowledgement to an outbox of an older agent."""
        for table, col, decl in (("msg", "delivered", "REAL"),
                                 ("dropped", "reason", "TEXT NOT NULL DEFAULT 'outbox full'")):
            cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if col not in cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")

    # --- writes ------------------------------------------------------------------------------

    def put(self, messages: Sequence[NewMessage], *,
            keep: list[Stored] | None = None) -> list[int]:
        """Store ``messages`` in one transaction (one fsync); return their seqs.

        Evicts older, lower-priority messages if the batch does not fit (counted in
        :attr:`evictions`), and then stores the drop report in the same transaction. Once the
        transaction is committed, the stored messages are appended to ``keep``, if given, as
        :meth:`pending` would return them (so a caller need not read them back).
        """
        if not messages:
            return []
        now = self._clock()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs, rows = self._put_locked(messages, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: write failed: {e}") from e
        if keep is not None:
            keep.extend(Stored(r[0], r[1], r[2], r[3], r[4], r[6]) for r in rows)
        return seqs

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT v FROM meta WHERE k='next_seq'").fetchone()
        return int(row[0])

    def _row(self, seq: int, m: NewMessage, now: float) -> tuple[Any, ...]:
        payload = encode_fields(seq, now, self.device, m.type, m.body)
        if len(payload) > self.max_bytes - DROP_EVENT_RESERVE:
            raise ValueError(f"message of {len(payload)} bytes cannot fit the outbox bound")
        return (seq, m.kind, m.type, m.priority, now, len(payload), payload)

    def _insert_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._db.executemany(
            "INSERT INTO msg (seq, kind, type, priority, ts, size, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _put_locked(self, messages: Sequence[NewMessage],
                    now: float) -> tuple[list[int], list[tuple[Any, ...]]]:
        first = self._next_seq()
        seqs = list(range(first, first + len(messages)))
        # one statement for the batch: far cheaper than one execute per message
        new_rows = [self._row(q, m, now) for q, m in zip(seqs, messages, strict=True)]
        self._insert_many(new_rows)
        seq = first + len(messages)
        total = self._bytes()
        if total > self.max_bytes - DROP_EVENT_RESERVE:
            need = total - (self.max_bytes - DROP_EVENT_RESERVE)
            rows = self._db.execute(
                "SELECT seq, priority, size, type FROM msg ORDER BY priority, seq"
            )
            dropped = plan_eviction((Candidate(*r) for r in rows), need)
            self.evictions += 1
            self._db.executemany("DELETE FROM msg WHERE seq=?", [(c.seq,) for c in dropped])
            self._list_dropped(dropped, REASON_FULL)
            logger.warning("outbox full: dropped %d messages to store %d new",
                           len(dropped), len(messages))
        self._db.execute("UPDATE meta SET v=? WHERE k='next_seq'", (seq,))
        return seqs, new_rows

    def _list_dropped(self, dropped: Sequence[Candidate], reason: str) -> None:
        self._db.executemany("INSERT OR IGNORE INTO dropped VALUES (?, ?, ?, ?)",
                             [(c.seq, c.type, c.size, reason) for c in dropped])
        self._db.execute("UPDATE meta SET v = v + ? WHERE k='dropped_total'", (len(dropped),))
        for c in dropped:
            self._dropped_by_type[c.type] = self._dropped_by_type.get(c.type, 0) + 1
        self.has_drops = True  # (also when the transaction rolls back: report_drops copes)

    def discard(self, seqs: Iterable[int], reason: str) -> int:
        """Delete messages that will never reach the backend and list them as dropped.

        For a message the broker refused (PUBACK with a failure reason), one over the broker's
        packet size, or a metrics report that expired before it could be sent: the next
        ``outbox.dropped`` report names them, so the backend's contiguous ack can pass them.
        """
        wanted = sorted(set(seqs))
        if not wanted:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = [Candidate(*r) for s in wanted for r in self._db.execute(
                    "SELECT seq, priority, size, type FROM msg WHERE seq=?", (s,))]
                self._db.executemany("DELETE FROM msg WHERE seq=?", [(c.seq,) for c in rows])
                self._list_dropped(rows, reason)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: write failed: {e}") from e
        return len(rows)

    def drops_pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM dropped").fetchone()[0])

    def report_drops(self, reason: str | None = None) -> int | None:
        """Turn the listed drops into one ``outbox.dropped`` event; return its seq (or None).

        At most :data:`MAX_RANGES_REPORTED` ranges go into one report; the rest stay listed for
        the next call. ``reason`` defaults to the listed reasons (``outbox full``, ``refused by
        broker``, ``too large``, ``expired``), joined by ``", "``.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT seq, type, size, reason FROM dropped ORDER BY seq")
                chosen: list[Candidate] = []
                reasons: set[str] = set()
                ranges = 0
                last = None
                for seq, typ, size, why in rows:
                    if last is None or seq != last + 1:
                        ranges += 1
                        if ranges > MAX_RANGES_REPORTED:
                            break
                    chosen.append(Candidate(seq, 0, size, typ))
                    reasons.add(str(why))
                    last = seq
                if not chosen:
                    self._db.execute("COMMIT")
                    self.has_drops = False
                    return None
                self._db.executemany("DELETE FROM dropped WHERE seq=?", [(c.seq,) for c in chosen])
                body = drop_report_body(chosen, reason or ", ".join(sorted(reasons)))
                body["ranges_truncated"] = ranges > MAX_RANGES_REPORTED
                seq = self._next_seq()
                now = self._clock()
                report = NewMessage("event", DROP_EVENT_TYPE, body, PRIORITY_SECURITY)
                self._insert_many([self._row(seq, report, now)])
                self._db.execute("UPDATE meta SET v=? WHERE k='next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
                self.has_drops = ranges > MAX_RANGES_REPORTED
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: write failed: {e}") from e
        return seq

    def _quick(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run deletes/updates in one transaction without an fsync of their own.

        Losing one of these to power loss only makes a message go out again (a duplicate the
        backend drops by seq) or an ack count again, so they use ``synchronous=NORMAL``; the next
        FULL commit of a put syncs the WAL, these included. Returns the first statement's row
        count.
        """
        try:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                counts = []
                try:
                    for sql, args in statements:
                        if args and isinstance(args[0], tuple):
                            counts.append(self._db.executemany(sql, args).rowcount)
                        else:
                            counts.append(self._db.execute(sql, args).rowcount)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: update failed: {e}") from e
        return counts[0] if counts else 0

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete delivered messages (PUBACK received, no end-to-end ack); return how many."""
        batch = [(a, b) for a, b in seq_ranges(seqs)]  # PUBACKs come mostly in order
        if not batch:
            return 0
        return self._quick([("DELETE FROM msg WHERE seq BETWEEN ? AND ?", batch)])

    def mark_delivered(self, seqs: Iterable[int]) -> int:
        """Mark messages PUBACKed by the broker (kept until the backend acks); return how many.

        The first PUBACK's time is kept: the PUBACK of a copy sent again (after a reconnect, to
        a broker whose workers may not be back) must not restart the ack timeout."""
        batch = [(self._clock(), a, b) for a, b in seq_ranges(seqs)]
        if not batch:
            return 0
        high = max(b for _, _, b in batch)
        return self._quick([
            ("UPDATE msg SET delivered=COALESCE(delivered, ?) WHERE seq BETWEEN ? AND ?", batch),
            ("UPDATE meta SET v=MAX(v, ?) WHERE k='delivered_upto'", (high,)),
        ])

    def ack_upto(self, upto: int) -> int:
        """Delete every message with ``seq <= upto`` (the backend stored or explained them).

        The caller checks ``upto`` first (:func:`.outbox_rules.ack_verdict`): never beyond
        :meth:`delivered_upto`.
        """
        return self._quick([("DELETE FROM msg WHERE seq <= ?", (upto,))])

    def delivered_upto(self) -> int:
        """The highest seq the broker ever acknowledged (persisted; 0 for a new outbox)."""
        row = self._db.execute("SELECT v FROM meta WHERE k='delivered_upto'").fetchone()
        return int(row[0])

    def oldest_delivery(self) -> float | None:
        """When the oldest message still awaiting the backend's ack was first PUBACKed, or None."""
        row = self._db.execute("SELECT MIN(delivered) FROM msg").fetchone()
        return None if row[0] is None else float(row[0])

    # --- reads -------------------------------------------------------------------------------

    def pending(self, limit: int, after: Mapping[int, int] | None = None,
                skip: Collection[int] = ()) -> list[Stored]:
        """Up to ``limit`` stored messages to send: security first, then by seq.

        ``after`` maps a priority to the highest seq of that priority already handed to the
        transport (which keeps it until PUBACK, across reconnects), so only newer ones come back.
        ``skip`` names seqs the transport still holds (after a reconnect, when every kept message
        not yet acknowledged end to end is sent again, except those).
        """
        last = after or {}
        out: list[Stored] = []
        self.skipped = 0
        for p in PRIORITIES:
            if len(out) >= limit:
                break
            rows = self._db.execute(
                "SELECT seq, kind, type, priority, ts, payload FROM msg "
                "WHERE priority=? AND seq>? ORDER BY seq LIMIT ?",
                (p, last.get(p, 0), limit - len(out) + len(skip)),
            )
            for r in rows:
                if r[0] in skip:
                    self.skipped += 1
                else:
                    out.append(Stored(r[0], r[1], r[2], r[3], r[4], bytes(r[5])))
            del out[limit:]
        return out

    def _bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM msg").fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM msg").fetchone()[0])

    def stats(self) -> OutboxStats:
        total = self._db.execute("SELECT v FROM meta WHERE k='dropped_total'").fetchone()[0]
        return OutboxStats(
            count=self.count(),
            bytes=self._bytes(),
            next_seq=self._next_seq(),
            dropped_total=int(total),
            dropped_by_type=dict(self._dropped_by_type),
            delivered=int(self._db.execute(
                "SELECT COUNT(*) FROM msg WHERE delivered IS NOT NULL").fetchone()[0]),
        )

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as e:  # pragma: no cover - close after a disk error
            logger.warning("outbox %s: close failed: %s", self.path, e)
