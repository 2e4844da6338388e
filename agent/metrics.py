"""Device metrics through psutil: the only module that imports psutil.

A superset of AWS IoT Device Defender's device-side metrics (listening TCP and UDP ports,
established TCP connections, network bytes and packets in and out) plus CPU, memory, disk,
temperature (the board's thermal zone through the firmware shim, else psutil's sensors),
process count, uptime, and the agent's own CPU and memory. Lists are capped (:data:`MAX_LIST`)
so a busy host cannot make a report unbounded; the true counts are always reported.

I/O: reads /proc and /sys through psutil. The result is a plain map ready to be the ``body`` of a
``metrics`` report (docs/protocol.cddl ``metrics-body``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from edgeward.core.errors import EdgewardError

logger = logging.getLogger(__name__)

MAX_LIST = 64


def _ports(conns: list[Any], status: str | None) -> list[dict[str, Any]]:
    seen: set[tuple[str, int]] = set()
    out: list[dict[str, Any]] = []
    for c in conns:
        if status is not None and c.status != status:
            continue
        if not c.laddr:
            continue
        key = (str(c.laddr.ip), int(c.laddr.port))
        if key not in seen:
            seen.add(key)
            out.append({"interface": key[0], "port": key[1]})
    out.sort(key=lambda d: (d["port"], d["interface"]))
    return out


class MetricsCollector:
    """Collect one metrics body per call; keeps psutil's per-process CPU state between calls."""

    def __init__(self, disk_paths: Sequence[str] = ("/",), *,
                 temperature: Callable[[], float | None] | None = None) -> None:
        self.disk_paths = tuple(disk_paths)
        # The board's own sensor (the firmware shim's Platform.cpu_temperature: the thermal
        # zone); psutil's hottest sensor where the board has none or it cannot be read.
        self.cpu_temperature = temperature
        self._me = psutil.Process()
        self._me.cpu_percent(None)
        psutil.cpu_percent(None)

    def collect(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        body.update(self._network())
        vm = psutil.virtual_memory()
        body["cpu_percent"] = float(psutil.cpu_percent(None))
        body["cpu_count"] = psutil.cpu_count() or 0
        try:
            body["load"] = [round(x, 3) for x in psutil.getloadavg()]
        except (OSError, AttributeError):
            body["load"] = []
        body["memory"] = {"total": vm.total, "available": vm.available, "percent": vm.percent}
        body["disk"] = self._disks()
        body["temperature_c"] = self._board_temperature()
        body["process_count"] = len(psutil.pids())
        body["uptime_s"] = round(time.time() - psutil.boot_time(), 1)
        with self._me.oneshot():
            mem = self._me.memory_info()
            body["agent"] = {
                "cpu_percent": float(self._me.cpu_percent(None)),
                "rss": mem.rss,
                "threads": self._me.num_threads(),
                "fds": self._me.num_fds(),
            }
        return body

    def _network(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            tcp = psutil.net_connections(kind="tcp")
            udp = psutil.net_connections(kind="udp")
        except (psutil.AccessDenied, OSError) as e:
            logger.info("cannot list connections: %s", e)
            tcp, udp = [], []
        listen_tcp = _ports(tcp, psutil.CONN_LISTEN)
        listen_udp = _ports(udp, None)
        est = [(c.laddr, c.raddr) for c in tcp
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.raddr]
        out["listening_tcp_ports"] = {"total": len(listen_tcp), "ports": listen_tcp[:MAX_LIST]}
        out["listening_udp_ports"] = {"total": len(listen_udp), "ports": listen_udp[:MAX_LIST]}
        out["tcp_connections"] = {
            "established": len(est),
            "connections": [
                {
                    "local_port": int(local.port),
                    "remote_addr": f"{remote.ip}:{remote.port}",
                }
                for local, remote in est[:MAX_LIST]
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
