"""Shared pytest fixture: a real swtpm (TPM 2.0 emulator) on free loopback ports.

Use it from any test folder with ``pytest_plugins = ["tests.fixtures_tpm"]`` in that folder's
conftest.py (or import the fixture). ``swtpm`` yields a :class:`Swtpm` with the TCTI string for
tpm2-pytss; the process and its state folder are removed afterwards. Tests that need it are
skipped when swtpm or tpm2-pytss is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Swtpm:
    port: int
    ctrl_port: int
    state_dir: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"


def _free_port_pair() -> int:
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


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (apt-get install swtpm)")
    pytest.importorskip("tpm2_pytss")
    state = tmp_path / "swtpm-state"
    state.mkdir()
    for _attempt in range(3):
        port = _free_port_pair()
        proc = subprocess.Popen(
            [
                "swtpm", "socket", "--tpm2",
                "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--tpmstate", f"dir={state}",
                "--flags", "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_listening(port, proc)
        except RuntimeError:
            proc.kill()
            proc.wait()
            continue
        try:
            yield Swtpm(port=port, ctrl_port=port + 1, state_dir=state)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pytest.fail("could not start swtpm on a free port")
