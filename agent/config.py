"""AGENT.toml as frozen dataclasses (STYLE.md, "Config"); reference in docs/AGENT.md.

Loaded and validated once at start (and again on SIGHUP); every error names the file, the key and
the fix. Relative paths are relative to the configuration file's folder. ``[device]`` is shared:
``name`` is the device id (the MQTT ``<device>`` and the certificate CN); its other keys and the
``[attestation]`` table belong to ``edgeward.attestation`` (``attestation/config.py``), which
reads the same file (:attr:`AgentConfig.source`).

The only I/O is reading the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeward.core.errors import ConfigError
from edgeward.core.limits import Limits
from edgeward.core.tomlconf import Section, load_toml

from .envelope import check_device_id
from .transport import MqttSettings

MiB = 1024 * 1024


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    sig: Path | None = None


@dataclass(frozen=True)
class AgentConfig:
    source: Path
    device: str
    state_dir: Path
    mqtt: MqttSettings
    # outbox
    outbox_path: Path
    outbox_max_bytes: int = 8 * MiB
    window: int = 1024  # handed to paho unacknowledged; paho keeps max_inflight on the wire
    batch: int = 256
    e2e_ack: bool = True  # delete on the backend's signed ack, not the broker's PUBACK
    ack_timeout: float = 60.0  # send again what the backend has not acked after this long
    # metrics
    metrics_interval: float = 60.0
    metrics_expiry: int = 300
    disk_paths: tuple[str, ...] = ("/",)
    # models
    models: tuple[ModelEntry, ...] = ()
    model_trust: Path | None = None
    model_state_dir: Path | None = None
    model_check_interval: float = 5.0
    model_reverify_interval: float = 3600.0
    # commands
    command_trust: Path | None = None
    command_max_skew: float = 30.0
    # local socket
    socket_path: Path | None = None
    socket_mode: int = 0o660
    socket_max_clients: int = 8
    local_rate: float = 50.0  # events per second accepted from applications (token bucket)
    # home assistant
    ha_enabled: bool = False
    ha_prefix: str = "homeassistant"
    # owned by edgeward.attestation (read from the same file by attestation/config.py)
    attestation: dict[str, Any] = field(default_factory=dict)
    device_table: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def with_interval(self, seconds: float) -> AgentConfig:
        return replace(self, metrics_interval=seconds)


_TOP = ("device", "agent", "mqtt", "outbox", "metrics", "models", "commands", "local",
        "home_assistant", "attestation", "limits")


def mqtt_settings(sec: Section, base: Path, client_id: str) -> MqttSettings:
    sec.reject_unknown(
        ("host", "port", "ca", "cert", "key", "tls", "insecure", "server_name", "keepalive",
         "clean_start", "session_expiry", "backoff_base", "backoff_cap", "max_inflight",
         "client_id")
    )
    tls = sec.bool("tls", True)
    s = MqttSettings(
        host=sec.str("host", "127.0.0.1"),
        port=sec.int("port", 8883 if tls else 1883, min=1, max=65535),
        client_id=sec.str("client_id", client_id),
        ca=sec.path("ca", None, base=base),
        cert=sec.path("cert", None, base=base),
        key=sec.path("key", None, base=base),
        tls=tls,
        insecure=sec.bool("insecure", False),
        server_name=sec.str("server_name", None),
        keepalive=sec.int("keepalive", 30, min=5, max=3600),
        clean_start=sec.bool("clean_start", True),
        session_expiry=sec.int("session_expiry", 0, min=0, max=2**32 - 1),
        backoff_base=sec.float("backoff_base", 0.5, min=0.01, max=60),
        backoff_cap=sec.float("backoff_cap", 60.0, min=0.05, max=3600),
        max_inflight=sec.int("max_inflight", 64, min=1, max=65535),
    )
    if s.backoff_cap < s.backoff_base:
        raise ConfigError(f"{sec.source}: key 'mqtt.backoff_cap' is below 'mqtt.backoff_base'")
    if tls and not s.insecure and s.ca is None:
        raise ConfigError(
            f"{sec.source}: key 'mqtt.ca' is missing",
            hint="give the CA that signed the broker certificate (or set insecure = true in a lab)",
        )
    if tls and s.cert is None:
        raise ConfigError(
            f"{sec.source}: key 'mqtt.cert' is missing",
            hint="the broker requires a client certificate: give cert and key",
        )
    return s


def limits_from(sec: Section) -> Limits:
    known = tuple(Limits.__dataclass_fields__)
    sec.reject_unknown(known)
    return Limits(**{k: sec.int(k, min=1) for k in known if sec.has(k)})


def load_agent_config(path: Path) -> AgentConfig:
    path = Path(path).resolve()
    root = load_toml(path)
    root.reject_unknown(_TOP)
    base = path.parent

    # [device] is shared with edgeward.attestation (which owns and checks its other keys)
    dev = root.section("device", required=True)
    device = dev.str("name")
    try:
        check_device_id(device)
    except ConfigError as e:
        raise ConfigError(f"{path}: key 'device.name': {e.message}", hint=e.hint) from e
    ag = root.section("agent")
    ag.reject_unknown(("state_dir",))
    state_dir = ag.path("state_dir", "state", base=base)

    mqtt = mqtt_settings(root.section("mqtt", required=True), base, device)

    ob = root.section("outbox")
    ob.reject_unknown(("path", "max_bytes", "window", "batch", "e2e_ack", "ack_timeout"))
    met = root.section("metrics")
    met.reject_unknown(("interval", "expiry", "disk_paths"))
    mod = root.section("models")
    mod.reject_unknown(("trust", "state_dir", "check_interval", "reverify_interval", "model"))
    models = []
    for m in mod.sections("model"):
        m.reject_unknown(("path", "sig"))
        models.append(ModelEntry(m.path("path", base=base), m.path("sig", None, base=base)))
    trust = mod.path("trust", None, base=base)
    if models and trust is None:
        raise ConfigError(f"{path}: key 'models.trust' is missing",
                          hint="give the model signer's public key (file or directory)")
    cmd = root.section("commands")
    cmd.reject_unknown(("trust", "max_skew"))
    loc = root.section("local")
    loc.reject_unknown(("socket", "mode", "max_clients", "rate"))
    ha = root.section("home_assistant")
    ha.reject_unknown(("enabled", "prefix"))
    disk = met.list("disk_paths", ["/"])
    if not all(isinstance(d, str) for d in disk):
        raise ConfigError(f"{path}: key 'metrics.disk_paths' must be a list of strings")

    return AgentConfig(
        source=path,
        device=device,
        state_dir=state_dir,
        mqtt=mqtt,
        outbox_path=ob.path("path", str(state_dir / "outbox.db"), base=base),
        outbox_max_bytes=ob.int("max_bytes", 8 * MiB, min=64 * 1024),
        window=ob.int("window", 1024, min=1, max=65000),
        batch=ob.int("batch", 256, min=1, max=10_000),
        e2e_ack=ob.bool("e2e_ack", True),
        ack_timeout=ob.float("ack_timeout", 60.0, min=0.5, max=86400),
        metrics_interval=met.float("interval", 60.0, min=0.005),
        metrics_expiry=met.int("expiry", 300, min=1),
        disk_paths=tuple(disk),
        models=tuple(models),
        model_trust=trust,
        model_state_dir=mod.path("state_dir", None, base=base),
        model_check_interval=mod.float("check_interval", 5.0, min=0.05),
        model_reverify_interval=mod.float("reverify_interval", 3600.0, min=1.0),
        command_trust=cmd.path("trust", None, base=base),
        command_max_skew=cmd.float("max_skew", 30.0, min=0),
        socket_path=loc.path("socket", None, base=base),
        socket_mode=loc.int("mode", 0o660, min=0, max=0o777),
        socket_max_clients=loc.int("max_clients", 8, min=1, max=256),
        local_rate=loc.float("rate", 50.0, min=0.1),
        ha_enabled=ha.bool("enabled", False),
        ha_prefix=ha.str("prefix", "homeassistant"),
        attestation=dict(root.section("attestation").data),
        device_table=dict(dev.data),
        limits=limits_from(root.section("limits")),
    )
