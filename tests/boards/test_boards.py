"""Board definitions: every shipped board loads; hostile or careless board files are refused
with a message naming the file and the key; the command line prints them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeward.agent.cli import cli
from edgeward.boards import list_boards, load_board
from edgeward.boards.loader import MAX_BOARD_BYTES, MAX_BOARD_FILES, parse_board
from edgeward.core.errors import ConfigError

SHIPPED = {"rpi4b", "rpi5", "rpi-zero2w", "cm4-vehicle-gateway", "esp32-lock", "rp2040-lock"}

GOOD = """
schema = 1
name = "vendor-gw"
description = "A vendor's gateway"
backend = "linux"
[cpu]
model = "Cortex-A72"
arch = "aarch64"
cores = 4
mhz = 1500
[memory]
mib = 2048
[root_of_trust]
kind = "tpm"
[qemu]
machine = "virt"
cpu = "cortex-a72"
memory_mib = 1024
smp = 4
[budget]
memory_mib = 100
cpu_share = 0.1
[boot]
pcrs = [0, 7]
components = ["firmware", "kernel"]
"""


def vendor_dir(tmp_path: Path, text: str = GOOD, name: str = "vendor.toml") -> Path:
    d = tmp_path / "boards"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


def test_every_shipped_board_loads_with_its_facts() -> None:
    boards = {b.name: b for b in list_boards()}
    assert set(boards) == SHIPPED
    for b in boards.values():
        assert b.cpu.cores >= 1 and b.memory_kib > 0 and b.description
        if b.backend == "linux":
            assert b.qemu is not None and b.budget is not None and b.mcu is None
            assert b.qemu.smp <= b.cpu.cores
            assert b.budget.memory_mib * 1024 < b.memory_kib
        else:
            assert b.backend == "mcu" and b.mcu is not None and b.qemu is None
        assert bool(b.boot.pcrs) == (b.root_of_trust.kind == "tpm")
    assert boards["rpi5"].qemu is not None and boards["rpi5"].qemu.cpu == "cortex-a76"
    assert boards["rp2040-lock"].mcu is not None and boards["rp2040-lock"].mcu.port == "rp2"


def test_existing_board_names_keep_working_as_aliases() -> None:
    # simulator/demo_fleet.py and signed reference values name boards this way.
    assert load_board("smartlock-pi4").name == "rpi4b"
    assert load_board("gateway-pi5").name == "rpi5"
    assert load_board("gateway-pi5").has_tpm


def test_vendor_folder_adds_a_board(tmp_path: Path) -> None:
    d = vendor_dir(tmp_path)
    b = load_board("vendor-gw", [d])
    assert b.source == str(d / "vendor.toml") and b.boot.pcrs == (0, 7)
    assert "vendor-gw" in {x.name for x in list_boards([d])}
    with pytest.raises(ConfigError, match="unknown board 'vendor-gw'"):
        load_board("vendor-gw")


def test_vendor_file_cannot_hijack_a_shipped_board_name(tmp_path: Path) -> None:
    d = vendor_dir(tmp_path, GOOD.replace('"vendor-gw"', '"rpi4b"'))
    with pytest.raises(ConfigError, match="'rpi4b' is already used"):
        load_board("rpi4b", [d])
    d2 = vendor_dir(tmp_path, GOOD.replace('name = "vendor-gw"',
                                           'name = "x"\naliases = ["smartlock-pi4"]'))
    with pytest.raises(ConfigError, match="'smartlock-pi4' is already used"):
        list_boards([d2])


@pytest.mark.parametrize(("edit", "message"), [
    (('cores = 4', 'cores = "four"'), r"'cpu\.cores' must be an integer"),
    (('cores = 4', 'cores = 0'), r"'cpu\.cores' is 0; it must be at least 1"),
    (('mhz = 1500', 'mhz = 1500\nturbo = true'), r"'cpu\.turbo' is not a known setting"),
    (('backend = "linux"', 'backend = "linux"\nextra = 1'), r"key 'extra' is not a known"),
    (('kind = "tpm"', 'kind = "hsm"'), r"'root_of_trust\.kind' is 'hsm'; use one of"),
    (('kind = "tpm"', 'kind = "none"'), r"'boot\.pcrs' lists PCRs but root_of_trust"),
    (('pcrs = [0, 7]', 'pcrs = [0, 24]'), r"'boot\.pcrs' must be a list of integers 0\.\.23"),
    (('pcrs = [0, 7]', 'pcrs = [7, 7]'), r"'boot\.pcrs' lists an entry twice"),
    (('pcrs = [0, 7]', 'pcrs = "0,7"'), r"'boot\.pcrs' must be a list"),
    (('smp = 4', 'smp = 8'), r"'qemu\.smp' is 8, more than the board's 4 cores"),
    (('cpu_share = 0.1', 'cpu_share = 2'), r"'budget\.cpu_share' is 2\.0; it must be at most"),
    (('memory_mib = 100', 'memory_mib = 4096'), r"'budget\.memory_mib' is 4096"),
    (('schema = 1', 'schema = 2'), r"'schema' is 2; this edgeward reads schema 1"),
    (('name = "vendor-gw"', 'name = "../../etc/passwd"'), r"key 'name' is '\.\./\.\./etc/passwd'"),
    (('mib = 2048', 'mib = 2048\nkib = 5'), r"exactly one of 'mib' or 'kib'"),
    (('[budget]\nmemory_mib = 100\ncpu_share = 0.1\n', ''), r"table \[budget\] is missing"),
    (('components = ["firmware", "kernel"]', 'components = [1]'), r"list of short strings"),
])
def test_careless_or_hostile_board_file_is_refused_naming_file_and_key(
        tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in GOOD
    d = vendor_dir(tmp_path, GOOD.replace(edit[0], edit[1]))
    with pytest.raises(ConfigError, match=message) as e:
        list_boards([d])
    assert str(d / "vendor.toml") in str(e.value)


def test_microcontroller_board_rules() -> None:
    mcu = GOOD.replace('backend = "linux"', 'backend = "mcu"')
    with pytest.raises(ConfigError, match=r"backend 'mcu' needs a table \[mcu\]"):
        parse_board(mcu, source="x.toml")
    text = (mcu.replace('kind = "tpm"', 'kind = "none"').replace("pcrs = [0, 7]", "pcrs = []")
            + '[mcu]\nport = "rp2"\nflash_kib = 2048\nfirmware_offset = 0\n'
            'firmware_size = 4000000\nuart_baud = 115200\n')
    with pytest.raises(ConfigError, match=r"'mcu\.firmware_size' is 4000000"):
        parse_board(text, source="x.toml")
    ok = text.replace("firmware_size = 4000000", "firmware_size = 65536")
    with pytest.raises(ConfigError, match="runs no agent and no QEMU"):
        parse_board(ok, source="x.toml")


def test_oversized_board_file_is_refused_before_parsing(tmp_path: Path) -> None:
    d = vendor_dir(tmp_path, GOOD + "#" * MAX_BOARD_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        list_boards([d])


def test_deeply_nested_board_file_is_a_config_error(tmp_path: Path) -> None:
    d = vendor_dir(tmp_path, "x = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError):
        list_boards([d])


def test_binary_garbage_and_missing_folder_are_config_errors(tmp_path: Path) -> None:
    d = tmp_path / "boards"
    d.mkdir()
    (d / "bad.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        list_boards([d])
    with pytest.raises(ConfigError, match="does not exist"):
        list_boards([tmp_path / "nope"])


def test_folder_flooded_with_board_files_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "boards"
    d.mkdir()
    for i in range(MAX_BOARD_FILES + 1):
        (d / f"b{i}.toml").write_text("")
    with pytest.raises(ConfigError, match="more than"):
        list_boards([d])


def test_cli_list_and_show(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["boards", "list"])
    assert r.exit_code == 0, r.output
    for name in SHIPPED:
        assert name in r.output
    r = CliRunner().invoke(cli, ["boards", "show", "smartlock-pi4"])
    assert r.exit_code == 0 and "-M virt -cpu cortex-a72 -m 1024 -smp 4" in r.output
    assert "Cortex-A72 (aarch64), 4 cores" in r.output
    r = CliRunner().invoke(cli, ["boards", "show", "vendor-gw", "--dir",
                                 str(vendor_dir(tmp_path)), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["qemu"]["machine"] == "virt"


def test_cli_unknown_board_exits_1_with_one_line() -> None:
    from edgeward.agent.cli import main

    with pytest.raises(SystemExit) as e:
        main(["boards", "show", "no-such-board"])
    assert e.value.code == 1
