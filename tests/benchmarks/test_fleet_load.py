"""benchmarks/fleet_load.py end to end on a small fleet, so the load benchmark cannot rot.

Twenty device identities (each its own key and fleet-CA certificate, its own TLS connection)
through the real Mosquitto with the shipped configuration into a real ``verifier run`` worker,
with half the reports followed by hostile traffic. The failures it stands for: a report lost or
stored twice between device and store, a replayed report stored again, replayed or forged
evidence affirmed, malformed CBOR stored or crashing the worker, and the benchmark itself
breaking when the service, the store or the broker set-up changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_load_loses_nothing_and_refuses_the_hostile_share(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fleet_load.py"), "--devices", "20",
         "--hold", "3", "--report-interval", "1", "--attest-interval", "4", "--hostile", "0.5",
         "--cache", str(tmp_path / "ids"), "--json", str(out)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    herd, a = r["herd"], r["account"]
    # every device challenged after the mass connect, and affirmed
    assert herd["complete"] and herd["affirming"] == 20
    # nothing lost, nothing twice, nothing stored that no device sent
    assert a["sent"] == a["stored"] > 60
    assert a["lost"] == a["stored_twice"] == a["unexpected"] == 0
    # the hostile share was sent and refused: forged/replayed evidence never affirmed,
    # every malformed message refused by a worker (and the worker still running)
    hostile = a["hostile_sent"]
    assert sum(hostile.values()) >= 10 and hostile["malformed"] >= 1
    assert hostile["forged_evidence"] + hostile["replay_evidence"] >= 1
    assert a["hostile_accepted"] == 0
    assert a["malformed_refused"] == hostile["malformed"]
    assert a["legit_evidence"] == a["legit_affirming"] > 20
    assert r["ok"]
