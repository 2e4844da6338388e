"""What the agent's composition root takes from the hardware layer. An edge.

:func:`hardware_parts` turns the ``[hardware]`` settings and the board named in ``[device]``
into the parts the agent runs with:

* the :class:`~.platform.Platform` backend the board definition names (``linux`` or ``sim``;
  detected when no board is named), logged with the device identity it reports;
* the hardware watchdog, opened and armed when ``[hardware] watchdog`` gives a timeout; the
  agent's loop feeds it every turn (the feed writes at most every third of the timeout) and
  closes it with the magic close on a clean stop, so only a hung agent reboots the board;
* the serial links to lock microcontrollers (``[hardware] lock_port``), which
  :class:`GatewayEvidence` asks for their tokens whenever the agent answers a challenge.

A missing watchdog device or serial port is a :class:`~edgeward.core.errors.DeviceError`
saying what to check, raised at start, never a crash later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeward.core.errors import DeviceError
from edgeward.firmware_shim.platform import (
    Platform,
    Watchdog,
    backend_for_board,
    open_platform,
)

logger = logging.getLogger(__name__)


@dataclass
class HardwareParts:
    backend: str
    platform: Platform
    watchdog: Watchdog | None = None
    links: dict[str, Any] = field(default_factory=dict)  # submods name -> McuLink
    clock: Callable[[], float] = time.monotonic  # not the wall clock: NTP steps it back

    def feed(self) -> None:
        """Called every turn of the agent's loop; cheap when there is nothing to write."""
        if self.watchdog is not None:
            self.watchdog.feed(self.clock())

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        for link in self.links.values():
            close = getattr(link.port, "close", None)
            if close is not None:
                close()
        self.links = {}


def hardware_parts(hw: Any, *, board: str | None, state_dir: Path,
                   root: Path = Path("/")) -> HardwareParts:
    """The hardware parts for ``hw`` (the agent's ``[hardware]`` settings)."""
    backend = backend_for_board(board, extra_dirs=tuple(Path(d) for d in hw.board_dirs))
    plat = open_platform(backend, state_dir=state_dir, root=root)
    try:
        ident = plat.identity()
        who = f"identity {ident.serial} from {ident.source}"
    except DeviceError as e:  # reported, not fatal: the device name identifies it to the fleet
        who = f"no hardware identity ({e})"
    logger.info("hardware backend %s (board %s), %s", backend,
                board or "not named, detected", who)
    parts = HardwareParts(backend, plat)
    try:
        if hw.watchdog:
            parts.watchdog = plat.open_watchdog(hw.watchdog)
            logger.info("hardware watchdog armed: %d s", hw.watchdog)
        if hw.lock_port:
            from edgeward.firmware_shim.serial_link import McuLink, open_serial

            parts.links[hw.lock_name] = McuLink(open_serial(hw.lock_port, hw.lock_baud),
                                                timeout=hw.lock_timeout,
                                                retries=hw.lock_retries)
    except BaseException:
        parts.close()
        raise
    return parts


class EvidenceMaker(Protocol):
    """What :class:`GatewayEvidence` wraps: :class:`edgeward.attestation.attester.Attester`."""

    def evidence(self, nonce: bytes, *, submods: dict[str, Any] | None = None) -> bytes: ...

    def close(self) -> None: ...


class GatewayEvidence:
    """The agent's evidence maker on a gateway: each answer asks every lock for its token under
    the same nonce (:func:`~edgeward.attestation.submods.gateway_submods`) and carries it as a
    submodule. Called as ``nonce -> evidence``; :meth:`close` closes the attester (its TPM
    session). The links belong to :class:`HardwareParts`, which closes them."""

    def __init__(self, attester: EvidenceMaker, links: dict[str, Any]) -> None:
        self.attester = attester
        self.links = links

    def __call__(self, nonce: bytes) -> bytes:
        from edgeward.attestation.submods import gateway_submods

        return self.attester.evidence(nonce, submods=gateway_submods(self.links, nonce))

    def close(self) -> None:
        self.attester.close()
