"""Adapter from the attestation part's verifier facade to the service's :class:`Appraiser`.

``edgeward.attestation.service.verifier.Verifier`` issues nonces and appraises evidence into a
signed EAR, keeping its own state (sessions, enrolled devices, results) in the
``[verifier] database`` of VERIFIER.toml; several workers share that database, and a nonce
is consumed once.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeward.attestation.config import VerifierConfig

logger = logging.getLogger(__name__)


class AttestationAppraiser:
    def __init__(self, verifier: Any) -> None:
        self.verifier = verifier

    @classmethod
    def from_config(cls, cfg: VerifierConfig) -> AttestationAppraiser:
        """From the ``verifier`` section of the parsed VERIFIER.toml (``ServiceConfig``)."""
        from edgeward.attestation.service.verifier import Verifier

        return cls(Verifier.from_config(cfg))

    def challenge(self, device: str, now: float) -> bytes:
        nonce: bytes = self.verifier.challenge(device)
        return nonce

    def appraise(self, device: str, evidence: bytes, now: float) -> tuple[bytes, str]:
        r = self.verifier.verify(evidence, device=device)
        status = str(r.ear.status_name)
        if r.device is not None and r.device != device:
            # the ACL stops a device from writing under another's prefix; if evidence still
            # names another device, that is worth a loud log, and the EAR says what it is.
            logger.warning("evidence on %s's topic is from device %s", device, r.device)
            status = "contraindicated"
        return bytes(r.signed), status

    def group(self) -> Any:
        """Group commit of the verifier's store (see :meth:`.verifier_store.Store.group`)."""
        group = getattr(self.verifier.store, "group", None)  # SQLite; PostgreSQL has none
        return group() if group is not None else contextlib.nullcontext()

    def close(self) -> None:
        self.verifier.close()
