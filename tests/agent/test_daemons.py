"""The daemons against a real Mosquitto (deploy/mosquitto.conf, dynamic-security plugin): what
they say and how they stop when the broker refuses them, cannot be reached or cannot be
verified, --once, and the verifier's SIGHUP. Each test runs the real command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent_helpers import Collector, write_agent_config
from fixtures_mqtt import Mosquitto, TestCA, free_port

from edgeward.agent.compose import build_agent
from edgeward.agent.config import load_agent_config

CLI = [sys.executable, "-c", "from edgeward.agent.cli import main; main()"]


def edgeward(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def verifier_toml(tmp: Path, broker: Mosquitto, ca: TestCA, worker: str, *,
                  ca_file: Path | None = None, port: int | None = None, extra: str = "") -> Path:
    c = ca.issue(f"edgeward-verifier-{worker}")
    p = tmp / f"verifier-{worker}.toml"
    p.write_text(f"""[service]
worker = "{worker}"
store = "{tmp / ('fleet-' + worker + '.sqlite')}"
tick = 0.2

[mqtt]
host = "127.0.0.1"
port = {port or broker.port}
ca = "{ca_file or ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
backoff_base = 0.05
backoff_cap = 0.5
{extra}""")
    return p


def other_ca(tmp: Path) -> Path:
    return TestCA(tmp / "other-ca").ca


# --- 1. refused delivery does not feed itself; a refused device stops ----------------------


def test_unregistered_device_stops_with_exit_3_instead_of_flooding_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """Attack/misconfiguration: a certificate nobody registered with the broker. Every
    PUBACK is 'Not authorized'; before, each refusal made an outbox.dropped event that was
    refused in turn (thousands of events and ERROR lines); now the agent stops and says why."""
    cfg = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, "lock-unreg",
                             register=False)
    t0 = time.monotonic()
    r = edgeward("agent", "run", "--config", str(cfg), timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    assert time.monotonic() - t0 < 30
    last = r.stderr.strip().splitlines()[-1]
    assert "Not authorized" in last and "broker-register" in last, last
    assert r.stderr.count(" ERROR ") <= 2, r.stderr[-2000:]


def test_refused_drop_reports_do_not_feed_themselves(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """A device whose role lets it publish reports but not events (a wrongly-roled client):
    reports are accepted, every event refused. A refused drop report must not cause another
    report, and another, as fast as the loop turns."""
    dev = "lock-role"
    role = "edgeward-device-partial"
    mosquitto.control([
        {"command": "createRole", "rolename": role},
        *({"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend",
           "topic": f"edgeward/v1/{dev}/{k}", "allow": True} for k in ("status", "report")),
        {"command": "createClient", "username": dev},
        {"command": "addClientRole", "username": dev, "rolename": role},
    ])
    cfg = load_agent_config(write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, dev,
                                               register=False, e2e_ack=False, interval=0.2))
    agent = build_agent(cfg)
    th = threading.Thread(target=agent.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    time.sleep(4.0)
    agent.request_stop()
    th.join(20)
    assert not th.is_alive()
    assert agent.counters.get("delivered", 0) >= 5  # the reports went through
    # refused: agent.started, at most one drop report per connection, agent.stopping
    assert agent.counters.get("broker_rejected", 0) <= 5, agent.counters


# --- 3. connection failures: said at WARNING, exit 3 when retrying cannot help --------------


def test_agent_with_the_wrong_ca_exits_3_naming_the_key(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    cfg = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, "lock-ca")
    cfg.write_text(cfg.read_text().replace(f'ca = "{test_ca.ca}"', f'ca = "{other_ca(tmp_path)}"'))
    r = edgeward("agent", "run", "--config", str(cfg), timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeward: ") and "CERTIFICATE_VERIFY_FAILED" in last
    assert "[mqtt] ca" in last and "cannot reach" not in r.stderr  # no retry line first


def test_verifier_with_the_wrong_ca_exits_3_naming_the_key(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    p = verifier_toml(tmp_path, mosquitto, test_ca, "wca", ca_file=other_ca(tmp_path))
    r = edgeward("verifier", "run", "--config", str(p), timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr and "[mqtt] ca" in r.stderr


def test_unreachable_broker_is_said_at_warning_and_retried(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """Nothing listens on the port: the default log level shows it, the agent keeps trying
    (the broker may come up), and the lines fall off (attempts 1, 2, 4, 8, ...)."""
    cfg = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, "lock-away")
    cfg.write_text(cfg.read_text().replace(f"port = {mosquitto.port}", f"port = {free_port()}"))
    p = subprocess.Popen([*CLI, "agent", "run", "--config", str(cfg)], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    time.sleep(6)
    assert p.poll() is None  # still trying
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    warnings = [ln for ln in err.splitlines() if "WARNING" in ln and "cannot reach" in ln]
    assert warnings and "attempt 1;" in warnings[0], err[-2000:]
    attempts = [int(w.split("attempt ")[1].split(";")[0]) for w in warnings]
    assert all(n & (n - 1) == 0 for n in attempts), attempts  # powers of two only


def test_once_with_no_broker_exits_3(tmp_path: Path, mosquitto: Mosquitto,
                                     test_ca: TestCA) -> None:
    port = free_port()
    cfg = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, "lock-o3")
    cfg.write_text(cfg.read_text().replace(f"port = {mosquitto.port}", f"port = {port}"))
    r = edgeward("agent", "run", "--config", str(cfg), "--once")
    assert r.returncode == 3 and "cannot reach broker" in r.stderr, r.stderr[-2000:]
    v = verifier_toml(tmp_path, mosquitto, test_ca, "o3", port=port)
    r = edgeward("verifier", "run", "--config", str(v), "--once")
    assert r.returncode == 3 and "cannot reach broker" in r.stderr, r.stderr[-2000:]


def test_once_connects_delivers_one_round_and_says_it_serves(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    col = Collector(mosquitto, test_ca).start()
    try:
        cfg = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, "lock-once")
        r = edgeward("agent", "run", "--config", str(cfg), "--once")
        assert r.returncode == 0, r.stderr[-2000:]
        assert "agent lock-once connected to broker" in r.stderr and "serving" in r.stderr
        assert col.wait_for(lambda: col.envelopes("lock-once", "metrics"), 10)
        assert col.envelopes("lock-once", "agent.started")
    finally:
        col.stop()
    v = verifier_toml(tmp_path, mosquitto, test_ca, "once")
    r = edgeward("verifier", "run", "--config", str(v), "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "verifier worker once connected to broker" in r.stderr


# --- 2. the verifier's SIGHUP ---------------------------------------------------------------


def _wait_line(p: subprocess.Popen[str], lines: list[str], text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert p.stderr is not None
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r}: {''.join(lines)[-2000:]}")


def test_verifier_sighup_reloads_and_a_bad_file_keeps_the_running_one(
    tmp_path: Path, mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """Before, SIGHUP killed the worker (exit 129, no log)."""
    v = verifier_toml(tmp_path, mosquitto, test_ca, "hup")
    good = v.read_text()
    p = subprocess.Popen([*CLI, "verifier", "run", "--config", str(v)], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        _wait_line(p, lines, "serving", 30)
        v.write_text(good.replace("tick = 0.2", "tick = 0.3"))
        p.send_signal(signal.SIGHUP)
        line = _wait_line(p, lines, "configuration reloaded from", 30)
        assert str(v.resolve()) in line
        v.write_text(good.replace("tick = 0.2", 'tick = "often"'))
        p.send_signal(signal.SIGHUP)
        line = _wait_line(p, lines, "reload refused", 30)
        assert "service.tick" in line
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_revoked_device_certificate_is_said_and_once_exits_3(tmp_path: Path) -> None:
    """Attack/operations: a device whose certificate the fleet CA revoked. Under TLS 1.3 the
    broker's refusal is an alert after the handshake, which looks like any closed connection,
    so it is retried; it is said at WARNING, naming the certificate, and --once exits 3."""
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", ca)  # reads the CRL when it starts
    cfg = write_agent_config(tmp_path / "agent.toml", broker, ca, "lock-0666")
    cert = next(ln.split('"')[1] for ln in cfg.read_text().splitlines()
                if ln.startswith("cert = "))
    ca.revoke([Path(cert)])
    broker.start()
    try:
        r = edgeward("agent", "run", "--config", str(cfg), "--once")
        assert r.returncode == 3, r.stderr[-2000:]
        assert "closed the connection before accepting it" in r.stderr
        assert "refuses this client certificate" in r.stderr
    finally:
        broker.stop()
