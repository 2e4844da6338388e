"""Shared pytest fixture: a real swtpm (TPM 2.0 emulator) on free loopback ports.

Registered for every test folder by ``pytest_plugins`` in tests/conftest.py. ``swtpm`` yields a :class:`Swtpm` with the TCTI string for
tpm2-pytss; the process and its state folder are removed afterwards. Tests that need it are
skipped when swtpm or tpm2-pytss is not installed. The launcher is
``edgeward.firmware_shim.sim.swtpm`` (``edgeward demo`` runs the same one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeward.firmware_shim.sim.swtpm import Swtpm, start_swtpm, swtpm_binary

__all__ = ["Swtpm", "swtpm"]


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    if swtpm_binary() is None:
        pytest.skip("swtpm is not installed (apt-get install swtpm)")
    pytest.importorskip("tpm2_pytss")
    try:
        tpm = start_swtpm(tmp_path / "swtpm-state")
    except RuntimeError as e:
        pytest.fail(str(e))
    with tpm:
        yield tpm
