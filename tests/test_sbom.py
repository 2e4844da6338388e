"""The device's SBOM (docs/sbom/edgeward-device.cdx.json) matches the pinned dependencies, and the
pins are what this environment runs: `make sbom` output cannot drift from what is tested."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "requirements" / "device.txt"
SBOM = REPO / "docs" / "sbom" / "edgeward-device.cdx.json"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} in {PINS.name} is not pinned with =="
            out[_norm(name)] = version
    return out


def components(path: Path) -> dict[str, str]:
    doc = json.loads(path.read_text())
    assert doc["bomFormat"] == "CycloneDX"
    return {_norm(c["name"]): c["version"] for c in doc["components"]}


def test_sbom_lists_exactly_the_pinned_components() -> None:
    assert components(SBOM) == pins()
    for c in json.loads(SBOM.read_text())["components"]:
        # package URL: the PyPI name lower-cased, '_' as '-' (the purl spec for pypi)
        name = c["name"].lower().replace("_", "-")
        assert c["purl"] == f"pkg:pypi/{name}@{c['version']}", c["purl"]


def test_pins_are_what_this_environment_runs() -> None:
    """The .venv is installed with the pins as constraints (Makefile), so tests test them."""
    wrong = {}
    for name, version in pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"pinned vs installed: {wrong}"


def test_device_dependencies_are_all_pinned() -> None:
    """Every run-time requirement of edgeward and of its device extras is pinned."""
    needed = set()
    for req in metadata.requires("edgeward") or []:
        spec, _, marker = req.partition(";")
        extra = re.search(r'extra == "(\w+)"', marker)
        if extra and extra.group(1) not in ("litert", "tpm", "agent"):
            continue
        needed.add(_norm(re.split(r"[<>=!~\[ (]", spec.strip(), maxsplit=1)[0]))
    assert "cryptography" in needed and "paho-mqtt" in needed
    assert needed <= set(pins()), f"not pinned: {sorted(needed - set(pins()))}"


def test_make_sbom_reproduces_the_checked_in_file(tmp_path: Path) -> None:
    tool = shutil.which("cyclonedx-py", path=str(Path(sys.executable).parent))
    assert tool, "cyclonedx-py (dev extra) is missing"
    out = tmp_path / "sbom.json"
    subprocess.run([tool, "requirements", str(PINS), "--output-reproducible", "--of", "JSON",
                    "-o", str(out)], check=True, capture_output=True, timeout=300)
    assert components(out) == components(SBOM)
