"""The agent's configuration names each model's expected name; anti-rollback is on by default.

On 979eb13 ``[[models.model]]`` had only a path (a vendor's other model under the same file
name passed the re-verification watch) and no ``state_dir`` meant no anti-rollback, which is
what ``deploy/agent.toml.example`` shipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeward.agent import seams
from edgeward.agent.config import load_agent_config
from edgeward.core.errors import ConfigError
from edgeward.core.keys import generate, write_keypair
from edgeward.core.persist import write_atomic
from edgeward.deploy import deploy_file
from edgeward.models.integrity import default_sig_path, sign_model


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeward.models.refmodels import write_examples

    out = tmp_path_factory.mktemp("examples")
    write_examples(out)
    return out


BASE = '[device]\nname = "lock-1"\n[mqtt]\ntls = false\n[agent]\nstate_dir = "st"\n'


def _cfg(tmp: Path, models: str):
    p = tmp / "agent.toml"
    p.write_text(BASE + '[models]\ntrust = "keys/public.pem"\n' + models)
    return load_agent_config(p)


def test_agent_config_requires_each_models_expected_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.model\[0\]\.name"):
        _cfg(tmp_path, '[[models.model]]\npath = "m/lockface.tflite"\n')
    cfg = _cfg(tmp_path, '[[models.model]]\npath = "m/lockface.tflite"\nname = "lockface"\n')
    assert cfg.models.model[0].name == "lockface"


def test_anti_rollback_is_on_by_default_under_the_agent_state(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[[models.model]]\npath = "m/a.tflite"\nname = "a"\n')
    assert cfg.models.state_dir == tmp_path / "st" / "models"


def test_shipped_agent_example_names_its_model_and_keeps_rollback_state(tmp_path: Path) -> None:
    text = deploy_file("agent.toml.example").read_text()
    p = tmp_path / "agent.toml"
    p.write_text(text)
    cfg = load_agent_config(p)
    assert [m.name for m in cfg.models.model] == ["lockface"]
    assert cfg.models.state_dir == Path("/var/lib/edgeward/models")


def test_attack_other_model_under_the_configured_path_refused_by_the_agent_watch(
    tmp_path: Path, examples_dir: Path
) -> None:
    key = generate("ed25519")
    write_keypair(tmp_path / "keys", key)
    model = tmp_path / "m" / "lockface.tflite"
    model.parent.mkdir()
    shutil.copy(examples_dir / "digits_mlp.tflite", model)
    write_atomic(default_sig_path(model), sign_model(model, key, name="lockface", version=4)[0])
    cfg = _cfg(tmp_path, '[[models.model]]\npath = "m/lockface.tflite"\nname = "lockface"\n')
    watch = seams.model_watch(cfg.models, cfg.limits)
    assert [e.ok for e in watch.poll(0.0)] == [True]
    assert (tmp_path / "st" / "models").is_dir()  # the accepted version is kept
    # the vendor's other model, genuinely signed under its own name, installed at this path
    shutil.copy(examples_dir / "digits_cnn.tflite", model)
    write_atomic(default_sig_path(model),
                 sign_model(model, key, name="doorbell-person", version=1)[0])
    (ev,) = watch.poll(1.0)
    assert not ev.ok and "not the expected 'lockface'" in ev.reason
