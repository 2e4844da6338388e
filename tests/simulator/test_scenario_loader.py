"""Scenario files: the shipped ones load; hostile or mistaken ones are clean ConfigErrors that
name the file, the key path and what was expected (never a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeward.core.errors import ConfigError
from edgeward.simulator.scenario import (
    MAX_STEPS,
    available,
    find_scenario,
    load_scenario,
)

SHIPPED = ["01-healthy", "02-model-tamper", "03-broker-down", "04-network-cut", "05-replay",
           "06-guard-burst", "07-boot-state", "08-lock"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sc.toml"
    p.write_text(text)
    return p


HEAD = '[scenario]\nname = "t"\n'


def test_every_shipped_scenario_loads_in_order() -> None:
    assert available() == SHIPPED
    for name in SHIPPED:
        sc = find_scenario(name)
        assert sc.steps and all(s.deadline > 0 for s in sc.steps)
        assert all(s.expect for s in sc.steps), f"{name}: a step that checks nothing"
    assert find_scenario("healthy").name == "healthy"  # by name without the order prefix


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        find_scenario("no-such")
    assert "healthy" in (e.value.hint or "")


@pytest.mark.parametrize(("body", "where", "expected"), [
    ('[[step]]\nname = "s"\naction = "explode"\n', "step[0].action", "use one of"),
    ('[[step]]\nname = "s"\naction = "tamper_model"\n', "step[0].device", "missing"),
    ('[[step]]\nname = "s"\naction = "tamper_model"\ndevice = -1\n', "step[0].device",
     "device index"),
    ('[[step]]\nname = "s"\ndeadline = 1e9\n', "step[0].deadline", "from 0.5 to 900"),
    ('[[step]]\nname = "s"\ndeadline = "soon"\n', "step[0].deadline", "a number"),
    ('[[step]]\nname = "s"\ncolour = "red"\n', "step[0].colour", "not a known setting"),
    ('[[step]]\nname = "s"\naction = "broker_down"\nseconds = 3600\n', "step[0].seconds",
     "from 0 to 600"),
    ('[[step]]\nname = "s"\n[[step.expect]]\ncheck = "vibes"\n', "step[0].expect[0].check",
     "use one of"),
    ('[[step]]\nname = "s"\n[[step.expect]]\ncheck = "online"\ndevices = "target"\n',
     "step[0].expect", "need a step with a device"),
    ('[[step]]\nname = "s"\n[[step.expect]]\ncheck = "event"\ntype = "x"\n'
     'severities = ["apocalyptic"]\n', "step[0].expect[0].severities", "info, warning"),
    ('[[step]]\nname = "s"\n[[step.expect]]\ncheck = "attested"\nstatus = "fine"\n',
     "step[0].expect[0].status", "use one of"),
    ('[[step]]\nname = "s"\n[[step.expect]]\ncheck = "reports"\ncount = 0\n',
     "step[0].expect[0].count", "from 1"),
    ('[[step]]\nname = "s"\naction = "guard_burst"\ndevice = 0\nood = 100000\n',
     "step[0].ood", "from 0 to 500"),
    ('locks = "all"\n[[step]]\nname = "s"\n', "scenario.locks", "list of up to 16 device"),
    ('locks = [-1]\n[[step]]\nname = "s"\n', "scenario.locks", "device indexes"),
])
def test_a_mistake_names_file_key_and_expectation(tmp_path: Path, body: str, where: str,
                                                   expected: str) -> None:
    p = write(tmp_path, HEAD + body)
    with pytest.raises(ConfigError) as e:
        load_scenario(p)
    msg = str(e.value) + " " + (e.value.hint or "")
    assert str(p) in msg and where in msg and expected in msg, msg


def test_no_steps_and_too_many_steps_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected 1 to"):
        load_scenario(write(tmp_path, HEAD))
    many = "".join(f'[[step]]\nname = "s{i}"\n' for i in range(MAX_STEPS + 1))
    with pytest.raises(ConfigError, match=f"has {MAX_STEPS + 1} steps"):
        load_scenario(write(tmp_path, HEAD + many))


def test_hostile_files_are_clean_errors(tmp_path: Path) -> None:
    # deeply nested arrays (tomllib recurses), a huge file, a binary file, a missing header
    with pytest.raises(ConfigError):
        load_scenario(write(tmp_path, HEAD + "x = " + "[" * 100_000 + "]" * 100_000))
    with pytest.raises(ConfigError):
        load_scenario(write(tmp_path, HEAD + "# " + "a" * 2_000_000))
    (tmp_path / "bin.toml").write_bytes(b"\x00\xff" * 1000)
    with pytest.raises(ConfigError):
        load_scenario(tmp_path / "bin.toml")
    with pytest.raises(ConfigError, match=r"table \[scenario\] is missing"):
        load_scenario(write(tmp_path, '[[step]]\nname = "s"\n'))


def test_random_device_and_bounds_parse(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, HEAD + (
        '[[step]]\nname = "s"\naction = "extend_pcr"\ndevice = "random"\npcr = 7\n'
        'delay = 2\n[[step.expect]]\ncheck = "attested"\ndevices = "others"\n'
        'status = "warning"\n')))
    st = sc.steps[0]
    assert st.device == "random" and st.params == {"pcr": 7} and st.delay == 2.0
    assert st.expect[0].security and st.expect[0].status == "warning"
