"""Device metrics through psutil: the only module that imports psutil.

A superset of AWS IoT Device Defender's device-side metrics (listening TCP and UDP ports,
established TCP connections, network bytes and packets in and out) plus CPU, memory, disk,
temperature (the board's thermal zone through the firmware shim, else psutil's sensors),
process count, uptime, and the agent's own CPU and memory. Lists are capped (:data:`MAX_LIST`)
so a busy host cannot make a report unbounded; the true counts are always reported.

Cost per report (issue 13: a report cost the agent about 20 ms of CPU, more on a busy host):

* sockets come from the kernel's socket diagnostics (:mod:`.sockdiag`), asked for the listening
  and established ones only; psutil's ``net_connections`` (the fallback where netlink is not
  available) reads every socket of the host and then lists every file descriptor of every
  process to find each socket's owner, which the metrics do not need;
* what does not change while the agent runs (CPU count, boot time) is read once.

Size per report: the three lists (listening TCP and UDP ports, established connections) are
sent when they changed since the last report that carried them, and in full every
:data:`FULL_EVERY` reports whatever happened (so a backend that missed a report catches up);
in between, the list is left out and ``"unchanged": true`` stands in its place, beside the
count, which is always sent. docs/protocol.cddl and docs/DESIGN-NOTES.md say the same.

I/O: reads /proc and /sys through psutil, and one netlink exchange per socket query. The result
is a plain map ready to be the ``body`` of a ``metrics`` report (docs/protocol.cddl
``metrics-body``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from edgeward.core.errors import EdgewardError

from . import sockdiag

logger = logging.getLogger(__name__)

MAX_LIST = 64
FULL_EVERY = 10  # every this many reports the lists go in full, changed or not
# (map in the body, its list) sent only on change
_LISTS = (("listening_tcp_ports", "ports"), ("listening_udp_ports", "ports"),
          ("tcp_connections", "connections"))


def _ports(socks: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"interface": ip, "port": port}
            for ip, port in sorted(set(socks), key=lambda a: (a[1], a[0]))]


class MetricsCollector:
    """Collect one metrics body per call; keeps psutil's per-process CPU state between calls,
    and the lists last sent (see the module docstring)."""

    def __init__(self, disk_paths: Sequence[str] = ("/",), *,
                 temperature: Callable[[], float | None] | None = None,
                 full_every: int = FULL_EVERY) -> None:
        self.disk_paths = tuple(disk_paths)
        # The board's own sensor (the firmware shim's Platform.cpu_temperature: the thermal
        # zone); psutil's hottest sensor where the board has none or it cannot be read.
        self.cpu_temperature = temperature
        self.full_every = max(1, full_every)
        self._me = psutil.Process()
        self._me.cpu_percent(None)
        psutil.cpu_percent(None)
        self._cpu_count = psutil.cpu_count() or 0
        self._boot = psutil.boot_time()
        self._sent: dict[str, Any] = {}
        self._reports = 0
        self._diag = True  # sock_diag answered (or not tried yet)

    def collect(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        body.update(self._network())
        vm = psutil.virtual_memory()
        body["cpu_percent"] = float(psutil.cpu_percent(None))
        body["cpu_count"] = self._cpu_count
        try:
            body["load"] = [round(x, 3) for x in psutil.getloadavg()]
        except (OSError, AttributeError):
            body["load"] = []
        body["memory"] = {"total": vm.total, "available": vm.available, "percent": vm.percent}
        body["disk"] = self._disks()
        body["temperature_c"] = self._board_temperature()
        body["process_count"] = len(psutil.pids())
        body["uptime_s"] = round(time.time() - self._boot, 1)
        with self._me.oneshot():
            mem = self._me.memory_info()
            body["agent"] = {
                "cpu_percent": float(self._me.cpu_percent(None)),
                "rss": mem.rss,
                "threads": self._me.num_threads(),
                "fds": self._me.num_fds(),
            }
        self._leave_out_unchanged(body)
        return body

    def _leave_out_unchanged(self, body: dict[str, Any]) -> None:
        full = self._reports % self.full_every == 0
        self._reports += 1
        for key, field in _LISTS:
            part = body[key]
            if not full and self._sent.get(key) == part[field]:
                del part[field]
                part["unchanged"] = True
            else:
                self._sent[key] = part[field]

    def _sockets(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]],
                                list[tuple[tuple[str, int], tuple[str, int]]], int]:
        """Listening TCP, UDP (local addresses), established TCP (first MAX_LIST in order of
        local port and remote address) and the number established."""
        if self._diag:
            try:
                tcp_listen = [s.local for s in sockdiag.sockets(
                    socket.IPPROTO_TCP, 1 << sockdiag.TCP_LISTEN)]
                udp = [s.local for s in sockdiag.sockets(socket.IPPROTO_UDP, sockdiag.ALL_STATES)]
                est_raw = list(sockdiag.sockets(socket.IPPROTO_TCP, 1 << sockdiag.TCP_ESTABLISHED))
                est_raw.sort(key=lambda s: (s.sport, s.family, s.dst, s.dport))
                est = [(s.local, s.remote) for s in est_raw[:MAX_LIST]]
                return tcp_listen, udp, est, len(est_raw)
            except (OSError, ValueError) as e:
                logger.info("socket diagnostics unavailable (%s); listing sockets with psutil", e)
                self._diag = False
        try:
            tcp = psutil.net_connections(kind="tcp")
            udp_c = psutil.net_connections(kind="udp")
        except (psutil.AccessDenied, OSError) as e:
            logger.info("cannot list connections: %s", e)
            return [], [], [], 0
        tcp_listen = [(str(c.laddr.ip), int(c.laddr.port)) for c in tcp
                      if c.status == psutil.CONN_LISTEN and c.laddr]
        udp = [(str(c.laddr.ip), int(c.laddr.port)) for c in udp_c if c.laddr]
        pairs = [((str(c.laddr.ip), int(c.laddr.port)), (str(c.raddr.ip), int(c.raddr.port)))
                 for c in tcp if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.raddr]
        pairs.sort(key=lambda p: (p[0][1], p[1]))
        return tcp_listen, udp, pairs[:MAX_LIST], len(pairs)

    def _network(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        tcp_listen, udp, est, n_est = self._sockets()
        listen_tcp = _ports(tcp_listen)
        listen_udp = _ports(udp)
        out["listening_tcp_ports"] = {"total": len(listen_tcp), "ports": listen_tcp[:MAX_LIST]}
        out["listening_udp_ports"] = {"total": len(listen_udp), "ports": listen_udp[:MAX_LIST]}
        out["tcp_connections"] = {
            "established": n_est,
            "connections": [
                {"local_port": local[1], "remote_addr": f"{remote[0]}:{remote[1]}"}
                for local, remote in est
            ],
        }
        io = psutil.net_io_counters()
        out["network_stats"] = {
            "bytes_in": io.bytes_recv,
            "bytes_out": io.bytes_sent,
            "packets_in": io.packets_recv,
            "packets_out": io.packets_sent,
        }
        return out

    def _disks(self) -> list[dict[str, Any]]:
        out = []
        for p in self.disk_paths:
            try:
                du = psutil.disk_usage(p)
            except OSError:
                continue
            out.append({"path": p, "total": du.total, "used": du.used, "percent": du.percent})
        return out

    def _board_temperature(self) -> float | None:
        if self.cpu_temperature is not None:
            try:
                value = self.cpu_temperature()
            except EdgewardError as e:  # a garbled thermal zone: said, then psutil's reading
                logger.warning("CPU temperature: %s", e)
                value = None
            if value is not None:
                return round(value, 1)
        return self._temperature()

    @staticmethod
    def _temperature() -> float | None:
        reader = getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return None
        try:
            temps = reader()
        except (OSError, RuntimeError):
            return None
        # Raspberry Pi: "cpu_thermal"; x86: "coretemp", "k10temp"; take the hottest reading
        values = [t.current for entries in temps.values() for t in entries if t.current]
        return round(max(values), 1) if values else None
