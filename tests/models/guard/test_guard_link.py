"""The agent link against a real Unix socket server reading frames with FrameDecoder.

The stand-in answers every frame as the agent does (``ack``), so the link counts it as taken.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeward.core.frames import FrameDecoder, ack_frame
from edgeward.models.guard.link import AgentLink


class Server:
    """A tiny agent stand-in: accepts connections and decodes every frame it receives."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            dec = FrameDecoder()
            conn.settimeout(0.1)
            with conn:
                while not self.stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    got = dec.feed(data)
                    self.events += got
                    try:
                        conn.sendall(ack_frame() * len(got))
                    except OSError:
                        break

    def wait_for(self, n: int, timeout: float = 3.0, *, severity: str | None = None
                 ) -> list[dict[str, Any]]:
        """Wait until ``n`` events (of ``severity``, if given) arrived; returns all events."""
        end = time.monotonic() + timeout

        def count() -> int:
            return sum(severity is None or e["body"].get("severity") == severity
                       for e in self.events)

        while count() < n and time.monotonic() < end:
            time.sleep(0.01)
        return self.events

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)


def ev(i: int, sev: str = "warning") -> dict[str, Any]:
    return {"type": "anomaly", "ts": float(i), "body": {"severity": sev, "i": i}}


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "agent.sock")


def test_events_reach_the_agent_in_order(sock_path: str) -> None:
    srv = Server(sock_path)
    try:
        link = AgentLink(sock_path)
        for i in range(20):
            assert link.send(ev(i))
        got = srv.wait_for(20)
        assert [e["body"]["i"] for e in got] == list(range(20))
        assert got[0]["type"] == "anomaly" and link.pending == 0
        link.close()
    finally:
        srv.close()


def test_agent_away_then_back_buffered_events_are_delivered(sock_path: str) -> None:
    now = [0.0]
    link = AgentLink(sock_path, max_buffer=8, retry_s=1.0, clock=lambda: now[0])
    for i in range(5):
        assert not link.send(ev(i))
    assert link.pending == 5 and not link.connected
    srv = Server(sock_path)
    try:
        assert not link.flush()  # within the retry interval: no new connect attempt
        now[0] = 2.0
        assert link.flush()
        assert [e["body"]["i"] for e in srv.wait_for(5)] == [0, 1, 2, 3, 4]
    finally:
        link.close()
        srv.close()


def test_agent_restart_mid_stream(sock_path: str) -> None:
    now = [0.0]
    srv = Server(sock_path)
    link = AgentLink(sock_path, clock=lambda: now[0])
    link.send(ev(0))
    srv.wait_for(1)
    srv.close()  # the agent goes away
    sent_ok = [link.send(ev(i)) for i in range(1, 6)]
    assert not all(sent_ok) and link.pending >= 1
    buffered = link.pending
    srv2 = Server(sock_path)
    try:
        now[0] = 10.0
        assert link.flush()
        got = [e["body"]["i"] for e in srv2.wait_for(buffered)]
        assert len(got) == buffered and got[-1] == 5 and link.pending == 0
        assert got == sorted(got) and set(got) <= {1, 2, 3, 4, 5}
    finally:
        link.close()
        srv2.close()


def test_bounded_buffer_drops_oldest_info_first_and_reports_drops(sock_path: str) -> None:
    now = [0.0]
    link = AgentLink(sock_path, max_buffer=3, clock=lambda: now[0])
    link.send(ev(0, "info"))
    link.send(ev(1, "critical"))
    link.send(ev(2, "info"))
    link.send(ev(3, "warning"))  # drops 0 (oldest info)
    link.send(ev(4, "warning"))  # drops 2 (the other info)
    link.send(ev(5, "info"))  # nothing less severe buffered: the newcomer is dropped
    link.send(ev(6, "critical"))  # drops 3 (oldest warning)
    assert link.dropped == 4 and link.pending == 3
    srv = Server(sock_path)
    try:
        now[0] = 5.0
        assert link.flush()
        got = srv.wait_for(3)
        assert [e["body"]["i"] for e in got] == [1, 4, 6]
        assert got[0]["body"]["dropped"] == 4 and "dropped" not in got[1]["body"]
    finally:
        link.close()
        srv.close()


def test_oversized_event_is_dropped_not_retried(sock_path: str) -> None:
    srv = Server(sock_path)
    try:
        link = AgentLink(sock_path)
        assert link.send({"type": "anomaly", "ts": 0.0, "body": {"blob": b"x" * 100_000}})
        assert link.send(ev(1))
        assert [e["body"]["i"] for e in srv.wait_for(1)] == [1]
        assert link.dropped == 1
        link.close()
    finally:
        srv.close()
