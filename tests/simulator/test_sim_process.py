"""The simulator end to end in process mode: a real Mosquitto (shipped config and ACL), the
verifier service, and two devices each running ``edgeward agent run`` with its own swtpm, taken
through every shipped scenario in order; then the reports, the HTML page as headless Chromium
renders it, and a run whose security expectation must fail (exit 2)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeward.simulator.cli import run_simulation, write_reports
from edgeward.simulator.results import RunResult
from edgeward.simulator.runner import Runner
from edgeward.simulator.scenario import available, find_scenario

pytestmark = pytest.mark.slow
SEED = 20261129


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A folder of our own: pytest's shared basetemp may be pruned by a concurrent session,
    and a device's folder vanishing mid-run is not what these tests are about."""
    with tempfile.TemporaryDirectory(prefix="edgeward-sim-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[RunResult, Path, list[str]]]:
    with tempfile.TemporaryDirectory(prefix="edgeward-sim-") as d:
        yield _run(Path(d))


def _run(out: Path) -> tuple[RunResult, Path, list[str]]:
    lines: list[str] = []
    result = run_simulation(board_name="rpi4b", devices=2, scenario_names=[], mode="process",
                            workdir=out / "fleet", seed=SEED, fault_scale=0.2,
                            echo=lines.append)
    assert isinstance(result, RunResult)
    write_reports(result, out / "report", out / "junit.xml")
    return result, out, lines


def test_every_scenario_passes_in_process_mode(run: tuple[RunResult, Path, list[str]]) -> None:
    result, _out, lines = run
    failed = [f"{s.scenario}/{s.step}: {s.failure_text()}" for s in result.steps if not s.ok]
    assert not failed, "\n".join(failed + lines[-40:])
    assert result.exit_code == 0
    assert {s.scenario for s in result.steps} == {find_scenario(n).name for n in available()}
    assert any("mode process" in line and "--mode process" in line for line in lines)
    assert any(f"seed {SEED}" in line for line in lines)
    # the live view saw each device go through the states a tester watches
    for name in ("rpi4b-sim-01", "rpi4b-sim-02"):
        seen = " ".join(line for line in lines if name in line)
        assert "booting" in seen and "reporting" in seen


def test_fleet_table_shows_tpm_attested_gap_free_devices(run: tuple[RunResult, Path, list[str]]
                                                        ) -> None:
    result, _out, _ = run
    assert [d.name for d in result.devices] == ["rpi4b-sim-01", "rpi4b-sim-02"]
    for d in result.devices:
        assert d.attestation == "affirming" and d.hardware == 2, d
        assert d.missing == "none" and d.messages == d.highest > 10, d
    kinds = {e.kind for e in result.timeline}
    assert {"step", "fault", "event", "attestation"} <= kinds
    levels = {e.text.split()[1] for e in result.timeline if e.kind == "attestation"}
    assert {"affirming", "contraindicated", "warning"} <= levels  # tamper, boot state seen
    g = result.guard[0]
    assert g.threshold > 0 and len(g.samples) == 50
    by = {k: [s for s in g.samples if s["kind"] == k] for k in ("clean", "ood", "adversarial")}
    assert sum(s["flagged"] for s in by["ood"]) > sum(s["flagged"] for s in by["clean"])


def test_junit_has_one_passing_case_per_step(run: tuple[RunResult, Path, list[str]]) -> None:
    result, out, _ = run
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(result.steps) >= 11
    assert root.get("failures") == "0" and not root.findall(".//failure")
    assert {c.get("classname") for c in cases} >= {"sim.healthy", "sim.replay",
                                                   "sim.guard-burst", "sim.boot-state"}


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (make setup installs Debian's chromium)"
    return exe


def test_headless_chromium_renders_the_report(run: tuple[RunResult, Path, list[str]]) -> None:
    result, out, _ = run
    page = out / "report" / "index.html"
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--disable-background-networking", f"--user-data-dir={out / 'chr'}"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, timeout=120,
                         check=True).stdout.decode()
    assert f">{SEED}<" in dom
    assert dom.count("<tr>") >= len(result.steps) + len(result.devices)
    assert "rpi4b-sim-01" in dom and "guard-plot" in dom and "<circle" in dom
    assert 'class="fail"' not in dom  # every step shows as passed
    shot = out / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a page, not a blank


def test_the_seed_fixes_which_device_is_hit() -> None:
    def targets(seed: int) -> list[Any]:
        fleet: Any = SimpleNamespace(count=4)
        r = Runner(fleet, RunResult(seed, "process", "", "pi4", []))
        out = []
        for name in available():
            r._random = None
            out += [r._target(s) for s in find_scenario(name).steps]
        return out

    assert targets(7) == targets(7)
    assert any(targets(s) != targets(7) for s in range(8, 20))


def test_a_broken_security_expectation_exits_2_with_the_console(own_tmp: Path) -> None:
    tmp_path = own_tmp
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("""
[scenario]
name = "wrong"
[[step]]
name = "tampered model still expected affirming"
action = "tamper_model"
device = 0
deadline = 6
[[step.expect]]
check = "attested"
devices = "target"
status = "affirming"
""")
    p = subprocess.run(
        [sys.executable, "-c", "from edgeward.agent.cli import main; main()", "sim", "run",
         "--mode", "process", "--devices", "1", "--scenario", "healthy", "--scenario",
         str(wrong), "--seed", "3", "--workdir", str(tmp_path / "fleet"), "--junit",
         str(tmp_path / "j.xml")], capture_output=True, timeout=240)
    text = p.stdout.decode()
    assert p.returncode == 2, text + p.stderr.decode()
    assert "FAIL tampered model still expected affirming" in text
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//failure")
    assert failure is not None and failure.get("type") == "security"
    assert "contraindicated" in (failure.text or "") and "console tail" in (failure.text or "")
    assert "[sim] agent started" in (failure.text or "")
