"""The link relay is each process-mode device's cable: it forwards bytes both ways unchanged,
and a cut link closes open connections and refuses new ones until it is restored."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from edgeward.simulator.relay import LinkRelay


@pytest.fixture
def echo_server() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = c) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def _roundtrip(port: int, data: bytes) -> bytes:
    """What comes back; a closed or reset connection ends it (both are a dead link)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        try:
            s.sendall(data)
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return got


def test_bytes_pass_unchanged_both_ways(echo_server: int) -> None:
    relay = LinkRelay(("127.0.0.1", echo_server)).start()
    try:
        data = bytes(range(256)) * 1000  # 256 kB, every byte value
        assert _roundtrip(relay.port, data) == data
    finally:
        relay.stop()


def test_a_cut_link_drops_open_connections_and_refuses_new_ones(echo_server: int) -> None:
    relay = LinkRelay(("127.0.0.1", echo_server)).start()
    try:
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=3)
        s.sendall(b"hello")
        assert s.recv(5) == b"hello"
        relay.set_link(False)
        try:  # the device sees its connection end, as with a pulled cable
            assert s.recv(5) == b""
        except ConnectionResetError:
            pass
        s.close()
        assert _roundtrip(relay.port, b"again") == b""
        assert relay.refused >= 1
        relay.set_link(True)
        assert _roundtrip(relay.port, b"back") == b"back"
    finally:
        relay.stop()


def test_broker_down_behind_the_relay_is_a_closed_connection() -> None:
    with socket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        dead = tmp.getsockname()[1]  # nothing listens here once closed
    relay = LinkRelay(("127.0.0.1", dead)).start()
    try:
        assert _roundtrip(relay.port, b"x") == b""
    finally:
        relay.stop()
