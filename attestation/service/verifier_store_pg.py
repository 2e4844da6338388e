"""The verifier's state in PostgreSQL: the same contract as :class:`.verifier_store.Store`
(SQLite), for many workers on many hosts sharing one database.

Tables ``verifier_devices``, ``verifier_sessions``, ``verifier_results`` (migrations/verifier/
postgresql). A nonce is consumed by ``UPDATE ... WHERE used_at IS NULL``: under READ COMMITTED a
second worker racing on the same nonce waits for the first one's row lock, then re-reads the row,
finds it used and updates nothing, so exactly one appraisal commits (the other is a
:class:`ReplayError`). Everything an appraisal changes is one transaction, as in SQLite.

I/O: the database of ``[store] url`` only (through :class:`.pg.PgDatabase`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.nonces import Session
from edgeward.core.errors import ReplayError

from .pg import PgDatabase
from .verifier_store import (
    _DEVICE_COLUMNS,
    DeviceRecord,
    _device_values,
    _key_not_replaced,
    _key_under_another_name,
    _log_enrolled,
    _reenroll_values,
)

logger = logging.getLogger(__name__)


class PgStore:
    """PostgreSQL-backed verifier state (:class:`.store.VerifierStore`). Thread-safe (a pool)."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.db = PgDatabase(settings, "verifier")
        self.path = self.db.where

    def close(self) -> None:
        self.db.close()

    # --- devices -----------------------------------------------------------------------------

    def put_device(self, rec: DeviceRecord, *, replace: bool = False) -> bool:
        """As :meth:`.verifier_store.Store.put_device`."""
        psycopg_unique = _unique_violation()
        try:
            with self.db.transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (rec.device,))
                old = db.execute("SELECT key_id FROM verifier_devices WHERE device = %s",
                                 (rec.device,)).fetchone()
                if old is not None and bytes(old[0]) == rec.key_id:
                    return False
                if old is not None and not replace:
                    raise _key_not_replaced(rec, old[0])
                if old is None:
                    db.execute(
                        f"INSERT INTO verifier_devices ({_DEVICE_COLUMNS}) "  # noqa: S608
                        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", _device_values(rec))
                else:
                    db.execute(
                        "UPDATE verifier_devices SET key_id=%s, spki=%s, endorsement=%s, "
                        "issuer=%s, enrolled_at=%s, key_kind=%s, board=COALESCE(%s, board), "
                        "ueid=NULL, anchor=%s, certs=%s WHERE device=%s", _reenroll_values(rec))
        except Exception as e:
            cause = e.__cause__
            if psycopg_unique is not None and isinstance(cause, psycopg_unique):
                raise _key_under_another_name(rec) from cause
            raise
        _log_enrolled(logger, rec, replaced=old is not None)
        return True

    def _device(self, column: str, arg: object) -> DeviceRecord | None:
        sql = {"key_id": f"SELECT {_DEVICE_COLUMNS} FROM verifier_devices "  # noqa: S608
                         "WHERE key_id = %s",
               "device": f"SELECT {_DEVICE_COLUMNS} FROM verifier_devices "  # noqa: S608
                         "WHERE device = %s"}[column]
        row = self.db.execute(sql, (arg,)).fetchone()
        return DeviceRecord(*row) if row else None

    def device_by_key(self, key_id: bytes) -> DeviceRecord | None:
        return self._device("key_id", key_id)

    def device(self, name: str) -> DeviceRecord | None:
        return self._device("device", name)

    # --- sessions ----------------------------------------------------------------------------

    def put_session(self, s: Session) -> None:
        with self.db.transaction() as db:
            db.execute("INSERT INTO verifier_sessions VALUES (%s, %s, %s, %s, NULL)",
                       (s.nonce, s.device, s.issued, s.expires))
            db.execute("DELETE FROM verifier_sessions WHERE expires < %s", (s.issued - 86400,))

    def session(self, nonce: bytes) -> Session | None:
        row = self.db.execute(
            "SELECT nonce, device, issued, expires, used_at FROM verifier_sessions "
            "WHERE nonce = %s", (nonce,)).fetchone()
        return Session(bytes(row[0]), *row[1:]) if row else None

    # --- the commit of one appraisal ---------------------------------------------------------

    def record_appraisal(self, *, device: str | None, nonce: bytes | None, now: float,
                         status: int, evidence_sha256: bytes, ear: bytes,
                         bootcount: int | None, board: str | None = None,
                         ueid: bytes | None = None,
                         lock_bootcounts: Mapping[str, int] | None = None) -> None:
        """As :meth:`.verifier_store.Store.record_appraisal`: one transaction."""
        with self.db.transaction() as db:
            if nonce is not None:
                cur = db.execute("UPDATE verifier_sessions SET used_at = %s "
                                 "WHERE nonce = %s AND used_at IS NULL", (now, nonce))
                if cur.rowcount != 1:
                    raise ReplayError(f"nonce {nonce.hex()[:16]} was already used (race)")
            if device is not None and (bootcount, board, ueid) != (None, None, None):
                db.execute(
                    "UPDATE verifier_devices SET "
                    "last_bootcount = CASE WHEN %(b)s::bigint IS NOT NULL AND (last_bootcount IS "
                    "NULL OR last_bootcount < %(b)s) THEN %(b)s ELSE last_bootcount END, "
                    "board = COALESCE(board, %(board)s), ueid = COALESCE(ueid, %(ueid)s) "
                    "WHERE device = %(d)s",
                    {"b": bootcount, "board": board, "ueid": ueid, "d": device})
            for name, count in (lock_bootcounts or {}).items() if device is not None else ():
                db.execute(
                    "INSERT INTO verifier_lock_bootcounts VALUES (%s, %s, %s) ON CONFLICT "
                    "(gateway, name) DO UPDATE SET last_bootcount = GREATEST("
                    "verifier_lock_bootcounts.last_bootcount, EXCLUDED.last_bootcount)",
                    (device, name, count))
            db.execute("INSERT INTO verifier_results (device, at, status, evidence_sha256, ear) "
                       "VALUES (%s, %s, %s, %s, %s)", (device, now, status, evidence_sha256, ear))

    def lock_bootcount(self, gateway: str, name: str) -> int | None:
        """The highest bootcount accepted from lock ``name`` behind ``gateway``, or None."""
        row = self.db.execute("SELECT last_bootcount FROM verifier_lock_bootcounts WHERE "
                              "gateway = %s AND name = %s", (gateway, name)).fetchone()
        return int(row[0]) if row else None

    def history(self, device: str, limit: int = 20) -> list[tuple[float, int, bytes]]:
        rows = self.db.execute("SELECT at, status, ear FROM verifier_results WHERE device = %s "
                               "ORDER BY id DESC LIMIT %s", (device, limit)).fetchall()
        return [(float(a), int(s), bytes(e)) for a, s, e in rows]


def _unique_violation() -> type[BaseException] | None:
    try:
        from psycopg.errors import UniqueViolation
    except ImportError:
        return None
    return UniqueViolation
