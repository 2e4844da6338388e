"""Signed commands: the gate refuses unsigned, forged, expired, replayed, misrouted, unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeward.agent.commands import (
    CommandGate,
    load_last_seq,
    make_command,
    refusal_reason,
    save_last_seq,
)
from edgeward.core import cbor
from edgeward.core.errors import EdgewardError
from edgeward.core.keys import TrustStore, generate

NOW = 1_800_000_000.0


@pytest.fixture
def backend_key():
    return generate("ed25519")


def gate(key, last: int = 0) -> CommandGate:
    return CommandGate("dev-a", TrustStore([key.public]), last_seq=last)


def reason(g: CommandGate, data: bytes, now: float = NOW) -> str:
    with pytest.raises(EdgewardError) as ei:
        g.check(data, now)
    return refusal_reason(ei.value)


def test_accepts_fresh_signed_command_and_advances_seq(backend_key) -> None:
    g = gate(backend_key)
    cmd = g.check(make_command(backend_key, "dev-a", 5, "set_interval", {"seconds": 10}, now=NOW), NOW + 1)
    assert (cmd.op, cmd.args, cmd.seq, g.last_seq) == ("set_interval", {"seconds": 10}, 5, 5)


def test_unsigned_command_is_refused(backend_key) -> None:
    """Attack: a compromised broker injects a plain CBOR command."""
    plain = cbor.dumps({"device": "dev-a", "seq": 9, "iat": NOW, "exp": NOW + 60, "op": "attest", "args": {}})
    assert reason(gate(backend_key), plain) == "unsigned"
    assert reason(gate(backend_key), b"\xff\x00garbage") == "unsigned"


def test_command_signed_by_other_key_is_refused(backend_key) -> None:
    """Attack: another device (or the broker) signs with its own key."""
    rogue = generate("ed25519")
    assert reason(gate(backend_key), make_command(rogue, "dev-a", 1, "attest", now=NOW)) == "unsigned"


def test_expired_and_future_commands_are_refused(backend_key) -> None:
    data = make_command(backend_key, "dev-a", 1, "attest", now=NOW, ttl=60)
    assert reason(gate(backend_key), data, NOW + 61) == "expired"
    assert reason(gate(backend_key), data, NOW - 3600) == "expired"
    long = make_command(backend_key, "dev-a", 1, "attest", now=NOW, ttl=10 * 86400)
    assert reason(gate(backend_key), long) == "expired"


def test_replayed_command_is_refused(backend_key) -> None:
    """Attack: a recorded, validly signed command is sent again."""
    g = gate(backend_key)
    data = make_command(backend_key, "dev-a", 3, "reverify", now=NOW)
    g.check(data, NOW)
    assert reason(g, data) == "replayed"
    assert reason(g, make_command(backend_key, "dev-a", 2, "attest", now=NOW)) == "replayed"


def test_command_for_another_device_is_refused(backend_key) -> None:
    """Attack: B's command replayed onto A's topic."""
    assert reason(gate(backend_key), make_command(backend_key, "dev-b", 1, "attest", now=NOW)) == "replayed"


def test_unknown_op_and_bad_args_are_refused(backend_key) -> None:
    g = gate(backend_key)
    assert reason(g, make_command(backend_key, "dev-a", 1, "rm-rf", now=NOW)) == "unknown"
    assert reason(g, make_command(backend_key, "dev-a", 2, "set_interval", {"seconds": 0}, now=NOW)) == "unknown"
    assert reason(g, make_command(backend_key, "dev-a", 3, "attest", {"x": 1}, now=NOW)) == "unknown"
    assert g.last_seq == 0


def test_no_trust_store_refuses_everything(backend_key) -> None:
    g = CommandGate("dev-a", None)
    assert reason(g, make_command(backend_key, "dev-a", 1, "attest", now=NOW)) == "unsigned"


def test_last_seq_persists(tmp_path: Path) -> None:
    p = tmp_path / "s" / "cmd_seq"
    assert load_last_seq(p) == 0
    save_last_seq(p, 42)
    assert load_last_seq(p) == 42


# --- issue 9, hole 8 ----------------------------------------------------------------------------


def test_attack_command_with_nan_expiry_never_expires(backend_key) -> None:
    from edgeward.agent.commands import CONTENT_TYPE
    from edgeward.core.cose import sign1

    payload = cbor.dumps({"device": "dev-a", "seq": 1, "iat": NOW, "exp": float("nan"),
                          "op": "attest", "args": {}})
    data = sign1(payload, backend_key, content_type=CONTENT_TYPE)
    assert reason(gate(backend_key), data, NOW + 10 * 365 * 86400) == "malformed"
    inf = cbor.dumps({"device": "dev-a", "seq": 1, "iat": float("-inf"), "exp": float("inf"),
                      "op": "attest", "args": {}})
    assert reason(gate(backend_key), sign1(inf, backend_key, content_type=CONTENT_TYPE)) == \
        "malformed"


def test_attack_other_signed_object_passes_as_a_command(backend_key) -> None:
    """A payload shaped like a command, signed by a trusted key for another purpose (an EAR or
    an ack content type, or none), is not a command."""
    from edgeward.core.cose import sign1

    payload = cbor.dumps({"device": "dev-a", "seq": 1, "iat": NOW, "exp": NOW + 60,
                          "op": "attest", "args": {}})
    for ctype in (None, "application/vnd.edgeward.ack+cbor"):
        data = sign1(payload, backend_key, content_type=ctype)
        assert reason(gate(backend_key), data) == "unsigned"
