"""The simulator's backend: Mosquitto and the verifier service on loopback, and what they saw.

:class:`SimBackend` starts the Debian Mosquitto with the shipped ``deploy/mosquitto.conf`` and
``deploy/acl`` (through :class:`edgeward.simulator.devbroker.Mosquitto`) and the verifier service
as its own process (``edgeward verifier run --config VERIFIER.toml``), and stops both.
:class:`BackendView` reads the fleet store (the service's SQLite file, shared read-only in WAL
mode) for the runner's expectations: status, messages, gaps, appraisals with their signed EARs
checked against the verifier's public key.

I/O: the broker and service processes, the fleet store file.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError
from edgeward.simulator.process_device import AGENT_CMD, _tail


@dataclass(frozen=True)
class Appraisal:
    seq: int
    status: str
    hardware: int
    reasons: tuple[str, ...]
    at: float


class BackendView:
    """Read-only queries over the fleet store for expectations and the report."""

    def __init__(self, store: Path, ear_public: Path) -> None:
        from edgeward.core.keys import load_verifying_key

        self.path = store
        self._ear_key = load_verifying_key(ear_public)
        self._db: sqlite3.Connection | None = None

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._db is None:
            if not self.path.exists():
                return []
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10,
                                       check_same_thread=False)
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise DeviceError(f"fleet store {self.path}: {e}") from e

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def status(self, device: str) -> str | None:
        rows = self._q("SELECT status FROM devices WHERE device=?", (device,))
        return rows[0][0] if rows else None

    def highest(self, device: str) -> int:
        rows = self._q("SELECT MAX(seq) FROM messages WHERE device=?", (device,))
        return int(rows[0][0] or 0) if rows else 0

    def seqs(self, device: str) -> list[int]:
        return [r[0] for r in self._q("SELECT seq FROM messages WHERE device=? ORDER BY seq",
                                      (device,))]

    def messages(self, device: str, type_: str | None = None, after: int = 0
                 ) -> list[tuple[int, str, float, Any]]:
        from edgeward.core import cbor

        sql = "SELECT seq, type, received, body FROM messages WHERE device=? AND seq>?"
        args: tuple[Any, ...] = (device, after)
        if type_ is not None:
            sql += " AND type=?"
            args += (type_,)
        return [(r[0], r[1], r[2], cbor.loads(r[3])) for r in self._q(sql + " ORDER BY seq",
                                                                       args)]

    def type_counts(self, device: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self._q(
            "SELECT type, COUNT(*) FROM messages WHERE device=? GROUP BY type", (device,))}

    def missing(self, device: str) -> list[tuple[int, int]]:
        """Seq ranges below the highest that the store does not hold (and no drop explains)."""
        from edgeward.attestation.service.gaps import analyse

        drops = [(r[0], r[1]) for r in self._q("SELECT first, last FROM drops WHERE device=?",
                                               (device,))]
        return list(analyse(self.seqs(device), drops).unexplained)

    def appraisals(self, device: str, after: int = 0) -> list[Appraisal]:
        from edgeward.attestation.ear import check_ear

        out = []
        for seq, status, at, blob in self._q(
                "SELECT evidence_seq, status, at, ear FROM appraisals WHERE device=? AND "
                "evidence_seq>? AND status!='pending' ORDER BY evidence_seq", (device, after)):
            hardware = 0
            reasons: tuple[str, ...] = ()
            if blob:
                try:
                    ear = check_ear(bytes(blob), self._ear_key, now=time.time(),
                                    max_age=10**9,  # the signature, not freshness
                                    device=device)
                    hardware = ear.vector.hardware
                    # the agent's reasons, then each submodule's (a lock beside a gateway)
                    reasons = tuple(ear.reasons) + tuple(r for sub in ear.submods
                                                         for r in sub.reasons)
                except Exception as e:  # an EAR we cannot check is itself a finding
                    status, reasons = "unverifiable-ear", (str(e),)
            out.append(Appraisal(seq, status, hardware, reasons, at))
        return out

    def last_evidence(self, device: str) -> tuple[int, bytes] | None:
        msgs = self.messages(device, "attest.evidence")
        for seq, _t, _r, body in reversed(msgs):
            if isinstance(body, dict) and isinstance(body.get("eat"), bytes):
                return seq, body["eat"]
        return None


class SimBackend:
    """Broker and verifier service for one run; a context manager that always stops both."""

    def __init__(self, root: Path, ca: Any, *, broker_hosts: tuple[str, ...] = ()) -> None:
        from edgeward.simulator.devbroker import Mosquitto

        (root / "broker").mkdir(parents=True, exist_ok=True)
        self.root = root
        self.broker = Mosquitto(root / "broker", ca)
        if broker_hosts:  # the broker as QEMU guests reach it: its certificate must name that
            self.broker.server = ca.issue("localhost", server=True,
                                          hosts=("localhost", "127.0.0.1", *broker_hosts))
        self.service: subprocess.Popen[bytes] | None = None
        self.service_log = root / "backend" / "verifier.log"

    def start_broker(self) -> None:
        try:
            self.broker.start()
        except RuntimeError as e:
            raise DeviceError(f"mosquitto did not start: {e}") from e

    def start_service(self, verifier_toml: Path) -> None:
        self.service_log.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.service_log, "ab")
        self.service = subprocess.Popen(
            [*AGENT_CMD, "-v", "verifier", "run", "--config", str(verifier_toml)],
            cwd=verifier_toml.parent, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        store = verifier_toml.parent / "fleet.sqlite"
        deadline = time.monotonic() + 30
        while not store.exists() or "connected" not in self.service_tail(200):
            if self.service.poll() is not None:
                raise DeviceError("the verifier service exited: " + self.service_tail(5))
            if time.monotonic() > deadline:
                raise DeviceError("the verifier service did not connect to the broker in 30 s: "
                                  + self.service_tail(5))
            time.sleep(0.1)

    def service_tail(self, lines: int = 40) -> str:
        return _tail(self.service_log, lines)

    def broker_down(self) -> None:
        self.broker.stop()

    def broker_up(self) -> None:
        self.start_broker()

    def stop(self) -> None:
        if self.service is not None:
            with contextlib.suppress(ProcessLookupError):
                self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(15)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait(5)
            self.service = None
        self.broker.stop()
