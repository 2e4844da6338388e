"""VERIFIER.toml, the service's part: ``[service]``, ``[mqtt]``, ``[commands]``.

The tables ``[verifier]``, ``[enrollment]``, ``[refvalues]``, ``[policy]`` and ``[limits]`` of the
same file belong to ``edgeward.attestation`` (the appraisal core and its database); this loader
leaves them alone. Reading the file is the only I/O.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from edgeward.agent.config import mqtt_settings
from edgeward.agent.transport import MqttSettings
from edgeward.core.tomlconf import load_toml

ATTESTATION_TABLES = ("verifier", "enrollment", "refvalues", "policy", "limits")


@dataclass(frozen=True)
class ServiceConfig:
    source: Path
    worker: str
    store: Path
    mqtt: MqttSettings
    shared_group: str = "edgeward"
    challenge_interval: float = 3600.0
    challenge_on_connect: bool = True
    tick: float = 1.0
    command_key: Path | None = None
    command_ttl: float = 60.0
    ack_interval: float = 0.5  # at most one end-to-end ack per device per interval


def load_service_config(path: Path) -> ServiceConfig:
    path = Path(path).resolve()
    root = load_toml(path)
    root.reject_unknown(("service", "mqtt", "commands", *ATTESTATION_TABLES))
    base = path.parent
    s = root.section("service")
    s.reject_unknown(("worker", "store", "shared_group", "challenge_interval",
                      "challenge_on_connect", "tick", "ack_interval"))
    worker = s.str("worker", f"{socket.gethostname()}-{os.getpid()}")
    m = root.section("mqtt", required=True)
    if not m.has("clean_start"):
        m.data["clean_start"] = False  # keep the session: the broker queues while we restart
    if not m.has("session_expiry"):
        m.data["session_expiry"] = 3600
    mq = mqtt_settings(m, base, f"edgeward-verifier-{worker}")
    c = root.section("commands")
    c.reject_unknown(("key", "ttl"))
    return ServiceConfig(
        source=path,
        worker=worker,
        store=s.path("store", "fleet.sqlite", base=base),
        mqtt=MqttSettings(**{**mq.__dict__, "manual_ack": True}),
        shared_group=s.str("shared_group", "edgeward"),
        challenge_interval=s.float("challenge_interval", 3600.0, min=1.0),
        challenge_on_connect=s.bool("challenge_on_connect", True),
        tick=s.float("tick", 1.0, min=0.05, max=60),
        ack_interval=s.float("ack_interval", 0.5, min=0.0, max=60),
        command_key=c.path("key", None, base=base),
        command_ttl=c.float("ttl", 60.0, min=1, max=86400),
    )
