"""The agent's one loop: every decision happens here, on one thread.

Sources hand small events to :attr:`Agent.queue`: the MQTT transport (connected, disconnected,
PUBACK, incoming message), the local socket (application events), signal handlers (stop,
reload). Timers schedule metrics and model re-verification. Each turn of the loop

1. takes every queued event (waiting at most until the next timer),
2. runs due timers,
3. writes all new messages to the outbox in one transaction and records all PUBACKs in another
   (group commit: one fsync per turn, not per message),
4. publishes pending messages while fewer than ``window`` are unacknowledged.

End-to-end acknowledgement (``[outbox] e2e_ack``, on by default; it needs ``[commands] trust``
to check the backend's signature): a PUBACK only marks a message delivered; the backend's signed
``ack`` (:mod:`.e2eack`) deletes it. After every new connection, and when the backend has not
acknowledged a delivered message within ``[outbox] ack_timeout``, every kept message is sent
again (the backend drops duplicates by seq). Without it a PUBACK deletes the message.

The loop itself does no parsing of its own: envelopes, commands and frames are checked by their
pure cores; transport, outbox, metrics and the socket are the edges.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from edgeward.core.errors import ConfigError

from . import seams
from .commands import CommandGate, load_last_seq
from .config import AgentConfig, load_agent_config
from .envelope import (
    PRIORITY_METRICS,
    PRIORITY_SECURITY,
    topic,
)
from .events import (
    Acked,
    AcksReady,
    Connected,
    Disconnected,
    Incoming,
    PayloadTooLargeError,
    Wake,
)
from .fresh import FreshMessages
from .inputs import Inputs
from .localsock import LocalEvent, LocalSocketServer
from .outbox import NewMessage, Outbox, Stored
from .ratelimit import TokenBucket
from .transport import MqttTransport, StatusTopic

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT = 5.0
ACK_DELAY = 0.05
ACK_BATCH = 256
FRESH_MAX = 4096  # messages kept in memory for sending, beyond which pump() reads the outbox


class Agent(Inputs):
    """The device agent: wiring, the loop, timers and reload (inputs: :mod:`.inputs`)."""

    def __init__(self, cfg: AgentConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        # SimpleQueue: a C queue, several times cheaper per event than queue.Queue, and its put()
        # is reentrant, so a signal handler may call it while the loop holds the queue.
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.outbox = Outbox(cfg.outbox.path, cfg.device, max_bytes=cfg.outbox.max_bytes,
                             clock=clock)
        self.counters: dict[str, int] = {}
        self.inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._cursor: dict[int, int] = {}  # priority -> highest seq handed to this transport
        self._fresh = FreshMessages(FRESH_MAX)  # sent from memory, not read back (fresh.py)
        self._topics = {k: topic(cfg.device, k) for k in ("report", "event", "attest/evidence")}
        self.connected = False
        self._new: list[NewMessage] = []
        self._acks: list[int] = []  # PUBACKed seqs, recorded in the next commit
        self._refused: list[int] = []  # seqs the broker refused
        self._acked_at = 0.0
        self.e2e = cfg.outbox.e2e_ack and cfg.commands.trust is not None
        if cfg.outbox.e2e_ack and not self.e2e:
            logger.warning("[outbox] e2e_ack needs [commands] trust to check the backend's acks; "
                           "messages leave the outbox at the broker's PUBACK")
        self._e2e_seen = 0  # highest verified ack upto received
        self._e2e_upto = 0  # highest applied
        self._ack_waiting = False
        self._stop = threading.Event()
        self._reload = False
        self._due: dict[str, float] = {}
        self._seq_path = cfg.agent.state_dir / "cmd_seq"
        self.gate = CommandGate(
            cfg.device, seams.command_trust(cfg), last_seq=load_last_seq(self._seq_path),
            max_skew=cfg.commands.max_skew, limits=cfg.limits,
        )
        self.metrics = seams.metrics_collector(cfg)
        self.watch = seams.model_watch(cfg)
        self.attester = seams.attester(cfg)
        self.ha = seams.ha_discovery(cfg)
        self._local_bucket = TokenBucket(cfg.local.rate, burst=max(10.0, cfg.local.rate))
        self._refusals = TokenBucket(1.0, burst=5.0)
        self._challenges = TokenBucket(0.5, burst=2.0)
        self.transport = self._make_transport()
        self.local: LocalSocketServer | None = None
        if cfg.local.socket is not None:
            self.local = LocalSocketServer(cfg.local.socket, self.queue.put, mode=cfg.local.mode,
                                           max_clients=cfg.local.max_clients, limits=cfg.limits)

    # --- wiring ------------------------------------------------------------------------------

    def _make_transport(self) -> MqttTransport:
        d = self.cfg.device
        return MqttTransport(
            self.cfg.mqtt, self.queue.put,
            subscriptions=[topic(d, k) for k in ("cmd", "attest/challenge", "attest/result")]
            + ([topic(d, "ack")] if self.e2e else []),
            status=StatusTopic(topic(d, "status")),
            batch_acks=True,
        )

    def _resync(self) -> None:
        """Send again from the outbox: clear the cursor and forget the in-memory messages."""
        self._cursor.clear()
        self._fresh.stop()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def emit(self, kind: str, type_: str, body: dict[str, Any], priority: int) -> None:
        self._new.append(NewMessage(kind, type_, body, priority))

    def event(self, type_: str, body: dict[str, Any]) -> None:
        self.emit("event", type_, body, PRIORITY_SECURITY)

    def request_stop(self, *_: Any) -> None:
        self._stop.set()
        self.queue.put(Wake("stop"))

    def request_reload(self, *_: Any) -> None:
        self._reload = True
        self.queue.put(Wake("reload"))

    # Signal handlers run on the main thread between two bytecodes, possibly while it holds the
    # queue's lock inside get(): they only set flags, which the loop reads at least once a second.
    def _on_sigterm(self, *_: Any) -> None:
        self._stop.set()

    def _on_sighup(self, *_: Any) -> None:
        self._reload = True

    def _close_attester(self) -> None:
        owner = getattr(self.attester, "__self__", None)  # the Attester (TPM session)
        if owner is not None and hasattr(owner, "close"):
            owner.close()

    # --- run ---------------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
            signal.signal(signal.SIGINT, self._on_sigterm)
            signal.signal(signal.SIGHUP, self._on_sighup)
        now = self.clock()
        self._due = {"metrics": now, "models": now}
        if self.e2e:
            self._due["resend"] = now + self.cfg.outbox.ack_timeout
        self.transport.start()
        if self.local is not None:
            self.local.start()
        self.event("agent.started", {"pending": self.outbox.count()})
        try:
            while not self._stop.is_set():
                self.turn()
            self._flush()
        finally:
            if self.local is not None:
                self.local.stop()
            self.transport.stop()
            try:
                self.commit(force=True)
            finally:
                self.outbox.close()
                self._close_attester()
        logger.info("agent stopped")
        return 0

    def turn(self, max_wait: float = 1.0) -> None:
        now = self.clock()
        wait = max(0.0, min([max_wait, *[t - now for t in self._due.values()]]))
        try:
            ev: object | None = (
                self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            )
        except queue.Empty:
            ev = None
        batch = 0
        while ev is not None:
            self.handle(ev)
            batch += 1
            if batch >= 1000:
                break
            try:
                ev = self.queue.get_nowait()
            except queue.Empty:
                ev = None
        if self._reload:
            self._reload = False
            self.reload()
        if not self._stop.is_set():  # no new reports while flushing on the way out
            self.run_timers(self.clock())
        for ack in self.transport.take_acks():  # PUBACKs below the signalling batch
            self.on_ack(ack)
        self.check_resend(self.clock())
        self.commit(force=self._stop.is_set())
        self.pump()

    def commit(self, *, force: bool = False) -> None:
        """Write this turn's new messages (one fsync) and record PUBACKs and backend acks.

        PUBACKs are gathered for up to :data:`ACK_DELAY` (or :data:`ACK_BATCH` of them): an
        update lost to a crash only re-sends a message the backend then drops by seq, and one
        transaction for many PUBACKs is much cheaper than one each. Deletes always go before new
        messages are stored, so eviction never counts an acknowledged message as dropped.
        """
        now = time.monotonic()
        e2e_new = self._e2e_seen > self._e2e_upto
        if self._acks and (force or self._new or e2e_new or len(self._acks) >= ACK_BATCH
                           or now - self._acked_at >= ACK_DELAY):
            acks, self._acks = self._acks, []
            self._acked_at = now
            if self.e2e:
                self.outbox.mark_delivered(acks)
            else:
                self.outbox.ack(acks)
        if self._refused:
            refused, self._refused = self._refused, []
            self.outbox.discard(refused, "refused by broker")
        if e2e_new:
            self.apply_e2e_ack()
        if self._new:
            new, self._new = self._new, []
            evictions = self.outbox.evictions
            for i in range(0, len(new), self.cfg.outbox.batch):
                kept: list[Stored] = []
                self.outbox.put(new[i : i + self.cfg.outbox.batch], keep=kept)
                self._fresh.add(kept)
            if self.outbox.evictions != evictions:  # may have evicted kept messages
                self._fresh.stop()
        if self.connected and self.outbox.has_drops:
            self.outbox.report_drops()
            self._fresh.stop()  # the report is read from the outbox

    def pump(self) -> None:
        if not self.connected:
            return
        room = self.cfg.outbox.window - len(self.inflight)
        if room <= 0:
            return
        now = self.clock()
        fresh = self._fresh.active
        if fresh:  # everything unsent is in memory
            todo = self._fresh.take(room)
        else:
            held = set(self.inflight.values()) if self.e2e else ()
            todo = self.outbox.pending(room, after=self._cursor, skip=held)
        gone: dict[str, list[int]] = {}
        done = len(todo)
        for i, m in enumerate(todo):
            expiry = None
            if m.priority == PRIORITY_METRICS:
                expiry = int(self.cfg.metrics.expiry - (now - m.ts))
                if expiry < 1:  # dropped and reported, so the backend's ack can pass it
                    gone.setdefault("expired", []).append(m.seq)
                    self._cursor[m.priority] = m.seq
                    continue
            t = self._topics.get(m.kind) or topic(self.cfg.device, m.kind)
            try:
                mid = self.transport.publish(t, m.payload, expiry=expiry)
            except PayloadTooLargeError as e:
                self.count("too_large")
                logger.error("dropping seq %d: %s", m.seq, e)
                gone.setdefault("too large", []).append(m.seq)
                self._cursor[m.priority] = m.seq
                continue
            if mid is None:
                done = i
                break
            self.inflight[mid] = m.seq
            self._cursor[m.priority] = m.seq
        if fresh:
            self._fresh.sent(done)
        elif done == len(todo) < room and not self.outbox.skipped:
            self._fresh.start()  # the outbox has nothing unsent above the cursor
        for reason, seqs in gone.items():
            self.outbox.discard(seqs, reason)

    def _flush(self) -> None:
        """SIGTERM: store what is queued and try to deliver the outbox for a few seconds."""
        deadline = time.monotonic() + FLUSH_TIMEOUT
        self.event("agent.stopping", {"pending": self.outbox.count() + len(self._new)})
        self.commit(force=True)
        while time.monotonic() < deadline and self.connected and self.outbox.count():
            self.turn(max_wait=0.05)
        left = self.outbox.count()
        if left:
            logger.info("stopping with %d messages in the outbox (sent on next start)", left)

    # --- events ------------------------------------------------------------------------------

    def handle(self, ev: object) -> None:
        if isinstance(ev, LocalEvent):  # the most frequent by far
            self.on_local(ev)
        elif isinstance(ev, AcksReady):
            for ack in self.transport.take_acks():
                self.on_ack(ack)
        elif isinstance(ev, Acked):
            self.on_ack(ev)
        elif isinstance(ev, Incoming):
            self.on_message(ev)
        elif isinstance(ev, Connected):
            self.connected = True
            logger.info("connected to broker")
            if self.e2e:  # a new broker session: send again all the backend has not acked
                self._resync()
            if self.ha is not None:
                self.ha.announce(self.transport)
        elif isinstance(ev, Disconnected):
            self.connected = False
            logger.info("disconnected from broker: %s", ev.reason)

    # --- timers ------------------------------------------------------------------------------

    def run_timers(self, now: float) -> None:
        if now >= self._due.get("metrics", now + 1):
            self._due["metrics"] = now + self.cfg.metrics.interval
            body = self.metrics.collect() if self.metrics is not None else {}
            st = self.outbox.stats()
            body["outbox"] = {"count": st.count, "bytes": st.bytes, "dropped": st.dropped_total,
                              "delivered": st.delivered}
            body["counters"] = dict(self.counters)
            self.emit("report", "metrics", body, PRIORITY_METRICS)
        if now >= self._due.get("models", now + 1):
            self._due["models"] = now + self.cfg.models.check_interval
            self.check_models(now)

    def check_resend(self, now: float) -> None:
        """Send again what the backend has not acknowledged within ``[outbox] ack_timeout``."""
        if now < self._due.get("resend", now + 1):
            return
        self._due["resend"] = now + self.cfg.outbox.ack_timeout / 2
        oldest = self.outbox.oldest_delivery()
        if oldest is not None and now - oldest >= self.cfg.outbox.ack_timeout:
            logger.warning("backend has not acknowledged messages delivered %.0fs ago; "
                           "sending again", now - oldest)
            self.count("e2e_resend")
            self._resync()

    def check_models(self, now: float, *, all_models: bool = False) -> None:
        if self.watch is None:
            return
        results = self.watch.check_all(now) if all_models else self.watch.poll(now)
        for r in results:
            if r.changed or all_models:
                self.event("model.verified" if r.ok else "model.rejected", r.body())
        if results and self.ha is not None:
            self.ha.update(self.transport, models_ok=all(v for v in self.watch.status().values()))

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        try:
            new = load_agent_config(self.cfg.source)
        except ConfigError as e:
            logger.error("reload refused, keeping the running configuration: %s", e)
            self.event("agent.reload_failed", {"reason": str(e)[:200]})
            return
        if new.device != self.cfg.device or new.outbox.path != self.cfg.outbox.path:
            logger.error("reload cannot change device.name or the outbox path; restart instead")
            self.event("agent.reload_failed", {"reason": "device.name or outbox.path changed"})
            return
        old = self.cfg
        self.cfg = new
        self.gate.trust = seams.command_trust(new)
        self.watch = seams.model_watch(new)
        if new.attester != old.attester:  # [device] keys or [attestation] changed
            self._close_attester()
            self.attester = seams.attester(new)
        self._due["models"] = self.clock()
        if new.mqtt != old.mqtt:
            logger.info("broker settings changed; reconnecting")
            self.transport.stop()
            self.connected = False
            self.inflight.clear()
            self._resync()  # the new client holds nothing: send everything again
            self.transport = self._make_transport()
            self.transport.start()
        self.event("agent.reloaded", {"config": str(new.source)})
        logger.info("configuration reloaded from %s", new.source)
