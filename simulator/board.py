"""The board a simulated device stands for, as the simulator needs it.

Board definitions are data (``boards/data/*.toml``, :func:`edgeward.boards.loader.load_board`);
:func:`board` takes one and keeps what a simulated device uses: the QEMU CPU model, cores and
memory, and the PCRs its reference values cover. The simulator runs Linux boards with a TPM
(every simulated device attests with its own swtpm); anything else is a clear ConfigError.
Pure apart from the loader reading the board file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeward.core.errors import ConfigError

DEFAULT_BOARD = "rpi4b"


@dataclass(frozen=True)
class SimBoard:
    name: str
    description: str
    cpu: str  # QEMU -cpu model
    cores: int
    memory_mb: int
    tpm: bool
    attest_board: str  # the board name in AGENT.toml and the vendor's reference values
    pcrs: tuple[int, ...] = tuple(range(8))  # the boot-state PCRs the devices attest
    machine: str = "virt"
    definition: Any = None  # the full edgeward.boards Board, for the QEMU device


def board(name: str = DEFAULT_BOARD) -> SimBoard:
    """The board called ``name`` (or one of its aliases), checked for simulation."""
    from edgeward.boards.loader import load_board

    b = load_board(name)
    if b.backend != "linux" or b.qemu is None:
        raise ConfigError(f"board '{b.name}' ({b.description}) is not a Linux board with a "
                          "[qemu] section; the simulator runs Pi-class Linux devices",
                          hint="see edgeward boards list")
    if not b.has_tpm:
        raise ConfigError(f"board '{b.name}' has no TPM ([root_of_trust] kind = "
                          f"'{b.root_of_trust.kind}'); simulated devices attest with a TPM",
                          hint="pick a board with a TPM (edgeward boards list)")
    return SimBoard(name=b.name, description=b.description, cpu=b.qemu.cpu, cores=b.qemu.smp,
                    memory_mb=b.qemu.memory_mib, tpm=True, attest_board=b.name,
                    pcrs=tuple(b.boot.pcrs), machine=b.qemu.machine, definition=b)
