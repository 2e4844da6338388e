"""The TOML edge: hostile configuration files get one-line ConfigErrors naming file and key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.core.errors import ConfigError
from edgeward.core.tomlconf import MAX_CONFIG_BYTES, load_toml, parse_toml

GOOD = 'name = "lock-0001"\nport = 8883\n[mqtt]\nhost = "127.0.0.1"\ntls = true\n'


def test_typed_getters_name_the_file_and_key(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text(GOOD)
    root = load_toml(p)
    assert root.int("port", min=1, max=65535) == 8883
    assert root.section("mqtt").bool("tls") is True
    with pytest.raises(ConfigError, match=r"agent.toml: key 'mqtt.host' must be an integer"):
        root.section("mqtt").int("host")
    with pytest.raises(ConfigError, match="at most 80"):
        root.int("port", max=80)
    with pytest.raises(ConfigError, match=r"'mqtt\.user' is missing"):
        root.section("mqtt").str("user")
    with pytest.raises(ConfigError, match="not a known setting"):
        root.section("mqtt").reject_unknown(["host"])


@pytest.mark.parametrize("cut", [1, 10, len(GOOD) // 2, len(GOOD) - 3])
def test_truncated_file(tmp_path, cut):
    p = tmp_path / "a.toml"
    p.write_text(GOOD[:cut])
    try:
        load_toml(p)
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("text", ["a = [", "[x\n", "a = 1\na = 2\n", "= 3", "a = \"\\q\""])
def test_malformed_toml(text):
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_toml(text, source="bad.toml")


@pytest.mark.parametrize("opener, closer", [("[", "]"), ("{a = ", "}")])
def test_attack_deeply_nested_toml_is_an_error_not_a_crash(opener, closer):
    text = "a = " + opener * 20000 + "1" + closer * 20000
    with pytest.raises(ConfigError, match=r"nested too deeply|not valid TOML"):
        parse_toml(text, source="deep.toml")


def test_attack_oversized_file(tmp_path):
    p = tmp_path / "big.toml"
    p.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_toml(p)


def test_not_utf8_missing_and_directory(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="directory"):
        load_toml(tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_any_text_gives_a_section_or_a_config_error(text):
    try:
        parse_toml(text, source="fuzz.toml")
    except ConfigError:
        pass
