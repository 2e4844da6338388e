"""Working folders that the demo and the simulator own, and nothing else.

A folder named by ``--out`` may already hold a user's files (``--out .`` is the current folder).
We remove only what an earlier run of ours created there: each run records the top-level
entries it made in a marker file, and the next run removes exactly those. A folder that is not
empty and has no marker is refused, never emptied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeward.core.errors import ConfigError

MARKER = ".edgeward-made"
_MAX_MARKER = 64 * 1024


def _recorded(folder: Path) -> list[str]:
    marker = folder / MARKER
    with open(marker, "rb") as f:
        text = f.read(_MAX_MARKER).decode("utf-8", "replace")
    names = []
    for line in text.splitlines():
        name = line.strip()
        # Only plain top-level names: nothing that could climb out of the folder.
        if name and "/" not in name and name not in (".", "..", MARKER):
            names.append(name)
    return names


def claim(folder: Path, *, option: str = "--out") -> None:
    """Make ``folder`` ready for a run: new, empty, or made by an earlier run of ours.

    Creates the folder if missing; removes what an earlier run recorded in it; refuses a file,
    or a non-empty folder that no run of ours made.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file, not a folder",
                          hint=f"choose another {option} folder")
    if not folder.exists():
        folder.mkdir(parents=True)
        return
    if (folder / MARKER).is_file():
        for name in _recorded(folder):
            path = folder / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        (folder / MARKER).unlink()
    existing = {p.name for p in folder.iterdir()}
    if existing:
        shown = ", ".join(sorted(existing)[:3]) + (", ..." if len(existing) > 3 else "")
        raise ConfigError(
            f"{option} {folder} is not empty ({shown}) and was not made by edgeward",
            hint=f"choose a new or empty {option} folder; nothing was removed",
        )


def record(folder: Path) -> None:
    """Write the marker: the top-level entries this run created in ``folder`` (all of them)."""
    made = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    (folder / MARKER).write_text("".join(f"{name}\n" for name in made), encoding="utf-8")
