"""The gateway's end of the serial link to a lock's microcontroller.

Frames (encoded and decoded by ``firmware_shim/mcu/frame.py``, the code that runs on the
microcontroller, imported here: one codec for both ends)::

    sync 0xE5 0x57 | type u8 | seq u8 | length u16 | hcheck u8 | payload | crc u16  (big-endian)

``hcheck`` is the low byte of the CRC of type, seq and length (a false sync in line noise is
refused at once instead of stalling the decoder for a kilobyte), ``crc`` is CRC-16/CCITT-FALSE
(poly 0x1021, init 0xFFFF) over everything after the sync, and a payload is at most
:data:`MAX_PAYLOAD` bytes. :class:`FrameDecoder` is pure (bytes in, frames out): it hunts for
the sync bytes and drops frames with a bad check or an oversized length.

:class:`McuLink` asks the microcontroller for evidence: it sends a challenge with a fresh
sequence number and waits for the answer carrying that number; a stale answer (an earlier
sequence number, say from a request that timed out) or a corrupt frame is dropped. With no
valid answer within ``timeout`` it sends again, up to ``retries`` times, then raises
:class:`SubAttesterUnreachable`. Every wait is bounded by the injected clock, so a dead,
slow or babbling microcontroller costs at most ``retries * timeout`` seconds, never a hang.

The port is anything with ``read(n)`` (returning what arrived within its own short timeout)
and ``write(data)``: pyserial's ``Serial`` on a board (:func:`open_serial`), a fake in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeward.core.errors import DeviceError, MalformedInputError
from edgeward.firmware_shim.mcu import frame as _mcu_frame

logger = logging.getLogger(__name__)

# The frame codec is the lock's own (firmware_shim/mcu/frame.py runs under CPython too): one
# codec, so the two ends cannot drift apart. These names are the gateway's view of it.
SYNC = _mcu_frame.SYNC
MAX_PAYLOAD = _mcu_frame.MAX_PAYLOAD
T_CHALLENGE = _mcu_frame.T_CHALLENGE
T_EVIDENCE = _mcu_frame.T_EVIDENCE
T_ERROR = _mcu_frame.T_ERROR


class SubAttesterUnreachable(DeviceError):
    """The microcontroller gave no valid answer in time, after every retry."""


class SubAttesterError(DeviceError):
    """The microcontroller answered with an error frame."""


class Port(Protocol):
    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (check value for b"123456789": 0x29B1)."""
    return int(_mcu_frame.crc16(data, crc))


def encode_frame(ftype: int, seq: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise MalformedInputError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes(_mcu_frame.encode(ftype, seq, payload))


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


class FrameDecoder:
    """Bytes in, :class:`Frame` objects out; ``dropped`` counts corrupt or oversized frames."""

    def __init__(self) -> None:
        self._decoder = _mcu_frame.Decoder()

    @property
    def dropped(self) -> int:
        return int(self._decoder.dropped)

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for the rest of a frame."""
        return len(self._decoder.buf)

    def reset(self) -> None:
        """Forget a partial frame (what is left of an answer that never completed)."""
        self._decoder.buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        return [Frame(t, s, bytes(p)) for t, s, p in self._decoder.feed(data)]


class McuLink:
    """Request/response over a :class:`Port` with sequence numbers, timeouts and retries."""

    def __init__(self, port: Port, *, timeout: float = 1.0, retries: int = 3,
                 clock: Callable[[], float] = time.monotonic, first_seq: int = 0) -> None:
        if timeout <= 0 or not 1 <= retries <= 10:
            raise ValueError("timeout must be positive and retries 1..10")
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.clock = clock
        self.seq = first_seq & 0xFF
        self.decoder = FrameDecoder()
        self.stale = 0

    def request(self, ftype: int, payload: bytes) -> Frame:
        self.seq = (self.seq + 1) & 0xFF
        frame = encode_frame(ftype, self.seq, payload)
        for attempt in range(1, self.retries + 1):
            self.decoder.reset()  # a half frame left by the last try can never complete it
            try:
                self.port.write(frame)
                deadline = self.clock() + self.timeout
                while self.clock() < deadline:
                    for f in self.decoder.feed(self.port.read(256)):
                        if f.seq == self.seq:
                            return f
                        self.stale += 1
                        logger.debug("dropped a stale answer (seq %d, want %d)", f.seq, self.seq)
            except OSError as e:  # pyserial's SerialException too: an unplugged USB adapter
                raise SubAttesterUnreachable(
                    f"sub-attester unreachable: serial port error: {e}",
                    hint="check the lock's serial cable and power") from e
            logger.info("microcontroller silent for %.1f s (try %d of %d)",
                        self.timeout, attempt, self.retries)
        raise SubAttesterUnreachable(
            f"sub-attester unreachable: no valid answer after {self.retries} tries of "
            f"{self.timeout:g} s ({self.decoder.dropped} corrupt frames)",
            hint="check the lock's serial cable and power")

    def challenge(self, nonce: bytes) -> bytes:
        """The microcontroller's COSE_Mac0 token answering ``nonce``."""
        f = self.request(T_CHALLENGE, nonce)
        if f.type == T_ERROR:
            # the microcontroller's words, escaped: they end up in logs and EAR reasons
            why = f.payload[:200].decode("utf-8", "replace")
            raise SubAttesterError("sub-attester refused the challenge: "
                                   + why.encode("unicode_escape").decode("ascii"))
        if f.type != T_EVIDENCE:
            raise SubAttesterError(f"sub-attester answered with frame type 0x{f.type:02x}")
        return f.payload


def open_serial(device: str, baud: int = 115200, *, read_timeout: float = 0.05) -> Any:
    """A pyserial port (the edge): a missing device or pyserial is a clear DeviceError."""
    try:
        import serial
    except ImportError as e:
        raise DeviceError("pyserial is not installed",
                          hint="pip install 'edgeward[agent]'") from e
    try:
        return serial.Serial(device, baudrate=baud, timeout=read_timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        raise DeviceError(f"cannot open the lock's serial port {device}: {e}",
                          hint="check the device path and that the agent may use it "
                          "(dialout group)") from e
