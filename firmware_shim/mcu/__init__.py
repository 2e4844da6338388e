"""Code for a smart lock's microcontroller (ESP32, RP2040) under MicroPython.

It runs on the lock, not on the gateway: install the folder as the package ``ewlock`` on the
board (``mpremote cp -r firmware_shim/mcu :/lib/ewlock``, or the ``.mpy`` files ``make mpy``
builds). Written for MicroPython: no annotations at run time (mypy checks it against the
micropython-rp2 and micropython-esp32 stubs), relative imports only, buses and storage passed
in as arguments so the same code runs on a board, under the MicroPython interpreter in tests,
and under CPython. See docs/LOCK.md.
"""
