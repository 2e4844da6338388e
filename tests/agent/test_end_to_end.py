"""End to end: agent + Mosquitto + verifier service + attestation; a model tampered on disk.

The agent (real config, real attester with a software key, real model watch) talks over TLS to
a real broker; the verifier service appraises with the attestation part's Verifier. Replacing
the model's bytes on disk must produce a ``model.rejected`` event and a non-affirming
(contraindicated) attestation result at the backend.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from agent_helpers import service_cfg, start, write_agent_config
from fixtures_mqtt import Mosquitto, TestCA

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeward.models.refmodels import write_examples

    out = tmp_path_factory.mktemp("examples")
    write_examples(out)
    return out


def test_tampered_model_is_reported_and_attestation_turns_contraindicated(
    mosquitto: Mosquitto, test_ca: TestCA, tmp_path: Path, example_models: Path
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config
    from edgeward.attestation.appraisal import Policy
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.enroll import issue_device_cert, make_ca
    from edgeward.attestation.measure import load_model_trust, measure
    from edgeward.attestation.nonces import NoncePolicy
    from edgeward.attestation.refvalues import ModelRef, RefValues, Release
    from edgeward.attestation.service.appraise import AttestationAppraiser
    from edgeward.attestation.service.service import VerifierService
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.service.verifier_store import Store
    from edgeward.core import keys
    from edgeward.core.persist import write_atomic
    from edgeward.models.integrity import default_sig_path, sign_model

    dev = "lock-0001"
    board = "smartlock-pi4"
    # --- the device's files: a signed model, its evidence key and maker certificate -------
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "digits_mlp.tflite"
    shutil.copy(example_models / "digits_mlp.tflite", model)
    vendor = keys.generate("ed25519")
    sig, _ = sign_model(model, vendor, name="digits_mlp", version=1)
    write_atomic(default_sig_path(model), sig)
    keys.write_keypair(tmp_path / "vendor", vendor)
    dkey = keys.generate("ed25519")
    keys.write_keypair(tmp_path / "device", dkey)
    ca_key = keys.generate("p256")
    ca_cert = make_ca(ca_key, "Acme Locks Device CA", now=time.time())
    cert = issue_device_cert(ca_key, ca_cert, dkey.public, dev, now=time.time())
    (tmp_path / "device" / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('agent')\n")
    extra = """
[attestation]
state_dir = "state-att"
models = ["models/digits_mlp.tflite"]
agent_root = "code"
dbgstat = "disabled"

[models]
trust = "vendor/public.pem"
check_interval = 0.2

[[models.model]]
path = "models/digits_mlp.tflite"
name = "digits_mlp"
"""
    cfg_path = write_agent_config(tmp_path / "agent.toml", mosquitto, test_ca, dev,
                                  interval=30, extra=extra)
    text = cfg_path.read_text().replace(
        f'[device]\nname = "{dev}"',
        f'[device]\nname = "{dev}"\nboard = "{board}"\nkey = "software"\n'
        'key_file = "device/private.pem"\ncert_file = "device/cert.pem"')
    cfg_path.write_text(text)

    # --- the verifier: maker CA, reference values measured from the good device --------------
    acfg = load_attester_config(cfg_path)
    m = measure(acfg.source, acfg.models, agent_root=acfg.agent_root,
                trust=load_model_trust(acfg.model_trust))
    rv = RefValues(
        board=board, issued=1, min_swversion="0.1.0",
        releases=(Release("0.1.0", frozenset({m.agent_code}), frozenset({m.agent_config})),),
        models=tuple(ModelRef(mm.name, mm.version, frozenset(d for _p, d in mm.files))
                     for mm in m.models),
    )
    verifier = Verifier(store=Store(tmp_path / "verifier.sqlite"), ear_key=keys.generate("ed25519"),
                        maker_cas=[ca_cert], refvalues={board: rv},
                        policy=Policy(software_keys="affirming"),
                        nonces=NoncePolicy(ttl=60))
    svc = VerifierService(service_cfg(mosquitto, test_ca, tmp_path, "w0"),
                          appraiser=AttestationAppraiser(verifier))
    sth = start(svc)

    agent = build_agent(load_agent_config(cfg_path))
    assert agent.attester is not None and agent.watch is not None
    ath = threading.Thread(target=agent.run, kwargs={"install_signals": False}, daemon=True)
    ath.start()
    try:
        def statuses() -> list[str]:
            return [r[2] for r in svc.store.appraisals(dev) if r[2] != "pending"]

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not statuses():
            time.sleep(0.1)
        assert statuses() == ["affirming"], svc.store.appraisals(dev)
        assert [b["ok"] for _, _, b in svc.store.messages(dev, "model.verified")] == [True]

        # --- attack: the model's bytes are replaced on disk -------------------------------
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and len(statuses()) < 2:
            time.sleep(0.1)
        rejected = svc.store.messages(dev, "model.rejected")
        assert rejected and rejected[0][2]["error"] == "DigestMismatchError"
        # A released model whose bytes match none of its released digests: AR4SI file-system
        # 96 "contraindicated files", and the EAR must say which model.
        assert statuses()[1] == "contraindicated", svc.store.appraisals(dev)
        from edgeward.attestation.ear import decode_ear

        row = svc.store.appraisal_history(dev, 1)[0][3]  # the newest appraisal's EAR
        assert row is not None
        ear = decode_ear(row, verifier.public_key)
        assert ear.vector.file_system == 96 and any("digits_mlp" in r for r in ear.reasons)
        g = svc.store.gaps(dev)
        assert g.unexplained == ()
    finally:
        agent.request_stop()
        ath.join(10)
        svc.request_stop()
        sth.join(10)
        verifier.close()
