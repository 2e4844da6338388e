"""Gap detection over a device's ``seq`` numbers (pure).

Devices number their envelopes 1, 2, 3, ... without gaps (the durable outbox guarantees it), so
every missing number below the highest one received is a message the backend did not get. A
device that had to evict messages says so in an ``outbox.dropped`` event naming the dropped
``seq`` ranges; those gaps are *explained*. Anything else is *unexplained*: lost in transit or
suppressed, and worth an alert. Messages that arrive late fill their gap and disappear from
both lists; messages received twice are duplicates and count once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Range = tuple[int, int]


@dataclass(frozen=True)
class GapReport:
    highest: int
    received: int
    missing: tuple[Range, ...]
    explained: tuple[Range, ...]
    unexplained: tuple[Range, ...]

    @property
    def missing_count(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    @property
    def unexplained_count(self) -> int:
        return sum(b - a + 1 for a, b in self.unexplained)


def _ranges(sorted_values: Iterable[int]) -> list[Range]:
    out: list[list[int]] = []
    for s in sorted_values:
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(a, b) for a, b in out]


def missing_ranges(received: Sequence[int]) -> list[Range]:
    """Gaps in ``received`` (sorted ascending, unique) between 1 and its maximum."""
    out: list[Range] = []
    expect = 1
    for s in received:
        if s > expect:
            out.append((expect, s - 1))
        expect = max(expect, s + 1)
    return out


def subtract(ranges: Sequence[Range], minus: Sequence[Range]) -> tuple[list[Range], list[Range]]:
    """Split ``ranges`` into (covered by ``minus``, not covered). Both inclusive, any order."""
    cover = sorted(minus)
    inside: list[int] = []
    outside: list[int] = []
    for a, b in ranges:
        for s in range(a, b + 1) if b - a < 1_000_000 else ():
            if any(x <= s <= y for x, y in cover):
                inside.append(s)
            else:
                outside.append(s)
    return _ranges(inside), _ranges(outside)


def contiguous(start: int, received: Iterable[int], dropped: Sequence[Range]) -> int:
    """The highest ``n >= start`` such that every seq in ``start+1 .. n`` was received or is named
    in a reported drop (pure). ``start`` is a value this returned before (every seq up to it is
    accounted for). This is what the backend acknowledges end to end (agent/e2eack.py)."""
    rec = sorted({s for s in received if s > start})
    cover = sorted((a, b) for a, b in dropped if b > start)
    n, i = start, 0
    while True:
        while i < len(rec) and rec[i] <= n:
            i += 1
        if i < len(rec) and rec[i] == n + 1:
            n += 1
            continue
        nxt = max((b for a, b in cover if a <= n + 1 <= b), default=None)
        if nxt is None:
            return n
        n = nxt


def analyse(received: Sequence[int], dropped: Sequence[Range]) -> GapReport:
    """The gap report of one device from its received seqs and its reported drops."""
    rec = sorted(set(received))
    missing = missing_ranges(rec)
    explained, unexplained = subtract(missing, dropped)
    return GapReport(
        highest=rec[-1] if rec else 0,
        received=len(rec),
        missing=tuple(missing),
        explained=tuple(explained),
        unexplained=tuple(unexplained),
    )
