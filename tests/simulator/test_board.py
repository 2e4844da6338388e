"""The simulator takes its boards from the board definitions (boards/data) and refuses the ones
it cannot imitate, with a message that says why."""

from __future__ import annotations

import pytest

from edgeward.core.errors import ConfigError
from edgeward.simulator.board import board


def test_pi4_by_name_and_alias() -> None:
    b = board("rpi4b")
    assert board("pi4") == b
    assert b.cpu == "cortex-a72" and b.cores == 4 and b.memory_mb > 0 and b.tpm
    assert 7 in b.pcrs and 4 in b.pcrs  # firmware measurement and the boot-state scenario


@pytest.mark.parametrize(("name", "why"), [("esp32-lock", "not a Linux board"),
                                           ("rpi-zero2w", "has no TPM"),
                                           ("no-such-board", "unknown board .no-such-board.")])
def test_boards_the_simulator_cannot_imitate_are_refused(name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        board(name)
