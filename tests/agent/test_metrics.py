"""Metrics collection: the host's sockets through sock_diag, and lists sent only on change."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from edgeward.agent import metrics, sockdiag
from edgeward.agent.metrics import MetricsCollector


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def _port(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def test_sock_diag_sees_a_listener_an_established_pair_and_a_udp_socket(
    listener: socket.socket,
) -> None:
    port = _port(listener)
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        listening = {s.local for s in sockdiag.sockets(socket.IPPROTO_TCP,
                                                        1 << sockdiag.TCP_LISTEN)}
        est = {(s.local, s.remote) for s in sockdiag.sockets(
            socket.IPPROTO_TCP, 1 << sockdiag.TCP_ESTABLISHED)}
        udps = {s.local for s in sockdiag.sockets(socket.IPPROTO_UDP, sockdiag.ALL_STATES)}
        assert ("127.0.0.1", port) in listening
        assert (client.getsockname(), ("127.0.0.1", port)) in est
        assert ("127.0.0.1", _port(udp)) in udps
        assert all(s.state == sockdiag.TCP_LISTEN for s in sockdiag.sockets(
            socket.IPPROTO_TCP, 1 << sockdiag.TCP_LISTEN))
    finally:
        for s in (client, server, udp):
            s.close()


def _hdr(length: int, kind: int) -> bytes:
    return struct.pack("=IHHII", length, kind, 0, 1, 0)


def test_attack_netlink_answer_with_a_length_past_its_end_is_refused_not_read() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        sockdiag.parse(_hdr(1 << 20, sockdiag.SOCK_DIAG_BY_FAMILY) + bytes(80))
    with pytest.raises(ValueError):
        sockdiag.parse(_hdr(4, sockdiag.SOCK_DIAG_BY_FAMILY))  # shorter than its own header


def test_netlink_error_and_done() -> None:
    with pytest.raises(OSError):
        sockdiag.parse(_hdr(20, sockdiag.NLMSG_ERROR) + struct.pack("=i", -13))
    assert sockdiag.parse(_hdr(20, sockdiag.NLMSG_DONE) + bytes(4)) == ([], True)
    assert sockdiag.parse(b"") == ([], False)


def test_lists_are_sent_on_change_and_in_full_every_few_reports(listener: socket.socket) -> None:
    m = MetricsCollector(full_every=3)
    first = m.collect()
    assert {"interface": "127.0.0.1", "port": _port(listener)} in \
        first["listening_tcp_ports"]["ports"]
    second = m.collect()
    for key, field in (("listening_tcp_ports", "ports"), ("tcp_connections", "connections")):
        if field not in second[key]:  # unchanged: left out, the count still there
            assert second[key]["unchanged"] is True
    assert "total" in second["listening_tcp_ports"]
    assert "established" in second["tcp_connections"]
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        third = m.collect()  # a new listening port: the list goes out
        assert {"interface": "127.0.0.1", "port": _port(other)} in \
            third["listening_tcp_ports"]["ports"]
    finally:
        other.close()
    fourth = m.collect()  # the full round (every third report), changed or not
    assert "ports" in fourth["listening_tcp_ports"] and "unchanged" not in \
        fourth["listening_tcp_ports"]


def test_without_sock_diag_psutil_lists_the_same_ports(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*_: object) -> Iterator[sockdiag.Sock]:
        raise OSError("sock_diag not available")
        yield  # a generator, as the real one is

    monkeypatch.setattr(metrics.sockdiag, "sockets", refused)
    body = MetricsCollector().collect()
    assert {"interface": "127.0.0.1", "port": _port(listener)} in \
        body["listening_tcp_ports"]["ports"]
    assert body["tcp_connections"]["established"] >= 0
