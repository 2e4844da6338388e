"""Entry point on an ESP32 lock controller: copy to the board as ``main.py``.

The firmware measurement covers the running app partition (``Partition.RUNNING``); the
key, key id and boot counter live in the NVS namespace ``ewlock`` (put there at the factory, see
docs/LOCK.md; with flash encryption on, NVS is encrypted at rest). UART 1 talks to the gateway.
"""

import esp32
import machine
import time

from ewlock.lock import LockAttester

UART_ID = 1
BAUD = 115200
SCRIPTS = ("/main.py", "/lib/ewlock/lock.py", "/lib/ewlock/cose.py", "/lib/ewlock/cbor.py",
           "/lib/ewlock/frame.py")


class NvsKeys:
    """The key store interface LockAttester wants, over ESP32 NVS blobs."""

    def __init__(self, namespace):
        self.nvs = esp32.NVS(namespace)

    def get(self, name):
        buf = bytearray(64)
        try:
            n = self.nvs.get_blob(name, buf)
        except OSError:
            return None
        return bytes(buf[:n])

    def set(self, name, value):
        self.nvs.set_blob(name, value)
        self.nvs.commit()


def main():
    uart = machine.UART(UART_ID, baudrate=BAUD, timeout=10)
    # The docs allow Partition.RUNNING as the id; the stubs type it as a label string only.
    app = esp32.Partition(esp32.Partition.RUNNING)  # type: ignore[arg-type]
    lock = LockAttester(uart, app, NvsKeys("ewlock"), SCRIPTS, hwmodel="esp32-lock")
    lock.boot()
    while True:
        if not lock.poll():
            time.sleep_ms(5)


main()
