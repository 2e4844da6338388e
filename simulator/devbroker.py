"""A throwaway fleet CA and a real Mosquitto on loopback, for ``edgeward demo`` and the tests.

``DevCA`` is a P-256 CA (through ``cryptography``) that issues broker and client certificates
into a folder. ``Mosquitto`` starts the Debian ``mosquitto`` binary on 127.0.0.1 only, on a free
port, with the shipped ``deploy/mosquitto.conf`` (paths, port and loopback address substituted):
a TLS listener that requires client certificates, takes the certificate CN as the user name and
enforces the shipped ``deploy/acl``. It can be killed and restarted on the same port for fault
tests. Nothing here is for production: the CA key lives only in memory and certificates are
valid for a day.

I/O: the given folder (certificates, configuration, log, persistence) and the broker process.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeward.deploy import deploy_file

ACL = deploy_file("acl")
DEPLOY_CONF = deploy_file("mosquitto.conf")


def mosquitto_binary() -> str | None:
    """The broker binary (Debian puts it in /usr/sbin, often not on a user's PATH), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


MOSQUITTO = mosquitto_binary() or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cert:
    cert: Path
    key: Path


class DevCA:
    """A throwaway P-256 CA that issues broker and client certificates into ``root``."""

    def __init__(self, root: Path, name: str = "edgeward test CA") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca = root / "ca.pem"
        self.ca.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False) -> Cert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            b = b.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = b.sign(self._key, hashes.SHA256())
        cp = self.root / f"{cn}.crt"
        kp = self.root / f"{cn}.key"
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(kp, 0o600)
        return Cert(cp, kp)


class Mosquitto:
    """A real broker on 127.0.0.1:<free port>, TLS with required client certificates."""

    def __init__(self, root: Path, ca: DevCA, *, persistence: bool = True) -> None:
        self.root = root
        self.ca = ca
        self.port = free_port()
        self.host = "127.0.0.1"
        self.server = ca.issue("localhost", server=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "mosquitto.log"
        data = root / "mosq-data"
        data.mkdir(exist_ok=True)
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf = root / "mosquitto.conf"
        # the shipped deploy/mosquitto.conf, with these paths, port and the loopback address
        subst = {
            "persistence ": f"persistence {'true' if persistence else 'false'}",
            "persistence_location ": f"persistence_location {data}/",
            "autosave_interval ": "autosave_interval 1",
            "acl_file ": f"acl_file {ACL}",
            "listener ": f"listener {self.port} 127.0.0.1",
            "cafile ": f"cafile {ca.ca}",
            "certfile ": f"certfile {self.server.cert}",
            "keyfile ": f"keyfile {self.server.key}",
        }
        lines = [user.strip(), "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice"]
        for line in DEPLOY_CONF.read_text().splitlines():
            for prefix, repl in subst.items():
                if line.startswith(prefix):
                    line = repl
            lines.append(line)
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.proc is None
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=logf, stderr=logf, start_new_session=True
        )
        logf.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()
