# The lock's microcontroller code, exercised the same way under MicroPython and CPython.
# Run by test_mcu.py: under Node.js on the MicroPython WebAssembly port (tools/micropython/run.mjs)
# and under CPython. Prints one JSON object per case; the two interpreters must agree byte for
# byte, and the CPython verifier appraises the tokens. MicroPython-compatible: no annotations.
import binascii
import json

try:
    from ewlock import cbor, cose, frame, lock  # MicroPython: installed as /lib/ewlock
except ImportError:
    from edgeward.firmware_shim.mcu import cbor, cose, frame, lock

KEY = bytes(range(32))
KID = b"lock-0001"
NONCE = b"gateway-nonce-0123456789abcdef"
BLOCK = 512
BLOCKS = 128  # 64 KiB of firmware


def hx(b):
    return binascii.hexlify(bytes(b)).decode()


def out(case, **kw):
    kw["case"] = case
    print(json.dumps(kw))


class FakeFlash:
    """A block device over a bytearray (readblocks / ioctl 4 and 5, as esp32.Partition)."""

    def __init__(self, data):
        self.data = data
        self.reads = 0

    def readblocks(self, n, buf):
        self.reads += 1
        start = n * BLOCK
        buf[:] = self.data[start : start + len(buf)]

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // BLOCK
        if op == 5:
            return BLOCK
        return 0


class FakeKeys:
    def __init__(self, values):
        self.values = dict(values)
        self.writes = 0

    def get(self, name):
        return self.values.get(name)

    def set(self, name, value):
        self.values[name] = bytes(value)
        self.writes += 1


class FakeUart:
    def __init__(self):
        self.written = []
        self.incoming = b""

    def write(self, data):
        self.written.append(bytes(data))
        return len(data)

    def read(self, n):
        data, self.incoming = self.incoming[:n], self.incoming[n:]
        return data or None


class FakeFile:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def readinto(self, buf):
        chunk = self.data[self.pos : self.pos + len(buf)]
        buf[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


SCRIPTS = {"/main.py": b"import ewlock\n# the lock's main loop\n",
           "/lib/bolt.py": b"def unlock():\n    pass\n"}


def opener(path, mode):
    return FakeFile(SCRIPTS[path])


def firmware():
    return bytearray([(i * 7 + 3) & 0xFF for i in range(BLOCK * BLOCKS)])


def make_lock(flash=None, keys=None):
    return lock.LockAttester(FakeUart(), flash or FakeFlash(firmware()),
                             keys or FakeKeys({"key": KEY, "kid": KID}),
                             ("/main.py", "/lib/bolt.py"), hwmodel="esp32-lock", opener=opener)


def case_vectors():
    values = [0, 23, 24, 255, 256, 65535, 65536, 2**32, -1, -24, -25, -70004, b"", b"\x00" * 30,
              "", "lock", [1, [2, 3]], {1: 5, 4: b"kid"}, {"b": 1, "a": 2, 10: 3, -1: 4},
              True, False, None]
    out("cbor", encodings=[hx(cbor.dumps(v)) for v in values])
    out("hmac", rfc4231_2=hx(cose.hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        long_key=hx(cose.hmac_sha256(b"k" * 100, b"msg")))
    out("crc", check=frame.crc16(b"123456789"))


def case_boot_and_answer():
    keys = FakeKeys({"key": KEY, "kid": KID})
    lk = make_lock(keys=keys)
    lk.boot()
    lk = make_lock(keys=keys)  # a restart
    count = lk.boot()
    lk.feed(frame.encode(frame.T_CHALLENGE, 7, NONCE))
    frames = frame.Decoder().feed(b"".join(lk.uart.written))
    ftype, seq, token = frames[0]
    out("answer", bootcount=count, type=ftype, seq=seq, token=hx(token), frames=len(frames))


def case_hostile_frames():
    lk = make_lock()
    lk.boot()
    good = frame.encode(frame.T_CHALLENGE, 9, NONCE)
    bad_crc = bytearray(frame.encode(frame.T_CHALLENGE, 8, NONCE))
    bad_crc[-1] ^= 0xFF
    huge = frame.SYNC + bytes([frame.T_CHALLENGE, 3, 0xFF, 0xFF]) + b"x" * 20
    noise = b"\x00\xe5\xe5\x57" + bytes(range(40))
    stream = noise + bytes(bad_crc) + huge + good
    answered = 0
    for i in range(0, len(stream), 5):  # arrives in dribbles, as from a UART
        answered += lk.feed(stream[i : i + 5])
    frames = frame.Decoder().feed(b"".join(lk.uart.written))
    out("hostile", answered=answered, seqs=[f[1] for f in frames],
        types=[f[0] for f in frames], dropped=lk.decoder.dropped)


def case_bad_requests():
    lk = make_lock()
    lk.boot()
    lk.feed(frame.encode(frame.T_CHALLENGE, 1, b"short"))
    lk.feed(frame.encode(0x42, 2, NONCE))
    frames = frame.Decoder().feed(b"".join(lk.uart.written))
    out("bad", answers=[[f[0], f[1], bytes(f[2]).decode()] for f in frames])
    try:
        make_lock(keys=FakeKeys({}))
        out("nokey", refused=False)
    except ValueError as e:
        out("nokey", refused=True, why=str(e))


def case_tampered_firmware():
    fw = firmware()
    fw[1000] ^= 0x01  # one bit of the partition flipped
    lk = make_lock(flash=FakeFlash(fw))
    lk.boot()
    lk.uart.incoming = frame.encode(frame.T_CHALLENGE, 1, NONCE)
    lk.poll()
    frames = frame.Decoder().feed(b"".join(lk.uart.written))
    out("tampered", token=hx(frames[0][2]))


case_vectors()
case_boot_and_answer()
case_hostile_frames()
case_bad_requests()
case_tampered_firmware()
