"""Test helpers: a private PostgreSQL (``edgeward.attestation.service.devpostgres``), beside the
Mosquitto of ``fixtures_mqtt``.

``postgres_server`` is one server for the session (``initdb`` takes seconds), stopped at its end;
``postgres`` is a fresh empty database on it for each test, as a :class:`PostgresSettings`.
``store_backend`` parametrizes a test over both stores: ``None`` (the SQLite files) and a fresh
PostgreSQL database; store-contract tests take it and run once per store.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.service.devpostgres import PrivatePostgres

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(durable=False).start()
    try:
        yield server
    finally:
        server.stop()


def migrated(server: PrivatePostgres) -> PostgresSettings:
    """A fresh database on ``server`` at the schema this code knows (as after
    ``edgeward verifier migrate``)."""
    from edgeward.attestation.service.migrate import STORES, pg_migrate
    from edgeward.attestation.service.pg import connect

    settings = PostgresSettings(url=server.create_database(f"t{next(_names)}"), pool_size=4)
    with connect(settings) as conn:
        for store in STORES:
            pg_migrate(conn, store, settings.url)
    return settings


@pytest.fixture
def postgres(postgres_server: PrivatePostgres) -> PostgresSettings:
    return migrated(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> PostgresSettings | None:
    """None for the SQLite files, else the settings of a fresh migrated PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return migrated(request.getfixturevalue("postgres_server"))
