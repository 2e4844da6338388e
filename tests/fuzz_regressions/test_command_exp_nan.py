"""Attack: a signed command with ``exp = NaN`` never expires.

Found by fuzz/fuzz_commands.py (the oracle requires finite times on an accepted command): every
freshness comparison with NaN is false, so ``now > exp`` never refused it and the lifetime check
passed too; a command captured once could be replayed forever (until a higher sequence number).
The gate now refuses a non-finite ``iat`` or ``exp`` as malformed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _common import run_one
from _keys import fixed_key
from fuzz_targets import load_target

from edgeward.agent import commands
from edgeward.core import cbor
from edgeward.core.cose import sign1
from edgeward.core.errors import MalformedInputError

DATA = Path(__file__).resolve().parent / "data" / "command_exp_nan.bin"
NOW = 1_800_000_000.0


def _signed(**fields: object) -> bytes:
    key = fixed_key("backend-commands", "ed25519")
    payload = {"device": "lock-0001", "seq": 9, "iat": NOW, "exp": NOW + 60, "op": "attest",
               "args": {}}
    payload.update(fields)
    return sign1(cbor.dumps(payload), key, content_type=commands.CONTENT_TYPE)


@pytest.mark.parametrize("field", ["exp", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_attack_command_with_non_finite_time_is_refused(field, value):
    gate = commands.CommandGate("lock-0001", fixed_key("backend-commands", "ed25519").public)
    assert gate.check(_signed(), NOW).op == "attest"
    with pytest.raises(MalformedInputError, match="finite"):
        gate.check(_signed(seq=10, **{field: value}), NOW + 1e9)


def test_fuzz_finding_replays_clean():
    run_one(load_target("commands").setup(), DATA.read_bytes())
