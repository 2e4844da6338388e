"""``edgeward verifier run --config VERIFIER.toml [--check] [--once]``: one worker of the
verifier service; ``edgeward verifier migrate``: the stores' schema (:mod:`.migrate_cmd`)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)


@click.group("verifier")
def verifier() -> None:
    """Run the verifier service (backend)."""


def build(path: Path) -> tuple[Any, Any, Any]:
    """``(config, appraiser or None, command key or None)`` from the file: at start, for
    ``--check`` and again on SIGHUP. Raises an EdgewardError for a bad file or file it names."""
    from edgeward.attestation.service.appraise import AttestationAppraiser
    from edgeward.attestation.service.config import load_service_config
    from edgeward.core.keys import load_signing_key

    cfg = load_service_config(path)  # the whole file, read once
    key = load_signing_key(cfg.command_key) if cfg.command_key else None
    appraiser = AttestationAppraiser.from_config(cfg.verifier) if cfg.verifier else None
    return cfg, appraiser, key


def _check(path: Path) -> None:
    from edgeward.agent.transport import _tls_context
    from edgeward.attestation.service.service import worker_client_id

    cfg, appraiser, _key = build(path)
    if appraiser is not None:
        appraiser.close()
    if cfg.mqtt.tls:
        _tls_context(cfg.mqtt)
    worker_client_id(cfg.mqtt.cert, cfg.mqtt.client_id)


@verifier.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="VERIFIER.toml")
@click.option("--check", is_flag=True,
              help="Check the configuration file (keys, reference values, keys, TLS files) and "
                   "exit: 0 valid, 1 not.")
@click.option("--once", is_flag=True,
              help="Connect, handle what is waiting (until 1 s passes with no message), run the "
                   "challenge schedule once and exit; exit 3 if the broker cannot be reached.")
def run(config_path: Path, check: bool, once: bool) -> int:
    """Run one worker until SIGTERM: challenges, appraisal, results, fleet store, gap detection.

    Start several workers, each with a certificate of its own (CN edgeward-verifier-<worker>, the
    client id); the broker shares the load through $share subscriptions. SIGHUP reloads the
    configuration and reference values; a first connection the broker refuses exits 3.
    """
    from edgeward.agent.cli.common import check_config, daemon_logging
    from edgeward.attestation.service.service import VerifierService

    if check:
        return check_config(config_path, lambda: _check(config_path))
    daemon_logging()
    cfg, appraiser, key = build(config_path)
    if appraiser is None:
        logger.warning("no [verifier] table: evidence is recorded but not appraised")
    svc = VerifierService(cfg, appraiser=appraiser, command_key=key, once=once,
                          rebuild=lambda old: build(old.source))
    signal.signal(signal.SIGTERM, svc.on_signal)
    signal.signal(signal.SIGINT, svc.on_signal)
    signal.signal(signal.SIGHUP, svc.on_sighup)
    try:
        return svc.run()
    finally:
        close = getattr(svc.appraiser, "close", None)  # the one in use (SIGHUP replaces it)
        if close is not None:
            close()


@verifier.command("migrate")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="VERIFIER.toml")
@click.option("--check", is_flag=True,
              help="Say which migrations are pending and apply nothing: exit 0 up to date, "
                   "1 pending.")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; apply nothing.")
def migrate(config_path: Path, check: bool, dry_run: bool) -> int:
    """Bring the verifier and fleet stores to this edgeward's schema ([store] url: PostgreSQL;
    else the SQLite files), saying what it applies. Workers refuse to start on a PostgreSQL
    schema they do not know; run this first after installing or upgrading."""
    from edgeward.attestation.service import migrate_cmd
    from edgeward.attestation.service.config import load_service_config

    return migrate_cmd.run(load_service_config(config_path), check=check, dry_run=dry_run,
                           echo=click.echo)
