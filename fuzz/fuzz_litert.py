"""Fuzz LiteRT behind the validator: models that pass ``validate()`` must not crash the runtime.

Input: a ``.tflite`` file. It goes through ``validate()`` first (clean refusals end there).
A model that passes is sent to a LiteRT worker subprocess (``_litert_worker.py``) that loads it,
fills the inputs with zeros and invokes it. The validator's code is what atheris instruments, so
coverage grows along the validator's accepting paths.

Oracle: a refusal by the validator or by LiteRT (an error, not a crash) is clean. The worker
dying on a signal, or not answering within 20 s, means the validator passed a model that breaks
the runtime: a validator bug, raised as ``LiteRTCrashError`` (the input is kept as a crash, or
under fuzz/findings/ with FUZZ_KEEP_GOING=1). The worker is restarted after a crash.
"""

from __future__ import annotations

import select
import signal
import struct
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main

WORKER = Path(__file__).resolve().parent / "_litert_worker.py"
TIMEOUT = 20.0


class LiteRTCrashError(Exception):
    """The runtime crashed or hung on a model that the validator passed."""


class _Worker:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.accepted = 0

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self.proc

    def _kill(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait()
        self.proc = None
        return rc

    def run(self, model: bytes) -> int:
        p = self._start()
        assert p.stdin is not None and p.stdout is not None
        try:
            p.stdin.write(struct.pack(">I", len(model)) + model)
            p.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([p.stdout], [], [], TIMEOUT)
        if not ready:
            self._kill()
            raise LiteRTCrashError(f"LiteRT did not finish within {TIMEOUT:.0f} s")
        status = p.stdout.read(1)
        if not status:
            rc = self._kill()
            name = signal.Signals(-rc).name if rc is not None and rc < 0 else f"exit {rc}"
            raise LiteRTCrashError(f"LiteRT died ({name}) on a model the validator passed")
        self.accepted += 1
        if self.accepted & (self.accepted - 1) == 0:  # 1, 2, 4, 8, ...: a progress line
            print(f"== LITERT ran {self.accepted} validator-passing models", file=sys.stderr,
                  flush=True)
        return status[0]

    def close(self) -> None:
        if self.proc is not None:
            self._kill()


def setup() -> OneInput:
    import atexit

    from edgeward.models.tflite.validate import validate

    worker = _Worker()
    atexit.register(worker.close)

    def one(data: bytes) -> None:
        validate(data)  # MalformedModelError / PolicyError: clean, handled by the oracle
        worker.run(bytes(data))

    one.worker = worker  # type: ignore[attr-defined]
    return one


if __name__ == "__main__":
    main("litert", setup)
