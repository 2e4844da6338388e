"""Evidence: the EAT claims set, and signing/decoding it as a CWT in COSE_Sign1. Pure.

The Attester (RFC 9334 §3.1) produces an EAT (RFC 9711) whose claims use their registered CBOR
keys (:mod:`.claims`); it is a CWT (RFC 8392 §7) whose payload is signed as a COSE_Sign1
(RFC 9052 §4.2; tag 18) by the device's :class:`~edgeward.firmware_shim.signer.Signer`. The
protected header carries ``alg`` and ``kid`` (the key id); the device certificate chain, when
configured, rides in the unprotected ``x5chain`` header (label 33, RFC 9360 §2), which is
self-authenticating. The private claim -70001 says honestly which kind of key signed
(``"tpm"`` or ``"software"``).

Measurements (RFC 9711 §4.2.16) are one ``[content-format, bstr .cbor ew-measurements]`` entry;
the TPM boot state (PCRs and a TPM2_Quote binding the nonce, see :mod:`.tpm_quote`) is the
private claim -70003, and the measured-boot event log that explains those PCRs the private
claim -70005 (raw TCG crypto-agile log, appraised by :mod:`.bootlog`).
Submodules (§4.2.18; e.g. a lock's microcontroller) are carried as
nested claims sets. The byte layout is written down in docs/protocol.cddl.

This module does no I/O: the edge that reads files, the TPM and the clock is
:mod:`edgeward.attestation.attester`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from edgeward.attestation import claims as C
from edgeward.core import cbor, cose
from edgeward.core.errors import MalformedInputError
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.firmware_shim.signer import SIGNER_KINDS, Signer


@dataclass(frozen=True)
class ModelMeasurement:
    """One model: its manifest's name and version, the manifest digest and the file digests."""

    name: str
    version: int
    manifest: bytes | None  # SHA-256 of the .ewsig bytes, None if the model has no manifest
    files: tuple[tuple[str, bytes], ...]  # (path, SHA-256 of the bytes on disk)


@dataclass(frozen=True)
class Measurements:
    agent_code: bytes
    agent_config: bytes
    models: tuple[ModelMeasurement, ...] = ()

    def to_cbor(self) -> dict[str, Any]:
        return {
            "agent-code": self.agent_code,
            "agent-config": self.agent_config,
            "models": [
                {"name": m.name, "version": m.version, "manifest": m.manifest,
                 "files": [[p, d] for p, d in m.files]}
                for m in self.models
            ],
        }


@dataclass(frozen=True)
class BootState:
    """TPM PCRs (SHA-256 bank) and a TPM2_Quote over them (TPMS_ATTEST, signature r||s)."""

    pcrs: dict[int, bytes]
    quote: bytes
    quote_sig: bytes

    def to_cbor(self) -> dict[str, Any]:
        return {"pcrs": dict(self.pcrs), "quote": self.quote, "quote-sig": self.quote_sig}


@dataclass(frozen=True)
class EvidenceClaims:
    """The claims set of one evidence token (RFC 9711 §4)."""

    nonce: bytes
    device: str
    ueid: bytes
    hwmodel: str
    swname: str
    swversion: str
    iat: int
    bootcount: int
    key_kind: str
    measurements: Measurements
    uptime: int | None = None
    oemid: bytes | None = None
    hwversion: str | None = None
    dbgstat: int | None = None
    boot: BootState | None = None
    submods: dict[str, Any] = field(default_factory=dict)
    event_log: bytes | None = None  # the measured-boot event log, with ``boot`` (.bootlog)

    def to_cbor(self) -> dict[int, Any]:
        m: dict[int, Any] = {
            C.EAT_NONCE: self.nonce,
            C.UEID: self.ueid,
            C.HWMODEL: self.hwmodel.encode(),
            C.SWNAME: self.swname,
            C.SWVERSION: [self.swversion],  # RFC 9711 §4.2.7: [version, ? scheme]
            C.IAT: self.iat,
            C.BOOTCOUNT: self.bootcount,
            C.EW_KEY_KIND: self.key_kind,
            C.EW_DEVICE: self.device,
            C.MEASUREMENTS: [
                [C.MEASUREMENTS_CONTENT_FORMAT, cbor.dumps(self.measurements.to_cbor())]
            ],
        }
        if self.uptime is not None:
            m[C.UPTIME] = self.uptime
        if self.oemid is not None:
            m[C.OEMID] = self.oemid
        if self.hwversion is not None:
            m[C.HWVERSION] = [self.hwversion]
        if self.dbgstat is not None:
            m[C.DBGSTAT] = self.dbgstat
        if self.boot is not None:
            m[C.EW_BOOT] = self.boot.to_cbor()
        if self.event_log is not None:
            m[C.EW_EVENT_LOG] = self.event_log
        if self.submods:
            m[C.SUBMODS] = dict(self.submods)
        return m


def sign_evidence(
    ev: EvidenceClaims, signer: Signer, *, x5chain: list[bytes] | None = None
) -> bytes:
    """Sign the claims set: COSE_Sign1 (tag 18), ``kid`` = key id, optional ``x5chain``."""
    if ev.key_kind != signer.kind:
        raise ValueError("the key_kind claim must be the signer's kind")
    unprotected: dict[int, Any] = {}
    if x5chain:
        unprotected[C.COSE_X5CHAIN] = x5chain[0] if len(x5chain) == 1 else list(x5chain)
    # cose.sign1 only uses .alg, .key_id and .sign(): every Signer fits.
    return cose.sign1(cbor.dumps(ev.to_cbor()), cast(Any, signer), unprotected=unprotected)


# --- decoding (untrusted input; structure only, the verifier checks the signature) -------------


# Ranges from docs/protocol.cddl: counters and versions are uint63 (what the verifier's store
# holds), iat an int64, and the sizes of the byte strings as the CDDL states them.
U63 = 2**63 - 1
I64 = (-(2**63), U63)
NONCE_SIZE = (8, 64)
UEID_SIZE = (7, 33)
HWMODEL_SIZE = (1, 32)
DBGSTAT_RANGE = (0, 4)
MAX_TEXT = 256  # swname, swversion, hwversion, model names and paths
DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # ew-device-id


def _bad(why: str) -> MalformedInputError:
    return MalformedInputError(f"evidence {why}")


def _in(v: int, lo: int, hi: int, what: str) -> int:
    if not lo <= v <= hi:
        raise _bad(f"claim {what} is outside {lo}..{hi}")
    return v


def _sized(v: bytes, size: tuple[int, int], what: str) -> bytes:
    if not size[0] <= len(v) <= size[1]:
        raise _bad(f"claim {what} is not {size[0]}..{size[1]} bytes")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise _bad(f"{what} is not a text of at most {MAX_TEXT} characters")
    return v


def _get(m: dict[int, Any], key: int, typ: type | tuple[type, ...], what: str,
         *, required: bool = True) -> Any:
    if key not in m:
        if required:
            raise _bad(f"lacks the {what} claim ({key})")
        return None
    v = m[key]
    if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
        raise _bad(f"claim {what} ({key}) has the wrong type")
    return v


def _digest(v: Any, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise _bad(f"{what} is not a SHA-256 digest")
    return v


def _measurements(v: Any, limits: Limits) -> Measurements:
    if not isinstance(v, list) or len(v) != 1 or not isinstance(v[0], list) or len(v[0]) != 2:
        raise _bad("measurements are not one [content-format, bytes] entry")
    fmt, raw = v[0]
    if fmt != C.MEASUREMENTS_CONTENT_FORMAT or not isinstance(raw, bytes):
        raise _bad("measurements have an unknown content format")
    m = cbor.loads(raw, limits=limits)
    if not isinstance(m, dict) or not isinstance(m.get("models", []), list):
        raise _bad("measurements are not a map")
    models = []
    for i, x in enumerate(m.get("models", [])):
        if not isinstance(x, dict):
            raise _bad(f"models[{i}] is not a map")
        name, version, files = x.get("name"), x.get("version"), x.get("files")
        manifest = x.get("manifest")
        if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, int):
            raise _bad(f"models[{i}] has no name or version")
        _text(name, f"models[{i}].name")
        _in(version, 0, U63, f"models[{i}].version")
        if manifest is not None:
            manifest = _digest(manifest, f"models[{i}].manifest")
        if not isinstance(files, list) or not all(
            isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in files
        ):
            raise _bad(f"models[{i}].files is not a list of [path, digest]")
        models.append(ModelMeasurement(name, version, manifest, tuple(
            (_text(f[0], f"models[{i}] file path"), _digest(f[1], f"models[{i}] file digest"))
            for f in files)))
    return Measurements(
        agent_code=_digest(m.get("agent-code"), "agent-code"),
        agent_config=_digest(m.get("agent-config"), "agent-config"),
        models=tuple(models),
    )


def _boot(v: Any) -> BootState:
    if not isinstance(v, dict):
        raise _bad("boot state is not a map")
    pcrs, quote, sig = v.get("pcrs"), v.get("quote"), v.get("quote-sig")
    if not isinstance(pcrs, dict) or not all(
        isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 24 for k in pcrs
    ):
        raise _bad("boot state pcrs is not {0..23: digest}")
    if not isinstance(quote, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise _bad("boot state quote is not bytes, or its signature not 64 bytes")
    return BootState({k: _digest(d, f"PCR {k}") for k, d in pcrs.items()}, quote, sig)


def claims_from_cbor(m: Any, *, limits: Limits = DEFAULT_LIMITS) -> EvidenceClaims:
    """Validate a decoded claims set (MalformedInputError on any structural problem)."""
    if not isinstance(m, dict):
        raise _bad("claims set is not a map")
    kind = _get(m, C.EW_KEY_KIND, str, "key kind")
    if kind not in SIGNER_KINDS:
        raise _bad(f"key kind {kind!r} is neither 'tpm' nor 'software'")
    swv = _get(m, C.SWVERSION, list, "swversion")
    if not swv or not isinstance(swv[0], str):
        raise _bad("swversion is not [version, ? scheme]")
    hwv = _get(m, C.HWVERSION, list, "hwversion", required=False)
    if hwv is not None and (not hwv or not isinstance(hwv[0], str)):
        raise _bad("hwversion is not [version, ? scheme]")
    iat = _in(_get(m, C.IAT, int, "iat"), *I64, "iat")
    bootcount = _in(_get(m, C.BOOTCOUNT, int, "bootcount"), 0, U63, "bootcount")
    uptime = _get(m, C.UPTIME, int, "uptime", required=False)
    dbgstat = _get(m, C.DBGSTAT, int, "dbgstat", required=False)
    hwmodel = _sized(_get(m, C.HWMODEL, bytes, "hwmodel"), HWMODEL_SIZE, "hwmodel")
    try:
        board = hwmodel.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad("claim hwmodel is not UTF-8") from e
    device = _get(m, C.EW_DEVICE, str, "device")
    if not DEVICE_RE.fullmatch(device):
        raise _bad("claim device is not a device id (1..64 of A-Z a-z 0-9 . _ -)")
    submods = _get(m, C.SUBMODS, dict, "submods", required=False) or {}
    boot = m.get(C.EW_BOOT)
    return EvidenceClaims(
        nonce=_sized(_get(m, C.EAT_NONCE, bytes, "eat_nonce"), NONCE_SIZE, "eat_nonce"),
        device=device,
        ueid=_sized(_get(m, C.UEID, bytes, "ueid"), UEID_SIZE, "ueid"),
        hwmodel=board,
        swname=_text(_get(m, C.SWNAME, str, "swname"), "swname"),
        swversion=_text(swv[0], "swversion"),
        iat=iat,
        bootcount=bootcount,
        key_kind=kind,
        measurements=_measurements(_get(m, C.MEASUREMENTS, list, "measurements"), limits),
        uptime=_in(uptime, 0, U63, "uptime") if uptime is not None else None,
        oemid=_get(m, C.OEMID, bytes, "oemid", required=False),
        hwversion=_text(hwv[0], "hwversion") if hwv else None,
        dbgstat=_in(dbgstat, *DBGSTAT_RANGE, "dbgstat") if dbgstat is not None else None,
        boot=_boot(boot) if boot is not None else None,
        submods=submods,
        event_log=_get(m, C.EW_EVENT_LOG, bytes, "event log", required=False),
    )


def x5chain_of(msg: cose.Sign1Message) -> list[bytes]:
    """The DER certificates of the ``x5chain`` header (RFC 9360 §2), leaf first."""
    v = msg.unprotected.get(C.COSE_X5CHAIN, msg.protected.get(C.COSE_X5CHAIN))
    if v is None:
        return []
    chain = [v] if isinstance(v, bytes) else v
    if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
        raise _bad("x5chain is not a certificate or a list of certificates")
    if len(chain) > 4:
        raise _bad("x5chain is longer than 4 certificates")
    return chain
