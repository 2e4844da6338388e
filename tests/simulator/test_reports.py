"""Reports: JUnit XML that CI systems parse (one case per step, security failures typed), a
self-contained HTML page that escapes everything the run (and a hostile device) wrote, and the
exit codes of DESIGN.md."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeward.simulator.report_html import render
from edgeward.simulator.report_junit import junit_xml
from edgeward.simulator.results import (
    CheckResult,
    DeviceRow,
    DeviceVerdict,
    GuardBurst,
    RunResult,
    StepResult,
    TimelineEvent,
)

EVIL = '<script>alert(1)</script><img src="http://evil.example/x">'


def result(*, security_fail: bool = False, operational_fail: bool = False) -> RunResult:
    r = RunResult(seed=42, mode="process", mode_reason="--mode process was given", board="pi4",
                  scenarios=["healthy", "model-tamper"], duration=12.5)
    r.steps.append(StepResult("healthy", "attested", "none", None, 0.0, 1.0, ok=True, checks=[
        CheckResult("attested devices=all", "pi4-sim-01", True, "affirming", True)]))
    ok = not security_fail
    r.steps.append(StepResult(
        "model-tamper", "tamper", "tamper_model", "pi4-sim-01", 2.0, 3.0, ok=ok,
        output="flipped", checks=[CheckResult("attested devices=target", "pi4-sim-01", ok,
                                              "latest EAR affirming" + EVIL, True)],
        devices=[] if ok else [DeviceVerdict("pi4-sim-01", "running", "console " + EVIL)]))
    if operational_fail:
        r.steps.append(StepResult("healthy", "reports", "none", None, 5.0, 30.0, ok=False,
                                  checks=[CheckResult("reports", "pi4-sim-02", False,
                                                      "0 metrics reports", False)]))
    r.devices.append(DeviceRow("pi4-sim-01", "pi4", "reporting", "online", "affirming", 2, 10,
                               10, "none", {"metrics": 8}))
    r.timeline += [TimelineEvent(1.0, "pi4-sim-01", "event", "model.rejected " + EVIL, "bad"),
                   TimelineEvent(2.0, "pi4-sim-01", "attestation", "EAR contraindicated", "bad"),
                   TimelineEvent(3.0, None, "fault", "broker down", "warning")]
    r.guard.append(GuardBurst("pi4-sim-01", "burst", 4.0, [
        {"kind": "clean", "combined": 1.0, "flagged": False, "severity": "none"},
        {"kind": "ood", "combined": float("inf"), "flagged": True, "severity": "critical"},
        {"kind": "adversarial", "combined": 9.0, "flagged": True, "severity": "critical"}]))
    return r


def test_exit_codes_follow_design() -> None:
    assert result().exit_code == 0
    assert result(security_fail=True).exit_code == 2
    assert result(operational_fail=True).exit_code == 3
    assert result(security_fail=True, operational_fail=True).exit_code == 2
    r = result()
    r.setup_error = "mosquitto did not start"
    assert r.exit_code == 3


def test_junit_has_one_case_per_step_and_types_failures() -> None:
    root = ET.fromstring(junit_xml(result(security_fail=True, operational_fail=True)))
    cases = root.findall(".//testcase")
    assert len(cases) == 3
    assert {s.get("name") for s in root.findall("testsuite")} == {"healthy", "model-tamper"}
    fails = {c.get("name"): c.find("failure") for c in cases}
    assert fails["attested"] is None
    assert fails["tamper"] is not None and fails["tamper"].get("type") == "security"
    assert "console" in (fails["tamper"].text or "")  # the device's console tail goes along
    assert fails["reports"] is not None and fails["reports"].get("type") == "operational"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["seed"] == "42" and props["mode"] == "process"


def test_html_is_self_contained_and_escapes_what_devices_wrote() -> None:
    page = render(result(security_fail=True))
    assert "<script" not in page  # neither ours nor the hostile console's
    assert "&lt;script&gt;" in page
    assert 'src="http' not in page and "<link" not in page and "@import" not in page
    assert "<svg" in page and "guard-plot" in page and "threshold 4.00" in page
    assert 'id=seed>42<' in page
    assert "FAIL" in page and "pi4-sim-01" in page
