"""Small helpers shared by the command modules: JSON output, progress, path options.

Only the command line writes to stdout/stderr; library code reports progress through callbacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def echo_json(obj: Any) -> None:
    """Print ``obj`` as stable, indented JSON (bytes as hex)."""

    def default(o: Any) -> Any:
        if isinstance(o, bytes | bytearray | memoryview):
            return bytes(o).hex()
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, set | frozenset | tuple):
            return list(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=default))


def progress_printer(enabled: bool = True) -> Callable[[str], None]:
    """A progress callback writing one line per step to stderr (so stdout stays parseable)."""

    def report(message: str) -> None:
        if enabled:
            click.echo(f"  .. {message}", err=True)

    return report


def is_tty() -> bool:
    return sys.stderr.isatty()


existing_file = click.Path(exists=False, dir_okay=True, path_type=Path)
file_arg = click.Path(path_type=Path, dir_okay=False)  # a file argument or option
MAX_SMALL_FILE = 4 * 1024 * 1024  # an EAR or a PEM certificate chain


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5), as EARs and tokens are printed."""
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a command's output file atomically."""
    from edgeward.core.persist import write_atomic

    write_atomic(path, data, mode=mode)
out_path = click.Path(dir_okay=True, file_okay=True, path_type=Path)


# name -> (module, attribute, short help)
LazyTable = dict[str, tuple[str, str, str]]


class LazyGroup(click.Group):
    """A group whose commands (beyond those added to it directly) are imported on first use.

    A command whose module is not installed is simply absent: the device's command line lists
    no server or simulator command when those parts are not there, and device code never
    imports them.
    """

    def __init__(self, *args: Any, lazy: LazyTable | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: LazyTable = lazy or {}

    def _available(self, name: str) -> bool:
        return name in self.lazy and importlib.util.find_spec(self.lazy[name][0]) is not None

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name in self.lazy if self._available(name)]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or not self._available(cmd_name):
            return super().get_command(ctx, cmd_name)
        module, attr, _help = self.lazy[cmd_name]
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(80)))
            else:
                rows.append((name, self.lazy[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def key_line(path: Path, message: str) -> int | None:
    """The line of ``path`` that sets the key a configuration error names (``key 'a.b'``), or
    None: the table headers are followed, so ``[mqtt]`` then ``port = ...`` is ``mqtt.port``."""
    import re

    m = re.search(r"key '([A-Za-z0-9_.\-]+)'", message)
    if m is None:
        return None
    *table, key = m.group(1).split(".")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    current: list[str] = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        head = re.fullmatch(r"\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?(\s*#.*)?", s)
        if head:
            current = head.group(1).split(".")
            continue
        k = re.match(r"([A-Za-z0-9_.\-]+)\s*=", s)
        if k and current + k.group(1).split(".")[:-1] == table and k.group(1).split(".")[-1] == key:
            return n
    return None


def check_config(path: Path, validate: Callable[[], object]) -> int:
    """``--check``: run ``validate`` (load and check the file, start nothing); print one line
    per outcome: ``FILE: valid`` (exit 0) or ``FILE:LINE: what is wrong`` (exit 1)."""
    from edgeward.core.errors import EdgewardError

    try:
        validate()
    except EdgewardError as e:
        line = key_line(path, str(e))
        where = f"{path}:{line}" if line is not None else f"{path}"
        text = str(e)
        for prefix in (f"{path.resolve()}: ", f"{path}: "):
            text = text.removeprefix(prefix)
        click.echo(f"{where}: {text}", err=True)
        return 1
    click.echo(f"{path}: valid")
    return 0


def daemon_logging() -> None:
    """Show the daemons' own lines (connected and serving, reloaded, stopped) at the default
    level; everything else keeps the level of ``-v``/``--debug``."""
    import logging

    lg = logging.getLogger("edgeward.daemon")
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)
