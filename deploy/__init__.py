"""The deployment files, shipped as package data so an installed edgeward finds them too.

``mosquitto.conf``, ``dynamic-security.json``, ``acl`` and ``broker-register`` (the broker),
``edgeward-agent.service`` (systemd), ``agent.toml.example`` and ``verifier.toml.example``.
:func:`deploy_file` gives the path of one, wherever edgeward is installed (a source checkout,
a wheel, an editable install).
"""

from __future__ import annotations

from pathlib import Path

FILES = ("mosquitto.conf", "acl", "dynamic-security.json", "broker-register",
         "edgeward-agent.service", "agent.toml.example", "verifier.toml.example")


def deploy_file(name: str) -> Path:
    """The path of a shipped deployment file; ``KeyError`` for a name not shipped."""
    if name not in FILES:
        raise KeyError(f"{name} is not a shipped deployment file (one of {', '.join(FILES)})")
    return Path(__file__).resolve().parent / name
