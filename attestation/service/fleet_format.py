"""Text and JSON for ``edgeward fleet devices|show|events`` (pure: view objects in, text out).

Every value that came from a device (its name, event types and bodies, evidence claims, EAR
reasons) goes through :func:`edgeward.attestation.text.safe` before it reaches the terminal, so
a device cannot forge lines or send escape sequences to the operator's screen. JSON output is
``json.dumps(..., ensure_ascii=True)``, which escapes every control and non-ASCII character;
bytes are shown as hex.
"""

from __future__ import annotations

import json
import time
from typing import Any

from edgeward.attestation.text import safe

from .fleet_view import Attestation, DeviceDetail, DeviceRow, Message

BODY_SHOWN = 160


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def plain(v: Any, depth: int = 0) -> Any:
    """A JSON-able copy of a CBOR value: bytes as hex, map keys as text, depth bounded."""
    if depth > 8:
        return "..."
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x, depth + 1) for x in v]
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def body_text(body: Any, limit: int = BODY_SHOWN) -> str:
    """A body on one line, escaped and bounded: ``k=v k=v`` for a map."""
    if isinstance(body, dict):
        text = " ".join(f"{k}={json.dumps(plain(v), ensure_ascii=False, sort_keys=True)}"
                        for k, v in body.items())
    else:
        text = json.dumps(plain(body), ensure_ascii=False)
    return safe(text, limit)


def devices_table(rows: list[DeviceRow]) -> str:
    if not rows:
        return "no devices"
    head = ("DEVICE", "STATE", "LAST SEEN", "ATTESTATION", "ATTESTED", "UNEXPLAINED GAPS")
    lines = [head] + [(safe(r.name, 40), r.state, when(r.last_seen), safe(r.attestation or "-"),
                       when(r.attested_at), str(r.unexplained)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def row_json(r: DeviceRow) -> dict[str, Any]:
    return {"device": r.name, "state": r.state, "last_seen": r.last_seen,
            "attestation": r.attestation, "attested_at": r.attested_at,
            "contraindicated": r.contraindicated, "unexplained_gaps": r.unexplained}


def devices_json(rows: list[DeviceRow]) -> str:
    return json.dumps({"devices": [row_json(r) for r in rows]}, ensure_ascii=True, indent=1)


def event_line(m: Message) -> str:
    return (f"{when(m.received)}  {safe(m.device, 40)}  #{m.seq}  {safe(m.type, 40)}  "
            f"{body_text(m.body)}")


def message_json(m: Message) -> dict[str, Any]:
    return {"id": m.id, "device": m.device, "seq": m.seq, "type": m.type, "ts": m.ts,
            "received": m.received, "body": plain(m.body)}


def attestation_line(a: Attestation) -> str:
    vec = " ".join(f"{safe(k, 40)}={v}" for k, v in a.vector.items()) or "(no EAR)"
    return f"{when(a.at)}  evidence #{a.seq}  {safe(a.status)}  {vec}"


def detail_text(d: DeviceDetail) -> str:
    r = d.row
    out = [f"device      {safe(r.name)}",
           f"state       {r.state} (last seen {when(r.last_seen)})",
           f"attestation {safe(r.attestation or 'never appraised')}"
           + (f" at {when(r.attested_at)}" if r.attested_at else ""),
           f"commands    {d.commands_sent} sent"]
    if d.identity:
        out.append("identity")
        out += [f"  {safe(k, 40)}: {body_text(v, 100)}" for k, v in sorted(d.identity.items())]
    g = d.gaps
    out.append(f"messages    {g.received} stored, highest seq {g.highest}, "
               f"{g.missing_count} missing ({g.unexplained_count} unexplained)")
    if g.explained:
        out.append(f"  reported dropped: {ranges(g.explained)}")
    if g.unexplained:
        out.append(f"  UNEXPLAINED: {ranges(g.unexplained)}")
    out.append("attestations (newest first)")
    out += [f"  {attestation_line(a)}" for a in d.attestations] or ["  none"]
    for a in d.attestations[:1]:
        out += [f"    reason: {safe(x, 120)}" for x in a.reasons]
    out.append("last reports")
    out += [f"  {when(m.received)}  #{m.seq}  {body_text(m.body)}" for m in d.reports] \
        or ["  none"]
    out.append("events (newest first)")
    out += [f"  {when(m.received)}  #{m.seq}  {safe(m.type, 40)}  {body_text(m.body)}"
            for m in d.events] or ["  none"]
    return "\n".join(out)


def detail_json(d: DeviceDetail) -> str:
    g = d.gaps
    return json.dumps({
        **row_json(d.row), "commands_sent": d.commands_sent, "identity": plain(d.identity),
        "gaps": {"highest": g.highest, "received": g.received, "explained": g.explained,
                 "unexplained": g.unexplained},
        "attestations": [{"evidence_seq": a.seq, "status": a.status, "at": a.at,
                          "ear.trustworthiness-vector": a.vector, "reasons": list(a.reasons)}
                         for a in d.attestations],
        "reports": [message_json(m) for m in d.reports],
        "events": [message_json(m) for m in d.events],
    }, ensure_ascii=True, indent=1)


def ranges(rs: tuple[tuple[int, int], ...], most: int = 10) -> str:
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in rs[:most])
    return shown + (f" and {len(rs) - most} more" if len(rs) > most else "")
