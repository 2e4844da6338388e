"""Attack: a device id or event type ending in a newline passes the envelope's checks.

Found while writing the envelope target's oracle (the decoded ``device`` and ``type`` must be
printable ids): the checks used ``re.match`` with ``$``, which also matches before a final
``\\n``. ``"lock-0001\\n"`` then went into topics, the fleet store, logs and the terminal as a
device id, and a topic ``edgeward/v1/lock-0001\\n/status`` parsed as device ``lock-0001\\n``.
"""

from __future__ import annotations

import pytest
from _common import run_one
from fuzz_targets import load_target

from edgeward.agent import envelope
from edgeward.core import cbor
from edgeward.core.errors import ConfigError, MalformedInputError


def _envelope(**changes: object) -> bytes:
    m = cbor.loads(envelope.encode(envelope.Envelope(seq=1, ts=1.0, device="lock-0001",
                                                     type="status")))
    m.update(changes)
    return cbor.dumps(m)


@pytest.mark.parametrize("field", ["device", "type"])
def test_attack_envelope_field_with_trailing_newline_is_refused(field):
    good = envelope.decode(_envelope())
    with pytest.raises(MalformedInputError):
        envelope.decode(_envelope(**{field: getattr(good, field) + "\n"}))


def test_attack_topic_device_with_trailing_newline_is_refused():
    assert envelope.parse_topic("edgeward/v1/lock-0001/status") == ("lock-0001", "status")
    with pytest.raises(MalformedInputError):
        envelope.parse_topic("edgeward/v1/lock-0001\n/status")


def test_device_id_with_trailing_newline_is_not_a_valid_config():
    with pytest.raises(ConfigError):
        envelope.check_device_id("lock-0001\n")
    assert not envelope.valid_type("status\n")


def test_fuzz_oracle_passes_on_the_newline_inputs():
    one = load_target("envelope").setup()
    run_one(one, b"\x00" + _envelope(device="lock-0001\n"))
    run_one(one, b"\x01edgeward/v1/lock-0001\n/status")
