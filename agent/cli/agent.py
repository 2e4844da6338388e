"""``edgeward agent run --config AGENT.toml [--check] [--once]``: the device daemon
(docs/AGENT.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("agent")
def agent() -> None:
    """Run the device agent."""


def _validate(config_path: Path) -> None:
    """Everything --check looks at: the file, its TLS files and its trust store."""
    from edgeward.agent import seams
    from edgeward.agent.config import load_agent_config
    from edgeward.agent.transport import _tls_context

    cfg = load_agent_config(config_path)
    if cfg.mqtt.tls:
        _tls_context(cfg.mqtt)
    if cfg.commands.trust is not None:
        seams.command_trust(cfg.commands)


@agent.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="AGENT.toml")
@click.option("--check", is_flag=True,
              help="Check the configuration file (keys, TLS files, trust store) and exit: "
                   "0 valid, 1 not.")
@click.option("--once", is_flag=True,
              help="Connect, do one round (metrics, model check, delivery) and exit; "
                   "exit 3 if the broker cannot be reached.")
def run(config_path: Path, check: bool, once: bool) -> int:
    """Run until SIGTERM: metrics, model re-verification, attestation, events, commands.

    SIGTERM flushes the outbox (a few seconds) and exits 0; SIGHUP reloads the configuration.
    A first connection the broker refuses (certificate, name) exits 3 with what to do.
    """
    from edgeward.agent.cli.common import check_config, daemon_logging

    if check:
        return check_config(config_path, lambda: _validate(config_path))
    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config

    daemon_logging()
    return build_agent(load_agent_config(config_path), once=once).run()
