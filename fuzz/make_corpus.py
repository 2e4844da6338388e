"""Make the seed corpora under fuzz/corpus/<target>/ from real files made by project code.

    .venv/bin/python fuzz/make_corpus.py            # all targets
    .venv/bin/python fuzz/make_corpus.py tflite cbor

Seeds: the reference models of :mod:`edgeward.models.refmodels` and a small dense model;
manifests signed for them (the fixed vendor key); evidence from the real attester with a software
key (the fixed device key, clock and nonce of :mod:`_world`) and the EAR the verifier signs for
it; a real TPM2_Quote from swtpm when it is installed (else a TPMS_ATTEST marshalled here per
TPM 2.0 Part 2 §10.12.12); envelopes, acks, commands and local-socket frames from their encoders;
the TOML examples in deploy/ and docs/ATTESTATION.md. Byte 0 of a seed is the target's mode byte
where the target has modes (see each target's docstring).

It also writes fuzz/world/refvalues.ewref (the reference values that match the evidence).
Writing is deterministic where the inputs are (no timestamps); re-running replaces the seeds.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _world
from _common import CORPUS_DIR
from _keys import fixed_key

REPO = Path(__file__).resolve().parents[1]


def _save(target: str, seeds: list[bytes]) -> None:
    out = CORPUS_DIR / target
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for s in dict.fromkeys(seeds):  # dedupe, keep order
        (out / hashlib.sha256(s).hexdigest()[:40]).write_bytes(s)
    total = sum(len(s) for s in seeds)
    print(f"{target}: {len(set(seeds))} seeds, {total} bytes")


def _models() -> dict[str, bytes]:
    from edgeward.models.refmodels import build_examples, dense_model_of_size

    models = build_examples()
    models["dense_4k.tflite"] = dense_model_of_size(4096)
    return models


_MODELS: dict[str, bytes] = {}


def models() -> dict[str, bytes]:
    if not _MODELS:
        _MODELS.update(_models())
    return _MODELS


def manifests() -> list[tuple[bytes, bytes]]:
    """(payload, .ewsig) for each reference model, signed with the fixed vendor key."""
    from edgeward.models.manifest import Manifest, encode_manifest, file_entry, sign_manifest
    from edgeward.models.tflite.validate import validate

    vendor = fixed_key("vendor", "ed25519")
    out = []
    for i, (name, data) in enumerate(sorted(models().items())):
        summary = validate(data)
        tfl = summary.to_manifest() if hasattr(summary, "to_manifest") else {
            "ops": [], "inputs": [], "outputs": []}
        m = Manifest(name=name.removesuffix(".tflite").replace("_", "-"), version=i + 1,
                     files=(file_entry(name, data),), tflite=tfl, created=1_700_000_000,
                     key_id=vendor.key_id)
        out.append((encode_manifest(m), sign_manifest(m, vendor)))
    return out


def evidence_world() -> dict[str, bytes]:
    """Real evidence from the attester (software key), its claims and the verifier's EAR."""
    from edgeward.attestation.attester import Attester
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.measure import load_model_trust, measure
    from edgeward.attestation.refvalues import ModelRef, RefValues, Release, sign_refvalues
    from edgeward.core import cose
    from edgeward.core.keys import write_keypair
    from edgeward.firmware_shim.sim.signer import SoftwareSigner
    from edgeward.models.manifest import Manifest, file_entry, sign_manifest

    w = _world.world()
    vendor = w.vendor
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        data = models()["digits_mlp.tflite"]
        (root / "models" / "lockface.tflite").write_bytes(data)
        m = Manifest(name="lockface", version=3, files=(file_entry("lockface.tflite", data),),
                     tflite={"ops": [], "inputs": [], "outputs": []}, created=1,
                     key_id=vendor.key_id)
        (root / "models" / "lockface.tflite.ewsig").write_bytes(sign_manifest(m, vendor))
        (root / "code" / "pkg").mkdir(parents=True)
        (root / "code" / "main.py").write_text("print('edgeward agent')\n")
        (root / "code" / "pkg" / "util.py").write_text("X = 1\n")
        (root / "agent.toml").write_text(
            "[device]\n"
            f'name = "{_world.DEVICE}"\nboard = "{_world.BOARD}"\nhwversion = "rev-b"\n'
            'key = "software"\nkey_file = "device/private.pem"\n\n'
            '[attestation]\nstate_dir = "state"\n'
            'models = ["models/lockface.tflite"]\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n'
            'dbgstat = "disabled"\nagent_root = "code"\n'
        )
        write_keypair(root / "device", w.device)
        cfg = load_attester_config(root / "agent.toml")
        att = Attester(cfg, SoftwareSigner(w.device), [w.cert_der], lambda: _world.NOW)
        evidence = att.evidence(_world.NONCE)
        mm = measure(cfg.source, cfg.models, agent_root=cfg.agent_root,
                     trust=load_model_trust(cfg.model_trust))
    rv = RefValues(
        board=_world.BOARD, issued=1, min_swversion="0.1.0",
        releases=(Release("0.1.0", frozenset({mm.agent_code}), frozenset({mm.agent_config})),),
        models=tuple(ModelRef(x.name, x.version, frozenset(d for _p, d in x.files))
                     for x in mm.models),
    )
    _world.WORLD_DIR.mkdir(exist_ok=True)
    _world.REFVALUES.write_bytes(sign_refvalues(rv, vendor))
    payload = cose.decode_sign1(evidence).payload
    return {"evidence": evidence, "claims": payload}


def verified_ear(evidence: bytes) -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fuzz_evidence import setup  # noqa: F401  (same world)

    from edgeward.attestation.appraisal import Policy
    from edgeward.attestation.nonces import NoncePolicy, Session
    from edgeward.attestation.refvalues import open_refvalues
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.service.verifier_store import Store

    w = _world.world()
    rv = open_refvalues(_world.REFVALUES.read_bytes(), w.vendor.public)
    store = Store(":memory:")
    store.put_session(Session(_world.NONCE, _world.DEVICE, _world.NOW - 1, _world.NOW + 59))
    v = Verifier(store=store, ear_key=w.ear_key, maker_cas=[w.ca_cert], refvalues={rv.board: rv},
                 policy=Policy(software_keys="affirming"),
                 nonces=NoncePolicy(ttl=60), clock=lambda: _world.NOW)
    try:
        res = v.verify(evidence)
    finally:
        v.close()
    print(f"evidence seed appraised: {res.ear.status_name}")
    return res.signed


def tpm_quotes() -> list[bytes]:
    """A real TPMS_ATTEST from swtpm if it runs here, and one marshalled by hand."""
    from fuzz_tpm_quote import NONCE

    from edgeward.attestation.tpm_quote import (
        TPM_ALG_SHA256,
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_QUOTE,
        qualifying_data,
    )

    pcrs = {i: bytes([i]) * 32 for i in range(8)}
    digest = hashlib.sha256(b"".join(pcrs[i] for i in range(8))).digest()
    extra = qualifying_data(NONCE)
    by_hand = (struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
               + struct.pack(">H", 34) + b"\x00\x0b" + b"\x5a" * 32
               + struct.pack(">H", len(extra)) + extra
               + struct.pack(">QIIB", 123456, 1, 0, 1) + struct.pack(">Q", 0x2019_0001)
               + struct.pack(">IHB", 1, TPM_ALG_SHA256, 3) + b"\xff\x00\x00"
               + struct.pack(">H", 32) + digest)
    out = [by_hand]
    try:
        from edgeward.firmware_shim.linux.tpm import TpmSigner
        from edgeward.firmware_shim.sim.swtpm import start_swtpm, swtpm_binary

        if swtpm_binary() is not None:
            with tempfile.TemporaryDirectory() as tmp, start_swtpm(Path(tmp) / "st") as tpm, \
                    TpmSigner(tpm.tcti) as signer:
                q = signer.quote(qualifying_data(NONCE), range(8))
                out.append(q.attest)
                q = signer.quote(qualifying_data(NONCE), [0, 7])
                out.append(q.attest)
                print("tpm_quote: real quotes from swtpm")
    except Exception as e:
        print(f"tpm_quote: no swtpm quote ({type(e).__name__}: {e}); hand-made seed only")
    return out


def envelopes() -> list[bytes]:
    from edgeward.agent import envelope as env

    out = []
    for i, (typ, body) in enumerate([
        ("status", {"online": True, "uptime": 12}),
        ("report", {"cpu": 12.5, "mem": 40.0, "procs": 120, "net": {"tx": 1, "rx": 2}}),
        ("model.rejected", {"model": "lockface", "reason": "signature does not verify"}),
        ("guard.anomaly", {"score": 0.93, "critical": True, "labels": [1, 2, 3]}),
        ("attest.request", {}),
    ]):
        out.append(env.encode(env.Envelope(seq=i + 1, ts=1_700_000_000.5 + i, device="lock-0001",
                                           type=typ, body=body)))
    return out


def frames(events: list[dict]) -> list[bytes]:
    from edgeward.core.frames import encode_frame

    one = [encode_frame(e) for e in events]
    return [*one, b"".join(one), one[0][:3] + one[1]]


def toml_examples() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((REPO / "deploy").glob("*.toml.example"))]
    out += [p.read_bytes() for p in sorted((REPO / "boards" / "data").glob("*.toml"))[:2]]
    doc = (REPO / "docs" / "ATTESTATION.md").read_text(encoding="utf-8")
    out += [m.group(1).encode() for m in re.finditer(r"```toml\n(.*?)```", doc, re.S)]
    out.append(b'[service]\nworker = "w1"\n\n[mqtt]\nhost = "127.0.0.1"\nport = 1883\n')
    return out


def main(only: list[str]) -> None:
    from edgeward.agent.commands import make_command
    from edgeward.agent.e2eack import make_ack
    from edgeward.core import cbor, cose

    backend = fixed_key("backend-commands", "ed25519")
    makers: dict[str, Callable[[], list[bytes]]] = {}

    def target(name: str) -> Callable[[Callable[[], list[bytes]]], None]:
        def deco(fn: Callable[[], list[bytes]]) -> None:
            makers[name] = fn
        return deco

    ev: dict[str, bytes] = {}

    def evidence() -> dict[str, bytes]:
        if not ev:
            ev.update(evidence_world())
            ev["ear"] = verified_ear(ev["evidence"])
        return ev

    def commands_signed() -> list[bytes]:
        return [make_command(backend, "lock-0001", 6 + i, op, args, now=1_800_000_000.0)
                for i, (op, args) in enumerate([("attest", {}), ("reverify", {}),
                                                 ("set_interval", {"seconds": 30})])]

    @target("tflite")
    def _tflite() -> list[bytes]:
        return list(models().values())

    @target("litert")
    def _litert() -> list[bytes]:
        return list(models().values())

    @target("manifest")
    def _manifest() -> list[bytes]:
        out = []
        for payload, sig in manifests():
            out += [b"\x00" + sig, b"\x01" + payload, b"\x02" + payload]
        return out

    @target("cose")
    def _cose() -> list[bytes]:
        ed, p256 = fixed_key("cose-ed25519", "ed25519"), fixed_key("cose-p256", "p256")
        out = [sig for _p, sig in manifests()[:1]]
        out.append(cose.sign1(b"hello", ed, content_type=0))
        out.append(cose.sign1(b"hello", p256, external_aad=b"edgeward",
                              unprotected={33: b"\x30\x00"}, tagged=False))
        return out

    @target("evidence")
    def _evidence() -> list[bytes]:
        e = evidence()
        return [b"\x00" + e["evidence"], b"\x01" + e["claims"], b"\x02" + e["claims"]]

    @target("tpm_quote")
    def _tpm() -> list[bytes]:
        return [bytes([m]) + q for q in tpm_quotes() for m in (0, 1, 2)]

    @target("envelope")
    def _envelope() -> list[bytes]:
        out = [b"\x00" + e for e in envelopes()]
        out += [b"\x01edgeward/v1/lock-0001/" + k.encode() for k in
                ("status", "attest/evidence", "cmd")]
        out += [b"\x02" + cbor.dumps({"nonce": bytes(range(32))})]
        return out

    @target("e2eack")
    def _ack() -> list[bytes]:
        ack = make_ack(backend, "lock-0001", 41, now=1_800_000_000.0)
        ear = evidence()["ear"]
        return [b"\x00" + ack, b"\x01" + cose.decode_sign1(ack).payload,
                b"\x02" + ear, b"\x03" + cose.decode_sign1(ear).payload]

    @target("commands")
    def _commands() -> list[bytes]:
        signed = commands_signed()
        return [b"\x00" + s for s in signed] + [b"\x01" + cose.decode_sign1(s).payload
                                                for s in signed]

    @target("frames")
    def _frames() -> list[bytes]:
        events = [{"type": "guard.anomaly", "ts": 1.5, "body": {"score": 0.9}},
                  {"type": "model.loaded", "ts": 2, "body": {"model": "lockface"}},
                  {"type": "hello", "body": {}}]
        return [bytes([k]) + f for f in frames(events) for k in (0, 3)]

    @target("toml")
    def _toml() -> list[bytes]:
        return toml_examples()

    @target("cbor")
    def _cbor() -> list[bytes]:
        e = evidence()
        items = [e["claims"], *envelopes(), manifests()[0][0],
                 cose.decode_sign1(commands_signed()[2]).payload,
                 cbor.dumps([1.5, -2, b"x", "y", None, True, {"a": [{}]}, 2**64 - 1, -(2**64)])]
        return [bytes([m]) + x for x in items for m in (0, 1)] + [b"\x02" + e["evidence"]]

    for name, fn in makers.items():
        if not only or name in only:
            _save(name, fn())


if __name__ == "__main__":
    main(sys.argv[1:])
