"""The linux and sim backends over temp files laid out like /proc, /sys and /dev: identity,
temperature, watchdog with magic close, counters; clean errors for missing or garbled files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeward.core.errors import ConfigError, DeviceError, TpmError
from edgeward.firmware_shim.linux.system import LinuxPlatform
from edgeward.firmware_shim.platform import (
    backend_for_board,
    detect_backend,
    open_platform,
)
from edgeward.firmware_shim.sim.platform import SimPlatform


def put(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def plat(root: Path) -> LinuxPlatform:
    return LinuxPlatform(root=root, state_dir=root / "state")


def test_identity_prefers_device_tree_then_cpuinfo_then_machine_id(root: Path) -> None:
    put(root, "etc/machine-id", b"0123456789abcdef0123456789abcdef\n")
    assert plat(root).identity().source == "machine-id"
    put(root, "proc/cpuinfo", b"processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 10000000ABCDEF01\n")
    ident = plat(root).identity()
    assert (ident.serial, ident.source) == ("10000000abcdef01", "cpuinfo")
    put(root, "proc/device-tree/serial-number", b"10000000fedcba98\0")
    assert plat(root).identity().serial == "10000000fedcba98"


def test_spoofed_or_empty_serials_fall_through(root: Path) -> None:
    # A QEMU guest reports an all-zero serial; a garbled device tree is not an identity.
    put(root, "proc/device-tree/serial-number", b"../../x\0")
    put(root, "proc/cpuinfo", b"Serial\t\t: 0000000000000000\n")
    put(root, "etc/machine-id", b"not-a-machine-id\n")
    with pytest.raises(DeviceError, match="is not a machine id"):
        plat(root).identity()


def test_no_identity_at_all_is_a_device_error_with_a_fix(root: Path) -> None:
    with pytest.raises(DeviceError, match="systemd-machine-id-setup"):
        plat(root).identity()


def test_cpu_temperature(root: Path) -> None:
    assert plat(root).cpu_temperature() is None
    put(root, "sys/class/thermal/thermal_zone0/temp", b"48312\n")
    assert plat(root).cpu_temperature() == pytest.approx(48.312)
    put(root, "sys/class/thermal/thermal_zone0/temp", b"hot\n")
    with pytest.raises(DeviceError, match="does not hold a temperature"):
        plat(root).cpu_temperature()
    put(root, "sys/class/thermal/thermal_zone0/temp", b"999999999\n")
    with pytest.raises(DeviceError, match="impossible"):
        plat(root).cpu_temperature()


def test_watchdog_feeds_at_most_once_per_interval_and_closes_with_magic_v(root: Path) -> None:
    put(root, "dev/watchdog", b"")
    wd = plat(root).open_watchdog(15)
    assert wd.feed_interval == 5
    assert wd.feed(100.0) is True
    assert wd.feed(101.0) is False  # the agent calls it every turn; the device sees few writes
    assert wd.feed(105.5) is True
    wd.close()
    wd.close()  # idempotent
    assert (root / "dev/watchdog").read_bytes() == b"\0\0V"
    with pytest.raises(RuntimeError):
        wd.feed(200.0)


def test_missing_watchdog_is_a_clear_device_error(root: Path) -> None:
    with pytest.raises(DeviceError, match="dtparam=watchdog=on"):
        plat(root).open_watchdog(15)


def test_boot_event_log_is_read_bounded(root: Path) -> None:
    assert plat(root).boot_event_log() is None
    put(root, "sys/kernel/security/tpm0/binary_bios_measurements", b"log")
    assert plat(root).boot_event_log() == b"log"
    put(root, "sys/kernel/security/tpm0/binary_bios_measurements", bytes(2 * 1024 * 1024))
    with pytest.raises(DeviceError, match="larger than"):
        plat(root).boot_event_log()


def test_counters_are_monotonic_persistent_and_refuse_corruption(tmp_path: Path) -> None:
    p = SimPlatform(tmp_path)
    c = p.counter("boot")
    assert c.read() == 0 and c.increment() == 1 and c.increment() == 2
    assert SimPlatform(tmp_path).counter("boot").read() == 2  # survives a restart
    (tmp_path / "counter-boot.json").write_text('{"value": "lots"}')
    with pytest.raises(DeviceError, match="not a counter value"):
        c.increment()
    (tmp_path / "counter-boot.json").write_text("garbage")
    with pytest.raises(DeviceError, match="corrupt"):
        c.read()
    with pytest.raises(ConfigError):
        p.counter("../etc/passwd")


def test_a_counter_raised_once_per_tag_never_goes_down(tmp_path: Path) -> None:
    c = SimPlatform(tmp_path).counter("bootcount")
    assert c.once_per("boot-a") == 1 and c.once_per("boot-a") == 1
    assert c.increment() == 2 and c.once_per("boot-a") == 3  # a plain increment drops the tag
    assert c.once_per("boot-b") == 4 and c.once_per("boot-b") == 4
    (tmp_path / "counter-bootcount.json").write_text('{"value": 4, "tag": 7}')
    with pytest.raises(DeviceError, match="corrupt"):
        c.once_per("boot-b")
    with pytest.raises(ValueError):
        c.once_per("x" * 129)


def test_sim_platform_identity_is_stable_and_watchdog_detects_starvation(tmp_path: Path) -> None:
    p = SimPlatform(tmp_path)
    assert p.identity() == SimPlatform(tmp_path).identity()
    wd = p.open_watchdog(10)
    assert wd.feed(0.0) and not wd.starved(9.0) and wd.starved(11.0)
    wd.close()
    assert wd.closed_cleanly and not wd.starved(100.0)


def test_backend_choice_from_board_or_detection(tmp_path: Path) -> None:
    assert backend_for_board("smartlock-pi4") == "linux"
    assert detect_backend(exists=lambda p: p == "/dev/tpmrm0") == "linux"
    assert detect_backend(exists=lambda p: False) == "sim"
    with pytest.raises(ConfigError, match="microcontroller"):
        backend_for_board("esp32-lock")
    with pytest.raises(ConfigError, match="cannot run the agent"):
        open_platform("mcu", state_dir=tmp_path)
    assert open_platform("sim", state_dir=tmp_path).backend == "sim"
    assert open_platform("linux", state_dir=tmp_path, root=tmp_path).backend == "linux"


def test_missing_tpm_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeward.firmware_shim.linux import tpm

    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # import fails as if not installed
    with pytest.raises(TpmError, match=r"edgeward\[tpm\]") as e:
        tpm.TpmSigner("device:/dev/tpmrm0")
    assert "libtss2-dev" in str(e.value)
