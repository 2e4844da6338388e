"""VERIFIER.toml, read once for a worker: ``[service]``, ``[mqtt]``, ``[commands]``, ``[store]``
(PostgreSQL instead of the SQLite files),
``[early_warning]`` (:class:`.early_warning.EarlyWarningConfig`), and the
attestation part's tables (``[verifier]``, ``[enrollment]``, ``[refvalues]``, ``[policy]``,
``[limits]``) through :func:`edgeward.attestation.config.verifier_from_section`, from the same
parse. ``[limits]`` bounds both the appraisal and the worker's envelope decoding
(:data:`edgeward.attestation.config.VERIFIER_LIMITS` unless set). Reading the file is the only I/O.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from edgeward.agent.config import MqttSettings, mqtt_settings
from edgeward.attestation.config import (
    VERIFIER_LIMITS,
    PostgresSettings,
    VerifierConfig,
    postgres_settings,
    verifier_from_section,
    verifier_limits,
)
from edgeward.core.limits import Limits
from edgeward.core.tomlconf import load_toml, read_section, setting

from .early_warning import EARLY_WARNING, EarlyWarningConfig
from .observe import METRICS_OFF, MetricsConfig
from .watch import WATCH, WatchConfig

ATTESTATION_TABLES = ("verifier", "enrollment", "refvalues", "policy", "limits", "locks")
WORKER_BACKOFF_BASE = 0.05  # seconds; [mqtt] backoff_base of a worker unless set
WORKER_BACKOFF_CAP = 0.5  # ... backoff_cap: back within a second of the broker


@dataclass(frozen=True)
class ServiceSettings:
    """``[service]``."""

    worker: str = setting("")  # default: host-pid
    store: Path = setting(Path("fleet.sqlite"))
    shared_group: str = setting("edgeward")
    challenge_interval: float = setting(3600.0, min=1.0)
    challenge_on_connect: bool = setting(True)
    # scheduled challenges per second per worker: a mass reconnect (every device online at
    # once) is spread over time, not sent at once, so that the evidence comes back no faster
    # than the workers appraise it within the nonce's lifetime (docs/SCALE.md)
    challenge_rate: float = setting(20.0, min=0.1, max=100_000)
    tick: float = setting(1.0, min=0.05, max=60)
    ack_interval: float = setting(0.5, min=0.0, max=60)  # at most one e2e ack per device per it
    commit_delay: float = setting(0.002, min=0.0, max=0.1)  # group commit: wait for more events


@dataclass(frozen=True)
class ServiceCommands:
    """``[commands]``: the backend's signing key (commands and end-to-end acks)."""

    key: Path | None = setting(None)
    ttl: float = setting(60.0, min=1, max=86400)


@dataclass(frozen=True)
class ServiceConfig:
    source: Path
    worker: str
    store: Path
    mqtt: MqttSettings
    shared_group: str = ServiceSettings.shared_group
    challenge_interval: float = ServiceSettings.challenge_interval
    challenge_on_connect: bool = ServiceSettings.challenge_on_connect
    challenge_rate: float = ServiceSettings.challenge_rate
    tick: float = ServiceSettings.tick
    command_key: Path | None = ServiceCommands.key
    command_ttl: float = ServiceCommands.ttl
    ack_interval: float = ServiceSettings.ack_interval
    commit_delay: float = ServiceSettings.commit_delay
    limits: Limits = VERIFIER_LIMITS  # [limits]: envelope decoding bounds
    verifier: VerifierConfig | None = None  # [verifier] and its tables; None: not appraised
    early_warning: EarlyWarningConfig = EARLY_WARNING  # [early_warning]
    metrics: MetricsConfig = METRICS_OFF  # [metrics]: Prometheus and health, off by default
    watch: WatchConfig = WATCH  # [fleet_events]: gaps, contraindicated, silent devices
    postgres: PostgresSettings | None = None  # [store] url: both stores in PostgreSQL


def load_service_config(path: Path) -> ServiceConfig:
    path = Path(path).resolve()
    root = load_toml(path)
    root.reject_unknown(("service", "mqtt", "commands", "early_warning", "metrics",
                         "fleet_events", "store", *ATTESTATION_TABLES))
    base = path.parent
    s = read_section(ServiceSettings, root.section("service"), base=base,
                     defaults={"worker": f"{socket.gethostname()}-{os.getpid()}"})
    # keep the session by default: the broker queues for a worker while it restarts; and
    # reconnect fast (a short back-off, capped at WORKER_BACKOFF_CAP): the devices' backlog
    # waits for the workers, and there are a few workers, not a fleet (docs/SCALE.md)
    mq = mqtt_settings(root.section("mqtt", required=True), base,
                       f"edgeward-verifier-{s.worker}", manual_ack=True,
                       clean_start=False, session_expiry=3600,
                       backoff_base=WORKER_BACKOFF_BASE, backoff_cap=WORKER_BACKOFF_CAP)
    c = read_section(ServiceCommands, root.section("commands"), base=base)
    return ServiceConfig(
        source=path,
        worker=s.worker,
        store=s.store,
        mqtt=mq,
        shared_group=s.shared_group,
        challenge_interval=s.challenge_interval,
        challenge_on_connect=s.challenge_on_connect,
        challenge_rate=s.challenge_rate,
        tick=s.tick,
        ack_interval=s.ack_interval,
        commit_delay=s.commit_delay,
        command_key=c.key,
        command_ttl=c.ttl,
        limits=verifier_limits(root.section("limits")),
        verifier=verifier_from_section(root, path) if root.has("verifier") else None,
        early_warning=read_section(EarlyWarningConfig, root.section("early_warning")),
        metrics=read_section(MetricsConfig, root.section("metrics")).check(path),
        watch=read_section(WatchConfig, root.section("fleet_events")),
        postgres=postgres_settings(root, path),
    )
