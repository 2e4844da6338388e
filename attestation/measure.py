"""Measurements of the device's software: agent code, agent configuration, models. An edge.

* Agent code (RFC 9711 §4.2.16 measurements; the "executables" of AR4SI): one SHA-256 over the
  agent's files in a fixed order. The files are every ``*.py``, ``*.toml`` and ``py.typed``
  of the code that runs on the device, listed once in :data:`DEVICE_CODE` (``__pycache__``
  skipped), or under ``agent_root`` if configured, sorted by their relative POSIX path. Server
  code (``attestation/service/``), the simulator and the demo are left out, so a fix to the
  backend or the demo does not change the measurement of a device. The lock microcontroller's
  code (``firmware_shim/mcu/``) is measured here too: the microcontroller measures its own
  copy, but the gateway's serial link runs ``mcu/frame.py`` itself. The
  digest is ``SHA-256( for each file: len(path) || path || SHA-256(content) )`` with a 2-byte
  big-endian length, so no two file sets collide by moving bytes between names and contents.
* Agent configuration: SHA-256 over the canonical JSON (sorted keys, no spaces) of the parsed
  AGENT.toml without its ``[device]`` table, which holds per-device identity (name, keys,
  certificate, TCTI). Two devices of one fleet with the same policy have the same digest.
* Models: each configured model file is hashed itself, from disk. Its signed manifest
  (``MODEL.ewsig``) gives the name and version only after it verifies against the device's
  model trust store (``[models] trust``); a forged or self-signed manifest cannot rename what is
  measured nor point the measurement at other files (a swapped model shows up as a digest that
  is not in the reference values). A model whose manifest is missing, unreadable or does not
  verify is reported under its file name with version 0 and no manifest digest.

Reading files is the only I/O; nothing is written.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import tomllib
from pathlib import Path

from edgeward.attestation.evidence import Measurements, ModelMeasurement
from edgeward.core.errors import ConfigError, DeviceError, IntegrityError
from edgeward.core.fileio import OPERATOR, read_bounded
from edgeward.core.keys import TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits
from edgeward.core.tomlconf import MAX_CONFIG_BYTES
from edgeward.models.manifest import open_manifest

logger = logging.getLogger(__name__)

# The code that runs on a device: (part, sub-folders of it that do not). The one list of it.
DEVICE_CODE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ()),
    ("models", ()),
    ("attestation", ("service",)),
    ("agent", ()),
    ("firmware_shim", ()),
    ("boards", ()),
)
CODE_SUFFIXES = (".py", ".toml")
MAX_MANIFEST_BYTES = 1024 * 1024
_CHUNK = 1 << 20


def _code_files(root: Path, prefix: str, skip: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    out = []
    for p in root.rglob("*"):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        if skip and p.relative_to(root).parts[0] in skip:
            continue
        if p.suffix in CODE_SUFFIXES or p.name == "py.typed":
            rel = p.relative_to(root).as_posix()
            out.append((f"{prefix}{rel}", p))
    return out


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DeviceError(f"cannot read {path} to measure it: {e.strerror or e}") from e
    return h.digest()


def installed_parts() -> dict[str, list[Path]]:
    """Where each part of :data:`DEVICE_CODE` is installed (its package folders)."""
    out: dict[str, list[Path]] = {}
    for part, _skip in DEVICE_CODE:
        mod = importlib.import_module(f"edgeward.{part}")
        out[part] = [Path(folder) for folder in getattr(mod, "__path__", [])]
    return out


def device_code_files(parts: dict[str, list[Path]]) -> list[tuple[str, Path]]:
    """The device's code files as (relative name, path), from each part's folders."""
    files: list[tuple[str, Path]] = []
    for part, skip in DEVICE_CODE:
        for folder in parts.get(part, ()):
            files.extend(_code_files(folder, f"{part}/", skip))
    return files


def agent_code_digest(
    agent_root: Path | None = None, *, parts: dict[str, list[Path]] | None = None
) -> bytes:
    """The digest over the agent's code files in a fixed order (see the module docstring)."""
    files: list[tuple[str, Path]] = []
    if agent_root is not None:
        if not agent_root.is_dir():
            raise ConfigError(f"agent_root {agent_root} is not a folder")
        files = _code_files(agent_root, "")
    else:
        files = device_code_files(parts if parts is not None else installed_parts())
    h = hashlib.sha256()
    for rel, p in sorted(files):
        name = rel.encode()
        h.update(len(name).to_bytes(2, "big") + name + sha256_file(p))
    logger.debug("agent code: %d files", len(files))
    return h.digest()


def config_digest(path: Path) -> bytes:
    """SHA-256 of the canonical JSON of AGENT.toml without the per-device ``[device]`` table."""
    raw = read_bounded(path, MAX_CONFIG_BYTES, what="configuration file", faults=OPERATOR)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot measure configuration {path}: {e}") from e
    data.pop("device", None)
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).digest()


def measure_model(
    model: Path,
    *,
    sig_path: Path | None = None,
    trust: TrustStore | VerifyingKey | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ModelMeasurement:
    """The configured file's digest; name and version from its manifest if that verifies."""
    digest = sha256_file(model)
    unsigned = ModelMeasurement(model.name, 0, None, ((model.name, digest),))
    sig_path = sig_path or Path(str(model) + ".ewsig")
    if trust is None:
        logger.warning("no model trust store: model %s is measured as unsigned", model)
        return unsigned
    try:
        sig = read_bounded(sig_path, MAX_MANIFEST_BYTES, what="model signature")
        manifest = open_manifest(sig, trust, limits=limits)
    except (ConfigError, DeviceError, IntegrityError) as e:
        logger.warning("model %s has no manifest that verifies (%s); measured as unsigned",
                       model, e)
        return unsigned
    return ModelMeasurement(manifest.name, manifest.version, hashlib.sha256(sig).digest(),
                            ((model.name, digest),))


def load_model_trust(path: Path | None) -> TrustStore | None:
    """The device's model trust store (file or folder of public keys), or None."""
    return TrustStore.from_path(path) if path is not None else None


def measure(
    config_path: Path,
    models: tuple[Path, ...],
    *,
    agent_root: Path | None = None,
    model_sigs: tuple[tuple[Path, Path], ...] = (),
    trust: TrustStore | VerifyingKey | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Measurements:
    sigs = dict(model_sigs)
    return Measurements(
        agent_code=agent_code_digest(agent_root),
        agent_config=config_digest(config_path),
        models=tuple(measure_model(m, sig_path=sigs.get(m), trust=trust, limits=limits)
                     for m in models),
    )
