"""The lock's sub-attester: measure, count boots, answer a nonce with a MAC'd EAT.

:class:`LockAttester` takes its UART, flash, key store and script files as arguments:

* ``flash``: a block device (``readblocks(n, buf)``, ``ioctl(4, 0)`` block count, ``ioctl(5,
  0)`` block size), e.g. the running app partition of an ESP32; the whole partition
  is hashed with SHA-256 (the firmware measurement);
* ``keys``: a key store with ``get(name) -> bytes or None`` and ``set(name, bytes)``, e.g. the
  ESP32's NVS (see main_esp32.py); it holds the provisioned ``key`` (32 bytes) and ``kid``,
  and the monotonic ``bootcount``, incremented once per start by :meth:`LockAttester.boot`;
* ``scripts``: paths of the lock's own MicroPython files, each hashed;
* ``uart``: ``read(n) -> bytes or None``, ``write(bytes)``.

The answer to a nonce is an EAT (RFC 9711) with ``eat_nonce`` (10), ``ueid`` (256), ``hwmodel``
(259), ``bootcount`` (267), ``swname`` (270), ``swversion`` (271) and ``measurements`` (273,
content format 65101: ``{"firmware": bstr, "firmware-size": uint, "scripts": [[name, bstr]]}``),
in a COSE_Mac0 (:mod:`.cose`). A frame other than a challenge gets an error frame back.
"""

import hashlib

from . import cbor, cose, frame

MEASUREMENTS_FORMAT = 65101
SWNAME = "edgeward-lock"
SWVERSION = "1.0.0"
MIN_NONCE = 8
MAX_NONCE = 64
CHUNK_BLOCKS = 8


def measure_flash(flash):
    count = flash.ioctl(4, 0)
    size = flash.ioctl(5, 0)
    h = hashlib.sha256()
    buf = bytearray(size * CHUNK_BLOCKS)
    n = 0
    while n < count:
        k = min(CHUNK_BLOCKS, count - n)
        view = memoryview(buf)[: size * k]
        flash.readblocks(n, view)
        h.update(view)
        n += k
    return h.digest(), count * size


def measure_file(path, opener=open):
    h = hashlib.sha256()
    buf = bytearray(512)
    with opener(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return h.digest()


class LockAttester:
    def __init__(self, uart, flash, keys, scripts=(), hwmodel="esp32-lock", opener=open):
        self.uart = uart
        self.flash = flash
        self.keys = keys
        self.scripts = tuple(scripts)
        self.hwmodel = hwmodel
        self.opener = opener
        self.decoder = frame.Decoder()
        key = keys.get("key")
        kid = keys.get("kid")
        if not key or len(key) < 32 or not kid:
            raise ValueError("the lock has no provisioned key")
        self.key = key
        self.kid = kid
        self.bootcount = 0
        self._measured = None

    def boot(self):
        """Count this start in the monotonic boot counter (non-volatile)."""
        raw = self.keys.get("bootcount")
        count = int.from_bytes(raw, "big") if raw else 0
        count += 1
        self.keys.set("bootcount", count.to_bytes(8, "big"))
        self.bootcount = count
        return count

    def measurements(self):
        if self._measured is None:
            digest, size = measure_flash(self.flash)
            scripts = []
            for p in self.scripts:
                try:
                    scripts.append([p.rsplit("/", 1)[-1], measure_file(p, self.opener)])
                except OSError:
                    pass  # a missing script is left out; the verifier reports it missing
            self._measured = cbor.dumps({"firmware": digest, "firmware-size": size,
                                         "scripts": scripts})
        return self._measured

    def remeasure(self):
        self._measured = None

    def evidence(self, nonce):
        if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
            raise ValueError("nonce must be 8..64 bytes")
        claims = {
            10: bytes(nonce),
            256: b"\x01" + hashlib.sha256(b"edgeward-lock-ueid" + self.kid).digest()[:16],
            259: self.hwmodel.encode(),
            267: self.bootcount,
            270: SWNAME,
            271: [SWVERSION],
            273: [[MEASUREMENTS_FORMAT, self.measurements()]],
        }
        return cose.mac0(cbor.dumps(claims), self.key, self.kid)

    def handle(self, ftype, seq, payload):
        """One frame in, the answer frame's bytes out."""
        if ftype != frame.T_CHALLENGE:
            return frame.encode(frame.T_ERROR, seq, b"unknown frame type")
        try:
            token = self.evidence(payload)
        except ValueError as e:
            return frame.encode(frame.T_ERROR, seq, str(e).encode())
        return frame.encode(frame.T_EVIDENCE, seq, token)

    def feed(self, data):
        """Bytes from the UART in; answers written back to it. Returns frames answered."""
        answered = 0
        for ftype, seq, payload in self.decoder.feed(data):
            self.uart.write(self.handle(ftype, seq, payload))
            answered += 1
        return answered

    def poll(self):
        """Read what the UART has and answer it (call from the main loop)."""
        data = self.uart.read(256)
        if data:
            return self.feed(data)
        return 0
