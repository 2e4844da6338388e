"""Submodules: a lock's microcontroller attested through its gateway (RFC 9711 §4.2.18).

The gateway's evidence carries one ``submods`` (266) entry per microcontroller, named as the
vendor registered it (``"lock-mcu"``). The value is either

* the microcontroller's own token, a CBOR-tagged COSE_Mac0 (RFC 9052 §6.2, tag 17) with
  HMAC 256/256 (alg 5, RFC 9053 §3.1) under a per-device key provisioned at manufacture and
  registered with the verifier; its payload is an EAT whose ``eat_nonce`` is the gateway's
  own nonce (so it is as fresh as the gateway's evidence; ``firmware_shim/mcu/lock.py`` makes
  it); or
* a claims set ``{SUBMOD_ERROR: "sub-attester unreachable: ..."}`` when the gateway could not
  get one (:func:`gateway_submods`), so the result says so instead of silently leaving it out.

:func:`appraise_submods` is the verifier's core for them (pure, like :mod:`.appraisal`): every
entry gets its own AR4SI vector and reasons (:class:`~.ear.SubmodResult`), never an
exception. Per entry:

1. an error claims set: ``executables`` 33 (warning), "sub-attester unreachable";
2. structure: tagged COSE_Mac0, bounded (:data:`MAX_TOKEN_BYTES`), protected header ``{1: 5,
   4: kid}`` and nothing else protected or unprotected (no algorithm substitution: a truncated
   HMAC or "none" is refused); malformed is ``instance-identity`` 99;
3. identity: the registration for this gateway and submodule name must exist (else 97) with
   this ``kid``, and the HMAC tag must verify (constant-time compare; else 99);
4. freshness: the token's ``eat_nonce`` must be the gateway's nonce (else 99, a replayed MAC);
   the bootcount may not go backwards (96) from the highest the verifier has accepted
   (``LockRegistration.last_bootcount``, which the verifier fills from its store, so the
   refusal holds across appraisals and restarts; :attr:`~.ear.SubmodResult.bootcount` is what
   it keeps);
5. reference values: the firmware digest must be an approved one (``executables`` 2, else 96:
   tampered lock firmware) and every script an approved digest of that script name
   (``file-system`` 2, else 96). A symmetric key says nothing about hardware: no claim.

The vendor registers each microcontroller in a TOML file the verifier's configuration names
(``[locks] file``), read by :func:`load_lock_registry`::

    [[lock]]
    gateway = "gw-0001"                 # the gateway's device name
    name = "lock-mcu"                   # its submods entry
    kid = "6c6f636b2d30303031"          # hex of the key id provisioned with the key
    key_file = "keys/lock-0001.key"     # 64 hex digits, mode 0600
    firmware = ["<sha256 hex>", ...]    # approved firmware partition digests
    scripts = { "main.py" = ["<sha256 hex>"] }

Apart from reading those files, this module does no I/O; :func:`gateway_submods` calls the
serial link it is handed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cbor2

from edgeward.attestation import claims as C
from edgeward.attestation.ear import SubmodResult, TrustVector
from edgeward.attestation.text import safe
from edgeward.core import cbor
from edgeward.core.errors import ConfigError, DeviceError, IntegrityError, MalformedInputError
from edgeward.core.fileio import OPERATOR, open_bounded
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.core.tomlconf import Section, load_toml

COSE_MAC0_TAG = 17
ALG_HMAC_256_256 = 5
MCU_MEASUREMENTS_FORMAT = 65101
SUBMOD_ERROR = -70004  # private claim in a submodule's claims set: why there is no token
MAX_SUBMODS = 8
MAX_TOKEN_BYTES = 2048
MAX_SCRIPTS = 32


@dataclass(frozen=True)
class LockRegistration:
    """What the vendor registered for one microcontroller behind one gateway."""

    name: str  # the submods entry name, e.g. "lock-mcu"
    key_id: bytes
    key: bytes  # the HMAC-SHA256 key provisioned at manufacture (32 bytes)
    firmware: frozenset[bytes]  # approved SHA-256 digests of the firmware partition
    scripts: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    hwmodel: str | None = None
    last_bootcount: int | None = None


Registry = Callable[[str, str], LockRegistration | None]  # (gateway device, submod name)


class _Vec:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reasons: list[str] = []

    def set(self, claim: str, value: int, reason: str) -> None:
        attr = claim.replace("-", "_")
        cur = self.values.get(attr, C.NO_CLAIM)
        if cur == C.NO_CLAIM or C.tier_of(value) >= C.tier_of(cur):  # never improve a claim
            self.values[attr] = value
        self.reasons.append(reason)

    def result(self, name: str, bootcount: int | None = None) -> SubmodResult:
        return SubmodResult(name, TrustVector(**self.values), tuple(self.reasons), bootcount)


@dataclass(frozen=True)
class _Token:
    kid: bytes
    protected: bytes
    payload: bytes
    tag: bytes


def mac_structure(protected: bytes, payload: bytes) -> bytes:
    """``MAC_structure = ["MAC0", protected, external_aad, payload]`` (RFC 9052 §6.3)."""
    return cbor.dumps(["MAC0", protected, b"", payload])


def _decode_mac0(token: bytes, limits: Limits) -> _Token:
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedInputError(f"token of {len(token)} bytes exceeds {MAX_TOKEN_BYTES}")
    obj = cbor.loads(token, limits=limits, allowed_tags=frozenset({COSE_MAC0_TAG}))
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_MAC0_TAG:
        raise MalformedInputError("token is not a tagged COSE_Mac0")
    v = obj.value
    if not isinstance(v, list) or len(v) != 4:
        raise MalformedInputError("COSE_Mac0 is not an array of 4")
    protected, unprotected, payload, tag = v
    if not all(isinstance(x, bytes) for x in (protected, payload, tag)):
        raise MalformedInputError("COSE_Mac0 fields have the wrong types")
    if unprotected != {}:
        raise MalformedInputError("COSE_Mac0 has unprotected headers, which are refused")
    hdr = cbor.loads(protected, limits=limits)
    if not isinstance(hdr, dict) or set(hdr) != {1, 4}:
        raise MalformedInputError("COSE_Mac0 protected header is not exactly {alg, kid}")
    if hdr[1] != ALG_HMAC_256_256 or isinstance(hdr[1], bool):
        raise MalformedInputError(f"COSE_Mac0 alg {hdr[1]!r} is not HMAC 256/256 (5)")
    kid = hdr[4]
    if not isinstance(kid, bytes) or not 0 < len(kid) <= 64:
        raise MalformedInputError("COSE_Mac0 kid is not 1..64 bytes")
    if len(tag) != 32:
        raise MalformedInputError("COSE_Mac0 tag is not 32 bytes")
    return _Token(kid, protected, payload, tag)


def _mcu_claims(payload: bytes, limits: Limits
                ) -> tuple[bytes, int, bytes, list[tuple[str, bytes]]]:
    """(nonce, bootcount, firmware digest, [(script, digest)]) from the lock's EAT."""
    m = cbor.loads(payload, limits=limits)
    if not isinstance(m, dict):
        raise MalformedInputError("lock claims set is not a map")
    nonce, bootcount, meas = m.get(C.EAT_NONCE), m.get(C.BOOTCOUNT), m.get(C.MEASUREMENTS)
    if not isinstance(nonce, bytes):
        raise MalformedInputError("lock token has no eat_nonce")
    if isinstance(bootcount, bool) or not isinstance(bootcount, int) or bootcount < 0:
        raise MalformedInputError("lock token has no bootcount")
    if (not isinstance(meas, list) or len(meas) != 1 or not isinstance(meas[0], list)
            or len(meas[0]) != 2 or meas[0][0] != MCU_MEASUREMENTS_FORMAT
            or not isinstance(meas[0][1], bytes)):
        raise MalformedInputError("lock measurements are not one [65101, bytes] entry")
    inner = cbor.loads(meas[0][1], limits=limits)
    fw = inner.get("firmware") if isinstance(inner, dict) else None
    scripts = inner.get("scripts", []) if isinstance(inner, dict) else None
    if not isinstance(fw, bytes) or len(fw) != 32:
        raise MalformedInputError("lock measurements have no firmware digest")
    if not isinstance(scripts, list) or len(scripts) > MAX_SCRIPTS or not all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
            and isinstance(s[1], bytes) and len(s[1]) == 32 for s in scripts):
        raise MalformedInputError("lock script measurements are not [[name, digest], ...]")
    return nonce, bootcount, fw, [(s[0], s[1]) for s in scripts]


def appraise_one(name: str, value: Any, *, nonce: bytes, registration: LockRegistration | None,
                 limits: Limits = DEFAULT_LIMITS) -> SubmodResult:
    """One submodule's vector; see the module docstring for the steps."""
    r = _Vec()
    # 1. the gateway could not reach it
    if isinstance(value, dict):
        why = value.get(SUBMOD_ERROR)
        r.set("executables", C.UNRECOGNIZED_RUNTIME,
              f"{name}: {safe(why, 200) if isinstance(why, str) else 'no token'} "
              "(its firmware was not appraised)")
        return r.result(name)
    # 2. structure
    try:
        if not isinstance(value, bytes):
            raise MalformedInputError("entry is neither a token nor a claims set")
        tok = _decode_mac0(value, limits)
    except IntegrityError as e:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED, f"{name}: malformed token: {e}")
        return r.result(name)
    # 3. identity and MAC
    if registration is None or not hmac.compare_digest(registration.key_id, tok.kid):
        r.set("instance-identity", C.UNRECOGNIZED_INSTANCE,
              f"{name}: key {tok.kid.hex()[:16]} is not registered for this gateway")
        return r.result(name)
    want = hmac.new(registration.key, mac_structure(tok.protected, tok.payload),
                    hashlib.sha256).digest()
    if not hmac.compare_digest(want, tok.tag):
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"{name}: the MAC does not verify with the registered key")
        return r.result(name)
    try:
        mnonce, bootcount, fw, scripts = _mcu_claims(tok.payload, limits)
    except IntegrityError as e:
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED, f"{name}: {e}")
        return r.result(name)
    # 4. freshness
    if not hmac.compare_digest(mnonce, nonce):
        r.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
              f"{name}: token answers another nonce (a replayed MAC)")
        return r.result(name)
    last = registration.last_bootcount
    keep: int | None = bootcount  # what the verifier's store keeps when this entry is trusted
    if last is not None and bootcount < last:
        r.set("instance-identity", C.UNTRUSTWORTHY_INSTANCE,
              f"{name}: bootcount went backwards ({bootcount} < {last}): cloned or reset")
        keep = None
    else:
        r.set("instance-identity", C.TRUSTWORTHY_INSTANCE,
              f"{name}: MAC verified with its registered key; fresh (boot {bootcount})")
    # 5. reference values
    if fw in registration.firmware:
        r.set("executables", C.APPROVED_RUNTIME, f"{name}: firmware is approved")
    else:
        r.set("executables", C.CONTRAINDICATED_RUNTIME,
              f"{name}: firmware digest {fw.hex()[:16]} is not approved (tampered lock firmware)")
    seen = {s for s, _ in scripts}
    bad = [s for s, d in scripts if d not in registration.scripts.get(s, frozenset())]
    missing = sorted(set(registration.scripts) - seen)
    if bad or missing:
        r.set("file-system", C.CONTRAINDICATED_FILES,
              f"{name}: scripts {safe(', '.join(bad + missing), 200)} are modified, unknown or "
              "missing")
    elif scripts:
        r.set("file-system", C.APPROVED_FILES, f"{name}: {len(scripts)} script(s) approved")
    r.reasons.append(f"{name}: a symmetric key vouches for no hardware")
    return r.result(name, keep)


def appraise_submods(submods: Mapping[Any, Any], *, device: str, nonce: bytes,
                     registry: Registry | None, limits: Limits = DEFAULT_LIMITS
                     ) -> tuple[SubmodResult, ...]:
    """A vector per submodule of one gateway's evidence (already signature-checked)."""
    if not submods:
        return ()
    if len(submods) > MAX_SUBMODS:
        bad = _Vec()
        bad.set("instance-identity", C.CRYPTO_VALIDATION_FAILED,
                f"evidence carries {len(submods)} submodules (limit {MAX_SUBMODS})")
        return (bad.result("submods"),)
    out = []
    for name in sorted(submods, key=str):
        # the name comes from the device: escaped before it goes into reasons (.text)
        label = safe(name, 64) if isinstance(name, str) else repr(name)[:32]
        reg = registry(device, name) if registry is not None and isinstance(name, str) else None
        out.append(appraise_one(label, submods[name], nonce=nonce, registration=reg,
                                limits=limits))
    return tuple(out)


# --- the gateway's side ---------------------------------------------------------------------


class Link(Protocol):
    def challenge(self, nonce: bytes) -> bytes: ...


def gateway_submods(links: Mapping[str, Link], nonce: bytes) -> dict[str, Any]:
    """Ask each microcontroller for its token; an unreachable one becomes an error entry."""
    out: dict[str, Any] = {}
    for name, link in links.items():
        try:
            out[name] = link.challenge(nonce)
        except DeviceError as e:
            out[name] = {SUBMOD_ERROR: e.message[:200]}
    return out


# --- the vendor's registrations ---------------------------------------------------------------

MAX_LOCKS = 100_000


def _hex(sec: Section, key: str, value: Any, size: int | None) -> bytes:
    where = f"{sec.source}: key '{sec.prefix}{key}'"
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size) or not raw or len(raw) > 64:
        want = f"{size} bytes" if size else "1..64 bytes"
        raise ConfigError(f"{where} must be hex of {want}")
    return raw


def _key_file(path: Path) -> bytes:
    with open_bounded(path, 200, what="lock key", faults=OPERATOR) as f:
        if f.stat.st_mode & 0o077:
            raise ConfigError(f"lock key {path} is readable by others", hint=f"chmod 600 {path}")
        raw = f.read()
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"lock key {path} is not hex") from e
    if len(key) != 32:
        raise ConfigError(f"lock key {path} is {len(key)} bytes, not 32")
    return key


def locks_from_toml(root: Section, *, base: Path) -> dict[tuple[str, str], LockRegistration]:
    """``{(gateway, name): registration}`` from a parsed registry file."""
    out: dict[tuple[str, str], LockRegistration] = {}
    root.reject_unknown(["lock"])
    for sec in root.sections("lock"):
        sec.reject_unknown(["gateway", "name", "kid", "key_file", "firmware", "scripts",
                            "hwmodel"])
        gateway, name = sec.str("gateway"), sec.str("name")
        fw = sec.list("firmware")
        if not fw:
            raise ConfigError(f"{sec.source}: key '{sec.prefix}firmware' is empty",
                              hint="list the approved firmware digests")
        scripts = sec.section("scripts")
        if len(scripts.data) > MAX_SCRIPTS:
            raise ConfigError(f"{sec.source}: more than {MAX_SCRIPTS} scripts")
        if (gateway, name) in out:
            raise ConfigError(f"{sec.source}: lock '{name}' of '{gateway}' is registered twice")
        if len(out) >= MAX_LOCKS:
            raise ConfigError(f"{sec.source}: more than {MAX_LOCKS} locks")
        out[(gateway, name)] = LockRegistration(
            name=name,
            key_id=_hex(sec, "kid", sec.str("kid"), None),
            key=_key_file(sec.path("key_file", base=base)),
            firmware=frozenset(_hex(sec, "firmware", d, 32) for d in fw),
            scripts={n: frozenset(_hex(scripts, n, d, 32) for d in scripts.list(n))
                     for n in scripts.data},
            hwmodel=sec.str("hwmodel", None),
        )
    return out


def load_lock_registry(path: Path) -> Registry:
    """The registry file at ``path`` as the look-up :func:`appraise_submods` wants."""
    table = locks_from_toml(load_toml(path), base=Path(path).parent)

    def lookup(gateway: str, name: str) -> LockRegistration | None:
        return table.get((gateway, name))

    return lookup
