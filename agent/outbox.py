"""The durable outbox: every report and event is written here before it is sent.

SQLite in WAL mode, one file per device. A message is assigned its ``seq`` and encoded as an
envelope inside the transaction that stores it, and it is deleted only when the broker's PUBACK
for it arrives (:meth:`Outbox.ack`). The sequence counter lives in the same database, so ``seq``
is gap-free and never reused, across crashes, SIGKILL and power loss.

Durability: ``synchronous=FULL``. In WAL mode ``NORMAL`` keeps the database consistent but may
lose the last committed transactions on power loss; here that would roll back the sequence
counter, so after a reboot the device would reuse ``seq`` values the backend already holds and
the backend would silently discard the new messages as duplicates. ``FULL`` fsyncs the WAL on each
commit; the agent loop pays that once per batch (group commit), not once per message.

Bound and eviction: the outbox is bounded in bytes of stored envelopes. When a new batch does not
fit, :func:`plan_eviction` (pure) drops the lowest priority first (metrics, then evidence, then
security events), oldest first within a priority. Dropped messages keep their ``seq`` (the
backend sees the gap) and are listed, in the same transaction, in a ``dropped`` table. The loop
calls :meth:`Outbox.report_drops` when it is connected: that turns the list into one
``outbox.dropped`` security event naming how many of each type were dropped and which ``seq``
ranges, so the backend can tell a reported drop from an unexplained loss. (One report per
connection turn, not one per eviction: during a long outage, per-eviction reports would
themselves fill the outbox.) A message evicted while paho still holds it in flight may still
arrive; the backend counts it as received.

I/O: this module's only I/O is the SQLite file. The eviction rule is a pure function.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.models.errors import DeviceError

from .envelope import PRIORITIES, PRIORITY_METRICS, PRIORITY_SECURITY, Envelope, encode

logger = logging.getLogger(__name__)

DROP_EVENT_TYPE = "outbox.dropped"
DROP_EVENT_RESERVE = 2048  # bytes kept free for the drop report itself
MAX_RANGES_REPORTED = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msg (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ts REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dropped (seq INTEGER PRIMARY KEY, type TEXT NOT NULL,
    size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS msg_evict ON msg (priority, seq);
"""


@dataclass(frozen=True)
class NewMessage:
    """A message to store: topic kind (``report``, ``event``, ``attest/evidence``), type, body."""

    kind: str
    type: str
    body: dict[str, Any]
    priority: int = PRIORITY_METRICS


@dataclass(frozen=True)
class Stored:
    seq: int
    kind: str
    type: str
    priority: int
    ts: float
    payload: bytes


@dataclass(frozen=True)
class Candidate:
    seq: int
    priority: int
    size: int
    type: str


@dataclass
class OutboxStats:
    count: int
    bytes: int
    next_seq: int
    dropped_total: int
    dropped_by_type: dict[str, int] = field(default_factory=dict)


def plan_eviction(candidates: Iterable[Candidate], need: int) -> list[Candidate]:
    """Pick messages to drop to free ``need`` bytes (pure).

    ``candidates`` must come in eviction order: lowest priority first, oldest (lowest seq) first
    within a priority. Returns the shortest prefix that frees at least ``need`` bytes (all of them
    if that is not enough).
    """
    chosen: list[Candidate] = []
    freed = 0
    for c in candidates:
        if freed >= need:
            break
        chosen.append(c)
        freed += c.size
    return chosen


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Compress sorted or unsorted seqs into inclusive ``[first, last]`` ranges (pure)."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def drop_report_body(dropped: Sequence[Candidate], reason: str) -> dict[str, Any]:
    """The body of an ``outbox.dropped`` event (pure)."""
    counts: dict[str, int] = {}
    for c in dropped:
        counts[c.type] = counts.get(c.type, 0) + 1
    ranges = seq_ranges(c.seq for c in dropped)
    return {
        "reason": reason,
        "count": len(dropped),
        "bytes": sum(c.size for c in dropped),
        "by_type": counts,
        "ranges": ranges[:MAX_RANGES_REPORTED],
        "ranges_truncated": len(ranges) > MAX_RANGES_REPORTED,
    }


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
            # one owner at a time (the loop thread); it may be created on another thread
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DeviceError(f"outbox {self.path}: SQLite refused WAL mode ({mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', 1)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped_total', 0)")
            self.path.chmod(0o600)
        except sqlite3.Error as e:
            raise DeviceError(f"cannot open outbox {self.path}: {e}") from e
        self._dropped_by_type: dict[str, int] = {}
        self.has_drops = self.drops_pending() > 0

    # --- writes ------------------------------------------------------------------------------

    def put(self, messages: Sequence[NewMessage]) -> list[int]:
        """Store ``messages`` in one transaction (one fsync); return their seqs.

        Evicts older, lower-priority messages if the batch does not fit, and then stores the
        drop report in the same transaction.
        """
        if not messages:
            return []
        now = self._clock()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = self._put_locked(messages, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: write failed: {e}") from e
        return seqs

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT v FROM meta WHERE k='next_seq'").fetchone()
        return int(row[0])

    def _insert(self, seq: int, m: NewMessage, now: float) -> int:
        payload = encode(Envelope(seq=seq, ts=now, device=self.device, type=m.type, body=m.body))
        self._db.execute(
            "INSERT INTO msg (seq, kind, type, priority, ts, size, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, m.kind, m.type, m.priority, now, len(payload), payload),
        )
        return len(payload)

    def _put_locked(self, messages: Sequence[NewMessage], now: float) -> list[int]:
        seq = self._next_seq()
        seqs: list[int] = []
        added = 0
        for m in messages:
            size = self._insert(seq, m, now)
            if size > self.max_bytes - DROP_EVENT_RESERVE:
                raise ValueError(f"message of {size} bytes cannot fit the outbox bound")
            added += size
            seqs.append(seq)
            seq += 1
        total = self._bytes()
        if total > self.max_bytes - DROP_EVENT_RESERVE:
            need = total - (self.max_bytes - DROP_EVENT_RESERVE)
            rows = self._db.execute(
                "SELECT seq, priority, size, type FROM msg ORDER BY priority, seq"
            )
            dropped = plan_eviction((Candidate(*r) for r in rows), need)
            self._db.executemany("DELETE FROM msg WHERE seq=?", [(c.seq,) for c in dropped])
            self._db.executemany("INSERT OR IGNORE INTO dropped VALUES (?, ?, ?)",
                                 [(c.seq, c.type, c.size) for c in dropped])
            self._db.execute(
                "UPDATE meta SET v = v + ? WHERE k='dropped_total'", (len(dropped),)
            )
            for c in dropped:
                self._dropped_by_type[c.type] = self._dropped_by_type.get(c.type, 0) + 1
            self.has_drops = True  # (also when the transaction rolls back: report_drops copes)
            logger.warning("outbox full: dropped %d messages to store %d new",
                           len(dropped), len(messages))
        self._db.execute("UPDATE meta SET v=? WHERE k='next_seq'", (seq,))
        return seqs

    def drops_pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM dropped").fetchone()[0])

    def report_drops(self, reason: str = "outbox full") -> int | None:
        """Turn the listed drops into one ``outbox.dropped`` event; return its seq (or None).

        At most :data:`MAX_RANGES_REPORTED` ranges go into one report; the rest stay listed for
        the next call.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT seq, type, size FROM dropped ORDER BY seq")
                chosen: list[Candidate] = []
                ranges = 0
                last = None
                for seq, typ, size in rows:
                    if last is None or seq != last + 1:
                        ranges += 1
                        if ranges > MAX_RANGES_REPORTED:
                            break
                    chosen.append(Candidate(seq, 0, size, typ))
                    last = seq
                if not chosen:
                    self._db.execute("COMMIT")
                    self.has_drops = False
                    return None
                self._db.executemany("DELETE FROM dropped WHERE seq=?", [(c.seq,) for c in chosen])
                body = drop_report_body(chosen, reason)
                body["ranges_truncated"] = ranges > MAX_RANGES_REPORTED
                seq = self._next_seq()
                now = self._clock()
                report = NewMessage("event", DROP_EVENT_TYPE, body, PRIORITY_SECURITY)
                self._insert(seq, report, now)
                self._db.execute("UPDATE meta SET v=? WHERE k='next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
                self.has_drops = ranges > MAX_RANGES_REPORTED
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: write failed: {e}") from e
        return seq

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete delivered messages (PUBACK received) in one transaction; return how many."""
        batch = [(a, b) for a, b in seq_ranges(seqs)]  # PUBACKs come mostly in order
        if not batch:
            return 0
        try:
            # A delete that power loss undoes only makes the message go out again (a duplicate
            # the backend drops by seq), so deletes skip the fsync (NORMAL); the next FULL
            # commit of a put syncs the WAL, deletes included.
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.executemany("DELETE FROM msg WHERE seq BETWEEN ? AND ?", batch)
                self._db.execute("COMMIT")
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise DeviceError(f"outbox {self.path}: delete failed: {e}") from e
        return cur.rowcount

    # --- reads -------------------------------------------------------------------------------

    def pending(self, limit: int, after: Mapping[int, int] | None = None) -> list[Stored]:
        """Up to ``limit`` stored messages to send: security first, then by seq.

        ``after`` maps a priority to the highest seq of that priority already handed to the
        transport (which keeps it until PUBACK, across reconnects), so only newer ones come back.
        """
        last = after or {}
        out: list[Stored] = []
        for p in PRIORITIES:
            if len(out) >= limit:
                break
            rows = self._db.execute(
                "SELECT seq, kind, type, priority, ts, payload FROM msg "
                "WHERE priority=? AND seq>? ORDER BY seq LIMIT ?",
                (p, last.get(p, 0), limit - len(out)),
            )
            out.extend(Stored(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows)
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
        )

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as e:  # pragma: no cover - close after a disk error
            logger.warning("outbox %s: close failed: %s", self.path, e)
