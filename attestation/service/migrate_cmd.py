"""``edgeward verifier migrate --config VERIFIER.toml [--check | --dry-run]``: bring the verifier
and fleet stores to the schema of this edgeward, saying what it applies.

The stores are those the worker would open: with ``[store] url``, both in that PostgreSQL
database; else the SQLite files ``[verifier] database`` (if the file has a ``[verifier]`` table)
and ``[service] store``. ``--check`` applies nothing and exits 1 if anything is pending;
``--dry-run`` prints the SQL it would run. The SQL and its runner are :mod:`.migrate`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeward.core.errors import DeviceError

from .config import ServiceConfig
from .migrate import Migration, latest, migrations, pg_version, require_known, sqlite_version


@dataclass(frozen=True)
class Target:
    store: str  # "verifier" or "fleet"
    dialect: str
    where: str  # what the operator reads: a file, or the database without its password
    path: Path | None  # the SQLite file


def targets(cfg: ServiceConfig) -> list[Target]:
    if cfg.postgres is not None:
        from .pg import describe

        where = describe(cfg.postgres.url)
        return [Target(s, "postgresql", where, None) for s in ("verifier", "fleet")]
    out = []
    if cfg.verifier is not None:
        out.append(Target("verifier", "sqlite", f"sqlite {cfg.verifier.database}",
                          cfg.verifier.database))
    out.append(Target("fleet", "sqlite", f"sqlite {cfg.store}", cfg.store))
    return out


def _sqlite_version(t: Target) -> int:
    assert t.path is not None
    if not t.path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{t.path}?mode=ro", uri=True)
        try:
            return sqlite_version(db, t.store)
        finally:
            db.close()
    except sqlite3.Error as e:
        raise DeviceError(f"cannot read {t.path}: {e}") from e


def _apply_sqlite(t: Target) -> None:
    """Opening the store applies its migrations (the SQLite store migrates itself)."""
    if t.store == "fleet":
        from .fleet_store import FleetStore

        FleetStore(t.path or Path(), worker="migrate").close()
    else:
        from .verifier_store import Store

        Store(t.path or Path()).close()


def run(cfg: ServiceConfig, *, check: bool, dry_run: bool,
        echo: Callable[[str], None]) -> int:
    """Report, and unless ``check``/``dry_run`` apply, every store's pending migrations;
    returns the exit code (``check``: 1 if anything is pending)."""
    conn = None
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    if cfg.postgres is not None:
        import psycopg

        from .pg import connect

        conn = connect(cfg.postgres)
        errors += (psycopg.Error,)
    pending_any = False
    try:
        for t in targets(cfg):
            now = pg_version(conn, t.store) if conn is not None else _sqlite_version(t)
            require_known(now, t.store, t.dialect, t.where)
            want = latest(t.store, t.dialect)
            todo: tuple[Migration, ...] = migrations(t.store, t.dialect)[now:]
            head = f"{t.store} store ({t.where})"
            if not todo:
                echo(f"{head}: up to date, schema version {now}")
                continue
            pending_any = True
            names = ", ".join(m.label for m in todo)
            if check or dry_run:
                echo(f"{head}: schema version {now} of {want}; pending: {names}")
                if dry_run:
                    for m in todo:
                        echo(f"-- {t.store}/{t.dialect}/{m.label}.sql\n{m.sql.rstrip()}")
                continue
            echo(f"{head}: schema version {now} of {want}; applying {names}")
            if conn is not None:
                from .migrate import pg_migrate

                pg_migrate(conn, t.store, t.where)
            else:
                _apply_sqlite(t)
            echo(f"{head}: now at schema version {want}")
    except errors as e:
        raise DeviceError(f"migration failed, nothing of it applied: {e}") from e
    finally:
        if conn is not None:
            conn.close()
    if check and pending_any:
        echo("migrations pending: run edgeward verifier migrate --config "
             f"{cfg.source}")
        return 1
    return 0
