"""Versioned schema migrations of the verifier and fleet stores, for SQLite and PostgreSQL.

The SQL is in the repository, shipped as package data: ``migrations/<store>/<dialect>/
NNNN_name.sql`` (``store``: ``verifier`` or ``fleet``; ``dialect``: ``sqlite`` or
``postgresql``), numbered from 0001 without holes. A database records what it has in the table
``edgeward_migrations`` (one row per applied migration and store), so the verifier and fleet
stores can share one PostgreSQL database.

* PostgreSQL is migrated only by ``edgeward verifier migrate``: every pending migration of a store
  in one transaction (DDL is transactional there), under an advisory lock so two operators (or
  two hosts) running it at once apply each migration once. A worker refuses to start on a schema
  older or newer than its code (:func:`require_current`).
* A SQLite file is the embedded store of one host: it is migrated when opened, as it always was
  (``verifier migrate`` does the same and says so), and refused if newer than the code.

I/O: the database connection handed in; the SQL files through :mod:`importlib.resources`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from edgeward.core.errors import ConfigError

STORES = ("verifier", "fleet")
DIALECTS = ("sqlite", "postgresql")
TABLE = "edgeward_migrations"
CREATE_TABLE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (store TEXT NOT NULL, version INTEGER NOT "
                "NULL, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, "
                "PRIMARY KEY (store, version))")
PG_LOCK = 0x65647761  # pg_advisory_xact_lock key held while migrating ("edwa")
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    store: str
    dialect: str
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@cache
def migrations(store: str, dialect: str) -> tuple[Migration, ...]:
    """The migrations of ``store`` for ``dialect``, oldest first."""
    if store not in STORES or dialect not in DIALECTS:
        raise RuntimeError(f"no migrations for {store!r} on {dialect!r}")
    folder = resources.files("edgeward.attestation.service").joinpath(
        "migrations", store, dialect)
    found = []
    for entry in folder.iterdir():
        m = _FILE.fullmatch(entry.name)
        if m:
            found.append(Migration(store, dialect, int(m[1]), m[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations of {store}/{dialect} are not numbered 1..n: "
                           f"{[m.label for m in found]}")
    return tuple(found)


def latest(store: str, dialect: str) -> int:
    return len(migrations(store, dialect))


def require_current(store: str, dialect: str, version: int, where: str) -> None:
    """Refuse a schema this code does not know: older (not migrated) or newer."""
    want = latest(store, dialect)
    if version > want:
        raise ConfigError(
            f"the {store} store in {where} has schema version {version}, newer than this "
            f"edgeward knows ({want})",
            hint="upgrade edgeward on this host (edgeward verifier migrate --check shows the "
                 "versions)")
    if version < want:
        raise ConfigError(
            f"the {store} store in {where} has schema version {version}, this edgeward needs "
            f"{want}", hint="run edgeward verifier migrate --config VERIFIER.toml")


def statements(sql: str) -> list[str]:
    """A script cut into statements (no ``;`` inside the migrations' strings or comments)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip()
                               for ln in buf.splitlines()):
        out.append(buf.strip())
    return out


# --- SQLite ------------------------------------------------------------------------------------


def sqlite_version(db: sqlite3.Connection, store: str) -> int:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                  (TABLE,)).fetchone() is None:
        return 0
    row = db.execute(f"SELECT MAX(version) FROM {TABLE} WHERE store=?",  # noqa: S608
                     (store,)).fetchone()
    return int(row[0] or 0)


def sqlite_migrate(db: sqlite3.Connection, store: str, where: str, *,
                   legacy: Callable[[sqlite3.Connection], None] | None = None,
                   clock: Callable[[], float] = time.time) -> list[Migration]:
    """Apply the pending migrations of ``store`` to ``db`` (autocommit mode), each in its own
    transaction; returns those applied. ``legacy`` runs before migration 1 (a file made before
    versioned migrations: columns its tables lack). Refuses a newer schema."""
    todo = migrations(store, "sqlite")
    require_known(sqlite_version(db, store), store, "sqlite", where)
    applied = []
    for m in todo:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(CREATE_TABLE)
            if sqlite_version(db, store) >= m.version:  # another process was first
                db.execute("COMMIT")
                continue
            if m.version == 1 and legacy is not None:
                legacy(db)
            for stmt in statements(m.sql):
                db.execute(stmt)
            db.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)",  # noqa: S608
                       (store, m.version, m.name, clock()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied.append(m)
    return applied


def require_known(version: int, store: str, dialect: str, where: str) -> None:
    if version > latest(store, dialect):
        require_current(store, dialect, version, where)


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_version(conn: Any, store: str) -> int:
    if conn.execute(f"SELECT to_regclass('{TABLE}')").fetchone()[0] is None:
        return 0
    row = conn.execute(f"SELECT MAX(version) FROM {TABLE} WHERE store = %s",  # noqa: S608
                       (store,)).fetchone()
    return int(row[0] or 0)


def pg_migrate(conn: Any, store: str, where: str, *,
               clock: Callable[[], float] = time.time) -> list[Migration]:
    """Apply the pending migrations of ``store`` in one transaction under an advisory lock;
    returns those applied. ``conn``: a psycopg connection in autocommit mode."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK,))
        conn.execute(CREATE_TABLE)
        done = pg_version(conn, store)
        require_known(done, store, "postgresql", where)
        todo = migrations(store, "postgresql")[done:]
        for m in todo:
            conn.execute(m.sql)
            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s)",  # noqa: S608
                         (store, m.version, m.name, clock()))
    return list(todo)
