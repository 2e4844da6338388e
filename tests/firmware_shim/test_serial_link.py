"""The gateway's serial link: frames interoperate with the microcontroller's code, a dead, slow or
babbling microcontroller costs bounded time and ends in "sub-attester unreachable", and pyserial
over a pty talks to the lock's code running on MicroPython."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcu_helpers import HERE, NONCE, RUNNER, micropython_available

from edgeward.core.errors import DeviceError, MalformedInputError
from edgeward.firmware_shim import serial_link as L
from edgeward.firmware_shim.mcu import frame as M


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedPort:
    """A port whose answers are scripted per request; every read costs 50 ms of fake time."""

    def __init__(self, clock: FakeClock, answer) -> None:
        self.clock = clock
        self.answer = answer  # (request frame, attempt) -> bytes to deliver (or b"")
        self.pending = b""
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        self.pending += self.answer(data, len(self.writes))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self.clock.t += 0.05
        out, self.pending = self.pending[:size], self.pending[size:]
        return out


def answer_with(ftype: int, payload: bytes, *, seq_shift: int = 0):
    def answer(req: bytes, attempt: int) -> bytes:
        (f,) = L.FrameDecoder().feed(req)
        return L.encode_frame(ftype, f.seq + seq_shift, payload)
    return answer


def test_gateway_and_microcontroller_frames_are_the_same_bytes() -> None:
    # One codec: the gateway imports the lock's (no twin to drift apart).
    assert L._mcu_frame is M
    for t, seq, payload in [(1, 0, b""), (0x81, 255, b"x" * 1024), (0xFE, 3, NONCE)]:
        assert L.encode_frame(t, seq, payload) == M.encode(t, seq, payload)
        assert L.FrameDecoder().feed(M.encode(t, seq, payload)) == [L.Frame(t, seq, payload)]
    assert L.crc16(b"123456789") == M.crc16(b"123456789") == 0x29B1
    with pytest.raises(MalformedInputError):
        L.encode_frame(1, 0, bytes(1025))


def test_answer_arrives() -> None:
    clock = FakeClock()
    port = ScriptedPort(clock, answer_with(L.T_EVIDENCE, b"token"))
    assert L.McuLink(port, clock=clock).challenge(NONCE) == b"token"
    assert len(port.writes) == 1


def test_dead_microcontroller_is_unreachable_after_bounded_retries() -> None:
    clock = FakeClock()
    port = ScriptedPort(clock, lambda req, n: b"")
    link = L.McuLink(port, timeout=0.5, retries=3, clock=clock)
    with pytest.raises(L.SubAttesterUnreachable, match="sub-attester unreachable") as e:
        link.challenge(NONCE)
    assert len(port.writes) == 3 and clock.t <= 3 * 0.5 + 0.2
    assert isinstance(e.value, DeviceError)


def test_replayed_stale_answer_is_dropped_then_the_retry_succeeds() -> None:
    # Attack: an answer to an earlier request (or a recorded one) is offered for this one.
    clock = FakeClock()

    def answer(req: bytes, attempt: int) -> bytes:
        (f,) = L.FrameDecoder().feed(req)
        if attempt == 1:
            return L.encode_frame(L.T_EVIDENCE, f.seq - 1, b"old token")
        return L.encode_frame(L.T_EVIDENCE, f.seq, b"fresh token")

    link = L.McuLink(ScriptedPort(clock, answer), timeout=0.5, clock=clock)
    assert link.challenge(NONCE) == b"fresh token"
    assert link.stale == 1


def test_corrupt_answer_wrong_crc_then_good_on_retry() -> None:
    clock = FakeClock()

    def answer(req: bytes, attempt: int) -> bytes:
        (f,) = L.FrameDecoder().feed(req)
        good = L.encode_frame(L.T_EVIDENCE, f.seq, b"token")
        return good[:-1] + bytes([good[-1] ^ 1]) if attempt == 1 else good

    link = L.McuLink(ScriptedPort(clock, answer), timeout=0.5, clock=clock)
    assert link.challenge(NONCE) == b"token"
    assert link.decoder.dropped >= 1


def test_slow_microcontroller_answering_after_the_timeout_is_retried() -> None:
    clock = FakeClock()

    def answer(req: bytes, attempt: int) -> bytes:
        (f,) = L.FrameDecoder().feed(req)
        # the first answer comes after 15 reads (0.75 s) of line noise: past the 0.5 s timeout
        late = b"\xff" * 15 * 256 + L.encode_frame(L.T_EVIDENCE, f.seq, b"late")
        return late if attempt == 1 else L.encode_frame(L.T_EVIDENCE, f.seq, b"token")

    port = ScriptedPort(clock, answer)
    link = L.McuLink(port, timeout=0.5, retries=3, clock=clock)
    # a retry repeats the request's sequence number, so the late answer, arriving during
    # the second try, still answers this nonce and is taken
    assert link.challenge(NONCE) == b"late"
    assert len(port.writes) == 2 and clock.t < 1.2


def test_error_frame_and_wrong_type_are_device_errors() -> None:
    clock = FakeClock()
    link = L.McuLink(ScriptedPort(clock, answer_with(L.T_ERROR, b"nonce must be 8..64 bytes")),
                     clock=clock)
    with pytest.raises(L.SubAttesterError, match="refused the challenge: nonce must be"):
        link.challenge(b"short")
    link = L.McuLink(ScriptedPort(clock, answer_with(0x33, b"")), clock=clock)
    with pytest.raises(L.SubAttesterError, match="frame type 0x33"):
        link.challenge(NONCE)


def test_oversized_length_field_does_not_stall_the_decoder() -> None:
    d = L.FrameDecoder()
    evil = L.SYNC + bytes([0x81, 1, 0xFF, 0xFF]) + bytes(10)
    good = L.encode_frame(0x81, 2, b"ok")
    assert d.feed(evil + good) == [L.Frame(0x81, 2, b"ok")]
    assert d.dropped == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2000))
def test_fuzzed_line_noise_never_crashes_and_never_hides_a_good_frame(noise: bytes,
                                                                      cut: int) -> None:
    d = L.FrameDecoder()
    good = L.encode_frame(0x81, 5, b"evidence")
    frames = d.feed(noise) + d.feed(good) + d.feed(good)
    # noise may swallow the first copy at worst; the second always arrives intact
    assert L.Frame(0x81, 5, b"evidence") in frames
    assert d.buffered <= len(noise) + 2 * len(good)


def test_missing_serial_device_is_a_clear_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match="cannot open the lock's serial port"):
        L.open_serial(str(tmp_path / "ttyNOPE"))


class MicroPythonOnPty:
    """The lock's code on MicroPython (node) behind a pty: the gateway opens the pty's other end
    with pyserial, as it opens /dev/ttyAMA0 on a board."""

    def __init__(self) -> None:
        micropython_available()
        import tty

        # keep our own slave fd open: a pty master whose slave nobody holds reads EIO
        self.master, self.slave = os.openpty()
        self.slave_name = os.ttyname(self.slave)
        tty.setraw(self.slave)

        self.proc = subprocess.Popen(
            ["node", str(RUNNER), str(HERE / "mcu_serve.py"), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stop = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        while not self.stop:
            r, _, _ = select.select([self.master, out], [], [], 0.05)
            try:
                if self.master in r:
                    self.proc.stdin.write(os.read(self.master, 4096))
                    self.proc.stdin.flush()
                if out in r:
                    data = os.read(out, 4096)
                    if not data:
                        return
                    os.write(self.master, data)
            except OSError:
                return

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        os.close(self.master)
        os.close(self.slave)


def test_pyserial_gateway_to_lock_code_on_micropython_over_a_pty() -> None:
    from mcu_helpers import registration

    from edgeward.attestation.submods import appraise_one

    lock = MicroPythonOnPty()
    try:
        port = L.open_serial(lock.slave_name, 115200)
        try:
            link = L.McuLink(port, timeout=5.0, retries=2)
            t0 = time.monotonic()
            token = link.challenge(NONCE)
            second = link.challenge(NONCE)
            assert time.monotonic() - t0 < 10
        finally:
            port.close()
    finally:
        lock.close()
    res = appraise_one("lock-mcu", token, nonce=NONCE,
                       registration=registration(scripts={}))
    assert res.status == 2, res.reasons
    assert second == token  # same nonce, same boot: the same MAC


def test_unplugged_serial_adapter_is_unreachable_not_a_crash() -> None:
    """pyserial raises SerialException (an OSError) when a USB adapter goes away mid-request."""
    clock = FakeClock()

    class Unplugged(ScriptedPort):
        def read(self, size: int = 1) -> bytes:
            raise OSError(5, "Input/output error")

    link = L.McuLink(Unplugged(clock, answer_with(L.T_EVIDENCE, b"")), clock=clock)
    with pytest.raises(L.SubAttesterUnreachable, match="serial port error"):
        link.challenge(NONCE)


def test_attack_lock_error_text_cannot_forge_lines() -> None:
    """A compromised lock answers with an error frame carrying a newline and a terminal escape."""
    clock = FakeClock()
    forged = b"x\nlock-mcu: firmware is approved\x1b[2J"
    link = L.McuLink(ScriptedPort(clock, answer_with(L.T_ERROR, forged)), clock=clock)
    with pytest.raises(L.SubAttesterError) as e:
        link.challenge(NONCE)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
