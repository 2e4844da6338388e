"""Agent benchmarks, side by side in one run; prints a Markdown table for docs/BENCHMARKS.md.

1. Reports per second delivered at QoS 1 (PUBACKed by the broker) through the agent's loop and
   durable outbox (SQLite WAL, synchronous=FULL, group commit), against a bare paho QoS 1
   publish loop with the same in-flight window, on the same Mosquitto (TLS, client certs).
2. The agent's idle CPU and memory (``edgeward agent run``, default-ish config) over a minute
   (``--idle-seconds`` to shorten).
3. Time and memory per metrics collection: edgeward's MetricsCollector against the AWS IoT
   Device Defender Python agent's collector (PyPI ``awsiotdevicedefenderagentsdk``), if it is
   installed in the venv given by ``--dd-python``; and what one report costs the agent (CPU time
   of the collecting thread) and weighs on the wire (the CBOR envelope the loop sends), median
   and with the full lists (sent on change and every 10th report).

Usage: .venv/bin/python benchmarks/bench_agent.py [--messages 5000] [--idle-seconds 60]
       [--dd-python .venv-bench/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from benchstats import ratio_line

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "agent"))

from agent_helpers import write_agent_config  # noqa: E402
from fixtures_mqtt import Mosquitto, TestCA, paho_client  # noqa: E402

PAYLOAD = 600  # bytes, about one metrics report


def bench_bare_paho(broker: Mosquitto, ca: TestCA, n: int, window: int, name: int = 0) -> float:
    import paho.mqtt.client as mqtt

    c = paho_client(broker, ca.issue(f"bench-bare{name}"), f"bench-bare{name}")
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, rc, props):  # type: ignore[no-untyped-def]
        acked[0] += 1
        if acked[0] >= n:
            done.set()

    c.on_publish = on_publish
    c.connect(broker.host, broker.port)
    c.loop_start()
    while not c.is_connected():
        time.sleep(0.01)
    payload = os.urandom(PAYLOAD)
    t0 = time.perf_counter()
    for _ in range(n):
        c.publish(f"edgeward/v1/bench-bare{name}/report", payload, qos=1)
    done.wait(120)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    assert mqtt and acked[0] >= n
    return n / dt


def bench_outbox(broker: Mosquitto, ca: TestCA, n: int, tmp: Path, name: int = 0) -> float:
    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config
    from edgeward.agent.localsock import LocalEvent

    cfg = load_agent_config(write_agent_config(tmp / f"bench{name}.toml", broker, ca,
                                               f"bench-agent{name}", interval=3600,
                                               max_bytes=256 * 2**20,
                                               window=int(os.environ.get("EW_WINDOW", "1024"))))
    agent = build_agent(cfg)
    th = threading.Thread(target=agent.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    assert agent.transport.wait_connected(10)
    time.sleep(0.3)
    while agent.outbox.count():
        time.sleep(0.01)
    base = agent.counters.get("delivered", 0)
    body = {"pad": "x" * (PAYLOAD - 120)}
    t0 = time.perf_counter()
    for _ in range(n):  # the same path an application event takes (local socket -> loop)
        agent.queue.put(LocalEvent("app.bench.report", 0.0, body, 0, 0))
    while agent.counters.get("delivered", 0) < base + n:  # PUBACKed, as for bare paho
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    agent.request_stop()
    th.join(10)
    return n / dt


def bench_idle(broker: Mosquitto, ca: TestCA, seconds: float, tmp: Path) -> tuple[float, float]:
    import psutil

    cfg = write_agent_config(tmp / "idle.toml", broker, ca, "bench-idle", interval=10)
    exe = str(Path(sys.executable).parent / "edgeward")
    p = subprocess.Popen([exe, "agent", "run", "--config", str(cfg)])
    proc = psutil.Process(p.pid)
    time.sleep(3.0)  # start-up (imports, first metrics, TLS handshake) excluded
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(proc.memory_info().rss)
        time.sleep(1.0)
    c1 = proc.cpu_times()
    dt = time.monotonic() - t0
    p.terminate()
    p.wait(20)
    cpu = (c1.user - c0.user + c1.system - c0.system) / dt * 100
    return cpu, max(rss) / 2**20


def bench_metrics(rounds: int) -> tuple[float, float]:
    from edgeward.agent.metrics import MetricsCollector

    m = MetricsCollector()
    m.collect()
    times, peaks = [], []
    for _ in range(rounds):
        tracemalloc.start()
        t0 = time.perf_counter()
        m.collect()
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times) * 1000, statistics.median(peaks) / 1024


def report_cost(rounds: int) -> tuple[float, float, int]:
    """CPU ms of one collection (this thread), median report bytes, bytes with full lists."""
    from edgeward.agent.envelope import Envelope, encode
    from edgeward.agent.metrics import MetricsCollector

    m = MetricsCollector()
    cpu, sizes, full = [], [], 0
    for i in range(max(rounds, 10)):
        t0 = time.thread_time()
        body = m.collect()
        cpu.append(time.thread_time() - t0)
        # what the loop adds before sending (agent/loop.py run_timers)
        body["outbox"] = {"count": 0, "bytes": 0, "dropped": 0, "delivered": 1000 + i}
        body["counters"] = {"delivered": 1000 + i}
        n = len(encode(Envelope(seq=1000 + i, ts=time.time(), device="lock-0001",
                                type="metrics", body=body)))
        sizes.append(n)
        if i == 0:
            full = n
    return statistics.median(cpu) * 1000, statistics.median(sizes), full


DD_SCRIPT = r"""
import json, statistics, sys, time, tracemalloc
from AWSIoTDeviceDefenderAgentSDK import collector
c = collector.Collector(short_metrics_names=False)
c.collect_metrics()
times, peaks = [], []
for _ in range(int(sys.argv[1])):
    tracemalloc.start()
    t0 = time.perf_counter()
    c.collect_metrics()
    times.append(time.perf_counter() - t0)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
print(json.dumps([statistics.median(times) * 1000, statistics.median(peaks) / 1024]))
"""


def bench_dd(python: str | None, rounds: int) -> tuple[float, float] | str:
    if not python or not Path(python).exists():
        return "not installed"
    p = subprocess.run([python, "-c", DD_SCRIPT, str(rounds)], capture_output=True, text=True)
    if p.returncode != 0:
        return f"failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"
    a, b = json.loads(p.stdout)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--metrics-rounds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--dd-python",
        default=str(Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"),
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ew-bench-") as d:
        tmp = Path(d)
        ca = TestCA(tmp / "ca")
        (tmp / "broker").mkdir()
        broker = Mosquitto(tmp / "broker", ca)
        broker.start()
        try:
            bares, outs = [], []
            for i in range(args.repeat):  # interleaved, so both see the same machine load
                bares.append(bench_bare_paho(broker, ca, args.messages, window=64, name=i))
                outs.append(bench_outbox(broker, ca, args.messages, tmp, name=i))
            bare, outbox = statistics.median(bares), statistics.median(outs)
            ratios = sorted(o / b for o, b in zip(outs, bares, strict=True))
            idle_cpu, idle_rss = bench_idle(broker, ca, args.idle_seconds, tmp)
        finally:
            broker.stop()
    # metrics: edgeward and the Device Defender collector alternate in chunks of rounds (paired)
    chunk = max(5, args.metrics_rounds // args.repeat)
    ews: list[tuple[float, float]] = []
    dds: list[tuple[float, float]] = []
    dd: tuple[float, float] | str = "not run"
    for _ in range(args.repeat):
        ews.append(bench_metrics(chunk))
        got = bench_dd(args.dd_python, chunk)
        if isinstance(got, str):
            dd, dds = got, []
            break
        dds.append(got)
    ew_t, ew_m = (statistics.median(x) for x in zip(*ews, strict=True))
    cost_cpu, size_median, size_full = report_cost(args.metrics_rounds)
    if dds:
        dd = tuple(statistics.median(x) for x in zip(*dds, strict=True))  # type: ignore[assignment]
    print(f"\n### Agent (Mosquitto 2 over TLS on loopback, {os.cpu_count()} CPUs, "
          f"{args.messages} reports of {PAYLOAD} B)\n")
    print("| measurement | edgeward | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| reports/s delivered at QoS 1 (PUBACKed) | {outbox:,.0f} (agent loop + durable "
          f"outbox, fsync per batch, window 1024, 64 on the wire) | {bare:,.0f} (bare paho "
          f"publish loop, 64 on the wire) | "
          f"{outbox / bare:.2f} (median of {args.repeat}; runs "
          f"{', '.join(f'{r:.2f}' for r in ratios)}) |")
    print(f"| agent idle CPU over {args.idle_seconds:.0f} s (metrics every 10 s) | "
          f"{idle_cpu:.2f} % of one core | | |")
    print(f"| agent idle memory (max RSS) | {idle_rss:.1f} MiB | | |")
    if isinstance(dd, tuple):
        print(f"| time per metrics collection (median of {len(dds)} x {chunk}, alternating) "
              f"| {ew_t:.1f} ms | "
              f"{dd[0]:.1f} ms (AWS IoT Device Defender collector) | {ew_t / dd[0]:.2f} |")
        print(f"| Python heap peak per collection | {ew_m:.0f} KiB | {dd[1]:.0f} KiB | "
              f"{ew_m / dd[1]:.2f} |")
    else:
        print(f"| time per metrics collection (median) | {ew_t:.1f} ms | Device Defender: {dd} | |")
        print(f"| Python heap peak per collection | {ew_m:.0f} KiB | | |")
    print(f"| agent CPU per metrics report (collecting thread, median of "
          f"{max(args.metrics_rounds, 10)}) | {cost_cpu:.1f} ms | | |")
    print(f"| metrics report on the wire (CBOR envelope) | {size_median / 1024:.2f} KiB median, "
          f"{size_full / 1024:.2f} KiB with the full port and connection lists | | |")
    print(ratio_line("delivery_outbox", ratios))
    if dds:
        print(ratio_line("metrics_time", [e[0] / d[0] for e, d in zip(ews, dds, strict=False)]))


if __name__ == "__main__":
    _ = queue
    main()
