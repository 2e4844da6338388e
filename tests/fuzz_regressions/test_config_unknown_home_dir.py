"""A configuration path ``~someone/...`` naming a user that does not exist.

Found by fuzz/fuzz_toml.py: ``Path.expanduser`` raises ``RuntimeError`` ("Could not determine
home directory"), which escaped every loader as an internal error instead of a configuration
error naming the file and key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _common import run_one
from fuzz_targets import load_target

from edgeward.core.errors import ConfigError
from edgeward.core.tomlconf import parse_toml

DATA = Path(__file__).resolve().parent / "data" / "config_unknown_home_dir.toml"


def test_unknown_home_directory_is_a_config_error_naming_the_key():
    sec = parse_toml('cert_file = "~no-such-user-edgeward/cert.pem"\n', source="agent.toml")
    with pytest.raises(ConfigError, match=r"agent\.toml.*cert_file.*unknown home directory"):
        sec.path("cert_file")


def test_fuzz_finding_replays_clean():
    run_one(load_target("toml").setup(), DATA.read_bytes())
