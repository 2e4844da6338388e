"""The outbox's rules, without I/O: eviction order, seq ranges, drop reports, acknowledgements.

:mod:`.outbox` stores messages in SQLite and asks these pure functions what to do. A message
goes through three states (docs/AGENT.md, "The durable outbox"):

``stored``
    written to the outbox, not yet acknowledged by the broker;
``delivered``
    the broker sent its PUBACK (MQTT v5 §3.4). With end-to-end acknowledgement the message is
    kept: a broker killed before it forwarded or saved the message would otherwise lose it;
``acknowledged``
    the backend signed an ``ack`` naming a ``upto`` at or above the message's seq (the backend
    stored it, or the device reported it dropped): the message is deleted.

Kept messages count toward the byte bound and are evicted in the same order as any other
(:func:`plan_eviction`); an eviction is reported as a drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .envelope import PRIORITY_METRICS

MAX_RANGES_REPORTED = 64


class NewMessage(NamedTuple):
    """A message to store: topic kind (``report``, ``event``, ``attest/evidence``), type, body.

    (Named tuples rather than frozen dataclasses, here and in :class:`Stored`: one or two are made
    per message on the agent's hot path, and a named tuple is about three times cheaper to make.)
    """

    kind: str
    type: str
    body: dict[str, Any]
    priority: int = PRIORITY_METRICS


class Stored(NamedTuple):
    seq: int
    kind: str
    type: str
    priority: int
    ts: float
    payload: bytes


@dataclass
class OutboxStats:
    count: int
    bytes: int
    next_seq: int
    dropped_total: int
    dropped_by_type: dict[str, int] = field(default_factory=dict)
    delivered: int = 0  # PUBACKed, kept until the backend acknowledges them


@dataclass(frozen=True)
class Candidate:
    seq: int
    priority: int
    size: int
    type: str


def plan_eviction(candidates: Iterable[Candidate], need: int) -> list[Candidate]:
    """Pick messages to drop to free ``need`` bytes (pure).

    ``candidates`` must come in eviction order: lowest priority first, oldest (lowest seq) first
    within a priority, whether or not the broker has already acknowledged them. Returns the
    shortest prefix that frees at least ``need`` bytes (all of them if that is not enough).
    """
    chosen: list[Candidate] = []
    freed = 0
    for c in candidates:
        if freed >= need:
            break
        chosen.append(c)
        freed += c.size
    return chosen


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Compress sorted or unsorted seqs into inclusive ``[first, last]`` ranges (pure)."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def drop_report_body(dropped: Sequence[Candidate], reason: str) -> dict[str, Any]:
    """The body of an ``outbox.dropped`` event (pure)."""
    counts: dict[str, int] = {}
    for c in dropped:
        counts[c.type] = counts.get(c.type, 0) + 1
    ranges = seq_ranges(c.seq for c in dropped)
    return {
        "reason": reason,
        "count": len(dropped),
        "bytes": sum(c.size for c in dropped),
        "by_type": counts,
        "ranges": ranges[:MAX_RANGES_REPORTED],
        "ranges_truncated": len(ranges) > MAX_RANGES_REPORTED,
    }


def ack_verdict(upto: int, acked: int, delivered_upto: int) -> str:
    """What to do with a verified end-to-end ack naming ``upto`` (pure).

    ``acked`` is the highest ``upto`` already applied in this run, ``delivered_upto`` the highest
    seq the broker ever acknowledged (kept in the outbox across restarts). Returns

    * ``"apply"``: delete every message with ``seq <= upto``;
    * ``"stale"``: nothing new (an older or repeated ack, e.g. the retained one);
    * ``"beyond"``: refused, the backend claims messages this device never delivered (a backend
      that remembers an earlier device of the same name whose outbox was wiped, or a bug): the
      device never drops what it has not sent.
    """
    if upto > delivered_upto:
        return "beyond"
    if upto <= acked:
        return "stale"
    return "apply"
