"""Attestation benchmark: appraisal throughput vs raw signature verification; evidence time.

Run: ``.venv/bin/python benchmarks/bench_attest.py [--n 2000] [--repeats 5]``

Side by side, in one run and on one core (single thread):

* the raw verification rate of the key type (Ed25519, P-256) over a message the size of an
  evidence token's Sig_structure;
* the appraisal core (:func:`edgeward.attestation.appraisal.appraise`: bounded CBOR/COSE
  decoding, signature, claims, nonce, reference values) with in-memory look-ups;
* the full verifier (:meth:`Verifier.verify`: the core plus signing the EAR and one SQLite
  transaction with ``synchronous=FULL``), which is bounded by fsync on the disk at hand: once
  with one commit per evidence, and once with group commit (:meth:`Store.group`, as the service
  does for the messages it takes together: ``GROUP`` evidence tokens per commit), paired with
  the raw verify rate;
* evidence generation with a software key and with swtpm (when installed).

Prints a Markdown table (medians over repeats, and the ratio to the raw verify rate).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchstats import ratio_line

from edgeward.attestation.appraisal import EnrolledDevice, Policy, appraise
from edgeward.attestation.attester import Attester
from edgeward.attestation.config import VERIFIER_LIMITS, load_attester_config
from edgeward.attestation.enroll import issue_device_cert, make_ca
from edgeward.attestation.measure import load_model_trust, measure
from edgeward.attestation.nonces import Session
from edgeward.attestation.refvalues import ModelRef, RefValues, Release
from edgeward.attestation.service.verifier import Verifier
from edgeward.attestation.service.verifier_store import Store
from edgeward.core import cose, keys
from edgeward.firmware_shim.sim.signer import SoftwareSigner
from edgeward.models.manifest import Manifest, file_entry, sign_manifest

BOARD = "smartlock-pi4"
GROUP = 32  # evidence tokens per group commit in the full-verifier figure
LIMITS = VERIFIER_LIMITS  # the verifier service's bounds


def setup(root: Path, signer, kind: str = "software", tcti: str | None = None):
    (root / "models").mkdir(parents=True)
    content = b"TFL3" + bytes(4096)
    (root / "models" / "m.tflite").write_bytes(content)
    mk = keys.generate()
    m = Manifest(name="lockface", version=3, files=(file_entry("m.tflite", content),),
                 tflite={"ops": [], "inputs": [], "outputs": []}, created=1, key_id=mk.key_id)
    (root / "models" / "m.tflite.ewsig").write_bytes(sign_manifest(m, mk))
    lines = ["[device]", 'name = "lock-0001"', f'board = "{BOARD}"', f'key = "{kind}"',
             'key_file = "k.pem"']
    if tcti:
        lines.append(f'tpm_tcti = "{tcti}"')
    # A snapshot of the installed agent code, so edits elsewhere do not change the digest
    # between generating evidence and appraising it; the same files, the same amount of work.
    from edgeward.attestation.measure import device_code_files, installed_parts

    for rel, src in device_code_files(installed_parts()):
        (root / "code" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / "code" / rel)
    lines += ["[attestation]", 'state_dir = "state"', 'models = ["models/m.tflite"]',
              'agent_root = "code"']
    (root / "agent.toml").write_text("\n".join(lines) + "\n")
    cfg = load_attester_config(root / "agent.toml")
    att = Attester(cfg, signer, [])
    meas = measure(cfg.source, cfg.models, agent_root=cfg.agent_root,
                   trust=load_model_trust(cfg.model_trust))
    rv = RefValues(BOARD, 1, "0.1.0",
                   (Release("0.1.0", frozenset({meas.agent_code}),
                            frozenset({meas.agent_config})),),
                   tuple(ModelRef(x.name, x.version, frozenset(d for _p, d in x.files))
                         for x in meas.models))
    return att, rv


def median_rate(fn, n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def paired_rates(fa, fb, n: int, repeats: int) -> tuple[list[float], list[float]]:
    """Rates of fa and fb run alternately, so each pair sees the same machine load."""
    ra, rb = [], []
    for _ in range(repeats):
        for fn, out in ((fa, ra), (fb, rb)):
            t0 = time.perf_counter()
            fn(n)
            out.append(n / (time.perf_counter() - t0))
    return ra, rb


def bench_alg(alg: str, n: int, repeats: int, tmp: Path,
              ratios: list[str]) -> list[tuple[str, float, float]]:
    signer = SoftwareSigner(keys.generate(alg))
    att, rv = setup(tmp / alg, signer)
    issued = time.time()
    nonces = [hashlib.sha256(b"%d" % i).digest() for i in range(n)]
    tokens = [att.evidence(x) for x in nonces]
    # the appraisal's clock after the tokens exist: on a loaded machine making them takes
    # longer than the 30 s of clock skew allowed, and the first would read as from the future
    now = time.time()
    dev = EnrolledDevice("lock-0001", signer.public, "x509", None)
    sessions = {x: Session(x, "lock-0001", issued, now + 60) for x in nonces}

    # raw verify over the same Sig_structure as the first token
    msg = cose.decode_sign1(tokens[0], limits=LIMITS)
    from edgeward.core import cbor

    sig_struct = cbor.dumps(["Signature1", msg.protected_bytes, b"", msg.payload])
    sig = signer.sign(sig_struct)
    pub = signer.public

    def raw(k: int) -> None:
        for _ in range(k):
            pub.verify(sig_struct, sig)

    def core(k: int) -> None:
        for i in range(k):
            v = appraise(tokens[i], devices=lambda kid: dev, sessions=sessions.get,
                         refvalues={BOARD: rv}, now=now, limits=LIMITS,
                         policy=Policy(software_keys="affirming"))
            assert v.ear.affirming, v.ear.reasons

    raws, cores = paired_rates(raw, core, n, repeats)
    raw_rate, core_rate = statistics.median(raws), statistics.median(cores)
    ratios.append(ratio_line(f"appraisal_core_{alg}", [c / r for c, r in zip(cores, raws,
                                                                            strict=True)]))

    # full verifier: challenge + EAR signature + SQLite transaction per evidence
    store = Store(tmp / alg / "v.sqlite")
    ca_key = keys.generate("p256")
    ca = make_ca(ca_key, "CA", now=now)
    cert = issue_device_cert(ca_key, ca, signer.public, "lock-0001", now=now)
    ver = Verifier(store=store, ear_key=keys.generate(alg), maker_cas=[ca],
                   refvalues={BOARD: rv}, limits=LIMITS,
                   policy=Policy(software_keys="affirming"))
    ver.enroll([cert])
    m = max(n // 8, 50)

    def tokens(k: int):  # fresh challenges for each timed run: a nonce lives 60 s
        return iter([att.evidence(ver.challenge("lock-0001")) for _ in range(k)])

    def full(toks) -> None:
        for tok in toks:
            assert ver.verify(tok).ear.affirming

    def grouped(toks) -> None:
        batch = list(toks)
        for start in range(0, len(batch), GROUP):
            with store.group():
                for tok in batch[start : start + GROUP]:
                    assert ver.verify(tok).ear.affirming

    fulls, raws2, groups = [], [], []
    for _ in range(repeats):  # one commit each, then raw and group commit paired
        toks = tokens(m)
        t0 = time.perf_counter()
        full(toks)
        fulls.append(m / (time.perf_counter() - t0))
        toks = tokens(m)
        t0 = time.perf_counter()
        raw(m)
        t1 = time.perf_counter()
        grouped(toks)
        t2 = time.perf_counter()
        raws2.append(m / (t1 - t0))
        groups.append(m / (t2 - t1))
    full_rate, group_rate = statistics.median(fulls), statistics.median(groups)
    if alg == "ed25519":
        ratios.append(ratio_line("verifier_store_ed25519",
                                 [g / r for g, r in zip(groups, raws2, strict=True)]))
    ver.close()
    name = "Ed25519" if alg == "ed25519" else "P-256"
    return [
        (f"raw {name} signature verify (/s)", raw_rate, 1.0),
        (f"appraisal core, {name} evidence (/s)", core_rate, core_rate / raw_rate),
        (f"full verifier incl. EAR + SQLite, one commit each, {name} (/s)", full_rate,
         full_rate / raw_rate),
        (f"full verifier incl. EAR + SQLite, group commit of {GROUP}, {name} (/s)", group_rate,
         group_rate / statistics.median(raws2)),
    ]


def gen_time(att: Attester, repeats: int) -> float:
    att.evidence(b"warm-up-nonce-00")
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        att.evidence(hashlib.sha256(b"g%d" % i).digest())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def start_swtpm(state: Path):
    if shutil.which("swtpm") is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--tpmstate",
         f"dir={state}", "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"swtpm:host=127.0.0.1,port={port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows: list[tuple[str, float, float | None]] = []
    ratios: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for alg in ("ed25519", "p256"):
            rows.extend(bench_alg(alg, args.n, args.repeats, tmp, ratios))
        soft = SoftwareSigner(keys.generate("p256"))
        att, _ = setup(tmp / "gen-soft", soft)
        rows.append(("evidence generation, software P-256 key (ms)", gen_time(att, 20), None))
        state = tmp / "tpmstate"
        state.mkdir()
        proc, tcti = start_swtpm(state)
        if proc is not None and tcti is not None:
            try:
                from edgeward.firmware_shim.linux.tpm import TpmSigner

                with TpmSigner(tcti) as tpm:
                    att, _ = setup(tmp / "gen-tpm", tpm, "tpm", tcti)
                    rows.append(("evidence generation, swtpm AK + PCRs + quote (ms)",
                                 gen_time(att, 20), None))
            finally:
                proc.terminate()
                proc.wait()
    print("| measurement | median | ratio to raw verify |")
    print("|---|---:|---:|")
    for name, value, ratio in rows:
        r = f"{ratio:.2f}" if ratio is not None else ""
        print(f"| {name} | {value:,.1f} | {r} |")
    print(f"\n_{sys.platform}, Python {sys.version.split()[0]}, one thread, n={args.n}, "
          f"repeats={args.repeats} (raw verify and appraisal core alternate); agent code "
          f"measured on every evidence._")
    print("\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
