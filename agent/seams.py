"""Where the agent meets the other parts of edgeward: keys, model watch, attester, EAR, HA.

Factories for the composition root (:mod:`.compose`), each given only its own section of the
configuration. Each imports its part lazily, so the agent still runs (and says so in its log)
when a part is not installed or not configured. The attester seam is a plain callable
``nonce -> evidence bytes`` (an EAT in COSE_Sign1) built by ``edgeward.attestation`` from the
``attester`` section of the same parsed AGENT.toml, with a ``close`` (:class:`Attester`).

Challenge payload (verifier -> device, ``attest/challenge``): CBOR map ``{"nonce": bstr}``
(8..64 bytes, RFC 9711 §4.1), optionally with more keys that the device ignores.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edgeward.core import cbor
from edgeward.core.errors import EdgewardError, MalformedInputError
from edgeward.core.limits import Limits

from .config import (
    AgentConfig,
    CommandsSettings,
    HomeAssistantSettings,
    MetricsSettings,
    ModelsSettings,
)

logger = logging.getLogger(__name__)



class Attester(Protocol):
    """The agent's evidence maker: ``nonce -> evidence bytes`` (an EAT in COSE_Sign1), and
    ``close`` to end what it holds (a TPM session, lock serial links) when it is replaced or the
    agent stops."""

    def __call__(self, nonce: bytes) -> bytes: ...

    def close(self) -> None: ...


EAR_MAX_AGE = 600.0  # seconds an attestation result stays acceptable


def command_trust(commands: CommandsSettings) -> Any:
    if commands.trust is None:
        logger.warning("no [commands] trust configured: every command will be refused")
        return None
    from edgeward.core.keys import TrustStore

    return TrustStore.from_path(commands.trust)


def metrics_collector(metrics: MetricsSettings, hardware: Any = None) -> Any:
    """``hardware``: the firmware shim's parts, whose platform gives the CPU temperature."""
    from .metrics import MetricsCollector

    platform = getattr(hardware, "platform", None)
    return MetricsCollector(metrics.disk_paths,
                            temperature=platform.cpu_temperature if platform else None)


def model_watch(models: ModelsSettings, limits: Limits) -> Any:
    if not models.model:
        return None
    try:
        from edgeward.core.keys import TrustStore
        from edgeward.models.watch import ModelWatch
    except ImportError as e:  # pragma: no cover - models part missing
        logger.error("model re-verification unavailable: %s", e)
        return None
    assert models.trust is not None
    from edgeward.models.rollback import RollbackState

    # anti-rollback always (a state folder under the agent's state by default), and each path
    # must hold the model named in the configuration
    state = RollbackState(models.state_dir)
    w = ModelWatch(TrustStore.from_path(models.trust), interval=models.reverify_interval,
                   state=state, limits=limits)
    for m in models.model:
        w.add(m.path, m.sig, name=m.name)
    return w


def attester(cfg: AgentConfig, links: dict[str, Any] | None = None) -> Attester | None:
    """The attestation part's evidence maker for this agent, or None if it is not available.

    Built from :attr:`AgentConfig.attester` (``[device]`` and ``[attestation]`` of the same
    parsed file); a file without a ``[device] board`` runs the agent without attestation.
    ``links``: the serial links to lock microcontrollers (:mod:`edgeward.firmware_shim.wiring`),
    whose tokens the evidence then carries as submodules.
    """
    if cfg.attester is None:
        logger.warning("no [device] board in %s: attestation is off", cfg.source)
        return None
    try:
        from edgeward.attestation.attester import Attester as _Attester
    except ImportError as e:  # pragma: no cover - part not installed
        logger.warning("edgeward.attestation is not available (%s); attestation is off", e)
        return None
    att = _Attester.from_config(cfg.attester)
    if links:
        from edgeward.firmware_shim.wiring import GatewayEvidence

        return GatewayEvidence(att, links)
    return att


def parse_challenge(data: bytes, limits: Limits) -> bytes:
    m = cbor.loads(data, limits=limits)
    if not isinstance(m, dict) or not isinstance(m.get("nonce"), bytes):
        raise MalformedInputError("challenge is not a map with a byte-string nonce")
    nonce: bytes = m["nonce"]
    if not 8 <= len(nonce) <= 64:
        raise MalformedInputError(f"challenge nonce of {len(nonce)} bytes is outside 8..64")
    return nonce


def ear_trust(attester: Any) -> Any:
    """The verifier's EAR keys (``[attestation] verifier_key``): their own trust store, apart
    from the command keys. None: results are not checked."""
    path = getattr(attester, "verifier_key", None)
    if path is None:
        return None
    from edgeward.core.keys import TrustStore

    return TrustStore.from_path(path)


def parse_result(data: bytes, limits: Limits, trust: Any, *, now: float,
                 device: str | None = None) -> str | None:
    """The status name of a signed EAR about ``device``, or None if it cannot be checked."""
    if trust is None:
        return None
    try:
        from edgeward.attestation.ear import check_ear

        ear = check_ear(data, trust, now=now, max_age=EAR_MAX_AGE, device=device, limits=limits)
    except (ImportError, EdgewardError) as e:
        logger.warning("attestation result not accepted: %s", e)
        return None
    return str(ear.status_name)


def ha_discovery(device: str, ha: HomeAssistantSettings) -> Any:
    if not ha.enabled:
        return None
    from .ha_discovery import HomeAssistant

    return HomeAssistant(device, ha.prefix)
