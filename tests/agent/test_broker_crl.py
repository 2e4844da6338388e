"""The broker side of revocation: `edgeward fleet ca revoke` writes the CA's crl.pem, which the
shipped mosquitto.conf names as its crlfile. A real Mosquitto then refuses the TLS handshake of
a revoked client certificate and accepts the others."""

from __future__ import annotations

import socket
import ssl

import pytest

from edgeward.attestation.service.pki import FleetCA
from edgeward.core.errors import ConfigError
from edgeward.deploy import deploy_file
from edgeward.simulator.devbroker import DevCA, Mosquitto


def _handshake(broker, cert) -> bool:
    ctx = ssl.create_default_context(cafile=str(broker.ca.ca))
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    try:
        with socket.create_connection((broker.host, broker.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(2)
            # TLS 1.3: the server checks the client certificate after the handshake; a refusal
            # arrives as an alert on the first read.
            tls.sendall(b"\x10\x00")  # a truncated CONNECT: the broker closes, or alerts
            try:
                tls.recv(1)
            except TimeoutError:
                pass
        return True
    except (ssl.SSLError, ConnectionError):
        return False


def test_shipped_broker_configuration_names_a_crlfile() -> None:
    assert "\ncrlfile " in deploy_file("mosquitto.conf").read_text()


def test_attack_revoked_client_certificate_connects_to_the_broker(tmp_path):
    ca = DevCA(tmp_path / "ca")
    revoked, kept = ca.issue("lock-0666"), ca.issue("lock-0001")
    ca.revoke([revoked.cert])
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", ca)
    assert f"crlfile {ca.crl}" in broker.conf.read_text()
    broker.start()
    try:
        assert _handshake(broker, kept)
        assert not _handshake(broker, revoked)
    finally:
        broker.stop()


def test_revocation_is_cumulative_and_checked(tmp_path):
    ca = FleetCA.create(tmp_path / "ca", "fleet CA")
    a, b = ca.issue("lock-1"), ca.issue("lock-2")
    assert ca.revoked() == set()
    first = ca.revoke([a.cert])
    assert len(first) == 1 and ca.revoke([b.cert]) >= first and len(ca.revoked()) == 2
    other = FleetCA.create(tmp_path / "other", "another CA")
    with pytest.raises(ConfigError, match="not issued by this fleet CA"):
        ca.revoke([other.issue("x").cert])
    (tmp_path / "ca" / "crl.pem").write_bytes(other.crl.read_bytes())  # attack: a forged CRL
    with pytest.raises(ConfigError, match="not signed by this fleet CA"):
        ca.revoked()
