"""The composition root: the one place that builds the agent's parts from its configuration.

``edgeward agent run`` (and the demo, tests and benchmarks) call :func:`build_agent`; it reads
nothing but the parsed :class:`~.config.AgentConfig` and hands each part only what it needs:
the outbox its path and bound, the command gate its trust store and limits, the metrics
collector its disks, the model watch its models, the attester its own section, the transport
its broker settings and topics, the local socket its path and mode. On SIGHUP the agent asks
:meth:`Root.reload` for a new configuration (the whole file, read again) and new parts; a bad
file raises and the agent keeps what it runs. The factories of parts that live in other
packages (trust stores, model watch, attester, metrics, Home Assistant) are in :mod:`.seams`.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import seams
from .commands import CommandGate, load_last_seq
from .config import AgentConfig, load_agent_config
from .envelope import BACKEND_ONLINE, topic
from .localsock import LocalSocketServer
from .loop import Agent, Parts
from .outbox import Outbox
from .seams import Attester
from .transport import MqttTransport, StatusTopic

logger = logging.getLogger(__name__)

Sink = Callable[[object], None]


@dataclass
class Reloaded:
    """What a reload builds anew; ``transport`` is None when the broker settings are unchanged,
    and the attester is rebuilt only when its section changed (``attester_changed``)."""

    trust: Any
    watch: Any
    metrics: Any
    ha: Any
    attester_changed: bool
    attester: Attester | None
    transport: MqttTransport | None
    ear_trust: Any = None


class Root:
    """Builds the agent's parts; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.time, once: bool = False) -> None:
        self.clock = clock
        self.once = once  # --once: the transport gives up on the first failed connection

    def load(self, source: Path) -> AgentConfig:
        return load_agent_config(source)

    def outbox(self, cfg: AgentConfig) -> Outbox:
        return Outbox(cfg.outbox.path, cfg.device, max_bytes=cfg.outbox.max_bytes,
                      clock=self.clock)

    def gate(self, cfg: AgentConfig) -> CommandGate:
        return CommandGate(cfg.device, seams.command_trust(cfg.commands),
                           last_seq=load_last_seq(self.seq_path(cfg)),
                           max_skew=cfg.commands.max_skew, limits=cfg.limits)

    def seq_path(self, cfg: AgentConfig) -> Path:
        return cfg.agent.state_dir / "cmd_seq"

    def transport(self, cfg: AgentConfig, sink: Sink) -> MqttTransport:
        d = cfg.device
        kinds = ("cmd", "attest/challenge", "attest/result", *(("ack",) if cfg.e2e else ()))
        subs = [topic(d, k) for k in kinds] + ([BACKEND_ONLINE] if cfg.e2e else [])
        return MqttTransport(cfg.mqtt, sink, subscriptions=subs,
                             status=StatusTopic(topic(d, "status")), batch_acks=True,
                             once=self.once)

    def local(self, cfg: AgentConfig, sink: Sink) -> LocalSocketServer | None:
        if cfg.local.socket is None:
            return None
        return LocalSocketServer(cfg.local.socket, sink, mode=cfg.local.mode,
                                 max_clients=cfg.local.max_clients, limits=cfg.limits,
                                 allow=cfg.local.allow, rate=cfg.local.rate,
                                 idle_timeout=cfg.local.idle_timeout)

    def hardware(self, cfg: AgentConfig) -> Any:
        from edgeward.firmware_shim.wiring import hardware_parts

        board = cfg.attester.board if cfg.attester is not None else None
        self._hw = hardware_parts(cfg.hardware, board=board, state_dir=cfg.agent.state_dir)
        return self._hw

    def parts(self, cfg: AgentConfig, sink: Sink) -> Parts:
        hw = self.hardware(cfg)
        return Parts(
            outbox=self.outbox(cfg),
            gate=self.gate(cfg),
            seq_path=self.seq_path(cfg),
            metrics=seams.metrics_collector(cfg.metrics, hw),
            watch=seams.model_watch(cfg.models, cfg.limits),
            attester=seams.attester(cfg, hw.links),
            ha=seams.ha_discovery(cfg.device, cfg.home_assistant),
            local=self.local(cfg, sink),
            hardware=hw,
            ear_trust=seams.ear_trust(cfg.attester),
        )

    def agent(self, cfg: AgentConfig) -> Agent:
        events: queue.SimpleQueue[object] = queue.SimpleQueue()
        return Agent(cfg, self.parts(cfg, events.put), transport=self.transport(cfg, events.put),
                     clock=self.clock, events=events, rebuild=self, once=self.once)

    def reload(self, old: AgentConfig, sink: Sink) -> tuple[AgentConfig, Reloaded]:
        """Read the file again and build the parts that depend on it.

        Raises a ConfigError (or another error of the tree, from a trust store or a TPM) for a
        bad file; the caller then keeps running ``old``. The outbox, the command seq and the
        local socket stay: a change of ``device.name`` or ``outbox.path`` is refused, a change
        of ``[local]`` waits for a restart (and says so).
        """
        from edgeward.core.errors import ConfigError

        new = self.load(old.source)
        if new.device != old.device or new.outbox.path != old.outbox.path:
            raise ConfigError(f"{new.source}: reload cannot change device.name or outbox.path",
                              hint="restart the agent instead")
        if new.local != old.local:
            logger.warning("[local] changed: the local socket keeps its settings until restart")
        changed = new.attester != old.attester
        if new.hardware != old.hardware:
            logger.warning("[hardware] changed: the watchdog and lock links keep their "
                           "settings until restart")
        links = getattr(getattr(self, "_hw", None), "links", {})
        return new, Reloaded(
            trust=seams.command_trust(new.commands),
            watch=seams.model_watch(new.models, new.limits),
            metrics=seams.metrics_collector(new.metrics, getattr(self, "_hw", None)),
            ha=seams.ha_discovery(new.device, new.home_assistant),
            attester_changed=changed,
            attester=seams.attester(new, links) if changed else None,
            transport=self.transport(new, sink) if new.mqtt != old.mqtt else None,
            ear_trust=seams.ear_trust(new.attester),
        )


def build_agent(cfg: AgentConfig, *, clock: Callable[[], float] = time.time,
                once: bool = False) -> Agent:
    """The agent for ``cfg``, with every part built here and handed in."""
    return Root(clock=clock, once=once).agent(cfg)
