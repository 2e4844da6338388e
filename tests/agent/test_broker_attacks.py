"""A device certificate attacks the shipped broker configuration, against a real Mosquitto.

On 979eb13 (``deploy/mosquitto.conf`` with an ``acl_file``) a device could join the verifiers'
shared subscription and swallow a round-robin share of the fleet's reports, connect with
another device's or a verifier worker's client id (kicking it off, or destroying the worker's
queued session), and subscribe to anything (filtered only at delivery). The broker here runs the
shipped configuration: the client id is the certificate's name, and the dynamic-security plugin
refuses the SUBSCRIBE itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_mqtt import Mosquitto, TestCA, paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeward.agent.envelope import Envelope, encode, topic
from edgeward.attestation.service.fleet_store import FleetStore
from edgeward.core.errors import ConfigError
from edgeward.deploy import deploy_file

EDGEWARD = str(Path(sys.executable).parent / "edgeward")
REFUSED = 135  # MQTT v5 reason code "Not authorized"


class Client:
    """A bare paho v5 client that records SUBACK codes, PUBACKs, messages and disconnects."""

    def __init__(self, broker: Mosquitto, ca: TestCA, cn: str, client_id: str | None = None,
                 *, clean_start: bool = True, register: bool = True) -> None:
        self.c = paho_client(broker, ca.issue(cn, register=register), client_id or cn)
        self.subacks: list[list[int]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.disconnects: list[Any] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.c.on_connect = lambda *_a: self.connected.set()
        self.c.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.append(
            [r.value for r in rcs])
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc)
        self.c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean_start else 600
        self.c.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
        self.c.loop_start()
        assert self.connected.wait(5), f"{cn} did not connect"

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        with self._lock:
            self.messages.append((m.topic, m.payload))

    def subscribe(self, *topics: str) -> list[int]:
        before = len(self.subacks)
        self.c.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        deadline = time.monotonic() + 5
        while len(self.subacks) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.subacks[-1]

    def publish(self, name: str, payload: bytes) -> int:
        info = self.c.publish(name, payload, qos=1)
        info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pubacks.get(info.mid, -1)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def report(device: str, seq: int) -> bytes:
    return encode(Envelope(seq=seq, ts=time.time(), device=device, type="metrics",
                           body={"n": seq}))


def wait(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_attack_device_joins_the_verifiers_shared_subscription_refused(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """The reviewer's proof: three rogue devices in $share/edgeward left the verifier 10 of 40."""
    worker = Client(mosquitto, test_ca, "edgeward-verifier-w0")
    assert worker.subscribe("$share/edgeward/edgeward/v1/+/report") == [1]
    rogues = [Client(mosquitto, test_ca, f"rogue-{i}") for i in range(3)]
    for r in rogues:
        assert r.subscribe("$share/edgeward/edgeward/v1/+/report",
                           "$share/edgeward/edgeward/v1/+/event",
                           "$share/other/edgeward/v1/#") == [REFUSED] * 3
    dev = Client(mosquitto, test_ca, "lock-1")
    for seq in range(1, 41):
        assert dev.publish(topic("lock-1", "report"), report("lock-1", seq)) == 0
    assert wait(lambda: len(worker.messages) == 40), len(worker.messages)
    assert all(not r.messages for r in rogues)
    for c in (worker, dev, *rogues):
        c.stop()


def test_attack_device_subscribes_outside_its_own_topics_refused(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """Every filter but the device's own four is refused at SUBACK, not filtered at delivery."""
    a = Client(mosquitto, test_ca, "lock-a")
    codes = a.subscribe("edgeward/v1/lock-b/cmd", "edgeward/v1/+/cmd", "#", "edgeward/#",
                        "edgeward/v1/lock-b/attest/challenge", "edgeward/v1/+/report",
                        "$SYS/#", "$CONTROL/dynamic-security/#", "homeassistant/#")
    assert codes == [REFUSED] * 9
    own = ("cmd", "attest/challenge", "attest/result", "ack")
    assert a.subscribe(*(topic("lock-a", k) for k in own)) == [1, 1, 1, 1]
    a.stop()


def test_attack_device_writes_outside_its_own_topics_refused(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    a = Client(mosquitto, test_ca, "lock-w")
    for name in (topic("lock-v", "report"), topic("lock-w", "cmd"), topic("lock-w", "ack"),
                 topic("lock-w", "attest/result"), "homeassistant/sensor/lock-v/x/config"):
        assert a.publish(name, b"x") == REFUSED, name
    assert a.publish(topic("lock-w", "report"), report("lock-w", 1)) in (0, 16)  # 16: no one
    # subscribed, but accepted
    a.stop()


def test_attack_device_registers_itself_as_a_verifier_worker_refused(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """The plugin is administered over $CONTROL; a device may not write there."""
    a = Client(mosquitto, test_ca, "lock-c")
    cmd = {"commands": [{"command": "addGroupClient", "groupname": "edgeward-verifiers",
                         "username": "lock-c"}]}
    assert a.publish("$CONTROL/dynamic-security/v1", json.dumps(cmd).encode()) == REFUSED
    time.sleep(0.3)
    assert a.subscribe("$share/edgeward/edgeward/v1/+/report") == [REFUSED]
    a.stop()


def test_attack_device_connects_with_another_devices_client_id(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """The broker makes the client id the certificate's name: the victim stays connected."""
    victim = Client(mosquitto, test_ca, "lock-v")
    assert victim.subscribe(topic("lock-v", "cmd")) == [1]
    rogue = Client(mosquitto, test_ca, "lock-r", client_id="lock-v")
    backend = Client(mosquitto, test_ca, "edgeward-verifier-w0")
    assert backend.publish(topic("lock-v", "cmd"), b"for-v") == 0
    assert wait(lambda: (topic("lock-v", "cmd"), b"for-v") in victim.messages, 5)
    assert not victim.disconnects
    # the rogue's session is its own: it reads none of the victim's topics
    assert rogue.subscribe(topic("lock-v", "cmd")) == [REFUSED]
    for c in (victim, rogue, backend):
        c.stop()


def test_attack_device_takes_the_verifier_workers_client_id(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """With the worker's id and clean start, a device would end the worker's queued session;
    here it gets its own id, and reports queued for the offline worker are all delivered."""
    worker = Client(mosquitto, test_ca, "edgeward-verifier-w1", clean_start=False)
    worker.c.reconnect_delay_set(60, 60)
    worker.subscribe("$share/edgeward/edgeward/v1/+/report")
    worker.stop()  # offline; its session (expiry) keeps the shared-group membership
    dev = Client(mosquitto, test_ca, "lock-q")
    for seq in range(1, 11):
        dev.publish(topic("lock-q", "report"), report("lock-q", seq))
    rogue = Client(mosquitto, test_ca, "lock-x", client_id="edgeward-verifier-w1")
    rogue.stop()
    back = Client(mosquitto, test_ca, "edgeward-verifier-w1", clean_start=False)
    assert wait(lambda: len(back.messages) == 10), len(back.messages)
    for c in (dev, back):
        c.stop()


def test_worker_certificate_must_carry_a_worker_name(test_ca: TestCA) -> None:
    """A worker whose certificate could be a device's is refused at start (exit 1)."""
    from edgeward.attestation.service.service import worker_client_id

    assert worker_client_id(test_ca.issue("edgeward-verifier-w9").cert, "x") == \
        "edgeward-verifier-w9"
    with pytest.raises(ConfigError, match="not edgeward-verifier-<worker>"):
        worker_client_id(test_ca.issue("lock-9").cert, "edgeward-verifier-w9")


# -- a worker restart loses nothing ------------------------------------------------------------


def _worker_config(tmp: Path, broker: Mosquitto, ca: TestCA, name: str) -> Path:
    c = ca.issue(f"edgeward-verifier-{name}")
    path = tmp / f"verifier-{name}.toml"
    # no [service] worker: the default (host-pid) changes on every restart
    path.write_text(f"""
[service]
store = "{tmp / 'fleet.sqlite'}"
shared_group = "edgeward"
tick = 0.2

[mqtt]
host = "{broker.host}"
port = {broker.port}
ca = "{ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
""")
    return path


def _run_worker(cfg: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([EDGEWARD, "verifier", "run", "--config", str(cfg)],
                         stderr=subprocess.PIPE, start_new_session=True)
    return p


def _stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def test_worker_restart_loses_nothing(mosquitto: Mosquitto, test_ca: TestCA,
                                      tmp_path: Path) -> None:
    """Two workers share the load; one restarts (a new process: a new default worker name)
    while reports arrive. On 979eb13 its old session stayed in the shared group under the old
    host-pid id and swallowed its share (49 of 99 missing by hand); here the client id is the
    certificate's name, so the restarted worker resumes its own session."""
    a_cfg = _worker_config(tmp_path, mosquitto, test_ca, "a")
    b_cfg = _worker_config(tmp_path, mosquitto, test_ca, "b")
    a, b = _run_worker(a_cfg), _run_worker(b_cfg)
    dev = Client(mosquitto, test_ca, "lock-s")
    seq = 0
    store = None
    try:
        time.sleep(2.0)  # both subscribed

        def send(n: int) -> None:
            nonlocal seq
            for _ in range(n):
                seq += 1
                assert dev.publish(topic("lock-s", "report"), report("lock-s", seq)) == 0

        send(30)
        _stop(b)
        send(30)  # half of these are queued for b's offline session
        b = _run_worker(b_cfg)
        time.sleep(2.0)
        send(39)
        store = FleetStore(tmp_path / "fleet.sqlite", worker="test")
        assert wait(lambda: store.gaps("lock-s").received == seq, 20), store.gaps("lock-s")
        g = store.gaps("lock-s")
        assert (g.highest, g.received, g.missing) == (99, 99, ())
    finally:
        dev.stop()
        for p in (a, b):
            if p.poll() is None:
                _stop(p)
        if store is not None:
            store.close()
    assert a.returncode == 0 and b.returncode == 0


# -- registration: deploy/broker-register, and an unregistered certificate --------------------


def _register(broker: Mosquitto, ca: TestCA, kind: str, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEWARD_BROKER_HOST": broker.host,
           "EDGEWARD_BROKER_PORT": str(broker.port), "EDGEWARD_BROKER_CA": str(ca.ca),
           "EDGEWARD_BROKER_ADMIN_CERT": str(broker.admin.cert),
           "EDGEWARD_BROKER_ADMIN_KEY": str(broker.admin.key)}
    return subprocess.run(["sh", str(deploy_file("broker-register")), kind, name], env=env,
                          capture_output=True, text=True, timeout=120)


def test_unregistered_certificate_may_do_nothing_until_broker_register_adds_it(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    """Fail closed: a certificate from the fleet CA that nobody registered reads and writes
    nothing; deploy/broker-register (mosquitto_ctrl) gives a device its own topics only."""
    u = Client(mosquitto, test_ca, "lock-u", register=False)
    assert u.subscribe(topic("lock-u", "cmd")) == [REFUSED]
    assert u.publish(topic("lock-u", "report"), b"x") == REFUSED
    r = _register(mosquitto, test_ca, "device", "lock-u")
    assert r.returncode == 0, r.stderr
    u.stop()  # the plugin disconnects a client whose rights change; it connects again
    u = Client(mosquitto, test_ca, "lock-u", register=False)
    assert u.subscribe(topic("lock-u", "cmd"), "$share/edgeward/edgeward/v1/+/report",
                       topic("lock-z", "cmd")) == [1, REFUSED, REFUSED]
    assert u.publish(topic("lock-u", "report"), b"x") in (0, 16)
    u.stop()


def test_broker_register_makes_a_worker_and_refuses_service_names_for_devices(
    mosquitto: Mosquitto, test_ca: TestCA
) -> None:
    w = Client(mosquitto, test_ca, "edgeward-verifier-w5", register=False)
    assert w.subscribe("$share/edgeward/edgeward/v1/+/report") == [REFUSED]
    r = _register(mosquitto, test_ca, "worker", "edgeward-verifier-w5")
    assert r.returncode == 0, r.stderr
    w.stop()
    w = Client(mosquitto, test_ca, "edgeward-verifier-w5", register=False)
    assert w.subscribe("$share/edgeward/edgeward/v1/+/report") == [1]
    w.stop()
    for kind, name in (("device", "edgeward-verifier-w6"), ("worker", "lock-6"),
                       ("device", "lock/+")):
        bad = _register(mosquitto, test_ca, kind, name)
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, (name, bad.stderr)


def test_fleet_ca_issue_refuses_a_device_certificate_with_a_worker_name(tmp_path: Path) -> None:
    """The client id is the certificate's name: the operator's CA tool keeps the names apart."""
    def issue(role: str, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EDGEWARD, "fleet", "ca", "issue", "--ca", tmp_path / "ca",
                               "--role", role, "--name", name], capture_output=True, text=True)

    subprocess.run([EDGEWARD, "fleet", "ca", "init", "--out", tmp_path / "ca"], check=True,
                   capture_output=True)
    for role, name in (("device", "edgeward-verifier-w1"), ("device", "edgeward-verifier"),
                       ("device", "edgeward-broker-admin"), ("worker", "lock-1"),
                       ("admin", "lock-1"), ("admin", "edgeward-verifier-w1")):
        r = issue(role, name)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (role, name, r)
    ok = issue("worker", "edgeward-verifier-w1")
    assert ok.returncode == 0 and "deploy/broker-register worker edgeward-verifier-w1" in ok.stdout
    assert issue("device", "lock-1").returncode == 0
    assert issue("admin", "edgeward-broker-admin").returncode == 0  # broker-register's client


def test_a_refused_subscription_is_logged_not_silent(mosquitto: Mosquitto, test_ca: TestCA,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A worker the operator forgot to register gets nothing; its transport says why."""
    from edgeward.agent.transport import MqttSettings, MqttTransport

    c = test_ca.issue("edgeward-verifier-w7", register=False)
    s = MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="edgeward-verifier-w7",
                     ca=test_ca.ca, cert=c.cert, key=c.key)
    t = MqttTransport(s, lambda e: None, subscriptions=["$share/edgeward/edgeward/v1/+/report"])
    with caplog.at_level("ERROR"):
        t.start()
        assert t.wait_connected(5)
        assert wait(lambda: any("refused the subscription" in r.message
                                for r in caplog.records), 5)
    t.stop()
    assert "deploy/broker-register" in caplog.text


def test_agent_refuses_a_device_name_that_is_not_its_certificate_name(
    test_ca: TestCA, tmp_path: Path
) -> None:
    """The broker knows a device by its certificate's name; an agent configured with another
    name would have every message refused, so it does not start (exit 1, one line)."""
    from edgeward.agent.config import load_agent_config

    c = test_ca.issue("lock-m")
    text = (f'[device]\nname = "lock-n"\n[mqtt]\nca = "{test_ca.ca}"\ncert = "{c.cert}"\n'
            f'key = "{c.key}"\n')
    (tmp_path / "a.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"certificate .* is for 'lock-m'"):
        load_agent_config(tmp_path / "a.toml")
    (tmp_path / "a.toml").write_text(text.replace('"lock-n"', '"lock-m"'))
    assert load_agent_config(tmp_path / "a.toml").device == "lock-m"
