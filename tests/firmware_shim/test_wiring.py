"""The hardware layer in the agent: the backend from the board, the watchdog fed by the loop and
closed cleanly, the lock's token added to the agent's evidence, [hardware] settings checked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mcu_helpers import LoopbackPort, cpython_lock

from edgeward.agent.config import load_agent_config
from edgeward.agent.events import Acked
from edgeward.attestation.submods import SUBMOD_ERROR
from edgeward.core.errors import ConfigError, DeviceError
from edgeward.firmware_shim.serial_link import McuLink
from edgeward.firmware_shim.sim.platform import SimWatchdog
from edgeward.firmware_shim.wiring import GatewayEvidence, HardwareParts, hardware_parts


class Hw:
    def __init__(self, **kw: Any) -> None:
        self.board_dirs: tuple[str, ...] = ()
        self.watchdog = 0
        self.lock_port: str | None = None
        self.lock_name = "lock-mcu"
        self.lock_baud = 115200
        self.lock_timeout = 0.2
        self.lock_retries = 1
        self.__dict__.update(kw)


def test_backend_comes_from_the_board_and_the_watchdog_closes_with_magic_v(tmp_path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "watchdog").write_bytes(b"")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    parts = hardware_parts(Hw(watchdog=6), board="rpi-zero2w", state_dir=tmp_path / "s",
                           root=tmp_path)
    assert parts.backend == "linux" and parts.watchdog is not None
    t = [100.0]
    parts.clock = lambda: t[0]
    parts.feed()
    parts.feed()  # same instant: not written again
    t[0] += 2.5
    parts.feed()
    parts.close()
    assert (tmp_path / "dev" / "watchdog").read_bytes() == b"\0\0V"


def test_missing_watchdog_or_serial_port_stops_the_agent_at_start(tmp_path) -> None:
    with pytest.raises(DeviceError, match="no hardware watchdog"):
        hardware_parts(Hw(watchdog=6), board="rpi-zero2w", state_dir=tmp_path, root=tmp_path)
    with pytest.raises(DeviceError, match="cannot open the lock's serial port"):
        hardware_parts(Hw(lock_port=str(tmp_path / "ttyNOPE")), board="rpi-zero2w",
                       state_dir=tmp_path, root=tmp_path)
    with pytest.raises(ConfigError, match="microcontroller"):
        hardware_parts(Hw(), board="esp32-lock", state_dir=tmp_path, root=tmp_path)


class RecordingAttester:
    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.closed = 0

    def evidence(self, nonce: bytes, *, submods: dict | None = None) -> bytes:
        self.seen.append(submods or {})
        return b"evidence"

    def close(self) -> None:
        self.closed += 1


def test_agent_evidence_carries_the_lock_token_or_says_it_is_unreachable() -> None:
    att = RecordingAttester()
    lock, uart = cpython_lock()
    ev = GatewayEvidence(att, {"lock-mcu": McuLink(LoopbackPort(lock, uart), timeout=0.5)})
    assert ev(b"n" * 32) == b"evidence"
    assert isinstance(att.seen[0]["lock-mcu"], bytes)

    class Dead:
        def write(self, data: bytes) -> int:
            return len(data)

        def read(self, size: int = 1) -> bytes:
            time.sleep(0.01)
            return b""

    ev = GatewayEvidence(att, {"lock-mcu": McuLink(Dead(), timeout=0.05, retries=1)})
    ev(b"n" * 32)
    assert "sub-attester unreachable" in att.seen[1]["lock-mcu"][SUBMOD_ERROR]
    ev.close()
    assert att.closed == 1  # the agent closes the attester (its TPM session) through it


class FakeTransport:
    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def take_acks(self) -> list[Acked]:
        return []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry: int | None = None) -> int | None:
        return 1

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: None


def test_agent_loop_feeds_the_watchdog_every_turn_and_closes_it_and_the_attester_on_stop(tmp_path) -> None:
    from edgeward.agent.compose import Root
    from edgeward.agent.loop import Agent
    from edgeward.firmware_shim.sim.platform import SimPlatform

    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text('[device]\nname = "gw-1"\n[mqtt]\ntls = false\n')
    cfg = load_agent_config(cfg_path)
    parts = Root().parts(cfg, lambda ev: None)
    t = [0.0]
    wd = SimWatchdog(timeout=3, feed_interval=1.0)
    parts.hardware = HardwareParts("sim", SimPlatform(tmp_path), wd, clock=lambda: t[0])
    att = RecordingAttester()
    parts.attester = GatewayEvidence(att, {})
    agent = Agent(cfg, parts, transport=FakeTransport(), clock=time.time)
    for _ in range(5):
        agent.turn(max_wait=0)
        t[0] += 0.6
    assert wd.feeds == [0.0, 1.2, 2.4]
    agent._stop.set()
    agent.run(install_signals=False)
    assert wd.closed_cleanly and not wd.starved(100.0)
    assert att.closed == 1  # the attester's close, through the agent's Attester interface
    from edgeward.agent.outbox import Outbox

    ob = Outbox(cfg.outbox.path, "gw-1")
    try:
        started = [m for m in ob.pending(100) if m.type == "agent.started"]
    finally:
        ob.close()
    assert started and b"hardware" in started[0].payload and b"sim" in started[0].payload


def test_hardware_settings_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('[device]\nname = "gw-1"\n[mqtt]\ntls = false\n[hardware]\nwatchdog = 15\n'
                 'lock_port = "/dev/ttyAMA0"\nboard_dirs = ["boards"]\n')
    hw = load_agent_config(p).hardware
    assert (hw.watchdog, hw.lock_port, hw.lock_name, hw.board_dirs) == (
        15, "/dev/ttyAMA0", "lock-mcu", ("boards",))
    p.write_text('[device]\nname = "gw-1"\n[mqtt]\ntls = false\n[hardware]\nwatchdog = -1\n')
    with pytest.raises(ConfigError, match=r"'hardware\.watchdog' is -1"):
        load_agent_config(p)
    p.write_text('[device]\nname = "gw-1"\n[mqtt]\ntls = false\n[hardware]\nwatchdgo = 5\n')
    with pytest.raises(ConfigError, match=r"'hardware\.watchdgo' is not a known setting"):
        load_agent_config(p)


def test_agent_metrics_report_the_cpu_temperature_of_the_boards_thermal_zone(tmp_path) -> None:
    from edgeward.agent import seams
    from edgeward.firmware_shim.linux.system import LinuxPlatform

    zone = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    zone.parent.mkdir(parents=True)
    zone.write_text("51234\n")
    settings = load_agent_config(write_cfg(tmp_path)).metrics
    hw = HardwareParts("linux", LinuxPlatform(root=tmp_path, state_dir=tmp_path / "s"))
    metrics = seams.metrics_collector(settings, hw)
    assert metrics.collect()["temperature_c"] == 51.2
    zone.write_text("73960\n")
    assert metrics.collect()["temperature_c"] == 74.0
    zone.write_text("hot\n")  # a garbled zone: psutil's reading (or none), never a crash
    assert metrics.collect()["temperature_c"] != 74.0


def test_the_agent_built_from_its_config_reports_its_platforms_temperature(tmp_path) -> None:
    from edgeward.agent.compose import Root

    parts = Root().parts(load_agent_config(write_cfg(tmp_path)), lambda ev: None)
    try:
        parts.hardware.platform.temperature = 61.5  # the sim backend's sensor
        assert parts.metrics.collect()["temperature_c"] == 61.5
        parts.hardware.platform.temperature = 38.25
        assert parts.metrics.collect()["temperature_c"] == 38.2
    finally:
        parts.outbox.close()
        parts.hardware.close()


def write_cfg(folder: Path) -> Path:
    p = folder / "agent.toml"
    p.write_text('[device]\nname = "gw-1"\n[mqtt]\ntls = false\n')
    return p
