"""Run every benchmark, each beside its peers, and write docs/BENCHMARKS.md.

Each ``bench_*.py`` prints one Markdown section on stdout. This script runs them one after the
other in fresh processes (so one's memory does not weigh on the next), heads the page with what
the machine was, and writes the page. ``--only models,attest`` runs a subset and keeps the other
sections of the existing page.

    make bench                       # all of them (several minutes)
    python benchmarks/run_all.py --only models
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

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"

BENCHES: dict[str, list[str]] = {
    "models": ["benchmarks/bench_models.py"],
    "attest": ["benchmarks/bench_attest.py"],
    "agent": ["benchmarks/bench_agent.py"],
    "guard": ["benchmarks/bench_guard.py"],
    "hardware": ["benchmarks/bench_hardware.py"],
    "qemu": ["benchmarks/bench_qemu.py"],
}
TITLES = {
    "models": "## Model verification",
    "attest": "## Attestation: appraisal throughput and evidence generation",
    "agent": "## Agent: delivery through the durable outbox, idle cost, metrics collection",
    "guard": "## Inference guard: guarded against raw invoke",
    "hardware": "## Hardware layer: the lock's answer, the gateway's added cost, per-turn costs",
    "qemu": "## Simulator: QEMU image build and boot to the first affirming attestation",
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


def sections(text: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)(?=<!-- bench:|\Z)", text, re.S):
        out[m.group(1)] = m.group(2).rstrip() + "\n"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    args, rest = ap.parse_known_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    old = sections(DOC.read_text()) if DOC.exists() else {}
    for name in names:
        cmd = [sys.executable, *BENCHES[name], *rest]
        print(f"running {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - t0
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"benchmark {name} failed (exit {r.returncode})")
        text = r.stdout.strip()
        if not text.startswith("## "):
            text = re.sub(r"^#+ .*\n+", "", text)  # a sub-heading of its own gives way
            text = f"{TITLES[name]}\n\n{text}"
        old[name] = text + f"\n\n_(section measured in {took:.0f} s)_\n"
        print(f"  done in {took:.0f} s", file=sys.stderr, flush=True)
    head = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`). Each benchmark runs edgeward and its",
        "peers side by side in one run on the same input; the machine is shared and noisy, so",
        "the tables give medians and ratios, not single timings.",
        "",
        f"Last run: {dt.date.today().isoformat()} on {machine()}.",
        "",
    ]
    body = []
    for name in BENCHES:
        if name in old:
            body += [MARK.format(name), old[name]]
    DOC.write_text("\n".join(head + body))
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
