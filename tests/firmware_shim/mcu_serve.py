# The lock's code serving a serial line under MicroPython (tools/micropython/run.mjs --serve):
# stdin bytes are the UART's receive side, host.write() its transmit side. Used by
# test_serial_link.py, which puts pyserial on the gateway's end of a pty.
import binascii

import host  # registered by run.mjs: host.write(hex) writes raw bytes to stdout
from ewlock import lock

KEY = bytes(range(32))
KID = b"lock-0001"


class Flash:
    def readblocks(self, n, buf):
        for i in range(len(buf)):
            buf[i] = (n * 512 + i) * 7 + 3 & 0xFF

    def ioctl(self, op, arg):
        return 128 if op == 4 else 512 if op == 5 else 0


class Keys:
    def __init__(self):
        self.v = {"key": KEY, "kid": KID}

    def get(self, name):
        return self.v.get(name)

    def set(self, name, value):
        self.v[name] = bytes(value)


class Uart:
    def write(self, data):
        host.write(binascii.hexlify(bytes(data)).decode())

    def read(self, n):
        return None


class Opener:
    def __call__(self, path, mode):
        raise OSError("no scripts in this test")


LOCK = lock.LockAttester(Uart(), Flash(), Keys(), (), hwmodel="esp32-lock")
LOCK.boot()


def on_bytes(hexdata):
    LOCK.feed(binascii.unhexlify(hexdata))
