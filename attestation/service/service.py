"""The verifier service: one worker of ``edgeward verifier run --config VERIFIER.toml``.

A worker subscribes through MQTT v5 shared subscriptions (``$share/<group>/edgeward/v1/+/...``),
so the broker gives each message to one worker of the group and the backend grows by adding
workers. For every message it

* decodes the envelope (bounded; malformed, oversized or spoofed ones are logged and counted),
* records it in the fleet store, keyed by ``(device, seq)`` (duplicates are dropped there), and
  only then acknowledges it to the broker (manual PUBACK: a worker killed between delivery and
  storage does not lose the message),
* on ``attest.evidence``: has it appraised exactly once (the store's ``appraisals`` key) by the
  attestation part's appraiser, and publishes the signed EAR on ``attest/result``,
* on ``outbox.dropped``: records the ranges, so gap analysis can tell reported drops from loss,
* on ``attest.request``, ``model.rejected`` or a device coming online: challenges it now,
* once subscribed, on every connection: publishes the retained backend presence
  (``edgeward/v1/@backend/online``), so devices that sent their backlog while no worker was
  subscribed (after a broker restart) send it again now (docs/SCALE.md),
* on ``app.anomaly`` (the inference guard's warnings): feeds the fleet early warning
  (:mod:`.early_warning`); a ``fleet.early_warning`` it raises is stored under the pseudo-device
  ``@fleet`` (a name no device can have) and logged,
* after storing (also after a duplicate, which says the device has not heard our ack): publishes,
  at most once per ``ack_interval`` per device, a signed, retained end-to-end ack on
  ``edgeward/v1/<device>/ack`` naming the highest seq up to which every message is stored or
  reported dropped (:mod:`edgeward.agent.e2eack`); only then does the device delete them. Without
  a command key no acks are sent (devices then keep PUBACK semantics, ``e2e_ack = false``).

Challenges are also issued on a per-device schedule; each due slot is claimed by exactly one
worker through the store, at most ``challenge_rate`` per second per worker (a mass reconnect
makes every device due at once: the rest stay due and go out in the next ticks). Commands are
signed with the backend key (:meth:`send_command`).

paho callbacks hand events to :attr:`queue`; everything else runs on the worker's loop thread.

Group commit: the loop takes the events already queued, and those arriving within
``[service] commit_delay`` (at most :data:`COMMIT_BATCH`), and handles them in one transaction
per store (one fsync each with ``synchronous=FULL``). What answers for them (PUBACKs, EARs,
challenges) is held back until those commits are done; if a commit fails, none of it is sent and
the broker delivers the messages again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgeward.agent.commands import make_command
from edgeward.agent.e2eack import make_ack
from edgeward.agent.envelope import BACKEND_ONLINE, Envelope, decode, parse_topic, topic
from edgeward.agent.events import Connected, ConnectFailed, Disconnected, Incoming
from edgeward.agent.transport import MqttTransport
from edgeward.attestation.text import safe
from edgeward.core import cbor
from edgeward.core.errors import ConfigError, EdgewardError, MalformedInputError, TransportError
from edgeward.core.fileio import OPERATOR, read_bounded

from .config import ServiceConfig
from .early_warning import EarlyWarning, FleetEvent
from .observe import HealthServer, WorkerMetrics
from .store import open_fleet_store
from .watch import FleetWatch, WatchEvent

logger = logging.getLogger(__name__)
daemon_log = logging.getLogger("edgeward.daemon")  # connected and serving, reloaded, stopped
ONCE_QUIET = 1.0  # --once: the round ends when nothing has arrived for this long
ONCE_MAX = 30.0  # ... or this long after connecting

UP_KINDS = ("status", "report", "event", "attest/evidence")
# events after which the device is challenged at once (its state may have changed)
RECHALLENGE_ON = frozenset({"attest.request", "model.rejected"})


SATURATED = 0.1  # a worker idle less than this share of a tick is behind: no scheduled challenges
COMMIT_BATCH = 256  # events handled under one commit at most
FLEET = "@fleet"  # the store's device name for fleet events (not a valid device name)
WORKER_PREFIX = "edgeward-verifier"
MAX_PEM_BYTES = 64 * 1024  # a certificate (chain) in PEM
REFUSALS = frozenset({"duplicates", "malformed", "oversized", "spoofed", "wrong_topic", "errors",
                      "crashes"})  # counters that are also edgeward_verifier_refused{reason}


def worker_client_id(cert: Path | None, configured: str) -> str:
    """The worker's MQTT client id: its certificate's name, which the broker enforces.

    deploy/mosquitto.conf makes every client's id its certificate CN, so a worker's session
    (and the share of the shared subscription queued for it while it restarts) is found again
    after any restart. A worker certificate must be named ``edgeward-verifier`` or
    ``edgeward-verifier-<worker>``: names the fleet CA never gives a device, so no device can
    take a worker's id.
    """
    if cert is None:
        return configured
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    pem = read_bounded(cert, MAX_PEM_BYTES, what="worker certificate", faults=OPERATOR)
    try:
        names = x509.load_pem_x509_certificate(pem).subject \
            .get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as e:
        raise ConfigError(f"cannot read the worker certificate {cert}: {e}") from e
    cn = str(names[0].value) if names else ""
    if cn != WORKER_PREFIX and not cn.startswith(WORKER_PREFIX + "-"):
        raise ConfigError(
            f"worker certificate {cert} is named {cn!r}, not {WORKER_PREFIX}-<worker>",
            hint="issue each worker a certificate with CN edgeward-verifier-<worker> and "
                 "register it with deploy/broker-register worker",
        )
    return cn


class Appraiser(Protocol):
    """What the attestation part provides to the service (edgeward.attestation)."""

    def challenge(self, device: str, now: float) -> bytes: ...

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]: ...


class VerifierService:
    def __init__(
        self,
        cfg: ServiceConfig,
        *,
        appraiser: Appraiser | None = None,
        command_key: Any = None,
        clock: Callable[[], float] = time.time,
        transport: Any = None,
        once: bool = False,
        rebuild: Callable[[ServiceConfig], tuple[ServiceConfig, Any, Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.once = once
        self.rebuild = rebuild  # SIGHUP: (config, appraiser, command key) from the file again
        self.fatal: str | None = None
        self._reload = False
        self._served = False
        self._served_at = 0.0
        self._last_event = 0.0
        self.clock = clock
        self.limits = cfg.limits  # VERIFIER.toml [limits], as for the appraisal
        self.appraiser = appraiser
        self.command_key = command_key
        self.store = open_fleet_store(cfg.store, cfg.postgres, worker=cfg.worker)
        # SimpleQueue: a C queue, several times cheaper per event than queue.Queue, and its put()
        # is reentrant, so a signal handler may call it while the loop holds the queue.
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.counters: dict[str, int] = {}
        self._stop = threading.Event()
        self._ack_due: dict[str, bool] = {}  # device -> re-send even if unchanged (a duplicate)
        self._ack_last: dict[str, tuple[float, int]] = {}  # device -> (when, upto) last sent
        self._challenge_tokens = max(cfg.challenge_rate, 1.0)  # see _challenge_budget
        self._challenge_at: float | None = None
        self.looping = False  # run() measures how busy the loop is (not when driven by tests)
        self.idle = 0.0  # seconds the loop waited for a message since the last tick
        self._idle_since = time.monotonic()
        self.early_warning = EarlyWarning(cfg.early_warning) if cfg.early_warning.enabled else None
        self.watch = FleetWatch(cfg.watch)  # fleet.gap, fleet.contraindicated, fleet.silent
        self.metrics = WorkerMetrics()  # [metrics]: no-op unless a port is set
        if cfg.metrics.port:
            self.metrics.enable(cfg.worker, self.queue.qsize)
        if command_key is None:
            logger.warning("no [commands] key: no end-to-end acks; devices must set "
                           "[outbox] e2e_ack = false or they keep every message")
        prefix = f"$share/{cfg.shared_group}/" if cfg.shared_group else ""
        # a transport handed in (pair tests: a link with no broker) or one built here; its
        # client id is the worker certificate's name, as the broker makes it
        self.transport = transport or MqttTransport(
            dataclasses.replace(cfg.mqtt, client_id=worker_client_id(cfg.mqtt.cert,
                                                                     cfg.mqtt.client_id)),
            self.queue.put,
            subscriptions=[f"{prefix}edgeward/v1/+/{k}" for k in UP_KINDS],
            once=once,
        )

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
        if name in REFUSALS:
            self.metrics.refused(name)

    def request_stop(self, *_: Any) -> None:
        self._stop.set()
        self.queue.put(None)

    def on_signal(self, *_: Any) -> None:
        """Signal handler: only a flag (the loop may hold the queue's lock); seen within a tick."""
        self._stop.set()

    def on_sighup(self, *_: Any) -> None:
        """SIGHUP handler: only a flag; the loop reloads within a tick (:meth:`reload`)."""
        self._reload = True

    def reload(self) -> None:
        """The whole file again: new reference values, policy, enrollment and limits (a new
        appraiser), command key and [service] timers. The broker connection, the fleet store,
        the worker name and the shared group stay until restart (a warning says so); a bad
        file keeps the running configuration and the log says why."""
        if self.rebuild is None:
            logger.error("reload asked, but this worker was started without a configuration "
                         "file to read again")
            return
        old = self.cfg
        try:
            new, appraiser, key = self.rebuild(old)
        except EdgewardError as e:
            logger.error("reload refused, keeping the running configuration: %s", e)
            return
        kept = [name for name, a, b in (
            ("[mqtt]", old.mqtt, new.mqtt), ("[service] store", old.store, new.store),
            ("[store]", old.postgres, new.postgres),
            ("[service] worker", old.worker, new.worker),
            ("[service] shared_group", old.shared_group, new.shared_group)) if a != b]
        if kept:
            logger.warning("%s changed: kept until restart", ", ".join(kept))
        self.cfg = dataclasses.replace(new, mqtt=old.mqtt, store=old.store, postgres=old.postgres,
                                       worker=old.worker,
                                       shared_group=old.shared_group)
        self.limits = new.limits
        old_appraiser, self.appraiser = self.appraiser, appraiser
        if old_appraiser is not None and old_appraiser is not appraiser and \
                hasattr(old_appraiser, "close"):
            old_appraiser.close()
        self.command_key = key
        applied = ("reference values, policy and enrollment" if appraiser is not None
                   else "no [verifier] table: evidence not appraised")
        daemon_log.info("configuration reloaded from %s: %s; [limits]; [commands] key %s; "
                        "[service] timers", new.source, applied,
                        "set" if key is not None else "none")

    def run(self) -> int:
        health = HealthServer(self.cfg.metrics, self.metrics) if self.metrics.enabled else None
        self.transport.start()
        if health is not None:
            health.start()
            logger.info("metrics and health on http://%s:%d/metrics and /health",
                        self.cfg.metrics.host, health.port)
        self.looping = True
        next_tick = self.clock()
        try:
            while not self._stop.is_set():
                self.metrics.last_turn = time.monotonic()
                try:
                    wait = max(0.0, min(self.cfg.tick, next_tick - self.clock()))
                    if self._ack_due:
                        wait = min(wait, self.cfg.ack_interval / 2)
                    waited = time.monotonic()
                    ev = self.queue.get(timeout=wait)
                except queue.Empty:
                    ev = None
                self.idle += time.monotonic() - waited
                if ev is not None:
                    self._last_event = self.clock()
                    self.handle_group(self._gather(ev))
                if self._reload:
                    self._reload = False
                    self.reload()
                if self._ack_due:
                    self.send_acks(self.clock())
                if self.clock() >= next_tick:
                    next_tick = self.clock() + self.cfg.tick
                    self.tick(self.clock())
                if self.once and self._served and self._once_done():
                    self.tick(self.clock())
                    self.send_acks(self.clock() + self.cfg.ack_interval)
                    daemon_log.info("--once: one round done")
                    break
        finally:
            if health is not None:
                health.stop()
            self.transport.stop()
            self.store.close()
        if self.fatal is not None:
            raise TransportError(f"verifier worker {self.cfg.worker} stopped: {self.fatal}")
        daemon_log.info("verifier worker %s stopped", self.cfg.worker)
        return 0

    def _once_done(self) -> bool:
        now = self.clock()
        return now - self._last_event >= ONCE_QUIET or now - self._served_at >= ONCE_MAX

    # --- incoming ----------------------------------------------------------------------------

    def _gather(self, first: object) -> list[object]:
        """``first``, the events queued behind it and those arriving within ``commit_delay``."""
        events = [first]
        deadline = time.monotonic() + self.cfg.commit_delay
        while len(events) < COMMIT_BATCH:
            left = deadline - time.monotonic()
            try:
                ev = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if ev is None:  # a stop request: handle what came before it
                self.queue.put(None)
                break
            events.append(ev)
        return events

    def handle_group(self, events: list[object]) -> None:
        """Handle ``events`` under one commit per store; then send what answers for them."""
        held = _AfterCommit(self.transport)
        self.transport = held
        try:
            with self._group():
                for ev in events:
                    self.handle(ev)
        except EdgewardError as e:  # the commit: nothing was stored, so nothing is answered
            self.count("errors")
            logger.error("%d message(s) not stored: %s", len(events), safe(e, 200))
            return
        finally:
            self.transport = held.inner
        held.send()

    @contextlib.contextmanager
    def _group(self) -> Any:
        # SQLite stores group their commits; a store without group() (PostgreSQL) commits
        # each transaction as before
        store_group = getattr(self.store, "group", None)
        appraiser_group = getattr(self.appraiser, "group", None)
        with (store_group() if store_group is not None else contextlib.nullcontext()), \
                (appraiser_group() if appraiser_group is not None else contextlib.nullcontext()):
            yield  # the verifier's store commits first, then the fleet store

    def handle(self, ev: object) -> None:
        if isinstance(ev, ConnectFailed):
            self.fatal = ev.message
            self._stop.set()
            return
        if isinstance(ev, Disconnected):
            self.metrics.connected = False
        if isinstance(ev, Connected):
            self.metrics.connected = True
            # subscribed (the SUBSCRIBE went first on this connection): devices that hear this
            # send again what we have not acknowledged (agent/delivery.py, BACKEND_SETTLE)
            self.transport.publish(BACKEND_ONLINE, self.cfg.worker.encode()[:64], retain=True)
            if not self._served:
                m = self.cfg.mqtt
                daemon_log.info("verifier worker %s connected to broker %s:%d; serving",
                                self.cfg.worker, m.host, m.port)
                self._served, self._served_at = True, self.clock()
            else:
                logger.info("worker %s connected", self.cfg.worker)
        if not isinstance(ev, Incoming):
            return
        try:
            self.on_message(ev)
        except EdgewardError as e:
            self.count("errors")
            logger.error("message on %s not processed: %s", safe(ev.topic), safe(e, 200))
            return  # not acknowledged: the broker redelivers it on reconnect
        except Exception as e:  # any message, however hostile, must not stop the worker
            self.count("crashes")
            logger.exception("message on %s could not be processed (%s: %s); skipped",
                             safe(ev.topic), type(e).__name__, safe(e, 200))
        self.transport.ack(ev)

    def on_message(self, msg: Incoming) -> None:
        now = self.clock()
        try:
            device, kind = parse_topic(msg.topic)
        except MalformedInputError as e:
            self.count("wrong_topic")
            logger.warning("ignoring: %s", e)
            return
        if kind == "status":
            status = msg.payload.decode("ascii", "replace")[:16]
            self.store.seen(device, now, status)
            if status == "online" and self.cfg.challenge_on_connect:
                self.store.schedule_challenge(device, now)
            return
        if kind not in UP_KINDS:
            self.count("wrong_topic")
            return
        if len(msg.payload) > self.limits.max_cbor_bytes:
            self.count("oversized")
            logger.warning("dropping %d-byte message from %s", len(msg.payload), device)
            return
        try:
            env = decode(msg.payload, limits=self.limits)
        except MalformedInputError as e:
            self.count("malformed")
            logger.warning("malformed envelope from %s: %s", device, e)
            return
        if env.device != device:
            self.count("spoofed")
            logger.warning("envelope for %s arrived on %s's topic", env.device, device)
            return
        high = self.store.highest(device)
        t0 = time.perf_counter()
        new = self.store.record(env, now)
        self.metrics.store_time("record", time.perf_counter() - t0)
        if not new:
            self.count("duplicates")
            self._ack_due[device] = True
            return
        self._ack_due.setdefault(device, False)
        self.metrics.message(env.type)
        self.watch.on_stored(device, env.seq, high, now)
        if env.seq > high + 1:
            logger.debug("device %s: seq %d -> %d (gap or reordering)", device, high, env.seq)
        self.on_envelope(env, now)

    def on_envelope(self, env: Envelope, now: float) -> None:
        if env.type == "outbox.dropped":
            ranges = env.body.get("ranges", [])
            ok = [(r[0], r[1]) for r in (ranges if isinstance(ranges, list) else [])
                  if isinstance(r, list) and len(r) == 2 and isinstance(r[0], int)
                  and isinstance(r[1], int) and 0 < r[0] <= r[1] < env.seq]
            self.store.record_drops(env.device, ok, env.seq)
        elif env.type in RECHALLENGE_ON:
            self.issue_challenge(env.device, now)
        elif env.type == "attest.evidence":
            self.on_evidence(env, now)
        elif env.type == "app.anomaly" and self.early_warning is not None:
            self.on_fleet_events(self.early_warning.observe(env.device, env.body, now), now)

    def on_fleet_events(self, events: list[FleetEvent], now: float) -> None:
        for ev in events:
            self.store.record(Envelope(seq=self.store.highest(FLEET) + 1, ts=now, device=FLEET,
                                       type=ev.type, body=ev.body()), now)
            self.count("fleet_warnings")
            self.metrics.fleet_event(ev.type)
            logger.warning("fleet early warning: model %s version %r: %.2f devices warning per "
                           "window vs %.2f baseline, %d devices: %s", safe(ev.model),
                           safe(ev.version), ev.rate, ev.baseline, ev.devices_total,
                           ", ".join(ev.devices[:10]))

    def on_evidence(self, env: Envelope, now: float) -> None:
        eat = env.body.get("eat")
        if not isinstance(eat, bytes):
            self.count("malformed")
            return
        if not self.store.claim_appraisal(env.device, env.seq, now):
            self.count("duplicates")
            return
        if self.appraiser is None:
            self.store.finish_appraisal(env.device, env.seq, "unappraised", None)
            logger.warning("evidence from %s not appraised: no appraiser configured", env.device)
            return
        t0 = time.perf_counter()
        try:
            ear, status = self.appraiser.appraise(env.device, eat, now)
        except EdgewardError as e:
            logger.warning("evidence from %s refused: %s", env.device, safe(e, 200))
            ear, status = b"", "refused"
        except Exception as e:  # hostile evidence: recorded as contraindicated, next message
            logger.exception("evidence from %s could not be appraised (%s: %s); recorded as "
                             "contraindicated", env.device, type(e).__name__, safe(e, 200))
            ear, status = b"", "contraindicated"
        self.metrics.appraised(time.perf_counter() - t0, status)
        self.store.finish_appraisal(env.device, env.seq, status, ear or None)
        self.count("appraised")
        failed = self.watch.appraised(env.device, env.seq, status)
        if failed is not None:
            self.raise_event(failed, now)
        if ear:
            self.transport.publish(topic(env.device, "attest/result"), ear)
        logger.info("device %s attestation: %s", env.device, status)

    # --- fleet events of the backend's own (.watch) ------------------------------------------

    def raise_event(self, ev: WatchEvent, now: float) -> None:
        """Store ``ev`` under ``@fleet`` (the next free seq: another worker may take one first)."""
        env = Envelope(seq=0, ts=now, device=FLEET, type=ev.type, body=ev.body())
        for _ in range(10):
            env = dataclasses.replace(env, seq=self.store.highest(FLEET) + 1)
            if self.store.record(env, now):
                break
        self.count(ev.type)
        self.metrics.fleet_event(ev.type)
        logger.warning("fleet event %s: device %s %s", ev.type, safe(ev.device), ev.detail)

    def watch_tick(self, now: float) -> None:
        """Probe the store (health), then raise due gap and silent-device events."""
        try:
            t0 = time.perf_counter()
            for device, first, last in self.watch.gaps_due(now):
                ev = self.watch.gap_event(device, first, last, self.store.gaps(device))
                if ev is not None:
                    self.raise_event(ev, now)
            if self.watch.scan_due(now):
                self.watch.reported(m[-1] for m in self.store.events_after(
                    0, since=None, types=("fleet.silent",), skip=(), device=FLEET,
                    limit=10_000, newest=True))
                for ev in self.watch.silent([r[:3] for r in self.store.device_rows()], now):
                    self.raise_event(ev, now)
            self.store.highest(FLEET)
            self.metrics.store_time("probe", time.perf_counter() - t0)
        except EdgewardError as e:
            if self.metrics.store_ok:
                logger.error("fleet store failing: %s", safe(e, 200))
            self.metrics.store_ok, self.metrics.store_error = False, safe(e, 200)
            return
        self.metrics.store_ok = True

    # --- end-to-end acks ---------------------------------------------------------------------

    def send_acks(self, now: float) -> None:
        """Publish the end-to-end acks that are due (see the module docstring)."""
        if self.command_key is None:
            self._ack_due.clear()
            return
        for device, again in list(self._ack_due.items()):
            when, last = self._ack_last.get(device, (float("-inf"), 0))
            if now - when < self.cfg.ack_interval:
                continue
            del self._ack_due[device]
            upto = self.store.contiguous(device)
            if upto == 0 or (upto == last and not again):
                continue
            self.transport.publish(topic(device, "ack"),
                                   make_ack(self.command_key, device, upto, now=now), retain=True)
            self._ack_last[device] = (now, upto)
            self.count("acks")

    # --- outgoing ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.early_warning is not None:
            self.on_fleet_events(self.early_warning.advance(now), now)
        self.watch_tick(now)
        for device in self.store.claim_due_challenges(now, self.cfg.challenge_interval,
                                                      limit=self._challenge_budget(now)):
            self.issue_challenge(device, now)
            self._challenge_tokens -= 1

    def _challenge_budget(self, now: float) -> int:
        """Scheduled challenges this tick may send: a token bucket at ``challenge_rate`` per
        second holding at most one second's worth, so a mass reconnect is spread, not burst."""
        rate = self.cfg.challenge_rate
        last, self._challenge_at = self._challenge_at, now
        if last is not None:
            self._challenge_tokens = min(max(rate, 1.0),
                                         self._challenge_tokens + max(0.0, now - last) * rate)
        busy = self._saturated()
        return 0 if busy else int(self._challenge_tokens)

    def _saturated(self) -> bool:
        """True when the loop was idle under ``SATURATED`` of the time since the last tick:
        messages are waiting (at the broker, for this worker), so evidence asked for now would
        queue behind them and might outlive its nonce. Scheduled challenges wait (they stay due)
        until the worker catches up; challenges a device asks for are not held back."""
        now, since = time.monotonic(), self._idle_since
        idle, self.idle, self._idle_since = self.idle, 0.0, now
        return self.looping and now - since > 0.05 and idle < SATURATED * (now - since)

    def issue_challenge(self, device: str, now: float) -> None:
        if self.appraiser is None:
            return
        try:
            nonce = self.appraiser.challenge(device, now)
        except EdgewardError as e:
            logger.warning("no challenge for %s: %s", device, e)
            return
        self.transport.publish(topic(device, "attest/challenge"), cbor.dumps({"nonce": nonce}),
                               expiry=60)
        self.count("challenges")

    def send_command(self, device: str, op: str, args: dict[str, Any] | None = None) -> int:
        """Sign and publish one command; returns its seq."""
        if self.command_key is None:
            raise RuntimeError("no [commands] key configured")
        seq = self.store.next_command_seq(device)
        data = make_command(self.command_key, device, seq, op, args, now=self.clock(),
                            ttl=self.cfg.command_ttl)
        self.transport.publish(topic(device, "cmd"), data)
        return seq


class _AfterCommit:
    """The transport while a group is open: acks and publishes wait for its commit."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def publish(self, *args: Any, **kw: Any) -> None:
        self.held.append((self.inner.publish, args, kw))

    def ack(self, *args: Any, **kw: Any) -> None:
        self.held.append((self.inner.ack, args, kw))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send(self) -> None:
        for fn, args, kw in self.held:
            fn(*args, **kw)
        self.held.clear()
