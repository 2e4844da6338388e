"""Small helpers shared by the command modules: JSON output, progress, path options.

Only the command line writes to stdout/stderr; library code reports progress through callbacks.
"""

from __future__ import annotations

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
out_path = click.Path(dir_okay=True, file_okay=True, path_type=Path)
