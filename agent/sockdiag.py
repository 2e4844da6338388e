"""The host's sockets from the kernel's socket-diagnostics netlink interface (Linux ``sock_diag``).

psutil's ``net_connections`` reads every line of ``/proc/net/tcp*`` and ``udp*`` and then maps
each socket to its process by listing every file descriptor of every process: on a busy host
(thousands of sockets, most of them in TIME_WAIT) that is tens to hundreds of milliseconds of
CPU per metrics report. The metrics need no process, only the listening and established
sockets, and ``sock_diag`` lets the kernel filter by state, so only those cross into Python.

Pure parsing (:func:`parse`) beside one netlink exchange per query (:func:`sockets`). On a
kernel without ``sock_diag`` (or outside Linux) :func:`sockets` raises ``OSError`` and the caller
falls back to psutil.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED, TCP_LISTEN = 1, 10
ALL_STATES = 0xFFFFFFFF

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI48s")  # inet_diag_req_v2: family, protocol, ext, pad, states, id
_MSG = struct.Struct("=BBBB2s2s16s16s")  # inet_diag_msg head: family, state, timer, retrans, id
MAX_BYTES = 64 * 1024 * 1024  # a bound on one answer, however many sockets the host has


class Sock(NamedTuple):
    """One socket as the kernel gives it: addresses still packed (see :func:`address`)."""

    family: int
    state: int
    sport: bytes  # big-endian
    dport: bytes
    src: bytes  # 16 bytes; an IPv4 address is the first 4
    dst: bytes

    @property
    def local(self) -> tuple[str, int]:
        return address(self.family, self.src), int.from_bytes(self.sport, "big")

    @property
    def remote(self) -> tuple[str, int]:
        return address(self.family, self.dst), int.from_bytes(self.dport, "big")


def address(family: int, packed: bytes) -> str:
    return socket.inet_ntop(family, packed[:4] if family == socket.AF_INET else packed)


def request(family: int, protocol: int, states: int, seq: int = 1) -> bytes:
    body = _REQ.pack(family, protocol, 0, 0, states, bytes(48))
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                     seq, 0) + body


def parse(data: bytes) -> tuple[list[Sock], bool]:
    """The sockets in one netlink answer buffer, and whether the dump is complete (DONE seen).

    Raises OSError for a netlink error message and ValueError for a malformed buffer.
    """
    out: list[Sock] = []
    pos, end = 0, len(data)
    while pos + _HDR.size <= end:
        length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, pos)
        if length < _HDR.size or pos + length > end:
            raise ValueError(f"netlink message of {length} bytes at {pos} does not fit")
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, pos + _HDR.size)
            raise OSError(-err, os.strerror(-err) if err else "netlink error")
        if kind == SOCK_DIAG_BY_FAMILY and length >= _HDR.size + _MSG.size:
            fam, state, _t, _r, sport, dport, src, dst = _MSG.unpack_from(data, pos + _HDR.size)
            out.append(Sock(fam, state, sport, dport, src, dst))
        pos += (length + 3) & ~3
    return out, False


def sockets(protocol: int, states: int) -> Iterator[Sock]:
    """The IPv4 and IPv6 sockets of ``protocol`` (IPPROTO_TCP / IPPROTO_UDP) in ``states``
    (a bit mask of ``1 << state``), asked of the kernel. OSError if it cannot answer."""
    if not hasattr(socket, "AF_NETLINK"):
        raise OSError("no netlink on this system")
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
            s.sendall(request(family, protocol, states, seq))
            got = 0
            while True:
                data = s.recv(1 << 16)
                got += len(data)
                if not data or got > MAX_BYTES:
                    raise OSError("socket diagnostics answer ended early or is too large")
                socks, done = parse(data)
                yield from socks
                if done:
                    break
