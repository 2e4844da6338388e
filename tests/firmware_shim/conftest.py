"""Fixtures for the firmware-shim tests: the shared real swtpm (tests/fixtures_tpm.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# tests/firmware_shim (mcu_helpers) for --import-mode=importlib
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

_PATH = Path(__file__).resolve().parents[1] / "fixtures_tpm.py"
_NAME = "edgeward_tests_fixtures_tpm"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _mod
    _spec.loader.exec_module(_mod)
swtpm = sys.modules[_NAME].swtpm
