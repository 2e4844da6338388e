"""The PostgreSQL edge shared by the verifier and fleet stores: a connection pool, the schema check
at start, and psycopg's exceptions translated into the error tree.

``[store] url`` in VERIFIER.toml selects it (:class:`.config.PostgresSettings`);
``psycopg`` 3 and ``psycopg-pool`` come with ``pip install 'edgeward[postgres]'``. Connections
are in autocommit mode: a single statement is its own transaction, a unit of several statements
is ``with db.transaction()``. Races between workers are settled in the database (primary keys
with ``ON CONFLICT DO NOTHING``, conditional UPDATEs whose row count says who won), never in the
memory of one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgeward.attestation.config import PostgresSettings
from edgeward.core.errors import ConfigError, DeviceError

from .migrate import pg_version, require_current

logger = logging.getLogger(__name__)


def describe(url: str) -> str:
    """The database a URL names, without its password: ``postgresql host:port/dbname``."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(url)
    except Exception:  # a malformed URL: say no more than the scheme
        return "postgresql (unparsable url)"
    host = str(d.get("host") or "localhost")
    return f"postgresql {host}:{d.get('port') or 5432}/{d.get('dbname') or d.get('user') or ''}"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise ConfigError("[store] url names PostgreSQL, but psycopg is not installed",
                          hint="pip install 'edgeward[postgres]'") from e
    return psycopg


def connect(settings: PostgresSettings) -> Any:
    """One autocommit connection (``verifier migrate``); connection failures are DeviceError."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(settings.url, autocommit=True,
                               connect_timeout=max(1, round(settings.connect_timeout)))
    except psycopg.Error as e:
        raise DeviceError(f"cannot connect to {describe(settings.url)}: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}",
                          hint="is PostgreSQL running, and [store] url right?") from e


class PgDatabase:
    """A pool of connections to the database of ``[store] url``, checked to hold ``store``'s
    schema at the version this code knows."""

    def __init__(self, settings: PostgresSettings, store: str) -> None:
        psycopg = _psycopg()
        from psycopg_pool import ConnectionPool

        self._error = psycopg.Error
        self.where = describe(settings.url)
        with connect(settings) as conn:  # the clear error for a database that is not there
            try:
                version = pg_version(conn, store)
            except psycopg.Error as e:
                raise DeviceError(f"cannot read the schema version of {self.where}: {e}") from e
        require_current(store, "postgresql", version, self.where)
        # check: a connection is tried before it is handed out, so one the server dropped (a
        # restart, a failover) is replaced instead of failing the message that drew it
        self.pool = ConnectionPool(settings.url, min_size=1, max_size=settings.pool_size,
                                   kwargs={"autocommit": True}, timeout=settings.connect_timeout,
                                   check=ConnectionPool.check_connection,
                                   name=f"edgeward-{store}", open=True)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection from the pool; psycopg's errors become :class:`DeviceError`."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except self._error as e:
            raise DeviceError(f"{self.where}: {str(e).strip()}") from e

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic unit of work; rolled back on any exception."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        """One statement (its own transaction); the cursor's rows are read before it returns."""
        with self.connection() as conn:
            cur = conn.execute(sql, args)
            return _Result(cur.rowcount, cur.fetchall() if cur.description else [])

    def close(self) -> None:
        self.pool.close()


class _Result:
    """What one statement returned: the row count and its rows (read while connected)."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rowcount: int, rows: list[tuple[Any, ...]]) -> None:
        self.rowcount = rowcount
        self.rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)
