"""Load the fuzz targets of fuzz/ (plain scripts, not a package) for the regression tests."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"  # on pytest's pythonpath


def load_target(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz_{name}")
