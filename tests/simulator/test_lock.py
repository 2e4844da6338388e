"""The simulator's lock microcontroller: the lock's MicroPython code on the real MicroPython
interpreter (WebAssembly port under Node.js), on a virtual serial line, appraised by the verifier
with the registration the simulator writes; a reflashed lock with tampered firmware is caught."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from edgeward.attestation.submods import LockRegistration, appraise_one, locks_from_toml
from edgeward.core.tomlconf import load_toml
from edgeward.firmware_shim.serial_link import McuLink, open_serial
from edgeward.simulator.lock import LOCK_NAME, LockHost, genuine_firmware, micropython_missing


def _registration(lock: LockHost, tmp_path: Path) -> LockRegistration:
    path = tmp_path / "locks.toml"
    path.write_text(lock.registration_toml(str(lock.key_file)))
    table = locks_from_toml(load_toml(path), base=tmp_path)
    return table[(lock.gateway, LOCK_NAME)]


def _appraise(link: McuLink, lock: LockHost, tmp_path: Path) -> list[str]:
    """The verifier's reasons for the lock's answer to a fresh nonce."""
    nonce = secrets.token_bytes(32)
    res = appraise_one(LOCK_NAME, link.challenge(nonce), nonce=nonce,
                       registration=_registration(lock, tmp_path))
    return list(res.reasons)


def test_lock_on_a_pty_answers_the_gateway_and_a_reflashed_firmware_is_caught(
    tmp_path: Path,
) -> None:
    """Attack: the bolt controller reflashed with patched firmware beside a genuine gateway."""
    assert micropython_missing() is None, micropython_missing()
    lock = LockHost(tmp_path / "lock", "gw-01", qemu=False)
    try:
        lock.start()
        link = McuLink(open_serial(lock.port), timeout=2.0, retries=3)
        reasons = _appraise(link, lock, tmp_path)
        assert any("firmware is approved" in r for r in reasons), reasons
        assert any("4 script(s) approved" in r for r in reasons), reasons
        lock.tamper()
        reasons2 = _appraise(link, lock, tmp_path)
        assert any("tampered lock firmware" in r for r in reasons2), reasons2
        assert (tmp_path / "lock" / "bootcount").read_text().strip() == "2"  # restarted, counted
        lock.restore()
        reasons3 = _appraise(link, lock, tmp_path)
        assert any("firmware is approved" in r for r in reasons3), reasons3
        assert "boot 3" in " ".join(reasons3)
    finally:
        lock.stop()
    assert lock._node is None


def test_lock_on_a_unix_socket_serves_the_guests_console(tmp_path: Path) -> None:
    """The QEMU side of the line: the guest's virtio console connects to the lock's socket."""
    lock = LockHost(tmp_path / "lock", "gw-02", qemu=True)
    try:
        lock.start()
        assert lock.port == "/dev/hvc1"
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(lock.socket_path))

        class Port:
            def write(self, data: bytes) -> int:
                s.sendall(data)
                return len(data)

            def read(self, size: int = 1) -> bytes:
                s.settimeout(0.05)
                try:
                    return s.recv(size)
                except TimeoutError:
                    return b""

        link = McuLink(Port(), timeout=2.0, retries=3)
        reasons = _appraise(link, lock, tmp_path)
        assert any("firmware is approved" in r for r in reasons), reasons
        s.close()
    finally:
        lock.stop()


def test_each_lock_has_its_own_key_kept_private(tmp_path: Path) -> None:
    a = LockHost(tmp_path / "a", "gw-a", qemu=True)
    b = LockHost(tmp_path / "b", "gw-b", qemu=True)
    try:
        assert a.key != b.key and len(a.key) == 32
        assert os.stat(a.key_file).st_mode & 0o077 == 0
        assert genuine_firmware("gw-a") != genuine_firmware("gw-b")
    finally:
        a.stop()
        b.stop()
