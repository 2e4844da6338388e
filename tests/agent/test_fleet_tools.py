"""``edgeward fleet devices|show|events|command``: the operator's tools on a fleet store filled
by the real verifier service (real Mosquitto, real agents), their output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_helpers import service_cfg, start, wait_until, write_agent_config
from fixtures_mqtt import Mosquitto, TestCA

from edgeward.agent.compose import build_agent
from edgeward.agent.config import MqttSettings, load_agent_config
from edgeward.agent.envelope import Envelope, encode, topic
from edgeward.agent.events import Acked
from edgeward.agent.loop import Agent
from edgeward.agent.transport import MqttTransport
from edgeward.attestation.ear import Ear, sign_ear, vector_from
from edgeward.attestation.service import fleet_format, fleet_view
from edgeward.attestation.service.fleet_store import FleetStore
from edgeward.attestation.service.service import VerifierService
from edgeward.core import cbor
from edgeward.core.cose import sign1
from edgeward.core.keys import SigningKey, generate, write_keypair

HOSTILE = "ok\n2026-01-01 00:00:00Z  lock-good  #9  fake.line \x1b[2J\u202eevil"
AFFIRMING = {"instance-identity": 2, "executables": 2, "configuration": 2}
BAD = {"instance-identity": 2, "executables": 96, "configuration": 2}


class EarAppraiser:
    """Signs a real EAR: contraindicated for devices named lock-bad*, else affirming."""

    def __init__(self) -> None:
        self.key = generate("ed25519")

    def challenge(self, device: str, now: float) -> bytes:
        return b"n" * 16

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        bad = device.startswith("lock-bad")
        ear = Ear(vector=vector_from(BAD if bad else AFFIRMING), iat=int(now), device=device,
                  reasons=(f"model digest mismatch {HOSTILE}",) if bad else ())
        return sign_ear(ear, self.key), ear.status_name


@dataclass
class Fleet:
    broker: Mosquitto
    ca: TestCA
    tmp: Path
    svc: VerifierService
    key: SigningKey
    pub: Path
    config: Path  # the operator's VERIFIER.toml: same store, its own certificate

    def store(self) -> FleetStore:
        return FleetStore(self.tmp / "fleet.sqlite", worker="test-reader")

    def device(self, name: str) -> MqttTransport:
        c = self.ca.issue(name)
        t = MqttTransport(MqttSettings(host=self.broker.host, port=self.broker.port,
                                       client_id=name, ca=self.ca.ca, cert=c.cert, key=c.key),
                          lambda e: None)
        t.start()
        assert t.wait_connected(5)
        return t

    def send(self, name: str, msgs: list[tuple[str, bytes, bool]]) -> None:
        """Publish as device ``name`` and wait for every PUBACK (then disconnect)."""
        acked: list[Acked] = []
        c = self.ca.issue(name)
        t = MqttTransport(MqttSettings(host=self.broker.host, port=self.broker.port,
                                       client_id=name, ca=self.ca.ca, cert=c.cert, key=c.key),
                          lambda e: acked.append(e) if isinstance(e, Acked) else None)
        t.start()
        assert t.wait_connected(5)
        for kind, payload, retain in msgs:
            t.publish(topic(name, kind), payload, retain=retain)
        assert self.wait(lambda: len(acked) >= len(msgs))
        t.stop()

    def agent(self, name: str, **kw: object) -> tuple[Agent, threading.Thread]:
        cfg = write_agent_config(self.tmp / f"{name}.toml", self.broker, self.ca, name,
                                 command_trust=self.pub, **kw)  # type: ignore[arg-type]
        agent = build_agent(load_agent_config(cfg))
        th = threading.Thread(target=agent.run, kwargs={"install_signals": False}, daemon=True)
        th.start()
        return agent, th

    def wait(self, pred, timeout: float = 15.0) -> bool:
        return wait_until(pred, timeout, 0.1)


@pytest.fixture
def fleet(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> Iterator[Fleet]:
    key = generate("ed25519")
    priv, pub = write_keypair(tmp_path / "backend", key)
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "w0"),
                          appraiser=EarAppraiser(), command_key=key)
    th = start(svc)
    ops = test_ca.issue("edgeward-verifier-ops")
    config = tmp_path / "OPS.toml"
    config.write_text(f"""
[service]
worker = "ops"
store = "{tmp_path / 'fleet.sqlite'}"

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
ca = "{test_ca.ca}"
cert = "{ops.cert}"
key = "{ops.key}"

[commands]
key = "{priv}"
ttl = 30
""")
    try:
        yield Fleet(mosquitto, test_ca, tmp_path, svc, key, pub, config)
    finally:
        svc.request_stop()
        th.join(10)


def cli(*args: str) -> tuple[int, str, str]:
    """``edgeward ARGS`` in a process of its own: output and the exit code a user sees."""
    p = subprocess.run([str(Path(sys.executable).parent / "edgeward"), *args],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def env(dev: str, seq: int, type_: str, body: dict) -> bytes:
    return encode(Envelope(seq=seq, ts=1.0, device=dev, type=type_, body=body))


def fill(f: Fleet) -> None:
    """lock-good: affirming; lock-bad: contraindicated, a reported drop (3) and an unexplained
    gap (4), hostile text in its evidence claims and an event; then lock-bad goes offline."""
    evidence_key = generate("ed25519")
    eat = sign1(cbor.dumps({259: f"pi4 {HOSTILE}", 271: "1.2.3"}), evidence_key)
    for name in ("lock-good", "lock-bad"):
        msgs = [("status", b"online", True),
                ("event", env(name, 1, "agent.started", {"pending": 0}), False),
                ("attest/evidence", env(name, 2, "attest.evidence",
                                        {"nonce": b"n" * 16, "eat": eat}), False)]
        if name == "lock-bad":
            msgs += [("event", env(name, 5, "outbox.dropped", {"ranges": [[3, 3]]}), False),
                     ("event", env(name, 6, "model.rejected",
                                   {"model": HOSTILE, "reason": "digest"}), False),
                     ("report", env(name, 7, "metrics", {"cpu": 3.5}), False)]
        f.send(name, msgs)
    s = f.store()
    try:
        assert f.wait(lambda: len([a for a in s.appraisals() if a[2] != "pending"]) == 2
                      and s.highest("lock-bad") == 7)
    finally:
        s.close()
    f.send("lock-bad", [("status", b"offline", True)])
    s = f.store()
    try:
        assert f.wait(lambda: s.status("lock-bad") == "offline")
    finally:
        s.close()


def test_views_on_a_store_filled_by_the_real_service(fleet: Fleet) -> None:
    fill(fleet)
    s = fleet.store()
    try:
        rows = {r.name: r for r in fleet_view.devices(s)}
        assert (rows["lock-good"].state, rows["lock-good"].attestation) == ("online", "affirming")
        assert (rows["lock-bad"].state, rows["lock-bad"].attestation) == ("offline",
                                                                          "contraindicated")
        assert rows["lock-bad"].unexplained == 1 and rows["lock-good"].unexplained == 0
        assert [r.name for r in fleet_view.devices(s, "contraindicated")] == ["lock-bad"]
        assert [r.name for r in fleet_view.devices(s, "online")] == ["lock-good"]
        assert [r.name for r in fleet_view.devices(s, "offline")] == ["lock-bad"]

        d = fleet_view.show(s, "lock-bad")
        assert d is not None and fleet_view.show(s, "lock-nobody") is None
        assert d.gaps.explained == ((3, 3),) and d.gaps.unexplained == ((4, 4),)
        assert d.attestations[0].vector["executables"] == 96
        assert d.attestations[0].reasons[0].startswith("model digest mismatch")
        assert d.identity["hwmodel"].startswith("pi4") and d.identity["swversion"] == "1.2.3"
        assert d.identity["agent.pending"] == 0
        assert [m.type for m in d.events] == ["model.rejected", "outbox.dropped", "agent.started"]
        assert [m.body for m in d.reports] == [{"cpu": 3.5}]

        evs = fleet_view.events(s, types=("model.rejected",))
        assert [(m.device, m.seq) for m in evs] == [("lock-bad", 6)]
        assert {m.type for m in fleet_view.events(s)} == {"agent.started", "outbox.dropped",
                                                          "model.rejected",
                                                          "fleet.contraindicated"}
        assert "@fleet" not in rows  # the backend's own events are not a device
        last = fleet_view.events(s, limit=1, newest=True)
        assert len(last) == 1 and fleet_view.events(s, after=last[0].id) == []
    finally:
        s.close()


def test_attack_hostile_device_text_cannot_forge_lines_or_reach_the_terminal(
    fleet: Fleet
) -> None:
    fill(fleet)
    s = fleet.store()
    try:
        d = fleet_view.show(s, "lock-bad")
        evs = fleet_view.events(s)
    finally:
        s.close()
    assert d is not None
    text = fleet_format.detail_text(d)
    lines = "\n".join(fleet_format.event_line(m) for m in evs)
    for out in (text, lines, fleet_format.detail_json(d)):
        assert "\x1b" not in out and "\u202e" not in out
        assert "fake.line" not in out.split("\n")[0]
    assert "\\x1b[2J" in text and "\\u202e" in text  # shown, escaped
    assert len(lines.split("\n")) == len(evs)  # one line per event, none forged
    assert not any(line.startswith("2026-01-01") for line in (text + "\n" + lines).split("\n"))


def test_cli_devices_show_events_output_and_exit_codes(fleet: Fleet, tmp_path: Path) -> None:
    fill(fleet)
    c = str(fleet.config)
    code, out, _ = cli("fleet", "devices", "--config", c)
    assert code == 0
    good = next(line for line in out.splitlines() if line.startswith("lock-good"))
    assert "online" in good and "affirming" in good
    code, out, _ = cli("fleet", "devices", "--state", "contraindicated", "--json", "--config", c)
    assert code == 0
    got = json.loads(out)["devices"]
    assert [(x["device"], x["state"], x["unexplained_gaps"]) for x in got] == [
        ("lock-bad", "offline", 1)]

    code, out, _ = cli("fleet", "show", "lock-bad", "--config", c)
    assert code == 0 and "UNEXPLAINED: 4" in out and "reported dropped: 3" in out
    assert "executables=96" in out and "\x1b" not in out
    code, out, _ = cli("fleet", "show", "lock-bad", "--json", "--config", c)
    assert json.loads(out)["attestations"][0]["ear.trustworthiness-vector"]["executables"] == 96
    code, _, err = cli("fleet", "show", "lock-nobody", "--config", c)
    assert code == 1 and "no device 'lock-nobody'" in err and len(err.splitlines()) <= 2

    code, out, _ = cli("fleet", "events", "--type", "model.rejected", "--since", "1h",
                       "--config", c)
    assert code == 0 and len(out.splitlines()) == 1 and "lock-bad  #6  model.rejected" in out
    code, out, _ = cli("fleet", "events", "--json", "--config", c)
    assert [json.loads(x)["type"] for x in out.splitlines()].count("agent.started") == 2
    code, _, err = cli("fleet", "events", "--since", "yesterday", "--config", c)
    assert code == 1 and "--since" in err

    empty = tmp_path / "EMPTY.toml"
    empty.write_text(fleet.config.read_text().replace("fleet.sqlite", "none.sqlite"))
    code, _, err = cli("fleet", "devices", "--config", str(empty))
    assert code == 1 and "no fleet store" in err and "verifier run" in err


def test_fleet_command_reaches_a_real_agent_and_prints_its_answer(fleet: Fleet) -> None:
    a, th = fleet.agent("lock-a", interval=5)
    b, thb = fleet.agent("lock-b", interval=5)
    s = fleet.store()
    try:
        assert fleet.wait(lambda: {r.name for r in fleet_view.devices(s, "online")}
                          == {"lock-a", "lock-b"})
        c = str(fleet.config)
        code, out, err = cli("fleet", "command", "lock-a", "set_interval", "seconds=2",
                             "--config", c)
        assert code == 0, err
        assert "lock-a  command #1 set_interval: accepted" in out
        assert a.cfg.metrics.interval == 2

        # a key the device does not trust: refused, the device says why (exit 2)
        rogue = generate("ed25519")
        rpriv, _ = write_keypair(fleet.tmp / "rogue", rogue)
        code, out, _ = cli("fleet", "command", "lock-a", "attest", "--key", str(rpriv),
                           "--config", c)
        assert code == 2 and "refused (unsigned" in out

        # nobody answers: a clear message and exit 3
        code, out, err = cli("fleet", "command", "lock-ghost", "attest", "--timeout", "1",
                             "--config", c)
        assert code == 3 and "lock-ghost  command #1 attest: timeout" in err
        assert "did not answer within 1s" in err

        # fleet-wide, rate-limited: 2 per second, so the second goes out >= 0.5 s later
        t0 = time.monotonic()
        code, out, err = cli("fleet", "command", "--all", "reverify", "--rate", "2",
                             "--config", c)
        assert time.monotonic() - t0 >= 0.5
        assert code == 0, err
        assert sorted(line.split()[0] for line in out.splitlines()) == ["lock-a", "lock-b"]
        assert "lock-a  command #3 reverify: accepted" in out  # seqs continue per device
        assert "lock-b  command #1 reverify: accepted" in out

        code, _, err = cli("fleet", "command", "lock-a", "selfdestruct", "--config", c)
        assert code == 1 and "not known" in err
        code, _, err = cli("fleet", "command", "lock-a", "set_interval", "seconds=0",
                           "--config", c)
        assert code == 1 and "seconds" in err
        code, _, err = cli("fleet", "command", "lock+a", "attest", "--config", c)
        assert code == 1 and "not valid" in err
    finally:
        s.close()
        for agent, t in ((a, th), (b, thb)):
            agent.request_stop()
            t.join(10)
