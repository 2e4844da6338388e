"""The agent's local socket under attack by a member of its group, and the guard's client.

On 979eb13 any local process in the socket's group could send ``model.rejected`` or
``attest.request`` (any type with a dot passed) and the backend acted on them; eight idle
connections filled ``max_clients`` with no timeout, and the guard's sends then appeared to
succeed while critical anomalies were dropped. Now applications may send only allow-listed
names (arriving as ``app.<name>``), every frame is answered, idle connections are closed or
make room, and the guard's client counts and logs what the agent did not take.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeward.agent.localsock import LocalEvent, LocalSocketServer
from edgeward.core.frames import FrameDecoder, encode_frame, reply_of
from edgeward.models.guard.link import AgentLink


def wait(pred: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LocalSocketServer, list[LocalEvent]]]:
    got: list[LocalEvent] = []
    srv = LocalSocketServer(tmp_path / "agent.sock", got.append, idle_timeout=0.5)
    srv.start()
    try:
        yield srv, got
    finally:
        srv.stop()


def raw(srv: LocalSocketServer) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(str(srv.path))
    return s


def send_one(s: socket.socket, event: dict[str, Any]) -> tuple[bool, str]:
    s.sendall(encode_frame(event))
    dec = FrameDecoder()
    while True:
        frames = dec.feed_each(s.recv(4096))
        if frames:
            ev, error = frames[0]
            assert ev is not None, error
            return reply_of(ev)


@pytest.mark.parametrize("typ", ["model.rejected", "attest.request", "app.model.rejected",
                                 "outbox.dropped", "agent.started", "app.", "Anomaly"])
def test_attack_app_sends_an_agent_event_type_refused(server, typ: str) -> None:
    """A group member spoofs an agent event the backend acts on (re-challenge, rejection)."""
    srv, got = server
    s = raw(srv)
    taken, reason = send_one(s, {"type": typ, "body": {"model": "lockface.tflite"}})
    assert not taken and "not one applications may send" in reason
    time.sleep(0.1)
    assert got == [] and srv.stats.refused_type == 1
    s.close()


def test_attack_app_sends_a_type_outside_the_allow_list_refused(tmp_path: Path) -> None:
    got: list[LocalEvent] = []
    srv = LocalSocketServer(tmp_path / "a.sock", got.append, allow=("alarm",))
    srv.start()
    try:
        s = raw(srv)
        assert send_one(s, {"type": "anomaly"})[0] is False
        assert send_one(s, {"type": "alarm", "body": {"door": 1}}) == (True, "")
        assert [e.type for e in got] == ["app.alarm"]
        s.close()
    finally:
        srv.stop()


def test_allowed_event_is_taken_and_marked_app_originated(server) -> None:
    """The backend sees app.<name> with the sender's credentials: never an agent event."""
    srv, got = server
    s = raw(srv)
    assert send_one(s, {"type": "anomaly", "ts": 5.0, "body": {"severity": "critical"}}) == \
        (True, "")
    assert send_one(s, {"type": "app.anomaly", "body": {}}) == (True, "")
    assert [e.type for e in got] == ["app.anomaly", "app.anomaly"]
    assert got[0].body == {"severity": "critical"} and got[0].ts == 5.0
    assert got[0].pid == __import__("os").getpid()
    s.close()


def test_malformed_frame_answered_as_refused(server) -> None:
    srv, got = server
    s = raw(srv)
    payload = b"\x01"  # CBOR 1: not a map
    s.sendall(struct.pack(">I", len(payload)) + payload)
    dec = FrameDecoder()
    frames = dec.feed_each(s.recv(4096))
    assert frames and frames[0][0] is not None
    taken, reason = reply_of(frames[0][0])
    assert not taken and "malformed" in reason
    assert send_one(s, {"type": "anomaly"})[0] is True  # the connection goes on
    s.close()


def test_rate_limited_events_refused_with_a_reply(tmp_path: Path) -> None:
    got: list[LocalEvent] = []
    srv = LocalSocketServer(tmp_path / "r.sock", got.append, rate=1.0)  # burst 10
    srv.start()
    try:
        s = raw(srv)
        replies = [send_one(s, {"type": "anomaly", "body": {"i": i}}) for i in range(15)]
        refused = [r for r in replies if not r[0]]
        assert len(got) == 15 - len(refused) and 4 <= len(refused) <= 5
        assert all(r[1].startswith("rate limit") for r in refused)
        s.close()
    finally:
        srv.stop()


def test_attack_idle_connections_fill_max_clients(server) -> None:
    """Eight connections that send nothing; the guard must still report a critical anomaly."""
    srv, got = server
    idle = [raw(srv) for _ in range(8)]
    assert wait(lambda: srv.stats.accepted == 8)
    link = AgentLink(str(srv.path), timeout_s=2.0)
    assert link.send({"type": "anomaly", "body": {"severity": "critical"}}) is True
    assert link.sent == 1 and [e.type for e in got] == ["app.anomaly"]
    assert srv.stats.evicted_idle == 1
    for s in idle:
        s.close()
    link.close()


def test_attack_slow_partial_frame_closed_after_the_idle_timeout(server) -> None:
    """A connection that sends half a frame and waits holds nothing for long."""
    srv, _ = server
    s = raw(srv)
    s.sendall(struct.pack(">I", 100) + b"\xa1")
    assert s.recv(10) == b""  # closed by the agent after idle_timeout (0.5 s)
    assert srv.stats.closed_idle == 1
    s.close()


def test_guard_link_learns_its_event_was_refused(tmp_path: Path, caplog) -> None:
    got: list[LocalEvent] = []
    srv = LocalSocketServer(tmp_path / "g.sock", got.append, allow=("alarm",))
    srv.start()
    try:
        link = AgentLink(str(srv.path), timeout_s=2.0)
        with caplog.at_level("ERROR"):
            assert link.send({"type": "anomaly", "body": {"severity": "critical"}}) is True
        assert link.refused == 1 and link.sent == 0 and link.pending == 0
        assert link.last_refusal is not None and "not one applications may send" in \
            link.last_refusal
        assert any("agent refused a guard event" in r.message for r in caplog.records)
        assert got == []
        link.close()
    finally:
        srv.stop()


def test_guard_link_sends_again_after_the_agent_closed_its_idle_connection(server) -> None:
    srv, got = server
    link = AgentLink(str(srv.path), timeout_s=2.0)
    assert link.send({"type": "anomaly", "body": {"i": 1}})
    assert wait(lambda: srv.stats.closed_idle == 1, 3)
    assert link.send({"type": "anomaly", "body": {"i": 2}}) is True
    assert link.sent == 2 and [e.body["i"] for e in got] == [1, 2]
    link.close()


def test_guard_link_keeps_the_event_when_the_agent_does_not_answer(tmp_path: Path) -> None:
    """A stuck agent (accepts, never answers): the event is not counted as sent."""
    path = tmp_path / "stuck.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    held: list[socket.socket] = []
    t = threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True)
    t.start()
    link = AgentLink(str(path), timeout_s=0.2)
    assert link.send({"type": "anomaly", "body": {"severity": "critical"}}) is False
    assert link.pending == 1 and link.sent == 0 and link.unconfirmed == 1
    link.close()
    for s in held:
        s.close()
    srv.close()
