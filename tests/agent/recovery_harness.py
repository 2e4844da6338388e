"""A small fleet through broker restarts, with the shipped settings, measured.

Used by ``tests/agent/test_recovery.py`` (the goals, asserted) and ``benchmarks/bench_recovery.py``
(the figures for docs/BENCHMARKS.md). Everything is real and runs as an operator runs it:

* Mosquitto with the shipped ``deploy/mosquitto.conf`` (``autosave_interval 60``, persistence,
  dynamic-security with ``deploy/acl``), on loopback (:class:`~edgeward.simulator.devbroker.Mosquitto`);
* ``workers`` × ``edgeward verifier run``, one certificate each, on the ``$share/edgeward``
  subscription, one SQLite fleet store, a command key (so end-to-end acks), ``[metrics]`` on for
  the health endpoint, every other setting the default (the worker back-off included);
* ``devices`` × ``edgeward agent run`` with the shipped ``[mqtt]`` back-off and ``[outbox]``
  (``ack_timeout`` 60 s, end-to-end acks), reporting every ``interval`` seconds.

A fault (:meth:`Fleet.broker_restart`) SIGKILLs the broker (nothing saved since its last
autosave), waits ``down`` seconds while the devices keep numbering reports, starts it again on
the same port and measures, from the moment it listens again: when each worker's ``/health``
says ready (connected and subscribed), and when every report each device had numbered by the
time the workers were back is in the fleet store (the drain).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agent_helpers import write_agent_config
from fixtures_mqtt import Mosquitto, TestCA, free_port

from edgeward.attestation.service.fleet_store import FleetStore
from edgeward.core.keys import generate, write_keypair

EDGEWARD = str(Path(sys.executable).parent / "edgeward")


@dataclass(frozen=True)
class Restart:
    down: float  # seconds the broker was down
    workers_back: tuple[float, ...]  # per worker: broker listening -> worker ready (s)
    drain: float  # last worker ready -> every device's backlog stored (s)
    backlog: int  # reports numbered from the kill until the workers were back, all devices
    devices_back: float  # broker listening -> last device connected again (agents' logs)

    @property
    def drain_after_all(self) -> float:
        """Backlog stored, counted from when the last worker *and* the last device were back."""
        return self.drain - max(0.0, self.devices_back - max(self.workers_back))

    def line(self) -> str:
        return (f"down {self.down:.1f}s: workers ready after "
                f"{', '.join(f'{b:.2f}' for b in self.workers_back)} s, last device connected "
                f"after {self.devices_back:.2f} s; backlog {self.backlog} reports stored "
                f"{self.drain:.2f} s after the last worker was back, {self.drain_after_all:.2f} s "
                "after the last worker and device")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def numbered(state: Path) -> int:
    """Reports the agent has numbered so far (its outbox's next seq - 1), read-only beside it."""
    db = state / "outbox.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            row = c.execute("SELECT v FROM meta WHERE k='next_seq'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) - 1 if row else 0


class Fleet:
    def __init__(self, root: Path, *, devices: int = 4, workers: int = 2,
                 interval: float = 0.2, agent_backoff: tuple[float, float] | None = None) -> None:
        self.root = root
        self.ca = TestCA(root / "ca")
        (root / "broker").mkdir(parents=True)
        self.broker = Mosquitto(root / "broker", self.ca)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.agents: list[subprocess.Popen[bytes]] = []
        self.store: FleetStore | None = None
        self.broker.start()
        try:
            self._start(devices, workers, interval, agent_backoff)
        except BaseException:
            self.close()  # nothing left running when the fleet cannot start
            raise

    def _start(self, devices: int, workers: int, interval: float,
               agent_backoff: tuple[float, float] | None) -> None:
        root = self.root
        priv, pub = write_keypair(root / "backend", generate("ed25519"))
        self.store_path = root / "fleet.sqlite"
        self.ports: list[int] = []
        self.names = [f"dev-{i}" for i in range(devices)]
        for i in range(workers):
            c = self.ca.issue(f"edgeward-verifier-w{i}")
            port = free_port()
            cfg = root / f"verifier-w{i}.toml"
            cfg.write_text(f"""
[service]
worker = "w{i}"
store = "{self.store_path}"

[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
ca = "{self.ca.ca}"
cert = "{c.cert}"
key = "{c.key}"

[commands]
key = "{priv}"

[metrics]
port = {port}
""")
            self.ports.append(port)
            self.workers.append(subprocess.Popen(
                [EDGEWARD, "verifier", "run", "--config", str(cfg)],
                stderr=open(root / f"worker-w{i}.log", "wb")))
        self.wait(lambda: all(healthy(p) for p in self.ports), 30, "workers ready")
        for name in self.names:
            cfg = write_agent_config(root / f"{name}.toml", self.broker, self.ca, name,
                                     interval=interval, command_trust=pub)
            text = cfg.read_text()  # the shipped [mqtt] back-off and keepalive, or agent_backoff
            for line in ("backoff_base = 0.05\n", "backoff_cap = 0.5\n", "keepalive = 5\n"):
                text = text.replace(line, "")
            if agent_backoff is not None:
                text = text.replace("[mqtt]\n", f"[mqtt]\nbackoff_base = {agent_backoff[0]}\n"
                                                 f"backoff_cap = {agent_backoff[1]}\n")
            cfg.write_text(text)
            self.agents.append(subprocess.Popen(
                [EDGEWARD, "agent", "run", "--config", str(cfg)],
                stderr=open(root / f"agent-{name}.log", "wb")))
        store = self.store = FleetStore(self.store_path, worker="observer")
        self.wait(lambda: all(store.highest(n) >= 2 for n in self.names), 120,
                  "every device reporting")

    @staticmethod
    def wait(pred: object, timeout: float, what: str, step: float = 0.1) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():  # type: ignore[operator]
                return time.monotonic()
            time.sleep(step)
        raise AssertionError(f"timed out after {timeout}s waiting for: {what}")

    def numbered(self) -> dict[str, int]:
        return {n: numbered(self.root / f"state-{n}") for n in self.names}

    @property
    def fleet_store(self) -> FleetStore:
        assert self.store is not None, "the fleet has not started"
        return self.store

    def stored_upto(self, name: str, upto: int) -> bool:
        g = self.fleet_store.gaps(name)
        return g.highest >= upto and all(a > upto for a, _ in g.missing)

    def broker_restart(self, down: float, *, drain_timeout: float = 180.0) -> Restart:
        before = sum(self.numbered().values())
        self.broker.stop(signal.SIGKILL)
        time.sleep(down)
        self.broker.start()  # returns once the port accepts connections
        up, up_wall = time.monotonic(), time.time()
        back = []
        pending = dict(enumerate(self.ports))
        while pending:
            for i, port in list(pending.items()):
                if healthy(port):
                    back.append((i, time.monotonic() - up))
                    del pending[i]
            if time.monotonic() - up > 120:
                raise AssertionError(f"workers {sorted(pending)} not back after 120 s")
            time.sleep(0.02)
        t_back = time.monotonic()
        target = self.numbered()
        self.wait(lambda: all(self.stored_upto(n, target[n]) for n in self.names),
                  drain_timeout, f"every device's backlog stored ({target})", step=0.05)
        drain = time.monotonic() - t_back
        return Restart(down, tuple(b for _, b in sorted(back)), drain,
                       sum(target.values()) - before, self.devices_connected(up_wall) - up_wall)

    def devices_connected(self, since: float) -> float:
        """When the last device connected again at or after ``since`` (wall clock), from the
        agents' logs ("connected to broker ... after N failed attempts", millisecond stamps)."""
        last = since
        for name in self.names:
            for line in (self.root / f"agent-{name}.log").read_text(errors="replace") \
                    .splitlines():
                m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*connected to broker", line)
                if not m:
                    continue
                t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + \
                    int(m.group(2)) / 1000
                if t >= since - 0.5:  # the log's stamp is taken after broker_restart's clock
                    last = max(last, t)
                    break
        return last

    def kept(self, name: str) -> set[int]:
        """Seqs still in a stopped agent's outbox (not acknowledged: it sends them next time)."""
        with sqlite3.connect(self.root / f"state-{name}" / "outbox.db") as c:
            return {r[0] for r in c.execute("SELECT seq FROM msg")}

    def stop(self) -> int:
        """Stop the agents (SIGTERM: they flush for a few seconds), then check nothing is lost:
        every report each numbered is in the store or still in its outbox (kept for its next
        start). Returns the number of reports numbered. Then the workers and the broker."""
        try:
            for a in self.agents:
                a.send_signal(signal.SIGTERM)
            for a in self.agents:
                a.wait(30)
            final = self.numbered()

            def lost() -> dict[str, list[int]]:
                out = {}
                for n in self.names:
                    have = {s for s, _, _ in self.fleet_store.messages(n)}
                    gone = sorted(set(range(1, final[n] + 1)) - have - self.kept(n))
                    if gone:
                        out[n] = gone
                return out

            self.wait(lambda: not lost(), 60, "every report stored or kept by its device")
            return sum(final.values())
        finally:
            self.close()

    def close(self) -> None:
        for p in (*self.agents, *self.workers):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (*self.agents, *self.workers):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.store is not None:
            self.store.close()
        self.broker.stop()
