"""Assemble and cache a simulator image: a kernel and an initramfs for ``qemu-system-aarch64``.

Steps (each prints progress): resolve the Debian versions apt would fetch and compute the cache
key (:func:`recipe.image_key`); if ``<cache>/images/<key>/`` holds a finished image, that is the
answer. Otherwise download the packages and wheels (:mod:`.fetch`), extract them into a staging
folder, keep only the kernel modules the guest loads, drop documentation and tests, add
edgeward's device code, byte-compile the Python files (when this host runs CPython 3.11, the
guest's version, so the guest does not compile at every boot), check that every ELF file finds
its shared libraries, and write the initramfs (cpio newc, uncompressed: under TCG the kernel
took 12.5 s to gunzip it and 2 s to unpack it uncompressed, so the cache spends disk instead).
A lock file keeps two builds of the same cache from racing; the image folder appears only when
it is complete.

I/O: the cache folder, the registries (through :mod:`.fetch`) and the staging folder.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import json
import logging
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeward.core.errors import DeviceError

from . import cpio, fetch, recipe

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
KEEP_IMAGES = 3  # older images in the cache are removed after a build (each is ~200 MB)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/edgeward`` or ``~/.cache/edgeward``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeward"


@dataclass(frozen=True)
class Image:
    """A built image: what ``qemu-system-aarch64 -kernel ... -initrd ...`` boots."""

    key: str
    folder: Path
    kernel: Path
    initrd: Path
    manifest: dict[str, object]

    def __str__(self) -> str:
        return str(self.folder)


def _device_code() -> list[tuple[str, Path]]:
    """edgeward's device code as (path under ``edgeward/``, file), every file of each part,
    and the simulator's on-device tools (:data:`recipe.GUEST_TOOLS`, not part of the agent's
    code measurement, which covers only the device code), and :data:`recipe.GUEST_ALSO`."""
    from edgeward.attestation.measure import DEVICE_CODE, installed_parts

    files: list[tuple[str, Path]] = []
    for part, folders in installed_parts().items():
        skip = dict(DEVICE_CODE)[part]
        for folder in folders:
            for p in sorted(folder.rglob("*")):
                rel = p.relative_to(folder)
                if "__pycache__" in rel.parts or not p.is_file() or p.suffix == ".pyc":
                    continue
                if (skip and rel.parts[0] in skip
                        and (part, rel.parts[0]) not in recipe.GUEST_ALSO):
                    continue
                files.append((f"{part}/{rel.as_posix()}", p))
    sim = Path(__file__).resolve().parents[1]  # the simulator's on-device tools, if any
    for tool in recipe.GUEST_TOOLS:
        if (sim / tool).is_file():
            files.append((f"simulator/{tool}", sim / tool))
    return files


def _digest_files(files: list[tuple[str, Path]]) -> bytes:
    h = hashlib.sha256()
    for rel, p in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.digest()


def _builder_digest() -> bytes:
    here = Path(__file__).parent
    return _digest_files([(p.name, p) for p in sorted(here.glob("*.py"))])


def _load(folder: Path) -> Image | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = folder / "vmlinuz", folder / "initrd.img"
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return Image(str(manifest.get("key")), folder, kernel, initrd, manifest)


def _stderr(msg: str) -> None:
    print(f"sim image: {msg}", file=sys.stderr, flush=True)


def _key(images: Path) -> tuple[str, dict[str, str], list[tuple[str, Path]]]:
    versions = fetch.candidate_versions([*recipe.DEBS, recipe.KERNEL_META],
                                        memo=images / "apt-versions.json")
    code = _device_code()
    key = recipe.image_key(debs=versions, code_digest=_digest_files(code),
                           builder_digest=_builder_digest())
    return key, versions, code


def cached_image(board: str | None = None, *, cache: Path | None = None) -> Image | None:
    """The image for the current recipe and code if it is already built, else None.

    One image serves every Pi-class ARM64 board (the board picks QEMU's CPU, cores and memory,
    not the image), so ``board`` is accepted for the command line's sake and not used.
    """
    images = (cache or cache_root()) / "images"
    images.mkdir(parents=True, exist_ok=True)
    return _load(images / _key(images)[0])


def build_image(board: str | None = None, *, cache: Path | None = None,
                progress: Progress = _stderr, force: bool = False) -> Image:
    """The image for the current recipe and code: from the cache, or built now (see
    :func:`cached_image` for ``board``)."""
    t0 = time.monotonic()
    root = cache or cache_root()
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    key, versions, code = _key(images)
    folder = images / key
    if not force and (img := _load(folder)) is not None:
        progress(f"image {key} from the cache ({folder})")
        return img
    with open(images / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another build of the image to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (img := _load(folder)) is not None:
            return img
        img = _build(root, folder, key, versions, code, progress)
        _drop_old(images, keep=KEEP_IMAGES)
    progress(f"image {key} built in {time.monotonic() - t0:.0f} s ({folder})")
    return img


def _drop_old(images: Path, keep: int) -> None:
    built = sorted((p for p in images.iterdir() if (p / "manifest.json").is_file()),
                   key=lambda p: (p / "manifest.json").stat().st_mtime, reverse=True)
    for old in built[keep:]:
        logger.info("removing old simulator image %s", old.name)
        shutil.rmtree(old, ignore_errors=True)


def _build(root: Path, folder: Path, key: str, versions: dict[str, str],
           code: list[tuple[str, Path]], progress: Progress) -> Image:
    downloads = root / "downloads"
    kernel_pkg = fetch.kernel_package()
    versions = {k: v for k, v in versions.items() if k != recipe.KERNEL_META}
    versions.update(fetch.candidate_versions([kernel_pkg]))
    progress(f"downloading {len(versions)} Debian arm64 packages (apt-get download)")
    debs = fetch.download_debs(versions, downloads / "debs")
    progress(f"downloading {len(recipe.WHEELS)} aarch64 wheels for CPython "
             f"{recipe.PYTHON_VERSION} (pip download)")
    wheels = fetch.download_wheels(downloads / "wheels")
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder.parent) as tmp:
        stage = Path(tmp) / "root"
        progress(f"extracting {len(debs)} packages (dpkg-deb -x)")
        for name, deb in debs.items():
            fetch.extract_deb(deb, Path(tmp) / "kernel" if name == kernel_pkg else stage)
        kernel = _take_kernel(Path(tmp) / "kernel", stage)
        _prune(stage)
        progress(f"adding {len(wheels)} wheels and {len(code)} files of edgeward's device code")
        site = stage / recipe.GUEST_SITE.lstrip("/")
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        for rel, p in code:
            dest = site / "edgeward" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        _prune(site)
        _finish_tree(stage)
        _byte_compile(stage, progress)
        _check_libraries(stage)
        out = Path(tmp) / "out"
        out.mkdir()
        shutil.copy2(kernel, out / "vmlinuz")
        size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()
                   and not p.is_symlink())
        progress(f"writing the initramfs: {size / 2**20:.0f} MiB in cpio newc")
        with open(out / "initrd.img", "wb") as f:
            entries = cpio.write_newc(stage, f)
        manifest = {
            "key": key, "kernel": kernel_pkg, "debs": versions, "wheels": list(recipe.WHEELS),
            "entries": entries, "unpacked_bytes": size,
            "initrd_bytes": (out / "initrd.img").stat().st_size,
            "python_precompiled": sys.version_info[:2] == (3, 11),
            "built": int(time.time()),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        out.rename(folder)
    img = _load(folder)
    assert img is not None
    return img


def _take_kernel(kroot: Path, stage: Path) -> Path:
    """The kernel image, and only the modules the guest loads, into the stage (with their order)."""
    vmlinuz = sorted((kroot / "boot").glob("vmlinuz-*"))
    mods = sorted((kroot / "lib" / "modules").glob("*"))
    if not vmlinuz or not mods:
        raise DeviceError(f"the kernel package in {kroot} has no vmlinuz or modules")

    def norm(name: str) -> str:
        return name.removesuffix(".ko").replace("-", "_")

    builtin = {norm(Path(b).name) for b in (mods[0] / "modules.builtin").read_text().split()}
    available = {norm(p.name): p for p in (mods[0] / "kernel").rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in builtin or any(norm(p.name) == name for p in order):
            return
        src = available.get(name)
        if src is None or name in chain:
            raise DeviceError(f"kernel module {name} (for {' <- '.join(chain) or 'the guest'}) "
                              f"is not in {vmlinuz[0].name}")
        for dep in _module_depends(src.read_bytes()):
            visit(norm(dep), (*chain, name))
        order.append(src)

    for want in recipe.MODULES:
        visit(norm(want), ())
    names = []
    for src in order:
        rel = src.relative_to(mods[0] / "kernel").as_posix()
        dest = stage / "lib" / "modules" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        names.append(rel)
    (stage / recipe.MODULE_ORDER_FILE).write_text("\n".join(names) + "\n")
    return vmlinuz[0]


def _module_depends(ko: bytes) -> list[str]:
    start = ko.find(b"\0depends=")
    if start < 0:
        return []
    value = ko[start + 9: ko.index(b"\0", start + 9)].decode()
    return [d for d in value.split(",") if d]


def _prune(tree: Path) -> None:
    for rel in recipe.PRUNE:
        p = tree / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    for pattern in recipe.PRUNE_GLOBS:
        for p in sorted(tree.glob(pattern), reverse=True):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def _finish_tree(stage: Path) -> None:
    """/init, the busybox shell, python3, the ``edgeward`` command and the tpm2-pytss compat."""
    (stage / "bin").mkdir(exist_ok=True)
    (stage / "bin" / "sh").symlink_to("busybox")
    (stage / "usr" / "bin" / "python3").symlink_to("python3.11")
    (stage / "usr" / "bin" / "python").symlink_to("python3.11")
    init = stage / "init"
    init.write_text(recipe.init_script())
    init.chmod(0o755)
    cmd = stage / "usr" / "bin" / "edgeward"
    cmd.write_text(recipe.EDGEWARD_WRAPPER)
    cmd.chmod(0o755)
    etc = stage / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    dist = stage / "usr/lib/python3/dist-packages"
    for rel, old, new in recipe.TPM2_PATCHES:
        text = (dist / rel).read_text()
        if text.count(old) != 1:
            raise DeviceError(f"cannot patch {rel} of python3-tpm2-pytss: its text changed",
                              hint="update TPM2_PATCHES in simulator/image/recipe.py")
        (dist / rel).write_text(text.replace(old, new))
    tctildr = dist / "tpm2_pytss/TCTILdr.py"
    if not tctildr.is_file():
        raise DeviceError("python3-tpm2-pytss has no tpm2_pytss/TCTILdr.py")
    with open(tctildr, "a") as f:
        f.write("\n\n" + recipe.TPM2_COMPAT)


def _byte_compile(stage: Path, progress: Progress) -> None:
    if sys.version_info[:2] != (3, 11):
        progress("not byte-compiling: this host's Python is not 3.11 (the guest compiles)")
        return
    progress("byte-compiling the Python files for the guest's CPython 3.11")
    for d in ("usr/lib/python3.11", "usr/lib/python3/dist-packages",
              recipe.GUEST_SITE.lstrip("/")):
        compileall.compile_dir(stage / d, ddir="/" + d, quiet=2, workers=0,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def _check_libraries(stage: Path) -> None:
    """Every shared library an ELF file of the image needs is in the image (readelf -d)."""
    if shutil.which("readelf") is None:
        logger.warning("readelf not found: shared libraries of the image not checked")
        return
    sonames = {p.name for p in stage.rglob("*.so*")}
    missing: dict[str, set[str]] = {}
    for p in stage.rglob("*"):
        if p.is_symlink() or not p.is_file() or "/lib/modules/" in str(p):
            continue
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        out = subprocess.run(["readelf", "-d", str(p)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "(NEEDED)" in line:
                lib = line.rsplit("[", 1)[1].rstrip("]")
                if lib not in sonames:
                    missing.setdefault(lib, set()).add(p.relative_to(stage).as_posix())
    if missing:
        what = "; ".join(f"{lib} (for {', '.join(sorted(u)[:2])})" for lib, u in missing.items())
        raise DeviceError(f"the image lacks shared libraries: {what}",
                          hint="add their Debian packages to simulator/image/recipe.py DEBS")
