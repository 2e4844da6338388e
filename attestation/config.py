"""Attestation configuration: the attester's part of AGENT.toml and VERIFIER.toml.

Frozen dataclasses loaded once through :mod:`edgeward.core.tomlconf`, so every error names the
file, the key and the fix. Relative paths are relative to the configuration file.

AGENT.toml is read once, by the agent's loader (``edgeward.agent.config``), which hands the parsed
``[device]`` and ``[attestation]`` tables to :func:`attester_from_section` with the agent's state
folder and models; the result is the agent's ``attester`` section, rebuilt on every SIGHUP.
The Attester's part (full example in docs/ATTESTATION.md)::

    [device]            # per-device identity: NOT part of the configuration measurement
    name = "lock-0001"; board = "smartlock-pi4"; key = "software" | "tpm"
    key_file = "..."; cert_file = "..."; tpm_tcti = "..."; tpm_ak_handle = 0x81010020
    hwversion, oemid (hex), ueid (hex)
    [attestation]       # fleet policy: measured
    state_dir (default: [agent] state_dir), models = [...] (default: the paths of the agent's
    [[models.model]] entries), pcrs = [0..7], agent_root, swname, dbgstat

VERIFIER.toml: ``[verifier]`` (database, EAR key), ``[enrollment]`` (maker CAs, their CRLs, TOFU),
``[refvalues]`` (vendor keys, folder of signed documents), ``[policy]`` and ``[limits]``
(:data:`VERIFIER_LIMITS`); the verifier service reads them through its own loader
(``edgeward.attestation.service.config``), in the same parse as its own tables.
Reading the file is the only I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeward.attestation import claims as C
from edgeward.core.errors import ConfigError
from edgeward.core.limits import Limits
from edgeward.core.tomlconf import Section, load_toml

DBGSTAT = {
    "enabled": C.DBG_ENABLED,
    "disabled": C.DBG_DISABLED,
    "disabled-since-boot": C.DBG_DISABLED_SINCE_BOOT,
    "disabled-permanently": C.DBG_DISABLED_PERMANENTLY,
    "disabled-fully-and-permanently": C.DBG_DISABLED_FULLY_AND_PERMANENTLY,
}
_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DEVICE_KEYS = ("name", "board", "hwversion", "oemid", "ueid", "key", "key_file", "cert_file",
               "tpm_tcti", "tpm_ak_handle")
ATTESTATION_KEYS = ("state_dir", "models", "pcrs", "agent_root", "swname", "dbgstat",
                    "verifier_key", "event_log")
EVENT_LOG_PATH = "/sys/kernel/security/tpm0/binary_bios_measurements"  # the kernel's


def _hex(sec: Section, key: str, *, min_len: int, max_len: int) -> bytes | None:
    v = sec.str(key, None)
    if v is None:
        return None
    try:
        b = bytes.fromhex(v)
    except ValueError:
        b = b""
    if not min_len <= len(b) <= max_len:
        raise ConfigError(f"{sec.source}: key '{sec.prefix}{key}' must be {min_len}..{max_len} "
                          "bytes of hex")
    return b


@dataclass(frozen=True)
class AttesterConfig:
    source: Path
    device: str
    board: str
    key: str  # "software" | "tpm"
    key_file: Path | None
    cert_file: Path | None
    tpm_tcti: str
    tpm_ak_handle: int
    state_dir: Path
    models: tuple[Path, ...] = ()
    model_sigs: tuple[tuple[Path, Path], ...] = ()  # (model, signature) where not MODEL.ewsig
    pcrs: tuple[int, ...] = tuple(range(8))
    agent_root: Path | None = None
    swname: str = "edgeward-agent"
    hwversion: str | None = None
    oemid: bytes | None = None
    ueid: bytes | None = None
    dbgstat: int | None = None
    model_trust: Path | None = None  # [models] trust: verifies the manifests it measures
    # [attestation] verifier_key: the verifier's EAR key(s), file or folder. A trust store of
    # its own: an EAR key never signs commands, a command key never signs results.
    verifier_key: Path | None = None
    # [attestation] event_log: the measured-boot event log carried with a TPM quote; "" for none
    event_log: Path | None = Path(EVENT_LOG_PATH)


def attester_from_section(
    root: Section,
    source: Path,
    *,
    state_dir: Path,
    models: tuple[tuple[Path, Path | None], ...] = (),
) -> AttesterConfig | None:
    """The attester's part of a parsed AGENT.toml, or None if ``[device]`` names no board.

    Called by the agent's one loader (:func:`edgeward.agent.config.load_agent_config`), which
    passes what the attester defaults to from the agent's own tables: its state folder and its
    ``[[models.model]]`` entries (path, signature or None).
    """
    base = source.parent
    dev = root.section("device", required=True)
    dev.reject_unknown(DEVICE_KEYS)
    att = root.section("attestation")
    att.reject_unknown(ATTESTATION_KEYS)
    if not dev.has("board"):
        return None
    name = dev.str("name")
    if not _NAME_RE.match(name):
        raise ConfigError(f"{source}: key 'device.name' is '{name}'",
                          hint="use letters, digits, '.', '_' or '-' (at most 64)")
    board = dev.str("board")
    if not 0 < len(board.encode()) <= 32:
        raise ConfigError(f"{source}: key 'device.board' must be 1..32 bytes (EAT hwmodel)")
    key = dev.str("key", "software", choices=("software", "tpm"))
    key_file = dev.path("key_file", None, base=base)
    if key == "software" and key_file is None:
        raise ConfigError(f"{source}: key 'device.key_file' is missing",
                          hint="a software evidence key needs `edgeward keys generate --out DIR`")
    pcrs = att.list("pcrs", list(range(8)))
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 24 for p in pcrs):
        raise ConfigError(f"{source}: key 'attestation.pcrs' must list PCR indices 0..23")
    sigs: tuple[tuple[Path, Path], ...] = ()
    if att.has("models"):
        names = att.list("models")
        if not all(isinstance(m, str) for m in names):
            raise ConfigError(f"{source}: key 'attestation.models' must be a list of paths")
        paths = tuple(base / Path(m).expanduser() for m in names)
    else:  # the agent's own [[models.model]] entries
        paths = tuple(p for p, _ in models)
        sigs = tuple((p, s) for p, s in models if s is not None)
    dbg = att.str("dbgstat", None, choices=tuple(DBGSTAT))
    log = att.str("event_log", EVENT_LOG_PATH)
    return AttesterConfig(
        source=source,
        device=name,
        board=board,
        key=key,
        key_file=key_file,
        cert_file=dev.path("cert_file", None, base=base),
        tpm_tcti=dev.str("tpm_tcti", "device:/dev/tpmrm0"),
        tpm_ak_handle=dev.int("tpm_ak_handle", 0x81010020, min=0x81000000, max=0x81FFFFFF),
        state_dir=att.path("state_dir", str(state_dir), base=base),
        models=paths,
        model_sigs=sigs,
        pcrs=tuple(sorted(set(pcrs))),
        agent_root=att.path("agent_root", None, base=base),
        swname=att.str("swname", "edgeward-agent"),
        hwversion=dev.str("hwversion", None),
        oemid=_hex(dev, "oemid", min_len=3, max_len=16),
        ueid=_hex(dev, "ueid", min_len=7, max_len=33),
        dbgstat=DBGSTAT[dbg] if dbg is not None else None,
        model_trust=root.section("models").path("trust", None, base=base),
        verifier_key=att.path("verifier_key", None, base=base),
        event_log=att.path("event_log", EVENT_LOG_PATH, base=base) if log else None,
    )


def _paths(sec: Section, key: str, source: Path) -> list[str]:
    v = sec.list(key, [])
    if not all(isinstance(c, str) for c in v):
        raise ConfigError(f"{source}: key '{sec.prefix}{key}' must be a list of paths")
    return v


def load_attester_config(path: Path) -> AttesterConfig:
    """The attester's part of AGENT.toml, read by the agent's one loader (the same parse, the
    same defaults as the running agent); ``[mqtt]`` may be absent here."""
    from edgeward.agent.config import load_agent_config

    cfg = load_agent_config(path, need_mqtt=False)
    if cfg.attester is None:
        raise ConfigError(f"{cfg.source}: key 'device.board' is missing",
                          hint="name the board (e.g. board = \"smartlock-pi4\") to attest")
    return cfg.attester


# The verifier's CBOR bounds, stated once: evidence and envelopes are a few KiB, so the backend
# refuses far smaller input than a device's defaults (core/limits.py). ``[limits]`` of
# VERIFIER.toml may lower them (or raise them up to the core defaults).
VERIFIER_LIMITS = Limits(max_cbor_bytes=64 * 1024, max_cbor_items=10_000)
LIMIT_KEYS = ("max_cbor_bytes", "max_cbor_depth", "max_cbor_items")


def verifier_limits(lim: Section) -> Limits:
    """``[limits]`` of VERIFIER.toml: the verifier's and the service's bounds."""
    lim.reject_unknown(LIMIT_KEYS)
    d, top = VERIFIER_LIMITS, Limits()
    return Limits(
        max_cbor_bytes=lim.int("max_cbor_bytes", d.max_cbor_bytes, min=256,
                               max=top.max_cbor_bytes),
        max_cbor_depth=lim.int("max_cbor_depth", d.max_cbor_depth, min=4, max=64),
        max_cbor_items=lim.int("max_cbor_items", d.max_cbor_items, min=16,
                               max=top.max_cbor_items),
    )


@dataclass(frozen=True)
class PostgresSettings:
    """``[store]``: the verifier and fleet state in one PostgreSQL database; without a ``url``
    they stay in the SQLite files (``[verifier] database``, ``[service] store``)."""

    url: str  # postgresql://user@host:port/dbname (a password belongs in ~/.pgpass, not here)
    pool_size: int = 4  # connections per store per worker
    connect_timeout: float = 10.0


def postgres_settings(root: Section, source: Path) -> PostgresSettings | None:
    """``[store]`` of VERIFIER.toml, or None (the SQLite files)."""
    st = root.section("store")
    st.reject_unknown(("url", "pool_size", "connect_timeout"))
    url = st.str("url", "")
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{source}: key 'store.url' must be a postgresql:// URL",
                          hint='e.g. url = "postgresql://edgeward@db.example:5432/edgeward"; '
                               "leave [store] out to keep the SQLite files")
    return PostgresSettings(url=url, pool_size=st.int("pool_size", 4, min=1, max=200),
                            connect_timeout=st.float("connect_timeout", 10.0, min=0.5, max=600))


@dataclass(frozen=True)
class VerifierConfig:
    source: Path
    database: Path
    key_file: Path
    maker_cas: tuple[Path, ...]
    vendor_keys: Path
    refvalues_dir: Path
    tofu: bool = False
    software_keys: str = "warning"
    max_clock_skew: float = 30.0
    max_evidence_age: float = 300.0
    nonce_ttl: float = 60.0
    nonce_bytes: int = 32
    policy_id: str = "edgeward/default"
    limits: Limits = VERIFIER_LIMITS
    locks_file: Path | None = None  # lock microcontrollers behind gateways (docs/LOCK.md)
    crls: tuple[Path, ...] = ()  # [enrollment] crls: the maker CAs' revocation lists (PEM/DER)
    postgres: PostgresSettings | None = None  # [store] url: PostgreSQL instead of `database`


def verifier_from_section(root: Section, source: Path) -> VerifierConfig:
    base = source.parent
    v = root.section("verifier", required=True)
    v.reject_unknown(("database", "key_file", "policy_id"))
    en = root.section("enrollment")
    en.reject_unknown(("maker_cas", "tofu", "crls"))
    rv = root.section("refvalues", required=True)
    rv.reject_unknown(("vendor_keys", "dir"))
    pol = root.section("policy")
    if pol.has("allow_software_keys"):
        raise ConfigError(f"{source}: key 'policy.allow_software_keys' is replaced",
                          hint='use software_keys = "warning" (default), "affirming" or "refuse"')
    pol.reject_unknown(("software_keys", "max_clock_skew", "max_evidence_age",
                        "nonce_ttl", "nonce_bytes"))
    cas = en.list("maker_cas", [])
    if not all(isinstance(c, str) for c in cas):
        raise ConfigError(f"{source}: key 'enrollment.maker_cas' must be a list of PEM paths")
    tofu = en.bool("tofu", False)
    if not cas and not tofu:
        raise ConfigError(f"{source}: no device-maker CA in 'enrollment.maker_cas'",
                          hint="add the maker's CA certificate, or set tofu = true (unsafe)")
    limits = verifier_limits(root.section("limits"))
    locks = root.section("locks")
    locks.reject_unknown(("file",))
    return VerifierConfig(
        source=source,
        database=v.path("database", "verifier.sqlite", base=base),
        key_file=v.path("key_file", base=base),
        maker_cas=tuple(base / c if not Path(c).is_absolute() else Path(c) for c in cas),
        vendor_keys=rv.path("vendor_keys", base=base),
        refvalues_dir=rv.path("dir", base=base),
        tofu=tofu,
        software_keys=pol.str("software_keys", "warning",
                              choices=("warning", "affirming", "refuse")),
        max_clock_skew=pol.float("max_clock_skew", 30.0, min=0, max=3600),
        max_evidence_age=pol.float("max_evidence_age", 300.0, min=1, max=86400),
        nonce_ttl=pol.float("nonce_ttl", 60.0, min=1, max=3600),
        nonce_bytes=pol.int("nonce_bytes", 32, min=16, max=64),
        policy_id=v.str("policy_id", "edgeward/default"),
        limits=limits,
        locks_file=locks.path("file", None, base=base),
        crls=tuple(base / c if not Path(c).is_absolute() else Path(c)
                   for c in _paths(en, "crls", source)),
        postgres=postgres_settings(root, source),
    )


def load_verifier_config(path: Path) -> VerifierConfig:
    path = Path(path)
    return verifier_from_section(load_toml(path), path)
