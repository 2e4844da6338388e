"""Run the fuzz targets under atheris/libFuzzer and report inputs tried and coverage per target.

    python fuzz/run.py --seconds 600 --jobs 2 --keep-going      # make fuzz
    python fuzz/run.py --seconds 10 --jobs 2                    # make fuzz-ci
    python fuzz/run.py --seconds 60 cbor tflite                 # some targets

Each target runs as ``python fuzz/fuzz_<name>.py WORK fuzz/corpus/<name> -max_total_time=S``
(libFuzzer writes new inputs into WORK, reads the saved corpus, and writes crashes to
``fuzz/out/crashes/``). ``--keep-going`` sets FUZZ_KEEP_GOING=1 (a bug is saved under
fuzz/findings/<name>/ and fuzzing goes on, see _common.py) and restarts a target that stopped on
a crash, a hang or running out of memory until its time is used. Without it (CI), the first
crash, hang or finding fails the run.

Per target it reports: seconds run, inputs tried (libFuzzer's ``#N`` executions, summed over
restarts), coverage (``cov:`` edges and ``ft:`` features of the instrumented edgeward code at the
end), corpus size, and crashes or findings. The table is printed and written to
``fuzz/out/summary-<seconds>s.md``; full logs are in ``fuzz/out/logs/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
OUT = FUZZ / "out"
TARGETS = ("cbor", "cose", "manifest", "tflite", "litert", "evidence", "tpm_quote", "envelope",
           "e2eack", "commands", "frames", "toml")

_STAT = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", re.M)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")
_CRASH = re.compile(r"^(==\d+== ERROR: libFuzzer: \S+.*|=== Uncaught Python exception: ===)", re.M)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_LITERT = re.compile(r"^== LITERT ran (\d+) ", re.M)
_FINDING = re.compile(r"^== FINDING \S+: (\S+)", re.M)
_KNOWN = re.compile(r"^== KNOWN \S+: (\S+)", re.M)


@dataclass
class Result:
    target: str
    seconds: float = 0.0
    execs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    crashes: list[str] = field(default_factory=list)  # "kind: artifact"
    findings: list[str] = field(default_factory=list)  # signatures (keep-going)
    known: list[str] = field(default_factory=list)  # in fuzz/known_findings.txt: not a failure
    restarts: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.crashes and not self.findings


def _one_run(target: str, work: Path, seconds: int, keep_going: bool, log: Path
             ) -> tuple[str, float]:
    crashes = OUT / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(work),
           str(FUZZ / "corpus" / target),
           f"-max_total_time={seconds}", "-timeout=25", "-rss_limit_mb=3072",
           "-print_final_stats=1", "-print_pcs=0", "-close_fd_mask=1",
           f"-artifact_prefix={crashes}/{target}-"]
    if (FUZZ / f"{target}.dict").exists():
        cmd.append(f"-dict={FUZZ / f'{target}.dict'}")
    elif target not in ("tflite", "litert", "tpm_quote", "toml"):
        cmd.append(f"-dict={FUZZ / 'cbor.dict'}")
    env = dict(os.environ, FUZZ_KEEP_GOING="1" if keep_going else "0", PYTHONHASHSEED="0")
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                       cwd=FUZZ.parent, check=False)
    text = p.stderr.decode("utf-8", "replace")
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n{text}\n[exit {p.returncode}]\n")
    return text, time.monotonic() - t0


def run_target(target: str, seconds: int, keep_going: bool, work: Path) -> Result:
    res = Result(target)
    log = OUT / "logs" / f"{target}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    work.mkdir(parents=True, exist_ok=True)
    left = seconds
    while True:
        text, took = _one_run(target, work, max(1, int(left)), keep_going, log)
        res.seconds += took
        stats = _STAT.findall(text)
        done = _DONE.search(text)
        executed = _EXECUTED.search(text)
        if executed:
            res.execs += int(executed.group(1))
        elif done:
            res.execs += int(done.group(1))
        elif stats:
            res.execs += int(stats[-1][0])
        if stats:
            res.cov, res.ft, res.corpus = (max(res.cov, int(stats[-1][1])),
                                           max(res.ft, int(stats[-1][2])), int(stats[-1][3]))
        ran = _LITERT.findall(text)
        if ran:
            res.note = f"at least {ran[-1]} validator-passing models ran in LiteRT"
        res.findings += [f for f in _FINDING.findall(text) if f not in res.findings]
        res.known += [f for f in _KNOWN.findall(text) if f not in res.known]
        crash = _CRASH.search(text)
        if crash or (not done and not stats):
            kind = crash.group(1) if crash else "did not start (see log)"
            art = _ARTIFACT.search(text)
            res.crashes.append(f"{kind.strip('= ')}: {art.group(1) if art else '?'}")
            res.restarts += 1
            left = seconds - res.seconds
            if keep_going and left > 5 and res.restarts < 20 and (crash is not None):
                continue
        break
    return res


def table(results: list[Result], seconds: int) -> str:
    lines = [f"Fuzzing with atheris {_atheris_version()} / libFuzzer, {seconds} s per target "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "| target | seconds | inputs tried | exec/s | cov | ft | corpus | crashes "
             "| findings |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        rate = r.execs / r.seconds if r.seconds else 0
        lines.append(f"| {r.target} | {r.seconds:.0f} | {r.execs:,} | {rate:,.0f} | {r.cov} | "
                     f"{r.ft} | {r.corpus} | {'; '.join(r.crashes) or 'none'} | "
                     f"{'; '.join(r.findings) or 'none'} |")
    notes = [f"- {r.target}: {r.note}" for r in results if r.note]
    notes += [f"- {r.target}: known finding (fuzz/known_findings.txt, not counted as a failure): "
              f"{k}" for r in results for k in r.known]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def _atheris_version() -> str:
    try:
        from importlib.metadata import version

        return version("atheris")
    except Exception:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s) {sorted(unknown)}; known: {', '.join(TARGETS)}")
    tmp = Path(tempfile.mkdtemp(prefix="edgeward-fuzz-"))
    if args.keep_going:
        works = {t: OUT / "work" / t for t in args.targets}  # kept: later campaigns go on from it
    else:
        works = {t: tmp / t for t in args.targets}  # CI: from the saved corpus only
    print(f"fuzzing {len(args.targets)} target(s), {args.seconds} s each, {args.jobs} at a time",
          flush=True)

    def job(t: str) -> Result:
        r = run_target(t, args.seconds, args.keep_going, works[t])
        print(f"  {t}: {r.execs:,} inputs, cov {r.cov}, "
              f"{'ok' if r.ok else 'CRASHES ' + str(r.crashes) + ' FINDINGS ' + str(r.findings)}",
              flush=True)
        return r

    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(job, args.targets))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(results, args.seconds)
    OUT.mkdir(exist_ok=True)
    (OUT / f"summary-{args.seconds}s.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
