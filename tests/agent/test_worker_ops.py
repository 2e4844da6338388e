"""A verifier worker's operations side, against a real Mosquitto: the Prometheus metrics and
health endpoint of ``edgeward verifier run`` scraped over HTTP, the fleet events the backend
raises itself (unexplained gaps, contraindicated results, silent devices) in ``fleet events``
and in the metrics, and the endpoint refusing to listen beyond loopback."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_helpers import service_cfg, start, wait_until
from fixtures_mqtt import Mosquitto, TestCA, free_port
from test_backend import device, env

from edgeward.agent.envelope import topic
from edgeward.attestation.service.observe import MetricsConfig, WorkerMetrics
from edgeward.attestation.service.service import VerifierService
from edgeward.attestation.service.watch import WatchConfig
from edgeward.core.errors import ConfigError

EDGEWARD = str(Path(sys.executable).parent / "edgeward")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait(pred: Callable[[], object], timeout: float = 20.0) -> bool:
    return wait_until(pred, timeout, 0.1)


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def verifier_toml(path: Path, broker: Mosquitto, ca: TestCA, worker: str, extra: str) -> Path:
    c = ca.issue(f"edgeward-verifier-{worker}")
    path.write_text(f"""
[service]
worker = "{worker}"
store = "fleet.sqlite"
tick = 0.1

[mqtt]
host = "127.0.0.1"
port = {broker.port}
ca = "{ca.ca}"
cert = "{c.cert}"
key = "{c.key}"
{extra}""")
    return path


def test_running_worker_serves_metrics_and_health_and_raises_fleet_events(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    """Scrape a real `verifier run` worker: messages by type, refusals, store latency, queue
    depth; an unexplained seq gap and a silent device become fleet events (seen by `fleet
    events --type` and counted); /health goes 503 while the broker is down and 200 again."""
    port = free_port()
    cfg = verifier_toml(tmp_path / "VERIFIER.toml", mosquitto, test_ca, "m1", f"""
[metrics]
port = {port}

[fleet_events]
gap_grace = 1.0
silent_after = 3.0
check_interval = 0.2
""")
    p = subprocess.Popen([EDGEWARD, "verifier", "run", "--config", str(cfg)],
                         stderr=subprocess.PIPE)
    d = None
    try:
        assert wait(lambda: get(port, "/health")[0] == 200), get(port, "/health")
        assert json.loads(get(port, "/health")[1])["broker"] == "connected"
        d = device(mosquitto, test_ca, "lock-m")
        t = topic("lock-m", "report")
        for seq in (1, 2, 5):  # 3 and 4 never come and are not reported dropped
            d.publish(t, env("lock-m", seq, "metrics", {"cpu": seq}))
        d.publish(topic("lock-m", "event"), b"\xff not cbor")

        def metrics() -> str:
            return get(port, "/metrics")[1]

        assert wait(lambda: sample(metrics(), "edgeward_verifier_messages_total",
                                   type="metrics") == 3), metrics()
        text = metrics()
        assert sample(text, "edgeward_verifier_refused_total", reason="malformed") == 1
        assert sample(text, "edgeward_verifier_store_seconds_count", op="record") >= 3
        assert "edgeward_verifier_queue_depth" in text
        assert sample(text, "edgeward_verifier_connected") == 1
        assert wait(lambda: sample(metrics(), "edgeward_verifier_fleet_events_total",
                                   type="fleet.gap") == 1), metrics()
        d.stop()
        d = None
        assert wait(lambda: sample(metrics(), "edgeward_verifier_fleet_events_total",
                                   type="fleet.silent") == 1), metrics()
        time.sleep(0.6)  # several more scans: a silence is raised once
        assert sample(metrics(), "edgeward_verifier_fleet_events_total", type="fleet.silent") == 1

        out = subprocess.run([EDGEWARD, "fleet", "events", "--type", "fleet.gap", "--json",
                              "--config", str(cfg)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        gaps = [json.loads(line) for line in out.stdout.splitlines()]
        assert [g["body"] for g in gaps] == [
            {"device": "lock-m", "ranges": [[3, 4]], "missing": 2, "highest": 5}]
        out = subprocess.run([EDGEWARD, "fleet", "events", "--type", "fleet.silent",
                              "--config", str(cfg)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "lock-m" in out.stdout and "silent_for" in out.stdout

        mosquitto.stop(signal.SIGKILL)
        assert wait(lambda: get(port, "/health")[0] == 503, 15)
        assert "not connected to the broker" in get(port, "/health")[1]
        mosquitto.start()
        assert wait(lambda: get(port, "/health")[0] == 200, 15)
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, p.stderr.read() if p.stderr else ""
        assert get(port, "/metrics")[0] == 0  # the endpoint went with the worker
    finally:
        if d is not None:
            d.stop()
        if p.poll() is None:
            p.kill()
            p.wait(5)


class Contraindicating:
    def challenge(self, device: str, now: float) -> bytes:
        return b"n" * 16

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        return b"", "contraindicated" if evidence == b"bad" else "affirming"


def test_contraindicated_result_is_a_fleet_event_and_a_verdict_metric(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    """A device whose evidence fails appraisal (a tampered device) raises fleet.contraindicated,
    counted beside the verdicts and the appraisal latency histogram."""
    port = free_port()
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "c1",
                                      metrics=MetricsConfig(port=port)),
                          appraiser=Contraindicating())
    th = start(svc)
    d = device(mosquitto, test_ca, "lock-t")
    try:
        t = topic("lock-t", "attest/evidence")
        d.publish(t, env("lock-t", 1, "attest.evidence", {"eat": b"good"}))
        d.publish(t, env("lock-t", 2, "attest.evidence", {"eat": b"bad"}))
        assert wait(lambda: svc.counters.get("appraised", 0) == 2)
        text = get(port, "/metrics")[1]
        assert sample(text, "edgeward_verifier_verdicts_total", status="contraindicated") == 1
        assert sample(text, "edgeward_verifier_verdicts_total", status="affirming") == 1
        assert sample(text, "edgeward_verifier_appraisal_seconds_count") == 2
        assert sample(text, "edgeward_verifier_fleet_events_total",
                      type="fleet.contraindicated") == 1
        evs = [(ty, body) for _, ty, body in svc.store.messages("@fleet")]
        assert evs == [("fleet.contraindicated",
                        {"device": "lock-t", "evidence_seq": 2, "status": "contraindicated"})]
    finally:
        d.stop()
        svc.request_stop()
        th.join(10)


def test_reordered_messages_raise_no_gap_event(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    """A late message fills its gap within the grace, and a reported drop explains one: no
    fleet.gap (an operator must not be paged for every resend)."""
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "g1",
                                      watch=WatchConfig(gap_grace=0.5, silent_after=0)))
    th = start(svc)
    d = device(mosquitto, test_ca, "lock-r")
    try:
        t = topic("lock-r", "report")
        for seq in (1, 3, 2):  # 3 jumps, 2 fills it
            d.publish(t, env("lock-r", seq, "metrics", {}))
        d.publish(t, env("lock-r", 6, "outbox.dropped", {"ranges": [[4, 5]]}))
        assert wait(lambda: svc.store.highest("lock-r") == 6 and not svc.store.gaps("lock-r")
                    .unexplained)
        time.sleep(1.5)
        assert svc.store.messages("@fleet") == []
        assert "fleet.gap" not in svc.counters
    finally:
        d.stop()
        svc.request_stop()
        th.join(10)


def test_metrics_endpoint_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    """An unauthenticated endpoint on 0.0.0.0 would publish the fleet's state to the network:
    refused at load unless allow_remote says the operator means it."""
    with pytest.raises(ConfigError, match="not a loopback address"):
        MetricsConfig(port=9100, host="0.0.0.0").check("VERIFIER.toml")
    MetricsConfig(port=9100, host="0.0.0.0", allow_remote=True).check("VERIFIER.toml")
    MetricsConfig(port=9100, host="::1").check("VERIFIER.toml")
    MetricsConfig(port=0, host="0.0.0.0").check("VERIFIER.toml")  # off: nothing listens


def test_verifier_check_names_the_metrics_host(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path
) -> None:
    cfg = verifier_toml(tmp_path / "V.toml", mosquitto, test_ca, "x1",
                        '[metrics]\nport = 9100\nhost = "0.0.0.0"\n')
    out = subprocess.run([EDGEWARD, "verifier", "run", "--check", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "not a loopback address" in out.stderr


def test_metrics_labels_are_bounded_against_hostile_types() -> None:
    """A device sending ten thousand made-up envelope types must not grow the scrape."""
    m = WorkerMetrics()
    m.enable("w", lambda: 0)
    for i in range(10_000):
        m.message(f"made.up.{i}")
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    assert sample(text, "edgeward_verifier_messages_total", type="other") == 10_000
    assert "made.up" not in text


def test_watch_core_gap_silence_and_failed_appraisal_rules() -> None:
    """The pure rules: a jump is judged after the grace and only on seqs inside it; a silence is
    raised once, again only after the device spoke and fell silent anew, and not at all if
    another worker's event for it is already stored."""
    from edgeward.attestation.service.gaps import analyse
    from edgeward.attestation.service.watch import FleetWatch

    w = FleetWatch(WatchConfig(gap_grace=10, silent_after=60, check_interval=5))
    w.on_stored("a", 5, 2, now=100.0)  # seqs 3, 4 jumped
    w.on_stored("a", 9, 7, now=104.0)  # and 8: one watch, widened
    w.on_stored("b", 2, 1, now=100.0)  # in order: nothing watched
    assert w.gaps_due(109.0) == []
    assert w.gaps_due(110.0) == [("a", 3, 8)] and w.gaps_due(200.0) == []
    # 1 (missing before the jump, another worker's business) and 3-4 lost, 6-7 reported dropped
    ev = w.gap_event("a", 3, 8, analyse([2, 5, 8, 9], dropped=[(6, 7)]))
    assert ev is not None and ev.body() == {"device": "a", "ranges": [[3, 4]], "missing": 2,
                                            "highest": 9}
    assert w.gap_event("a", 3, 8, analyse(list(range(1, 10)), [])) is None  # filled late
    assert FleetWatch.appraised("a", 7, "refused").type == "fleet.contraindicated"  # type: ignore[union-attr]
    assert FleetWatch.appraised("a", 7, "affirming") is None

    assert w.scan_due(0.0) and not w.scan_due(4.0) and w.scan_due(5.0)
    rows = [("a", "online", 0.0), ("b", "offline", 50.0), ("@fleet", None, 0.0),
            ("c", None, None)]
    assert [(e.device, e.detail["status"]) for e in w.silent(rows, 100.0)] == [("a", "online")]
    assert [e.device for e in w.silent(rows, 111.0)] == ["b"]
    assert w.silent(rows, 130.0) == []  # once per silence
    rows[0] = ("a", "online", 120.0)  # spoke again, then silent again
    assert [e.device for e in w.silent(rows, 181.0)] == ["a"]
    other = FleetWatch(WatchConfig(silent_after=60))
    other.reported([{"device": "a", "last_seen": 120.0}, "junk", {"device": 3}])
    assert [e.device for e in other.silent(rows, 181.0)] == ["b"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_fleet_events_follow_prints_a_new_event_and_ends_cleanly_on_signal(
    tmp_path: Path, sig: int
) -> None:
    """`fleet events --follow` as an operator runs it: the existing events, then one a worker
    stores while it follows, then Ctrl-C (or a service manager's SIGTERM) ends it with exit 0."""
    from edgeward.agent.envelope import Envelope
    from edgeward.attestation.service.fleet_store import FleetStore

    cfg = tmp_path / "V.toml"
    cfg.write_text('[service]\nstore = "fleet.sqlite"\n\n[mqtt]\ntls = false\n')
    store = FleetStore(tmp_path / "fleet.sqlite", worker="w1")
    store.record(Envelope(seq=1, ts=1.0, device="lock-f", type="agent.started", body={}), 1.0)
    p = subprocess.Popen([EDGEWARD, "fleet", "events", "--follow", "--interval", "0.1",
                          "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()
    out, errf = p.stdout, p.stderr
    assert out is not None and errf is not None

    def read() -> None:
        for line in out:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert "lock-f  #1  agent.started" in lines.get(timeout=20)
        store.record(Envelope(seq=2, ts=2.0, device="lock-f", type="model.rejected",
                              body={"reason": "digest"}), time.time())
        second = lines.get(timeout=20)  # printed by --follow, not at start
        assert "lock-f  #2  model.rejected" in second and "digest" in second
        p.send_signal(sig)
        assert p.wait(15) == 0
        reader.join(5)
        err = errf.read()
        assert lines.empty() and "Traceback" not in err and "interrupted" not in err, err
    finally:
        store.close()
        if p.poll() is None:
            p.kill()
            p.wait(5)
