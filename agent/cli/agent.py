"""``edgeward agent run --config AGENT.toml``: the device daemon (docs/AGENT.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("agent")
def agent() -> None:
    """Run the device agent."""


@agent.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="AGENT.toml")
def run(config_path: Path) -> int:
    """Run until SIGTERM: metrics, model re-verification, attestation, events, commands.

    SIGTERM flushes the outbox (a few seconds) and exits 0; SIGHUP reloads the configuration.
    """
    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config

    return build_agent(load_agent_config(config_path)).run()
