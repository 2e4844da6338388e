"""The serial link's frames, for both ends: the lock runs this file, and the gateway's
firmware_shim/serial_link.py imports it (it runs under CPython too).

``frame = sync 0xE5 0x57 | type u8 | seq u8 | length u16 | hcheck u8 | payload | crc u16``
(big-endian). ``hcheck`` is the low byte of the CRC of type, seq and length, so a false sync in
line noise is refused at once instead of making the decoder wait for up to a kilobyte of
"payload"; ``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over type, seq, length,
hcheck and payload. Payloads are at most :data:`MAX_PAYLOAD` bytes. The decoder hunts for the
sync bytes, drops a frame with a bad check or an oversized length and resynchronises one byte
later, so line noise or a hostile sender can cost bytes but never memory or a hang.
"""

SYNC = b"\xe5\x57"
MAX_PAYLOAD = 1024
T_CHALLENGE = 0x01
T_EVIDENCE = 0x81
T_ERROR = 0xFE


def crc16(data, crc=0xFFFF):
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def encode(ftype, seq, payload):
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("frame payload too large")
    head = bytes([ftype, seq & 0xFF]) + len(payload).to_bytes(2, "big")
    body = head + bytes([crc16(head) & 0xFF]) + bytes(payload)
    return SYNC + body + crc16(body).to_bytes(2, "big")


class Decoder:
    """Bytes in, ``(type, seq, payload)`` frames out; counts what it dropped."""

    def __init__(self):
        self.buf = b""
        self.dropped = 0

    def feed(self, data):
        self.buf += bytes(data)
        out = []  # type: list[tuple[int, int, bytes]]
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.buf = self.buf[-1:] if self.buf[-1:] == SYNC[:1] else b""
                return out
            self.buf = self.buf[i:]
            if len(self.buf) < 7:
                return out
            n = (self.buf[4] << 8) | self.buf[5]
            if n > MAX_PAYLOAD or crc16(self.buf[2:6]) & 0xFF != self.buf[6]:
                self.dropped += 1
                self.buf = self.buf[1:]
                continue
            if len(self.buf) < 9 + n:
                return out
            body = self.buf[2 : 7 + n]
            crc = (self.buf[7 + n] << 8) | self.buf[8 + n]
            if crc16(body) != crc:
                self.dropped += 1
                self.buf = self.buf[1:]
                continue
            self.buf = self.buf[9 + n :]
            out.append((body[0], body[1], body[5:]))
