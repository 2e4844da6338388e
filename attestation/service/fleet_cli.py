"""``edgeward fleet``: the operator's tools for the fleet (server side, never on a device).

``fleet ca init|issue`` makes the fleet's TLS identities: the CA the broker trusts, the broker's
server certificate, each device's and verifier worker's client certificate (the common name
is the MQTT client id and the name the ACL grants), and the broker admin's, with which
deploy/broker-register registers the others.

``fleet devices|show|events`` read the fleet store the verifier workers fill (queries in
:mod:`.fleet_view`, text and JSON in :mod:`.fleet_format`); ``fleet command`` signs commands and
waits for the devices' answers (:mod:`.fleet_command`). This module only parses options.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path
from typing import Any

import click

DIR = click.Path(file_okay=False, path_type=Path)


@click.group("fleet")
def fleet() -> None:
    """Operate the fleet: devices, events, signed commands, and the fleet's TLS CA."""


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


# --- the operator's view and commands ------------------------------------------------------

CONFIG = click.option("--config", "config_path", required=True,
                      type=click.Path(dir_okay=False, path_type=Path),
                      help="VERIFIER.toml (its [service] store, [mqtt] and [commands]).")
JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _open(config_path: Path) -> Any:
    from edgeward.attestation.service.config import load_service_config
    from edgeward.attestation.service.store import open_fleet_store
    from edgeward.core.errors import ConfigError

    cfg = load_service_config(config_path)
    if cfg.postgres is None and not cfg.store.exists():
        raise ConfigError(f"no fleet store at {cfg.store}",
                          hint="start a worker first: edgeward verifier run --config "
                               f"{config_path}")
    return cfg, open_fleet_store(cfg.store, cfg.postgres, worker="operator")


@fleet.command("devices")
@click.option("--state", type=click.Choice(["online", "offline", "contraindicated"]),
              help="Only devices online or offline, or whose latest attestation failed.")
@JSON
@CONFIG
def devices_cmd(state: str | None, as_json: bool, config_path: Path) -> None:
    """List the devices: state, last seen, latest attestation, unexplained gaps."""
    from edgeward.attestation.service import fleet_format, fleet_view

    _, store = _open(config_path)
    try:
        rows = fleet_view.devices(store, state)
    finally:
        store.close()
    click.echo(fleet_format.devices_json(rows) if as_json else fleet_format.devices_table(rows))


@fleet.command("show")
@click.argument("device")
@click.option("--events", "n_events", default=20, show_default=True,
              type=click.IntRange(0, 10_000), help="How many of its latest events.")
@JSON
@CONFIG
def show_cmd(device: str, n_events: int, as_json: bool, config_path: Path) -> None:
    """One device: identity, board, last reports, attestations (AR4SI vectors), events, gaps."""
    from edgeward.attestation.service import fleet_format, fleet_view
    from edgeward.attestation.text import safe
    from edgeward.core.errors import ConfigError

    _, store = _open(config_path)
    try:
        d = fleet_view.show(store, device, events=n_events)
    finally:
        store.close()
    if d is None:
        raise ConfigError(f"no device {safe(device)!r} in the fleet store",
                          hint="edgeward fleet devices lists the devices it knows")
    click.echo(fleet_format.detail_json(d) if as_json else fleet_format.detail_text(d))


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``30s``, ``10m``, ``2h``, ``1d`` ago, or a UTC time ``2026-11-29T13:00:00``."""
    from edgeward.core.errors import ConfigError

    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return now - float(m.group(1)) * UNITS[m.group(2)]
    try:
        return float(calendar.timegm(time.strptime(text.strip().rstrip("Z"),
                                                   "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither a duration nor a time",
                          hint="e.g. --since 10m, --since 2h or --since 2026-11-29T13:00:00") \
            from None


@fleet.command("events")
@click.option("--since", help="Only events received since: 30s, 10m, 2h, 1d, or a UTC time "
              "2026-11-29T13:00:00.")
@click.option("--type", "types", multiple=True,
              help="Only this event type (repeat), e.g. model.rejected, command.refused.")
@click.option("--device", help="Only this device's events.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="Show at most the last LIMIT events (before following).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new events until Ctrl-C (or SIGTERM): then exit 0.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="With --follow: seconds between looks at the store.")
@JSON
@CONFIG
def events_cmd(since: str | None, types: tuple[str, ...], device: str | None, limit: int,
               follow: bool, interval: float, as_json: bool, config_path: Path) -> None:
    """The fleet's events (every message but reports and evidence), oldest first.

    With --json, one JSON object per line.
    """
    import json
    import signal
    import threading

    from edgeward.attestation.service import fleet_format, fleet_view

    _, store = _open(config_path)
    start = parse_since(since, time.time()) if since else None

    def show(ms: list[Any]) -> None:
        for m in ms:
            click.echo(json.dumps(fleet_format.message_json(m), ensure_ascii=True) if as_json
                       else fleet_format.event_line(m))

    try:
        ms = fleet_view.events(store, since=start, types=types, device=device, limit=limit,
                               newest=True)
        show(ms)
        after = ms[-1].id if ms else store.last_rowid()
        if follow:  # Ctrl-C or SIGTERM is the normal end of following: exit 0, store closed
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(interval):
                ms = fleet_view.events(store, after=after, since=start, types=types,
                                       device=device, limit=1000)
                show(ms)
                if ms:
                    after = ms[-1].id
    finally:
        store.close()


def parse_args(words: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` words as a command's args; a VALUE that reads as a number is one."""
    from edgeward.core.errors import ConfigError

    out: dict[str, Any] = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ConfigError(f"command argument {w!r} is not KEY=VALUE",
                              hint="e.g. edgeward fleet command lock-1 set_interval seconds=30")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


@fleet.command("command")
@click.argument("words", nargs=-1, required=True)
@click.option("--all", "everyone", is_flag=True,
              help="Every device whose status is online (then: NAME [KEY=VALUE ...]).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The backend's command signing key (default: [commands] key).")
@click.option("--timeout", default=15.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="Seconds to wait for the answers after the last command is sent.")
@click.option("--rate", default=5.0, show_default=True, type=click.FloatRange(0.01, 1000),
              help="At most this many commands per second (fleet-wide form).")
@CONFIG
def command_cmd(words: tuple[str, ...], everyone: bool, key_path: Path | None, timeout: float,
                rate: float, config_path: Path) -> int:
    """Sign a command and wait for the device's answer: DEVICE[,DEVICE...] NAME [KEY=VALUE ...].

    \b
    NAME: attest | reverify | set_interval (seconds=N). Examples:
      edgeward fleet command lock-1 attest --config VERIFIER.toml
      edgeward fleet command --all set_interval seconds=300 --rate 10 --config VERIFIER.toml
    Exit 0 every device accepted, 2 a device refused it, 3 a device did not answer in time.
    """
    from edgeward.agent.commands import Command, UnknownCommandError, check_args
    from edgeward.agent.envelope import check_device_id
    from edgeward.attestation.service import fleet_view
    from edgeward.attestation.service.fleet_command import CommandSender, exit_code
    from edgeward.attestation.text import safe
    from edgeward.core.errors import ConfigError, EdgewardError
    from edgeward.core.keys import load_signing_key

    cfg, store = _open(config_path)
    try:
        if everyone:
            targets = [r.name for r in fleet_view.devices(store, "online")]
            rest = words
        else:
            targets = [d for d in words[0].split(",") if d]
            rest = words[1:]
        if not rest:
            raise ConfigError("no command NAME given", hint="NAME is attest, reverify or "
                              "set_interval seconds=N")
        op, args = rest[0], parse_args(rest[1:])
        try:
            check_args(Command("", 1, 0.0, 0.0, op, args))
            for d in targets:
                check_device_id(d)
        except (UnknownCommandError, EdgewardError) as e:
            raise ConfigError(str(e)) from None
        if not targets:
            raise ConfigError("no device to command", hint="edgeward fleet devices --state "
                              "online lists the devices online")
        key_file = key_path or cfg.command_key
        if key_file is None:
            raise ConfigError("no command signing key", hint="give --key PRIVATE.pem or set "
                              "[commands] key in the config")
        sender = CommandSender(cfg, load_signing_key(key_file), store, targets)
        sender.start()

        def progress(a: Any) -> None:
            line = f"{safe(a.device, 40)}  command #{a.seq} {op}: {a.outcome}"
            if a.detail and a.outcome != "accepted":
                line += f" ({safe(a.detail, 160)})"
            click.echo(line, err=a.outcome == "timeout")

        try:
            answers = sender.run(targets, op, args, timeout=timeout, rate=rate,
                                 progress=progress)
        finally:
            sender.stop()
    finally:
        store.close()
    code = exit_code(answers)
    if code == 3:
        n = sum(a.outcome == "timeout" for a in answers)
        click.echo(f"edgeward: {n} of {len(answers)} device(s) did not answer within "
                   f"{timeout:g}s: offline, or not trusting this command key? "
                   "(edgeward fleet show DEVICE)", err=True)
    return code
