"""Model verification, side by side with its peers, on the same files in one run.

* in-process: ``verify_model`` (read + signature + digest + structure) against plain hashlib
  SHA-256 over the same file (read + hash): the ratio of throughputs;
* command line: ``edgeward model verify`` against ``model_signing verify key`` on the same model,
  the same P-256 key, each with its own signature (our manifest, their bundle);
* memory: peak resident memory added by verify-and-load (verify_model + interpreter creation
  and allocate_tensors) in a fresh process, against the model's size.

Prints a Markdown section; ``run_all.py`` writes it into docs/BENCHMARKS.md. Medians over
repeated runs: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchstats import ratio_line

BIN = Path(sys.executable).parent
MiB = 1024 * 1024


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paired_times(fa, fb, repeat: int) -> tuple[list[float], list[float]]:
    """Time fa and fb alternately, so each pair sees the same machine load."""
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def _hash_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def _cmd(cmd: list[str]):
    def run() -> None:
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr.decode()[-400:]}")

    run()  # warm the page cache and the interpreter's imports
    return run


def _cmd_time(cmd: list[str], repeat: int) -> float:
    return _median_time(_cmd(cmd), repeat)


MEMORY_PROBE = r"""
import json, sys, resource
from pathlib import Path
def rss_kib(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])
from edgeward.models.integrity import verify_model
from edgeward.core.keys import TrustStore
from edgeward.models import runtime
import numpy  # noqa: F401  (imported before the baseline, as an application would)
runtime._backend()  # import the runtime before the baseline
base = rss_kib("VmRSS:")
vm = verify_model(Path(sys.argv[1]), TrustStore.from_path(Path(sys.argv[2])))
interp = runtime.load_interpreter(vm.content, **json.loads(sys.argv[3]))
interp.allocate_tensors()
peak = rss_kib("VmHWM:")
print(json.dumps({"base_kib": base, "peak_kib": peak}))
"""


def _memory(model: Path, pub: Path, runtime_kwargs: dict[str, object]) -> dict[str, int]:
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(model), str(pub), json.dumps(runtime_kwargs)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"memory probe failed: {r.stderr[-600:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def run(sizes_mb: list[int], repeat: int, work: Path) -> str:
    from edgeward.core.keys import TrustStore, generate, write_keypair
    from edgeward.core.persist import write_atomic
    from edgeward.models.integrity import sign_model, verify_model
    from edgeward.models.refmodels.dense import write_dense_model

    key = generate("p256")
    priv, pub = write_keypair(work / "keys", key)
    trust = TrustStore.from_path(pub)
    rows_tp, rows_cli, rows_mem, ratios = [], [], [], []
    for size in sizes_mb:
        model = work / f"dense_{size}mb.tflite"
        actual = write_dense_model(model, size * MiB)
        sig, _ = sign_model(model, key, name=f"dense{size}", version=1)
        write_atomic(model.with_name(model.name + ".ewsig"), sig)
        bundle = work / f"dense_{size}mb.sig"
        subprocess.run(
            [str(BIN / "model_signing"), "sign", "key", "--private_key", str(priv),
             "--signature", str(bundle), str(model)],
            check=True, capture_output=True,
        )
        # in-process throughput
        hs, vs = _paired_times(lambda m=model: _hash_file(m),
                               lambda m=model: verify_model(m, trust), repeat)
        t_hash, t_ver = statistics.median(hs), statistics.median(vs)
        ratios.append(ratio_line(f"verify_inproc_{size}mb",
                                 [h / v for h, v in zip(hs, vs, strict=True)]))
        t_ver_ossf = _median_time(lambda m=model, b=bundle: verify_model(m, trust, sig_path=b),
                                  repeat)
        mbps = actual / MiB
        rows_tp.append(
            f"| {size} MB | {mbps / t_hash:,.0f} MiB/s | {mbps / t_ver:,.0f} MiB/s "
            f"| **{t_hash / t_ver:.2f}** | {mbps / t_ver_ossf:,.0f} MiB/s "
            f"| {t_hash / t_ver_ossf:.2f} |"
        )
        # command line, same model, same key
        ours_run = _cmd([str(BIN / "edgeward"), "model", "verify", str(model),
                         "--trust", str(pub)])
        ours_b = _cmd_time([str(BIN / "edgeward"), "model", "verify", str(model),
                            "--trust", str(pub), "--sig", str(bundle)], repeat)
        theirs_run = _cmd([str(BIN / "model_signing"), "--log-level", "WARNING", "verify", "key",
                           "--signature", str(bundle), "--public_key", str(pub), str(model)])
        os_, ts = _paired_times(ours_run, theirs_run, repeat)
        ours, theirs = statistics.median(os_), statistics.median(ts)
        ratios.append(ratio_line(f"cli_{size}mb", [o / t for o, t in zip(os_, ts, strict=True)]))
        rows_cli.append(
            f"| {size} MB | {ours:.3f} s | {ours_b:.3f} s | {theirs:.3f} s "
            f"| **{ours / theirs:.2f}** |"
        )
        # memory, fresh processes
        for label, kwargs in (("default (XNNPACK only up to 64 MiB)", {}),
                              ("`use_xnnpack=True`", {"use_xnnpack": True}),
                              ("`use_xnnpack=False`", {"use_xnnpack": False})):
            m = _memory(model, pub, kwargs)
            added = (m["peak_kib"] - m["base_kib"]) / 1024
            budget = actual / MiB + 30
            rows_mem.append(
                f"| {size} MB | {label} | {added:,.1f} MiB | {budget:,.1f} MiB "
                f"| {'within' if added <= budget else 'OVER'} |"
            )
    return "\n".join([
        "## Model verification",
        "",
        f"Dense FULLY_CONNECTED models built by `refmodels.dense.write_dense_model`, a P-256 key; "
        f"medians of {repeat} runs after one warm-up, page cache warm; edgeward and its peer "
        "run alternately (paired runs).",
        "",
        "In-process throughput: `verify_model` (read, COSE signature, size and SHA-256, "
        "structural validation) against plain hashlib SHA-256 of the same file (read + hash). "
        "Target: ratio at least 1.5 (two cores; a model over one 4 MiB shard is read and hashed "
        "shard by shard on every core).",
        "",
        "| model | hashlib SHA-256 | edgeward verify | ratio | edgeward verify, OpenSSF bundle "
        "| ratio |",
        "|---|---|---|---|---|---|",
        *rows_tp,
        "",
        "Command line wall time, same model and key. Target: edgeward at most 0.5 of "
        "`model_signing verify key`.",
        "",
        "| model | `edgeward model verify` | same, OpenSSF bundle | `model_signing verify key` "
        "| ratio (edgeward manifest / model_signing) |",
        "|---|---|---|---|---|",
        *rows_cli,
        "",
        "Peak memory added by verify-and-load (VmHWM minus VmRSS after imports), fresh process. "
        "Budget: model size + 30 MiB.",
        "",
        "| model | runtime options | added peak RSS | budget | |",
        "|---|---|---|---|---|",
        *rows_mem,
        "",
        *ratios,
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,200", help="model sizes in MB, comma separated")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ew-bench-") as d:
        print(run([int(s) for s in args.sizes.split(",")], args.repeat, Path(d)))
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
