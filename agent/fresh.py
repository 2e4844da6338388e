"""Messages the loop sends from memory instead of reading them back from the outbox.

Once :meth:`edgeward.agent.outbox.Outbox.pending` has come back with less than was asked for, the
outbox holds nothing unsent above the loop's send cursor. From then on every message the loop
stores is also kept here, per priority and in seq order, so ``pending`` would return exactly
these: the loop sends them from memory and SQLite need not read back the payloads it has just
written. Whenever that may no longer hold (the cursor is cleared after a reconnect or for a
resend, an eviction or a drop report changes the outbox, more than ``limit`` messages wait) the
loop calls :meth:`FreshMessages.stop` and reads the outbox again until it has caught up.
"""

from __future__ import annotations

from .envelope import PRIORITIES
from .outbox_rules import Stored


class FreshMessages:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lists: dict[int, list[Stored]] | None = None
        self._n = 0

    @property
    def active(self) -> bool:
        return self._lists is not None

    def start(self) -> None:
        """The outbox has nothing unsent above the cursor: keep what is stored from now on."""
        self._lists = {p: [] for p in PRIORITIES}
        self._n = 0

    def stop(self) -> None:
        self._lists = None

    def add(self, stored: list[Stored]) -> None:
        """Messages just stored (in seq order); ignored unless active."""
        lists = self._lists
        if lists is None:
            return
        self._n += len(stored)
        if self._n > self.limit:  # too many to hold: read them from the outbox
            self._lists = None
            return
        for m in stored:
            lists[m.priority].append(m)

    def take(self, room: int) -> list[Stored]:
        """Up to ``room`` messages to send, as ``pending`` orders them: security first, by seq."""
        assert self._lists is not None
        out: list[Stored] = []
        for p in PRIORITIES:
            out.extend(self._lists[p][: room - len(out)])
        return out

    def sent(self, done: int) -> None:
        """Forget the first ``done`` messages of the last :meth:`take`."""
        if self._lists is None:
            return
        self._n -= done
        for p in PRIORITIES:
            lst = self._lists[p]
            k = min(done, len(lst))
            del lst[:k]
            done -= k
