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

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from edgeward.attestation.service.pki import FleetCA
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


class DevCA(FleetCA):
    """A throwaway fleet CA in ``root``: its key only in memory, certificates valid for a day."""

    def __init__(self, root: Path, name: str = "edgeward test CA") -> None:
        made = FleetCA.create(root, name, days=2, leaf_days=1, keep_key=False)
        super().__init__(root, made._cert, made._key, days=1)


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
