"""Entry point on an RP2040 lock controller: copy to the board as ``main.py``.

The firmware measurement covers the MicroPython image in the first MiB of flash, read from the
memory-mapped (XIP) flash with ``machine.mem8`` (``rp2.Flash`` only reaches the filesystem
region); the key, key id and boot counter live in
small files under ``/keys`` (the RP2040 has no protected storage: see docs/LOCK.md for what that
means for the vector). UART 0 talks to the gateway.
"""

import machine
import time

from ewlock.lock import LockAttester

XIP_BASE = 0x10000000
IMAGE_BYTES = 0x100000
BLOCK = 4096
SCRIPTS = ("/main.py", "/lib/ewlock/lock.py", "/lib/ewlock/cose.py", "/lib/ewlock/cbor.py",
           "/lib/ewlock/frame.py")


class XipImage:
    """A read-only block device over the memory-mapped flash holding the firmware image."""

    def readblocks(self, n, buf):
        base = XIP_BASE + n * BLOCK
        for i in range(len(buf)):
            buf[i] = machine.mem8[base + i]

    def ioctl(self, op, arg):
        if op == 4:
            return IMAGE_BYTES // BLOCK
        if op == 5:
            return BLOCK
        return 0


class FileKeys:
    def get(self, name):
        try:
            with open("/keys/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def set(self, name, value):
        tmp = "/keys/" + name + ".tmp"
        with open(tmp, "wb") as f:
            f.write(value)
        import os

        os.rename(tmp, "/keys/" + name)


def main():
    uart = machine.UART(0, baudrate=115200, timeout=10)
    lock = LockAttester(uart, XipImage(), FileKeys(), SCRIPTS, hwmodel="rp2040-lock")
    lock.boot()
    while True:
        if not lock.poll():
            time.sleep_ms(5)


main()
