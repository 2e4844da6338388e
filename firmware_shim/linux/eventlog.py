"""The measured-boot event log: parse the TCG crypto-agile format and replay it. Pure.

Firmware that measures the boot (UEFI, U-Boot with a TPM) records every measurement it extends
into a PCR in an event log; Linux exposes it at
``/sys/kernel/security/tpm0/binary_bios_measurements``. Replaying the log (extending a fresh
PCR bank with each event's digest) must reproduce the PCRs the TPM quotes; when it does, the
verifier can appraise each boot component by its own digest instead of one opaque PCR value.

Format (TCG PC Client Platform Firmware Profile, version 1.05, §10; all integers little-endian):

* the first event is a ``TCG_PCClientPCREvent`` (§10.2.1: pcrIndex UINT32, eventType UINT32,
  digest[20], eventSize UINT32, event) of type EV_NO_ACTION whose data is the
  ``TCG_EfiSpecIDEvent`` (§10.4.5.1): signature ``"Spec ID Event03\\0"``, platformClass UINT32,
  specVersionMinor, specVersionMajor, specErrata, uintnSize (UINT8 each), numberOfAlgorithms
  UINT32, then ``{algorithmId UINT16, digestSize UINT16}`` per algorithm, vendorInfoSize UINT8
  and vendorInfo;
* every later event is a ``TCG_PCR_EVENT2`` (§10.2.2): pcrIndex UINT32, eventType UINT32,
  digests ``TPML_DIGEST_VALUES`` (count UINT32, then ``{hashAlg UINT16, digest[size]}`` with the
  sizes the Spec ID event declared), eventSize UINT32, event.

Replay (§10.3): every PCR starts at zeros, except PCR 0 when an EV_NO_ACTION
``StartupLocality`` event (§10.4.5.3) says the locality was 3 or 4; EV_NO_ACTION events are not
extended. Everything is bounded (:data:`MAX_LOG_BYTES`, :data:`MAX_EVENTS`,
:data:`MAX_EVENT_DATA`); anything wrong is a
:class:`~edgeward.core.errors.MalformedInputError` naming the event and the byte offset.
:func:`build_event_log` writes the same format, for tests and the simulator.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeward.core.errors import MalformedInputError

DEFAULT_PATH = "/sys/kernel/security/tpm0/binary_bios_measurements"
MAX_LOG_BYTES = 1024 * 1024
MAX_EVENTS = 4096
MAX_EVENT_DATA = 64 * 1024
MAX_ALGORITHMS = 8
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
STARTUP_LOCALITY = b"StartupLocality\0"

EV_NO_ACTION = 0x3
ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512, ALG_SM3_256 = 0x4, 0xB, 0xC, 0xD, 0x12
_HASHES = {ALG_SHA1: "sha1", ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}
_SIZES = {ALG_SHA1: 20, ALG_SHA256: 32, ALG_SHA384: 48, ALG_SHA512: 64, ALG_SM3_256: 32}

EVENT_TYPES = {
    0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x3: "EV_NO_ACTION", 0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS", 0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE", 0xA: "EV_PLATFORM_CONFIG_FLAGS", 0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH", 0xD: "EV_IPL", 0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG", 0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER", 0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION", 0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES", 0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2", 0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
}


@dataclass(frozen=True)
class Event:
    index: int  # position in the log (the Spec ID event is 0)
    pcr: int
    type: int
    digests: Mapping[int, bytes]  # TPM_ALG_ID -> digest
    data: bytes

    @property
    def type_name(self) -> str:
        return EVENT_TYPES.get(self.type, f"0x{self.type:08x}")


@dataclass(frozen=True)
class EventLog:
    algorithms: Mapping[int, int]  # TPM_ALG_ID -> digest size, from the Spec ID event
    events: tuple[Event, ...]  # the TCG_PCR_EVENT2 events, in log order
    startup_locality: int = 0

    def replay(self, alg: int = ALG_SHA256) -> dict[int, bytes]:
        """The PCR values the log implies for one bank: ``{pcr: digest}``, PCRs it touches."""
        if alg not in self.algorithms or alg not in _HASHES:
            raise MalformedInputError(f"event log has no bank 0x{alg:04x} to replay")
        size = self.algorithms[alg]
        pcrs: dict[int, bytes] = {}
        for ev in self.events:
            if ev.type == EV_NO_ACTION:
                continue
            start = bytes(size - 1) + bytes([self.startup_locality]) if ev.pcr == 0 \
                else bytes(size)
            h = hashlib.new(_HASHES[alg])
            h.update(pcrs.get(ev.pcr, start))
            h.update(ev.digests[alg])
            pcrs[ev.pcr] = h.digest()
        return pcrs

    def mismatches(self, quoted: Mapping[int, bytes], alg: int = ALG_SHA256) -> list[int]:
        """The PCRs among ``quoted`` whose value the log does not reproduce (sorted).

        A quoted PCR the log never touches must still be all zeros; anything else means the
        log leaves out measurements or was altered.
        """
        replayed = self.replay(alg)
        size = self.algorithms[alg]
        out = []
        for pcr, value in sorted(quoted.items()):
            expected = replayed.get(pcr, bytes(size))
            if not hmac.compare_digest(expected, value):
                out.append(pcr)
        return out

    def components(self, alg: int = ALG_SHA256) -> list[tuple[int, str, bytes]]:
        """``(pcr, event type name, digest)`` per measured event: what a verifier appraises."""
        return [(e.pcr, e.type_name, e.digests[alg]) for e in self.events
                if e.type != EV_NO_ACTION and alg in e.digests]


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise MalformedInputError(f"event log is truncated in {what} at byte {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def _spec_id(r: _Reader) -> dict[int, int]:
    pcr, etype = r.u32("the first event"), r.u32("the first event")
    r.take(20, "the first event's digest")
    size = r.u32("the first event")
    if pcr != 0 or etype != EV_NO_ACTION or not 32 <= size <= 1024:
        raise MalformedInputError("event log does not start with a Spec ID event "
                                  "(not the crypto-agile format)")
    s = _Reader(r.take(size, "the Spec ID event"))
    if s.take(16, "the Spec ID signature") != SPEC_ID_SIGNATURE:
        raise MalformedInputError("event log's first event is not 'Spec ID Event03' "
                                  "(a SHA-1-only log is not supported)")
    s.take(4 + 4, "the Spec ID header")  # platformClass, version minor/major, errata, uintnSize
    n = s.u32("numberOfAlgorithms")
    if not 1 <= n <= MAX_ALGORITHMS:
        raise MalformedInputError(f"event log declares {n} hash algorithms (1..{MAX_ALGORITHMS})")
    algs: dict[int, int] = {}
    for _ in range(n):
        alg, dsize = s.u16("an algorithm id"), s.u16("a digest size")
        if alg in algs or not 1 <= dsize <= 64 or _SIZES.get(alg, dsize) != dsize:
            raise MalformedInputError(f"event log declares algorithm 0x{alg:04x} with a wrong "
                                      f"or repeated digest size {dsize}")
        algs[alg] = dsize
    vendor = s.u8("vendorInfoSize")
    s.take(vendor, "vendorInfo")
    if s.pos != len(s.buf):
        raise MalformedInputError("event log's Spec ID event has trailing bytes")
    return algs


def parse_event_log(data: bytes) -> EventLog:
    """Parse a crypto-agile event log (see the module docstring), bounded."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_LOG_BYTES:
        raise MalformedInputError(f"event log is not bytes or is larger than {MAX_LOG_BYTES}")
    r = _Reader(bytes(data))
    algs = _spec_id(r)
    events: list[Event] = []
    locality = 0
    while r.pos < len(r.buf):
        if len(events) >= MAX_EVENTS:
            raise MalformedInputError(f"event log has more than {MAX_EVENTS} events")
        at = r.pos
        what = f"event {len(events) + 1}"
        pcr, etype = r.u32(what), r.u32(what)
        if pcr > 23:
            raise MalformedInputError(f"{what} at byte {at} extends PCR {pcr} (0..23)")
        count = r.u32(what)
        if count != len(algs):
            raise MalformedInputError(f"{what} at byte {at} has {count} digests; the log "
                                      f"declares {len(algs)} algorithms")
        digests: dict[int, bytes] = {}
        for _ in range(count):
            alg = r.u16(what)
            if alg not in algs or alg in digests:
                raise MalformedInputError(f"{what} at byte {at} has an undeclared or repeated "
                                          f"algorithm 0x{alg:04x}")
            digests[alg] = r.take(algs[alg], f"{what}'s digest")
        size = r.u32(what)
        if size > MAX_EVENT_DATA:
            raise MalformedInputError(f"{what} at byte {at} claims {size} bytes of data "
                                      f"(limit {MAX_EVENT_DATA})")
        body = r.take(size, f"{what}'s data")
        if etype == EV_NO_ACTION and body.startswith(STARTUP_LOCALITY) and len(body) == 17:
            locality = body[16]
        events.append(Event(len(events) + 1, pcr, etype, digests, body))
    return EventLog(algs, tuple(events), locality)


# --- writing (tests and the simulator's measured boot) ------------------------------------------


def spec_id_event(algs: Mapping[int, int]) -> bytes:
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algs.items()) + b"\0"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def encode_event(pcr: int, etype: int, digests: Mapping[int, bytes], data: bytes) -> bytes:
    """One TCG_PCR_EVENT2 with the given ``{alg: digest}`` (what a boot loader writes when it
    measures an image and records its name as the event data)."""
    out = [struct.pack("<III", pcr, etype, len(digests))]
    out += [struct.pack("<H", a) + d for a, d in digests.items()]
    return b"".join(out) + struct.pack("<I", len(data)) + data


def build_event_log(events: Iterable[tuple[int, int, bytes]],
                    algs: Iterable[int] = (ALG_SHA256,)) -> bytes:
    """A log whose events ``(pcr, type, data)`` carry each algorithm's digest of ``data``."""
    sizes = {a: _SIZES[a] for a in algs}
    out = [spec_id_event(sizes)]
    for pcr, etype, data in events:
        out.append(encode_event(pcr, etype, {a: hashlib.new(_HASHES[a], data).digest()
                                             for a in sizes}, data))
    return b"".join(out)
