"""AGENT.toml as nested frozen dataclasses (STYLE.md, "Config"); reference in docs/AGENT.md.

One loader reads the file once, at start and again on SIGHUP: every table is one frozen section
below, each key a field of the same name whose default is stated once, in the field
(:func:`edgeward.core.tomlconf.read_section`). Unknown keys and wrong types are refused with the
file and the key's path (``outbox.window``), and the fix where there is one. Relative paths are
relative to the configuration file's folder.

``[device]`` and ``[attestation]`` belong to ``edgeward.attestation``: the loader hands the same
parsed tables, with the agent's state folder and models, to
:func:`edgeward.attestation.config.attester_from_section`, and keeps the result in
:attr:`AgentConfig.attester` (``None`` when ``[device]`` names no ``board``: attestation off).
``device.name`` is the device id (the MQTT ``<device>`` and the certificate's name).

The only I/O is reading the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeward.core.errors import ConfigError, EdgewardError
from edgeward.core.limits import Limits
from edgeward.core.tomlconf import Section, load_toml, read_section, setting

from .envelope import check_device_id

if TYPE_CHECKING:
    from edgeward.attestation.config import AttesterConfig

MiB = 1024 * 1024


@dataclass(frozen=True)
class MqttSettings:
    """``[mqtt]``: the broker connection (TLS with client certificates by default)."""

    host: str = setting("127.0.0.1")
    port: int = setting(8883, min=1, max=65535)  # 1883 when tls = false
    client_id: str = setting("")  # default: the device name
    ca: Path | None = setting(None)
    cert: Path | None = setting(None)
    key: Path | None = setting(None)
    tls: bool = setting(True)
    insecure: bool = setting(False)  # skip broker verification: tests and labs only
    keepalive: int = setting(30, min=5, max=3600)
    clean_start: bool = setting(True)
    session_expiry: int = setting(0, min=0, max=2**32 - 1)
    backoff_base: float = setting(0.5, min=0.01, max=60)
    backoff_cap: float = setting(60.0, min=0.05, max=3600)
    max_inflight: int = setting(64, min=1, max=65535)
    # not a key of the file: the verifier service acknowledges incoming QoS 1 once it is stored
    manual_ack: bool = False


@dataclass(frozen=True)
class AgentSettings:
    """``[agent]``."""

    state_dir: Path = setting(Path("state"))


@dataclass(frozen=True)
class OutboxSettings:
    """``[outbox]``: the durable outbox and delivery (docs/AGENT.md, "The durable outbox")."""

    path: Path = setting(Path("state/outbox.db"))  # default: [agent] state_dir / outbox.db
    max_bytes: int = setting(8 * MiB, min=64 * 1024)
    window: int = setting(1024, min=1, max=65000)  # handed to paho unacknowledged
    batch: int = setting(256, min=1, max=10_000)
    e2e_ack: bool = setting(True)  # delete on the backend's signed ack, not the broker's PUBACK
    ack_timeout: float = setting(60.0, min=0.5, max=86400)  # send again after this long


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``."""

    interval: float = setting(60.0, min=0.005)
    expiry: int = setting(300, min=1)
    disk_paths: tuple[str, ...] = setting(("/",))


@dataclass(frozen=True)
class ModelEntry:
    """``[[models.model]]``: the file, and the signed model name it must hold."""

    path: Path = setting()
    name: str = setting()  # the file name alone binds nothing: another model could sit there
    sig: Path | None = setting(None)


@dataclass(frozen=True)
class ModelsSettings:
    """``[models]``: the models re-verified while the agent runs."""

    trust: Path | None = setting(None)
    # anti-rollback state, always on; default: [agent] state_dir / "models"
    state_dir: Path = setting(Path("state/models"))
    check_interval: float = setting(5.0, min=0.05)
    reverify_interval: float = setting(3600.0, min=1.0)
    model: tuple[ModelEntry, ...] = ()


@dataclass(frozen=True)
class CommandsSettings:
    """``[commands]``: the backend's key, for signed commands and end-to-end acks."""

    trust: Path | None = setting(None)
    max_skew: float = setting(30.0, min=0)


@dataclass(frozen=True)
class LocalSettings:
    """``[local]``: the socket applications send events to."""

    socket: Path | None = setting(None)
    mode: int = setting(0o660, min=0, max=0o777)
    max_clients: int = setting(8, min=1, max=256)
    rate: float = setting(50.0, min=0.1)  # events per second accepted (token bucket)
    # the event names applications may send; they reach the backend as app.<name>
    allow: tuple[str, ...] = setting(("anomaly", "alarm", "tamper"))
    idle_timeout: float = setting(60.0, min=0.1)  # a connection silent this long is closed


@dataclass(frozen=True)
class HomeAssistantSettings:
    """``[home_assistant]``."""

    enabled: bool = setting(False)
    prefix: str = setting("homeassistant")


@dataclass(frozen=True)
class HardwareSettings:
    """``[hardware]``: the board's watchdog, vendor board folders, a lock's serial link
    (edgeward.firmware_shim.wiring; docs/LOCK.md). The backend comes from ``[device] board``."""

    board_dirs: tuple[str, ...] = setting(())  # folders of vendor board files (*.toml)
    watchdog: int = setting(0, min=0, max=3600)  # seconds; 0: the agent does not arm it
    lock_port: str | None = setting(None)  # e.g. /dev/ttyAMA0: a lock microcontroller there
    lock_name: str = setting("lock-mcu")  # its submods entry (the verifier's registration)
    lock_baud: int = setting(115200, min=1200, max=4_000_000)
    lock_timeout: float = setting(1.0, min=0.05, max=30)
    lock_retries: int = setting(3, min=1, max=10)


@dataclass(frozen=True)
class AgentConfig:
    """The whole of AGENT.toml, parsed once."""

    source: Path
    device: str  # [device] name
    mqtt: MqttSettings
    agent: AgentSettings = AgentSettings()
    outbox: OutboxSettings = OutboxSettings()
    metrics: MetricsSettings = MetricsSettings()
    models: ModelsSettings = ModelsSettings()
    commands: CommandsSettings = CommandsSettings()
    local: LocalSettings = LocalSettings()
    home_assistant: HomeAssistantSettings = HomeAssistantSettings()
    hardware: HardwareSettings = HardwareSettings()
    limits: Limits = field(default_factory=Limits)
    attester: AttesterConfig | None = None  # [device] board and [attestation]; None: off

    @property
    def e2e(self) -> bool:
        """End-to-end acknowledgement is on: asked for, and the backend's key is there."""
        return self.outbox.e2e_ack and self.commands.trust is not None

    def with_interval(self, seconds: float) -> AgentConfig:
        return replace(self, metrics=replace(self.metrics, interval=seconds))


TABLES = ("device", "agent", "mqtt", "outbox", "metrics", "models", "commands", "local",
          "home_assistant", "attestation", "limits", "hardware")


def mqtt_settings(sec: Section, base: Path, client_id: str, *, manual_ack: bool = False,
                  **defaults: object) -> MqttSettings:
    """``[mqtt]`` (also read by the verifier service, with its own ``defaults``)."""
    if sec.has("server_name"):  # accepted once and never used: refuse it rather than ignore it
        raise ConfigError(
            f"{sec.source}: key 'mqtt.server_name' is not supported",
            hint="the broker certificate is checked against 'host': set host to the name "
            "in the broker's certificate (and map it in /etc/hosts if needed)")
    tls = sec.bool("tls", MqttSettings.tls)
    port = MqttSettings.port if tls else 1883
    s = read_section(MqttSettings, sec, base=base,
                     defaults={"port": port, "client_id": client_id, **defaults},
                     given={"manual_ack": manual_ack})
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


def _check_certificate_name(path: Path, device: str, cert: Path | None) -> None:
    """The broker makes the client certificate's CN the client id and grants topics by it
    (deploy/mosquitto.conf): a device name that differs would have every message refused.
    A certificate that cannot be read is left to the transport, which reports it."""
    if cert is None:
        return
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        from edgeward.core.fileio import OPERATOR, read_bounded

        pem = read_bounded(Path(cert), 64 * 1024, what="device certificate", faults=OPERATOR)
        names = x509.load_pem_x509_certificate(pem).subject \
            .get_attributes_for_oid(NameOID.COMMON_NAME)
    except (EdgewardError, ValueError):
        return
    cn = str(names[0].value) if names else ""
    if cn != device:
        raise ConfigError(
            f"{path}: key 'device.name' is {device!r} but the MQTT certificate {cert} is for "
            f"{cn!r}",
            hint="the broker uses the certificate's name as the device's identity: make them "
                 "the same",
        )


def limits_from(sec: Section) -> Limits:
    known = tuple(Limits.__dataclass_fields__)
    sec.reject_unknown(known)
    return Limits(**{k: sec.int(k, min=1) for k in known if sec.has(k)})


def load_agent_config(path: Path, *, need_mqtt: bool = True) -> AgentConfig:
    """Read and check AGENT.toml. ``need_mqtt=False``: for the attestation tools, which read
    the same file but never connect (``[mqtt]`` may then be absent; :attr:`AgentConfig.mqtt`
    holds the defaults, unchecked)."""
    path = Path(path).resolve()
    return agent_config_from(load_toml(path), path, need_mqtt=need_mqtt)


def agent_config_from(root: Section, path: Path, *, need_mqtt: bool = True) -> AgentConfig:
    root.reject_unknown(TABLES)
    base = path.parent
    dev = root.section("device", required=True)
    device = dev.str("name")
    try:
        check_device_id(device)
    except ConfigError as e:
        raise ConfigError(f"{path}: key 'device.name': {e.message}", hint=e.hint) from e
    agent = read_section(AgentSettings, root.section("agent"), base=base)
    if need_mqtt or root.has("mqtt"):
        mqtt = mqtt_settings(root.section("mqtt", required=True), base, device)
        _check_certificate_name(path, device, mqtt.cert)
    else:
        mqtt = MqttSettings(client_id=device)

    mod = root.section("models")
    entries = tuple(read_section(ModelEntry, m, base=base) for m in mod.sections("model"))
    models = read_section(ModelsSettings, mod, base=base, given={"model": entries},
                          defaults={"state_dir": agent.state_dir / "models"},
                          extra_keys=("model",))
    if models.model and models.trust is None:
        raise ConfigError(f"{path}: key 'models.trust' is missing",
                          hint="give the model signer's public key (file or directory)")
    cfg = AgentConfig(
        source=path,
        device=device,
        mqtt=mqtt,
        agent=agent,
        outbox=read_section(OutboxSettings, root.section("outbox"), base=base,
                            defaults={"path": agent.state_dir / "outbox.db"}),
        metrics=read_section(MetricsSettings, root.section("metrics"), base=base),
        models=models,
        commands=read_section(CommandsSettings, root.section("commands"), base=base),
        local=read_section(LocalSettings, root.section("local"), base=base),
        home_assistant=read_section(HomeAssistantSettings, root.section("home_assistant")),
        hardware=read_section(HardwareSettings, root.section("hardware"), base=base),
        limits=limits_from(root.section("limits")),
    )
    return replace(cfg, attester=_attester(root, cfg))


def _attester(root: Section, cfg: AgentConfig) -> AttesterConfig | None:
    """The attestation part's tables, read from the same parsed file (None: attestation off)."""
    from edgeward.attestation.config import attester_from_section

    return attester_from_section(
        root, cfg.source, state_dir=cfg.agent.state_dir,
        models=tuple((m.path, m.sig) for m in cfg.models.model),
    )
