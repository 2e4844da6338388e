"""Fuzz the TOML configuration loaders (core/tomlconf.py and every loader built on it).

Input: the bytes of a configuration file. It is written to a private temporary folder and read by
each loader in turn: ``load_agent_config`` (agent/config.py), ``load_attester_config`` and
``load_verifier_config`` (attestation/config.py), ``load_service_config``
(attestation/service/config.py), the vendor's reference values ``refvalues.from_toml`` and
a board definition ``boards.loader.parse_board`` (vendor board folders).

Oracle (see _common.py): a loader returns a config or raises an EdgewardError (ConfigError: it
names the file, the key and the fix); anything else (TypeError, KeyError, OverflowError,
RecursionError from tomllib, ...) is a bug.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def setup() -> OneInput:
    from edgeward.agent.config import load_agent_config
    from edgeward.attestation import refvalues
    from edgeward.attestation.config import load_attester_config, load_verifier_config
    from edgeward.attestation.service.config import load_service_config
    from edgeward.boards.loader import parse_board
    from edgeward.core.errors import EdgewardError
    from edgeward.core.tomlconf import load_toml

    shm = Path("/dev/shm")
    top = shm if shm.is_dir() else Path(tempfile.gettempdir())
    for stale in top.glob("edgeward-fuzz-toml-*"):  # left by runs that ended (libFuzzer exits)
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    folder = top / f"edgeward-fuzz-toml-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    path = folder / "config.toml"
    loaders = (load_agent_config, load_attester_config, load_verifier_config, load_service_config,
               lambda p: refvalues.from_toml(load_toml(p), issued=1),
               lambda p: parse_board(p.read_bytes().decode("utf-8", "replace"), source=str(p)))

    def one(data: bytes) -> None:
        path.write_bytes(data)
        for load in loaders:
            try:
                load(path)
            except EdgewardError:
                continue

    return one


if __name__ == "__main__":
    main("toml", setup)
