"""The fleet runner: scenarios in order on one fleet, each step with its deadline.

For each step: resolve its device (an index, or ``random`` drawn from the run's seed), note
every device's highest stored ``seq`` (the step's mark), wait a seeded delay, do the action
(:mod:`.actions`), then poll the expectations (:mod:`.checks`) every half second until all hold
or the deadline passes. A step that fails records, for each device involved, a verdict and the
tail of its console. The seed fixes which device is hit, the guard's inputs and the timing of
injected faults, and is printed in every report. Nothing waits without a deadline.

I/O: through the fleet and the actions; progress goes to ``say``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from edgeward.core.errors import EdgewardError
from edgeward.simulator.actions import ActionContext, perform
from edgeward.simulator.checks import check, devices_for
from edgeward.simulator.fleet import SimFleet
from edgeward.simulator.results import (
    DeviceRow,
    DeviceVerdict,
    GuardBurst,
    RunResult,
    StepResult,
    TimelineEvent,
)
from edgeward.simulator.scenario import Scenario, Step

POLL = 0.5


class Runner:
    def __init__(self, fleet: SimFleet, result: RunResult, *, fault_scale: float = 1.0,
                 say: Callable[[str], None] = print,
                 on_tick: Callable[[], None] = lambda: None) -> None:
        self.fleet = fleet
        self.result = result
        self.rng = random.Random(result.seed)
        self.fault_scale = fault_scale
        self.say = say
        self.on_tick = on_tick
        self.t0 = time.monotonic()
        self._random: int | None = None
        result.started_wall = time.time()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, device: str | None, kind: str, text: str, level: str = "info") -> None:
        self.result.timeline.append(TimelineEvent(round(self.now(), 2), device, kind, text,
                                                  level))

    def run(self, scenarios: list[Scenario]) -> None:
        for sc in scenarios:
            if sc.min_devices > self.fleet.count:
                self.say(f"scenario {sc.name} needs {sc.min_devices} devices; skipped")
                self.result.steps.append(StepResult(
                    sc.name, "(scenario)", "none", None, self.now(), ok=False,
                    error=f"needs {sc.min_devices} devices, the fleet has {self.fleet.count}"))
                continue
            self.say(f"scenario {sc.name}: {sc.description}")
            self._random = None
            for step in sc.steps:
                self.result.steps.append(self.run_step(sc, step))

    def _target(self, step: Step) -> int | None:
        if step.device is None:
            return None
        if step.device == "random":  # one device per scenario, drawn from the seed
            if self._random is None:
                self._random = self.rng.randrange(self.fleet.count)
            return self._random
        assert isinstance(step.device, int)
        return step.device % self.fleet.count

    def run_step(self, sc: Scenario, step: Step) -> StepResult:
        fleet, view = self.fleet, self.fleet.view
        assert view is not None and fleet.backend is not None and fleet.verifier_toml
        target = self._target(step)
        tname = fleet.names[target] if target is not None else None
        res = StepResult(sc.name, step.name, step.action, tname, round(self.now(), 2))
        marks = {n: view.highest(n) for n in fleet.names}
        delay = self.rng.uniform(0, step.delay) if step.delay else 0.0
        if delay:
            time.sleep(delay)
        start = time.monotonic()
        self.mark(tname, "step", f"{sc.name}: {step.name}")
        outcome: dict[str, object] = {}
        if step.action != "none":
            ctx = ActionContext(fleet.backend, view, fleet.verifier_toml, self.result.seed,
                                self.fault_scale, lambda m: self.say(f"  {m}"), fleet.locks)
            dev = fleet.devices[target] if target is not None else None
            try:
                out = perform(step, dev, ctx)
                res.output, outcome = out.output, out.data
                self.mark(tname, "fault", f"{step.action}: {out.output}"[:300], "warning")
                if "guard" in out.data:
                    g = out.data["guard"]
                    assert isinstance(g, dict) and tname is not None
                    self.result.guard.append(GuardBurst(tname, step.name,
                                                        float(g["threshold"]), g["samples"]))
            except (EdgewardError, OSError) as e:
                res.error = f"action {step.action} failed: {e}"
        # a result for the acted-on device must answer evidence stored after the action finished:
        # evidence measured before it (a challenge answered while the model was being changed)
        # would otherwise count, and a wrong expectation could pass on a stale result
        after = dict(marks)
        if tname is not None and step.action != "none":
            after[tname] = view.highest(tname)
        deadline = time.monotonic() + step.deadline
        while res.error is None:
            self.on_tick()
            res.checks = [
                check(e, view, name, marks[name], acted_on=(name == tname),
                      outcome=outcome, attest_mark=after[name])
                for e in step.expect
                for name in devices_for(e, fleet.names, target)
            ]
            if all(c.ok for c in res.checks) or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        res.ok = res.error is None and all(c.ok for c in res.checks)
        res.duration = round(time.monotonic() - start, 2)
        if not res.ok:
            res.devices = self._verdicts(res, tname)
        self.mark(tname, "step", f"{'passed' if res.ok else 'FAILED'}: {step.name} "
                  f"({res.duration:.1f} s)", "ok" if res.ok else "bad")
        self.say(f"  {'ok  ' if res.ok else 'FAIL'} {step.name} ({res.duration:.1f} s)"
                 + (f": {res.output}" if res.output and res.ok else ""))
        if not res.ok:
            for line in res.failure_text().splitlines():
                self.say(f"       {line}")
        return res

    def _verdicts(self, res: StepResult, target: str | None) -> list[DeviceVerdict]:
        names = {c.device for c in res.checks if not c.ok}
        if target:
            names.add(target)
        out = []
        for i, name in enumerate(self.fleet.names):
            if name not in names:
                continue
            dev = self.fleet.devices[i]
            state = self.fleet.state(i)
            if not dev.alive():
                verdict = "failed: its agent is not running"
            elif state == "booting":
                verdict = "hung: never seen by the backend"
            else:
                verdict = f"running ({state}), expectation not met"
            out.append(DeviceVerdict(name, verdict, dev.console_tail(20)))
        return out

    def collect(self) -> None:
        """Fill the fleet table and the backend's side of the timeline from the fleet store."""
        view = self.fleet.view
        assert view is not None
        t_wall0 = self.result.started_wall
        for i, name in enumerate(self.fleet.names):
            appr = view.appraisals(name)
            missing = view.missing(name)
            row = DeviceRow(
                name, self.fleet.board.name, state=self.fleet.state(i), status=view.status(name),
                attestation=appr[-1].status if appr else "none",
                hardware=appr[-1].hardware if appr else 0,
                messages=len(view.seqs(name)), highest=view.highest(name),
                missing=", ".join(f"{a}-{b}" for a, b in missing) or "none",
                counts=view.type_counts(name))
            self.result.devices.append(row)
            for a in appr:
                lvl = {"affirming": "ok", "warning": "warning"}.get(a.status, "bad")
                self.result.timeline.append(TimelineEvent(
                    round(a.at - t_wall0, 2), name, "attestation",
                    f"EAR {a.status} (evidence seq {a.seq}, hardware {a.hardware})", lvl))
            for seq, typ, received, body in view.messages(name):
                if typ in ("metrics", "attest.evidence"):
                    continue
                text = f"{typ} (seq {seq})"
                data = body.get("data") if isinstance(body, dict) else None
                if isinstance(data, dict) and "severity" in data:
                    text += f": {data['severity']} {data.get('reason', '')}"
                elif isinstance(body, dict) and "reason" in body:
                    text += f": {str(body['reason'])[:120]}"
                self.result.timeline.append(TimelineEvent(
                    round(received - t_wall0, 2), name, "event", text,
                    "bad" if typ == "model.rejected" else "warning" if "anomaly" in typ
                    else "info"))
        self.result.timeline.sort(key=lambda e: e.t)
