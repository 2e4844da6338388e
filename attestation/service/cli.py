"""``edgeward verifier run --config VERIFIER.toml``: one worker of the verifier service."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

logger = logging.getLogger(__name__)


@click.group("verifier")
def verifier() -> None:
    """Run the verifier service (backend)."""


@verifier.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="VERIFIER.toml")
def run(config_path: Path) -> int:
    """Run one worker until SIGTERM: challenges, appraisal, results, fleet store, gap detection.

    Start several workers, each with a certificate of its own (CN edgeward-verifier-<worker>, the
    client id); the broker shares the load through $share subscriptions.
    """
    from edgeward.attestation.service.appraise import AttestationAppraiser
    from edgeward.attestation.service.config import load_service_config
    from edgeward.attestation.service.service import VerifierService
    from edgeward.core.keys import load_signing_key

    cfg = load_service_config(config_path)  # the whole file, read once
    appraiser = None
    if cfg.verifier is not None:
        appraiser = AttestationAppraiser.from_config(cfg.verifier)
    else:
        logger.warning("no [verifier] table: evidence is recorded but not appraised")
    key = load_signing_key(cfg.command_key) if cfg.command_key else None
    svc = VerifierService(cfg, appraiser=appraiser, command_key=key)
    signal.signal(signal.SIGTERM, svc.on_signal)
    signal.signal(signal.SIGINT, svc.on_signal)
    try:
        return svc.run()
    finally:
        if appraiser is not None:
            appraiser.close()
