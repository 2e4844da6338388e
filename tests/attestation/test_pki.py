"""The operator's fleet CA (`edgeward fleet ca init|issue`)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgeward.attestation.service.pki import FleetCA
from edgeward.core.errors import ConfigError


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_issue_broker_device_worker_chain_to_the_ca(tmp_path: Path) -> None:
    ca = FleetCA.create(tmp_path / "ca", "fleet CA")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    loaded = FleetCA.load(tmp_path / "ca")
    root = _cert(ca.ca)
    broker = loaded.issue("broker", server=True, hosts=["mqtt.example", "127.0.0.1"])
    device = loaded.issue("lock-0001", out=tmp_path / "dev")
    for c in (broker, device):
        leaf = _cert(c.cert)
        leaf.verify_directly_issued_by(root)
        assert stat.S_IMODE(c.key.stat().st_mode) == 0o600
    eku = _cert(broker.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    san = _cert(broker.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["mqtt.example"]
    eku = _cert(device.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert device.cert.parent == tmp_path / "dev"


def test_ca_is_never_overwritten(tmp_path: Path) -> None:
    FleetCA.create(tmp_path, "first")
    key = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="already holds a fleet CA"):
        FleetCA.create(tmp_path, "second")
    assert (tmp_path / "ca.key").read_bytes() == key


@pytest.mark.parametrize("name", ["", "a/b", "dev+", "dev#", "x" * 65, "line\nbreak"])
def test_names_that_cannot_be_client_ids_are_refused(tmp_path: Path, name: str) -> None:
    """Attack: a certificate name with MQTT wildcards or a newline would widen an ACL or a log."""
    ca = FleetCA.create(tmp_path, "fleet CA")
    with pytest.raises(ConfigError):
        ca.issue(name)


def test_load_missing_or_garbage_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet ca init"):
        FleetCA.load(tmp_path / "none")
    (tmp_path / "ca.pem").write_text("junk")
    (tmp_path / "ca.key").write_text("junk")
    with pytest.raises(ConfigError, match="does not hold a fleet CA"):
        FleetCA.load(tmp_path)


def test_cli_revoke_writes_the_crl(tmp_path: Path, capsys) -> None:
    from edgeward.agent.cli import main

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as e:
            main(list(args))
        return int(e.value.code or 0)

    assert run("fleet", "ca", "init", "--out", str(tmp_path / "ca")) == 0
    assert run("fleet", "ca", "issue", "--ca", str(tmp_path / "ca"), "--role", "device",
               "--name", "lock-0001") == 0
    assert run("fleet", "ca", "revoke", "--ca", str(tmp_path / "ca"), "--cert",
               str(tmp_path / "ca" / "lock-0001.crt")) == 0
    assert "1 revoked" in capsys.readouterr().out
    assert FleetCA.load(tmp_path / "ca").revoked()
    assert run("fleet", "ca", "revoke", "--ca", str(tmp_path / "ca"), "--cert",
               str(tmp_path / "nope.crt")) == 1
