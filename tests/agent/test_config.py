"""One config shape: AGENT.toml and VERIFIER.toml, each read once into nested frozen sections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeward.agent.config import (
    AgentConfig,
    CommandsSettings,
    LocalSettings,
    MetricsSettings,
    OutboxSettings,
    load_agent_config,
)
from edgeward.attestation.config import VERIFIER_LIMITS, load_attester_config
from edgeward.attestation.service.config import load_service_config
from edgeward.core.errors import ConfigError
from edgeward.core.limits import Limits

MIN = '[device]\nname = "lock-1"\n[mqtt]\ntls = false\n'


def _write(tmp: Path, text: str, name: str = "agent.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_defaults_are_the_sections_own(tmp_path: Path) -> None:
    cfg = load_agent_config(_write(tmp_path, MIN))
    assert cfg.outbox == OutboxSettings(path=tmp_path / "state" / "outbox.db")
    assert cfg.metrics == MetricsSettings() and cfg.local == LocalSettings()
    assert cfg.commands == CommandsSettings() and not cfg.e2e
    assert cfg.agent.state_dir == tmp_path / "state"
    assert cfg.mqtt.port == 1883 and cfg.mqtt.client_id == "lock-1"
    assert cfg.attester is None  # no [device] board: attestation off
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.outbox.window = 1  # type: ignore[misc]  # the assignment a frozen config refuses


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[local]\nmode = 'rw'\n", "key 'local.mode' must be an integer"),
        ("[outbox]\nwindow = 0\n", "key 'outbox.window' is 0"),
        ("[outbox]\nwindw = 10\n", "key 'outbox.windw' is not a known setting"),
        ("[metrics]\ndisk_paths = ['/', 3]\n", "key 'metrics.disk_paths' must be a list of str"),
        ("[models]\ntrust = 't'\n[[models.model]]\npath = 1\n", "key 'models.model[0].path'"),
        ("[models]\ntrust = 't'\n[[models.model]]\npath = 'm'\nsgi = 'x'\n",
         "key 'models.model[0].sgi' is not a known setting"),
        ("[home_assistant]\nenabled = 'yes'\n", "key 'home_assistant.enabled' must be true"),
        ("[attestation]\npcr = [1]\n", "key 'attestation.pcr' is not a known setting"),
        ("[limits]\nmax_cbor_bytes = 'big'\n", "key 'limits.max_cbor_bytes'"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_file_and_the_key_path(
    tmp_path: Path, extra: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as ei:
        load_agent_config(_write(tmp_path, MIN + extra))
    assert needle in str(ei.value) and str(tmp_path / "agent.toml") in str(ei.value)


def test_unknown_device_key_is_refused_even_without_attestation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'device\.nmae' is not a known setting"):
        load_agent_config(_write(tmp_path, MIN.replace('[mqtt]', 'nmae = "x"\n[mqtt]')))


def test_the_attester_is_built_from_the_same_parse_with_the_agent_defaults(tmp_path: Path) -> None:
    text = (MIN.replace('name = "lock-1"\n', 'name = "lock-1"\nboard = "b"\nkey = "tpm"\n')
            + '[agent]\nstate_dir = "st"\n[models]\ntrust = "t.pem"\n'
            '[[models.model]]\npath = "m/a.tflite"\nname = "a"\nsig = "m/a.sig"\n')
    cfg = load_agent_config(_write(tmp_path, text))
    att = cfg.attester
    assert att is not None and att.device == "lock-1" and att.board == "b"
    assert att.state_dir == cfg.agent.state_dir == tmp_path / "st"
    assert att.models == (tmp_path / "m/a.tflite",)
    assert att.model_sigs == ((tmp_path / "m/a.tflite", tmp_path / "m/a.sig"),)
    assert load_attester_config(tmp_path / "agent.toml") == att  # the attest tools: same answer


def test_attest_tools_read_a_file_without_mqtt_but_the_agent_does_not(tmp_path: Path) -> None:
    p = _write(tmp_path, '[device]\nname = "l"\nboard = "b"\nkey = "tpm"\n')
    assert load_attester_config(p).device == "l"
    with pytest.raises(ConfigError, match=r"table \[mqtt\] is missing"):
        load_agent_config(p)
    with pytest.raises(ConfigError, match=r"device\.board"):
        load_attester_config(_write(tmp_path, MIN))


def test_interval_command_changes_one_field_of_one_section(tmp_path: Path) -> None:
    cfg = load_agent_config(_write(tmp_path, MIN))
    new = cfg.with_interval(2.5)
    assert new.metrics.interval == 2.5 and new.metrics.expiry == cfg.metrics.expiry
    assert dataclasses.replace(new, metrics=cfg.metrics) == cfg
    assert isinstance(new, AgentConfig)


VERIFIER = """
[service]
worker = "w1"
[mqtt]
tls = false
[commands]
ttl = 30
[verifier]
key_file = "k.pem"
[enrollment]
tofu = true
[refvalues]
vendor_keys = "v.pem"
dir = "r"
"""


def test_verifier_toml_is_read_once_and_limits_reach_the_worker(tmp_path: Path) -> None:
    cfg = load_service_config(_write(tmp_path, VERIFIER, "v.toml"))
    assert cfg.limits == VERIFIER_LIMITS  # the one place the verifier's bound is set
    assert cfg.verifier is not None and cfg.verifier.limits == cfg.limits
    assert cfg.mqtt.manual_ack and not cfg.mqtt.clean_start and cfg.mqtt.session_expiry == 3600
    assert cfg.command_ttl == 30 and cfg.store == tmp_path / "fleet.sqlite"
    cfg = load_service_config(_write(tmp_path, VERIFIER + "[limits]\nmax_cbor_bytes = 4096\n",
                                     "v.toml"))
    assert cfg.limits.max_cbor_bytes == 4096 and cfg.verifier is not None
    assert cfg.verifier.limits == cfg.limits
    no_verifier = VERIFIER.split("[verifier]")[0] + "[limits]\nmax_cbor_depth = 8\n"
    cfg = load_service_config(_write(tmp_path, no_verifier, "v.toml"))
    assert cfg.verifier is None and cfg.limits.max_cbor_depth == 8
    assert cfg.limits.max_cbor_bytes == VERIFIER_LIMITS.max_cbor_bytes < Limits().max_cbor_bytes


def test_worker_decodes_envelopes_within_the_configured_limit(tmp_path: Path) -> None:
    """Attack: a device floods the backend with envelopes just under the core's 1 MiB bound."""
    from edgeward.agent.envelope import Envelope, encode
    from edgeward.agent.events import Incoming
    from edgeward.attestation.service.service import VerifierService

    cfg = load_service_config(_write(tmp_path, VERIFIER.split("[verifier]")[0]
                                     + "[limits]\nmax_cbor_bytes = 4096\n", "v.toml"))
    svc = VerifierService(cfg)
    try:
        t = "edgeward/v1/lock-1/report"
        small = encode(Envelope(seq=1, ts=1.0, device="lock-1", type="metrics", body={"a": 1}))
        big = encode(Envelope(seq=2, ts=1.0, device="lock-1", type="metrics",
                              body={"pad": "x" * 5000}))
        svc.on_message(Incoming(t, small, False))
        svc.on_message(Incoming(t, big, False))
        assert svc.counters == {"oversized": 1}
        assert svc.store.highest("lock-1") == 1
    finally:
        svc.store.close()
