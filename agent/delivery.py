"""The delivery core: what the device sends, when a message is done, what to send again.

I/O-free, in the manner of h11's connection state machine: the loop feeds it what happened
(connected, disconnected, the broker's PUBACK, the backend's verified ack, messages just stored)
with the time, and it answers with actions for the edges to carry out: publish a message (with
its MQTT v5 expiry), :class:`MarkDelivered`, :class:`Delete`, :class:`AckUpTo`, :class:`Discard`.
It holds the whole delivery state: the messages in flight (paho mid -> seq), the send cursor per
priority, the messages it may send from memory (:mod:`.fresh`), PUBACKs not yet recorded, the
backend's acks and the ack timeout. It never touches SQLite or paho; :mod:`.loop` does.

A message goes stored -> delivered (PUBACK) -> acknowledged (the backend's signed ``ack``,
:mod:`.e2eack`), see :mod:`.outbox_rules`. With end-to-end acknowledgement (``e2e``) a PUBACK
only marks a message delivered; after every new connection, and when the backend has not
acknowledged a delivered message within ``ack_timeout`` of its *first* PUBACK, every kept
message is sent again from the outbox (the backend drops duplicates by seq); a timeout resend is
not repeated before another whole ``ack_timeout``. Without e2e a PUBACK deletes the message.

After a broker restart the devices often reconnect, and send their backlog again, before any
verifier worker has resubscribed: the broker PUBACKs those copies and hands them to no one. So
each worker, once subscribed, publishes a retained presence on ``BACKEND_ONLINE``; a device that
hears it live (:meth:`Delivery.on_backend_online`) sends every kept message again at once, and
:data:`BACKEND_SETTLE` seconds later once more if what was first delivered before the presence
is still unacknowledged (a copy in flight while it arrived). docs/SCALE.md, "When the broker
restarts".

Sending, one batch per loop turn::

    todo = core.fresh(room) or outbox.pending(room, after=core.cursor, skip=core.held())
    for m in todo:
        expiry = core.expiry(m, now)         # EXPIRED: dropped and reported, go on
        mid = transport.publish(...)         # None: stop here; too large: core.too_large(m)
        core.sent(m, mid)
    actions = core.batch_done(...)

Misuse (sending while not connected, a batch not closed) is a programming error
(``RuntimeError``/``AssertionError``), never a verdict on input.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import NamedTuple

from .envelope import PRIORITY_METRICS
from .fresh import FreshMessages
from .outbox_rules import Stored, ack_verdict

logger = logging.getLogger(__name__)

ACK_DELAY = 0.05  # seconds PUBACKs may wait to be recorded together
ACK_BATCH = 256  # ... or until this many have gathered
REFUSED_OUTRIGHT = 3  # refusals with nothing accepted on a connection: the device is refused
FRESH_MAX = 4096  # messages kept in memory for sending, beyond which the outbox is read
EXPIRED = -1  # expiry() of a metrics report too old to send
BACKEND_SETTLE = 3.0  # seconds after a backend presence to look again at what it has not acked


# --- actions (the edges carry them out in the order given) ----------------------------------


class MarkDelivered(NamedTuple):
    """The broker PUBACKed these: keep them until the backend acknowledges them."""

    seqs: list[int]


class Delete(NamedTuple):
    """The broker PUBACKed these and there is no end-to-end ack: they are done."""

    seqs: list[int]


class AckUpTo(NamedTuple):
    """The backend holds (or was told of the drop of) every message with ``seq <= upto``."""

    upto: int


class Discard(NamedTuple):
    """These will never reach the backend: delete them and report them dropped."""

    seqs: list[int]
    reason: str


Action = MarkDelivered | Delete | AckUpTo | Discard


class Delivery:
    def __init__(
        self,
        *,
        window: int,
        e2e: bool,
        metrics_expiry: float,
        ack_timeout: float,
        delivered_upto: int = 0,
        counters: dict[str, int] | None = None,
        now: float = 0.0,
        fresh_max: int = FRESH_MAX,
    ) -> None:
        self.window = window
        self.e2e = e2e
        self.metrics_expiry = metrics_expiry
        self.ack_timeout = ack_timeout
        self.counters = counters if counters is not None else {}
        self.connected = False
        self.inflight: dict[int, int] = {}  # paho mid -> seq
        self.cursor: dict[int, int] = {}  # priority -> highest seq handed to this transport
        self._fresh = FreshMessages(fresh_max)
        self._acks: list[int] = []  # PUBACKed seqs, not yet recorded
        self._refused: list[int] = []  # seqs the broker refused
        self.refused_streak = 0  # refusals since the broker last accepted a message
        self.accepted_here = 0  # messages the broker accepted on this connection
        self.refused_here: list[str] = []  # ... and the reasons of those it refused
        self.drop_report: int | None = None  # seq of the last outbox.dropped report written
        self.hold_drops = False  # the broker refused a drop report: none until reconnection
        self._gone: dict[str, list[int]] = {}  # this batch's expired / too large seqs
        self._acked_at = now
        self._delivered_upto = delivered_upto  # highest seq ever PUBACKed (kept by the outbox)
        self._seen = 0  # highest verified backend ack received
        self._applied = 0  # highest applied
        self._waiting = False  # an ack beyond what the broker acknowledged is waiting
        self._check_at = now + ack_timeout if e2e else float("inf")
        self._resent_at = float("-inf")  # the last resend for an ack timeout
        self._backend_at: float | None = None  # a backend presence to look back at, once

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # --- events in ---------------------------------------------------------------------------

    def on_connect(self) -> None:
        """A new broker session: with e2e, send again everything the backend has not acked."""
        self.connected = True
        self.accepted_here, self.refused_here = 0, []
        self.hold_drops = False
        if self.e2e:
            self.resync()

    def on_disconnect(self) -> None:
        self.connected = False

    def on_backend_online(self, now: float, *, retained: bool) -> bool:
        """A worker (re)subscribed (``BACKEND_ONLINE`` heard live): send every kept message
        again now. A retained copy is only the broker's memory (heard on every subscribe, after
        the connect resync already sent everything): ignored. True if a resend starts."""
        if not self.e2e or not self.connected or retained:
            return False
        self._count("backend_resend")
        logger.info("the backend is back (a verifier worker subscribed); sending again what it "
                    "has not acknowledged")
        self.resync()
        self._backend_at = now
        self._check_at = min(self._check_at, now + BACKEND_SETTLE)
        return True

    def on_new_transport(self) -> None:
        """A new transport (new broker settings): it holds nothing, so send everything again."""
        self.connected = False
        self.inflight.clear()
        self.resync()

    def resync(self) -> None:
        """Send again from the outbox: clear the cursor and forget the in-memory messages."""
        self.cursor.clear()
        self._fresh.stop()

    def on_puback(self, mid: int, ok: bool, reason: str = "") -> None:
        seq = self.inflight.pop(mid, None)
        if seq is None:
            return
        if not ok:
            self._count("broker_rejected")
            self.refused_streak += 1
            self.refused_here.append(reason)
            n = self.refused_streak
            # once per streak at ERROR, then at a falling rate: a device whose every message is
            # refused must not write a line per message
            level = logging.ERROR if n == 1 else logging.WARNING if n & (n - 1) == 0 \
                else logging.DEBUG
            logger.log(level, "broker refused message seq %d (%s); dropping it (%d refused in a "
                       "row): is this device registered with the broker (deploy/broker-register)?",
                       seq, reason, n)
            self._refused.append(seq)
            if seq == self.drop_report and not self.hold_drops:
                self.hold_drops = True
                logger.warning("broker refused the drop report seq %d; no further report on "
                               "this connection (the drops stay listed)", seq)
            return
        if self.refused_streak:
            logger.warning("broker accepts messages again after refusing %d",
                           self.refused_streak)
            self.refused_streak = 0
        self.accepted_here += 1
        self._acks.append(seq)
        self._count("delivered")

    @property
    def refused_outright(self) -> str | None:
        """The broker's reason when it has refused :data:`REFUSED_OUTRIGHT` messages on this
        connection and accepted none (an unregistered or wrongly named device), else None."""
        if self.accepted_here or len(self.refused_here) < REFUSED_OUTRIGHT:
            return None
        return self.refused_here[-1] or "refused"

    @property
    def may_report_drops(self) -> bool:
        """A drop report may be written: the broker accepted the last message it answered, and
        has not refused a drop report on this connection. Otherwise the report would be refused
        in turn and reported again, without end; the drops stay listed for the next report."""
        return self.refused_streak == 0 and not self.hold_drops

    def on_backend_ack(self, upto: int) -> None:
        """A verified backend ack (signature and device checked by :mod:`.e2eack`)."""
        self._seen = max(self._seen, upto)

    def on_stored(self, kept: list[Stored]) -> None:
        """Messages just stored, in seq order, as ``Outbox.pending`` would return them."""
        self._fresh.add(kept)

    def on_outbox_changed(self) -> None:
        """The outbox changed under the cursor (an eviction, a drop report): read it again."""
        self._fresh.stop()

    # --- actions out: recording --------------------------------------------------------------

    def record(self, now: float, *, force: bool = False, storing: bool = False) -> list[Action]:
        """What to write to the outbox this turn: PUBACKs, refusals, the backend's ack.

        PUBACKs are gathered for up to :data:`ACK_DELAY` (or :data:`ACK_BATCH` of them): an
        update lost to a crash only re-sends a message the backend then drops by seq, and one
        transaction for many PUBACKs is much cheaper than one each. They are recorded at once
        when new messages are about to be stored (``storing``), so deletes go before the new
        messages and eviction never counts an acknowledged message as dropped.
        """
        out: list[Action] = []
        e2e_new = self._seen > self._applied
        if self._acks and (force or storing or e2e_new or len(self._acks) >= ACK_BATCH
                           or now - self._acked_at >= ACK_DELAY):
            acks, self._acks = self._acks, []
            self._acked_at = now
            if self.e2e:
                out.append(MarkDelivered(acks))
                self._delivered_upto = max(self._delivered_upto, max(acks))
            else:
                out.append(Delete(acks))
        if self._refused:
            out.append(Discard(self._refused, "refused by broker"))
            self._refused = []
        if e2e_new:
            out.extend(self._apply_backend_ack())
        return out

    def _apply_backend_ack(self) -> list[Action]:
        """Delete what the backend acknowledged, never beyond what the broker acknowledged.

        An ack beyond what the broker has PUBACKed waits (counted once) until the broker has
        acknowledged that far: the backend may store a message before its PUBACK reaches us.
        """
        verdict = ack_verdict(self._seen, self._applied, self._delivered_upto)
        out: list[Action] = []
        if verdict == "apply":
            out.append(AckUpTo(self._seen))
            self._applied = self._seen
        elif verdict == "beyond" and not self._waiting:
            self._count("ack_beyond_sent")
            logger.info("backend acks up to seq %d, beyond what the broker acknowledged (%d); "
                        "waiting", self._seen, self._delivered_upto)
        self._waiting = verdict == "beyond"
        return out

    def ack_check_due(self, now: float) -> bool:
        """Time to look at the oldest delivered message (every ``ack_timeout / 2``, e2e only)."""
        if now < self._check_at:
            return False
        self._check_at = now + self.ack_timeout / 2
        return True

    def check_ack_timeout(self, now: float, oldest_delivery: float | None) -> bool:
        """Send again if the backend has not acked a message first PUBACKed ``ack_timeout``
        ago (and nothing was resent for that in the last ``ack_timeout``), or, ``BACKEND_SETTLE``
        after a backend presence, one first PUBACKed before it."""
        backend_at, self._backend_at = self._backend_at, None
        if oldest_delivery is None:
            return False
        if backend_at is not None:
            if now - backend_at < BACKEND_SETTLE:
                self._backend_at = backend_at  # not yet: look at it at the next check
            elif oldest_delivery < backend_at:
                logger.info("backend has not acknowledged messages delivered before it came "
                            "back; sending again")
                self._count("e2e_resend")
                self.resync()
                return True
        if now - max(oldest_delivery, self._resent_at) < self.ack_timeout:
            return False
        logger.warning("backend has not acknowledged messages delivered %.0fs ago; "
                       "sending again", now - oldest_delivery)
        self._count("e2e_resend")
        self._resent_at = now
        self.resync()
        return True

    # --- actions out: sending ----------------------------------------------------------------

    def room(self) -> int:
        """How many messages may be handed to the transport now."""
        return self.window - len(self.inflight) if self.connected else 0

    def fresh(self, room: int) -> list[Stored] | None:
        """Up to ``room`` messages to send from memory, or None: read them from the outbox."""
        return self._fresh.take(room) if self._fresh.active else None

    def held(self) -> Collection[int]:
        """Seqs the transport still holds (not to be read again after a resync)."""
        return set(self.inflight.values()) if self.e2e else ()

    def expiry(self, m: Stored, now: float) -> int | None:
        """The MQTT v5 message expiry to publish ``m`` with (metrics only), or :data:`EXPIRED`:
        a report older than ``metrics_expiry`` is dropped and reported instead, so the
        backend's contiguous ack can pass it."""
        if m.priority != PRIORITY_METRICS:
            return None
        left = int(self.metrics_expiry - (now - m.ts))
        if left < 1:
            self._gone.setdefault("expired", []).append(m.seq)
            self.cursor[m.priority] = m.seq
            return EXPIRED
        return left

    def sent(self, m: Stored, mid: int) -> None:
        self.inflight[mid] = m.seq
        self.cursor[m.priority] = m.seq

    def too_large(self, m: Stored) -> None:
        """The broker's maximum packet size refuses ``m``: dropped and reported."""
        self._count("too_large")
        self._gone.setdefault("too large", []).append(m.seq)
        self.cursor[m.priority] = m.seq

    def batch_done(self, *, room: int, taken: int, done: int, from_memory: bool,
                   skipped: int = 0) -> list[Action]:
        """Close the batch: ``taken`` messages came back (from memory or the outbox, which
        skipped ``skipped`` held ones), the first ``done`` were handled (a publish that could
        not be queued stops the batch)."""
        if from_memory:
            self._fresh.sent(done)
        elif done == taken < room and not skipped:
            self._fresh.start()  # the outbox has nothing unsent above the cursor
        gone, self._gone = self._gone, {}
        return [Discard(seqs, reason) for reason, seqs in gone.items()]
