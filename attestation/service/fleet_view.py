"""The operator's view of the fleet store: devices, one device's record, the event stream.

Queries only: each function reads the fleet store (:class:`~.store.FleetStoreAPI`, SQLite or
PostgreSQL) and returns frozen dataclasses; :mod:`.fleet_format` turns them into text or JSON,
and :mod:`.fleet_cli` is the thin click layer. Everything here that came from a device (names,
event types and bodies, evidence claims) is raw: it is escaped where it is shown, never here.

A device's *state* is ``online`` or ``offline`` (its retained status: the agent's birth message
or its last will), ``unknown`` if it never sent one; ``contraindicated`` is a filter over the
attestation instead: the latest appraisal is contraindicated, or its evidence was refused (a
failed attestation, exit 2 in DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeward.core import cbor
from edgeward.core.cose import decode_sign1
from edgeward.core.errors import EdgewardError

from .gaps import GapReport
from .store import FleetStoreAPI as FleetStore

STATES = ("online", "offline", "contraindicated")
FAILED = frozenset({"contraindicated", "refused"})
NOT_EVENTS = ("metrics", "attest.evidence")  # envelope types that are reports, not events
IDENTITY_CLAIMS = {258: "oemid", 259: "hwmodel", 260: "hwversion", 270: "swname",
                   271: "swversion", -70001: "key_kind"}


@dataclass(frozen=True)
class DeviceRow:
    name: str
    state: str  # online | offline | unknown
    last_seen: float | None
    attestation: str | None  # the latest appraisal's status, None if never appraised
    attested_at: float | None
    unexplained: int  # seqs missing without a reported drop

    @property
    def contraindicated(self) -> bool:
        return self.attestation in FAILED


@dataclass(frozen=True)
class Attestation:
    seq: int
    status: str
    at: float
    vector: dict[str, int] = field(default_factory=dict)  # AR4SI claim -> tier
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    id: int  # the store's row id: ``fleet events --follow`` continues after it
    device: str
    seq: int
    type: str
    ts: float
    received: float
    body: Any


@dataclass(frozen=True)
class DeviceDetail:
    row: DeviceRow
    commands_sent: int
    identity: dict[str, Any]  # from the latest evidence's claims and agent.started
    reports: tuple[Message, ...]
    attestations: tuple[Attestation, ...]
    events: tuple[Message, ...]
    gaps: GapReport


def devices(store: FleetStore, state: str | None = None) -> list[DeviceRow]:
    """Every device the store knows, by name; ``state`` filters (one of :data:`STATES`)."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    latest = store.latest_appraisals()
    out = []
    for name, status, seen, _ in store.device_rows():
        if name.startswith("@"):  # the backend's own events (@fleet): not a device
            continue
        status_ = status if status in ("online", "offline") else "unknown"
        att, at = latest.get(name, (None, None))
        row = DeviceRow(name, status_, seen, att, at, store.gaps(name).unexplained_count)
        if state == "contraindicated" and not row.contraindicated:
            continue
        if state in ("online", "offline") and row.state != state:
            continue
        out.append(row)
    return out


def ear_vector(ear: bytes | None) -> tuple[dict[str, int], tuple[str, ...]]:
    """The AR4SI vector and reasons of a stored EAR (the store's own record, written by a worker
    after signing; not verified again here). Empty if absent or unreadable."""
    if not ear:
        return {}, ()
    from edgeward.attestation.ear import Ear

    try:
        e = Ear.from_claims(cbor.loads(decode_sign1(ear).payload))
    except (EdgewardError, ValueError, TypeError, KeyError):
        return {}, ()
    reasons = tuple(str(r) for r in e.reasons)
    vec = dict(e.vector.items())
    for sub in e.submods:  # a lock's microcontroller: its claims under its own name
        vec.update({f"{sub.name}.{k}": v for k, v in sub.vector.items()})
        reasons += tuple(f"{sub.name}: {r}" for r in sub.reasons)
    return vec, reasons


def identity(store: FleetStore, device: str) -> dict[str, Any]:
    """What the device said about itself: the latest evidence's identity claims (unverified here:
    the appraisal verified them) and the latest ``agent.started`` body."""
    out: dict[str, Any] = {}
    for _, _, _, _, _, body in store.recent(device, ("agent.started",), exclude=False, limit=1):
        if isinstance(body, dict):
            out.update({f"agent.{k}": v for k, v in body.items() if isinstance(k, str)})
    for _, _, _, _, _, body in store.recent(device, ("attest.evidence",), exclude=False, limit=1):
        eat = body.get("eat") if isinstance(body, dict) else None
        try:
            claims = cbor.loads(decode_sign1(eat).payload) if isinstance(eat, bytes) else None
        except (EdgewardError, ValueError, TypeError):
            claims = None
        if isinstance(claims, dict):
            out.update({n: claims[k] for k, n in IDENTITY_CLAIMS.items() if k in claims})
    return out


def show(store: FleetStore, device: str, *, reports: int = 3, history: int = 10,
         events: int = 20) -> DeviceDetail | None:
    """One device's record, or None if the store does not know it."""
    rows = [r for r in devices(store) if r.name == device]
    if not rows:
        return None
    cmd = {n: c for n, _, _, c in store.device_rows()}.get(device, 0)
    atts = tuple(Attestation(seq, status, at, *ear_vector(ear))
                 for seq, status, at, ear in store.appraisal_history(device, history))
    return DeviceDetail(
        row=rows[0],
        commands_sent=cmd,
        identity=identity(store, device),
        reports=_messages(device, store.recent(device, ("metrics",), exclude=False,
                                               limit=reports)),
        attestations=atts,
        events=_messages(device, store.recent(device, NOT_EVENTS, exclude=True, limit=events)),
        gaps=store.gaps(device),
    )


def _messages(device: str, rows: list[tuple[int, int, str, float, float, Any]]
              ) -> tuple[Message, ...]:
    return tuple(Message(i, device, seq, t, ts, rec, body) for i, seq, t, ts, rec, body in rows)


def events(store: FleetStore, *, after: int = 0, since: float | None = None,
           types: tuple[str, ...] = (), device: str | None = None, limit: int = 100,
           newest: bool = False) -> list[Message]:
    """Events (every envelope but reports and evidence) stored after row ``after``, oldest first
    (``newest``: the last ``limit`` of them); ``types`` are exact envelope types."""
    rows = store.events_after(after, since=since, types=types, skip=NOT_EVENTS, device=device,
                              limit=limit, newest=newest)
    return [Message(*r) for r in rows]
