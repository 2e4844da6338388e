"""Schema migrations: ``edgeward verifier migrate`` says what it applies, and a worker refuses a
schema it does not know (not migrated, or newer than its code) with one line saying what to do."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from edgeward.attestation.service.devpostgres import PrivatePostgres
from edgeward.attestation.service.fleet_store import FleetStore
from edgeward.attestation.service.migrate import STORES, latest, migrations, statements
from edgeward.attestation.service.verifier_store import Store
from edgeward.core.errors import ConfigError

VERIFIER = """[service]
worker = "w1"
store = "fleet.sqlite"

[mqtt]
tls = false
port = 1
"""


def edgeward(*args: str) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-c", "from edgeward.agent.cli import main; main()",
                        *args], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def test_migrations_are_numbered_and_cover_both_dialects() -> None:
    for store in STORES:
        for dialect in ("sqlite", "postgresql"):
            ms = migrations(store, dialect)
            assert [m.version for m in ms] == list(range(1, len(ms) + 1)) and ms
            assert all(statements(m.sql) for m in ms)
        assert latest(store, "sqlite") == latest(store, "postgresql")


def test_postgres_worker_refuses_an_unmigrated_then_a_newer_schema(
        postgres_server: PrivatePostgres, tmp_path: Path) -> None:
    url = postgres_server.create_database("migrate_cli")
    cfg = tmp_path / "verifier.toml"
    cfg.write_text(VERIFIER + f'\n[store]\nurl = "{url}"\n')

    code, out, err = edgeward("verifier", "run", "--config", str(cfg))
    said = [ln for ln in err.splitlines() if ln.startswith("edgeward:")]  # not the log lines
    assert code == 1 and len(said) == 1 and "Traceback" not in err, err
    assert "schema version 0" in said[0] and "run edgeward verifier migrate" in said[0]

    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg), "--check")
    assert code == 1 and "pending: 0001_initial" in out and "up to date" not in out
    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg), "--dry-run")
    assert code == 0 and "CREATE TABLE fleet_messages" in out
    with psycopg.connect(url) as conn:  # --dry-run applied nothing
        assert conn.execute("SELECT to_regclass('fleet_messages')").fetchone() == (None,)

    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg))
    assert code == 0, out
    assert "fleet store (postgresql 127.0.0.1" in out and "applying 0001_initial" in out
    assert "verifier store" in out and "now at schema version 1" in out
    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg), "--check")
    assert code == 0 and out.count("up to date") == 2

    with psycopg.connect(url, autocommit=True) as conn:  # a newer edgeward migrated it further
        conn.execute("INSERT INTO edgeward_migrations VALUES ('fleet', 99, 'future', 0)")
    code, out, err = edgeward("verifier", "run", "--config", str(cfg))
    assert code == 1 and "newer than this edgeward knows" in err, err
    code, out, err = edgeward("verifier", "migrate", "--config", str(cfg))
    assert code == 1 and "newer than this edgeward knows" in err, err


def test_postgres_unreachable_is_one_line(tmp_path: Path) -> None:
    from edgeward.attestation.service.devpostgres import free_port

    cfg = tmp_path / "verifier.toml"
    cfg.write_text(VERIFIER + f'\n[store]\nurl = "postgresql://x@127.0.0.1:{free_port()}/db"\n'
                   "connect_timeout = 2\n")
    code, _, err = edgeward("verifier", "migrate", "--config", str(cfg))
    assert code == 3 and len(err.strip().splitlines()) == 1, err
    assert "cannot connect to postgresql 127.0.0.1" in err and "Traceback" not in err


@pytest.mark.parametrize(("body", "says"), [
    ('[store]\nurl = "mysql://db/x"\n', "key 'store.url' must be a postgresql:// URL"),
    ('[store]\nurl = "postgresql://db/x"\npool = 3\n', "pool"),
    ('[store]\nurl = "postgresql://db/x"\npool_size = 0\n', "store.pool_size"),
])
def test_store_table_errors_name_the_key(tmp_path: Path, body: str, says: str) -> None:
    from edgeward.attestation.service.config import load_service_config

    cfg = tmp_path / "verifier.toml"
    cfg.write_text(VERIFIER + body)
    with pytest.raises(ConfigError, match=says):
        load_service_config(cfg)


def test_sqlite_migrate_creates_private_files_and_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "verifier.toml"
    cfg.write_text(VERIFIER)
    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg), "--check")
    assert code == 1 and "pending: 0001_initial" in out
    assert not (tmp_path / "fleet.sqlite").exists()  # --check creates nothing
    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg))
    assert code == 0 and "fleet store (sqlite " in out and "applying 0001_initial" in out
    assert stat.S_IMODE((tmp_path / "fleet.sqlite").stat().st_mode) == 0o600
    code, out, _ = edgeward("verifier", "migrate", "--config", str(cfg))
    assert code == 0 and "up to date, schema version 1" in out


def test_sqlite_store_of_an_older_release_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    """A fleet.sqlite and verifier.sqlite made before versioned migrations (no contig, no
    board/ueid/anchor/certs columns) open, gain the columns and keep their rows."""
    f = tmp_path / "fleet.sqlite"
    db = sqlite3.connect(f)
    db.executescript("""
        CREATE TABLE messages (device TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
            ts REAL NOT NULL, received REAL NOT NULL, worker TEXT NOT NULL, body BLOB NOT NULL,
            PRIMARY KEY (device, seq));
        CREATE TABLE devices (device TEXT PRIMARY KEY, status TEXT, last_seen REAL,
            next_challenge REAL, cmd_seq INTEGER NOT NULL DEFAULT 0);
        INSERT INTO devices (device, status) VALUES ('lock-1', 'online');
        INSERT INTO messages VALUES ('lock-1', 1, 'metrics', 1.0, 1.0, 'w', x'a0');
    """)
    db.close()
    st = FleetStore(f)
    assert st.devices() == ["lock-1"] and st.contiguous("lock-1") == 1
    st.close()
    v = tmp_path / "verifier.sqlite"
    db = sqlite3.connect(v)
    db.executescript("""
        CREATE TABLE devices (device TEXT PRIMARY KEY, key_id BLOB NOT NULL UNIQUE,
            spki BLOB NOT NULL, endorsement TEXT NOT NULL, issuer TEXT NOT NULL,
            enrolled_at REAL NOT NULL, last_bootcount INTEGER,
            key_kind TEXT NOT NULL DEFAULT 'software');
        INSERT INTO devices VALUES ('lock-1', x'01', x'02', 'x509', 'CN=m', 1.0, 4, 'tpm');
    """)
    db.close()
    vs = Store(v)
    d = vs.device("lock-1")
    assert d is not None and (d.last_bootcount, d.key_kind, d.board) == (4, "tpm", None)
    vs.close()


def test_sqlite_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    FleetStore(tmp_path / "fleet.sqlite").close()
    db = sqlite3.connect(tmp_path / "fleet.sqlite")
    db.execute("INSERT INTO edgeward_migrations VALUES ('fleet', 99, 'future', 0)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer than this edgeward knows"):
        FleetStore(tmp_path / "fleet.sqlite")


def test_two_migrations_at_once_apply_each_migration_once(
        postgres_server: PrivatePostgres) -> None:
    """Two operators (or two hosts' deploy scripts) run ``verifier migrate`` at the same moment:
    the advisory lock makes one wait, and it then finds nothing left to apply."""
    import threading

    from edgeward.attestation.config import PostgresSettings
    from edgeward.attestation.service.migrate import pg_migrate
    from edgeward.attestation.service.pg import connect

    settings = PostgresSettings(url=postgres_server.create_database("migrate_race"))
    gate = threading.Barrier(2)
    applied: list[tuple[str, str]] = []

    def run() -> None:
        with connect(settings) as conn:
            gate.wait()
            for store in STORES:
                applied.extend((store, m.label) for m in pg_migrate(conn, store, "db"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(applied) == [("fleet", "0001_initial"), ("verifier", "0001_initial")]
    with psycopg.connect(settings.url) as conn:
        rows = conn.execute("SELECT store, version FROM edgeward_migrations "
                            "ORDER BY store").fetchall()
    assert rows == [("fleet", 1), ("verifier", 1)]
