"""The agent against a real broker: reports flow, outbox drains, local events, commands, signals."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent_helpers import Collector, write_agent_config
from fixtures_mqtt import Mosquitto, TestCA

from edgeward.agent.commands import make_command
from edgeward.agent.compose import build_agent
from edgeward.agent.config import load_agent_config
from edgeward.agent.envelope import topic
from edgeward.agent.loop import Agent
from edgeward.core.frames import encode_frame
from edgeward.core.keys import generate, write_keypair


def start_agent(cfg_path: Path) -> tuple[Agent, threading.Thread]:
    agent = build_agent(load_agent_config(cfg_path))
    th = threading.Thread(target=agent.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    return agent, th


def test_reports_flow_and_outbox_drains(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    col = Collector(mosquitto, test_ca).start()
    agent, th = start_agent(write_agent_config(tmp_path / "a.toml", mosquitto, test_ca, "dev-a"))
    try:
        assert col.wait_for(lambda: len(col.envelopes("dev-a", "metrics")) >= 3)
        assert col.status.get("dev-a") == b"online"
        m = col.envelopes("dev-a", "metrics")[0].body
        for k in ("listening_tcp_ports", "listening_udp_ports", "tcp_connections", "network_stats",
                  "cpu_percent", "memory", "disk", "process_count", "agent", "outbox"):
            assert k in m, k
        seqs = col.seqs("dev-a")
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free from 1
    finally:
        agent.request_stop()
        th.join(10)
    assert not th.is_alive()
    assert col.wait_for(lambda: col.status.get("dev-a") == b"offline")
    from edgeward.agent.outbox import Outbox
    ob = Outbox(agent.cfg.outbox.path, "dev-a")
    assert ob.count() == 0, "clean stop flushed the outbox"
    col.stop()


def test_local_events_and_signed_commands(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    key = generate("ed25519")
    _, pub = write_keypair(tmp_path / "backend", key)
    sock = tmp_path / "agent.sock"
    # the Collector plays a backend that sends no end-to-end acks
    cfg = write_agent_config(tmp_path / "a.toml", mosquitto, test_ca, "dev-a", socket=sock,
                             command_trust=pub, interval=5, e2e_ack=False)
    col = Collector(mosquitto, test_ca).start()
    agent, th = start_agent(cfg)
    try:
        assert col.wait_for(lambda: sock.exists())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            # application events: allow-listed names, sent on as app.<name> ([local] allow)
            s.sendall(encode_frame({"type": "anomaly", "ts": 1.0, "body": {"score": 9}}))
            s.sendall(b"\x00\x00\x00\x03\xff\xff\xff")  # malformed CBOR, counted and skipped
            s.sendall(encode_frame({"type": "alarm", "ts": 2.0, "body": {}}))
            time.sleep(0.3)
        assert col.wait_for(lambda: col.envelopes("dev-a", "app.alarm"))
        ev = col.envelopes("dev-a", "app.anomaly")[0]
        assert ev.body["data"] == {"score": 9} and ev.body["pid"] == os.getpid()
        assert agent.local is not None and agent.local.stats.malformed == 1

        now = time.time()
        ok = make_command(key, "dev-a", 1, "set_interval", {"seconds": 1.5}, now=now)
        rogue = make_command(generate("ed25519"), "dev-a", 2, "attest", now=now)
        col.t.publish(topic("dev-a", "cmd"), ok)
        col.t.publish(topic("dev-a", "cmd"), ok)  # replay
        col.t.publish(topic("dev-a", "cmd"), rogue)
        col.t.publish(topic("dev-a", "cmd"), b"\xa1\x01")  # unsigned junk
        col.t.publish(topic("dev-a", "cmd"), make_command(key, "dev-a", 3, "attest", now=now - 120))
        assert col.wait_for(lambda: len(col.envelopes("dev-a", "command.refused")) >= 1)
        assert col.wait_for(lambda: agent.counters.get("command_expired") == 1)
        acc = col.envelopes("dev-a", "command.accepted")
        assert [e.body for e in acc] == [{"seq": 1, "op": "set_interval"}]
        assert agent.cfg.metrics.interval == 1.5
        assert agent.counters["command_replayed"] == 1
        assert agent.counters["command_unsigned"] == 2
        reasons = {e.body["reason"] for e in col.envelopes("dev-a", "command.refused")}
        assert "replayed" in reasons
    finally:
        agent.request_stop()
        th.join(10)
    col.stop()


def test_sigterm_flushes_and_sighup_reloads(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    cfg = write_agent_config(tmp_path / "a.toml", mosquitto, test_ca, "dev-s", interval=0.5)
    col = Collector(mosquitto, test_ca).start()
    p = subprocess.Popen([str(Path(sys.executable).parent / "edgeward"), "agent", "run",
                          "--config", str(cfg)], stderr=subprocess.PIPE)
    try:
        assert col.wait_for(lambda: col.envelopes("dev-s", "metrics"))
        cfg.write_text(cfg.read_text().replace("interval = 0.5", "interval = 0.1"))
        p.send_signal(signal.SIGHUP)
        assert col.wait_for(lambda: col.envelopes("dev-s", "agent.reloaded"))
        n = len(col.envelopes("dev-s", "metrics"))
        # The new interval shows in the device's own timestamps: reports 0.1 s apart (plus the
        # collection time, ~0.2 s on a loaded machine), never the old 0.5 s. Counting reports in
        # a fixed second instead failed whenever the machine was busy.
        assert col.wait_for(lambda: len(col.envelopes("dev-s", "metrics")) - n >= 6, timeout=30)
        ts = [e.ts for e in col.envelopes("dev-s", "metrics")[n:]]
        gaps = sorted(b - a for a, b in itertools.pairwise(ts))
        assert gaps[len(gaps) // 2] < 0.45, gaps
        # a broken config on SIGHUP is refused and the agent keeps running
        good = cfg.read_text()
        cfg.write_text(good + "\n[bogus]\n")
        p.send_signal(signal.SIGHUP)
        assert col.wait_for(lambda: col.envelopes("dev-s", "agent.reload_failed"))
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, p.stderr.read() if p.stderr else ""
        assert col.wait_for(lambda: col.envelopes("dev-s", "agent.stopping"))
        assert col.status.get("dev-s") == b"offline"
    finally:
        if p.poll() is None:
            p.kill()
        col.stop()
