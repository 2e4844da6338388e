"""A private PostgreSQL for tests and benchmarks: ``initdb`` into a temporary folder, a free
loopback port, its unix socket in that folder, ``pg_ctl`` start and stop, the folder removed.

The same way the tests start Mosquitto (``edgeward.simulator.devbroker``): Debian's
``postgresql`` package, nothing installed system-wide, nothing left running. The server listens
on 127.0.0.1 only and trusts local connections (it is reachable by this host alone and lives
as long as the test). ``initdb`` refuses to run as root, so under root the server is run as
``nobody`` through ``setpriv`` (util-linux), its folder owned by ``nobody``; a normal user runs
it as themself.

The binaries are found on ``PATH``, else in ``/usr/lib/postgresql/<version>/bin`` (Debian keeps
them there), the newest version first; ``EDGEWARD_PG_BIN`` names the folder outright.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from edgeward.core.errors import RuntimeMissingError

SUPERUSER = "edgeward"


def pg_bin() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    env = os.environ.get("EDGEWARD_PG_BIN")
    if env:
        return Path(env)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if versions:
        return versions[-1].parent
    raise RuntimeMissingError("PostgreSQL's initdb is not installed",
                              hint="apt-get install postgresql (or set EDGEWARD_PG_BIN)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """One throwaway PostgreSQL server. ``durable=False`` turns fsync off (tests: faster, and a
    test does not survive a power cut anyway); benchmarks keep it on, as production does."""

    def __init__(self, *, durable: bool = True) -> None:
        self.bin = pg_bin()
        self.durable = durable
        self.port = 0
        self.root: Path | None = None
        self._as: list[str] = []
        self._opts = ""

    @property
    def data(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        try:
            subprocess.run([*self._as, *args], check=True, capture_output=True, text=True,
                           cwd=self.root, timeout=120)
        except subprocess.CalledProcessError as e:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {e.stderr or e.stdout}{tail}") from e

    def start(self) -> PrivatePostgres:
        # tempfile.mkdtemp, not a pytest tmp_path: under root the server runs as nobody, who
        # must reach the folder (pytest's are 0700 root); the path stays short for the socket.
        self.root = Path(tempfile.mkdtemp(prefix="edgeward-pg-"))
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._as = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", "--"]
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.port = free_port()
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200 "
                "-c shared_buffers=64MB")
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._opts = opts
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str) -> None:
        assert self.root is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-o", self._opts, "-m", "fast", "-w", "-t",
                  "60", action)

    def restart(self) -> None:
        """Stop and start the server on the same port (fault tests): clients' connections die."""
        self._pg_ctl("restart")

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                self._pg_ctl("stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
