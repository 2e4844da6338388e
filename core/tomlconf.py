"""Typed, validated access to TOML configuration files.

Configuration is loaded once at start into frozen dataclasses (STYLE.md, "Config"). This module
gives the loaders one way to read a file and to read typed keys from it, so that every message
names the file, the key and the fix::

    conf = load_toml(path)
    sec = conf.section("mqtt")
    host = sec.str("host", default="127.0.0.1")
    port = sec.int("port", default=8883, min=1, max=65535)

Reading the file is the only I/O here; the rest is pure.
"""

from __future__ import annotations

import builtins
import dataclasses
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from edgeward.core.errors import ConfigError
from edgeward.core.fileio import OPERATOR, read_bounded

MAX_CONFIG_BYTES = 1024 * 1024
_MISSING: Any = object()
_T = TypeVar("_T")


class Section:
    """A table of a TOML file, with typed getters whose errors name the file and key."""

    def __init__(
        self, data: dict[builtins.str, Any], *, source: builtins.str, prefix: builtins.str = ""
    ) -> None:
        self.data = data
        self.source = source
        self.prefix = prefix

    def _where(self, key: builtins.str) -> str:
        return f"{self.source}: key '{self.prefix}{key}'"

    def _get(self, key: builtins.str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(f"{self._where(key)} is missing", hint="add it to the file")
        return default

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def str(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        choices: Sequence[builtins.str] | None = None,
    ) -> Any:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{self._where(key)} must be a string, not {type(value).__name__}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self._where(key)} is '{value}'; use one of: {', '.join(choices)}")
        return value

    def int(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> Any:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self._where(key)} must be an integer, not {value!r}")
        if min is not None and value < min:
            raise ConfigError(f"{self._where(key)} is {value}; it must be at least {min}")
        if max is not None and value > max:
            raise ConfigError(f"{self._where(key)} is {value}; it must be at most {max}")
        return value

    def float(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        min: builtins.float | None = None,
        max: builtins.float | None = None,
    ) -> Any:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._where(key)} must be a number, not {value!r}")
        value = float(value)
        if min is not None and value < min:
            raise ConfigError(f"{self._where(key)} is {value}; it must be at least {min}")
        if max is not None and value > max:
            raise ConfigError(f"{self._where(key)} is {value}; it must be at most {max}")
        return value

    def bool(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._where(key)} must be true or false, not {value!r}")
        return value

    def path(self, key: builtins.str, default: Any = _MISSING, *, base: Path | None = None) -> Any:
        """A path; relative paths are taken relative to the configuration file's folder."""
        value = self.str(key, default)
        if value is None:
            return None
        try:
            p = Path(value).expanduser()
        except RuntimeError as e:  # "~name" of a user that does not exist (found by fuzzing)
            raise ConfigError(f"{self._where(key)} {value!r} names an unknown home directory",
                              hint="give an absolute path or one relative to this file") from e
        if not p.is_absolute() and base is not None:
            p = base / p
        return p

    def list(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise ConfigError(f"{self._where(key)} must be a list, not {type(value).__name__}")
        return value

    def section(self, key: builtins.str, *, required: builtins.bool = False) -> Section:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise ConfigError(f"{self.source}: table [{self.prefix}{key}] is missing")
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self._where(key)} must be a table [{self.prefix}{key}]")
        return Section(value, source=self.source, prefix=f"{self.prefix}{key}.")

    def sections(self, key: builtins.str) -> builtins.list[Section]:
        """An array of tables ``[[key]]``."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self._where(key)} must be an array of tables [[{key}]]")
        return [
            Section(v, source=self.source, prefix=f"{self.prefix}{key}[{i}].")
            for i, v in enumerate(value)
        ]

    def reject_unknown(self, known: Sequence[builtins.str]) -> None:
        """Refuse keys the loader does not know: a typo must not silently do nothing."""
        for key in self.data:
            if key not in known:
                raise ConfigError(
                    f"{self._where(key)} is not a known setting",
                    hint=f"known here: {', '.join(sorted(known))}",
                )


def parse_toml(text: str, *, source: str = "<config>") -> Section:
    try:
        return Section(tomllib.loads(text), source=source)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e})") from e
    except RecursionError as e:  # tomllib recurses on nested arrays and inline tables
        raise ConfigError(f"{source}: nested too deeply to be a configuration file") from e


def load_toml(path: Path) -> Section:
    """Read and parse one TOML file, bounded in size."""
    raw = read_bounded(path, MAX_CONFIG_BYTES, what="configuration file", faults=OPERATOR)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"configuration file {path} is not UTF-8") from e
    return parse_toml(text, source=str(path))


# --- frozen dataclass sections ---------------------------------------------------------------
# One table of a file is one frozen dataclass; each key is a field of the same name, and the
# field's default is the key's default, stated once (in the dataclass). Bounds and choices sit
# in the field's metadata, written with :func:`setting`.


def setting(
    default: Any = _MISSING,
    *,
    min: builtins.float | None = None,
    max: builtins.float | None = None,
    choices: Sequence[builtins.str] | None = None,
) -> Any:
    """A dataclass field read from the file: its default, and the bounds the loader checks."""
    meta = {"min": min, "max": max, "choices": choices}
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple default (sections are frozen)")
    return dataclasses.field(default=default, metadata=meta)


def read_section(
    cls: type[_T],
    sec: Section,
    *,
    base: Path | None = None,
    defaults: dict[builtins.str, Any] | None = None,
    given: dict[builtins.str, Any] | None = None,
    extra_keys: Sequence[builtins.str] = (),
) -> _T:
    """Build the frozen dataclass ``cls`` from the table ``sec``.

    Unknown keys are refused (``extra_keys`` are keys of the table that another reader owns).
    ``defaults`` replaces a field's default where it depends on another setting (the broker
    port on ``tls``); ``given`` sets fields that are not keys of the table (computed by the
    caller). Types come from the annotations: ``int``, ``float``, ``bool``, ``str``, ``Path``
    (relative to ``base``), ``tuple[str, ...]``, each optionally ``| None``.
    """
    given = given or {}
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in given]  # type: ignore[arg-type]
    sec.reject_unknown([f.name for f in fields] + list(extra_keys))
    out: dict[builtins.str, Any] = dict(given)
    for f in fields:
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = _MISSING
        if not sec.has(f.name) and default is not _MISSING:
            if isinstance(default, Path) and base is not None:
                default = base / default.expanduser()  # relative to the file, as if written
            out[f.name] = default
            continue
        out[f.name] = _read(sec, f.name, hints[f.name], default, f.metadata, base)
    return cls(**out)


def _read(sec: Section, key: builtins.str, hint: Any, default: Any,
          meta: Any, base: Path | None) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        (hint,) = [a for a in args if a is not type(None)]
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if hint is builtins.bool:
        return sec.bool(key, default)
    if hint is builtins.int:
        return sec.int(key, default, min=lo, max=hi)
    if hint is builtins.float:
        return sec.float(key, default, min=lo, max=hi)
    if hint is builtins.str:
        return sec.str(key, default, choices=choices)
    if hint is Path:
        return sec.path(key, default, base=base)
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is builtins.str:
        value = sec.list(key, default)
        if not all(isinstance(v, builtins.str) for v in value):
            raise ConfigError(f"{sec._where(key)} must be a list of strings")
        return tuple(value)
    raise TypeError(f"no TOML reader for {key}: {hint!r}")  # a programming error
