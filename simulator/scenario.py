"""Scenario files: small declarative TOML in ``simulator/scenarios/`` (docs/SIMULATOR.md).

A scenario is a list of steps run in order on the same fleet. Each step may inject one fault or
action (``action``), then waits until every expectation (``[[step.expect]]``) holds at the
backend, or its ``deadline`` (seconds) passes. Example::

    [scenario]
    name = "model-tamper"
    description = "a model changed on one device's disk is rejected and contraindicated"

    [[step]]
    name = "tamper with digits_mlp on device 0"
    action = "tamper_model"
    device = 0
    model = "digits_mlp"
    deadline = 45

    [[step.expect]]
    check = "event"
    devices = "target"
    type = "model.rejected"

The loader is pure apart from reading the file: every value is bounded, unknown keys are
refused, and each error names the file, the key path and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core.errors import ConfigError
from edgeward.core.tomlconf import Section, load_toml

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
MAX_STEPS = 64
MAX_EXPECT = 16
MAX_DEADLINE = 900.0
MAX_FAULT_SECONDS = 600.0
MAX_BURST = 500

# action -> its own keys (besides name, action, device, deadline, expect, delay)
ACTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "wait": ("seconds",),
    "tamper_model": ("model",),
    "restore_model": ("model",),
    "reboot": (),
    "broker_down": ("seconds",),
    "link_down": (),
    "link_up": (),
    "replay_evidence": (),
    "guard_burst": ("clean", "ood", "adversarial"),
    "extend_pcr": ("pcr",),
    "tamper_lock": (),
    "restore_lock": (),
}
NEEDS_DEVICE = frozenset({"tamper_model", "restore_model", "reboot", "link_down", "link_up",
                          "replay_evidence", "guard_burst", "extend_pcr", "tamper_lock",
                          "restore_lock"})
# check -> (its own keys, whether a failure is a security verdict (exit 2) or operational (3))
CHECKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "online": ((), False),
    "offline": ((), False),
    "reports": (("count",), False),
    "attested": (("status", "hardware", "reason"), True),
    "event": (("type", "count", "severities"), True),
    "gap_free": ((), True),
    "replay_refused": ((), True),
}
STATUSES = ("affirming", "warning", "contraindicated", "none", "refused")
SEVERITIES = ("info", "warning", "critical")
DEVICE_SETS = ("all", "target", "others")


@dataclass(frozen=True)
class Expect:
    check: str
    devices: str | tuple[int, ...]  # "all", "target", "others", or device indexes
    security: bool
    status: str | None = None
    hardware: bool = False  # attested: the EAR's hardware claim must be 2 (TPM quote verified)
    reason: str | None = None  # attested: a substring of one of the EAR's reasons
    type: str | None = None
    count: int = 1
    severities: tuple[str, ...] = ()

    def describe(self) -> str:
        who = self.devices if isinstance(self.devices, str) else ",".join(map(str, self.devices))
        parts = [self.check, f"devices={who}"]
        for k in ("status", "type", "reason"):
            v = getattr(self, k)
            if v:
                parts.append(f"{k}={v}")
        if self.check in ("reports", "event") and self.count != 1:
            parts.append(f"count>={self.count}")
        if self.severities:
            parts.append("severities=" + "+".join(self.severities))
        if self.hardware:
            parts.append("hardware=tpm")
        return " ".join(parts)


@dataclass(frozen=True)
class Step:
    name: str
    action: str
    device: int | str | None  # an index, "random" (chosen with the run's seed) or None
    deadline: float
    params: dict[str, Any] = field(default_factory=dict)
    expect: tuple[Expect, ...] = ()
    delay: float = 0.0  # up to this many seconds before the action (drawn from the seed)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: Path
    steps: tuple[Step, ...]
    min_devices: int = 1
    locks: tuple[int, ...] = ()  # devices with a lock microcontroller beside them (gateways)


def _num(sec: Section, key: str, default: float, lo: float, hi: float) -> float:
    v = sec.data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise ConfigError(f"{sec._where(key)} is {v!r}; expected a number from {lo:g} to {hi:g}")
    return float(v)


def _devices(sec: Section, key: str, default: str) -> str | tuple[int, ...]:
    v = sec.data.get(key, default)
    if isinstance(v, str) and v in DEVICE_SETS:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1024:
        return (v,)
    if (isinstance(v, list) and 0 < len(v) <= 64
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1024 for i in v)):
        return tuple(v)
    raise ConfigError(f"{sec._where(key)} is {v!r}; expected "
                      f"{', '.join(DEVICE_SETS)}, a device index or a list of indexes")


def _expect(sec: Section) -> Expect:
    check = sec.str("check", choices=tuple(CHECKS))
    own, security = CHECKS[check]
    sec.reject_unknown(("check", "devices", *own))
    sevs = sec.list("severities", []) if "severities" in own else []
    if len(sevs) > len(SEVERITIES) or not all(s in SEVERITIES for s in sevs):
        raise ConfigError(f"{sec._where('severities')} is {sevs!r}; expected a list of "
                          + ", ".join(SEVERITIES))
    type_ = sec.str("type") if check == "event" else None
    if type_ is not None and not 0 < len(type_) <= 64:
        raise ConfigError(f"{sec._where('type')} must be 1-64 characters")
    return Expect(
        check=check,
        devices=_devices(sec, "devices", "all"),
        security=security,
        status=sec.str("status", "affirming", choices=STATUSES) if check == "attested" else None,
        hardware=sec.bool("hardware", False) if check == "attested" else False,
        reason=sec.str("reason", None) if check == "attested" else None,
        type=type_,
        count=int(_num(sec, "count", 1, 1, 10_000)) if "count" in own else 1,
        severities=tuple(sevs),
    )


def _step(sec: Section) -> Step:
    name = sec.str("name")
    if not 0 < len(name) <= 120:
        raise ConfigError(f"{sec._where('name')} must be 1-120 characters")
    action = sec.str("action", "none", choices=tuple(ACTIONS))
    sec.reject_unknown(("name", "action", "device", "deadline", "expect", "delay",
                        *ACTIONS[action]))
    device: int | str | None = None
    if action in NEEDS_DEVICE:
        raw = sec.data.get("device", _MISSING_DEVICE)
        if raw == "random" or (isinstance(raw, int) and not isinstance(raw, bool)
                               and 0 <= raw < 1024):
            device = raw
        else:
            raise ConfigError(f"{sec._where('device')} is "
                              f"{'missing' if raw is _MISSING_DEVICE else repr(raw)}; expected a "
                              f"device index or \"random\" (action '{action}' needs one)")
    elif "device" in sec.data:
        raise ConfigError(f"{sec._where('device')}: action '{action}' takes no device")
    params: dict[str, Any] = {}
    if action in ("wait", "broker_down"):
        params["seconds"] = _num(sec, "seconds", 10.0, 0.0, MAX_FAULT_SECONDS)
    elif action in ("tamper_model", "restore_model"):
        model = sec.str("model", "digits_mlp")
        if not model.replace("_", "").replace("-", "").isalnum() or len(model) > 64:
            raise ConfigError(f"{sec._where('model')} is {model!r}; expected a model name")
        params["model"] = model
    elif action == "guard_burst":
        for k, d in (("clean", 10), ("ood", 20), ("adversarial", 20)):
            params[k] = int(_num(sec, k, d, 0, MAX_BURST))
    elif action == "extend_pcr":
        params["pcr"] = int(_num(sec, "pcr", 4, 0, 23))
    expects = sec.sections("expect")
    if len(expects) > MAX_EXPECT:
        raise ConfigError(f"{sec._where('expect')} has {len(expects)} entries; at most "
                          f"{MAX_EXPECT}")
    exp = tuple(_expect(e) for e in expects)
    if device is None and any(e.devices in ("target", "others") for e in exp):
        raise ConfigError(f"{sec._where('expect')}: devices 'target'/'others' need a step "
                          "with a device")
    return Step(name=name, action=action, device=device,
                deadline=_num(sec, "deadline", 30.0, 0.5, MAX_DEADLINE), params=params,
                expect=exp, delay=_num(sec, "delay", 0.0, 0.0, 60.0))


_MISSING_DEVICE = object()


def parse_scenario(root: Section, source: Path) -> Scenario:
    root.reject_unknown(("scenario", "step"))
    head = root.section("scenario", required=True)
    head.reject_unknown(("name", "description", "min_devices", "locks"))
    name = head.str("name")
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise ConfigError(f"{head._where('name')} is {name!r}; expected letters, digits, '-'")
    steps = root.sections("step")
    if not 0 < len(steps) <= MAX_STEPS:
        raise ConfigError(f"{source}: key 'step' has {len(steps)} steps; expected 1 to "
                          f"{MAX_STEPS} [[step]] tables")
    parsed = tuple(_step(s) for s in steps)
    locks = head.data.get("locks", [])
    if (not isinstance(locks, list) or len(locks) > 16
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1024
                       for i in locks)):
        raise ConfigError(f"{head._where('locks')} is {locks!r}; expected a list of up to 16 "
                          "device indexes (the gateways with a lock beside them)")
    return Scenario(name=name, description=head.str("description", ""), source=source,
                    steps=parsed, min_devices=int(_num(head, "min_devices", 1, 1, 1024)),
                    locks=tuple(sorted(set(locks))))


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(load_toml(path), Path(path))


def available() -> list[str]:
    """The names of the shipped scenarios (file stems), in their run order."""
    return [p.stem for p in sorted(SCENARIO_DIR.glob("*.toml"))]


def find_scenario(name: str) -> Scenario:
    """A shipped scenario by name (``healthy``), or a path to a scenario file."""
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return load_scenario(p)
    for cand in sorted(SCENARIO_DIR.glob("*.toml")):
        if cand.stem == name or cand.stem.split("-", 1)[-1] == name:
            return load_scenario(cand)
    raise ConfigError(f"unknown scenario '{name}'",
                      hint="use one of: " + ", ".join(available()) + ", or a path to a .toml file")
