"""A real swtpm (TPM 2.0 emulator) on free loopback ports, for ``edgeward demo`` and the tests.

:func:`start_swtpm` runs ``swtpm socket --tpm2`` bound to 127.0.0.1 (server port and control
port ``port + 1``), with its state in the given folder, and waits until it listens; connect
tpm2-pytss with :attr:`Swtpm.tcti` (``swtpm:host=127.0.0.1,port=P``). Always :meth:`Swtpm.stop`
it (it is a context manager). Not for production: a board has a real TPM at /dev/tpmrm0.

I/O: the state folder and the swtpm process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def swtpm_binary() -> str | None:
    return shutil.which("swtpm")


@dataclass
class Swtpm:
    port: int
    ctrl_port: int
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Swtpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair for swtpm")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"swtpm exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("swtpm did not start listening")


def start_swtpm(state_dir: Path, *, attempts: int = 3) -> Swtpm:
    """Start swtpm with its state in ``state_dir`` (created); RuntimeError if it cannot."""
    binary = swtpm_binary()
    if binary is None:
        raise RuntimeError("swtpm is not installed (apt-get install swtpm)")
    state_dir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(attempts):
        port = free_port_pair()
        proc = subprocess.Popen(
            [
                binary, "socket", "--tpm2",
                "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--tpmstate", f"dir={state_dir}",
                "--flags", "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(port, proc)
        except RuntimeError:
            proc.kill()
            proc.wait()
            continue
        return Swtpm(port=port, ctrl_port=port + 1, state_dir=state_dir, proc=proc)
    raise RuntimeError("could not start swtpm on a free port")
