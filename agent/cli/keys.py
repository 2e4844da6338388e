"""``edgeward keys``: signing keys for models, profiles, reference values and commands."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json


@click.group()
def keys() -> None:
    """Generate signing keys (Ed25519 or P-256)."""


@keys.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for private.pem (mode 0600) and public.pem; created if missing.")
@click.option("--alg", type=click.Choice(["ed25519", "p256"]), default="ed25519",
              show_default=True, help="Key type: Ed25519 (EdDSA) or P-256 (ES256).")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Print the key id and paths as JSON.")
def generate(out_dir: Path, alg: str, force: bool, as_json: bool) -> None:
    """Write a new key pair to OUT: private.pem (0600) and public.pem.

    The key id printed is the SHA-256 of the public key's SubjectPublicKeyInfo; manifests,
    evidence and results name their signer by it. Keep private.pem offline for release
    signing; put public.pem on devices as their trust store.
    """
    from edgeward.core.keys import generate as gen
    from edgeward.core.keys import write_keypair

    key = gen(alg)
    priv, pub = write_keypair(out_dir, key, force=force)
    if as_json:
        echo_json({"alg": key.alg, "key_id": key.key_id.hex(), "private": priv, "public": pub})
    else:
        click.echo(f"wrote {priv} (private, 0600) and {pub}")
        click.echo(f"key id {key.key_id.hex()} ({key.alg})")
