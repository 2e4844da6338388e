"""Attack: a value with a trailing newline passed checks written with `$` (which also matches
before a final newline), then forged a line in a log or a reason. Every name and version
pattern refuses it."""

from __future__ import annotations

import pytest

from edgeward.attestation.config import _NAME_RE
from edgeward.attestation.refvalues import _VERSION_RE, parse_version
from edgeward.boards.loader import NAME_RE
from edgeward.firmware_shim.linux.system import _SERIAL_RE
from edgeward.firmware_shim.state import _NAME


@pytest.mark.parametrize(("pattern", "good"), [
    (_VERSION_RE, "0.1.0"), (_NAME_RE, "lock-0001"), (NAME_RE, "pi4b"),
    (_SERIAL_RE, "10000000abcdef01"), (_NAME, "bootcount"),
])
def test_trailing_newline_refused(pattern, good) -> None:
    assert pattern.match(good)
    assert not pattern.match(good + "\n")


def test_version_with_newline_is_not_a_version() -> None:
    with pytest.raises(ValueError):
        parse_version("0.1.0\n")
