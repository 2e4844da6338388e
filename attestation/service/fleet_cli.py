"""``edgeward fleet``: the operator's tools for the fleet (server side, never on a device).

``fleet ca init|issue`` makes the fleet's TLS identities: the CA the broker trusts, the broker's
server certificate, each device's and verifier worker's client certificate (the common name
is the MQTT client id and the name the ACL grants), and the broker admin's, with which
deploy/broker-register registers the others.
"""

from __future__ import annotations

from pathlib import Path

import click

DIR = click.Path(file_okay=False, path_type=Path)


@click.group("fleet")
def fleet() -> None:
    """Operate the fleet: its TLS certificate authority and certificates."""


@fleet.group("ca")
def ca() -> None:
    """The fleet's TLS CA: the broker trusts it, and it names every client."""


@ca.command("init")
@click.option("--out", "out_dir", required=True, type=DIR,
              help="Folder for ca.pem and ca.key (mode 0600); created if missing.")
@click.option("--name", default="edgeward fleet CA", show_default=True,
              help="The CA certificate's common name.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500),
              help="Validity of the CA certificate.")
def ca_init(out_dir: Path, name: str, days: int) -> None:
    """Create the fleet CA. Keep ca.key offline; give ca.pem to the broker and every client."""
    from edgeward.attestation.service.pki import FleetCA

    made = FleetCA.create(out_dir, name, days=days)
    click.echo(f"wrote {made.ca} and {out_dir / 'ca.key'} (0600)")


@ca.command("issue")
@click.option("--ca", "ca_dir", required=True, type=DIR, help="Folder made by `fleet ca init`.")
@click.option("--role", required=True,
              type=click.Choice(["broker", "device", "worker", "admin"]),
              help="broker: a server certificate; device or worker: a client certificate; "
              "admin: the client certificate deploy/broker-register uses (name "
              "edgeward-broker-admin).")
@click.option("--name", required=True,
              help="Common name: the device name, the worker's client id, or the broker's name.")
@click.option("--host", "hosts", multiple=True,
              help="broker only: a host name or IP address clients connect to (repeat); "
              "default localhost and 127.0.0.1.")
@click.option("--out", "out_dir", type=DIR, help="Folder for NAME.crt and NAME.key "
              "(default: the CA folder).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
def ca_issue(ca_dir: Path, role: str, name: str, hosts: tuple[str, ...], out_dir: Path | None,
             days: int) -> None:
    """Issue a broker, device or worker certificate and its key (mode 0600)."""
    from edgeward.attestation.service.pki import FleetCA
    from edgeward.core.errors import ConfigError

    if hosts and role != "broker":
        raise ConfigError("--host is for --role broker only")
    # The broker makes the certificate's name the client id (deploy/mosquitto.conf): a device
    # must never hold a worker's or the broker admin's name, and a worker must hold one.
    service = name == "edgeward-verifier" or name.startswith(("edgeward-verifier-",
                                                               "edgeward-broker-admin"))
    if role == "device" and service:
        raise ConfigError(f"{name!r} is a service name; a device may not have it")
    if role == "admin" and name != "edgeward-broker-admin":
        raise ConfigError(f"the broker admin's name is edgeward-broker-admin (got {name!r})",
                          hint="--name edgeward-broker-admin (deploy/dynamic-security.json)")
    if role == "worker" and not (name == "edgeward-verifier"
                                 or name.startswith("edgeward-verifier-")):
        raise ConfigError(f"a worker's name starts with edgeward-verifier- (got {name!r})",
                          hint="e.g. --name edgeward-verifier-w1")
    cert = FleetCA.load(ca_dir, days=days).issue(name, server=role == "broker", hosts=hosts,
                                                 out=out_dir)
    click.echo(f"wrote {cert.cert} and {cert.key} (0600) for {role} {name}")
    if role in ("device", "worker"):
        click.echo(f"register it with the broker: deploy/broker-register {role} {name}")


@ca.command("revoke")
@click.option("--ca", "ca_dir", required=True, type=DIR, help="Folder made by `fleet ca init`.")
@click.option("--cert", "certs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A certificate to revoke (repeat). Without one, the CRL is only re-issued.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the CRL: re-issue it before then, or the broker refuses everyone.")
def ca_revoke(ca_dir: Path, certs: tuple[Path, ...], days: int) -> None:
    """Revoke device or worker certificates: write the CA's crl.pem for the broker's crlfile."""
    from edgeward.attestation.service.pki import FleetCA

    fleet_ca = FleetCA.load(ca_dir)
    serials = fleet_ca.revoke(certs, days=days)
    click.echo(f"wrote {fleet_ca.crl} ({len(serials)} revoked, valid {days} days); copy it to "
               "the broker's crlfile and restart mosquitto")
