"""Run every benchmark, each beside its peers, and write docs/BENCHMARKS.md.

Each ``bench_*.py`` prints one Markdown section on stdout. This script runs them one after the
other in fresh processes (so one's memory does not weigh on the next), heads the page with what
the machine was, and writes the page. ``--only models,attest`` runs a subset and keeps the other
sections of the existing page.

Each headline ratio (see ``benchstats.TARGETS``) comes from paired runs; a section is run again
until each of its ratios has an interquartile range within median +- 0.05 or reaches the cap of
runs. Each section states the load average before and after it; the page states the CPU model.
One line per target says whether it is met on this machine; ``--check`` exits 1 if one is not.

    make bench                       # all of them (several minutes)
    make bench BENCH_ARGS=--check    # same, exit 1 when a target is not met
    python benchmarks/run_all.py --only models --check
    python benchmarks/run_all.py --only attest --no-write --n 300   # format check, page untouched
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import benchstats

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"

BENCHES: dict[str, list[str]] = {
    "models": ["benchmarks/bench_models.py"],
    "attest": ["benchmarks/bench_attest.py"],
    "agent": ["benchmarks/bench_agent.py"],
    "guard": ["benchmarks/bench_guard.py"],
    "hardware": ["benchmarks/bench_hardware.py"],
    "qemu": ["benchmarks/bench_qemu.py"],
    "recovery": ["benchmarks/bench_recovery.py"],
}
TITLES = {
    "models": "## Model verification",
    "attest": "## Attestation: appraisal throughput and evidence generation",
    "agent": "## Agent: delivery through the durable outbox, idle cost, metrics collection",
    "guard": "## Inference guard: guarded against raw invoke",
    "hardware": "## Hardware layer: the lock's answer, the gateway's added cost, per-turn costs",
    "qemu": "## Simulator: QEMU image build and boot to the first affirming attestation",
    "recovery": "## Recovery after a broker restart: workers back, backlog drained",
}
MARK = "<!-- bench:{} -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def sections(text: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)(?=<!-- bench:|\Z)", text, re.S):
        out[m.group(1)] = m.group(2).rstrip() + "\n"
    return out


def run_section(name: str, rest: list[str], max_runs: int,
                max_invocations: int) -> tuple[str, dict[str, list[float]], str]:
    """Run one bench script until its ratios are settled or capped; its text, runs and footer."""
    names = [t.name for t in benchstats.TARGETS if t.section == name]
    runs: dict[str, list[float]] = {}
    loads, text, took, invocations = [], "", 0.0, 0
    while True:
        cmd = [sys.executable, *BENCHES[name], *rest]
        print(f"running {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        before = loadavg()
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took += time.monotonic() - t0
        loads.append(f"{before} before, {loadavg()} after")
        invocations += 1
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"benchmark {name} failed (exit {r.returncode})")
        text, got = benchstats.split_output(r.stdout)
        for k, v in got.items():
            runs.setdefault(k, []).extend(v)
        if not got or benchstats.done(runs, names, max_runs):
            break
        if invocations >= max_invocations:
            print(f"  {name}: cap of {max_invocations} invocations reached", file=sys.stderr)
            break
        print(f"  {name}: spread not settled yet, running again", file=sys.stderr, flush=True)
    text = text.strip()
    if not text.startswith("## "):
        text = re.sub(r"^#+ .*\n+", "", text)  # a sub-heading of its own gives way
        text = f"{TITLES[name]}\n\n{text}"
    foot = (f"_(section measured in {took:.0f} s, {invocations} invocation(s), "
            f"{dt.date.today().isoformat()} on {machine()}; load average (1, 5, 15 min) "
            f"{'; '.join(loads)} on {os.cpu_count()} cores: above the core count means other "
            f"work was running)_")
    return text, runs, foot


def main() -> None:
    # no abbreviations: the bench scripts' own options (--n, --repeat) pass through untouched
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    ap.add_argument("--no-write", action="store_true",
                    help="print the sections instead of writing docs/BENCHMARKS.md")
    ap.add_argument("--max-runs", type=int, default=benchstats.MAX_RUNS,
                    help="cap of paired runs per ratio (default %(default)s)")
    ap.add_argument("--max-invocations", type=int, default=4,
                    help="cap of runs of one bench script per section (default %(default)s)")
    args, rest = ap.parse_known_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
    old = sections(DOC.read_text()) if DOC.exists() else {}
    allruns: dict[str, list[float]] = {}
    for name in names:
        text, runs, foot = run_section(name, rest, args.max_runs, args.max_invocations)
        allruns.update(runs)
        vs = benchstats.verdicts(runs, [name])
        targets = f"\n\nTargets on this machine:\n\n{benchstats.table(vs)}" if vs else ""
        old[name] = text + targets + f"\n\n{foot}\n"
        print(f"  done: {foot}", file=sys.stderr, flush=True)
        if args.no_write:
            print(f"{MARK.format(name)}\n{old[name]}")
    head = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`). Each benchmark runs edgeward and its",
        "peers side by side in one run on the same input; the machine is shared and noisy, so",
        "the tables give medians and ratios, not single timings. Each headline ratio is the",
        "median of paired runs with its interquartile range; a section is repeated until the IQR",
        f"is within median +- {benchstats.HALF_WIDTH} or a cap is reached ({args.max_runs} runs of a",
        f"ratio, {args.max_invocations} runs of a bench script). Each",
        "section states its load average before and after (above the core count: other work ran).",
        "",
        "Targets are issue 16's (raised; the column 'before issue 16' gives the old one where "
        "it changed).",
        "",
        f"Last run: {dt.date.today().isoformat()} on {machine()}.",
        "",
    ]
    body = []
    for name in [*BENCHES, *(n for n in old if n not in BENCHES)]:  # and hand-run sections
        if name in old:
            body += [MARK.format(name), old[name]]
    if not args.no_write:
        DOC.write_text("\n".join(head + body))
        print(f"wrote {DOC}", file=sys.stderr)
    vs = benchstats.verdicts(allruns, names)
    print("targets on this machine:")
    for v in vs:
        print("  " + v.line())
    raise SystemExit(benchstats.exit_code(vs, args.check))


if __name__ == "__main__":
    main()
