"""The transport against a real Mosquitto: TLS with client certs, birth/will, QoS 1, the ACL."""

from __future__ import annotations

import queue
import signal
import time
from pathlib import Path
from typing import Any

from fixtures_mqtt import Mosquitto, TestCA, paho_client

from edgeward.agent.config import MqttSettings
from edgeward.agent.envelope import topic
from edgeward.agent.events import Acked, Connected, Incoming
from edgeward.agent.transport import MqttTransport, StatusTopic


def settings(broker: Mosquitto, ca: TestCA, cn: str, **kw: Any) -> MqttSettings:
    c = ca.issue(cn)
    base: dict[str, Any] = dict(
        host=broker.host, port=broker.port, client_id=cn, ca=ca.ca, cert=c.cert, key=c.key,
        backoff_base=0.05, backoff_cap=0.5,
    )
    base.update(kw)
    return MqttSettings(**base)


def drain(q: queue.Queue[object], kind: type, timeout: float = 5.0) -> list[object]:
    out: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = q.get(timeout=0.05)
        except queue.Empty:
            if out:
                return out
            continue
        if isinstance(ev, kind):
            out.append(ev)
    return out


def test_tls_birth_qos1_and_will(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    vq: queue.Queue[object] = queue.Queue()
    verifier = MqttTransport(
        settings(mosquitto, test_ca, "edgeward-verifier"), vq.put,
        subscriptions=["edgeward/v1/+/status", "edgeward/v1/+/report"],
    )
    verifier.start()
    assert verifier.wait_connected(5)
    time.sleep(0.3)
    dq: queue.Queue[object] = queue.Queue()
    dev = MqttTransport(
        settings(mosquitto, test_ca, "dev-a"), dq.put,
        status=StatusTopic(topic("dev-a", "status")),
    )
    dev.start()
    assert dev.wait_connected(5)
    mid = dev.publish(topic("dev-a", "report"), b"\xa0", expiry=60)
    assert mid is not None
    acks = drain(dq, Acked)
    assert any(a.mid == mid and a.ok for a in acks)  # type: ignore[attr-defined]
    got = [(m.topic, m.payload) for m in drain(vq, Incoming)]  # type: ignore[attr-defined]
    assert (topic("dev-a", "status"), b"online") in got
    assert (topic("dev-a", "report"), b"\xa0") in got
    dev.stop()
    got = [(m.topic, m.payload) for m in drain(vq, Incoming)]  # type: ignore[attr-defined]
    assert (topic("dev-a", "status"), b"offline") in got
    verifier.stop()


def test_will_on_abrupt_loss(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    c = test_ca.issue("dev-w")
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from edgeward.agent.config import MqttSettings
        from edgeward.agent.transport import MqttTransport, StatusTopic
        s = MqttSettings(host="127.0.0.1", port={mosquitto.port}, client_id="dev-w",
            ca=Path({str(test_ca.ca)!r}), cert=Path({str(c.cert)!r}), key=Path({str(c.key)!r}),
            keepalive=2)
        t = MqttTransport(s, lambda e: None, status=StatusTopic("edgeward/v1/dev-w/status"))
        t.start(); t.wait_connected(5); print("up", flush=True); time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"up"
    p.send_signal(signal.SIGKILL)
    p.wait()
    vq: queue.Queue[object] = queue.Queue()
    v = MqttTransport(settings(mosquitto, test_ca, "edgeward-verifier"), vq.put,
                      subscriptions=["edgeward/v1/dev-w/status"])
    v.start()
    deadline = time.monotonic() + 8
    last = None
    while time.monotonic() < deadline and last != b"offline":
        for m in drain(vq, Incoming, 0.5):
            last = m.payload  # type: ignore[attr-defined]
    v.stop()
    assert last == b"offline"


def test_acl_device_cannot_write_or_read_other_prefix(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    """Attack: a compromised device A spoofs B's reports and eavesdrops on B's commands."""
    vq: queue.Queue[object] = queue.Queue()
    v = MqttTransport(settings(mosquitto, test_ca, "edgeward-verifier"), vq.put,
                      subscriptions=["edgeward/v1/+/report"])
    v.start()
    aq: queue.Queue[object] = queue.Queue()
    a = MqttTransport(settings(mosquitto, test_ca, "dev-a"), aq.put,
                      subscriptions=["edgeward/v1/dev-b/cmd", "edgeward/v1/+/cmd", "#",
                                     "edgeward/v1/dev-a/cmd"])
    a.start()
    assert v.wait_connected(5) and a.wait_connected(5)
    time.sleep(0.3)
    spoof = a.publish(topic("dev-b", "report"), b"spoofed")
    a.publish(topic("dev-a", "report"), b"own")
    spoof_ha = a.publish("homeassistant/sensor/dev-b/x/config", b"{}")
    assert spoof is not None and spoof_ha is not None
    v.publish(topic("dev-b", "cmd"), b"for-b-only")
    v.publish(topic("dev-a", "cmd"), b"for-a")
    got_v = [(m.topic, m.payload) for m in drain(vq, Incoming, 2)]  # type: ignore[attr-defined]
    evs_a = drain(aq, object, 2)
    got_a = [(m.topic, m.payload) for m in evs_a if isinstance(m, Incoming)]
    assert (topic("dev-a", "report"), b"own") in got_v
    assert all(t != topic("dev-b", "report") for t, _ in got_v)
    assert (topic("dev-a", "cmd"), b"for-a") in got_a
    assert all("dev-b" not in t for t, _ in got_a)
    acks = {e.mid: e for e in evs_a if isinstance(e, Acked)}
    assert acks[spoof].ok is False and acks[spoof].reason == "Not authorized"
    assert acks[spoof_ha].ok is False
    a.stop()
    v.stop()


def test_untrusted_broker_is_refused(mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path) -> None:
    """Attack: a broker with a certificate from another CA (man in the middle)."""
    other = TestCA(tmp_path / "other", "rogue CA")
    s = settings(mosquitto, test_ca, "dev-x")
    s2 = MqttSettings(**{**s.__dict__, "ca": other.ca})
    q: queue.Queue[object] = queue.Queue()
    t = MqttTransport(s2, q.put)
    t.start()
    assert not t.wait_connected(1.5)
    t.stop()
    assert not drain(q, Connected, 0.2)


def test_client_without_certificate_is_refused(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    s = settings(mosquitto, test_ca, "dev-y")
    s2 = MqttSettings(**{**s.__dict__, "cert": None, "key": None})
    t = MqttTransport(s2, lambda e: None)
    t.start()
    assert not t.wait_connected(1.5)
    t.stop()


def test_bare_paho_helper_connects(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    c = paho_client(mosquitto, test_ca.issue("dev-z"), "dev-z")
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.is_connected()
    c.disconnect()
    c.loop_stop()


def test_home_assistant_discovery_passes_the_acl(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    import json

    from edgeward.agent.ha_discovery import HomeAssistant

    q: queue.Queue[object] = queue.Queue()
    dev = MqttTransport(settings(mosquitto, test_ca, "lock-h"), q.put)
    dev.start()
    assert dev.wait_connected(5)
    ha = HomeAssistant("lock-h")
    ha.announce(dev)
    ha.update(dev, models_ok=False, attestation="contraindicated")
    time.sleep(0.5)
    # Mosquitto answers an ACL-denied publish with PUBACK "Not authorized" (MQTT v5), so
    # successful PUBACKs show that deploy/acl lets a device announce itself under its own id
    acks = drain(q, Acked, 2)
    assert len(acks) == 5 and all(a.ok for a in acks)  # type: ignore[attr-defined]
    cfgs = dict(ha.payloads())
    c = json.loads(cfgs["homeassistant/binary_sensor/lock-h/model_integrity/config"])
    assert c["state_topic"] == "edgeward/v1/lock-h/ha/state"
    assert c["availability_topic"] == "edgeward/v1/lock-h/status"
    assert c["device_class"] == "problem" and c["unique_id"] == "edgeward_lock-h_model_integrity"
    assert ha.state == {"models": "ON", "attestation": "contraindicated", "anomaly": "OFF"}
    dev.stop()


def test_metrics_carry_message_expiry(mosquitto: Mosquitto, test_ca: TestCA) -> None:
    """A report published with expiry reaches the subscriber with its MQTT v5 expiry set."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    sub = paho_client(mosquitto, test_ca.issue("edgeward-verifier"), "exp-sub")
    got: list[int | None] = []
    sub.on_message = lambda c, u, m: got.append(
        getattr(m.properties, "MessageExpiryInterval", None))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(
        [("edgeward/v1/dev-e/report", SubscribeOptions(qos=1))])
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    dev = MqttTransport(settings(mosquitto, test_ca, "dev-e"), lambda e: None)
    dev.start()
    assert dev.wait_connected(5)
    time.sleep(0.5)
    dev.publish(topic("dev-e", "report"), b"\xa0", expiry=120)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    dev.stop()
    sub.disconnect()
    sub.loop_stop()
    assert got and got[0] is not None and 110 <= got[0] <= 120
