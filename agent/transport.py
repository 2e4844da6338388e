"""MQTT v5 over TLS with client certificates: the only module that imports paho.

:class:`MqttTransport` owns one paho client and one network thread. paho's callbacks do nothing
but hand small frozen events (:mod:`.events`: ``Connected``, ``Disconnected``, ``Acked``,
``Incoming``) to a ``sink`` (the agent loop's queue); all decisions are made in the loop.

Behaviour:

* TLS with a client certificate (mutual authentication) and broker verification (CA and host
  name) on by default; turning verification off needs an explicit ``insecure = true``.
* A retained ``online`` birth on the status topic after every CONNACK, and a retained
  ``offline`` last will (MQTT v5 §3.1.2.5); a clean stop publishes ``offline`` itself, since a
  normal DISCONNECT does not fire the will.
* Reconnect with exponential back-off and full jitter (:mod:`.backoff`), on our own network
  thread (paho's own retry has no jitter).
* Connection failures are logged at WARNING the first time and then at a falling rate (attempts
  1, 2, 4, 8, ...), each with what to do. A *first* connection that fails for a reason retrying
  cannot fix (the broker's certificate does not verify or does not name the host, the broker
  refuses this client's name or certificate), or with ``once`` for any reason, is not retried:
  the sink hears one :class:`~.events.ConnectFailed` and the daemon exits 3.
* paho keeps unacknowledged QoS 1 publishes across reconnects and sends them again with the same
  packet id, so a mid stays valid until its PUBACK arrives.

Errors from paho or ssl are translated into :class:`~edgeward.core.errors.TransportError`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeward.core.errors import ConfigError, TransportError

from .backoff import Backoff
from .config import MqttSettings
from .events import (
    Acked,
    AcksReady,
    Connected,
    ConnectFailed,
    Disconnected,
    Incoming,
    PayloadTooLargeError,
)

__all__ = ["ACK_SIGNAL_BATCH", "MqttTransport", "StatusTopic", "connect_failure"]

logger = logging.getLogger(__name__)


ACK_SIGNAL_BATCH = 32


@dataclass(frozen=True)
class StatusTopic:
    topic: str
    online: bytes = b"online"
    offline: bytes = b"offline"


Sink = Callable[[object], None]


# CONNACK reason codes (MQTT v5 §3.2.2.2) that the same client will get again on every try
PERMANENT_CONNACK = frozenset({"Not authorized", "Bad user name or password",
                               "Client identifier not valid", "Banned",
                               "Bad authentication method", "Unsupported protocol version"})


CLOSED_EARLY = "connection closed before the broker accepted it"


def connect_failure(error: BaseException | str, s: MqttSettings) -> tuple[str, str, bool]:
    """``(what failed, what to do, permanent)`` for a failed connection attempt: an exception
    from connect(), or the broker's CONNACK reason (a string). Pure."""
    where = f"broker {s.host}:{s.port}"
    if error == CLOSED_EARLY:  # TLS 1.3: a refused client certificate is an alert after it
        return (f"{where} closed the connection before accepting it",
                "if this repeats, the broker refuses this client certificate (revoked, expired "
                "or from another CA: see the broker's log) or [mqtt] port is not its TLS "
                "listener", False)
    if isinstance(error, str):
        what = f"{where} refused the connection: {error}"
        if error in PERMANENT_CONNACK:
            return (what, "register this client's certificate name with the broker "
                          "(deploy/broker-register) and check [mqtt] cert and client_id", True)
        return what, "the broker will be asked again", False
    if isinstance(error, ssl.SSLCertVerificationError):
        msg = str(getattr(error, "verify_message", "") or error)
        what = f"TLS handshake with {where} failed: {msg} (CERTIFICATE_VERIFY_FAILED)"
        if "mismatch" in msg.lower() or "hostname" in msg.lower():
            return (what, f"the broker's certificate does not name '{s.host}': set [mqtt] host "
                          "to a name in its SAN, or reissue the broker certificate with it", True)
        return (what, "set [mqtt] ca to the CA that issued the broker's certificate "
                      "(edgeward fleet ca issue)", True)
    if isinstance(error, ssl.SSLError):
        reason = str(getattr(error, "reason", "") or error)
        what = f"TLS handshake with {where} failed: {reason}"
        if ("ALERT" in reason.upper() and "CERTIFICATE" in reason.upper()) or "UNKNOWN_CA" in \
                reason.upper():
            return (what, "the broker refuses this client certificate: check that [mqtt] cert "
                          "and key were issued by the fleet CA the broker trusts", True)
        return what, "check that the broker speaks TLS on this port", False
    return (f"cannot reach {where}: {error}",
            "check that the broker runs and [mqtt] host and port", False)


def _tls_context(s: MqttSettings) -> ssl.SSLContext:
    try:
        cafile = str(s.ca) if s.ca else None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if s.cert is not None:
            ctx.load_cert_chain(str(s.cert), str(s.key) if s.key else None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load the MQTT TLS files (ca={s.ca}, cert={s.cert}, key={s.key}): {e}",
            hint="check the [mqtt] ca/cert/key paths",
        ) from e
    if s.insecure:
        logger.warning("MQTT broker verification is OFF (insecure = true)")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttTransport:
    """One MQTT v5 connection with its own network thread; see the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        sink: Sink,
        *,
        subscriptions: Sequence[str] = (),
        status: StatusTopic | None = None,
        backoff: Backoff | None = None,
        batch_acks: bool = False,
        once: bool = False,
    ) -> None:
        self.settings = settings
        self.once = once  # the first failure of any kind ends the first connection attempt
        self.failures = 0  # failed attempts since the last connection
        self.ever_connected = False
        self._refused: str | None = None  # the CONNACK's failure reason, for _run
        self._accepted = False  # this attempt got a CONNACK (paho may report the loss first)
        self._sink = sink
        self._subs = list(subscriptions)
        self._status = status
        self._backoff = backoff or Backoff(settings.backoff_base, settings.backoff_cap)
        self._stop = threading.Event()
        self._connected = threading.Event()
        # batch_acks: PUBACKs gather here and the sink hears one AcksReady per batch, so a
        # busy link wakes the loop once per batch rather than once per message
        self.batch_acks = batch_acks
        self._acks: list[Acked] = []
        self._acks_lock = threading.Lock()
        self._acks_signalled = False
        # messages handed to paho and not yet PUBACKed, so a busy link signals once per
        # ACK_SIGNAL_BATCH PUBACKs (or when nothing is left in flight) rather than per wake-up
        self._outstanding = 0
        self._thread: threading.Thread | None = None
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=settings.manual_ack,
        )
        self._gen = 0
        self.max_packet = 0  # 0: the broker announced no limit
        c.max_inflight_messages_set(settings.max_inflight)
        c.max_queued_messages_set(0)
        if settings.tls:
            c.tls_set_context(_tls_context(settings))
            if settings.insecure:
                c.tls_insecure_set(True)
        if status is not None:
            c.will_set(status.topic, status.offline, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    # --- paho callbacks: only hand events to the sink ---------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            return
        self._backoff.reset()
        self._accepted = True
        if self.failures:
            logger.warning("connected to broker %s:%d after %d failed attempts",
                           self.settings.host, self.settings.port, self.failures)
        self.failures = 0
        self.ever_connected = True
        self._gen += 1
        self.max_packet = int(getattr(props, "MaximumPacketSize", 0) or 0) if props else 0
        if self._status is not None:
            client.publish(self._status.topic, self._status.online, qos=1, retain=True)
        if self._subs:
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._subs])
        self._connected.set()
        self._sink(Connected(bool(getattr(flags, "session_present", False))))

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
        # A refused subscription is otherwise silent: nothing ever arrives (deploy/mosquitto.conf
        # refuses topics a client is not registered for; docs/AGENT.md, "Topics and the broker").
        refused = [f"{t} ({rc})" for t, rc in zip(self._subs, rcs, strict=False)
                   if rc.is_failure]
        if refused:
            logger.error("broker refused the subscription to %s: is this client registered "
                         "with the broker (deploy/broker-register)?", ", ".join(refused))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was:
            self._sink(Disconnected(str(rc)))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        ok = not rc.is_failure
        ack = Acked(mid, ok, "" if ok else str(rc))
        if not self.batch_acks:
            self._sink(ack)
            return
        with self._acks_lock:
            self._acks.append(ack)
            self._outstanding = max(0, self._outstanding - 1)
            if self._acks_signalled or (
                len(self._acks) < ACK_SIGNAL_BATCH and self._outstanding > 0
            ):
                return
            self._acks_signalled = True
        self._sink(AcksReady())

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._sink(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain), int(msg.mid),
                            int(msg.qos), self._gen))

    # --- API used by the loop ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("transport already started")
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        # paho writes to the socket from the calling thread unless it believes it runs its own
        # network thread; two threads writing one TLS stream corrupt it ("bad record mac").
        # Marking our thread as paho's makes publish() only queue the packet and wake our
        # select(), so only the network thread ever writes.
        self._client._thread = self._thread
        self._thread.start()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: int | None = None,
    ) -> int | None:
        """Hand one message to paho; return its mid, or None if it could not be queued.

        Raises :class:`PayloadTooLargeError` for a message over the broker's announced maximum
        packet size: sent anyway, the broker would drop the connection, and paho would resend
        the same message after every reconnect.
        """
        if self.max_packet and len(payload) + len(topic) + 64 > self.max_packet:
            raise PayloadTooLargeError(
                f"{len(payload)}-byte message on {topic} is over the broker's maximum packet size "
                f"{self.max_packet}"
            )
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = max(1, int(expiry))
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, OSError) as e:
            raise TransportError(f"publish to {topic} failed: {e}") from e
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            logger.warning("publish to %s not queued: %s", topic, mqtt.error_string(info.rc))
            return None
        if qos > 0:
            with self._acks_lock:
                self._outstanding += 1
        return int(info.mid)

    def take_acks(self) -> list[Acked]:
        """The PUBACKs gathered since the last call (``batch_acks`` mode).

        The loop also calls this on every turn, so PUBACKs below the signalling batch never
        wait longer than one turn (the in-flight count can be stale after a reconnect).
        """
        with self._acks_lock:
            if not self._acks and not self._acks_signalled:
                return []
            acks, self._acks = self._acks, []
            self._acks_signalled = False
        return acks

    def ack(self, msg: Incoming) -> None:
        """Acknowledge an incoming QoS 1 message (``manual_ack``), if its connection still is."""
        if self.settings.manual_ack and msg.qos > 0 and msg.conn == self._gen and self.connected:
            self._client.ack(msg.mid, msg.qos)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (if connected), disconnect, and join the network thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            self._thread = None

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- network thread ---------------------------------------------------------------------

    def _connect_properties(self) -> Properties | None:
        if not self.settings.session_expiry:
            return None
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = self.settings.session_expiry
        return p

    def _failed(self, error: BaseException | str) -> bool:
        """Log a failed attempt (falling rate); True: give up (see the module docstring)."""
        what, hint, permanent = connect_failure(error, self.settings)
        self.failures += 1
        if not self.ever_connected and (permanent or self.once):
            self._sink(ConnectFailed(f"{what}; {hint}"))
            return True
        n = self.failures
        level = logging.WARNING if n & (n - 1) == 0 else logging.DEBUG  # 1, 2, 4, 8, ...
        logger.log(level, "%s; %s (attempt %d; retrying with back-off)", what, hint, n)
        return False

    def _run(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            self._accepted = False
            try:
                self._client.connect(
                    s.host,
                    s.port,
                    keepalive=s.keepalive,
                    clean_start=s.clean_start,
                    properties=self._connect_properties(),
                )
            except (OSError, ssl.SSLError, ssl.CertificateError) as e:
                if self._failed(e):
                    return
                self._stop.wait(self._backoff.next_delay())
                continue
            while not self._stop.is_set():
                rc = self._client.loop(timeout=0.1)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._stop.is_set():
                self._goodbye()
                return
            # an accepted connection that was lost (paho's own callback may have cleared
            # _connected already) is not a failed attempt: it must neither lengthen the back-off
            # nor be reported as a broker refusing this client
            was = self._accepted or self._connected.is_set()
            self._on_disconnect(self._client, None, None, "connection lost", None)
            refused, self._refused = self._refused, None
            if refused is not None or not was:
                if self._failed(refused or CLOSED_EARLY):
                    return
            delay = self._backoff.next_delay()
            if was:
                logger.warning("lost the connection to broker %s:%d; retry in %.2fs",
                               s.host, s.port, delay)
            self._stop.wait(delay)

    def _goodbye(self) -> None:
        if self._connected.is_set() and self._status is not None:
            st = self._status
            info = self._client.publish(st.topic, st.offline, qos=1, retain=True)
            for _ in range(30):
                if info.is_published():
                    break
                self._client.loop(timeout=0.05)
        try:
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        except OSError:  # pragma: no cover - already closed
            pass
        self._connected.clear()
