"""The layers, checked from the imports (issue 8 item 5; DESIGN.md "Layout"; STYLE.md).

Every module of every part is parsed with :mod:`ast` (never imported), and each import is
resolved to an absolute name (``from .manifest import x`` in ``models/integrity.py`` is
``edgeward.models.manifest``). Imports inside functions and under ``TYPE_CHECKING`` count too,
and so does ``importlib.import_module("literal")``. The rules:

* ``core`` imports no other part of edgeward;
* only ``agent/transport.py`` imports paho, only ``agent/metrics.py`` psutil, only
  ``models/runtime.py`` a TFLite runtime, only ``firmware_shim/linux/`` tpm2-pytss;
* the modules whose docstrings say they are pure import no ``sqlite3``, ``socket`` or
  ``subprocess``;
* the device code (``DEVICE_CODE`` in ``attestation/measure.py``, what a device's
  ``agent_code`` measurement covers) imports neither the verifier service nor the simulator.

Each rule also checks that it sees the real thing (the transport does import paho), so a
scanner that found nothing could not pass.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("core", "models", "attestation", "agent", "firmware_shim", "boards", "simulator")
SKIP = ("firmware_shim/mcu/",)  # MicroPython, measured and checked on the microcontroller

# Known exceptions, each with the reason it stands. Keep this short; fix rather than add.
KNOWN_DEVICE_IMPORTS_OF_SERVER_CODE = {
    # The one `edgeward` entry point lists every command; it imports a server or simulator
    # command module by name only when that command runs, and only if it is installed.
    "agent/cli/__init__.py": {"edgeward.attestation.service.cli",
                              "edgeward.attestation.service.fleet_cli",
                              "edgeward.simulator.demo", "edgeward.simulator.cli"},
    # `edgeward attest` names its verifier-side commands (challenge, verify, enroll), which
    # live in attestation/service/attest_cli.py, the same way.
    "agent/cli/attest.py": {"edgeward.attestation.service.attest_cli"},
}


KNOWN_THIRD_PARTY = {
    # The development broker's admin client sends dynamic-security commands over $CONTROL.
    # Simulator code, never on a device; the agent's own MQTT goes through agent/transport.py.
    "simulator/devbroker.py": ("paho", "the dev broker's $CONTROL admin client"),
}


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["edgeward", *parts])


@cache
def modules() -> dict[str, frozenset[str]]:
    """Relative path -> every module name it imports (absolute, with parents: a.b.c gives a,
    a.b and a.b.c)."""
    out: dict[str, frozenset[str]] = {}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(SKIP) or "__pycache__" in rel:
                continue
            out[rel] = frozenset(_with_parents(_imports(rel, path.read_text(encoding="utf-8"))))
    return out


def _imports(rel: str, source: str) -> set[str]:
    tree = ast.parse(source, filename=rel)
    here = _module_name(rel).split(".")
    package = here if rel.endswith("__init__.py") else here[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # `from edgeward.core import cbor` imports the module edgeward.core.cbor
            names.update(f"{mod}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
    return names


def _is_dynamic_import(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def _with_parents(names: set[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        bits = n.split(".")
        out.update(".".join(bits[:i]) for i in range(1, len(bits) + 1))
    return out


def _string_constants(rel: str) -> set[str]:
    """Module names written as strings (a runtime picked by name), docstrings left out."""
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }
    return {
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }


def importers(prefix: str) -> set[str]:
    return {rel for rel, names in modules().items() if prefix in names}


def test_the_scanner_reads_every_part_and_resolves_relative_imports() -> None:
    mods = modules()
    assert {rel.split("/")[0] for rel in mods} == set(PARTS)
    assert len(mods) > 100
    assert "edgeward.models.manifest" in mods["models/integrity.py"]  # from .manifest import
    assert "edgeward.core.cbor" in mods["core/cose.py"]  # from edgeward.core import cbor


def test_core_imports_no_other_part_of_edgeward() -> None:
    bad = {
        rel: sorted(n for n in names if n.startswith("edgeward.") and n != "edgeward.core"
                    and not n.startswith("edgeward.core."))
        for rel, names in modules().items()
        if rel.startswith("core/")
    }
    assert {rel: n for rel, n in bad.items() if n} == {}
    assert importers("edgeward.core.errors") > {"core/cose.py", "models/integrity.py"}


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("paho", ("agent/transport.py",)),
        ("psutil", ("agent/metrics.py",)),
        ("tpm2_pytss", ("firmware_shim/linux/",)),
    ],
)
def test_only_one_edge_imports_each_third_party_runtime(library: str,
                                                        allowed: tuple[str, ...]) -> None:
    found = importers(library)
    assert found, f"the scanner sees no import of {library} at all"
    excused = {rel for rel, (lib, _why) in KNOWN_THIRD_PARTY.items() if lib == library}
    assert {rel for rel in found if not rel.startswith(allowed)} - excused == set()


def test_only_the_runtime_adapter_names_a_tflite_runtime() -> None:
    """The adapter imports the runtime by name (``importlib.import_module``), so module names
    written as strings count here as well as import statements."""
    runtimes = ("ai_edge_litert", "tflite_runtime")

    def uses(rel: str) -> bool:
        if modules()[rel] & set(runtimes):
            return True
        return any(s.split(".")[0] in runtimes and "." in s for s in _string_constants(rel))

    assert {rel for rel in modules() if uses(rel)} == {"models/runtime.py"}


# The modules whose docstrings say they are pure (or do no I/O).
PURE = (
    "core/cbor.py", "core/cose.py", "core/digest.py", "core/errors.py", "core/frames.py",
    "core/limits.py",
    "attestation/appraisal.py", "attestation/claims.py", "attestation/ear.py",
    "attestation/enroll.py", "attestation/evidence.py", "attestation/nonces.py",
    "attestation/refvalues.py", "attestation/tpm_quote.py", "attestation/service/gaps.py",
    "models/manifest.py", "models/ossf.py", "models/tflite/",
    "models/guard/calibrate.py", "models/guard/detectors.py", "models/guard/policy.py",
    "models/guard/profile.py", "models/guard/stats.py", "models/refmodels/train.py",
    "agent/outbox_rules.py", "agent/envelope.py", "agent/backoff.py", "agent/ratelimit.py",
    "agent/e2eack.py", "agent/events.py",
    "firmware_shim/linux/eventlog.py", "firmware_shim/platform.py", "firmware_shim/signer.py",
)
IO_MODULES = {"sqlite3", "socket", "subprocess"}


def test_pure_modules_import_no_database_socket_or_process() -> None:
    pure = [rel for rel in modules() if rel.startswith(PURE)]
    assert len(pure) >= len(PURE)  # every listed file exists (a folder counts its modules)
    for entry in PURE:
        assert any(rel.startswith(entry) for rel in pure), f"{entry} is not a module any more"
    assert {rel: sorted(modules()[rel] & IO_MODULES) for rel in pure
            if modules()[rel] & IO_MODULES} == {}
    assert importers("sqlite3") >= {"agent/outbox.py", "attestation/service/verifier_store.py"}


def _device_code() -> list[str]:
    tree = ast.parse((ROOT / "attestation/measure.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.AnnAssign | ast.Assign)
                and "DEVICE_CODE" in ast.unparse(node.target if isinstance(node, ast.AnnAssign)
                                                 else node.targets[0])):
            assert node.value is not None
            spec = ast.literal_eval(node.value)
            return [rel for rel in modules()
                    for part, skip in spec
                    if rel.startswith(part + "/")
                    and not any(rel.startswith(f"{part}/{s}/") for s in skip)]
    raise AssertionError("DEVICE_CODE is not in attestation/measure.py")


def _named(rel: str) -> set[str]:
    """Imports, and edgeward modules named in strings (a command table imported lazily)."""
    strings = {s for s in _string_constants(rel) if re.fullmatch(r"edgeward(\.\w+)+", s)}
    return set(modules()[rel]) | strings


def _excused(name: str, known: set[str]) -> bool:
    return any(name == k or name.startswith(k + ".") or k.startswith(name + ".") for k in known)


def test_device_code_imports_no_server_or_simulator_code() -> None:
    device = _device_code()
    assert "agent/transport.py" in device and "attestation/service/verifier.py" not in device
    server = ("edgeward.attestation.service", "edgeward.simulator")
    bad = {}
    for rel in device:
        known = KNOWN_DEVICE_IMPORTS_OF_SERVER_CODE.get(rel, set())
        names = sorted(n for n in _named(rel) if n.startswith(server) and not _excused(n, known))
        if names:
            bad[rel] = names
    assert bad == {}


def test_known_exceptions_are_still_needed() -> None:
    """An exception that the code no longer needs is removed from the list, not kept."""
    for rel, allowed in KNOWN_DEVICE_IMPORTS_OF_SERVER_CODE.items():
        assert allowed <= _named(rel), f"{rel} no longer imports {allowed - _named(rel)}"
    for rel, (library, _why) in KNOWN_THIRD_PARTY.items():
        assert library in modules()[rel], f"{rel} no longer imports {library}"
