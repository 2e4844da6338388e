"""A step's expectations, checked against what the backend stored (the fleet store).

Each :class:`~edgeward.simulator.scenario.Expect` is evaluated per device it names; ``marks``
holds each device's highest stored ``seq`` when the step began, so "since the step" means "with
a seq above the mark". For ``attested``, a device the step acted on must have a result for
evidence stored after its action finished; the others are judged by their latest result. No
I/O besides the :class:`BackendView` reads.
"""

from __future__ import annotations

from typing import Any

from edgeward.simulator.backend import BackendView
from edgeward.simulator.results import CheckResult
from edgeward.simulator.scenario import Expect


def devices_for(expect: Expect, names: list[str], target: int | None) -> list[str]:
    d = expect.devices
    if d == "all":
        return list(names)
    if d == "target":
        return [names[target]] if target is not None else []
    if d == "others":
        return [n for i, n in enumerate(names) if i != target]
    assert isinstance(d, tuple)
    return [names[i] for i in d if i < len(names)]


def _attested(e: Expect, view: BackendView, dev: str, mark: int, acted_on: bool
              ) -> tuple[bool, str]:
    results = view.appraisals(dev, after=mark if acted_on else 0)
    if not results:
        return False, "no attestation result yet" + (" since the step began" if acted_on else "")
    last = results[-1]
    detail = f"latest EAR (evidence seq {last.seq}) {last.status}, hardware {last.hardware}"
    if last.status != e.status:
        why = "; ".join(r for r in last.reasons if "match" not in r and "approved" not in r)
        return False, f"{detail}, expected {e.status}" + (f": {why[:200]}" if why else "")
    if e.hardware and last.hardware != 2:
        return False, f"{detail}: no verified TPM quote (hardware 2 expected)"
    if e.reason and not any(e.reason in r for r in last.reasons):
        return False, f"{detail}: no reason mentions '{e.reason}'"
    return True, detail


def _severity(body: Any) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and isinstance(data.get("severity"), str):
        return str(data["severity"])
    return None


def _event(e: Expect, view: BackendView, dev: str, mark: int) -> tuple[bool, str]:
    assert e.type is not None
    got = view.messages(dev, e.type, after=mark)
    sevs = sorted({s for _q, _t, _r, b in got if (s := _severity(b))})
    detail = f"{len(got)} {e.type} since the step began" + (
        f" (severities {', '.join(sevs)})" if sevs else "")
    if len(got) < e.count:
        return False, f"{detail}, expected at least {e.count}"
    missing = [s for s in e.severities if s not in sevs]
    if missing:
        return False, f"{detail}; no {', '.join(missing)} event"
    return True, detail


def _gap_free(view: BackendView, dev: str, mark: int) -> tuple[bool, str]:
    seqs = view.seqs(dev)
    high = seqs[-1] if seqs else 0
    missing = view.missing(dev)
    if missing:
        shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in missing[:5])
        return False, f"seq 1..{high}: missing {shown}"
    if len(seqs) != high:  # the store's key makes this impossible; say so if it ever is not
        return False, f"{len(seqs)} messages stored for seq 1..{high}"
    if high <= mark:
        return False, f"no new messages since the step began (highest seq {high})"
    return True, f"seq 1..{high}, each once, none missing"


def _replay(view: BackendView, dev: str, outcome: dict[str, Any]) -> tuple[bool, str]:
    r = outcome.get("replay")
    if not r:
        return False, "no replay was made in this step"
    now = [a.seq for a in view.appraisals(dev) if a.seq <= r["seq"]]
    problems = []
    if now != r["appraised_before"]:
        problems.append("the re-published evidence message was appraised again")
    if r["cli_exit"] != 2:
        problems.append(f"the verifier answered the replayed EAT with exit {r['cli_exit']} "
                        f"({r['status']})")
    elif not any("replay" in x or "already used" in x for x in r["reasons"]):
        problems.append("the verifier refused the replayed EAT, but not as a replay: "
                        + "; ".join(r["reasons"][:2]))
    if problems:
        return False, "; ".join(problems)
    return True, (f"evidence seq {r['seq']} stored and appraised once; the replayed EAT: "
                  f"{r['status']} ({r['reasons'][0] if r['reasons'] else ''})")


def check(e: Expect, view: BackendView, dev: str, mark: int, *, acted_on: bool,
          outcome: dict[str, Any], attest_mark: int | None = None) -> CheckResult:
    """``attest_mark``: for ``attested`` on the acted-on device, the highest seq stored when the
    action finished (default ``mark``)."""
    if e.check == "online" or e.check == "offline":
        st = view.status(dev)
        ok, detail = st == e.check, f"status {st or 'never seen'}"
    elif e.check == "reports":
        n = len(view.messages(dev, "metrics", after=mark))
        ok, detail = n >= e.count, f"{n} metrics reports since the step began"
    elif e.check == "attested":
        ok, detail = _attested(e, view, dev, mark if attest_mark is None else attest_mark,
                               acted_on)
    elif e.check == "event":
        ok, detail = _event(e, view, dev, mark)
    elif e.check == "gap_free":
        ok, detail = _gap_free(view, dev, mark)
    elif e.check == "replay_refused":
        ok, detail = _replay(view, dev, outcome)
    else:  # the loader admits only the checks above
        ok, detail = False, f"unknown check {e.check}"
    return CheckResult(e.describe(), dev, ok, detail, e.security)
