"""Fleet load: thousands of device identities through the real Mosquitto into real verifier workers.

    python benchmarks/fleet_load.py --devices 10000 --workers 2 --hold 600      # the goal
    python benchmarks/fleet_load.py --devices 20 --hold 5 --report-interval 1   # a smoke run
    make fleet-load FLEET_ARGS="--devices 2000 --workers 4"

What runs, all on 127.0.0.1: the Debian ``mosquitto`` with the shipped ``deploy/mosquitto.conf``
and dynamic security (:class:`edgeward.simulator.devbroker.Mosquitto`, every device registered
with the shipped device role of ``deploy/acl``); ``--workers`` processes of ``edgeward verifier
run`` sharing one fleet store; and the devices (:mod:`fleet_clients`): one TLS connection per
device, each with its own key and fleet-CA certificate (:mod:`fleet_kit`, cached per count).

Phases:

1. **mass reconnect**: every device connects at once and publishes its ``online`` birth; the
   workers challenge every one of them (``challenge_on_connect``). Measured: the time until every
   device has a finished appraisal (and how many were affirming), and the time the connections
   took.
2. **hold**: each device reports every ``--report-interval`` s and asks for attestation every
   ``--attest-interval`` s (an ``attest.request`` event: the worker challenges it, the device
   answers with evidence signed by its key), spread evenly; ``--hostile`` of the reports are
   followed by a hostile message (fleet_clients.HOSTILE_KINDS).
3. **drain** and **account**: wait until the store holds every (device, seq) sent, then read it:
   each (device, seq) stored exactly once, nothing stored that was not sent, hostile evidence
   never affirming; report latency (the envelope's ``ts``, set when the device publishes, to the
   store's ``received``) p50/p95/p99; reports/s and appraisals/s stored during the hold; the load
   average.

Prints a summary and writes ``--json``. Exit 1 when something was lost, stored twice or a
hostile message was accepted. Run it under ``nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet_kit
from fleet_clients import Fleet

from edgeward.attestation.service.pki import FleetCA
from edgeward.attestation.service.service import FLEET
from edgeward.simulator.devbroker import DevCA, Mosquitto, device_acls

AGENT_CMD = [sys.executable, "-c", "from edgeward.agent.cli import main; main()"]
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


class CachedCA(DevCA):
    """The kit's fleet CA (kept on disk, so cached device certificates stay valid)."""

    def __init__(self, root: Path) -> None:
        made = FleetCA.load(root, days=3650)
        FleetCA.__init__(self, root, made._cert, made._key, days=3650)
        self.clients = []
        self.brokers = weakref.WeakSet()


def register_devices(broker: Mosquitto, names: list[str]) -> None:
    """Every device with the shipped device role, in the plugin's file (broker stopped)."""
    config = json.loads(broker.dynsec.read_text())
    for cn in names:
        role = f"edgeward-device-{cn}"
        config["roles"].append({"rolename": role, "acls": [
            {"acltype": a, "topic": tp, "allow": True} for a, tp in device_acls(cn)]})
        config["clients"].append({"username": cn, "roles": [{"rolename": role}]})
    broker.dynsec.write_text(json.dumps(config))


class Backend:
    def __init__(self, run: Path, kit: fleet_kit.Kit, workers: int, extra: str) -> None:
        self.run = run
        self.ca = CachedCA(kit.fleet_ca)
        wcerts = [self.ca.issue(f"edgeward-verifier-w{n}", out=run / "workers")
                  for n in range(workers)]
        (run / "broker").mkdir()
        self.broker = Mosquitto(run / "broker", self.ca)
        register_devices(self.broker, [fleet_kit.device_name(i) for i in range(kit.count)])
        self.backend = run / "backend"
        self.backend.mkdir()
        self.tomls = [fleet_kit.verifier_toml(kit, self.backend, f"w{n}", self.broker.port,
                                              self.ca.ca, c.cert, c.key, extra=extra)
                      for n, c in enumerate(wcerts)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.store = self.backend / "fleet.sqlite"

    def start(self) -> None:
        self.broker.start()
        for n, toml in enumerate(self.tomls):
            log = open(self.backend / f"w{n}.log", "ab")
            self.procs.append(subprocess.Popen(
                [*AGENT_CMD, "verifier", "run", "--config", str(toml)], cwd=self.backend,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
            log.close()
        deadline = time.monotonic() + 60
        for n, p in enumerate(self.procs):
            log = self.backend / f"w{n}.log"
            while "connected" not in log.read_text(errors="replace"):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker w{n} did not start: {log.read_text()[-800:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.broker.stop()


class StoreView:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.db is None:
            if not self.path.exists():
                return []
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise

    def count(self) -> int:
        rows = self.q("SELECT COUNT(*) FROM messages WHERE device != ?", (FLEET,))
        return int(rows[0][0]) if rows else 0

    def appraised_devices(self) -> dict[str, int]:
        rows = self.q("SELECT status, COUNT(DISTINCT device) FROM appraisals "
                      "WHERE status != 'pending' GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}

    def appraised(self) -> int:
        rows = self.q("SELECT COUNT(*) FROM appraisals WHERE status != 'pending'")
        return int(rows[0][0]) if rows else 0

    def pending(self) -> int:
        rows = self.q("SELECT COUNT(*) FROM appraisals WHERE status = 'pending'")
        return int(rows[0][0]) if rows else 0


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def metrics_body() -> dict[str, Any]:
    """One real agent metrics body from this host (collected once, reused by every device)."""
    from edgeward.agent.metrics import MetricsCollector

    body = MetricsCollector().collect()
    body["outbox"] = {"count": 1, "bytes": 600, "dropped": 0, "delivered": 0}
    return body


def herd(fleet: Fleet, view: StoreView, n: int, timeout: float) -> dict[str, Any]:
    say(f"mass reconnect: {n} devices connect at once, every one is challenged")
    t0 = time.monotonic()
    connect_s = fleet.connect_all(say)
    say(f"all {n} connected in {connect_s:.1f} s; waiting for every device's appraisal")
    last = 0.0
    done: dict[str, int] = {}
    while time.monotonic() - t0 < timeout:
        fleet.pump(0.05)
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            fleet.misc()
            done = view.appraised_devices()
            if sum(done.values()) >= n and not view.pending():
                break
            if int(last - t0) % 10 == 0:
                say(f"  appraised devices: {done}, challenges answered {fleet.challenges}")
    took = time.monotonic() - t0
    return {"connect_s": round(connect_s, 1), "attested_s": round(took, 1),
            "appraised_devices": done, "challenges_answered": fleet.challenges,
            "complete": sum(done.values()) >= n, "affirming": done.get("affirming", 0),
            "loadavg": loadavg()}


def hold(fleet: Fleet, n: int, seconds: float, report_every: float,
         attest_every: float) -> dict[str, Any]:
    say(f"hold: {n} devices, a report every {report_every:g} s and an attestation every "
        f"{attest_every:g} s each, for {seconds:g} s")
    t0 = time.time()
    reports = attests = 0
    last_misc = time.monotonic()
    load0 = loadavg()
    while True:
        now = time.time()
        el = now - t0
        if el >= seconds:
            break
        due = int(el * n / report_every)
        while reports < due:
            fleet.report(reports % n)
            reports += 1
        due = int(el * n / attest_every)
        while attests < due:
            fleet.attest_request((attests + n // 2) % n)
            attests += 1
        fleet.pump(0.005)
        if time.monotonic() - last_misc >= 5:
            last_misc = time.monotonic()
            fleet.misc()
            say(f"  {el:.0f} s: {reports} reports, {attests} attestation requests, "
                f"load {loadavg()}")
    return {"start": t0, "end": time.time(), "reports_sent": reports,
            "attest_requests": attests, "offered_reports_per_s": round(n / report_every, 1),
            "loadavg_start": load0, "loadavg_end": loadavg()}


def drain(fleet: Fleet, view: StoreView, timeout: float) -> float:
    """Until the store holds as many messages as were sent (devices still answer challenges
    for attestation requests the workers reach late, so ``sent`` grows meanwhile), every
    evidence has a finished appraisal, and no publish waits for the broker's PUBACK."""
    t0 = time.monotonic()
    last = 0.0
    while time.monotonic() - t0 < timeout:
        fleet.pump(0.02)
        if time.monotonic() - last >= 0.5:
            last = time.monotonic()
            evidence = sum(t == "attest.evidence" for t in fleet.sent.values())
            if (view.count() >= len(fleet.sent) and view.appraised() >= evidence
                    and not view.pending() and not fleet.unacked):
                break
    return round(time.monotonic() - t0, 1)


def malformed_logged(backend: Path) -> int:
    """The workers' 'malformed envelope' warnings (each malformed message refused once)."""
    return sum(log.read_text(errors="replace").count("malformed envelope from ")
               for log in backend.glob("w*.log"))


def account(fleet: Fleet, view: StoreView, h: dict[str, Any]) -> dict[str, Any]:
    # the backend's own fleet events (fleet.contraindicated for each forged evidence, gaps)
    # are stored under the pseudo-device @fleet: counted apart, not as device messages
    fleet_events = view.q("SELECT type, COUNT(*) FROM messages WHERE device = ? GROUP BY type",
                          (FLEET,))
    rows = view.q("SELECT device, seq, type, ts, received FROM messages WHERE device != ?",
                  (FLEET,))
    stored: dict[tuple[str, int], str] = {}
    twice = 0
    for r in rows:
        if (r[0], r[1]) in stored:
            twice += 1
        stored[(r[0], r[1])] = r[2]
    lost = [k for k in fleet.sent if k not in stored]
    extra = [k for k in stored if k not in fleet.sent]
    lat = [r[4] - r[3] for r in rows if r[2] == "metrics" and h["start"] <= r[3] < h["end"]]
    in_hold = [r for r in rows if h["start"] <= r[4] < h["end"]]
    apprs = view.q("SELECT device, evidence_seq, status, at FROM appraisals")
    status = {(a[0], a[1]): a[2] for a in apprs}
    hostile_ev = [k for kind in ("replay_evidence", "forged_evidence")
                  for k in fleet.hostile_sent[kind]]
    accepted = [k for k in hostile_ev if status.get(k) in ("affirming", "pending", None)]
    legit = [status.get(k) for k in fleet.evidence_sent]
    span = h["end"] - h["start"]
    return {
        "sent": len(fleet.sent), "stored": len(stored), "stored_twice": twice,
        "lost": len(lost), "lost_sample": lost[:5], "unexpected": len(extra),
        "hostile_sent": {k: len(v) for k, v in fleet.hostile_sent.items()},
        "hostile_accepted": len(accepted),  # hostile evidence affirming or never appraised
        "legit_evidence": len(legit),
        "legit_affirming": sum(s == "affirming" for s in legit),
        "backend_fleet_events": dict(fleet_events),
        "publish_errors": fleet.publish_errors,
        # of the lost: never PUBACKed by the broker (lost on the device side of the broker)
        "lost_not_acked_by_broker": len(set(lost) & set(fleet.unacked.values())),
        "device_disconnects": fleet.disconnects,
        "reports_per_s": round(sum(r[2] == "metrics" for r in in_hold) / span, 1),
        "messages_per_s": round(len(in_hold) / span, 1),
        "appraisals_per_s": round(sum(h["start"] <= a[3] < h["end"] for a in apprs) / span, 2),
        "latency_s": {"n": len(lat), "p50": round(percentile(lat, 50), 3),
                      "p95": round(percentile(lat, 95), 3), "p99": round(percentile(lat, 99), 3),
                      "max": round(max(lat), 3) if lat else None},
    }


def profile_start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (the dev extra) sampling one worker for the hold, as collapsed stacks."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        say("no py-spy in this venv (pip install -e '.[dev]'): not profiling")
        return None
    return subprocess.Popen([str(spy), "record", "--format", "raw", "--nonblocking", "--idle",
                             "--threads",
                             "--rate", "50", "--duration", str(int(seconds)), "--pid", str(pid),
                             "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def profile_summary(path: Path, pid: int, top: int = 12) -> dict[str, Any]:
    """Share of the worker's main-thread samples in each function (inclusive; idle included:
    ``SimpleQueue.get`` is the loop waiting for a message)."""
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack.startswith(f"thread ({pid})"):
            continue
        total += int(n)
        for fn in {f.split(" (")[0] for f in stack.split(";")}:
            incl[fn] = incl.get(fn, 0) + int(n)
    keys = ["SimpleQueue.get", "VerifierService.handle", "FleetStore._tx",
            "VerifierService.on_evidence", "VerifierService.send_acks", "VerifierService.tick",
            "decode", "Verifier.appraise", "make_ack", "Store.transaction"]
    out = {k: round(incl.get(k, 0) / total, 3) for k in keys if total}
    out["samples"] = total
    out["top"] = sorted(((round(v / total, 3), k) for k, v in incl.items()), reverse=True)[:top] \
        if total else []
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--hold", type=float, default=60.0, help="seconds of steady load")
    ap.add_argument("--report-interval", type=float, default=60.0)
    ap.add_argument("--attest-interval", type=float, default=3600.0)
    ap.add_argument("--hostile", type=float, default=0.02, help="share of reports followed by "
                    "a hostile message")
    ap.add_argument("--herd-timeout", type=float, default=600.0)
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--service", default="", help="extra [service] lines for VERIFIER.toml")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--cache", type=Path, default=fleet_kit.ROOT,
                    help="where the identities are kept, one folder per count")
    ap.add_argument("--profile", type=Path, help="py-spy worker w0 during the hold into this "
                    "file (collapsed stacks); its summary goes into the figures")
    ap.add_argument("--keep", type=Path, help="keep the run's folder (broker, logs, store) here")
    args = ap.parse_args(argv)
    # stopped (SIGTERM): still stop the broker and workers (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = args.devices
    kit = fleet_kit.build(n, say, args.cache)
    run = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    backend = Backend(run, kit, args.workers, args.service.replace("\\n", "\n"))
    result: dict[str, Any] = {"devices": n, "workers": args.workers, "store": "sqlite",
                              "hostile_share": args.hostile, "cpus": os.cpu_count()}
    fleet = None
    try:
        backend.start()
        say(f"mosquitto on 127.0.0.1:{backend.broker.port} (shipped config, {n} devices "
            f"registered), {args.workers} verifier worker(s)")
        view = StoreView(backend.store)
        fleet = Fleet(kit, n, backend.broker.port, str(backend.ca.ca), metrics_body(),
                      hostile=args.hostile)
        result["herd"] = herd(fleet, view, n, args.herd_timeout)
        say(f"fleet attested: {result['herd']}")
        spy = (profile_start(backend.procs[0].pid, args.hold, args.profile)
               if args.profile else None)
        h = hold(fleet, n, args.hold, args.report_interval, args.attest_interval)
        if spy is not None:
            spy.wait(60)
        result["hold"] = h
        result["drain_s"] = drain(fleet, view, args.drain_timeout)
        result["account"] = account(fleet, view, h)
        if spy is not None and args.profile.exists():
            result["profile_w0"] = profile_summary(args.profile, backend.procs[0].pid)
    finally:
        if fleet is not None:
            fleet.close()
        backend.stop()
        if "account" in result:
            result["account"]["malformed_refused"] = malformed_logged(backend.backend)
        logs = fleet_kit.ROOT / "last-run"  # the logs of the last run, whatever happened
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in [*backend.backend.glob("w*.log"), backend.broker.log]:
            if log.exists():
                shutil.copy(log, logs / log.name)
        if args.keep:
            shutil.copytree(run, args.keep, dirs_exist_ok=True)
        shutil.rmtree(run, ignore_errors=True)
    a = result["account"]
    ok = (a["lost"] == 0 and a["stored_twice"] == 0 and a["unexpected"] == 0
          and a["hostile_accepted"] == 0
          and a["malformed_refused"] == a["hostile_sent"]["malformed"])
    result["ok"] = ok
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    say("nothing lost, nothing stored twice, no hostile message accepted" if ok else
        "FAILED: lost, duplicated or accepted hostile messages (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
