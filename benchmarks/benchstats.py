"""The headline ratios: how bench scripts report them, their spread, and the targets they meet.

A bench script prints its Markdown section as before, plus one machine-readable line per
headline ratio::

    RATIO {"name": "verify_inproc_20mb", "runs": [0.88, 0.91, 0.86]}

``runs`` are the ratios of paired runs (edgeward and its peer timed one after the other, so
both see the same machine load). ``run_all.py`` strips these lines from the page, pools the
runs of repeated invocations, states median and interquartile range, and says which targets
are met. Pure functions only: the test suite checks them without timing anything.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "RATIO "
HALF_WIDTH = 0.05  # the IQR must lie within median +- this before runs stop
MIN_RUNS = 5  # fewer paired runs than this give no honest quartiles
MAX_RUNS = 25  # cap: stop repeating a section when every ratio has this many runs


@dataclass(frozen=True)
class Target:
    name: str  # the RATIO name a bench script prints
    section: str  # run_all section that measures it
    label: str
    op: str  # ">=" or "<="
    value: float
    was: float | None = None  # the target before issue 16 raised it

    def met(self, median: float) -> bool:
        return median >= self.value if self.op == ">=" else median <= self.value


# Issue 16's targets (the ones before it are kept in ``was``, for the page).
TARGETS: tuple[Target, ...] = (
    Target("verify_inproc_20mb", "models",
           "in-process verify 20 MB (5 shards) vs single-stream hashlib read + hash",
           ">=", 1.5, 0.8),
    Target("cli_20mb", "models", "`edgeward model verify` 20 MB vs `model_signing verify key`",
           "<=", 0.5),
    Target("cli_200mb", "models", "`edgeward model verify` 200 MB vs `model_signing verify key`",
           "<=", 0.5),
    Target("appraisal_core_ed25519", "attest", "appraisal core vs raw Ed25519 verify",
           ">=", 0.5, 0.3),
    Target("verifier_store_ed25519", "attest",
           "full verifier with its store (group commit) vs raw Ed25519 verify", ">=", 0.3),
    Target("delivery_outbox", "agent", "delivery through the durable outbox vs bare paho",
           ">=", 0.8, 0.5),
    Target("metrics_time", "agent", "metrics collection time vs AWS IoT Device Defender collector",
           "<=", 0.5),
    Target("guard_cnn_added_us", "guard", "always-on guard: microseconds added to a digits_cnn invoke",
           "<=", 5.0),
    Target("guard_mlp_1ms_ratio", "guard", "always-on guard: guarded / raw invoke of the 1 ms MLP",
           "<=", 1.03),
)


def ratio_line(name: str, runs: Iterable[float]) -> str:
    return PREFIX + json.dumps({"name": name, "runs": [round(float(r), 4) for r in runs]})


def split_output(stdout: str) -> tuple[str, dict[str, list[float]]]:
    """The Markdown without the RATIO lines, and the runs of each named ratio.

    A malformed RATIO line is an error: a silently dropped figure would read as "not measured".
    """
    text, ratios = [], {}  # type: ignore[var-annotated]
    for line in stdout.splitlines():
        if not line.startswith(PREFIX):
            text.append(line)
            continue
        try:
            obj = json.loads(line[len(PREFIX):])
            name = obj["name"]
            runs = [float(r) for r in obj["runs"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"malformed ratio line {line[:120]!r}: {e}") from None
        if not isinstance(name, str) or not name or not runs:
            raise ValueError(f"ratio line without a name or runs: {line[:120]!r}")
        ratios.setdefault(name, []).extend(runs)
    return "\n".join(text), ratios


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        raise ValueError("no runs")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def settled(values: list[float], half_width: float = HALF_WIDTH, min_runs: int = MIN_RUNS) -> bool:
    """Enough runs, and the interquartile range within median +- half_width."""
    if len(values) < min_runs:
        return False
    q1, med, q3 = quartiles(values)
    return med - q1 <= half_width + 1e-9 and q3 - med <= half_width + 1e-9


def done(runs: dict[str, list[float]], names: Iterable[str], cap: int = MAX_RUNS) -> bool:
    """Stop repeating a section: each ratio it reports is settled or has reached the cap."""
    return all(settled(runs.get(n, [])) or len(runs.get(n, [])) >= cap for n in names)


@dataclass(frozen=True)
class Verdict:
    target: Target
    runs: tuple[float, ...]

    @property
    def measured(self) -> bool:
        return bool(self.runs)

    @property
    def met(self) -> bool:
        return self.measured and self.target.met(quartiles(list(self.runs))[1])

    def line(self) -> str:
        t = self.target
        if not self.measured:
            return f"{t.label} ({t.op} {t.value}): not measured -> NOT MET"
        q1, med, q3 = quartiles(list(self.runs))
        how = "IQR settled" if settled(list(self.runs)) else "cap reached, IQR not within +-0.05"
        return (f"{t.label} ({t.op} {t.value}): median {med:.2f}, IQR {q1:.2f}-{q3:.2f} "
                f"({len(self.runs)} runs, {how}) -> {'met' if self.met else 'NOT MET'}")


def verdicts(runs: dict[str, list[float]], sections: Iterable[str]) -> list[Verdict]:
    wanted = set(sections)
    return [Verdict(t, tuple(runs.get(t.name, ()))) for t in TARGETS if t.section in wanted]


def table(vs: list[Verdict]) -> str:
    """The targets of one section as a Markdown table (placed in that section of the page)."""
    rows = ["| target | median | IQR | paired runs | met on this machine | before issue 16 |",
            "|---|---:|---:|---:|---|---|"]
    for v in vs:
        t = v.target
        nxt = f"{t.op} {t.was}" if t.was is not None else ""
        if not v.measured:
            rows.append(f"| {t.label} {t.op} {t.value} | | | 0 | not measured | {nxt} |")
            continue
        q1, med, q3 = quartiles(list(v.runs))
        cap = "" if settled(list(v.runs)) else " (IQR not within +-0.05)"
        rows.append(f"| {t.label} {t.op} {t.value} | **{med:.2f}** | {q1:.2f}-{q3:.2f}{cap} "
                    f"| {len(v.runs)} | {'met' if v.met else 'NOT met'} | {nxt} |")
    return "\n".join(rows)


def exit_code(vs: list[Verdict], check: bool) -> int:
    return 1 if check and not all(v.met for v in vs) else 0
