"""What a simulator run found: per step, per check, per device; and the run's exit code.

Plain data, filled by :mod:`.runner` and read by the terminal view and the JUnit and HTML
reports. Exit codes follow DESIGN.md: 0 every step passed, 2 a security expectation failed,
3 the simulator could not run or a device failed operationally (booting, reporting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeward.core.errors import EXIT_OPERATIONAL, EXIT_REJECTED


@dataclass(frozen=True)
class CheckResult:
    expect: str  # Expect.describe()
    device: str
    ok: bool
    detail: str
    security: bool


@dataclass(frozen=True)
class DeviceVerdict:
    """A device that failed or hung during a step: what it was doing and its console tail."""

    device: str
    verdict: str
    console: str


@dataclass
class StepResult:
    scenario: str
    step: str
    action: str
    target: str | None
    started: float  # seconds since the run started
    duration: float = 0.0
    ok: bool = False
    output: str = ""
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    devices: list[DeviceVerdict] = field(default_factory=list)

    @property
    def security_failure(self) -> bool:
        return any(not c.ok and c.security for c in self.checks)

    def failure_text(self) -> str:
        lines = [self.error] if self.error else []
        lines += [f"{c.device}: {c.expect}: {c.detail}" for c in self.checks if not c.ok]
        return "\n".join(lines)


@dataclass(frozen=True)
class TimelineEvent:
    t: float  # seconds since the run started
    device: str | None
    kind: str  # step, fault, event, attestation, status
    text: str
    level: str = "info"  # info, ok, warning, bad


@dataclass
class DeviceRow:
    name: str
    board: str
    state: str = "booting"
    status: str | None = None
    attestation: str = "none"
    hardware: int = 0
    messages: int = 0
    highest: int = 0
    missing: str = "none"
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class GuardBurst:
    device: str
    step: str
    threshold: float
    samples: list[dict[str, Any]]


@dataclass
class RunResult:
    seed: int
    mode: str
    mode_reason: str
    board: str
    scenarios: list[str]
    started_wall: float = 0.0
    duration: float = 0.0
    setup_error: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    devices: list[DeviceRow] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    guard: list[GuardBurst] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.setup_error:
            return EXIT_OPERATIONAL
        if any(s.security_failure for s in self.steps):
            return EXIT_REJECTED
        if any(not s.ok for s in self.steps):
            return EXIT_OPERATIONAL
        return 0

    @property
    def passed(self) -> int:
        return sum(s.ok for s in self.steps)
