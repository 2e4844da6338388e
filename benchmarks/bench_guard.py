"""Guarded invoke against raw invoke, side by side in one run, with a profile of the guard.

Run: ``.venv/bin/python benchmarks/bench_guard.py [--rounds 20] [--n 100] [--profile 6]``

Models: ``digits_cnn`` (the reference CNN, about two microseconds per invoke) and ``mlp_1ms``, a
64 -> 2560 -> 2560 -> 10 float32 MLP with random weights built with the refmodels helpers
(about a millisecond per invoke on a desktop core; its input and output match the digits
models, so the guard's own work is the same as for them, but its 26 MB of weights sweep the
caches between two invokes).

For each model, on one interpreter, in paired rounds (the machine is shared and noisy): every
round times ``n`` invokes of each variant back to back, in an order that alternates between
rounds, and takes each variant's median. The paired figure of a round is the guarded median
minus (or over) the raw median of that same round; the page states the median and the
interquartile range of those figures over the rounds. Variants:

* raw: ``set_tensor`` + ``invoke`` + ``get_tensor`` on the interpreter that preserves
  intermediate tensors (which the guard needs to read logits), and on a plain one;
* guarded, always-on detectors only (squeeze rate 0), at the default squeeze rate (0.1), and
  with squeezing on every invoke (rate 1);
* the previous always-on guard: the per-invoke code before its speed-up, kept as the tests'
  oracle (tests/models/guard/guard_reference.py; verdicts only, no policy), for a before/after
  on the same machine under the same load.

``--profile SECONDS`` also samples each always-on guard with py-spy (the dev extra installs it)
for that long per model and prints where the time goes, by source line of the per-invoke path.
"""

from __future__ import annotations

import argparse
import linecache
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeward.models import refmodels as rm
from edgeward.models.guard import (
    GuardedInterpreter,
    ModelIO,
    SqueezeConfig,
    calibrate,
    softmax_logits_index,
)
from edgeward.models.runtime import load_interpreter

ROOT = Path(__file__).resolve().parent.parent
GUARD_TESTS = ROOT / "tests" / "models" / "guard"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(GUARD_TESTS))
from benchstats import ratio_line  # noqa: E402
from guard_reference import ReferenceGuard  # noqa: E402

ALWAYS_ON = "guarded (always-on)"
PREVIOUS = "previous guard (always-on)"


def mlp_1ms(hidden: int = 2560) -> bytes:
    rng = np.random.default_rng(0)
    s = 1.0 / np.sqrt(hidden)
    layers = (
        (rng.normal(0, 0.125, (hidden, 64)).astype(np.float32), np.zeros(hidden, np.float32)),
        (rng.normal(0, s, (hidden, hidden)).astype(np.float32), np.zeros(hidden, np.float32)),
        (rng.normal(0, s, (10, hidden)).astype(np.float32), np.zeros(10, np.float32)),
    )
    return rm.mlp_tflite(rm.MlpWeights(layers=layers), description="edgeward 1 ms benchmark MLP")


def digits_cnn() -> bytes:
    x, y, _, _ = rm.load_digits_split()
    return rm.cnn_tflite(rm.train_cnn(x, y, **rm.CNN_PARAMS))  # type: ignore[arg-type]


MODELS = {"digits_cnn": digits_cnn, "mlp_1ms": mlp_1ms}


def setup(content: bytes, x_cal: np.ndarray, xs: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The variants to time (name -> one-sample callable) and the inputs in the model's shape."""
    it = load_interpreter(content, preserve_all_tensors=True)
    plain = load_interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    profile = calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1),
                        combination="max")  # the reference it is timed beside is max surprise
    xs = xs.reshape(len(xs), *shape).astype(np.float32)
    inp, out = io.inp["index"], io.out["index"]
    batch_shape = io.in_shape

    def raw(interp: Any) -> Any:
        def f(x: np.ndarray) -> Any:
            interp.set_tensor(inp, x.reshape(batch_shape))
            interp.invoke()
            return interp.get_tensor(out)
        return f

    fns = {
        "raw (plain interpreter)": raw(plain),
        "raw": raw(it),
        ALWAYS_ON: GuardedInterpreter(it, profile, squeeze_rate=0.0).invoke,
        "guarded (squeeze 0.1)": GuardedInterpreter(it, profile, squeeze_rate=0.1).invoke,
        "guarded (squeeze 1.0)": GuardedInterpreter(it, profile, squeeze_rate=1.0).invoke,
        PREVIOUS: ReferenceGuard(it, profile, squeeze_rate=0.0,
                                 monotonic=time.perf_counter).invoke,
    }
    return fns, xs


def timed(fn: Any, xs: np.ndarray) -> list[float]:
    out = []
    pc = time.perf_counter
    for x in xs:
        t = pc()
        fn(x)
        out.append(pc() - t)
    return out


def bench(name: str, content: bytes, x_cal: np.ndarray, xs: np.ndarray, rounds: int
          ) -> dict[str, Any]:
    fns, xs = setup(content, x_cal, xs)
    for f in fns.values():  # warm up
        timed(f, xs[:50])
    med: dict[str, list[float]] = {k: [] for k in fns}  # per round, microseconds
    mean: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)  # no variant always runs first, or right after the big model
        for k in order:
            t = timed(fns[k], xs)
            med[k].append(statistics.median(t) * 1e6)
            mean[k].append(statistics.fmean(t) * 1e6)
    added = {k: [g - r for g, r in zip(med[k], med["raw"], strict=True)] for k in fns}
    ratio = {k: [g / r for g, r in zip(med[k], med["raw"], strict=True)] for k in fns}
    return {"model": name, "n": len(xs) * rounds, "rounds": rounds, "median_us": med,
            "mean_us": mean, "added": added, "ratio": ratio}


def q3(v: list[float]) -> tuple[float, float, float]:
    if len(v) < 2:
        return v[0], v[0], v[0]
    a, b, c = statistics.quantiles(v, n=4, method="inclusive")
    return a, b, c


def report(results: list[dict[str, Any]]) -> str:
    cols = list(results[0]["median_us"])
    lines = ["Median microseconds per invoke (median over rounds of each round's median), and the "
             "paired ratio to raw (median over rounds).", "",
             "| model | invokes per variant | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in results:
        lines.append(f"| {r['model']} | {r['n']} | " + " | ".join(
            f"{statistics.median(r['median_us'][c]):.1f} us ({statistics.median(r['ratio'][c]):.3f}x)"
            for c in cols) + " |")
    lines += ["", "Added to the raw invoke by the always-on guard, paired per round "
              "(median, interquartile range over rounds):", "",
              "| model | rounds | now: added us | now: ratio | previous guard: added us | "
              "previous guard: ratio |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = []
        for k in (ALWAYS_ON, PREVIOUS):
            a, b, c = q3(r["added"][k])
            x, y, z = q3(r["ratio"][k])
            cells += [f"**{b:.1f}** ({a:.1f}-{c:.1f})", f"**{y:.3f}** ({x:.3f}-{z:.3f})"]
        lines.append(f"| {r['model']} | {r['rounds']} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        m = {k: statistics.median(v) for k, v in r["mean_us"].items()}
        sq = statistics.median(r["added"]["guarded (squeeze 1.0)"]) - statistics.median(
            r["added"][ALWAYS_ON])
        lines.append(f"- {r['model']}: feature squeezing on every invoke costs {sq:.1f} us more "
                     f"than the always-on guard; at the default rate 0.1 the mean cost per invoke "
                     f"is {m['guarded (squeeze 0.1)'] - m[ALWAYS_ON]:.1f} us above it (means: raw "
                     f"{m['raw']:.1f} us, always-on {m[ALWAYS_ON]:.1f} us, squeeze 0.1 "
                     f"{m['guarded (squeeze 0.1)']:.1f} us).")
    for r in results:  # machine-readable, for run_all.py's targets
        if r["model"] == "digits_cnn":
            lines.append(ratio_line("guard_cnn_added_us", r["added"][ALWAYS_ON]))
        if r["model"] == "mlp_1ms":
            lines.append(ratio_line("guard_mlp_1ms_ratio", r["ratio"][ALWAYS_ON]))
    return "\n".join(lines) + "\n"


# --- profile ------------------------------------------------------------------------------------

ENTRY = {ALWAYS_ON: "GuardedInterpreter.invoke", PREVIOUS: "ReferenceGuard.invoke"}


def spin(model: str, variant: str, seconds: float) -> None:
    """The profiled process: one guard, invoked in a loop for ``seconds``."""
    _, _, x_ho, _ = rm.load_digits_split()
    fns, xs = setup(MODELS[model](), x_ho[:300], x_ho[300:400])
    f, n, t0 = fns[variant], 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for x in xs:
            f(x)
        n += len(xs)
    print(f"{(time.perf_counter() - t0) / n * 1e6:.2f}", file=sys.stderr)


def frame_line(frame: str) -> tuple[str, str]:
    """('file.py:123', source text) of one py-spy frame 'func (path:line)'."""
    loc = frame[frame.rfind("(") + 1 : -1]
    path, _, line = loc.rpartition(":")
    full = Path(path)
    if not full.is_absolute():  # py-spy shortens paths under the working directory
        full = next((p for p in (Path.cwd() / path, ROOT / path, GUARD_TESTS / path)
                     if p.exists()), full)
    return f"{full.name}:{line}", linecache.getline(str(full), int(line or 0)).strip()[:60]


def profile(model: str, variant: str, seconds: float) -> str:
    """Share of py-spy samples inside the guard's invoke, by the guard's source line."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return f"(py-spy is not installed: `pip install py-spy`; no profile of {variant})\n"
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "raw.txt"
        r = subprocess.run([spy, "record", "--nonblocking", "-r", "499", "-f", "raw", "-o",
                            str(out), "--",
                            sys.executable, __file__, "--spin", model, variant, str(seconds)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not out.exists():
            return f"(py-spy failed: {r.stderr.strip()[-300:]})\n"
        per_invoke = r.stderr.strip().splitlines()[-1]
        lines = out.read_text().splitlines()
    by_line: Counter[tuple[str, str]] = Counter()
    total = 0
    for ln in lines:
        stack, _, count = ln.rpartition(" ")
        frames = stack.split(";")
        at = [i for i, fr in enumerate(frames) if fr.startswith(ENTRY[variant] + " ")]
        if not at:
            continue
        # The sample goes to the deepest frame in the guard's own code (models/guard or the
        # reference), so a numpy or interpreter call counts for the line that made it.
        own = [fr for fr in frames[at[0]:] if "guard/" in fr or "guard_reference" in fr]
        by_line[frame_line(own[-1])] += int(count)
        total += int(count)
    rows = [f"{variant}, {model}: {total} samples inside invoke, {per_invoke} us per invoke "
            "in the sampled loop (sampling slows it)", "",
            "| share | line | code |", "|---:|---|---|"]
    for (loc, code), n in by_line.most_common(14):
        rows.append(f"| {100 * n / max(total, 1):.1f}% | {loc} | `{code}` |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=100, help="invokes per variant per round")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="also sample each always-on guard with py-spy this long per model")
    ap.add_argument("--spin", nargs=3, metavar=("MODEL", "VARIANT", "SECONDS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.spin:
        spin(args.spin[0], args.spin[1], float(args.spin[2]))
        return 0
    _, _, x_ho, _ = rm.load_digits_split()
    x_cal, x_test = x_ho[:300], x_ho[300:300 + args.n]
    results = []
    for name, build in MODELS.items():
        print(f"building and benchmarking {name} ...", file=sys.stderr)
        results.append(bench(name, build(), x_cal, x_test, args.rounds))
    text = report(results)
    if args.profile > 0:
        text += "\nWhere the time goes (py-spy samples, by source line of the per-invoke path):\n"
        for name in MODELS:
            for variant in (PREVIOUS, ALWAYS_ON):
                print(f"profiling {variant} on {name} ...", file=sys.stderr)
                text += "\n" + profile(name, variant, args.profile)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
