"""Guarded invoke against raw invoke, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_guard.py [--rounds 20] [--out FILE.md]``

Models: ``digits_cnn`` (the reference CNN, tens of microseconds per invoke) and ``mlp_1ms``, a
64 -> 2560 -> 2560 -> 10 float32 MLP with random weights built with the refmodels helpers
(about a millisecond per invoke on a desktop core; its input and output match the digits
models, so the guard's own work is the same as for them).

For each model, on one interpreter, in interleaved rounds (the machine is shared and noisy):

* raw: ``set_tensor`` + ``invoke`` + ``get_tensor`` on an interpreter that preserves
  intermediate tensors (which the guard needs to read logits), and on a plain one;
* guarded, always-on detectors only (squeeze rate 0);
* guarded at the default squeeze rate (0.1), and with squeezing on every invoke (rate 1).

Reported: median microseconds per invoke over all rounds, and ratios of medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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


def timed(fn: Any, xs: np.ndarray) -> list[float]:
    out = []
    for x in xs:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def bench(name: str, content: bytes, x_cal: np.ndarray, xs: np.ndarray, rounds: int
          ) -> dict[str, Any]:
    it = load_interpreter(content, preserve_all_tensors=True)
    plain = load_interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    profile = calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1))
    xs = xs.reshape(len(xs), *shape).astype(np.float32)
    inp, out = io.inp["index"], io.out["index"]
    batch_shape = io.in_shape

    def raw(interp: Any) -> Any:
        def f(x: np.ndarray) -> Any:
            interp.set_tensor(inp, x.reshape(batch_shape))
            interp.invoke()
            return interp.get_tensor(out)
        return f

    guards = {
        "guarded (always-on)": GuardedInterpreter(it, profile, squeeze_rate=0.0),
        "guarded (squeeze 0.1)": GuardedInterpreter(it, profile, squeeze_rate=0.1),
        "guarded (squeeze 1.0)": GuardedInterpreter(it, profile, squeeze_rate=1.0),
    }
    fns = {"raw (plain interpreter)": raw(plain), "raw": raw(it),
           **{k: g.invoke for k, g in guards.items()}}
    for f in fns.values():  # warm up
        timed(f, xs[:50])
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k] += timed(f, xs)
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    mean = {k: statistics.fmean(v) * 1e6 for k, v in times.items()}
    return {"model": name, "n": len(times["raw"]), "median_us": med, "mean_us": mean,
            "ratio": {k: med[k] / med["raw"] for k in med}}


def report(results: list[dict[str, Any]]) -> str:
    cols = list(results[0]["median_us"])
    lines = ["| model | invokes per variant | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in results:
        lines.append(f"| {r['model']} | {r['n']} | " + " | ".join(
            f"{r['median_us'][c]:.1f} us ({r['ratio'][c]:.2f}x)" for c in cols) + " |")
    lines.append("")
    for r in results:
        m = r["median_us"]
        lines.append(f"- {r['model']}: always-on guard adds {m['guarded (always-on)'] - m['raw']:.1f} us "
                     f"per invoke (+{(r['ratio']['guarded (always-on)'] - 1) * 100:.1f}%); feature "
                     f"squeezing on every invoke costs {m['guarded (squeeze 1.0)'] - m['guarded (always-on)']:.1f} us "
                     f"more; at the default rate 0.1 the mean cost per invoke is "
                     f"{r['mean_us']['guarded (squeeze 0.1)'] - r['mean_us']['guarded (always-on)']:.1f} us "
                     f"above the always-on guard (means: raw {r['mean_us']['raw']:.1f} us, "
                     f"always-on {r['mean_us']['guarded (always-on)']:.1f} us, squeeze 0.1 "
                     f"{r['mean_us']['guarded (squeeze 0.1)']:.1f} us).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=100, help="invokes per variant per round")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    _, _, x_ho, _ = rm.load_digits_split()
    x_cal, x_test = x_ho[:300], x_ho[300:300 + args.n]
    print("building models ...", file=sys.stderr)
    models = {"digits_cnn": digits_cnn(), "mlp_1ms": mlp_1ms()}
    results = []
    for name, content in models.items():
        print(f"benchmarking {name} ...", file=sys.stderr)
        results.append(bench(name, content, x_cal, x_test, args.rounds))
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
