"""The Attester: builds signed evidence from AGENT.toml, a nonce and the device. An edge.

This is what the device agent calls (RFC 9334 §3.1)::

    attester = Attester.from_config(load_attester_config(Path("AGENT.toml")))
    token = attester.evidence(nonce)        # bytes: EAT/CWT in COSE_Sign1
    attester.close()

It gathers the inputs (measurements from files, the bootcount from the state folder, uptime
from ``/proc/uptime``, PCRs and a quote from the TPM, and with them the measured-boot event log
the kernel keeps, ``[attestation] event_log``) and hands them to the pure core
:mod:`.evidence`. The bootcount (RFC 9711 §4.2.13) is the firmware shim's file counter
``state_dir/counter-bootcount.json``, raised by one whenever the kernel's boot id changes, so it
is monotonic across restarts of the agent and counts real boots; it is written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward.attestation import claims as C
from edgeward.attestation.bootlog import MAX_EVENT_LOG_BYTES
from edgeward.attestation.config import AttesterConfig
from edgeward.attestation.evidence import BootState, EvidenceClaims, sign_evidence
from edgeward.attestation.measure import load_model_trust, measure
from edgeward.attestation.nonces import MAX_NONCE_BYTES
from edgeward.attestation.tpm_quote import qualifying_data
from edgeward.core.errors import ConfigError
from edgeward.core.fileio import OPERATOR, read_bounded
from edgeward.firmware_shim.signer import Signer
from edgeward.firmware_shim.sim.signer import SoftwareSigner
from edgeward.firmware_shim.state import MAX_TAG, FileCounter

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MIN_EAT_NONCE = 8  # RFC 9711 §4.1


def boot_count(state_dir: Path, *, boot_id_path: Path = BOOT_ID) -> int:
    """The persisted bootcount, one more whenever the kernel's boot id changes
    (:class:`~edgeward.firmware_shim.state.FileCounter`, ``counter-bootcount.json``; an older
    ``bootcount.json`` is where it starts from)."""
    try:
        boot_id = boot_id_path.read_text()[:MAX_TAG].strip() or None
    except (OSError, UnicodeDecodeError):
        boot_id = None
    tag = boot_id or f"no-boot-id-{time.time_ns()}"  # count every start when there is none
    counter = FileCounter(state_dir, "bootcount", legacy=Path(state_dir) / "bootcount.json")
    before = counter.read()
    count = counter.once_per(tag)
    if count != before:
        logger.info("boot %d", count)
    return count


def read_event_log(path: Path | None) -> bytes | None:
    """The measured-boot event log to carry in evidence, or None: no log configured or kept by
    the kernel, or one the evidence cannot carry (over :data:`.bootlog.MAX_EVENT_LOG_BYTES`, or
    unreadable): then the verifier says the boot components were not appraised."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_EVENT_LOG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.warning("boot event log %s is not readable (%s): not carried in the evidence; "
                       "give the agent's user read access to it", path, e.strerror)
        return None
    if len(data) > MAX_EVENT_LOG_BYTES:
        logger.warning("boot event log %s is larger than %d bytes: not carried in the evidence",
                       path, MAX_EVENT_LOG_BYTES)
        return None
    return data


def _uptime() -> int | None:
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None


def open_signer(cfg: AttesterConfig) -> Signer:
    """The configured evidence key: a software key file or the TPM's attestation key."""
    if cfg.key == "tpm":
        from edgeward.firmware_shim.linux.tpm import TpmSigner

        return TpmSigner(cfg.tpm_tcti, ak_handle=cfg.tpm_ak_handle)
    if cfg.key_file is None:
        raise ConfigError(f"{cfg.source}: key 'device.key_file' is missing")
    return SoftwareSigner.from_file(cfg.key_file)


MAX_CERT_CHAIN_BYTES = 64 * 1024  # a PEM chain of a few certificates


def load_cert_chain(path: Path | None) -> list[bytes]:
    """The device certificate chain (PEM) as DER, leaf first, for the x5chain header."""
    if path is None:
        return []
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.attestation.enroll import load_certs

    data = read_bounded(path, MAX_CERT_CHAIN_BYTES, what="device certificate", faults=OPERATOR)
    return [c.public_bytes(Encoding.DER) for c in load_certs(data)]


@dataclass
class Attester:
    """Builds evidence for one device. Not thread-safe (one TPM session)."""

    config: AttesterConfig
    signer: Signer
    cert_chain: list[bytes]
    clock: Callable[[], float] = time.time

    @classmethod
    def from_config(cls, cfg: AttesterConfig, *, clock: Callable[[], float] = time.time
                    ) -> Attester:
        return cls(cfg, open_signer(cfg), load_cert_chain(cfg.cert_file), clock)

    @property
    def ueid(self) -> bytes:
        if self.config.ueid is not None:
            return self.config.ueid
        return bytes([C.UEID_RAND]) + hashlib.sha256(b"edgeward-ueid" + self.signer.key_id
                                                     ).digest()[:16]

    def boot_state(self, nonce: bytes) -> BootState | None:
        if self.signer.kind != "tpm":
            return None
        tpm: Any = self.signer
        pcrs = tpm.read_pcrs(self.config.pcrs)
        q = tpm.quote(qualifying_data(nonce), self.config.pcrs)
        return BootState(pcrs=pcrs, quote=q.attest, quote_sig=q.signature)

    def claims(self, nonce: bytes) -> EvidenceClaims:
        if not isinstance(nonce, bytes) or not MIN_EAT_NONCE <= len(nonce) <= MAX_NONCE_BYTES:
            raise ValueError("eat_nonce must be 8..64 bytes")
        cfg = self.config
        boot = self.boot_state(nonce)
        return EvidenceClaims(
            nonce=nonce,
            device=cfg.device,
            ueid=self.ueid,
            hwmodel=cfg.board,
            swname=cfg.swname,
            swversion=VERSION,
            iat=int(self.clock()),
            bootcount=boot_count(cfg.state_dir),
            key_kind=self.signer.kind,
            measurements=measure(cfg.source, cfg.models, agent_root=cfg.agent_root,
                                 model_sigs=cfg.model_sigs,
                                 trust=load_model_trust(cfg.model_trust)),
            uptime=_uptime(),
            oemid=cfg.oemid,
            hwversion=cfg.hwversion,
            dbgstat=cfg.dbgstat,
            boot=boot,
            event_log=read_event_log(cfg.event_log) if boot is not None else None,
        )

    def evidence(self, nonce: bytes, *, submods: dict[str, Any] | None = None) -> bytes:
        """Measure, sign and return one evidence token answering ``nonce``."""
        ev = self.claims(nonce)
        if submods:
            ev = EvidenceClaims(**{**ev.__dict__, "submods": dict(submods)})
        return sign_evidence(ev, self.signer, x5chain=self.cert_chain or None)

    def __call__(self, nonce: bytes) -> bytes:
        """What the agent calls (its ``seams.Attester``): :meth:`evidence` without submodules."""
        return self.evidence(nonce)

    def close(self) -> None:
        close = getattr(self.signer, "close", None)
        if close is not None:
            close()
