"""The agent's one loop: every decision happens here, on one thread.

Sources hand small events (:mod:`.events`) to the agent's queue: the MQTT transport (connected,
disconnected, PUBACKs, incoming messages), the local socket (application events), signal
handlers (stop, reload). Timers schedule metrics and model re-verification. Each turn

1. takes every queued event (waiting at most until the next timer),
2. runs due timers,
3. carries out the delivery core's actions (:mod:`.delivery`): records PUBACKs and the
   backend's acks, writes all new messages to the outbox in one transaction (group commit: one
   fsync per turn, not per message),
4. publishes what the delivery core says may be sent.

:class:`Agent` takes its parts (outbox, command gate, metrics, model watch, attester, Home
Assistant, local socket), its transport and its clock as arguments; the composition root
(:mod:`.compose`) builds them from the configuration, and builds new ones on SIGHUP. The loop
does no parsing of its own: envelopes, commands and frames are checked by their pure cores, the
delivery state is the delivery core's, inputs are :mod:`.inputs`'.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgeward.core.errors import EdgewardError, TransportError

from .commands import Command, CommandGate
from .config import AgentConfig
from .delivery import EXPIRED, AckUpTo, Action, Delete, Delivery, Discard, MarkDelivered
from .envelope import BACKEND_ONLINE, PRIORITY_METRICS, PRIORITY_SECURITY, topic
from .events import (
    Acked,
    AcksReady,
    Connected,
    ConnectFailed,
    Disconnected,
    Incoming,
    PayloadTooLargeError,
    Wake,
)
from .inputs import Inputs
from .localsock import LocalEvent
from .outbox import NewMessage, Outbox, Stored
from .seams import Attester

logger = logging.getLogger(__name__)
# the daemon's own lines (connected and serving, reloaded, stopped): shown at INFO even when the
# command line leaves the level at WARNING (docs/AGENT.md, "What the agent logs")
daemon_log = logging.getLogger("edgeward.daemon")

FLUSH_TIMEOUT = 5.0


class Transport(Protocol):
    """What the loop needs of a transport (:class:`.transport.MqttTransport`, or a fake)."""

    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry: int | None = None) -> int | None: ...
    def take_acks(self) -> list[Acked]: ...


class Rebuild(Protocol):
    """The composition root, asked again on SIGHUP (:meth:`.compose.Root.reload`)."""

    def reload(self, old: AgentConfig, sink: Callable[[object], None]) -> tuple[AgentConfig, Any]:
        ...


@dataclass
class Parts:
    outbox: Outbox
    gate: CommandGate
    seq_path: Path  # the last accepted command seq
    metrics: Any = None  # .metrics.MetricsCollector
    watch: Any = None  # edgeward.models.watch.ModelWatch
    attester: Attester | None = None
    ha: Any = None  # .ha_discovery.HomeAssistant
    local: Any = None  # .localsock.LocalSocketServer
    hardware: Any = None  # edgeward.firmware_shim.wiring.HardwareParts (watchdog, lock links)
    ear_trust: Any = None  # the verifier's EAR keys ([attestation] verifier_key), not commands'


class Agent:
    """The device agent: the loop, timers, reload; see the module docstring."""

    def __init__(
        self,
        cfg: AgentConfig,
        parts: Parts,
        *,
        transport: Transport,
        clock: Callable[[], float],
        events: queue.SimpleQueue[object] | None = None,
        rebuild: Rebuild | None = None,
        once: bool = False,
    ) -> None:
        self.cfg = cfg
        self.once = once  # --once: connect, one round (timers, delivery), stop
        self.fatal: str | None = None  # why the agent stopped on its own (exit 3)
        self._served = False
        self.clock = clock
        # SimpleQueue: a C queue, several times cheaper per event than queue.Queue, and its put()
        # is reentrant, so a signal handler may call it while the loop holds the queue.
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue() if events is None else events
        self.outbox = parts.outbox
        self.metrics, self.watch = parts.metrics, parts.watch
        self.ha, self.local = parts.ha, parts.local
        self.hardware = parts.hardware
        self.transport = transport
        self.rebuild = rebuild
        self.counters: dict[str, int] = {}
        self.e2e = cfg.e2e
        if cfg.outbox.e2e_ack and not self.e2e:
            logger.warning("[outbox] e2e_ack needs [commands] trust to check the backend's acks; "
                           "messages leave the outbox at the broker's PUBACK")
        now = clock()
        self.delivery = Delivery(window=cfg.outbox.window, e2e=self.e2e,
                                 metrics_expiry=cfg.metrics.expiry,
                                 ack_timeout=cfg.outbox.ack_timeout,
                                 delivered_upto=self.outbox.delivered_upto(),
                                 counters=self.counters, now=now)
        self.inputs = Inputs(device=cfg.device, limits=cfg.limits, gate=parts.gate,
                             seq_path=parts.seq_path, clock=clock, counters=self.counters,
                             emit=self.emit, on_command=self.run_command,
                             on_backend_ack=self.delivery.on_backend_ack, e2e=self.e2e,
                             attester=parts.attester, notify=self._notify,
                             ear_trust=parts.ear_trust)
        self._topics = {k: topic(cfg.device, k) for k in ("report", "event", "attest/evidence")}
        self._new: list[NewMessage] = []
        self._stop = threading.Event()
        self._reload = False
        self._due: dict[str, float] = {}

    @property
    def connected(self) -> bool:
        return self.delivery.connected

    @property
    def attester(self) -> Attester | None:
        return self.inputs.attester

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def emit(self, kind: str, type_: str, body: dict[str, Any], priority: int) -> None:
        self._new.append(NewMessage(kind, type_, body, priority))

    def event(self, type_: str, body: dict[str, Any]) -> None:
        self.emit("event", type_, body, PRIORITY_SECURITY)

    def _notify(self, **state: Any) -> None:
        if self.ha is not None:
            self.ha.update(self.transport, **state)

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

    # --- run ---------------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
            signal.signal(signal.SIGINT, self._on_sigterm)
            signal.signal(signal.SIGHUP, self._on_sighup)
        now = self.clock()
        self._due = {"metrics": now, "models": now}
        self.transport.start()
        if self.local is not None:
            self.local.start()
        started: dict[str, object] = {"pending": self.outbox.count()}
        if self.hardware is not None:  # which firmware-shim backend drives this board
            started["hardware"] = self.hardware.backend
        self.event("agent.started", started)
        try:
            while not self._stop.is_set():
                self.turn()
            if self.fatal is None and not self.once:
                self._flush()
        finally:
            if self.local is not None:
                self.local.stop()
            self.transport.stop()
            try:
                self.commit(force=True)
            finally:
                self.outbox.close()
                _close_attester(self.attester)
                if self.hardware is not None:
                    self.hardware.close()  # the watchdog's magic close: a clean stop
        if self.fatal is not None:
            raise TransportError(f"agent {self.cfg.device} stopped: {self.fatal}")
        daemon_log.info("agent %s stopped", self.cfg.device)
        return 0

    def stop_fatal(self, why: str) -> None:
        """Stop without flushing: the broker will not take what the agent would send."""
        if self.fatal is None:
            self.fatal = why
        self._stop.set()

    def _once_done(self) -> bool:
        """--once: connected, the first timers ran, and every message is handed over and
        acknowledged by the broker."""
        d = self.delivery
        return (self.connected and not d.inflight and not self._new
                and not self.outbox.pending(1, after=d.cursor, skip=d.held()))

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
        now = self.clock()
        if not self._stop.is_set():  # no new reports while flushing on the way out
            self.run_timers(now)
        if self.hardware is not None:
            self.hardware.feed()  # the watchdog: a hung loop starves it and the board reboots
        for ack in self.transport.take_acks():  # PUBACKs below the signalling batch
            self.delivery.on_puback(ack.mid, ack.ok, ack.reason)
        refused = self.delivery.refused_outright
        if refused is not None:
            self.stop_fatal(
                f"the broker refuses every message from this device ({refused}); register "
                f"'{self.cfg.device}' with the broker (deploy/broker-register device "
                f"{self.cfg.device}), whose name must be the certificate's CN")
        if self.delivery.ack_check_due(now):
            self.delivery.check_ack_timeout(now, self.outbox.oldest_delivery())
        self.commit(force=self._stop.is_set())
        self.pump()
        if self.once and not self._stop.is_set() and self._served and self._once_done():
            daemon_log.info("--once: one round delivered")
            self._stop.set()

    def apply(self, actions: Sequence[Action]) -> None:
        """Carry out the delivery core's actions on the outbox, in order."""
        for a in actions:
            if isinstance(a, MarkDelivered):
                self.outbox.mark_delivered(a.seqs)
            elif isinstance(a, Delete):
                self.outbox.ack(a.seqs)
            elif isinstance(a, AckUpTo):
                self.count("e2e_acked", self.outbox.ack_upto(a.upto))
            elif isinstance(a, Discard):
                self.outbox.discard(a.seqs, a.reason)

    def commit(self, *, force: bool = False) -> None:
        """Record PUBACKs and backend acks, then store this turn's new messages (one fsync)."""
        d = self.delivery
        self.apply(d.record(self.clock(), force=force, storing=bool(self._new)))
        if self._new:
            new, self._new = self._new, []
            evictions = self.outbox.evictions
            size = self.cfg.outbox.batch
            for i in range(0, len(new), size):
                kept: list[Stored] = []
                self.outbox.put(new[i : i + size], keep=kept)
                d.on_stored(kept)
            if self.outbox.evictions != evictions:  # may have evicted kept messages
                d.on_outbox_changed()
        if d.connected and self.outbox.has_drops and d.may_report_drops:
            d.drop_report = self.outbox.report_drops()
            d.on_outbox_changed()  # the report is read from the outbox

    def pump(self) -> None:
        """Publish what the delivery core allows: from memory, or read from the outbox."""
        d = self.delivery
        room = d.room()
        if room <= 0:
            return
        todo = d.fresh(room)
        from_memory = todo is not None
        if todo is None:
            todo = self.outbox.pending(room, after=d.cursor, skip=d.held())
        now = self.clock()
        done = len(todo)
        for i, m in enumerate(todo):
            expiry = d.expiry(m, now)
            if expiry == EXPIRED:
                continue
            t = self._topics.get(m.kind) or topic(self.cfg.device, m.kind)
            try:
                mid = self.transport.publish(t, m.payload, expiry=expiry)
            except PayloadTooLargeError as e:
                logger.error("dropping seq %d: %s", m.seq, e)
                d.too_large(m)
                continue
            if mid is None:
                done = i
                break
            d.sent(m, mid)
        self.apply(d.batch_done(room=room, taken=len(todo), done=done, from_memory=from_memory,
                                skipped=0 if from_memory else self.outbox.skipped))

    def _flush(self) -> None:
        """SIGTERM: store what is queued and try to deliver the outbox for a few seconds."""
        deadline = self.clock() + FLUSH_TIMEOUT
        self.event("agent.stopping", {"pending": self.outbox.count() + len(self._new)})
        self.commit(force=True)
        while self.clock() < deadline and self.connected and self.outbox.count():
            self.turn(max_wait=0.05)
        left = self.outbox.count()
        if left:
            logger.info("stopping with %d messages in the outbox (sent on next start)", left)

    # --- events ------------------------------------------------------------------------------

    def handle(self, ev: object) -> None:
        if isinstance(ev, LocalEvent):  # the most frequent by far
            self.inputs.on_local(ev)
        elif isinstance(ev, AcksReady):
            for ack in self.transport.take_acks():
                self.delivery.on_puback(ack.mid, ack.ok, ack.reason)
        elif isinstance(ev, Acked):
            self.delivery.on_puback(ev.mid, ev.ok, ev.reason)
        elif isinstance(ev, Incoming):
            if ev.topic == BACKEND_ONLINE:  # a worker is back: resend what it has not acked
                self.delivery.on_backend_online(self.clock(), retained=ev.retain)
            else:
                self.inputs.on_message(ev)
        elif isinstance(ev, Connected):
            m = self.cfg.mqtt
            if not self._served:
                daemon_log.info("agent %s connected to broker %s:%d; serving", self.cfg.device,
                                m.host, m.port)
                self._served = True
            else:
                logger.info("connected to broker")
            self.delivery.on_connect()
            if self.ha is not None:
                self.ha.announce(self.transport)
        elif isinstance(ev, Disconnected):
            self.delivery.on_disconnect()
            logger.info("disconnected from broker: %s", ev.reason)
        elif isinstance(ev, ConnectFailed):
            self.stop_fatal(ev.message)

    def run_command(self, cmd: Command, now: float) -> None:
        """An accepted command (signature, device, freshness and seq checked by the gate)."""
        if cmd.op == "attest":
            self.event("attest.request", {"reason": "command"})
        elif cmd.op == "reverify":
            self.check_models(now, all_models=True)
        elif cmd.op == "set_interval":
            self.cfg = self.cfg.with_interval(float(cmd.args["seconds"]))
            self._due["metrics"] = now

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

    def check_models(self, now: float, *, all_models: bool = False) -> None:
        if self.watch is None:
            return
        results = self.watch.check_all(now) if all_models else self.watch.poll(now)
        for r in results:
            if r.changed or all_models:
                self.event("model.verified" if r.ok else "model.rejected", r.body())
        if results:
            self._notify(models_ok=all(v for v in self.watch.status().values()))

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: the whole file again, and new parts from it (:meth:`.compose.Root.reload`);
        on a bad file the running configuration stays, and the log and an event say why."""
        if self.rebuild is None:
            logger.error("reload asked, but this agent was built without a composition root")
            return
        try:
            new, fresh = self.rebuild.reload(self.cfg, self.queue.put)
        except EdgewardError as e:
            logger.error("reload refused, keeping the running configuration: %s", e)
            self.event("agent.reload_failed", {"reason": str(e)[:200]})
            return
        self.cfg = new
        gate, inputs, d = self.inputs.gate, self.inputs, self.delivery
        gate.trust, gate.max_skew, gate.limits = fresh.trust, new.commands.max_skew, new.limits
        inputs.limits = new.limits
        inputs.ear_trust = fresh.ear_trust
        d.window, d.metrics_expiry, d.ack_timeout = (new.outbox.window, new.metrics.expiry,
                                                     new.outbox.ack_timeout)
        self.outbox.max_bytes = new.outbox.max_bytes  # the bound applies from the next put
        self.watch, self.metrics, self.ha = fresh.watch, fresh.metrics, fresh.ha
        if fresh.attester_changed:
            _close_attester(self.attester)
            inputs.attester = fresh.attester
        self._due["models"] = self.clock()
        if fresh.transport is not None:
            logger.info("broker settings changed; reconnecting")
            self.transport.stop()
            d.on_new_transport()
            self.transport = fresh.transport
            self.transport.start()
        self.event("agent.reloaded", {"config": str(new.source)})
        daemon_log.info("configuration reloaded from %s", new.source)


def _close_attester(attester: Attester | None) -> None:
    if attester is not None:
        attester.close()  # its TPM session (seams.Attester)
