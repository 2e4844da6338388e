"""Recovery after broker restarts: how long until the workers are back, and until every device's
backlog is stored. Prints a Markdown table for docs/BENCHMARKS.md ("Recovery after a broker
restart").

The fault schedule (see tests/agent/recovery_harness.py for the fleet: a real Mosquitto with the
shipped deploy/mosquitto.conf, ``autosave_interval 60`` included, ``--workers`` ×
``edgeward verifier run`` on ``$share``, ``--devices`` × ``edgeward agent run`` with the shipped
back-off and ``ack_timeout``): the broker is SIGKILLed and restarted once per ``--down`` value,
after it has been up ``--up`` seconds, while every device reports every ``--interval`` s. At the
end the agents are stopped and every report they numbered must be in the store or still in the
device's outbox for its next start (nothing lost; the store keys by (device, seq), so nothing is
stored twice).

Usage: .venv/bin/python benchmarks/bench_recovery.py [--devices 8] [--workers 2]
       [--down 1 3 5 10 2] [--up 5] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "agent"))

from recovery_harness import Fleet  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--down", type=float, nargs="+", default=[1.0, 3.0, 5.0, 10.0, 2.0])
    ap.add_argument("--up", type=float, default=5.0, help="seconds between restarts")
    ap.add_argument("--interval", type=float, default=0.2, help="each device's report interval")
    ap.add_argument("--agent-backoff", type=float, nargs=2, metavar=("BASE", "CAP"),
                    help="the agents' [mqtt] backoff_base and backoff_cap (default: shipped)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ew-recovery-") as tmp:
        print(f"starting broker, {a.workers} workers, {a.devices} devices ...", file=sys.stderr)
        fleet = Fleet(Path(tmp), devices=a.devices, workers=a.workers, interval=a.interval,
                      agent_backoff=tuple(a.agent_backoff) if a.agent_backoff else None)
        runs = []
        try:
            for i, down in enumerate(a.down, 1):
                time.sleep(a.up)
                r = fleet.broker_restart(down)
                print(f"restart {i}/{len(a.down)}: {r.line()}", file=sys.stderr)
                runs.append(r)
        except BaseException:
            fleet.close()
            raise
        total = fleet.stop()
    backoff = (f"agents' back-off {a.agent_backoff[0]} s to {a.agent_backoff[1]} s"
               if a.agent_backoff else "agents' shipped back-off (0.5 s to 60 s)")
    print(f"{a.devices} devices, {a.workers} workers, reports every {a.interval} s, {backoff}; "
          f"{total} reports, none lost (stored, or kept by its device for its next start)\n")
    print("| restart | broker down | workers ready after broker up | last device back | "
          "backlog | stored after workers ready | stored after workers and devices back |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        print(f"| {i} | {r.down:.0f} s | {' / '.join(f'{b:.2f} s' for b in r.workers_back)} "
              f"| {r.devices_back:.2f} s | {r.backlog} | {r.drain:.2f} s "
              f"| {r.drain_after_all:.2f} s |")
    backs = [max(r.workers_back) for r in runs]
    drains = [r.drain for r in runs]
    after = [r.drain_after_all for r in runs]
    print(f"\nslowest worker back: median {statistics.median(backs):.2f} s, max {max(backs):.2f} s;"
          f" stored after workers: median {statistics.median(drains):.2f} s, max "
          f"{max(drains):.2f} s; after workers and devices: median "
          f"{statistics.median(after):.2f} s, max {max(after):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
