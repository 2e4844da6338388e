"""A verifier worker's Prometheus metrics and health endpoint (``[metrics]`` in VERIFIER.toml).

Off by default (``port = 0``). When on, one small HTTP server on its own thread answers

* ``GET /metrics``: the Prometheus text format (``prometheus-client``, the ``service`` extra),
  from a registry of this worker's own (never the process-global one);
* ``GET /health``: ``200`` and ``{"ready": true, ...}`` when the worker is connected to the
  broker, its last look at the store succeeded and its loop turned recently; ``503`` and the
  reason otherwise (a load balancer or ``systemd``/Kubernetes probe reads the status code).

It listens on loopback (``127.0.0.1``); another address is refused unless ``allow_remote = true``
says the operator means it (the endpoint has no authentication: put a scraper beside the worker or
a TLS proxy in front). Labels are bounded: envelope types outside :data:`KNOWN_TYPES` are counted
as ``other``, so a hostile device cannot grow the scrape without end.

What it measures (the worker calls these; see :class:`WorkerMetrics`): messages by envelope type,
messages refused by reason, appraisal latency (histogram) and verdicts, fleet events by type
(unexplained gaps, contraindicated results, silent devices, early warnings), queue depth, store
latency (histogram, by operation), broker connection state. I/O: the HTTP socket only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgeward.core.errors import ConfigError
from edgeward.core.tomlconf import setting

logger = logging.getLogger(__name__)

KNOWN_TYPES = frozenset({
    "metrics", "attest.evidence", "attest.request", "attest.unavailable", "attest.failed",
    "outbox.dropped", "model.rejected", "model.verified", "app.anomaly", "command.accepted",
    "command.refused", "agent.started", "agent.stopping", "agent.reloaded",
    "agent.reload_failed",
})
STALE_LOOP = 30.0  # seconds without a loop turn after which the worker is not ready


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the worker's Prometheus and health endpoint."""

    port: int = setting(0, min=0, max=65535)  # 0: off
    host: str = setting("127.0.0.1")
    allow_remote: bool = setting(False)  # listen on a non-loopback address

    def check(self, source: object) -> MetricsConfig:
        """Refuse a non-loopback address unless ``allow_remote``; returns self."""
        if self.port and not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"{source}: [metrics] host {self.host!r} is not a loopback address",
                hint="the endpoint has no authentication: keep host = \"127.0.0.1\", or set "
                     "allow_remote = true if a firewall or proxy guards it")
        return self


METRICS_OFF = MetricsConfig()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WorkerMetrics:
    """The worker's counters; a no-op unless :meth:`enable` made the Prometheus objects."""

    def __init__(self) -> None:
        self.enabled = False
        self.connected = False
        self.store_ok = True
        self.store_error = ""
        self.last_turn = time.monotonic()

    def enable(self, worker: str, queue_depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        lab = {"worker": worker}
        self._messages = Counter("edgeward_verifier_messages", "Envelopes stored, by type",
                                 ["type"], registry=r)
        self._refused = Counter("edgeward_verifier_refused", "Messages not stored, by reason "
                                "(duplicate, malformed, oversized, spoofed, wrong_topic, error)",
                                ["reason"], registry=r)
        self._appraisal = Histogram(
            "edgeward_verifier_appraisal_seconds", "Time to appraise one evidence",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self._verdicts = Counter("edgeward_verifier_verdicts", "Appraisal results, by status",
                                 ["status"], registry=r)
        self._fleet = Counter("edgeward_verifier_fleet_events", "Fleet events raised, by type",
                              ["type"], registry=r)
        self._store = Histogram(
            "edgeward_verifier_store_seconds", "Fleet store latency, by operation", ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r)
        Gauge("edgeward_verifier_queue_depth", "Events waiting for the worker's loop",
              registry=r).set_function(queue_depth)
        Gauge("edgeward_verifier_connected", "1 when connected to the broker",
              registry=r).set_function(lambda: 1.0 if self.connected else 0.0)
        Gauge("edgeward_verifier_info", "This worker", list(lab), registry=r).labels(**lab).set(1)
        self.enabled = True

    def message(self, type_: str) -> None:
        if self.enabled:
            self._messages.labels(type_ if type_ in KNOWN_TYPES else "other").inc()

    def refused(self, reason: str) -> None:
        if self.enabled:
            self._refused.labels(reason).inc()

    def appraised(self, seconds: float, status: str) -> None:
        if self.enabled:
            self._appraisal.observe(seconds)
            self._verdicts.labels(status).inc()

    def fleet_event(self, type_: str) -> None:
        if self.enabled:
            self._fleet.labels(type_).inc()

    def store_time(self, op: str, seconds: float) -> None:
        if self.enabled:
            self._store.labels(op).observe(seconds)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)``: connected, the store answered, the loop is turning."""
        idle = time.monotonic() - self.last_turn
        why = [w for w, bad in (("not connected to the broker", not self.connected),
                                (f"store failing: {self.store_error}", not self.store_ok),
                                (f"loop stuck for {idle:.0f}s", idle > STALE_LOOP)) if bad]
        return not why, {"ready": not why, "broker": "connected" if self.connected else "down",
                         "store": "ok" if self.store_ok else "failing", "problems": why}


class HealthServer:
    """``/metrics`` and ``/health`` for one worker, on a daemon thread."""

    def __init__(self, cfg: MetricsConfig, metrics: WorkerMetrics) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        m = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(m.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/health", "/healthz", "/ready"):
                    ready, details = m.health()
                    body = json.dumps(details).encode() + b"\n"
                    ctype, code = "application/json", 200 if ready else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("metrics endpoint: " + format, *args)

        try:
            self.server = ThreadingHTTPServer((cfg.host, cfg.port), Handler)
        except OSError as e:
            raise ConfigError(f"[metrics] cannot listen on {cfg.host}:{cfg.port}: {e}",
                              hint="choose a free port (or port = 0 to turn the endpoint off)") \
                from e
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
