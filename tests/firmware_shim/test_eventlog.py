"""Measured-boot event log: parse the crypto-agile format, replay it against real TPM PCRs, and
refuse hostile logs cleanly (bounded, never a crash or a hang)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.core.errors import MalformedInputError
from edgeward.firmware_shim.linux import eventlog as E

BOOT = [
    (0, 0x8, b"CRTM version 1.0"),                       # EV_S_CRTM_VERSION
    (0, 0x80000008, b"uefi firmware blob"),              # EV_EFI_PLATFORM_FIRMWARE_BLOB
    (7, 0x80000001, b"SecureBoot=1"),                    # EV_EFI_VARIABLE_DRIVER_CONFIG
    (4, 0x80000003, b"\\EFI\\BOOT\\BOOTAA64.EFI"),       # EV_EFI_BOOT_SERVICES_APPLICATION
    (4, 0x80000003, b"vmlinuz-6.6.0-rpi"),
    (0, 0x4, b"\0\0\0\0"),                               # EV_SEPARATOR
    (7, 0x4, b"\0\0\0\0"),
    (4, 0x4, b"\0\0\0\0"),
]


def extend(old: bytes, data: bytes) -> bytes:
    return hashlib.sha256(old + hashlib.sha256(data).digest()).digest()


def test_parse_and_replay_match_a_hand_computed_bank() -> None:
    log = E.parse_event_log(E.build_event_log(BOOT, algs=(E.ALG_SHA1, E.ALG_SHA256)))
    assert log.algorithms == {E.ALG_SHA1: 20, E.ALG_SHA256: 32}
    assert [e.type_name for e in log.events][:2] == ["EV_S_CRTM_VERSION",
                                                    "EV_EFI_PLATFORM_FIRMWARE_BLOB"]
    want: dict[int, bytes] = {}
    for pcr, _t, data in BOOT:
        want[pcr] = extend(want.get(pcr, bytes(32)), data)
    assert log.replay() == want
    assert log.mismatches(want) == []
    assert len(log.replay(E.ALG_SHA1)[0]) == 20
    assert log.components()[3] == (4, "EV_EFI_BOOT_SERVICES_APPLICATION",
                                   hashlib.sha256(BOOT[3][2]).digest())


def test_startup_locality_sets_pcr0_start_and_no_action_is_not_extended() -> None:
    events = [(0, E.EV_NO_ACTION, E.STARTUP_LOCALITY + b"\x03"), (0, 0x8, b"v1")]
    log = E.parse_event_log(E.build_event_log(events))
    assert log.startup_locality == 3
    assert log.replay() == {0: extend(bytes(31) + b"\x03", b"v1")}


def test_replay_matches_a_real_tpm_and_a_doctored_log_does_not(swtpm) -> None:
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    pcrs = (8, 9, 14)  # PCRs the platform leaves to the OS, zero in a fresh swtpm
    events = [(8, 0xD, b"kernel cmdline"), (9, 0xD, b"initrd"), (8, 0xD, b"module a")]
    with TpmSigner(swtpm.tcti) as tpm:
        for pcr, _t, data in events:
            tpm.extend_pcr(pcr, hashlib.sha256(data).digest())
        quoted = tpm.read_pcrs(pcrs)
    assert E.parse_event_log(E.build_event_log(events)).mismatches(quoted) == []
    # Attack: a log that hides a measurement (the second kernel module) no longer replays.
    hidden = E.parse_event_log(E.build_event_log(events[:2]))
    assert hidden.mismatches(quoted) == [8]
    # Attack: a log that swaps in the digest of a clean initrd.
    swapped = E.parse_event_log(E.build_event_log([events[0], (9, 0xD, b"clean"), events[2]]))
    assert swapped.mismatches(quoted) == [9]


def test_sha1_only_legacy_log_is_refused_with_a_reason() -> None:
    legacy = struct.pack("<II", 0, 8) + bytes(20) + struct.pack("<I", 2) + b"v1"
    with pytest.raises(MalformedInputError, match="Spec ID event"):
        E.parse_event_log(legacy)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b + struct.pack("<II", 30, 1), "PCR 30"),
    (lambda b: b + struct.pack("<III", 1, 1, 5), "has 5 digests"),
    (lambda b: b + struct.pack("<IIIH", 1, 1, 1, 0x4) + bytes(20), "undeclared"),
    (lambda b: b + struct.pack("<IIIH", 1, 1, 1, 0xB) + bytes(32) + struct.pack("<I", 2**31),
     "claims 2147483648 bytes"),
    (lambda b: b.replace(b"Spec ID Event03", b"Spec ID Event02"), "not 'Spec ID Event03'"),
])
def test_hostile_event_log_is_a_clean_error(mutate, message) -> None:
    good = E.build_event_log(BOOT)
    with pytest.raises(MalformedInputError, match=message):
        E.parse_event_log(mutate(good))


def test_event_flood_and_oversized_log_are_refused() -> None:
    flood = E.build_event_log([(1, 1, b"")] * (E.MAX_EVENTS + 1))
    with pytest.raises(MalformedInputError, match="more than 4096 events"):
        E.parse_event_log(flood)
    with pytest.raises(MalformedInputError, match="larger than"):
        E.parse_event_log(bytes(E.MAX_LOG_BYTES + 1))


def test_spec_id_with_bogus_algorithm_table_is_refused() -> None:
    spec = E.spec_id_event({E.ALG_SHA256: 20})  # wrong size for SHA-256
    with pytest.raises(MalformedInputError, match="wrong or repeated digest size"):
        E.parse_event_log(spec)
    body = bytearray(E.spec_id_event({E.ALG_SHA256: 32}))
    body[32 + 16 + 8 : 32 + 16 + 12] = struct.pack("<I", 1000)  # numberOfAlgorithms
    with pytest.raises(MalformedInputError):
        E.parse_event_log(bytes(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.integers(min_value=0, max_value=400))
def test_fuzzed_event_log_never_escapes_as_another_exception(junk: bytes, cut: int) -> None:
    good = E.build_event_log(BOOT[:3])
    for data in (junk, good[:cut] + junk, good + junk):
        try:
            E.parse_event_log(data).replay()
        except MalformedInputError:
            pass
