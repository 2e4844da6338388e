"""deploy/mosquitto.conf installs as its header says: into conf.d beside Debian's stock file.

The bug this stands for: the shipped file set ``persistence_location``, which Debian's
/etc/mosquitto/mosquitto.conf already sets, so an operator who followed the install line got a
broker that refused to start ("Duplicate persistence_location value"). Here the real Mosquitto
loads a copy of this machine's stock /etc/mosquitto/mosquitto.conf (its absolute paths moved into
a temporary folder) that includes the shipped file, with only the certificate paths, the
plugin's state file and the port moved; a device's certificate then connects over TLS.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from edgeward.attestation.service.pki import FleetCA
from edgeward.deploy import deploy_file
from edgeward.simulator.devbroker import MOSQUITTO, free_port

STOCK = Path("/etc/mosquitto/mosquitto.conf")  # Debian's package puts it there (Makefile APT)


def _install(root: Path, extra: str = "") -> tuple[Path, int, FleetCA]:
    """Debian's layout in ``root``: the stock main file and the shipped one in its conf.d."""
    assert STOCK.is_file(), "Debian's mosquitto package is not installed (make deps)"
    port = free_port()
    ca = FleetCA.create(root / "ca", "deploy test CA", days=2, leaf_days=1)
    broker = ca.issue("broker", server=True, hosts=["127.0.0.1"], out=root / "certs")
    data = root / "var-lib-mosquitto"
    data.mkdir()
    (data / "dynamic-security.json").write_text(deploy_file("dynamic-security.json").read_text())
    confd = root / "conf.d"
    confd.mkdir()
    moved = {"/run/mosquitto/": f"{root}/", "/var/lib/mosquitto/": f"{data}/",
             "/var/log/mosquitto/": f"{root}/", "/etc/mosquitto/conf.d": str(confd)}
    main = STOCK.read_text()
    for old, new in moved.items():
        main = main.replace(old, new)
    if os.geteuid() == 0:  # as root it would drop to `mosquitto`, which cannot write root's tmp
        main = "user root\n" + main
    (root / "mosquitto.conf").write_text(main)
    shipped = deploy_file("mosquitto.conf").read_text()
    for old, new in {"/var/lib/mosquitto/": f"{data}/",
                     "/etc/mosquitto/ca/fleet-ca.pem": str(ca.ca),
                     "/etc/mosquitto/ca/fleet-crl.pem": str(ca.crl),
                     "/etc/mosquitto/certs/broker.pem": str(broker.cert),
                     "/etc/mosquitto/certs/broker.key": str(broker.key),
                     "\nlistener 8883\n": f"\nlistener {port} 127.0.0.1\n"}.items():
        assert old in shipped, old
        shipped = shipped.replace(old, new)
    (confd / "edgeward.conf").write_text(shipped + extra)
    return root / "mosquitto.conf", port, ca


def _start(conf: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_shipped_conf_starts_beside_debians_stock_file(tmp_path: Path) -> None:
    conf, port, ca = _install(tmp_path)
    device = ca.issue("lock-0001", out=tmp_path / "device")
    proc = _start(conf)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"mosquitto exited: {proc.stdout.read()}"  # type: ignore[union-attr]
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=str(ca.ca))
        ctx.load_cert_chain(str(device.cert), str(device.key))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # SAN 127.0.0.1
            assert tls.version() == "TLSv1.3" or tls.version() == "TLSv1.2"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_the_old_install_line_fails_beside_debians_stock_file(tmp_path: Path) -> None:
    """The check above can fail: a conf.d file that sets persistence_location again is refused."""
    conf, _port, _ca = _install(tmp_path, extra="persistence_location /tmp/\n")
    proc = _start(conf)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("mosquitto started with a duplicate persistence_location")
    assert proc.returncode != 0
    assert "Duplicate persistence_location" in out
