"""Test helpers: a throwaway CA and a real Mosquitto on loopback (``edgeward.simulator.devbroker``).

``Mosquitto`` starts the Debian ``mosquitto`` binary on 127.0.0.1 only, on a free port, with a
TLS listener that requires client certificates, takes the certificate CN as the user name and
enforces ``deploy/acl``. It can be killed and restarted on the same port for fault tests. The
code lives in the product (``edgeward demo`` runs the same broker); this module keeps the names
the tests and benchmarks import.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeward.attestation.service.pki import Cert
from edgeward.simulator.devbroker import (
    ACL,
    DEPLOY_CONF,
    MOSQUITTO,
    DevCA,
    Mosquitto,
    free_port,
)

__all__ = ["ACL", "DEPLOY_CONF", "MOSQUITTO", "Cert", "Mosquitto", "TestCA", "free_port",
           "paho_client"]


class TestCA(DevCA):
    """A throwaway P-256 CA that issues broker and client certificates into ``root``."""

    __test__ = False


def paho_client(broker: Mosquitto, cert: Cert, client_id: str):
    """A bare paho v5 client connected over TLS (for tests that play the other side)."""
    import ssl

    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    ctx = ssl.create_default_context(cafile=str(broker.ca.ca))
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    c.tls_set_context(ctx)
    return c


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def mosquitto(tmp_path: Path, test_ca: TestCA) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", test_ca)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
