"""The verifier's side of ``edgeward attest``: ``challenge``, ``verify`` and ``enroll``.

They open the verifier's database and keys (VERIFIER.toml), so they live with the service and
never on a device; ``edgeward attest`` (agent/cli/attest.py) lists them when this part is
installed.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeward.agent.cli.common import MAX_SMALL_FILE, b64url, echo_json, file_arg, write_file
from edgeward.core.errors import EXIT_REJECTED
from edgeward.core.fileio import read_bounded


@click.command()
@click.option("--verifier-config", "config", required=True, type=file_arg,
              help="VERIFIER.toml")
@click.option("--device", help="Device name the nonce is bound to (its certificate CN).")
def challenge(config: Path, device: str | None) -> None:
    """Print a fresh nonce (hex), stored in the verifier database for one use by DEVICE."""
    from edgeward.attestation.config import load_verifier_config
    from edgeward.attestation.service.verifier import Verifier

    if not device:
        raise click.UsageError("a nonce is bound to one device: pass --device NAME")
    v = Verifier.from_config(load_verifier_config(config))
    try:
        click.echo(v.challenge(device).hex())
    finally:
        v.close()


@click.command()
@click.argument("evidence_file", metavar="EVIDENCE", type=file_arg)
@click.option("--verifier-config", "config", required=True, type=file_arg,
              help="VERIFIER.toml")
@click.option("--json", "as_json", is_flag=True, help="Print the EAR in readable JSON.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the signed EAR (COSE_Sign1) to this file.")
def verify(evidence_file: Path, config: Path, as_json: bool, out: Path | None) -> int:
    """Appraise EVIDENCE and print the signed EAR (base64url; --json: readable).

    Exit 0 when the result is affirming, 2 for anything else.
    """
    from edgeward.attestation.config import load_verifier_config
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.text import safe

    cfg = load_verifier_config(config)
    limit = cfg.limits.max_cbor_bytes
    try:  # oversized evidence is a verdict (a signed EAR, exit 2), not an input error
        size = evidence_file.stat().st_size
    except OSError:
        size = 0  # read_bounded names the problem
    data = b"" if size > limit else read_bounded(evidence_file, limit, what="evidence")
    v = Verifier.from_config(cfg)
    try:
        result = v.refuse_oversized(size) if size > limit else v.verify(data)
    finally:
        v.close()
    if out is not None:
        write_file(out, result.signed)
    if as_json:
        echo_json({**result.ear.to_json(), "signed": b64url(result.signed)})
    else:
        click.echo(b64url(result.signed))
        click.echo(f"{result.ear.status_name}: {safe(result.device or 'unknown device')}",
                   err=True)
        for reason in result.ear.reasons:  # escaped again: one reason is one line
            click.echo(f"  - {safe(reason, 400)}", err=True)
    return 0 if result.ear.affirming else EXIT_REJECTED


@click.command()
@click.option("--verifier-config", "config", required=True, type=file_arg)
@click.option("--cert", required=True, type=file_arg,
              help="Device certificate (PEM; chain leaf first).")
@click.option("--board", help="The device's board, if its certificate does not fix one.")
@click.option("--replace", is_flag=True,
              help="Re-enroll an enrolled device with this new maker-signed certificate (its "
              "old key is no longer accepted). Without it an enrolled key is never replaced.")
def enroll(config: Path, cert: Path, board: str | None, replace: bool) -> None:
    """Enroll a device ahead of time from its maker-CA certificate."""
    from edgeward.attestation.config import load_verifier_config
    from edgeward.attestation.enroll import load_certs
    from edgeward.attestation.service.verifier import Verifier

    v = Verifier.from_config(load_verifier_config(config))
    try:
        pem = read_bounded(cert, MAX_SMALL_FILE, what="certificate")
        e = v.enroll(load_certs(pem), board=board, replace=replace)
    finally:
        v.close()
    verb = "re-enrolled" if replace else "enrolled"
    click.echo(f"{verb} {e.device} (key {e.key.key_id.hex()[:16]}, CA '{e.issuer}')")
