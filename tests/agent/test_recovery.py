"""Recovery after a broker restart, with the shipped settings (deploy/mosquitto.conf with
``autosave_interval 60``, the agents' and workers' default back-off and ``ack_timeout``).

The failure this stands for (issue 13, "Recovery"): after a SIGKILLed broker came back, the
devices reconnected and sent their backlog again before any worker had resubscribed, so those
copies went nowhere; every PUBACK re-stamped the delivery time, so the devices waited a whole
60 s ack timeout from that resend; and the workers, on the devices' back-off (60 s cap),
retried 15-30 s after the broker was up. The fleet took 64-91 s to drain.

Now: workers reconnect on a short back-off of their own, publish the retained backend presence
(``edgeward/v1/@backend/online``) once subscribed, and a device that hears it live sends every
message the backend has not acknowledged again; the ack timeout counts from a message's first
delivery. Goals: workers back within a second, every device's backlog stored within 10 s of
the workers' return (the test allows the worker 2 s on this loaded machine; the measured
figures are in docs/BENCHMARKS.md, from benchmarks/bench_recovery.py). With the devices' shipped
back-off (0.5 s doubling to 60 s, full jitter) a device itself may come back later than the
workers; its backlog is then counted from its own return.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from recovery_harness import Fleet

pytestmark = pytest.mark.slow


def test_broker_sigkilled_and_restarted_backlog_drains_within_10s_of_workers(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, devices=4, workers=2, interval=0.5)
    try:
        runs = [fleet.broker_restart(down) for down in (2.0, 4.0)]
    except BaseException:
        fleet.close()
        raise
    for r in runs:
        print(r.line())
    total = fleet.stop()  # nothing lost: every report numbered is stored
    for r in runs:
        assert r.backlog > 0
        assert max(r.workers_back) < 2.0, r.line()
        assert r.drain_after_all < 10.0, r.line()
    assert total > sum(r.backlog for r in runs)
