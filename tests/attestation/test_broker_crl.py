"""The broker side of revocation: the PEM CRL that ``attest ca revoke`` writes (``make_crl``) is
a file Mosquitto's ``crlfile`` reads. A real Mosquitto with the shipped configuration plus
``crlfile`` refuses the TLS handshake of a revoked client certificate and accepts the others."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgeward.attestation.enroll import make_crl
from edgeward.core.keys import SigningKey


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


def test_attack_revoked_client_certificate_connects_to_the_broker(tmp_path):
    pytest.importorskip("paho.mqtt")
    from edgeward.simulator.devbroker import DevCA, Mosquitto, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    ca = DevCA(tmp_path / "ca")
    revoked, kept = ca.issue("lock-0666"), ca.issue("lock-0001")
    serial = x509.load_pem_x509_certificate(revoked.cert.read_bytes()).serial_number
    crl = make_crl(SigningKey(ca._key), ca._cert, [serial], now=time.time())
    crl_path = tmp_path / "crl.pem"
    crl_path.write_bytes(crl.public_bytes(Encoding.PEM))
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", ca)
    conf = broker.conf.read_text().replace(f"cafile {ca.ca}\n",
                                           f"cafile {ca.ca}\ncrlfile {crl_path}\n")
    assert "crlfile" in conf
    broker.conf.write_text(conf)
    broker.start()
    try:
        assert _handshake(broker, kept)
        assert not _handshake(broker, revoked)
    finally:
        broker.stop()
