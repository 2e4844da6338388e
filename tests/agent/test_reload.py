"""SIGHUP: the whole AGENT.toml again, or none of it. Offline: the agent's parts come from the
composition root, the transport is a fake, so no broker is needed."""

from __future__ import annotations

import time
from pathlib import Path

from edgeward.agent.compose import Root
from edgeward.agent.config import load_agent_config
from edgeward.agent.envelope import decode
from edgeward.agent.loop import Agent
from edgeward.core.keys import generate, write_keypair


class NoLink:
    started = stopped = 0

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped += 1

    def publish(self, *a: object, **kw: object) -> int | None:
        return None

    def take_acks(self) -> list[object]:
        return []


def _config(tmp: Path, *, board: bool, window: int = 1024, host: str = "127.0.0.1") -> str:
    dev = 'name = "lock-r"\n'
    if board:
        dev += 'board = "pi"\nkey_file = "dev/private.pem"\n'
    return (f"[device]\n{dev}[mqtt]\ntls = false\nhost = \"{host}\"\n"
            f'[commands]\ntrust = "backend/public.pem"\n[outbox]\nwindow = {window}\n'
            "[local]\nrate = 5.0\n")


def _agent(tmp: Path, text: str) -> tuple[Agent, Path, list[NoLink]]:
    write_keypair(tmp / "backend", generate("ed25519"))
    write_keypair(tmp / "dev", generate("ed25519"))
    path = tmp / "agent.toml"
    path.write_text(text)
    cfg = load_agent_config(path)
    links: list[NoLink] = []

    class TestRoot(Root):
        def transport(self, cfg, sink):
            links.append(NoLink())
            return links[-1]

    root = TestRoot(clock=time.time)
    agent = Agent(cfg, root.parts(cfg, lambda ev: None), transport=root.transport(cfg, None),
                  clock=time.time, rebuild=root)
    return agent, path, links


def _events(agent: Agent) -> list[str]:
    agent.commit(force=True)
    return [decode(m.payload).type for m in agent.outbox.pending(100)]


def test_sighup_reloads_every_part_from_the_one_file(tmp_path: Path) -> None:
    agent, path, links = _agent(tmp_path, _config(tmp_path, board=False))
    trust, metrics = agent.inputs.gate.trust, agent.metrics
    assert agent.attester is None and agent.delivery.window == 1024
    path.write_text(_config(tmp_path, board=True, window=64).replace(
        "[outbox]", "max_skew = 7.0\n[outbox]"))
    agent.reload()
    assert _events(agent) == ["agent.reloaded"]
    assert agent.attester is not None  # [device] board added: attestation is on
    assert agent.delivery.window == 64 and agent.inputs.gate.max_skew == 7.0
    assert agent.inputs.gate.trust is not trust and agent.metrics is not metrics
    assert len(links) == 1  # same broker settings: the same connection
    path.write_text(_config(tmp_path, board=True, window=64, host="10.0.0.9"))
    agent.reload()
    assert len(links) == 2 and links[0].stopped == 1 and links[1].started == 1
    assert agent.cfg.mqtt.host == "10.0.0.9" and agent.transport is links[1]
    agent.outbox.close()


def test_a_bad_file_on_sighup_keeps_the_running_configuration_and_says_why(
    tmp_path: Path,
) -> None:
    agent, path, links = _agent(tmp_path, _config(tmp_path, board=False))
    before = agent.cfg
    for bad, why in [
        (_config(tmp_path, board=False).replace("window =", "windw ="), "outbox.windw"),
        (_config(tmp_path, board=False) + "[outbox]\n", "not valid TOML"),
        (_config(tmp_path, board=False).replace("window = 1024", "window = 'big'"),
         "outbox.window"),
        (_config(tmp_path, board=False).replace('"lock-r"', '"lock-s"'), "device.name"),
        (_config(tmp_path, board=True).replace('key_file = "dev/private.pem"\n', ""),
         "device.key_file"),
    ]:
        path.write_text(bad)
        agent.reload()
        assert agent.cfg is before and agent.attester is None and len(links) == 1
        agent.commit(force=True)
        failed = [decode(m.payload) for m in agent.outbox.pending(100)]
        assert failed[-1].type == "agent.reload_failed" and why in failed[-1].body["reason"]
        assert str(path) in failed[-1].body["reason"]
    agent.outbox.close()


def test_sighup_applies_a_new_outbox_bound(tmp_path: Path) -> None:
    """[outbox] max_bytes was read again but never reached the open outbox."""
    agent, path, _ = _agent(tmp_path, _config(tmp_path, board=False))
    assert agent.outbox.max_bytes == agent.cfg.outbox.max_bytes
    path.write_text(_config(tmp_path, board=False).replace("window = 1024",
                                                           "window = 1024\nmax_bytes = 262144"))
    agent.reload()
    assert agent.outbox.max_bytes == 262144
    agent.outbox.close()
