"""The load benchmark's devices: one MQTT v5 TLS connection per device identity, one thread.

Each simulated device is a paho client with its own TLS client certificate (so the broker knows
it by its certificate's name and enforces the shipped device ACL: it can only publish under its
own ``edgeward/v1/<device>/``), its own gap-free ``seq``, its retained ``online`` birth and
``offline`` last will, and a subscription to its own ``attest/challenge``. All clients share one
thread: paho's external-loop API (``loop_read``/``loop_write``/``loop_misc``) on an epoll
selector, as thousands of paho threads would not fit on two cores.

What a device does here: reports (a real agent metrics body, collected once on this host and
reused), ``attest.request`` events at the attestation rate, and evidence answering each
challenge, signed by its own key (:class:`fleet_kit.Evidence`). A configurable share of its
traffic is hostile (:meth:`Fleet.hostile`): a replayed report (same seq, same bytes), a replayed
evidence token (an old nonce) under a new seq, evidence with a forged signature under a new seq,
and malformed CBOR. What it does not do: keep a durable outbox, resend on its own, or check acks
and EARs (the agent's own benchmarks cover that path).

I/O: sockets to the broker.
"""

from __future__ import annotations

import random
import selectors
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from fleet_kit import Evidence, Kit, device_name, forged

from edgeward.agent.envelope import encode_fields, topic
from edgeward.agent.seams import parse_challenge
from edgeward.core.limits import DEFAULT_LIMITS

REPLAY_AFTER = 5.0  # s: an evidence token is replayed only after its original was appraised
HOSTILE_KINDS = ("replay_report", "replay_evidence", "forged_evidence", "malformed")


class Device:
    __slots__ = ("client", "connected", "eat_at", "i", "last_eat", "last_report", "name", "seq",
                 "sock", "start")

    def __init__(self, i: int) -> None:
        self.i = i
        self.name = device_name(i)
        self.seq = 0
        self.client: Any = None
        self.sock: Any = None
        self.connected = False
        self.last_report: bytes | None = None
        self.last_eat: bytes | None = None
        self.eat_at = 0.0
        self.start = time.time()


class Fleet:
    def __init__(self, kit: Kit, count: int, port: int, ca: str, body: dict[str, Any], *,
                 hostile: float = 0.0, seed: int = 1, keepalive: int = 120) -> None:
        self.kit = kit
        self.port = port
        self.ca = ca
        self.body = body
        self.hostile_share = hostile
        self.keepalive = keepalive
        self.rng = random.Random(seed)
        self.evidence = Evidence(kit)
        self.devices = [Device(i) for i in range(count)]
        self.sel = selectors.DefaultSelector()
        # what was sent: (device, seq) -> type, and the hostile messages by kind
        self.sent: dict[tuple[str, int], str] = {}
        self.hostile_sent: dict[str, list[tuple[str, int]]] = {k: [] for k in HOSTILE_KINDS}
        self.challenges = 0
        self.evidence_sent: dict[tuple[str, int], float] = {}  # legit evidence -> sent at
        self.publish_errors = 0
        # published and not yet PUBACKed by the broker: (device index, mid) -> (device, seq)
        self.unacked: dict[tuple[int, int], tuple[str, int]] = {}
        self.disconnects = 0
        self.closing = False

    # --- connections ---------------------------------------------------------------------------

    def connect(self, d: Device) -> None:
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                        client_id=d.name, protocol=mqtt.MQTTv5, userdata=d)
        ctx = ssl.create_default_context(cafile=self.ca)
        cert, key = self.kit.tls(d.i)
        ctx.load_cert_chain(str(cert), str(key))
        c.tls_set_context(ctx)
        c.will_set(topic(d.name, "status"), b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._done_write
        c.on_socket_close = self._closed
        d.client = c
        c.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        d.sock = c.socket()
        self.sel.register(d.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE
                                                          if c.want_write() else 0), d)

    def connect_all(self, say: Callable[[str], None], *, batch: int = 25) -> float:
        """Connect every device (pumping the others between batches); returns the seconds."""
        t0 = time.monotonic()
        for n, d in enumerate(self.devices, 1):
            self.connect(d)
            if n % batch == 0:
                self.pump(0)
            if n % 1000 == 0:
                say(f"  {n}/{len(self.devices)} devices connected "
                    f"({time.monotonic() - t0:.0f} s)")
        while sum(d.connected for d in self.devices) < len(self.devices):
            self.pump(0.05)
            if time.monotonic() - t0 > 120 + len(self.devices) * 0.05:
                raise RuntimeError("devices did not all get their CONNACK")
        return time.monotonic() - t0

    def _want_write(self, c: Any, d: Device, sock: Any) -> None:
        if d.sock is not None:
            self.sel.modify(d.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, d)

    def _done_write(self, c: Any, d: Device, sock: Any) -> None:
        if d.sock is not None:
            self.sel.modify(d.sock, selectors.EVENT_READ, d)

    def _closed(self, c: Any, d: Device, sock: Any) -> None:
        if d.sock is not None:
            self.sel.unregister(d.sock)
            d.sock = None
        if d.connected and not self.closing:
            self.disconnects += 1  # not reconnected: what it had not sent is lost here
        d.connected = False

    def _on_connect(self, c: Any, d: Device, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            raise RuntimeError(f"{d.name}: broker refused the connection: {rc}")
        d.connected = True
        c.subscribe(topic(d.name, "attest/challenge"), qos=1)
        c.publish(topic(d.name, "status"), b"online", qos=1, retain=True)

    def pump(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            d: Device = key.data
            c = d.client
            if mask & selectors.EVENT_READ:
                c.loop_read()
                while d.sock is not None and d.sock.pending():
                    c.loop_read()
            if mask & selectors.EVENT_WRITE and d.sock is not None:
                c.loop_write()

    def misc(self) -> None:
        for d in self.devices:
            if d.sock is not None:
                d.client.loop_misc()

    def close(self) -> None:
        self.closing = True
        for d in self.devices:
            if d.client is not None and d.sock is not None:
                d.client.disconnect()
        for _ in range(20):
            self.pump(0.01)
        self.sel.close()

    # --- messages --------------------------------------------------------------------------------

    def _send(self, d: Device, kind: str, type_: str, body: dict[str, Any], *,
              hostile: str | None = None) -> bytes:
        d.seq += 1
        data = encode_fields(d.seq, time.time(), d.name, type_, body)
        self.sent[(d.name, d.seq)] = type_
        if hostile is not None:
            self.hostile_sent[hostile].append((d.name, d.seq))
        self._publish(d, kind, data, (d.name, d.seq))
        return data

    def _publish(self, d: Device, kind: str, data: bytes,
                 key: tuple[str, int] | None = None) -> None:
        info = d.client.publish(topic(d.name, kind), data, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.publish_errors += 1
        if key is not None:
            self.unacked[(d.i, info.mid)] = key

    def _on_publish(self, c: Any, d: Device, mid: int, rc: Any, props: Any) -> None:
        self.unacked.pop((d.i, mid), None)

    def report(self, i: int) -> None:
        d = self.devices[i]
        body = dict(self.body)
        body["counters"] = {"reports": d.seq}
        d.last_report = self._send(d, "report", "metrics", body)
        if self.hostile_share and self.rng.random() < self.hostile_share:
            self.hostile(d)

    def attest_request(self, i: int) -> None:
        d = self.devices[i]
        self._send(d, "event", "attest.request", {"reason": "schedule"})

    def hostile(self, d: Device) -> None:
        kind = self.rng.choice(HOSTILE_KINDS)
        if kind == "replay_evidence" and time.time() - d.eat_at < REPLAY_AFTER:
            kind = "forged_evidence"  # the original may not be appraised yet: it would lose
        if kind == "replay_report" and d.last_report is not None:
            self._publish(d, "report", d.last_report)  # same seq, same bytes
            self.hostile_sent[kind].append((d.name, d.seq))
        elif kind == "replay_evidence" and d.last_eat is not None:
            self._send(d, "attest/evidence", "attest.evidence",
                       {"nonce": b"\0" * 8, "eat": d.last_eat}, hostile=kind)
        elif kind == "forged_evidence" and d.last_eat is not None:
            self._send(d, "attest/evidence", "attest.evidence",
                       {"nonce": b"\0" * 8, "eat": forged(d.last_eat)}, hostile=kind)
        elif kind == "malformed":
            junk = self.rng.choice([b"\xa6\x61v", b"\xff" * 9, b"\x9f" * 64, b"not cbor",
                                    (d.last_report or b"\xa0")[:-3]])
            self._publish(d, "report", junk)
            self.hostile_sent[kind].append((d.name, 0))

    def _on_message(self, c: Any, d: Device, msg: Any) -> None:
        try:
            nonce = parse_challenge(msg.payload, DEFAULT_LIMITS)
        except Exception:  # a broken challenge: the device ignores it, as the agent does
            return
        self.challenges += 1
        now = time.time()
        eat = self.evidence.token(d.i, nonce, now, int(now - d.start))
        d.last_eat, d.eat_at = eat, now
        self._send(d, "attest/evidence", "attest.evidence", {"nonce": nonce, "eat": eat})
        self.evidence_sent[(d.name, d.seq)] = now
