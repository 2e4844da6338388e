"""QEMU simulator: image build (cold against cached) and boot to the first affirming attestation.

Prints one Markdown section for docs/BENCHMARKS.md (``run_all.py --only qemu``):

* image build: a cold build into an empty cache folder (downloads from the registries,
  extraction, byte-compilation, the initramfs) against the same build again (cache hit);
* boot: N devices started together (``--devices 1,2,4``), each a ``qemu-system-aarch64 -M virt``
  guest (TCG, no KVM) with its own swtpm, against Mosquitto and the verifier service on
  loopback; per device the time from QEMU's start to the backend's first affirming EAR (TPM
  quote verified), and the agent's memory (VmRSS) and CPU time inside the guest once attested.

    python benchmarks/bench_qemu.py [--devices 1,2] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgeward.simulator.image import build_image
from edgeward.simulator.qemu_provision import QemuBackend

AGENT_STATS = (  # [e]: the pattern must not match this command's own shell
    "p=$(ps | awk '/[e]dgeward.agent.cli/ {print $1; exit}'); "
    "echo $(awk '/^VmRSS/ {print $2}' /proc/$p/status) "
    "$(awk '{print $14, $15}' /proc/$p/stat) 100 $(cut -d' ' -f1 /proc/uptime)"
)


def build_times(runs: int) -> tuple[list[float], list[float], dict[str, object]]:
    cold, cached = [], []
    manifest: dict[str, object] = {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="ew-bench-cache-") as tmp:
            t0 = time.monotonic()
            img = build_image(cache=Path(tmp))
            cold.append(time.monotonic() - t0)
            print(f"cold build {cold[-1]:.1f} s", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            build_image(cache=Path(tmp))
            cached.append(time.monotonic() - t0)
            manifest = img.manifest
    return cold, cached, manifest


def boot(n: int, image: object) -> list[tuple[str, float, str]]:
    """Per device: (name, seconds to the first affirming EAR, agent RSS/CPU text)."""
    with tempfile.TemporaryDirectory(prefix="ew-bench-qemu-") as tmp:
        with QemuBackend(Path(tmp) / "fleet", image) as be:  # type: ignore[arg-type]
            devs = [be.device(f"sim-{i:04d}") for i in range(1, n + 1)]
            starts = {}
            for d in devs:
                d.start()
                starts[d.name] = d.started_at or time.monotonic()
            done: dict[str, float] = {}
            deadline = time.monotonic() + 120 + 90 * n
            while len(done) < n and time.monotonic() < deadline:
                for d in devs:
                    if d.name not in done and be.appraisals(d.name):
                        res = be.appraisals(d.name)[0]
                        if res != "affirming":
                            raise SystemExit(f"{d.name} was {res}: {d.console_tail(20)}")
                        done[d.name] = time.monotonic() - starts[d.name]
                time.sleep(0.2)
            if len(done) < n:
                raise SystemExit("not every device was attested in time: "
                                 + "; ".join(d.console_tail(5) for d in devs))
            out = []
            for d in devs:
                rss, ut, st, hz, up = d.run(AGENT_STATS).split()
                cpu = (int(ut) + int(st)) / int(hz)
                out.append((d.name, done[d.name],
                            f"{int(rss) / 1024:.0f} MiB, {cpu:.1f} s CPU in {float(up):.0f} s"))
            return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--runs", type=int, default=3, help="runs of the 1-device boot and builds")
    args = ap.parse_args()
    print("building images...", file=sys.stderr, flush=True)
    cold, cached, manifest = build_times(max(1, args.runs // 2))
    image = build_image()
    rows = []
    for n in (int(x) for x in args.devices.split(",")):
        for run in range(args.runs if n == 1 else 1):
            print(f"booting {n} device(s), run {run + 1}...", file=sys.stderr, flush=True)
            rows.append((n, run + 1, boot(n, image)))
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    print("## Simulator: QEMU image build and boot to the first affirming attestation\n")
    print(f"Image `{manifest.get('key')}`: {manifest.get('kernel')}, "
          f"{int(manifest.get('unpacked_bytes', 0)) / 2**20:.0f} MiB unpacked "  # type: ignore[call-overload]
          f"({manifest.get('entries')} entries, uncompressed cpio). Guests: "
          "`qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 4 -m 1024` (TCG, no KVM), each with "
          "its own swtpm; Mosquitto and the verifier service on loopback. The machine is shared "
          "with other work, so timings are noisy.\n")
    print("| image build | median | runs |\n|---|---|---|")
    print(f"| cold (empty cache: download, extract, compile, initramfs) | "
          f"{statistics.median(cold):.1f} s | {len(cold)} |")
    print(f"| cached (same inputs) | {statistics.median(cached):.2f} s | {len(cached)} |")
    print(f"| ratio cold / cached | {statistics.median(cold) / statistics.median(cached):.0f}x | |")
    print()
    print("| devices | run | QEMU start -> first affirming EAR, per device | agent in the guest "
          "(VmRSS, CPU time since boot) |\n|---|---|---|---|")
    for n, run, devs in rows:
        times = ", ".join(f"{t:.1f} s" for _name, t, _s in devs)
        stats = "; ".join(s for _name, _t, s in devs)
        print(f"| {n} | {run} | {times} | {stats} |")
    ones = [t for n, _r, devs in rows if n == 1 for _nm, t, _s in devs]
    if ones:
        print(f"\nOne device: median {statistics.median(ones):.1f} s from QEMU start to the "
              f"first affirming EAR over {len(ones)} runs.")


if __name__ == "__main__":
    main()
