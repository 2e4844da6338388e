"""The board a simulated device stands for (CPU model, cores, memory, TPM).

Until ``edgeward.boards`` ships its TOML definitions and loader, one built-in Raspberry Pi 4
definition stands in; :func:`board` is the one place to switch to the loader. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeward.core.errors import ConfigError

DEFAULT_BOARD = "pi4"


@dataclass(frozen=True)
class SimBoard:
    name: str
    description: str
    cpu: str  # QEMU -cpu model
    cores: int
    memory_mb: int
    tpm: bool
    attest_board: str  # the board name in AGENT.toml and the vendor's reference values


_BUILTIN = {
    "pi4": SimBoard("pi4", "Raspberry Pi 4 Model B (BCM2711, 4x Cortex-A72)", "cortex-a72", 4,
                    2048, True, "smartlock-pi4"),
}


def board(name: str = DEFAULT_BOARD) -> SimBoard:
    """The board called ``name``; a ConfigError that lists the known ones otherwise."""
    try:
        return _BUILTIN[name]
    except KeyError:
        raise ConfigError(f"unknown board '{name}'",
                          hint="known boards: " + ", ".join(sorted(_BUILTIN))) from None
