"""Board definitions: TOML files in, frozen :class:`Board` dataclasses out.

A board file says what the hardware is (CPU and cores, memory, root of trust), how the simulator
imitates it (QEMU machine, CPU model, memory, SMP), what the agent may use on it (memory, CPU
share), which firmware-shim backend drives it, and which PCRs and boot components its reference
values cover. The boards edgeward ships live in ``boards/data/`` (package data); a vendor adds a
board by dropping a file in a folder its configuration names (``extra_dirs``).

The API is two functions::

    board = load_board("rpi4b")              # or an alias such as "smartlock-pi4"
    boards = list_boards(extra_dirs=[Path("/etc/edgeward/boards")])

Every error is a :class:`~edgeward.core.errors.ConfigError` naming the file, the key path and
what was expected. Unknown keys and wrong types are refused; files are bounded in size
(:data:`MAX_BOARD_BYTES`) and a folder in count (:data:`MAX_BOARD_FILES`). The only I/O is
reading the files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from edgeward.core.errors import ConfigError
from edgeward.core.fileio import OPERATOR, read_bounded
from edgeward.core.tomlconf import Section, parse_toml

MAX_BOARD_BYTES = 16 * 1024
MAX_BOARD_FILES = 256
SCHEMA = 1
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,47}\Z")

RootOfTrust = Literal["tpm", "secure-element", "none"]
ROOTS_OF_TRUST: tuple[str, ...] = ("tpm", "secure-element", "none")
BACKENDS: tuple[str, ...] = ("linux", "sim", "mcu")
ARCHES: tuple[str, ...] = ("aarch64", "armv7", "xtensa", "armv6m", "x86_64")
MICROPYTHON_PORTS: tuple[str, ...] = ("esp32", "rp2")


@dataclass(frozen=True)
class Cpu:
    model: str
    arch: str
    cores: int
    mhz: int


@dataclass(frozen=True)
class RootOfTrustSpec:
    kind: str  # "tpm" | "secure-element" | "none"
    part: str
    interface: str


@dataclass(frozen=True)
class Qemu:
    """How the simulator imitates the board (``qemu-system-aarch64 -M machine -cpu cpu``)."""

    machine: str
    cpu: str
    memory_mib: int
    smp: int


@dataclass(frozen=True)
class Budget:
    """What the agent may use on the board: resident memory and a share of all CPUs."""

    memory_mib: int
    cpu_share: float


@dataclass(frozen=True)
class Boot:
    """The PCRs and boot components (in boot order) that the board's reference values cover."""

    pcrs: tuple[int, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class Mcu:
    """A microcontroller's MicroPython port, flash layout and link to its gateway."""

    port: str
    flash_kib: int
    firmware_offset: int
    firmware_size: int
    uart_baud: int


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    aliases: tuple[str, ...]
    backend: str
    cpu: Cpu
    memory_kib: int
    root_of_trust: RootOfTrustSpec
    boot: Boot
    qemu: Qemu | None
    budget: Budget | None
    mcu: Mcu | None
    source: str

    @property
    def has_tpm(self) -> bool:
        return self.root_of_trust.kind == "tpm"


def _name(sec: Section, key: str) -> str:
    value: str = sec.str(key)
    if not NAME_RE.match(value):
        raise ConfigError(f"{sec.source}: key '{sec.prefix}{key}' is '{value}'; use lowercase "
                          "letters, digits and '-' (at most 48)")
    return value


def _text(sec: Section, key: str, default: str | None = None, *, max_len: int = 200) -> str:
    value: str = sec.str(key) if default is None else sec.str(key, default)
    if len(value) > max_len:
        raise ConfigError(f"{sec.source}: key '{sec.prefix}{key}' is longer than {max_len} "
                          "characters")
    return value


def _int_list(sec: Section, key: str, *, lo: int, hi: int, max_items: int) -> tuple[int, ...]:
    values = sec.list(key)
    where = f"{sec.source}: key '{sec.prefix}{key}'"
    if len(values) > max_items:
        raise ConfigError(f"{where} has more than {max_items} entries")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{where} must be a list of integers {lo}..{hi}, not {v!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} lists an entry twice")
    return tuple(values)


def _str_list(sec: Section, key: str, *, max_items: int, pattern: re.Pattern[str] | None = None
              ) -> tuple[str, ...]:
    values = sec.list(key)
    where = f"{sec.source}: key '{sec.prefix}{key}'"
    if len(values) > max_items:
        raise ConfigError(f"{where} has more than {max_items} entries")
    for v in values:
        if not isinstance(v, str) or not 0 < len(v) <= 64:
            raise ConfigError(f"{where} must be a list of short strings, not {v!r}")
        if pattern is not None and not pattern.match(v):
            raise ConfigError(f"{where} entry '{v}' must be lowercase letters, digits and '-'")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} lists an entry twice")
    return tuple(values)


def parse_board(text: str, *, source: str) -> Board:
    """Validate one board file's text. Pure."""
    if len(text.encode("utf-8", "replace")) > MAX_BOARD_BYTES:
        raise ConfigError(f"{source}: board file is larger than {MAX_BOARD_BYTES} bytes")
    top = parse_toml(text, source=source)
    top.reject_unknown(["schema", "name", "description", "aliases", "backend", "cpu", "memory",
                        "root_of_trust", "boot", "qemu", "budget", "mcu"])
    schema = top.int("schema")
    if schema != SCHEMA:
        raise ConfigError(f"{source}: key 'schema' is {schema}; this edgeward reads schema "
                          f"{SCHEMA}", hint="upgrade edgeward or rewrite the board file")
    backend = top.str("backend", choices=BACKENDS)

    c = top.section("cpu", required=True)
    c.reject_unknown(["model", "arch", "cores", "mhz"])
    cpu = Cpu(_text(c, "model", max_len=64), c.str("arch", choices=ARCHES),
              c.int("cores", min=1, max=256), c.int("mhz", min=1, max=10_000))

    m = top.section("memory", required=True)
    m.reject_unknown(["mib", "kib"])
    if m.has("mib") == m.has("kib"):
        raise ConfigError(f"{source}: table [memory] must give exactly one of 'mib' or 'kib'")
    memory_kib = (m.int("mib", min=1, max=1 << 20) * 1024 if m.has("mib")
                  else m.int("kib", min=16, max=1 << 30))

    r = top.section("root_of_trust", required=True)
    r.reject_unknown(["kind", "part", "interface"])
    rot = RootOfTrustSpec(r.str("kind", choices=ROOTS_OF_TRUST), _text(r, "part", ""),
                          _text(r, "interface", "", max_len=32))

    b = top.section("boot", required=True)
    b.reject_unknown(["pcrs", "components"])
    boot = Boot(_int_list(b, "pcrs", lo=0, hi=23, max_items=24),
                _str_list(b, "components", max_items=32, pattern=NAME_RE))
    if rot.kind != "tpm" and boot.pcrs:
        raise ConfigError(f"{source}: key 'boot.pcrs' lists PCRs but root_of_trust.kind is "
                          f"'{rot.kind}'", hint="PCRs need a TPM; leave the list empty")

    qemu = None
    if top.has("qemu"):
        q = top.section("qemu")
        q.reject_unknown(["machine", "cpu", "memory_mib", "smp"])
        qemu = Qemu(_text(q, "machine", max_len=32), _text(q, "cpu", max_len=32),
                    q.int("memory_mib", min=64, max=65536), q.int("smp", min=1, max=64))
        if qemu.smp > cpu.cores:
            raise ConfigError(f"{source}: key 'qemu.smp' is {qemu.smp}, more than the board's "
                              f"{cpu.cores} cores")

    budget = None
    if top.has("budget"):
        g = top.section("budget")
        g.reject_unknown(["memory_mib", "cpu_share"])
        budget = Budget(g.int("memory_mib", min=8, max=max(8, memory_kib // 1024)),
                        g.float("cpu_share", min=0.01, max=1.0))

    mcu = None
    if top.has("mcu"):
        u = top.section("mcu")
        u.reject_unknown(["port", "flash_kib", "firmware_offset", "firmware_size", "uart_baud"])
        flash = u.int("flash_kib", min=64, max=65536)
        mcu = Mcu(u.str("port", choices=MICROPYTHON_PORTS), flash,
                  u.int("firmware_offset", min=0, max=flash * 1024 - 1),
                  u.int("firmware_size", min=1, max=flash * 1024),
                  u.int("uart_baud", min=1200, max=4_000_000))
        if mcu.firmware_offset + mcu.firmware_size > flash * 1024:
            raise ConfigError(f"{source}: table [mcu] puts the firmware partition past the end "
                              f"of {flash} KiB of flash")

    if backend == "mcu":
        if mcu is None:
            raise ConfigError(f"{source}: backend 'mcu' needs a table [mcu]")
        if budget is not None or qemu is not None:
            raise ConfigError(f"{source}: a microcontroller board runs no agent and no QEMU "
                              "image", hint="remove [budget] and [qemu]")
    else:
        if budget is None:
            raise ConfigError(f"{source}: table [budget] is missing",
                              hint="say how much memory and CPU the agent may use")
        if mcu is not None:
            raise ConfigError(f"{source}: table [mcu] is only for backend 'mcu'")

    return Board(
        name=_name(top, "name"),
        description=_text(top, "description"),
        aliases=_str_list(top, "aliases", max_items=8, pattern=NAME_RE)
        if top.has("aliases") else (),
        backend=backend,
        cpu=cpu,
        memory_kib=memory_kib,
        root_of_trust=rot,
        boot=boot,
        qemu=qemu,
        budget=budget,
        mcu=mcu,
        source=source,
    )


def _read(path: Path) -> str:
    raw = read_bounded(path, MAX_BOARD_BYTES, what="board file", faults=OPERATOR)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: board file is not UTF-8") from e


def _shipped() -> list[Board]:
    folder = resources.files("edgeward.boards") / "data"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            out.append(parse_board(entry.read_text(encoding="utf-8"),
                                   source=f"edgeward/boards/data/{entry.name}"))
    return out


def _vendor(folder: Path) -> list[Board]:
    if not folder.is_dir():
        raise ConfigError(f"board folder {folder} does not exist or is not a folder")
    files = sorted(folder.glob("*.toml"))
    if len(files) > MAX_BOARD_FILES:
        raise ConfigError(f"board folder {folder} holds more than {MAX_BOARD_FILES} board files")
    return [parse_board(_read(p), source=str(p)) for p in files]


def list_boards(extra_dirs: Iterable[Path] = ()) -> list[Board]:
    """Every board: the shipped ones, then each extra folder's, sorted by name.

    A name or alias used twice is refused, so a vendor file cannot silently replace a board.
    """
    boards = _shipped()
    for d in extra_dirs:
        boards.extend(_vendor(Path(d)))
    seen: dict[str, str] = {}
    for b in boards:
        for n in (b.name, *b.aliases):
            if n in seen:
                raise ConfigError(f"{b.source}: board name '{n}' is already used by {seen[n]}",
                                  hint="rename the board or remove the duplicate file")
            seen[n] = b.source
    return sorted(boards, key=lambda b: b.name)


def load_board(name: str, extra_dirs: Sequence[Path] = ()) -> Board:
    """The board called ``name`` (or with ``name`` among its aliases)."""
    boards = list_boards(extra_dirs)
    for b in boards:
        if name == b.name or name in b.aliases:
            return b
    raise ConfigError(f"unknown board '{name}'",
                      hint=f"known boards: {', '.join(b.name for b in boards)}; "
                      "`edgeward boards list` shows them")
