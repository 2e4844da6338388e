"""The benchmark report's logic: RATIO lines, spread, targets and --check (nothing is timed here).

The failures these stand for: a figure silently dropped (a malformed line read as "not
measured" or as nothing), a spread stated from too few runs, a target called met by a single
lucky run, and `make bench --check` exiting 0 when a target is missed.
"""

from __future__ import annotations

import benchstats
import pytest
from benchstats import Verdict, done, exit_code, quartiles, ratio_line, settled, split_output


def target(name: str) -> benchstats.Target:
    return next(t for t in benchstats.TARGETS if t.name == name)


def test_ratio_lines_are_stripped_from_the_page_and_pooled_by_name() -> None:
    out = "\n".join([
        "## Section", "| a | b |",
        ratio_line("x", [0.5, 0.6]),
        "text",
        ratio_line("x", [0.7]),
        ratio_line("y", [1.0]),
    ])
    text, runs = split_output(out)
    assert text == "## Section\n| a | b |\ntext"
    assert runs == {"x": [0.5, 0.6, 0.7], "y": [1.0]}


@pytest.mark.parametrize("line", [
    "RATIO {not json",
    'RATIO {"name": "x"}',
    'RATIO {"name": "x", "runs": []}',
    'RATIO {"name": "", "runs": [1]}',
    'RATIO {"name": "x", "runs": ["fast"]}',
    'RATIO {"name": "x", "runs": 3}',
])
def test_a_malformed_ratio_line_is_an_error_not_a_dropped_figure(line: str) -> None:
    with pytest.raises(ValueError):
        split_output("## s\n" + line)


def test_quartiles_of_known_runs() -> None:
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert quartiles([0.7]) == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError):
        quartiles([])


def test_spread_settles_only_with_enough_runs_inside_the_band() -> None:
    assert not settled([0.6] * (benchstats.MIN_RUNS - 1))  # tight, but too few runs
    assert settled([0.6] * benchstats.MIN_RUNS)
    assert settled([0.55, 0.58, 0.60, 0.62, 0.65])  # IQR 0.58-0.62
    # the delivery runs issue 16 reports (0.47, 0.48, 0.71, ...): too wide to stop
    assert not settled([0.33, 0.35, 0.60, 0.60, 0.70, 0.85, 0.94, 1.06, 1.52])


def test_repeating_stops_when_settled_or_capped() -> None:
    wide = [0.3, 0.9] * 3
    assert not done({"a": wide}, ["a"], cap=10)
    assert done({"a": wide * 2}, ["a"], cap=10)  # 12 runs >= cap
    assert done({"a": [0.6] * 5}, ["a"], cap=10)
    assert not done({}, ["a"], cap=10)  # a ratio not yet reported is not done


def test_met_by_the_median_in_the_targets_direction() -> None:
    at_least = target("appraisal_core_ed25519")  # >= 0.5
    at_most = target("metrics_time")  # <= 0.5
    assert Verdict(at_least, (0.4, 0.55, 0.6)).met
    assert not Verdict(at_least, (0.9, 0.45, 0.3)).met  # one lucky run does not make it
    assert Verdict(at_most, (0.27, 0.3, 0.6)).met
    assert not Verdict(at_most, (0.61, 0.6, 0.2)).met


def test_a_target_not_measured_is_not_met() -> None:
    v = Verdict(target("metrics_time"), ())
    assert not v.met
    assert "not measured" in v.line() and "NOT MET" in v.line()


def test_check_exits_nonzero_only_when_asked_and_a_target_is_missed() -> None:
    ok = Verdict(target("appraisal_core_ed25519"), (0.5,) * 5)
    bad = Verdict(target("verify_inproc_20mb"), (0.55,) * 5)
    assert exit_code([ok], check=True) == 0
    assert exit_code([ok, bad], check=True) == 1
    assert exit_code([ok, bad], check=False) == 0


def test_the_verdict_line_states_target_median_iqr_and_outcome() -> None:
    line = Verdict(target("verifier_store_ed25519"), (0.27, 0.28, 0.29, 0.30, 0.31)).line()
    assert ">= 0.3" in line and "median 0.29" in line and "IQR 0.28-0.30" in line
    assert "5 runs" in line and "IQR settled" in line and line.endswith("NOT MET")


def test_the_targets_are_issue_16s_raised_ones() -> None:
    by = {t.name: t for t in benchstats.TARGETS}
    assert (by["verify_inproc_20mb"].op, by["verify_inproc_20mb"].value) == (">=", 1.5)
    assert (by["cli_20mb"].op, by["cli_20mb"].value) == ("<=", 0.5)
    assert (by["appraisal_core_ed25519"].value, by["appraisal_core_ed25519"].was) == (0.5, 0.3)
    assert (by["verifier_store_ed25519"].op, by["verifier_store_ed25519"].value) == (">=", 0.3)
    assert (by["delivery_outbox"].value, by["delivery_outbox"].was) == (0.8, 0.5)
    assert (by["metrics_time"].op, by["metrics_time"].value) == ("<=", 0.5)
    # the old target is not what decides "met"
    assert not Verdict(by["appraisal_core_ed25519"], (0.4,) * 5).met


def test_the_section_table_shows_each_target_of_the_section() -> None:
    vs = benchstats.verdicts({"delivery_outbox": [0.85] * 5}, ["agent"])
    assert [v.target.name for v in vs] == ["delivery_outbox", "metrics_time"]
    t = benchstats.table(vs)
    assert "**0.85**" in t and "| met |" in t and "not measured" in t and ">= 0.8" in t
    assert "| >= 0.5 |" in t  # the target before issue 16
