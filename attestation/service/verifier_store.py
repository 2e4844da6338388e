"""The verifier's state in SQLite: devices, challenge sessions, bootcounts, result history.

This is an edge: the only module of :mod:`edgeward.attestation` that touches the database. Every
change that belongs together is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a crash
never leaves a consumed nonce without its result, or a bootcount without its appraisal.
Consuming a nonce is ``UPDATE ... WHERE used_at IS NULL`` and checks the row count, so two
workers racing on the same evidence cannot both accept it. :mod:`.verifier_store_pg` is the same
contract in PostgreSQL, for many hosts (DESIGN.md, "Real parts"). SQLite's exceptions stop here:
a failing database is a :class:`DeviceError`, a key enrolled under a second name an
:class:`UnknownDeviceError`, each chained to the ``sqlite3`` error.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeward.attestation.nonces import Session
from edgeward.core.errors import DeviceError, ReplayError, UnknownDeviceError
from edgeward.core.persist import private_file

from .migrate import sqlite_migrate

logger = logging.getLogger(__name__)

# The schema is migrations/verifier/sqlite/NNNN_*.sql, applied when the file is opened (.migrate).


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    key_id: bytes
    spki: bytes
    endorsement: str
    issuer: str
    enrolled_at: float
    last_bootcount: int | None
    key_kind: str = "software"
    board: str | None = None
    ueid: bytes | None = None
    anchor: bytes | None = None
    certs: str | None = None


# Columns added after the first release, before versioned migrations: (table, column, definition),
# added to such a file before its migration 1.
_ADDED_COLUMNS = (
    ("devices", "board", "TEXT"),
    ("devices", "ueid", "BLOB"),
    ("devices", "anchor", "BLOB"),
    ("devices", "certs", "TEXT"),
)
_DEVICE_COLUMNS = ("device, key_id, spki, endorsement, issuer, enrolled_at, last_bootcount, "
                   "key_kind, board, ueid, anchor, certs")


# What both stores' put_device share: the values in column order, the refusals, the log line.
def _device_values(rec: DeviceRecord) -> tuple[object, ...]:
    """The INSERT's values, in ``_DEVICE_COLUMNS`` order."""
    return (rec.device, rec.key_id, rec.spki, rec.endorsement, rec.issuer, rec.enrolled_at,
            rec.last_bootcount, rec.key_kind, rec.board, rec.ueid, rec.anchor, rec.certs)


def _reenroll_values(rec: DeviceRecord) -> tuple[object, ...]:
    """The re-enrollment UPDATE's values: key_id, spki, endorsement, issuer, enrolled_at,
    key_kind, board, anchor, certs, then the device of the WHERE."""
    return (rec.key_id, rec.spki, rec.endorsement, rec.issuer, rec.enrolled_at, rec.key_kind,
            rec.board, rec.anchor, rec.certs, rec.device)


def _key_not_replaced(rec: DeviceRecord, old_key: bytes) -> UnknownDeviceError:
    return UnknownDeviceError(
        f"device {rec.device} is already enrolled with key {bytes(old_key).hex()[:16]}"
        f"; a certificate for key {rec.key_id.hex()[:16]} does not replace it",
        hint="re-enroll explicitly: edgeward attest enroll --replace --cert CERT")


def _key_under_another_name(rec: DeviceRecord) -> UnknownDeviceError:
    return UnknownDeviceError(
        f"key {rec.key_id.hex()[:16]} is already enrolled under another device name")


def _log_enrolled(log: logging.Logger, rec: DeviceRecord, replaced: bool) -> None:
    (log.warning if replaced else log.info)(
        "device %s %s (%s, key %s)", rec.device,
        "RE-ENROLLED with a new key" if replaced else "enrolled", rec.endorsement,
        rec.key_id.hex()[:16])


def _legacy(db: sqlite3.Connection) -> None:
    """A file made before versioned migrations: the columns its tables lack."""
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if have and column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class Store:
    """SQLite-backed verifier state (:class:`.store.VerifierStore`). Thread-safe through one
    lock around one connection."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                private_file(Path(self.path))  # and so its -wal and -shm files
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            sqlite_migrate(self._db, "verifier", self.path, legacy=_legacy)
        except sqlite3.Error as e:
            raise DeviceError(f"cannot open the verifier database {self.path}: {e}") from e
        self._lock = threading.RLock()
        self._grouped = False

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: the transactions inside are savepoints of one transaction, made durable
        by one COMMIT (one fsync with ``synchronous=FULL``) when the block ends, or all rolled back
        if it raises. Nothing inside is durable before the block ends, so whatever answers for
        it (an EAR published, a message acknowledged) must wait until then. Nested: one group."""
        with self._lock:
            if self._grouped:
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise DeviceError(f"verifier database {self.path} is unavailable: {e}") from e
            self._grouped = True
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as e:
                    raise DeviceError(f"cannot commit to {self.path}: {e}") from e
            finally:
                self._grouped = False

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        """A transaction inside a group: undone alone on an exception."""
        self._db.execute("SAVEPOINT tx")
        try:
            yield self._db
        except BaseException as e:
            self._db.execute("ROLLBACK TO tx")
            self._db.execute("RELEASE tx")
            if isinstance(e, sqlite3.Error):
                raise DeviceError(f"verifier database {self.path} failed: {e}") from e
            raise
        else:
            self._db.execute("RELEASE tx")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; rolled back on any exception."""
        with self._lock:
            if self._grouped:
                with self._savepoint() as db:
                    yield db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise DeviceError(f"verifier database {self.path} is unavailable: {e}") from e
            try:
                yield self._db
            except BaseException as e:
                self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise DeviceError(f"verifier database {self.path} failed: {e}") from e
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as e:
                    raise DeviceError(f"cannot commit to {self.path}: {e}") from e

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock for one read; SQLite's failures become DeviceError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as e:
                raise DeviceError(f"cannot read the verifier database {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- devices -----------------------------------------------------------------------------

    def put_device(self, rec: DeviceRecord, *, replace: bool = False) -> bool:
        """Enroll ``rec.device``; True if it was enrolled now, False if it already was so.

        An enrolled device's key is never replaced here: a different key for an enrolled name is
        :class:`UnknownDeviceError`, unless ``replace`` (the operator's explicit re-enrollment
        with a maker-signed certificate, ``attest enroll --replace``), which keeps the device's
        bootcount and board and forgets the ueid pinned for the old key. A key enrolled under
        another name is always refused.
        """
        with self.transaction() as db:
            old = db.execute("SELECT key_id FROM devices WHERE device = ?",
                             (rec.device,)).fetchone()
            if old is not None and bytes(old[0]) == rec.key_id:
                return False  # the same key again: nothing changes
            if old is not None and not replace:
                raise _key_not_replaced(rec, old[0])
            try:
                if old is None:
                    db.execute(
                        f"INSERT INTO devices ({_DEVICE_COLUMNS}) "  # noqa: S608
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", _device_values(rec))
                else:
                    db.execute(
                        "UPDATE devices SET key_id=?, spki=?, endorsement=?, issuer=?, "
                        "enrolled_at=?, key_kind=?, board=COALESCE(?, board), ueid=NULL, "
                        "anchor=?, certs=? WHERE device=?", _reenroll_values(rec))
            except sqlite3.IntegrityError as e:  # key_id is UNIQUE
                raise _key_under_another_name(rec) from e
        _log_enrolled(logger, rec, replaced=old is not None)
        return True

    _DEVICE_QUERIES = {
        # constant column list, not input
        "key_id": f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE key_id = ?",  # noqa: S608
        "device": f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?",  # noqa: S608
    }

    def _device(self, column: str, arg: object) -> DeviceRecord | None:
        with self._reading() as db:
            row = db.execute(self._DEVICE_QUERIES[column], (arg,)).fetchone()
        return DeviceRecord(*row) if row else None

    def device_by_key(self, key_id: bytes) -> DeviceRecord | None:
        return self._device("key_id", key_id)

    def device(self, name: str) -> DeviceRecord | None:
        return self._device("device", name)

    # --- sessions ----------------------------------------------------------------------------

    def put_session(self, s: Session) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO sessions VALUES (?,?,?,?,NULL)",
                       (s.nonce, s.device, s.issued, s.expires))
            # An expired session can never be accepted again (used or not), so it can go; a
            # replay of its evidence then reads as "never issued", still a refusal.
            db.execute("DELETE FROM sessions WHERE expires < ?", (s.issued - 86400,))

    def session(self, nonce: bytes) -> Session | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT nonce, device, issued, expires, used_at FROM sessions WHERE nonce = ?",
                (nonce,),
            ).fetchone()
        return Session(*row) if row else None

    # --- the commit of one appraisal ---------------------------------------------------------

    def record_appraisal(
        self,
        *,
        device: str | None,
        nonce: bytes | None,
        now: float,
        status: int,
        evidence_sha256: bytes,
        ear: bytes,
        bootcount: int | None,
        board: str | None = None,
        ueid: bytes | None = None,
        lock_bootcounts: Mapping[str, int] | None = None,
    ) -> None:
        """Consume the nonce, raise the bootcount (the device's and its locks'), pin the board of
        a device enrolled without one, and append the result, in one transaction."""
        with self.transaction() as db:
            if nonce is not None:
                cur = db.execute(
                    "UPDATE sessions SET used_at = ? WHERE nonce = ? AND used_at IS NULL",
                    (now, nonce),
                )
                if cur.rowcount != 1:
                    raise ReplayError(f"nonce {nonce.hex()[:16]} was already used (race)")
            if device is not None and bootcount is not None:
                db.execute(
                    "UPDATE devices SET last_bootcount = ? WHERE device = ? AND "
                    "(last_bootcount IS NULL OR last_bootcount < ?)",
                    (bootcount, device, bootcount),
                )
            for name, count in (lock_bootcounts or {}).items() if device is not None else ():
                db.execute(
                    "INSERT INTO lock_bootcounts VALUES (?,?,?) ON CONFLICT (gateway, name) "
                    "DO UPDATE SET last_bootcount = MAX(last_bootcount, excluded.last_bootcount)",
                    (device, name, count))
            if device is not None and board is not None:
                db.execute("UPDATE devices SET board = ? WHERE device = ? AND board IS NULL",
                           (board, device))
            if device is not None and ueid is not None:
                db.execute("UPDATE devices SET ueid = ? WHERE device = ? AND ueid IS NULL",
                           (ueid, device))
            db.execute(
                "INSERT INTO results (device, at, status, evidence_sha256, ear) "
                "VALUES (?,?,?,?,?)",
                (device, now, status, evidence_sha256, ear),
            )

    def lock_bootcount(self, gateway: str, name: str) -> int | None:
        """The highest bootcount accepted from lock ``name`` behind ``gateway``, or None."""
        with self._reading() as db:
            row = db.execute("SELECT last_bootcount FROM lock_bootcounts WHERE gateway = ? "
                             "AND name = ?", (gateway, name)).fetchone()
        return int(row[0]) if row else None

    def history(self, device: str, limit: int = 20) -> list[tuple[float, int, bytes]]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT at, status, ear FROM results WHERE device = ? ORDER BY id DESC LIMIT ?",
                (device, limit),
            ).fetchall()
        return [(float(a), int(s), bytes(e)) for a, s, e in rows]
