"""JUnit XML for CI: one ``testsuite`` per scenario, one ``testcase`` per step.

A failed step is a ``<failure>`` (type ``security`` when a security expectation failed, else
``operational``) whose text lists the unmet expectations and the failing devices' console
tails; the seed and mode are ``properties``. Pure: results in, bytes out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeward.simulator.results import RunResult


def junit_xml(result: RunResult) -> bytes:
    suites = ET.Element("testsuites", name="edgeward-sim", tests=str(len(result.steps)),
                        failures=str(sum(not s.ok for s in result.steps)),
                        time=f"{result.duration:.2f}")
    by: dict[str, list[int]] = {}
    for i, s in enumerate(result.steps):
        by.setdefault(s.scenario, []).append(i)
    if result.setup_error:
        suite = ET.SubElement(suites, "testsuite", name="setup", tests="1", failures="0",
                              errors="1")
        case = ET.SubElement(suite, "testcase", classname="sim.setup", name="fleet setup")
        ET.SubElement(case, "error", message=result.setup_error[:500]).text = result.setup_error
    for name, idx in by.items():
        steps = [result.steps[i] for i in idx]
        suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(steps)),
                              failures=str(sum(not s.ok for s in steps)),
                              time=f"{sum(s.duration for s in steps):.2f}")
        props = ET.SubElement(suite, "properties")
        for k, v in (("seed", result.seed), ("mode", result.mode), ("board", result.board)):
            ET.SubElement(props, "property", name=k, value=str(v))
        for s in steps:
            case = ET.SubElement(suite, "testcase", classname=f"sim.{name}", name=s.step,
                                 time=f"{s.duration:.2f}")
            out = [s.output] if s.output else []
            out += [f"{'ok  ' if c.ok else 'FAIL'} {c.device}: {c.expect}: {c.detail}"
                    for c in s.checks]
            if out:
                ET.SubElement(case, "system-out").text = "\n".join(out)
            if not s.ok:
                text = s.failure_text()
                for d in s.devices:
                    text += f"\n\n{d.device}: {d.verdict}\n--- console tail ---\n{d.console}"
                first = (s.failure_text().splitlines() or ["failed"])[0]
                ET.SubElement(case, "failure", message=first[:300],
                              type="security" if s.security_failure else "operational"
                              ).text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
