"""Running the lock's code on MicroPython (Node.js + the WebAssembly port) and on CPython."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeward.attestation.submods import LockRegistration

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tools" / "micropython" / "run.mjs"
WASM = REPO / "tools/micropython/node_modules/@micropython/micropython-webassembly-pyscript"
HERE = Path(__file__).parent
KEY = bytes(range(32))
KID = b"lock-0001"
NONCE = b"gateway-nonce-0123456789abcdef"
SCRIPTS = {"main.py": b"import ewlock\n# the lock's main loop\n",
           "bolt.py": b"def unlock():\n    pass\n"}


def micropython_available() -> None:
    """Fail (not skip) when the project's set-up was not run: `make micropython` installs it."""
    if shutil.which("node") is None or not WASM.exists():
        pytest.fail("MicroPython under Node.js is not installed: run `make micropython` "
                    "(needs the Debian packages nodejs and npm)")


def run_micropython(script: Path, timeout: float = 60) -> str:
    micropython_available()
    p = subprocess.run(["node", str(RUNNER), str(script)], capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def run_cpython(script: Path, timeout: float = 60) -> str:
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def cases(output: str) -> dict[str, dict]:
    out = {}
    for line in output.splitlines():
        obj = json.loads(line)
        out[obj.pop("case")] = obj
    return out


def firmware(blocks: int = 128, block: int = 512) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(block * blocks))


def registration(**kw: Any) -> LockRegistration:
    base: dict[str, Any] = dict(name="lock-mcu", key_id=KID, key=KEY,
                firmware=frozenset({hashlib.sha256(firmware()).digest()}),
                scripts={n: frozenset({hashlib.sha256(d).digest()}) for n, d in SCRIPTS.items()},
                hwmodel="esp32-lock")
    base.update(kw)
    return LockRegistration(**base)


class FakeFlash:
    def __init__(self, data: bytes | bytearray) -> None:
        self.data = bytearray(data)

    def readblocks(self, n: int, buf) -> None:
        buf[:] = self.data[n * 512 : n * 512 + len(buf)]

    def ioctl(self, op: int, arg: int) -> int:
        return len(self.data) // 512 if op == 4 else 512 if op == 5 else 0


class FakeKeys(dict):
    def set(self, name: str, value: bytes) -> None:
        self[name] = bytes(value)


def cpython_lock(fw: bytes | None = None, keys: FakeKeys | None = None):
    import io

    from edgeward.firmware_shim.mcu.lock import LockAttester

    class Port:
        def __init__(self) -> None:
            self.pending = b""
            self.lock = None

        def write(self, data: bytes) -> int:  # bytes to the gateway
            self.pending += bytes(data)
            return len(data)

    uart = Port()
    lock = LockAttester(uart, FakeFlash(firmware() if fw is None else fw),
                        keys if keys is not None else FakeKeys(key=KEY, kid=KID),
                        ("/main.py", "/lib/bolt.py"), hwmodel="esp32-lock",
                        opener=lambda p, m: io.BytesIO(SCRIPTS[p.rsplit("/", 1)[-1]]))
    lock.boot()
    return lock, uart


class LoopbackPort:
    """Gateway side of a direct wire to a CPython lock core: writes feed the lock, reads take
    what it answered."""

    def __init__(self, lock, uart) -> None:
        self.lock, self.uart = lock, uart

    def write(self, data: bytes) -> int:
        self.lock.feed(data)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        out, self.uart.pending = self.uart.pending[:size], self.uart.pending[size:]
        return out
