"""A throwaway fleet CA and a real Mosquitto on loopback, for ``edgeward demo`` and the tests.

``DevCA`` is a P-256 CA (through ``cryptography``) that issues broker and client certificates
into a folder. ``Mosquitto`` starts the Debian ``mosquitto`` binary on 127.0.0.1 only, on a free
port, with the shipped ``deploy/mosquitto.conf``: only the paths, the port and the loopback
address are substituted, every other setting (``autosave_interval`` included) is the shipped
one. That is a TLS listener that requires client certificates and takes the certificate CN as
user name and client id, and the dynamic-security plugin with the shipped
``deploy/dynamic-security.json`` and the device role of ``deploy/acl``.

Every client certificate the CA issues is registered with the broker's plugin, as
``deploy/broker-register`` does in production: a name starting with ``edgeward-verifier`` is a
verifier worker, any other a device. Registration goes through the plugin's ``$CONTROL`` topic
as ``edgeward-broker-admin`` while the broker runs, and into its configuration file while it
is stopped. The broker can be killed and restarted on the same port for fault tests. Nothing
here is for production: the CA key lives only in memory and certificates are valid for a day.

I/O: the given folder (certificates, configuration, log, persistence) and the broker process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeward.attestation.service.pki import Cert, FleetCA
from edgeward.deploy import deploy_file

ACL = deploy_file("acl")
DEPLOY_CONF = deploy_file("mosquitto.conf")
DYNSEC = deploy_file("dynamic-security.json")

ADMIN = "edgeward-broker-admin"
WORKERS_GROUP = "edgeward-verifiers"
CONTROL = "$CONTROL/dynamic-security/v1"


def dynsec_plugin() -> str:
    """The dynamic-security plugin of Debian's mosquitto package (its path has the arch)."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    if found:
        return str(found[0])
    return "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def is_worker(cn: str) -> bool:
    return cn == "edgeward-verifier" or cn.startswith("edgeward-verifier-")


def device_acls(cn: str) -> list[tuple[str, str]]:
    """The device role of ``deploy/acl`` for one device: ``(acltype, topic)`` pairs."""
    out = []
    for line in ACL.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            acltype, topic = line.split()
            out.append((acltype, topic.replace("%u", cn)))
    return out


def register_commands(cn: str) -> list[dict[str, Any]]:
    """The plugin commands ``deploy/broker-register`` sends for ``cn``."""
    if cn == ADMIN:
        return []
    if is_worker(cn):
        return [{"command": "createClient", "username": cn},
                {"command": "addGroupClient", "groupname": WORKERS_GROUP, "username": cn}]
    role = f"edgeward-device-{cn}"
    return [
        {"command": "createRole", "rolename": role},
        *({"command": "addRoleACL", "rolename": role, "acltype": a, "topic": tp, "allow": True}
          for a, tp in device_acls(cn)),
        {"command": "createClient", "username": cn},
        {"command": "addClientRole", "username": cn, "rolename": role},
    ]


def _register_offline(config: dict[str, Any], cn: str) -> None:
    """Apply :func:`register_commands` to the plugin's configuration file's content."""
    if cn == ADMIN or any(c["username"] == cn for c in config["clients"]):
        return
    if is_worker(cn):
        config["clients"].append({"username": cn, "groups": [{"groupname": WORKERS_GROUP}]})
        for g in config["groups"]:
            if g["groupname"] == WORKERS_GROUP:
                g.setdefault("clients", []).append({"username": cn})
        return
    role = f"edgeward-device-{cn}"
    config["roles"].append({"rolename": role, "acls": [
        {"acltype": a, "topic": tp, "allow": True} for a, tp in device_acls(cn)]})
    config["clients"].append({"username": cn, "roles": [{"rolename": role}]})


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
        self.clients: list[str] = []  # client certificate names, in issue order
        self.brokers: weakref.WeakSet[Mosquitto] = weakref.WeakSet()

    def issue(self, cn: str, *, server: bool = False, hosts: Sequence[str] = (),
              out: Path | None = None, register: bool = True) -> Cert:
        """A certificate for ``cn``; a client's is registered with every broker of this CA
        (``register=False``: not, as with a certificate the operator forgot to register)."""
        cert = super().issue(cn, server=server, hosts=hosts, out=out)
        if not server and register and cn not in self.clients:
            self.clients.append(cn)
            for broker in list(self.brokers):
                broker.register(cn)
        return cert


class Mosquitto:
    """A real broker on 127.0.0.1:<free port>, TLS with required client certificates."""

    def __init__(self, root: Path, ca: DevCA, *, persistence: bool = True) -> None:
        self.root = root
        self.ca = ca
        self.port = free_port()
        self.host = "127.0.0.1"
        # 10.0.2.100: the host's broker as the simulator's QEMU guests reach it (a guestfwd)
        self.server = ca.issue("localhost", server=True,
                               hosts=("localhost", "127.0.0.1", "10.0.2.100"))
        self.admin = ca.issue(ADMIN)
        self.proc: subprocess.Popen[bytes] | None = None
        self._control = threading.Lock()
        self.log = root / "mosquitto.log"
        data = root / "mosq-data"
        data.mkdir(exist_ok=True)
        # the plugin's state: the shipped base, and every client the CA has issued so far
        self.dynsec = data / "dynamic-security.json"
        config = json.loads(DYNSEC.read_text())
        for cn in ca.clients:
            _register_offline(config, cn)
        self.dynsec.write_text(json.dumps(config, indent=1))
        ca.brokers.add(self)
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf = root / "mosquitto.conf"
        # the shipped deploy/mosquitto.conf, with these paths, port and the loopback address
        subst = {
            "persistence ": f"persistence {'true' if persistence else 'false'}",
            "plugin ": f"plugin {dynsec_plugin()}",
            "plugin_opt_config_file ": f"plugin_opt_config_file {self.dynsec}",
            "listener ": f"listener {self.port} 127.0.0.1",
            "cafile ": f"cafile {ca.ca}",
            "crlfile ": f"crlfile {ca.crl}",
            "certfile ": f"certfile {self.server.cert}",
            "keyfile ": f"keyfile {self.server.key}",
        }
        # the shipped file leaves persistence_location to Debian's main mosquitto.conf
        lines = [user.strip(), "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice", f"persistence_location {data}/"]
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

    def register(self, cn: str) -> None:
        """Register a client certificate's name with the plugin (``deploy/broker-register``)."""
        if self.proc is None:
            config = json.loads(self.dynsec.read_text())
            _register_offline(config, cn)
            self.dynsec.write_text(json.dumps(config, indent=1))
            return
        commands = register_commands(cn)
        if commands:
            self.control(commands)

    def control(self, commands: list[dict[str, Any]], timeout: float = 10.0) -> list[Any]:
        """Send plugin commands over ``$CONTROL`` as the admin; return the responses."""
        import ssl

        import paho.mqtt.client as mqtt

        with self._control:
            got: list[Any] = []
            done = threading.Event()
            subscribed = threading.Event()
            c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                            client_id=ADMIN, protocol=mqtt.MQTTv5)
            ctx = ssl.create_default_context(cafile=str(self.ca.ca))
            ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
            c.tls_set_context(ctx)

            def on_message(_c: Any, _u: Any, msg: Any) -> None:
                got.extend(json.loads(msg.payload)["responses"])
                done.set()

            c.on_message = on_message
            c.on_subscribe = lambda *_a: subscribed.set()
            c.on_connect = lambda cl, *_a: cl.subscribe(CONTROL + "/response", qos=1)
            c.connect(self.host, self.port)
            c.loop_start()
            try:
                if not subscribed.wait(timeout):
                    raise RuntimeError("broker admin could not subscribe to $CONTROL")
                c.publish(CONTROL, json.dumps({"commands": commands}), qos=1)
                if not done.wait(timeout):
                    raise RuntimeError("the dynamic-security plugin did not answer")
            finally:
                c.disconnect()
                c.loop_stop()
            errors = [r for r in got if r.get("error")]
            if errors:
                raise RuntimeError(f"dynamic-security refused: {errors}")
            return got
