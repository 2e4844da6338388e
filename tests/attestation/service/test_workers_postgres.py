"""End to end: two ``edgeward verifier run`` workers (real processes) share a real Mosquitto's
shared subscription and one private PostgreSQL; real agents report; every report is stored once,
and both workers did part of the storing."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from agent_helpers import write_agent_config
from fixtures_mqtt import Mosquitto, TestCA

from edgeward.agent.compose import build_agent
from edgeward.agent.config import load_agent_config
from edgeward.attestation.config import PostgresSettings

DEVICES = 4


def worker_toml(tmp: Path, broker: Mosquitto, ca: TestCA, worker: str, url: str) -> Path:
    c = ca.issue(f"edgeward-verifier-{worker}")
    p = tmp / f"verifier-{worker}.toml"
    p.write_text(f"""[service]
worker = "{worker}"
tick = 0.2

[store]
url = "{url}"

[mqtt]
host = "127.0.0.1"
port = {broker.port}
ca = "{ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
backoff_base = 0.05
backoff_cap = 0.5
""")
    return p


@pytest.mark.slow
def test_two_workers_one_postgres_every_report_stored_once(
        mosquitto: Mosquitto, test_ca: TestCA, postgres: PostgresSettings,
        tmp_path: Path) -> None:
    workers = [subprocess.Popen(
        [sys.executable, "-c", "from edgeward.agent.cli import main; main()", "verifier", "run",
         "--config", str(worker_toml(tmp_path, mosquitto, test_ca, w, postgres.url))],
        stderr=subprocess.PIPE, text=True) for w in ("w1", "w2")]
    agents, threads = [], []
    try:
        time.sleep(2.0)  # both subscribed before the agents speak
        for w in workers:
            assert w.poll() is None, w.stderr.read() if w.stderr else ""
        for i in range(DEVICES):
            cfg = load_agent_config(write_agent_config(
                tmp_path / f"agent-{i}.toml", mosquitto, test_ca, f"lock-{i}", e2e_ack=False,
                interval=0.1))
            a = build_agent(cfg)
            th = threading.Thread(target=a.run, kwargs={"install_signals": False}, daemon=True)
            th.start()
            agents.append(a)
            threads.append(th)
        deadline = time.monotonic() + 90  # a loaded machine starts agents slowly
        while time.monotonic() < deadline and \
                min(a.counters.get("delivered", 0) for a in agents) < 10:
            time.sleep(0.2)
        for a in agents:
            a.request_stop()
        for th in threads:
            th.join(30)
            assert not th.is_alive()
        delivered = {f"lock-{i}": a.counters.get("delivered", 0) for i, a in enumerate(agents)}
        with psycopg.connect(postgres.url) as conn:
            deadline = time.monotonic() + 20
            while True:  # the workers store what the broker already acknowledged to the agents
                rows = conn.execute("SELECT device, COUNT(*), COUNT(DISTINCT seq), MIN(seq), "
                                    "MAX(seq) FROM fleet_messages GROUP BY device").fetchall()
                stored = {r[0]: r for r in rows}
                if all(stored.get(d, (d, 0))[1] >= n for d, n in delivered.items()) or \
                        time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            by_worker: dict[str, int] = dict(conn.execute(
                "SELECT worker, COUNT(*) FROM fleet_messages GROUP BY worker").fetchall())
        for d, n in delivered.items():
            assert n >= 10, (delivered, stored, [a.counters for a in agents])
            _, count, distinct, low, high = stored[d]
            # once each, none missing: seq 1..high, every one the broker acknowledged
            assert count == distinct == high and low == 1 and count >= n, (d, stored[d], n)
        assert set(by_worker) == {"w1", "w2"} and min(by_worker.values()) > 0, by_worker
    finally:
        for a in agents:
            a.request_stop()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                assert w.wait(15) == 0, w.stderr.read()[-2000:] if w.stderr else ""
            finally:
                if w.poll() is None:
                    w.kill()
