"""Reference values, signed by the vendor (the Reference Value Provider, RFC 9334 §3.4). Pure.

One document per board (``hwmodel``), as a COSE_Sign1 (RFC 9052 §4.2) signed by a vendor key
the verifier trusts, content type :data:`CONTENT_TYPE`. Payload (CBOR, see docs/protocol.cddl)::

    { "type": "edgeward-refvalues", "v": 1, "board": tstr, "issued": uint,
      "min-swversion": tstr,                       ; older agents are contraindicated
      "releases": [* {"swversion": tstr, "agent-code": [* bstr], "agent-config": [* bstr],
                      ? "sbom": bstr }],            ; SHA-256 of the release's CycloneDX SBOM
      "models": [* {"name": tstr, "min-version": uint, "digests": [* bstr]}],
      ? "pcrs": {* uint => bstr},                  ; expected SHA-256 PCR values
      ? "boot-components": [* {"name": tstr, "digests": [* bstr]}],  ; per boot log event
      ? "require-tpm": bool }

The verifier refuses a document that is unsigned, signed by a key it does not trust, or signed
wrongly (:func:`open_refvalues` raises), and when several documents name the same board, the
newest ``issued`` wins. Vendors write the values in TOML and sign them with
``edgeward attest refvalues sign`` (:func:`from_toml`). This module does no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeward.core import cbor, cose
from edgeward.core.errors import ConfigError, MalformedInputError
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.core.tomlconf import Section

CONTENT_TYPE = "application/vnd.edgeward.refvalues+cbor"
DOC_TYPE = "edgeward-refvalues"
_VERSION_RE = re.compile(r"\A\d{1,6}(\.\d{1,6}){0,3}\Z")


@functools.lru_cache(maxsize=1024)
def parse_version(v: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; up to four numeric parts."""
    if not isinstance(v, str) or not _VERSION_RE.match(v):
        raise ValueError(f"version {v!r} is not like 1.2.3")
    return tuple(int(p) for p in v.split("."))


@dataclass(frozen=True)
class Release:
    swversion: str
    agent_code: frozenset[bytes]
    agent_config: frozenset[bytes]
    # SHA-256 of the release's CycloneDX SBOM (``make sbom``): which components a device whose
    # code matches this release runs. Named in the EAR's reasons; not a measurement.
    sbom: bytes | None = None


@dataclass(frozen=True)
class ModelRef:
    name: str
    min_version: int
    digests: frozenset[bytes]


@dataclass(frozen=True)
class RefValues:
    board: str
    issued: int
    min_swversion: str
    releases: tuple[Release, ...]
    models: tuple[ModelRef, ...]
    pcrs: dict[int, bytes] | None = None
    require_tpm: bool = False
    # boot component name (as the boot event log names it, .bootlog) -> approved digests
    boot_components: Mapping[str, frozenset[bytes]] | None = None

    def release(self, swversion: str) -> Release | None:
        for r in self.releases:
            if r.swversion == swversion:
                return r
        return None

    def model(self, name: str) -> ModelRef | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def to_cbor(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": DOC_TYPE,
            "v": 1,
            "board": self.board,
            "issued": self.issued,
            "min-swversion": self.min_swversion,
            "releases": [
                {"swversion": r.swversion, "agent-code": sorted(r.agent_code),
                 "agent-config": sorted(r.agent_config),
                 **({"sbom": r.sbom} if r.sbom is not None else {})}
                for r in self.releases
            ],
            "models": [
                {"name": m.name, "min-version": m.min_version, "digests": sorted(m.digests)}
                for m in self.models
            ],
            "require-tpm": self.require_tpm,
        }
        if self.pcrs is not None:
            out["pcrs"] = dict(self.pcrs)
        if self.boot_components is not None:
            out["boot-components"] = [{"name": n, "digests": sorted(d)}
                                      for n, d in sorted(self.boot_components.items())]
        return out


def _digests(v: Any, what: str) -> frozenset[bytes]:
    if not isinstance(v, list) or not all(isinstance(d, bytes) and len(d) == 32 for d in v):
        raise MalformedInputError(f"reference values: {what} is not a list of SHA-256 digests")
    return frozenset(v)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= 256:
        raise MalformedInputError(f"reference values: {what} is not a short string")
    return v


def _uint(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise MalformedInputError(f"reference values: {what} is not an unsigned integer")
    return v


def _version(v: Any, what: str) -> str:
    s = _str(v, what)
    try:
        parse_version(s)
    except ValueError as e:
        raise MalformedInputError(f"reference values: {what}: {e}") from e
    return s


def from_cbor(m: Any) -> RefValues:
    """Validate a decoded payload into :class:`RefValues` (MalformedInputError if wrong)."""
    if not isinstance(m, dict) or m.get("type") != DOC_TYPE or m.get("v") != 1:
        raise MalformedInputError("reference values: not an edgeward-refvalues v1 document")
    rels = m.get("releases", [])
    mods = m.get("models", [])
    if not isinstance(rels, list) or not isinstance(mods, list):
        raise MalformedInputError("reference values: releases/models are not lists")
    releases = []
    for i, r in enumerate(rels):
        if not isinstance(r, dict):
            raise MalformedInputError(f"reference values: releases[{i}] is not a map")
        sbom = r.get("sbom")
        if sbom is not None and not (isinstance(sbom, bytes) and len(sbom) == 32):
            raise MalformedInputError(f"reference values: releases[{i}].sbom is not a SHA-256")
        releases.append(Release(
            _version(r.get("swversion"), f"releases[{i}].swversion"),
            _digests(r.get("agent-code", []), f"releases[{i}].agent-code"),
            _digests(r.get("agent-config", []), f"releases[{i}].agent-config"),
            sbom,
        ))
    models = []
    for i, x in enumerate(mods):
        if not isinstance(x, dict):
            raise MalformedInputError(f"reference values: models[{i}] is not a map")
        models.append(ModelRef(
            _str(x.get("name"), f"models[{i}].name"),
            _uint(x.get("min-version", 0), f"models[{i}].min-version"),
            _digests(x.get("digests", []), f"models[{i}].digests"),
        ))
    pcrs = m.get("pcrs")
    if pcrs is not None:
        if not isinstance(pcrs, dict) or not all(
            isinstance(k, int) and 0 <= k < 24 and isinstance(v, bytes) and len(v) == 32
            for k, v in pcrs.items()
        ):
            raise MalformedInputError("reference values: pcrs is not {0..23: SHA-256 digest}")
    boot = _boot_components(m.get("boot-components"))
    require_tpm = m.get("require-tpm", False)
    if not isinstance(require_tpm, bool):
        raise MalformedInputError("reference values: require-tpm is not a boolean")
    return RefValues(
        board=_str(m.get("board"), "board"),
        issued=_uint(m.get("issued"), "issued"),
        min_swversion=_version(m.get("min-swversion", "0"), "min-swversion"),
        releases=tuple(releases),
        models=tuple(models),
        pcrs=dict(pcrs) if pcrs is not None else None,
        require_tpm=require_tpm,
        boot_components=boot,
    )


MAX_BOOT_COMPONENTS = 256


def _boot_components(v: Any) -> dict[str, frozenset[bytes]] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) > MAX_BOOT_COMPONENTS:
        raise MalformedInputError("reference values: boot-components is not a list of at most "
                                  f"{MAX_BOOT_COMPONENTS}")
    out: dict[str, frozenset[bytes]] = {}
    for i, c in enumerate(v):
        if not isinstance(c, dict):
            raise MalformedInputError(f"reference values: boot-components[{i}] is not a map")
        name = _str(c.get("name"), f"boot-components[{i}].name")
        if name in out:
            raise MalformedInputError(f"reference values: boot component '{name}' is listed "
                                      "twice")
        out[name] = _digests(c.get("digests", []), f"boot-components[{i}].digests")
    return out


def sign_refvalues(rv: RefValues, key: SigningKey) -> bytes:
    return cose.sign1(cbor.dumps(rv.to_cbor()), key, content_type=CONTENT_TYPE)


def open_refvalues(
    data: bytes, trust: TrustStore | VerifyingKey, *, limits: Limits = DEFAULT_LIMITS
) -> RefValues:
    """Verify the vendor's signature, then validate the document. Only trusted keys pass."""
    msg = cose.verify1(data, trust, limits=limits)
    if msg.content_type != CONTENT_TYPE:
        raise MalformedInputError("signed document is not reference values (content type)")
    return from_cbor(cbor.loads(msg.payload, limits=limits))


def _hex_digests(sec: Section, key: str) -> list[bytes]:
    out = []
    for i, h in enumerate(sec.list(key, [])):
        try:
            d = bytes.fromhex(h) if isinstance(h, str) else b""
        except ValueError:
            d = b""
        if len(d) != 32:
            raise ConfigError(f"{sec.source}: {sec.prefix}{key}[{i}] is not a 64-hex SHA-256")
        out.append(d)
    return out


def from_toml(sec: Section, *, issued: int) -> RefValues:
    """Reference values from a vendor's TOML (see docs/ATTESTATION.md, "Reference values")."""
    sec.reject_unknown(["board", "min_swversion", "require_tpm", "pcrs", "releases", "models",
                        "boot_components"])
    releases = []
    for r in sec.sections("releases"):
        r.reject_unknown(["swversion", "agent_code", "agent_config", "sbom"])
        rel: dict[str, Any] = {"swversion": r.str("swversion"),
                               "agent-code": _hex_digests(r, "agent_code"),
                               "agent-config": _hex_digests(r, "agent_config")}
        if r.has("sbom"):
            rel["sbom"] = _hex_digests(Section({"v": [r.str("sbom")]}, source=sec.source,
                                               prefix=f"{r.prefix}sbom."), "v")[0]
        releases.append(rel)
    models = []
    for x in sec.sections("models"):
        x.reject_unknown(["name", "min_version", "digests"])
        models.append({"name": x.str("name"), "min-version": x.int("min_version", 0, min=0),
                       "digests": _hex_digests(x, "digests")})
    doc: dict[str, Any] = {
        "type": DOC_TYPE, "v": 1, "board": sec.str("board"), "issued": issued,
        "min-swversion": sec.str("min_swversion", "0"), "releases": releases, "models": models,
        "require-tpm": sec.bool("require_tpm", False),
    }
    if sec.has("boot_components"):
        comps = []
        for c in sec.sections("boot_components"):
            c.reject_unknown(["name", "digests"])
            comps.append({"name": c.str("name"), "digests": _hex_digests(c, "digests")})
        doc["boot-components"] = comps
    pcr_sec = sec.section("pcrs")
    if pcr_sec.data:
        pcrs = {}
        for k in pcr_sec.data:
            if not k.isdigit():
                raise ConfigError(f"{sec.source}: pcrs key '{k}' is not a PCR index")
            d = _hex_digests(Section({"v": [pcr_sec.str(k)]}, source=sec.source,
                                     prefix=f"pcrs.{k}."), "v")
            pcrs[int(k)] = d[0]
        doc["pcrs"] = pcrs
    try:
        return from_cbor(doc)
    except MalformedInputError as e:
        raise ConfigError(f"{sec.source}: {e.message}") from e
