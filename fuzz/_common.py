"""What every fuzz target shares: the oracle and the atheris entry point.

A target module ``fuzz/fuzz_<name>.py`` defines ``setup() -> Callable[[bytes], None]``: it imports
the parser (so that atheris instruments it) and returns the function that feeds it one input.

The oracle, the same for every target unless its docstring says otherwise:

* clean: the input function returns, or raises an :class:`edgeward.core.errors.EdgewardError`
  (the product's one error tree: a verdict on hostile input, never a crash);
* bug: any other exception (``TypeError``, ``KeyError``, ``ValueError`` from a library,
  ``RecursionError``, ...), a hang (libFuzzer ``-timeout``), running out of memory
  (``-rss_limit_mb``), or the process dying on a signal.

With ``FUZZ_KEEP_GOING=1`` (the long campaign of ``make fuzz``) a bug does not stop the run: its
input is saved under ``fuzz/findings/<target>/`` named by the failure's signature (exception type
and innermost edgeward frame), one file per signature, and fuzzing goes on, so that one known
bug does not hide the others. Without it (``make fuzz-ci``, and by default) the first bug is a
crash: libFuzzer saves the input and the run fails.

Known findings: ``fuzz/known_findings.txt`` lists failure signatures that a campaign found in code
another engineer is fixing (each line: target, signature, who and what). They are reported as
``== KNOWN`` and do not fail ``make fuzz-ci``, so that CI stays usable until the fix lands; the
line is removed with the fix. A finding not on the list always fails.

Regression tests import the same ``setup()`` without atheris: ``run_one(target, data)``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
FINDINGS_DIR = FUZZ_DIR / "findings"

OneInput = Callable[[bytes], None]


def clean_errors() -> tuple[type[BaseException], ...]:
    from edgeward.core.errors import EdgewardError

    return (EdgewardError,)


def signature_of(exc: BaseException) -> str:
    """``ExcType@module:function`` of the innermost frame in edgeward code (or the last frame)."""
    where = "?"
    for fr in traceback.extract_tb(exc.__traceback__):
        if "/fuzz/" in fr.filename:
            if where == "?" and fr.name != "test_one_input":
                where = f"{Path(fr.filename).stem}:{fr.name}"  # an invariant of the target
            continue
        if where.startswith(("?", "fuzz_")) or "/site-packages/" not in fr.filename:
            where = f"{Path(fr.filename).stem}:{fr.name}"
    return f"{type(exc).__name__}@{where}"


def known_findings(target: str) -> set[str]:
    path = FUZZ_DIR / "known_findings.txt"
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else ():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == target:
            out.add(parts[1])
    return out


def guarded(name: str, one: OneInput, *, keep_going: bool) -> OneInput:
    clean = clean_errors()
    seen: set[str] = set()
    known = known_findings(name)

    def test_one_input(data: bytes) -> None:
        try:
            one(data)
        except clean:
            return
        except Exception as e:  # the oracle: anything else is a bug
            sig = signature_of(e)
            if sig in known:
                if sig not in seen:
                    seen.add(sig)
                    print(f"\n== KNOWN {name}: {sig} (fuzz/known_findings.txt)", file=sys.stderr,
                          flush=True)
                return
            if not keep_going:
                raise
            if sig in seen:
                return
            seen.add(sig)
            out = FINDINGS_DIR / name
            out.mkdir(parents=True, exist_ok=True)
            tag = hashlib.sha256(sig.encode()).hexdigest()[:12]
            (out / f"{tag}.bin").write_bytes(data)
            (out / f"{tag}.txt").write_text(
                f"{sig}\n\n" + "".join(traceback.format_exception(e)), encoding="utf-8"
            )
            print(f"\n== FINDING {name}: {sig} -> {out / tag}.bin", file=sys.stderr, flush=True)

    return test_one_input


def main(name: str, setup: Callable[[], OneInput]) -> None:
    """Run one target under atheris (libFuzzer flags come from the command line)."""
    import atheris

    with atheris.instrument_imports(include=["edgeward"]):
        # Parsers import some modules inside functions (core/frames.py imports cbor on first
        # use): import the shared core here so that it is instrumented too.
        import edgeward.core.cbor
        import edgeward.core.cose
        import edgeward.core.tomlconf  # noqa: F401

        one = setup()
    keep_going = os.environ.get("FUZZ_KEEP_GOING") == "1"
    atheris.Setup(sys.argv, guarded(name, one, keep_going=keep_going))
    atheris.Fuzz()


def run_one(one: OneInput, data: bytes) -> None:
    """Apply the oracle once, without atheris: returns, or re-raises a bug (for tests)."""
    try:
        one(data)
    except clean_errors():
        return
