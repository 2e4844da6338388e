"""Getting the image's parts from the package registries: Debian (apt) and PyPI (pip). An edge.

``apt-get download`` fetches ``.deb`` files of the arm64 architecture (``dpkg --add-architecture
arm64 && apt-get update`` once, which ``make system`` does); ``pip download`` fetches aarch64
wheels for CPython 3.11. Both go to a download cache next to the images, so a new image after a
change to edgeward's code downloads nothing. Files and subprocesses are the only I/O.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from edgeward.core.errors import ConfigError, DeviceError

from . import recipe

logger = logging.getLogger(__name__)

APT_HINT = ("run `make system` (or: dpkg --add-architecture arm64 && apt-get update) so apt "
            "knows Debian's arm64 packages")


def _run(cmd: list[str], *, cwd: Path | None = None, what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise DeviceError(f"{what}: {cmd[0]} is not installed",
                          hint="the simulator needs a Debian or Ubuntu machine (apt, dpkg)") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DeviceError(f"{what} failed: {' / '.join(tail)}")
    return proc.stdout


def apt_name(package: str) -> str:
    """``pkg:arm64`` for apt, or plain ``pkg`` for one marked ``:all`` in the recipe."""
    return package.removesuffix(":all") if package.endswith(":all") else f"{package}:{recipe.ARCH}"


def _lists_fingerprint() -> str:
    """Changes whenever ``apt-get update`` or ``dpkg --add-architecture`` changed apt's view."""
    parts = []
    for d in (Path("/var/lib/apt/lists"), Path("/var/lib/dpkg/arch")):
        try:
            entries = [d] if d.is_file() else sorted(d.iterdir())
            parts += [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in entries]
        except OSError:
            parts.append(f"{d}:missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def candidate_versions(packages: Iterable[str], *, memo: Path | None = None) -> dict[str, str]:
    """The version apt would download for each package (one ``apt-cache policy`` call).

    With ``memo``, the answer is kept in that file for as long as apt's package lists are
    unchanged, so asking again (a cached image build) runs no apt command at all.
    """
    packages = list(packages)
    fp = _lists_fingerprint()
    if memo is not None:
        try:
            kept = json.loads(memo.read_text())
            if kept.get("lists") == fp and set(kept["versions"]) == set(packages):
                return dict(kept["versions"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    out = _run(["apt-cache", "policy", *(apt_name(p) for p in packages)],
               what="apt-cache policy")
    by_name: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif current and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                by_name[current] = version
    found = {p: by_name[apt_name(p)] for p in packages if apt_name(p) in by_name}
    missing = [p for p in packages if p not in found]
    if missing:
        raise ConfigError(f"apt knows no arm64 package {', '.join(missing)}", hint=APT_HINT)
    if memo is not None:
        memo.write_text(json.dumps({"lists": fp, "versions": found}, sort_keys=True))
    return found


def kernel_package() -> str:
    """The versioned kernel package behind the ``linux-image-cloud-arm64`` meta package."""
    out = _run(["apt-cache", "depends", apt_name(recipe.KERNEL_META)], what="apt-cache depends")
    for m in re.finditer(r"Depends: (linux-image-[0-9][^:\s]*)", out):
        return m.group(1)
    raise ConfigError(f"apt does not know {recipe.KERNEL_META} for arm64", hint=APT_HINT)


def download_debs(versions: dict[str, str], dest: Path) -> dict[str, Path]:
    """``apt-get download`` every ``package=version`` not already in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)

    def local(pkg: str, ver: str) -> Path | None:
        quoted = ver.replace(":", "%3a")
        hits = sorted(dest.glob(f"{pkg.removesuffix(':all')}_{quoted}_*.deb"))
        return hits[0] if hits else None

    want = [f"{apt_name(p)}={v}" for p, v in versions.items() if local(p, v) is None]
    if want:
        logger.info("downloading %d Debian packages", len(want))
        _run(["apt-get", "download", "-q", *want], cwd=dest, what="apt-get download")
    out: dict[str, Path] = {}
    for p, v in versions.items():
        path = local(p, v)
        if path is None:
            raise DeviceError(f"apt-get download did not leave {p} {v} in {dest}")
        out[p] = path
    return out


def download_wheels(dest: Path) -> list[Path]:
    """``pip download`` the pinned aarch64 / CPython 3.11 wheels (and nothing built locally)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "--no-deps", "--only-binary=:all:", "--python-version", recipe.PYTHON_VERSION,
           "--implementation", "cp", "-d", str(dest)]
    for plat in recipe.WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    _run(cmd + list(recipe.WHEELS), what="pip download (aarch64 wheels)")
    wheels = []
    for pin in recipe.WHEELS:
        name, _, version = pin.partition("==")
        stem = re.sub(r"[-_.]+", "_", name).lower()
        hits = [w for w in dest.glob("*.whl")
                if w.name.lower().startswith(f"{stem}-{version}-")]
        if not hits:
            raise DeviceError(f"pip download left no wheel for {pin} in {dest}")
        wheels.append(sorted(hits)[-1])
    return wheels


def extract_deb(deb: Path, into: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(into)], what=f"dpkg-deb -x {deb.name}")
