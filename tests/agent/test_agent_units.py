"""Pure cores and small edges: envelope, topics, config, back-off, rate limit, local socket."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import cbor2
import pytest

from edgeward.agent.backoff import Backoff
from edgeward.agent.config import load_agent_config
from edgeward.agent.envelope import Envelope, decode, encode, parse_topic, topic
from edgeward.agent.localsock import LocalEvent, LocalSocketServer
from edgeward.agent.ratelimit import TokenBucket
from edgeward.core.cbor import dumps
from edgeward.core.errors import ConfigError, MalformedInputError
from edgeward.core.frames import encode_frame
from edgeward.core.limits import Limits

GOOD = {"v": 1, "seq": 7, "ts": 1.5, "device": "lock-1", "type": "metrics", "body": {"a": 1}}


def test_envelope_round_trip_and_canonical_bytes() -> None:
    env = Envelope(seq=7, ts=1.5, device="lock-1", type="metrics", body={"a": 1, "bb": [1, 2]})
    data = encode(env)
    assert decode(data) == env
    assert data == dumps(env.to_map())  # same bytes as the RFC 8949 §4.2.1 reference encoder


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2}, {"seq": 0}, {"seq": True}, {"seq": 2**63}, {"seq": "7"}, {"ts": "now"},
        {"ts": False}, {"device": "a/b"}, {"device": "+"}, {"device": ""}, {"type": "Bad Type"},
        {"body": [1]}, {"extra": 1},
    ],
)
def test_envelope_decode_refuses_bad_fields(change: dict) -> None:
    m = {**GOOD, **change}
    with pytest.raises(MalformedInputError):
        decode(cbor2.dumps(m))


def test_envelope_decode_refuses_malformed_and_oversized() -> None:
    for data in (b"", b"\xff", b"\xa1", cbor2.dumps([1, 2]), cbor2.dumps(GOOD) + b"\x00"):
        with pytest.raises(MalformedInputError):
            decode(data)
    big = {**GOOD, "body": {"x": "y" * 5000}}
    with pytest.raises(MalformedInputError):
        decode(cbor2.dumps(big), limits=Limits(max_cbor_bytes=1024))
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(MalformedInputError):
        decode(cbor2.dumps({**GOOD, "body": {"d": deep}}))


def test_topics() -> None:
    assert topic("lock-1", "attest/evidence") == "edgeward/v1/lock-1/attest/evidence"
    assert parse_topic("edgeward/v1/lock-1/cmd") == ("lock-1", "cmd")
    for bad in ("edgeward/v2/lock-1/cmd", "edgeward/v1/lock-1/nope", "edgeward/v1/+/cmd",
                "x", "edgeward/v1/lock-1"):
        with pytest.raises(MalformedInputError):
            parse_topic(bad)
    with pytest.raises(ConfigError):
        topic("a/b", "cmd")


def test_backoff_is_full_jitter_capped_and_resets() -> None:
    b = Backoff(0.5, 8.0, floor=0.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay() == 0.5
    j = Backoff(0.5, 8.0, rand=lambda: 0.0)
    assert j.next_delay() == j.floor  # never a zero-delay hot loop


def test_token_bucket() -> None:
    tb = TokenBucket(rate=2.0, burst=2.0)
    assert [tb.take(0.0) for _ in range(3)] == [True, True, False]
    assert tb.take(0.5) and not tb.take(0.5)


def _write(tmp: Path, body: str) -> Path:
    p = tmp / "agent.toml"
    p.write_text(body)
    return p


MIN = """
[device]
name = "lock-1"
[mqtt]
ca = "ca.pem"
cert = "c.pem"
key = "k.pem"
"""


def test_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_agent_config(_write(tmp_path, MIN))
    assert cfg.device == "lock-1" and cfg.mqtt.client_id == "lock-1"
    assert cfg.mqtt.ca == tmp_path / "ca.pem" and cfg.mqtt.port == 8883 and cfg.mqtt.tls
    assert cfg.outbox.path == tmp_path / "state" / "outbox.db"
    assert cfg.commands.trust is None and not cfg.home_assistant.enabled


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[bogus]\n", "'bogus' is not a known setting"),
        ("[outbox]\nmax_bytes = 10\n", "outbox.max_bytes"),
        ("[metrics]\ninterval = 'fast'\n", "metrics.interval"),
        ("[[models.model]]\npath = 'm.tflite'\nname = 'm'\n", "models.trust"),
        ("[models]\ntrust = 't'\n[[models.model]]\npath = 'm.tflite'\n", "models.model[0].name"),
        ("[mqtt2]\n", "mqtt2"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_agent_config(_write(tmp_path, MIN + extra))
    assert needle in str(ei.value) and str(tmp_path) in str(ei.value)


def test_config_requires_broker_verification_material(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.ca"):
        load_agent_config(_write(tmp_path, '[device]\nname = "x"\n[mqtt]\ncert = "c"\n'))
    with pytest.raises(ConfigError, match=r"device\.name"):
        load_agent_config(_write(tmp_path, MIN.replace('"lock-1"', '"a/b"')))


def _wait(pred, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def test_local_socket_oversized_frame_closes_only_that_client(tmp_path: Path) -> None:
    """Attack: a local process sends a 4 GiB length prefix to exhaust the agent's memory."""
    got: list[object] = []
    srv = LocalSocketServer(tmp_path / "s.sock", got.append, max_clients=2)
    srv.start()
    try:
        assert oct((tmp_path / "s.sock").stat().st_mode & 0o777) == "0o660"
        bad = socket.socket(socket.AF_UNIX)
        bad.connect(str(tmp_path / "s.sock"))
        bad.sendall(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)
        good = socket.socket(socket.AF_UNIX)
        good.connect(str(tmp_path / "s.sock"))
        good.sendall(encode_frame({"type": "anomaly", "body": {"s": 1}}))
        assert _wait(lambda: len(got) == 1 and srv.stats.closed_oversized == 1)
        assert bad.recv(10) == b""  # closed by the agent
        ev = got[0]
        assert isinstance(ev, LocalEvent) and ev.type == "app.anomaly" and ev.body == {"s": 1}
        third = socket.socket(socket.AF_UNIX)
        third.connect(str(tmp_path / "s.sock"))
        fourth = socket.socket(socket.AF_UNIX)
        fourth.connect(str(tmp_path / "s.sock"))
        # the newcomer takes the place of the longest idle connection (not refused)
        assert _wait(lambda: srv.stats.evicted_idle == 1)
        for s in (bad, good, third, fourth):
            s.close()
    finally:
        srv.stop()
    assert not (tmp_path / "s.sock").exists()


def test_local_socket_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    from edgeward.core.errors import DeviceError

    (tmp_path / "s.sock").write_text("not a socket")
    with pytest.raises(DeviceError):
        LocalSocketServer(tmp_path / "s.sock", lambda e: None).start()


def _offline_agent(tmp_path: Path):
    from edgeward.agent.compose import build_agent

    cfg = load_agent_config(_write(tmp_path, '[device]\nname = "lock-1"\n[mqtt]\ntls = false\n'
                                   '[limits]\nmax_cbor_bytes = 4096\n'))
    return build_agent(cfg)


def test_agent_counts_bad_input_and_never_crashes(tmp_path: Path) -> None:
    """Attack: junk on every topic the device reads, and on topics it must not act on."""
    from edgeward.agent.events import Incoming

    agent = _offline_agent(tmp_path)
    for t, p in [
        ("edgeward/v1/lock-2/cmd", b"x"),                    # another device's topic
        ("edgeward/v1/lock-1/report", b"x"),                 # a device-to-backend topic
        ("something/else", b"x"),
        ("edgeward/v1/lock-1/cmd", b"\xa0" * 5000),          # oversized
        ("edgeward/v1/lock-1/attest/challenge", b"\xff"),    # malformed CBOR
        ("edgeward/v1/lock-1/attest/challenge", cbor2.dumps({"nonce": b"short"})),
        ("edgeward/v1/lock-1/attest/result", b"\x00"),
        ("edgeward/v1/lock-1/cmd", cbor2.dumps({"op": "attest"})),  # unsigned
    ]:
        agent.handle(Incoming(t, p, False))
    c = agent.counters
    assert c["wrong_topic"] == 3 and c["oversized"] == 1 and c["malformed"] == 3
    assert c["command_unsigned"] == 1
    agent.commit()
    types = [decode(m.payload).type for m in agent.outbox.pending(100)]
    assert types == ["command.refused"]
    agent.outbox.close()


def test_agent_answers_a_challenge_with_evidence_through_the_outbox(tmp_path: Path) -> None:
    from edgeward.agent.events import Incoming

    agent = _offline_agent(tmp_path)

    class Echo:
        def __call__(self, nonce: bytes) -> bytes:
            return b"EAT:" + nonce

        def close(self) -> None: ...

    agent.inputs.attester = Echo()
    nonce = b"n" * 32
    agent.handle(Incoming("edgeward/v1/lock-1/attest/challenge", cbor2.dumps({"nonce": nonce}),
                          False))
    # a flood of challenges is rate-limited (each one costs a TPM quote)
    for _ in range(10):
        agent.handle(Incoming("edgeward/v1/lock-1/attest/challenge",
                              cbor2.dumps({"nonce": nonce}), False))
    agent.commit()
    msgs = agent.outbox.pending(100)
    ev = [decode(m.payload) for m in msgs if m.kind == "attest/evidence"]
    assert len(ev) == 2 and ev[0].body == {"nonce": nonce, "eat": b"EAT:" + nonce}
    assert agent.counters["challenge_rate_limited"] == 9
    agent.outbox.close()
