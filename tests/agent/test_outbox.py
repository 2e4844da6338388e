"""The durable outbox: gap-free seq, bounded, eviction order, drop reports, crash survival."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeward.agent.envelope import (
    PRIORITY_EVIDENCE,
    PRIORITY_METRICS,
    PRIORITY_SECURITY,
    decode,
)
from edgeward.agent.outbox import (
    DROP_EVENT_TYPE,
    Candidate,
    NewMessage,
    Outbox,
    plan_eviction,
    seq_ranges,
)


def metric(i: int = 0, pad: int = 0) -> NewMessage:
    return NewMessage("report", "metrics", {"i": i, "pad": "x" * pad}, PRIORITY_METRICS)


def security(i: int = 0, pad: int = 0) -> NewMessage:
    return NewMessage("event", "model.rejected", {"i": i, "pad": "x" * pad}, PRIORITY_SECURITY)


def test_seq_is_gap_free_and_persists(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "dev-a", clock=lambda: 1000.0)
    assert ob.put([metric(i) for i in range(5)]) == [1, 2, 3, 4, 5]
    ob.ack([1, 2, 3, 4, 5])
    assert ob.count() == 0
    ob.close()
    ob = Outbox(tmp_path / "o.db", "dev-a")
    assert ob.put([metric()]) == [6]  # never reused, even after everything was acked
    env = decode(ob.pending(10)[0].payload)
    assert (env.seq, env.device, env.type) == (6, "dev-a", "metrics")


def test_pending_security_first_then_seq_after_cursor(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d")
    ob.put([metric(0), security(1), metric(2), security(3)])
    assert [m.seq for m in ob.pending(10)] == [2, 4, 1, 3]
    assert [m.seq for m in ob.pending(2, after={PRIORITY_SECURITY: 2})] == [4, 1]
    assert [m.seq for m in ob.pending(9, after={PRIORITY_SECURITY: 4, PRIORITY_METRICS: 1})] == [3]


def test_plan_eviction_is_lowest_priority_oldest_first() -> None:
    cands = [Candidate(s, p, 100, "t") for s, p in [(3, 0), (7, 0), (1, 1), (2, 2)]]
    assert [c.seq for c in plan_eviction(cands, 150)] == [3, 7]
    assert [c.seq for c in plan_eviction(cands, 0)] == []
    assert len(plan_eviction(cands, 10_000)) == 4
    assert seq_ranges([5, 1, 2, 3, 7, 8]) == [[1, 3], [5, 5], [7, 8]]


def test_bound_evicts_metrics_before_security_and_reports_drop(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", max_bytes=16 * 1024)
    ob.put([security(0, pad=500)])  # seq 1
    seqs = []
    for i in range(60):
        seqs += ob.put([metric(i, pad=500)])
    st = ob.stats()
    assert st.bytes <= ob.max_bytes
    assert st.dropped_total > 0 and ob.drops_pending() == st.dropped_total
    # one report names every drop (contiguous metrics: few ranges), not one report per eviction
    assert ob.report_drops() is not None and ob.report_drops() is None
    st = ob.stats()
    left = {m.seq: m for m in ob.pending(1000)}
    assert 1 in left, "the security event must survive while metrics can be evicted"
    drops = [decode(m.payload) for m in left.values() if m.type == DROP_EVENT_TYPE]
    assert len(drops) == 1, "one drop report"
    dropped = sum(d.body["count"] for d in drops)
    assert dropped == st.dropped_total
    # every seq is accounted for: delivered-or-pending, or named in a drop report
    named = {s for d in drops for a, b in d.body["ranges"] for s in range(a, b + 1)}
    assert all(d.body["by_type"].keys() <= {"metrics"} for d in drops)
    all_seqs = set(range(1, st.next_seq))
    assert all_seqs == set(left) | named and named.isdisjoint(left)
    # the oldest metrics went first
    metric_left = sorted(s for s, m in left.items() if m.type == "metrics")
    assert metric_left == sorted(metric_left) and min(metric_left) > min(named)


def test_security_evicted_only_when_nothing_lower_is_left(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", max_bytes=8192 + 2048)
    ob.put([NewMessage("attest/evidence", "evidence", {"p": "x" * 600}, PRIORITY_EVIDENCE)])
    for i in range(30):
        ob.put([security(i, pad=600)])
    types = [m.type for m in ob.pending(1000)]
    assert "evidence" not in types
    assert ob.stats().dropped_by_type.get("evidence") == 1
    assert ob.stats().dropped_by_type.get("model.rejected", 0) > 0


def test_oversized_message_is_refused_without_side_effects(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", max_bytes=8192)
    with pytest.raises(ValueError):
        ob.put([metric(0, pad=9000)])
    assert ob.put([metric()]) == [1] and ob.count() == 1


def test_survives_sigkill_between_commits(tmp_path: Path) -> None:
    """A writer SIGKILLed mid-stream: every committed message is there, seq has no holes."""
    db = tmp_path / "o.db"
    code = textwrap.dedent(
        f"""
        import os, signal
        from edgeward.agent.outbox import Outbox, NewMessage
        ob = Outbox({str(db)!r}, "d")
        for i in range(200):
            ob.put([NewMessage("report", "metrics", {{"i": i}})])
            if i == 120:
                print("committed", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=os.environ.copy())
    assert p.returncode == -9, p.stderr
    ob = Outbox(db, "d")
    seqs = [m.seq for m in ob.pending(1000)]
    assert seqs == list(range(1, 122))
    assert ob.put([metric()]) == [122]


def test_drop_report_splits_fragmented_ranges(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", "d", max_bytes=16 * 1024)
    for i in range(200):  # metrics interleaved with small events: every drop is its own range
        ob.put([metric(i, pad=300), security(i)])
    total = ob.drops_pending()
    assert total > 64
    reports = []
    while (seq := ob.report_drops()) is not None:
        reports.append(seq)
    bodies = [decode(m.payload).body for m in ob.pending(10_000) if m.type == DROP_EVENT_TYPE]
    assert sum(b["count"] for b in bodies) == total
    assert all(len(b["ranges"]) <= 64 for b in bodies)
    assert any(b["ranges_truncated"] for b in bodies)
