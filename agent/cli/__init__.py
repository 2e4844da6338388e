"""The ``edgeward`` command line (DESIGN.md, "Command line").

Thin click commands over the library API. Each command group lives in its own module of this
package and is imported only when it is used, so ``edgeward model verify`` does not pay for numpy,
paho or a TFLite runtime at start-up.

Errors: every :class:`~edgeward.core.errors.EdgewardError` becomes one line on stderr and the
exit code of its branch (0 ok, 1 usage/config, 2 security verdict negative, 3 operational). Any
other exception is a bug: one line and exit 3, the traceback only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from edgeward.core.errors import EXIT_OPERATIONAL, EXIT_USAGE, EdgewardError

from .common import LazyGroup

EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, as shells report it

# name -> (module, attribute, short help); imported on first use.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "keys": ("edgeward.agent.cli.keys", "keys", "Generate signing keys."),
    "model": ("edgeward.agent.cli.model", "model", "Build, inspect, sign and verify models."),
    "guard": ("edgeward.agent.cli.guard", "guard", "Calibrate and run the inference guard."),
    "attest": ("edgeward.agent.cli.attest", "attest", "Remote attestation, one shot."),
    "agent": ("edgeward.agent.cli.agent", "agent", "Run the device agent."),
    "verifier": ("edgeward.attestation.service.cli", "verifier", "Run the verifier service."),
    "fleet": ("edgeward.attestation.service.fleet_cli", "fleet",
              "Operate the fleet: devices, events, signed commands, TLS CA."),
    "demo": ("edgeward.simulator.demo", "demo", "Run the end-to-end demonstration."),
    "boards": ("edgeward.boards.cli", "boards", "List and show board definitions."),
    "sim": ("edgeward.simulator.cli", "sim", "Run a simulated fleet through scenarios."),
}


EPILOG = """\b
Exit codes: 0 done/verified/affirming, 1 usage or configuration error,
2 security verdict negative (rejected model, failed attestation, replay),
3 operational failure (I/O, broker unreachable, runtime or TPM missing).
Start with `edgeward demo`, or see README.md for a five-minute tour."""


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational logs.")
@click.version_option("0.1.0", prog_name="edgeward")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """edgeward: model integrity, remote attestation and inference early warning
    for Raspberry-Pi-class smart products."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: runs the click group and maps errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = _debug_requested(args)
    try:
        rv = cli.main(args=args, prog_name="edgeward", standalone_mode=False)
    except EdgewardError as e:
        if debug:
            raise
        click.echo(f"edgeward: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        # click turns Ctrl-C into Abort: exit 128 + SIGINT, as shells expect
        if isinstance(e.__context__, KeyboardInterrupt):
            click.echo("edgeward: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("edgeward: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("edgeward: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: one line, no traceback unless --debug
        if debug:
            raise
        click.echo(
            f"edgeward: internal error: {type(e).__name__}: {e} (rerun with --debug and report it)",
            err=True,
        )
        sys.exit(EXIT_OPERATIONAL)
    # A command may return an exit code after printing its result (a negative verdict that
    # still has output, such as an EAR that is not affirming).
    sys.exit(rv if isinstance(rv, int) else 0)
