"""Policy: aggregation and rate limits turn a flood into a few events; fail-safe on critical."""

from __future__ import annotations

import pytest

from edgeward.models.guard.policy import Policy, PolicyConfig, Verdict


def v(sev: str, reason: str = "anomalous input (msp)", c: float = 3.0) -> Verdict:
    return Verdict(sev != "info", sev, {"combined": c, "msp": 0.9}, (reason,) if sev != "info" else ())


def test_attack_flood_of_odd_inputs_yields_few_events_with_counts() -> None:
    pol = Policy(PolicyConfig(window_s=60, max_immediate=5))
    events = []
    for i in range(10_000):  # 10,000 warnings within one minute
        events += pol.observe(v("warning", c=3.0 + (i == 500)), now=1000.0 + i * 0.005)
    assert len(events) == 1 and events[0]["body"]["count"] == 1
    events += pol.observe(v("info"), now=1061.0)  # the window closes
    assert len(events) == 2
    summary = events[1]["body"]
    assert summary["summary"] and summary["count"] == 10_000 and summary["unreported"] == 9_999
    assert summary["scores"]["combined"] == 4.0  # the worst one is kept
    assert events[1]["type"] == "anomaly"


def test_rate_limit_across_reasons_but_critical_always_reported() -> None:
    pol = Policy(PolicyConfig(window_s=60, max_immediate=2))
    out = []
    for i in range(6):
        out += pol.observe(v("warning", reason=f"r{i}"), now=float(i))
    assert len(out) == 2
    out += pol.observe(v("critical", reason="invalid input: NaN"), now=7.0)
    assert len(out) == 3 and out[-1]["body"]["severity"] == "critical"
    flushed = pol.flush(now=8.0)
    assert {e["body"]["reason"] for e in flushed} == {"r2", "r3", "r4", "r5"}
    assert pol.flush(now=9.0) == []


def test_info_verdicts_make_no_events_by_default() -> None:
    pol = Policy()
    assert all(pol.observe(v("info"), now=float(i)) == [] for i in range(100))
    assert pol.flush(100.0) == []


def test_fail_safe_called_for_every_critical_verdict() -> None:
    calls: list[Verdict] = []
    pol = Policy(PolicyConfig(max_immediate=0), on_critical=calls.append)
    for i in range(50):
        pol.observe(v("critical"), now=float(i) * 0.01)
    pol.observe(v("warning"), now=1.0)
    assert len(calls) == 50 and all(c.severity == "critical" for c in calls)


def test_bad_policy_config() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(min_severity="loud")
    with pytest.raises(ValueError):
        PolicyConfig(window_s=0)


def test_quiet_info_verdicts_still_close_the_window() -> None:
    """The shortcut for info verdicts must not hold back the summary of a closed window."""
    pol = Policy(PolicyConfig(window_s=10, max_immediate=1))
    out = pol.observe(v("warning", reason="a"), now=0.0) + pol.observe(v("warning", reason="b"), now=1.0)
    assert len(out) == 1
    assert all(pol.observe(v("info"), now=2.0 + i * 0.01) == [] for i in range(100))
    closed = pol.observe(v("info"), now=10.5)
    assert [e["body"]["reason"] for e in closed] == ["b"] and closed[0]["body"]["summary"]
    loud = Policy(PolicyConfig(min_severity="info"))
    assert len(loud.observe(v("info"), now=0.0)) == 1 and len(loud.observe(v("info"), now=1.0)) == 0


def test_fast_info_verdict_equals_the_constructed_one() -> None:
    from edgeward.models.guard.guarded import GuardedResult, _result
    from edgeward.models.guard.policy import info_verdict

    scores = {"combined": 0.3, "msp": 0.01}
    fast, built = info_verdict(scores), Verdict(False, "info", scores)
    assert fast == built and repr(fast) == repr(built) and fast.to_json() == built.to_json()
    assert fast.scores is scores
    with pytest.raises(AttributeError):  # still frozen
        fast.severity = "critical"  # type: ignore[misc]
    assert _result(None, fast) == GuardedResult(None, built)  # type: ignore[arg-type]
