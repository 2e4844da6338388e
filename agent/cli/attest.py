"""``edgeward attest``: remote attestation, one shot (DESIGN.md, "Command line").

Thin commands over :mod:`edgeward.attestation`. ``challenge``, ``evidence`` and ``verify`` are
the stable verbs; ``pubkey``, ``ca``, ``enroll``, ``measure``, ``refvalues sign`` and
``check-ear`` are what a vendor needs to go from key generation to an affirming result
(docs/ATTESTATION.md). ``verify`` prints the EAR and returns exit code 2 unless affirming.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import click

from edgeward.core.errors import EXIT_REJECTED, ConfigError, UntrustedKeyError
from edgeward.core.fileio import OPERATOR, read_bounded

from .common import (
    MAX_SMALL_FILE,
    LazyGroup,
    LazyTable,
    echo_json,
    file_arg,
    write_file,
)


def _unb64(text: str) -> bytes:
    t = text.strip()
    return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.strip())
    except ValueError as e:
        raise click.BadParameter(f"{what} must be hex") from e


# The verifier's side of the one-shot verbs runs on the server, never on a device: imported
# from attestation/service only when used (and absent where that part is not installed).
SERVER_COMMANDS: LazyTable = {
    "challenge": ("edgeward.attestation.service.attest_cli", "challenge",
                  "Print a fresh nonce (hex) for a device (verifier side)."),
    "verify": ("edgeward.attestation.service.attest_cli", "verify",
               "Appraise evidence and print the signed EAR (verifier side)."),
    "enroll": ("edgeward.attestation.service.attest_cli", "enroll",
               "Enroll a device ahead of time from its maker certificate (verifier side)."),
}


@click.group(cls=LazyGroup, lazy=SERVER_COMMANDS)
def attest() -> None:
    """Remote attestation: challenge, evidence, verify; plus enrollment and reference values."""


@attest.command()
@click.option("--config", required=True, type=file_arg, help="AGENT.toml")
@click.option("--nonce", required=True, help="The verifier's nonce, hex.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the evidence (COSE_Sign1 CWT).")
def evidence(config: Path, nonce: str, out: Path) -> None:
    """Measure this device and write signed evidence answering NONCE."""
    from edgeward.attestation.attester import Attester
    from edgeward.attestation.config import load_attester_config

    n = _hex(nonce, "--nonce")
    if not 8 <= len(n) <= 64:
        raise click.BadParameter("--nonce must be 8..64 bytes (16..128 hex digits)")
    a = Attester.from_config(load_attester_config(config))
    try:
        token = a.evidence(n)
    finally:
        a.close()
    write_file(out, token)
    click.echo(f"wrote {out} ({len(token)} bytes, {a.signer.kind} key "
               f"{a.signer.key_id.hex()[:16]})", err=True)


@attest.command("check-ear")
@click.argument("ear_file", metavar="EAR", type=file_arg)
@click.option("--verifier-key", required=True, type=file_arg, help="Verifier public.pem")
@click.option("--nonce", help="The relying party's nonce (hex) the EAR must echo.")
@click.option("--max-age", type=float, help="Accept an EAR at most this many seconds old.")
@click.option("--device", required=True,
              help="The device the EAR must be about (an EAR of another device is refused).")
def check_ear_cmd(ear_file: Path, verifier_key: Path, nonce: str | None,
                  max_age: float | None, device: str) -> int:
    """Relying party: check an EAR offline (signature, device, then nonce or age).

    Exit 0 if affirming."""
    from edgeward.attestation.ear import check_ear
    from edgeward.core.keys import load_verifying_key

    if nonce is None and max_age is None:
        raise click.UsageError("pass --nonce or --max-age")
    raw = read_bounded(ear_file, MAX_SMALL_FILE, what="EAR")
    if not raw.startswith(b"\xd2") and not raw.startswith(b"\x84"):
        raw = _unb64(raw.decode("ascii", "replace"))
    try:
        ear = check_ear(raw, load_verifying_key(verifier_key), now=time.time(),
                        nonce=_hex(nonce, "--nonce") if nonce else None, max_age=max_age,
                        device=device)
    except UntrustedKeyError as e:
        raise UntrustedKeyError(
            f"the EAR is signed by another key than {verifier_key}",
            hint="--verifier-key is the public half of the verifier's [verifier] key_file") from e
    echo_json(ear.to_json())
    return 0 if ear.affirming else EXIT_REJECTED


@attest.command()
@click.option("--config", required=True, type=file_arg, help="AGENT.toml")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the public key (PEM) here; default: print it.")
def pubkey(config: Path, out: Path | None) -> None:
    """Export this device's evidence public key (TPM AK or software key) for its certificate."""
    from edgeward.attestation.attester import open_signer
    from edgeward.attestation.config import load_attester_config

    signer = open_signer(load_attester_config(config))
    try:
        pem = signer.public.to_pem()
    finally:
        close = getattr(signer, "close", None)
        if close:
            close()
    if out:
        write_file(out, pem)
        click.echo(f"wrote {out} ({signer.kind} key {signer.key_id.hex()})", err=True)
    else:
        click.echo(pem.decode(), nl=False)


@attest.group()
def ca() -> None:
    """The device maker's CA (endorsements): create it, issue device certificates."""


@ca.command("init")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for private.pem (0600), public.pem and ca.pem.")
@click.option("--name", required=True, help="CA name, e.g. 'Acme Locks Device CA'.")
@click.option("--alg", type=click.Choice(["ed25519", "p256"]), default="p256",
              show_default=True)
def ca_init(out: Path, name: str, alg: str) -> None:
    """Create a maker CA key and its self-signed certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.attestation.enroll import make_ca
    from edgeward.core.keys import generate, write_keypair

    key = generate(alg)
    write_keypair(out, key)
    cert = make_ca(key, name, now=time.time())
    write_file(out / "ca.pem", cert.public_bytes(Encoding.PEM))
    click.echo(f"wrote {out}/ca.pem and the CA key pair")


@ca.command("issue")
@click.option("--ca", "ca_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder made by `attest ca init`.")
@click.option("--pubkey", "pub", required=True, type=file_arg, help="Device public key PEM.")
@click.option("--device", required=True, help="Device name (certificate CN).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tpm", is_flag=True,
              help="Vouch that the key is a TPM attestation key (only after checking it).")
@click.option("--board", help="Fix the device's board (EAT hwmodel) in the certificate.")
def ca_issue(ca_dir: Path, pub: Path, device: str, out: Path, tpm: bool,
             board: str | None) -> None:
    """Endorse a device key: issue its certificate (CN = device name)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.attestation.enroll import issue_device_cert, load_certs
    from edgeward.core.keys import load_signing_key, load_verifying_key

    ca_key = load_signing_key(ca_dir / "private.pem")
    ca_pem = read_bounded(ca_dir / "ca.pem", MAX_SMALL_FILE, what="CA certificate", faults=OPERATOR)
    ca_cert = load_certs(ca_pem)[0]
    if board is not None and not 0 < len(board.encode()) <= 32:
        raise click.BadParameter("--board must be 1..32 bytes")
    cert = issue_device_cert(ca_key, ca_cert, load_verifying_key(pub), device, now=time.time(),
                             tpm=tpm, board=board)
    write_file(out, cert.public_bytes(Encoding.PEM))
    click.echo(f"wrote {out} for device {device}" + (" (TPM key)" if tpm else ""))


@ca.command("revoke")
@click.option("--ca", "ca_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder made by `attest ca init`; its crl.pem is created or extended.")
@click.option("--cert", "certs", required=True, multiple=True, type=file_arg,
              help="Certificate (PEM) this CA issued, to revoke; may be repeated.")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True,
              help="Days until the CRL's nextUpdate.")
def ca_revoke(ca_dir: Path, certs: tuple[Path, ...], days: int) -> None:
    """Revoke device (or intermediate) certificates: write the CA's cumulative crl.pem.

    List it in VERIFIER.toml ``[enrollment] crls``; the same PEM file is what Mosquitto's
    ``crlfile`` reads for the CA it trusts.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.attestation.enroll import load_certs, make_crl
    from edgeward.core.keys import load_signing_key

    ca_key = load_signing_key(ca_dir / "private.pem")
    ca_cert = load_certs(read_bounded(ca_dir / "ca.pem", MAX_SMALL_FILE, what="CA certificate"))[0]
    serials: list[int] = []
    crl_path = ca_dir / "crl.pem"
    if crl_path.exists():
        old = x509.load_pem_x509_crl(read_bounded(crl_path, 16 * MAX_SMALL_FILE, what="CRL"))
        serials += [r.serial_number for r in old]
    for path in certs:
        cert = load_certs(read_bounded(path, MAX_SMALL_FILE, what="certificate"))[0]
        if cert.issuer != ca_cert.subject:
            raise ConfigError(f"{path} is not issued by the CA in {ca_dir}",
                              hint="revoke it with the CA that issued it")
        serials.append(cert.serial_number)
    crl = make_crl(ca_key, ca_cert, serials, now=time.time(), days=days)
    write_file(crl_path, crl.public_bytes(Encoding.PEM))
    click.echo(f"wrote {crl_path}: {len(set(serials))} certificate(s) revoked")


@attest.command()
@click.option("--config", required=True, type=file_arg, help="AGENT.toml")
@click.option("--json", "as_json", is_flag=True)
def measure(config: Path, as_json: bool) -> None:
    """Print this device's measurements as a reference-values TOML skeleton (or JSON)."""
    from edgeward.attestation.attester import VERSION
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.measure import load_model_trust
    from edgeward.attestation.measure import measure as do_measure

    cfg = load_attester_config(config)
    m = do_measure(cfg.source, cfg.models, agent_root=cfg.agent_root, model_sigs=cfg.model_sigs,
                   trust=load_model_trust(cfg.model_trust))
    if as_json:
        echo_json({"board": cfg.board, "swversion": VERSION, **m.to_cbor()})
        return
    lines = [f'board = "{cfg.board}"', f'min_swversion = "{VERSION}"', "",
             "[[releases]]", f'swversion = "{VERSION}"',
             f'agent_code = ["{m.agent_code.hex()}"]',
             f'agent_config = ["{m.agent_config.hex()}"]']
    for mm in m.models:
        digests = ", ".join(f'"{d.hex()}"' for _p, d in mm.files)
        lines += ["", "[[models]]", f'name = "{mm.name}"', f"min_version = {mm.version}",
                  f"digests = [{digests}]"]
    if cfg.key == "tpm":
        from edgeward.attestation.attester import open_signer

        tpm = open_signer(cfg)
        try:
            pcrs = tpm.read_pcrs(cfg.pcrs)  # type: ignore[attr-defined]
        finally:
            tpm.close()  # type: ignore[attr-defined]
        lines.insert(2, "require_tpm = true")
        lines += ["", "[pcrs]"] + [f'{i} = "{d.hex()}"' for i, d in sorted(pcrs.items())]
    click.echo("\n".join(lines))


@attest.group()
def refvalues() -> None:
    """Reference values (vendor-signed)."""


@refvalues.command("sign")
@click.argument("toml_file", metavar="REF.toml", type=file_arg)
@click.option("--key", required=True, type=file_arg, help="Vendor private.pem")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Output, e.g. refvalues/smartlock-pi4.ewref")
def refvalues_sign(toml_file: Path, key: Path, out: Path) -> None:
    """Sign reference values written in TOML for the verifier's refvalues folder."""
    from edgeward.attestation.refvalues import from_toml, sign_refvalues
    from edgeward.core.keys import load_signing_key
    from edgeward.core.tomlconf import load_toml

    rv = from_toml(load_toml(toml_file), issued=int(time.time()))
    data = sign_refvalues(rv, load_signing_key(key))
    write_file(out, data)
    click.echo(f"wrote {out} for board {rv.board} ({len(rv.releases)} release(s), "
               f"{len(rv.models)} model(s))")
