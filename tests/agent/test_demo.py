"""``edgeward demo`` end to end, as a user runs it: every step must behave and say so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_every_step(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgeward"
    out = tmp_path / "demo-out"
    # a relative --out, as users type it (the default is demo-out in the current folder);
    # the simulator step as local processes: QEMU devices are tested end to end in
    # tests/simulator/test_qemu.py (make sim-test)
    p = subprocess.run([str(exe), "demo", "--out", "demo-out", "--mode", "process"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text[-4000:]
    for line in (
        "[1] Generate the vendor's model-signing key",
        "one flipped bit in the weights: refused (exit 2)",
        "EAR affirming",
        "relying party (the lock app)",
        "an EAR altered in transit: refused (exit 2)",
        "the same evidence sent again: contraindicated",
        "EAR contraindicated (file-system 96): model 'digits_cnn'",
        "online: retained birth",
        "without gaps",
        "agent: event model.rejected",
        "EAR contraindicated (file-system 96): model 'digits_mlp'",
        "gaps: none",
        "attestation results: affirming, contraindicated",
        "mode process: --mode process was given",
        "in process mode",
        "All demo steps behaved as expected.",
    ):
        assert line in text, f"missing {line!r} in:\n{text[-4000:]}"
    if shutil.which("swtpm"):
        assert "hardware 2 = genuine" in text and "swtpm stopped" in text, text[-4000:]
    for folder in ("attest", "fleet"):
        assert (out / folder).is_dir()
