"""``agent run --check`` and ``verifier run --check``: the file is validated, nothing starts;
errors name the file, the line and the key. Plus the delivery core's rule that a refused drop
report is not reported again on the same connection (offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgeward.agent.delivery import Delivery
from edgeward.agent.outbox_rules import Stored
from edgeward.core.keys import generate, write_keypair

AGENT = """[device]
name = "lock-c"

[mqtt]
tls = false
host = "127.0.0.1"
port = 1883

[commands]
trust = "backend/public.pem"
"""

VERIFIER = """[service]
worker = "w1"
store = "fleet.sqlite"

[mqtt]
tls = false
port = 1883
"""


def _run(*args: str) -> tuple[int, str]:
    """The real command line (its exit code is main()'s, not click's)."""
    r = subprocess.run([sys.executable, "-c", "from edgeward.agent.cli import main; main()",
                        *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_agent_check_valid_file_exits_0_and_starts_nothing(tmp_path: Path) -> None:
    write_keypair(tmp_path / "backend", generate("ed25519"))
    p = tmp_path / "agent.toml"
    p.write_text(AGENT)
    code, out = _run("agent", "run", "--config", str(p), "--check")
    assert code == 0 and f"{p}: valid" in out, out
    assert not (tmp_path / "state").exists() and not list(tmp_path.glob("*.sqlite"))


def test_agent_check_names_file_line_key_and_what_was_expected(tmp_path: Path) -> None:
    write_keypair(tmp_path / "backend", generate("ed25519"))
    p = tmp_path / "agent.toml"
    p.write_text(AGENT.replace("port = 1883", 'port = "mqtt"'))
    code, out = _run("agent", "run", "--config", str(p), "--check")
    assert code == 1, out
    assert f"{p}:7: key 'mqtt.port' must be an integer" in out, out


def test_agent_check_refuses_a_missing_trust_store(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(AGENT)
    code, out = _run("agent", "run", "--config", str(p), "--check")
    assert code == 1 and "backend/public.pem" in out, out


def test_verifier_check_valid_and_invalid(tmp_path: Path) -> None:
    p = tmp_path / "verifier.toml"
    p.write_text(VERIFIER)
    code, out = _run("verifier", "run", "--config", str(p), "--check")
    assert code == 0 and f"{p}: valid" in out, out
    assert not (tmp_path / "fleet.sqlite").exists()
    p.write_text(VERIFIER.replace("worker", "wroker"))
    code, out = _run("verifier", "run", "--config", str(p), "--check")
    assert code == 1 and f"{p}:2: " in out and "wroker" in out, out
    p.write_text(VERIFIER + '\n[commands]\nkey = "nowhere.pem"\n')
    code, out = _run("verifier", "run", "--config", str(p), "--check")
    assert code == 1 and "nowhere.pem" in out, out


def _msg(seq: int) -> Stored:
    return Stored(seq=seq, kind="event", type="x", priority=0, ts=0.0, payload=b"x")


def test_core_a_refused_drop_report_is_not_reported_again_on_that_connection() -> None:
    """The feedback loop: report refused -> listed as dropped -> reported -> refused ..."""
    d = Delivery(window=8, e2e=False, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    d.sent(_msg(1), mid=1)
    d.on_puback(1, True)
    assert d.may_report_drops
    d.drop_report = 2
    d.sent(_msg(2), mid=2)
    d.on_puback(2, False, "Not authorized")
    assert not d.may_report_drops
    d.sent(_msg(3), mid=3)
    d.on_puback(3, True)  # other messages go through: still no new report
    assert not d.may_report_drops and d.refused_outright is None
    d.on_connect()
    assert d.may_report_drops


def test_core_refused_outright_only_when_nothing_was_accepted() -> None:
    d = Delivery(window=8, e2e=False, metrics_expiry=300, ack_timeout=60, now=0.0)
    d.on_connect()
    for mid in (1, 2, 3):
        d.sent(_msg(mid), mid=mid)
        d.on_puback(mid, False, "Not authorized")
    assert d.refused_outright == "Not authorized"
    d.on_connect()
    d.sent(_msg(4), mid=4)
    d.on_puback(4, True)
    for mid in (5, 6, 7):
        d.sent(_msg(mid), mid=mid)
        d.on_puback(mid, False, "Not authorized")
    assert d.refused_outright is None


class _Appraiser:
    closed = False

    def challenge(self, device: str, now: float) -> bytes:
        return b""

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        return b"", "none"

    def close(self) -> None:
        self.closed = True


class _NoLink:
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


def test_verifier_reload_replaces_the_appraiser_and_keeps_the_connection(
    tmp_path: Path,
) -> None:
    """SIGHUP used to kill the worker; now the whole file is read again: a new appraiser (new
    reference values), timers and limits at once; [mqtt] and the store wait for a restart; a bad
    file changes nothing."""
    from edgeward.attestation.service.cli import build
    from edgeward.attestation.service.config import ServiceConfig, load_service_config
    from edgeward.attestation.service.service import VerifierService

    p = tmp_path / "verifier.toml"
    p.write_text(VERIFIER.replace('"fleet.sqlite"', f'"{tmp_path / "fleet.sqlite"}"'))
    first = _Appraiser()
    made: list[_Appraiser] = []

    def rebuild(old: ServiceConfig) -> tuple[ServiceConfig, _Appraiser, None]:
        made.append(_Appraiser())
        return load_service_config(old.source), made[-1], None

    svc = VerifierService(load_service_config(p), appraiser=first, transport=_NoLink(),
                          rebuild=rebuild)
    text = p.read_text()
    p.write_text(text.replace("port = 1883", "port = 1884") +
                 "\n[limits]\nmax_cbor_bytes = 4096\n")
    svc.reload()
    assert first.closed and svc.appraiser is made[0]
    assert svc.limits.max_cbor_bytes == 4096
    assert svc.cfg.mqtt.port == 1883  # kept until restart
    p.write_text(text.replace("[mqtt]", "[mqtt]\nport = 1\nport = 2"))  # not TOML
    svc.rebuild = lambda old: build(old.source)
    svc.reload()
    assert svc.appraiser is made[0] and not made[0].closed
    assert svc.limits.max_cbor_bytes == 4096
    svc.store.close()


def test_connect_failures_retrying_cannot_fix_are_told_apart_with_what_to_do() -> None:
    """The pure classifier behind exit 3 on a first connection (the real-broker cases, a wrong
    CA and an unreachable port, are in test_daemons.py)."""
    import ssl

    from edgeward.agent.config import MqttSettings
    from edgeward.agent.transport import connect_failure

    s = MqttSettings(host="broker.lan", port=8883)
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_message = "Hostname mismatch, certificate is not valid for 'broker.lan'."
    what, hint, permanent = connect_failure(e, s)
    assert permanent and "CERTIFICATE_VERIFY_FAILED" in what and "SAN" in hint
    what, hint, permanent = connect_failure("Not authorized", s)
    assert permanent and "deploy/broker-register" in hint
    assert not connect_failure("Server busy", s)[2]
    what, hint, permanent = connect_failure(ConnectionRefusedError(111, "refused"), s)
    assert not permanent and "cannot reach broker broker.lan:8883" in what
