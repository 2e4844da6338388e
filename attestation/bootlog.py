"""Appraisal of the measured-boot event log carried in evidence: boot components one by one. Pure.

A TPM device's evidence may carry its boot event log (the private claim -70005, the TCG
crypto-agile log the kernel exposes; :data:`MAX_EVENT_LOG_BYTES` at most). The quote proves the
PCR values; the log says which measurements made them. :func:`appraise_boot_log` checks, in
order:

1. the log is there, within its bound and well formed (:mod:`edgeward.firmware_shim.linux.
   eventlog`, bounded); else ``executables`` 33 (unrecognized): the boot components were not
   appraised;
2. replayed, it gives exactly the quoted SHA-256 PCR values (a quoted PCR the log never touches
   must be zero); else ``executables`` 96 (contraindicated): the log was edited, reordered,
   cut or belongs to another boot, and says nothing trustworthy;
3. each measured event on a quoted PCR is a boot component, named by its event data when that is
   short text (U-Boot writes ``linux``, ``initrd``, ``dts``, ``bootargs``; a UEFI
   shell writes a file name), else by its event type (``EV_SEPARATOR``,
   ``EV_EFI_BOOT_SERVICES_APPLICATION``). Against the board's reference values
   (``boot-components``: name -> approved SHA-256 digests): a named component with another
   digest is ``executables`` 96 (a modified boot component); a component the reference values
   do not name is ``executables`` 33, reported by its name (escaped: it comes from the device);
   a reference component missing from the log is 33 too. Events on PCRs the quote does not
   cover prove nothing and are only counted.

The result is a list of ``(value, reason)`` for the ``executables`` claim (value None: a reason
only), for :mod:`.appraisal` to apply. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeward.attestation import claims as C
from edgeward.attestation.text import safe
from edgeward.core.errors import MalformedInputError
from edgeward.firmware_shim.linux.eventlog import (
    ALG_SHA256,
    EV_NO_ACTION,
    Event,
    parse_event_log,
)

MAX_EVENT_LOG_BYTES = 32 * 1024  # what evidence carries; a Pi's U-Boot log is a few KiB
MAX_NAME_BYTES = 64
MAX_NAMED = 6  # components named in one reason; the rest are counted

Finding = tuple[int | None, str]


def component_name(event: Event) -> str:
    """The event's data when it is short text (trailing NULs dropped), else its type name."""
    data = event.data.rstrip(b"\0")
    if 0 < len(data) <= MAX_NAME_BYTES and b"\0" not in data and min(data) >= 0x09:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return event.type_name


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{safe(n, MAX_NAME_BYTES)}'" for n in names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def appraise_boot_log(log: bytes | None, quoted: Mapping[int, bytes],
                      reference: Mapping[str, frozenset[bytes]] | None) -> list[Finding]:
    """Findings for the ``executables`` claim; see the module docstring."""
    if log is None:
        if reference:
            return [(C.UNRECOGNIZED_RUNTIME, "the evidence carries no boot event log: the "
                     f"{len(reference)} reference boot component(s) were not appraised")]
        return []
    if len(log) > MAX_EVENT_LOG_BYTES:
        return [(C.UNRECOGNIZED_RUNTIME, f"boot event log of {len(log)} bytes is over the "
                 f"limit of {MAX_EVENT_LOG_BYTES}: boot components not appraised")]
    try:
        parsed = parse_event_log(log)
        differ = parsed.mismatches(quoted, ALG_SHA256)
    except MalformedInputError as e:
        return [(C.UNRECOGNIZED_RUNTIME, f"boot event log is malformed ({safe(e, 160)}): boot "
                 "components not appraised")]
    if differ:
        return [(C.CONTRAINDICATED_RUNTIME, "boot event log does not replay to the quoted "
                 f"PCR(s) {', '.join(map(str, differ))}: it was altered, reordered or cut, or "
                 "is another boot's")]
    events = [ev for ev in parsed.events if ev.type != EV_NO_ACTION]  # not extended
    covered = [ev for ev in events if ev.pcr in quoted]
    out: list[Finding] = []
    if len(covered) < len(events):
        out.append((None, f"{len(events) - len(covered)} boot event(s) on PCRs outside the "
                    "quote were not appraised"))
    if not reference:
        out.append((None, f"boot event log replays to the quoted PCRs ({len(covered)} "
                    "events); no reference boot components to appraise them by"))
        return out
    modified: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for ev in covered:
        name = component_name(ev)
        approved = reference.get(name)
        seen.add(name)
        if approved is None:
            if name not in unknown:
                unknown.append(name)
        elif ev.digests[ALG_SHA256] not in approved and name not in modified:
            modified.append(name)
    missing = sorted(set(reference) - seen)
    if modified:
        out.append((C.CONTRAINDICATED_RUNTIME, f"boot component(s) {_names(modified)} have "
                    "digests that are not in the reference values (modified boot component)"))
    if unknown:
        out.append((C.UNRECOGNIZED_RUNTIME, f"boot component(s) {_names(unknown)} are not in "
                    "the reference values"))
    if missing:
        out.append((C.UNRECOGNIZED_RUNTIME, f"reference boot component(s) {_names(missing)} "
                    "are not in the boot event log"))
    if not (modified or unknown or missing):
        out.append((None, f"boot event log replays to the quoted PCRs and its {len(covered)} "
                    "boot component event(s) match the reference values"))
    return out
