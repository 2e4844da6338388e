"""``edgeward demo``, after the models and the guard: remote attestation and the fleet over MQTT.

Remote attestation with the library API (RATS roles on one machine): the vendor signs reference
values for a board, a maker CA endorses a device's evidence key, the verifier challenges the
device and answers its evidence with a signed EAR, which a relying party checks offline; then a
replayed evidence and a model tampered on disk, which must not be affirmed. With swtpm installed,
the same with the evidence key in a TPM, a quote over the PCRs and the hardware claim.

The fleet: a real Mosquitto on loopback with TLS client certificates and the shipped
``deploy/mosquitto.conf``, ``deploy/dynamic-security.json`` and ``deploy/acl``, the verifier
service and the device agent, each from its own TOML file. The agent comes online, reports
without gaps and is attested affirming; a model replaced on disk is reported
(``model.rejected``) and the next attestation is contraindicated. Everything is stopped at the
end, and the fleet store is summarised.
Everything runs on 127.0.0.1, on free ports, under ``out``; processes are always stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeward.simulator.steps import DemoFailed, expect_rejection, info, ok, step, wait

T = TypeVar("T")
BOARD = "smartlock-pi4"
TPM_BOARD = "gateway-pi5"
MODELS = ("digits_mlp", "digits_cnn", "digits_mlp_int8")


def _vector(ear: Any) -> str:
    return ", ".join(f"{name} {v}" for name, v in ear.vector.items() if v)


def _start(stack: contextlib.ExitStack, name: str, run: Callable[[], object],
           stop: Callable[[], object]) -> threading.Thread:
    """Run ``run`` in a thread; on leaving ``stack``, ``stop`` it and wait for it."""
    th = threading.Thread(target=run, name=name, daemon=True)
    th.start()

    def halt() -> None:
        stop()
        th.join(15)
        if th.is_alive():
            raise DemoFailed(f"the {name} did not stop")

    stack.callback(halt)
    return th


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@dataclass
class Vendor:
    """What the vendor and the device maker hold: signing keys, the maker CA."""

    out: Path
    key: Any  # the vendor key of step 1: signs models and reference values
    ca_key: Any
    ca_cert: Any
    ca_path: Path

    @classmethod
    def create(cls, out: Path) -> Vendor:
        from cryptography.hazmat.primitives.serialization import Encoding

        from edgeward.attestation.enroll import make_ca
        from edgeward.core import keys

        ca_key = keys.generate("p256")
        ca_cert = make_ca(ca_key, "Acme Locks Device CA", now=time.time())
        ca_path = out / "maker-ca" / "ca.pem"
        ca_path.parent.mkdir(parents=True)
        ca_path.write_bytes(ca_cert.public_bytes(Encoding.PEM))
        return cls(out, keys.load_signing_key(out / "keys" / "private.pem"), ca_key, ca_cert,
                   ca_path)

    def device(self, folder: Path, name: str, public: Any, *, tpm: bool = False) -> None:
        """Install a device image: the signed models, and the maker's certificate over its key."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from edgeward.attestation.enroll import issue_device_cert

        shutil.copytree(self.out / "models", folder / "models")
        (folder / "device").mkdir(parents=True, exist_ok=True)
        cert = issue_device_cert(self.ca_key, self.ca_cert, public, name, now=time.time(),
                                 tpm=tpm)
        (folder / "device" / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))

    def refvalues(self, cfg: Any, *, board: str, pcrs: dict[int, bytes] | None = None) -> Any:
        """Measure the golden device and return the board's reference values, signed and opened."""
        from edgeward.attestation import refvalues as R
        from edgeward.attestation.measure import load_model_trust, measure

        m = measure(cfg.source, cfg.models, agent_root=cfg.agent_root, model_sigs=cfg.model_sigs,
                    trust=load_model_trust(cfg.model_trust))
        rv = R.RefValues(
            board=board, issued=int(time.time()), min_swversion="0.1.0",
            releases=(R.Release("0.1.0", frozenset({m.agent_code}), frozenset({m.agent_config})),),
            models=tuple(R.ModelRef(mm.name, mm.version, frozenset(d for _p, d in mm.files))
                         for mm in m.models),
            pcrs=pcrs, require_tpm=pcrs is not None,
        )
        signed = R.sign_refvalues(rv, self.key)
        return signed, R.open_refvalues(signed, self.key.public)


def _agent_toml(folder: Path, name: str, *, board: str, key: str, tcti: str | None = None,
                extra: str = "", model_trust: Path | None = None) -> Path:
    dev = [f'name = "{name}"', f'board = "{board}"', 'hwversion = "rev-b"', f'key = "{key}"',
           'cert_file = "device/cert.pem"']
    dev.append(f'tpm_tcti = "{tcti}"' if tcti else 'key_file = "device/private.pem"')
    models = ", ".join(f'"models/{m}.tflite"' for m in MODELS)
    text = ("[device]\n" + "\n".join(dev) + "\n\n[attestation]\n"
            'state_dir = "state"\ndbgstat = "disabled-permanently"\n'
            + (f"models = [{models}]\n" if not extra else "") + extra)
    if model_trust is not None:  # the manifests the measurement names must verify
        text += f'\n[models]\ntrust = "{model_trust}"\n'

    path = folder / "agent.toml"
    path.write_text(text)
    return path


def _verifier(path: Path, vendor: Vendor, refvalues: dict[str, Any]) -> Any:
    from edgeward.attestation.appraisal import Policy
    from edgeward.attestation.nonces import NoncePolicy
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.service.verifier_store import Store
    from edgeward.core import keys

    return Verifier(store=Store(path), ear_key=keys.generate("ed25519"),
                    maker_cas=[vendor.ca_cert], refvalues=refvalues,
                    policy=Policy(software_keys="affirming", policy_id="acme-locks/2026-1"),
                    nonces=NoncePolicy(ttl=60))


def run_attestation(out: Path, n: int, vendor: Vendor) -> None:
    from edgeward.attestation.attester import Attester
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.ear import check_ear
    from edgeward.core import keys

    step(n, "Remote attestation (RATS): challenge, evidence, EAR, a relying party, attacks")
    folder = out / "attest" / "lock-0001"
    dkey = keys.generate("ed25519")
    keys.write_keypair(folder / "device", dkey)
    vendor.device(folder, "lock-0001", dkey.public)
    cfg = load_attester_config(_agent_toml(folder, "lock-0001", board=BOARD, key="software",
                                                model_trust=vendor.out / "keys" / "public.pem"))
    signed_rv, rv = vendor.refvalues(cfg, board=BOARD)
    ok(f"maker CA '{vendor.ca_cert.subject.rfc4514_string()}' endorsed lock-0001's Ed25519 "
        f"key; vendor-signed reference values for {BOARD} ({len(signed_rv)} bytes): agent "
        f"0.1.0, " + ", ".join(f"{m.name} v{m.min_version}" for m in rv.models))
    verifier = _verifier(out / "attest" / "verifier.sqlite", vendor, {BOARD: rv})
    attester = Attester.from_config(cfg)
    with contextlib.closing(verifier), contextlib.closing(attester):
        nonce = verifier.challenge("lock-0001")
        evidence = attester.evidence(nonce)
        ok(f"challenge: {len(nonce)}-byte nonce -> evidence: {len(evidence)}-byte EAT in "
            f"COSE_Sign1, {attester.signer.kind} key ({attester.signer.alg}), maker certificate "
            f"in x5chain, {len(cfg.models)} models measured")
        result = verifier.verify(evidence)
        if not result.ear.affirming:
            raise DemoFailed(f"genuine evidence was {result.ear.status_name}: {result.ear.reasons}")
        ok(f"EAR {result.ear.status_name} ({len(result.signed)} bytes, signed by the verifier); "
            f"AR4SI: {_vector(result.ear)}; hardware: no claim (software key)")
        ear = check_ear(result.signed, verifier.public_key, now=time.time(), max_age=300)
        ok(f"relying party (the lock app), offline with the verifier's public key only: "
            f"signature good, fresh, {ear.status_name} for {ear.device}")
        forged = bytearray(result.signed)
        forged[-10] ^= 0x01
        expect_rejection("an EAR altered in transit", lambda: check_ear(
            bytes(forged), verifier.public_key, now=time.time(), max_age=300))
        again = verifier.verify(evidence)
        if again.ear.affirming or not any("replay" in r for r in again.ear.reasons):
            raise DemoFailed(f"replayed evidence was not refused: {again.ear.reasons}")
        ok(f"the same evidence sent again: {again.ear.status_name} "
            f"(instance-identity {again.ear.vector.instance_identity}): {again.ear.reasons[0]}")
        _flip_byte(folder / "models" / "digits_cnn.tflite")
        info("one byte of lock-0001's models/digits_cnn.tflite changed on disk")
        bad = verifier.verify(attester.evidence(verifier.challenge("lock-0001")))
        if bad.ear.status_name != "contraindicated":
            raise DemoFailed(f"tampered model gave {bad.ear.status_name}: {bad.ear.reasons}")
        why = [r for r in bad.ear.reasons if "digits_cnn" in r]
        ok(f"EAR {bad.ear.status_name} (file-system {bad.ear.vector.file_system}): "
            + (why[0] if why else "; ".join(bad.ear.reasons)))


def run_tpm(out: Path, n: int, vendor: Vendor) -> None:
    import hashlib

    from edgeward.attestation.attester import Attester, load_cert_chain
    from edgeward.attestation.config import load_attester_config
    from edgeward.firmware_shim.sim.swtpm import start_swtpm, swtpm_binary

    step(n, "Remote attestation with a TPM 2.0 (swtpm): key in the TPM, a quote over the PCRs")
    if swtpm_binary() is None or importlib.util.find_spec("tpm2_pytss") is None:
        info("skipped: swtpm or tpm2-pytss is not installed (make demo installs them)")
        return
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    folder = out / "attest" / "gw-0001"
    with contextlib.ExitStack() as stack:  # closed in reverse: verifier, TPM session, swtpm
        try:
            tpm = stack.enter_context(start_swtpm(folder / "swtpm-state"))
        except RuntimeError as e:
            raise DemoFailed(f"swtpm did not start: {e}") from e
        signer = stack.enter_context(TpmSigner(tpm.tcti))
        signer.extend_pcr(7, hashlib.sha256(b"secure boot: enabled").digest())
        vendor.device(folder, "gw-0001", signer.public, tpm=True)
        cfg = load_attester_config(
            _agent_toml(folder, "gw-0001", board=TPM_BOARD, key="tpm", tcti=tpm.tcti,
                        model_trust=vendor.out / "keys" / "public.pem"))
        ok(f"swtpm on 127.0.0.1:{tpm.port}; attestation key (restricted P-256) made in the "
            "TPM, endorsed by the maker CA as TPM-resident; firmware measured into PCR 7")
        _, rv = vendor.refvalues(cfg, board=TPM_BOARD, pcrs=signer.read_pcrs(cfg.pcrs))
        verifier = _verifier(folder / "verifier.sqlite", vendor, {TPM_BOARD: rv})
        stack.callback(verifier.close)
        attester = Attester(cfg, signer, load_cert_chain(cfg.cert_file))
        evidence = attester.evidence(verifier.challenge("gw-0001"))
        ok(f"evidence: {len(evidence)} bytes, {signer.kind} key ({signer.alg}), "
            f"TPM2_Quote over PCRs {cfg.pcrs[0]}-{cfg.pcrs[-1]} bound to the nonce")
        result = verifier.verify(evidence)
        if not result.ear.affirming or result.ear.vector.hardware != 2:
            raise DemoFailed(f"TPM evidence was {result.ear.status_name}: {result.ear.reasons}")
        ok(f"EAR {result.ear.status_name}; AR4SI: {_vector(result.ear)} "
            "(hardware 2 = genuine, attested by the TPM quote)")
        signer.extend_pcr(4, hashlib.sha256(b"an unexpected bootloader").digest())
        bad = verifier.verify(attester.evidence(verifier.challenge("gw-0001")))
        if bad.ear.affirming:
            raise DemoFailed("evidence with changed PCRs was affirmed")
        why = [r for r in bad.ear.reasons if "PCR" in r]
        ok(f"after PCR 4 changed (another bootloader): EAR {bad.ear.status_name}: "
            + (why[0] if why else "; ".join(bad.ear.reasons)))
    ok("swtpm stopped")


def _fleet_files(root: Path, vendor: Vendor, broker: Any, ca: Any, dev: str) -> tuple[Path, Path]:
    """The device's AGENT.toml and the backend's VERIFIER.toml, as an operator writes them."""
    from edgeward.core import keys

    folder = root / dev
    dkey = keys.generate("ed25519")
    keys.write_keypair(folder / "device", dkey)
    vendor.device(folder, dev, dkey.public)
    tls, vtls = ca.issue(dev), ca.issue("edgeward-verifier-w1")
    cmd_priv, cmd_pub = keys.write_keypair(root / "command-key", keys.generate("ed25519"))
    _, ear_pub = keys.write_keypair(root / "ear-key", keys.generate("ed25519"))
    trust = folder / "backend-keys"  # the command key, and the EAR key to check results with
    trust.mkdir()
    shutil.copy(cmd_pub, trust / "command.pem")
    shutil.copy(ear_pub, trust / "ear.pem")
    mqtt = (f'host = "127.0.0.1"\nport = {broker.port}\nca = "{ca.ca}"\nkeepalive = 5\n'
            "backoff_base = 0.1\nbackoff_cap = 1.0\n")
    models = "".join(f'\n[[models.model]]\npath = "models/{m}.tflite"\nname = "{m}"\n'
                     for m in MODELS)
    agent = _agent_toml(folder, dev, board=BOARD, key="software", extra=(
        f'\n[agent]\nstate_dir = "state"\n\n[mqtt]\n{mqtt}cert = "{tls.cert}"\n'
        f'key = "{tls.key}"\n\n[metrics]\ninterval = 0.5\n\n[commands]\ntrust = "{trust}"\n'
        f'\n[models]\ntrust = "{vendor.out / "keys" / "public.pem"}"\nstate_dir = "state/models"'
        f"\ncheck_interval = 0.2\n{models}"))
    (root / "refvalues").mkdir()
    verifier = root / "verifier.toml"
    verifier.write_text(
        f'[service]\nworker = "w0"\nstore = "fleet.sqlite"\ntick = 0.1\n\n[mqtt]\n{mqtt}'
        f'cert = "{vtls.cert}"\nkey = "{vtls.key}"\n\n[commands]\n'
        f'key = "{cmd_priv}"\n\n[verifier]\n'
        f'database = "verifier.sqlite"\nkey_file = "ear-key/private.pem"\n'
        f'policy_id = "acme-locks/2026-1"\n\n[enrollment]\nmaker_cas = ["{vendor.ca_path}"]\n\n'
        f'[refvalues]\nvendor_keys = "{vendor.out / "keys" / "public.pem"}"\ndir = "refvalues"\n'
        # the demo's devices have software keys; the default policy makes that a warning
        '\n[policy]\nsoftware_keys = "affirming"\n')
    return agent, verifier


def _run_fleet_steps(root: Path, n: int, vendor: Vendor) -> None:
    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.ear import check_ear
    from edgeward.attestation.service.appraise import AttestationAppraiser
    from edgeward.attestation.service.config import load_service_config
    from edgeward.attestation.service.fleet_store import FleetStore
    from edgeward.attestation.service.service import VerifierService
    from edgeward.core.keys import load_signing_key
    from edgeward.simulator.devbroker import DevCA, Mosquitto

    dev = "lock-0002"
    step(n, "The fleet over MQTT: broker, verifier service and device agent on loopback")
    ca = DevCA(root / "fleet-ca", name="Acme Locks Fleet CA")
    (root / "broker").mkdir()
    broker = Mosquitto(root / "broker", ca)
    agent_path, verifier_path = _fleet_files(root, vendor, broker, ca, dev)
    signed, _ = vendor.refvalues(load_attester_config(agent_path), board=BOARD)
    (root / "refvalues" / f"{BOARD}.ewref").write_bytes(signed)
    with contextlib.ExitStack() as stack:  # stopped in reverse: agent, service, broker
        try:
            broker.start()
        except RuntimeError as e:
            raise DemoFailed(f"mosquitto did not start: {e}") from e
        stack.callback(broker.stop)
        ok(f"mosquitto on 127.0.0.1:{broker.port}: TLS only, client certificates from a "
            "throwaway fleet CA, CN = user name = client id, shipped deploy/mosquitto.conf, "
            "dynamic-security plugin with deploy/acl")
        cfg = load_service_config(verifier_path)
        assert cfg.verifier is not None  # read in the same parse as the service's tables
        appraiser = AttestationAppraiser.from_config(cfg.verifier)
        stack.callback(appraiser.close)
        assert cfg.command_key is not None
        svc = VerifierService(cfg, appraiser=appraiser,
                              command_key=load_signing_key(cfg.command_key))
        _start(stack, "verifier service", svc.run, svc.request_stop)
        if not svc.transport.wait_connected(10):
            raise DemoFailed("the verifier service did not connect to the broker")
        ok(f"verifier service {cfg.worker} connected as edgeward-verifier-w1; reference values "
            f"{BOARD}.ewref (vendor-signed), {vendor.ca_path.relative_to(vendor.out)} trusted")
        agent = build_agent(load_agent_config(agent_path))
        ath = _start(stack, "agent", lambda: agent.run(install_signals=False), agent.request_stop)
        store = svc.store
        wait("the agent's birth", lambda: store.status(dev) == "online")
        ok(f"{dev} online: retained birth on edgeward/v1/{dev}/status (last will: offline)")
        # security events go out before metrics, so a gap may be open for a moment
        wait("three metrics reports and no gap", lambda: len(
            store.messages(dev, "metrics")) >= 3 and not store.gaps(dev).missing)
        seqs = [s for s, _t, _b in store.messages(dev)]
        ok(f"reports at the backend, seq {seqs[0]}..{seqs[-1]} without gaps: "
            + ", ".join(f"{t} {c}" for t, c in Counter(t for _s, t, _b in
                                                      store.messages(dev)).items()))

        def done() -> list[str]:
            return [r[2] for r in store.appraisals(dev) if r[2] != "pending"]

        def latest_ear() -> Any:
            return check_ear(appraiser.verifier.store.history(dev, 1)[0][2],
                             appraiser.verifier.public_key, now=time.time(), max_age=60)

        first = wait("the first attestation result", done)
        if first != ["affirming"]:
            raise DemoFailed(f"the device was not attested affirming: {first}")
        ear = latest_ear()
        ok(f"challenged on connect -> evidence -> EAR {ear.status_name} on "
            f"edgeward/v1/{dev}/attest/result; AR4SI: {_vector(ear)}")

        step(n + 1, "Fleet attack: a model replaced on the device's disk")
        _flip_byte(root / dev / "models" / "digits_mlp.tflite")
        info(f"one byte of {dev}'s models/digits_mlp.tflite changed on disk")
        rejected = wait("model.rejected", lambda: store.messages(dev, "model.rejected"))
        body = rejected[0][2]
        ok(f"agent: event model.rejected (seq {rejected[0][0]}): {body.get('error')}: "
            f"{body.get('reason')}")
        second = wait("the next attestation result", lambda: done()[1:])
        if second[0] != "contraindicated":
            raise DemoFailed(f"the tampered device was {second[0]}, not contraindicated")
        ear = latest_ear()
        why = [r for r in ear.reasons if "digits_mlp" in r]
        ok(f"backend re-challenged on model.rejected -> EAR {ear.status_name} (file-system "
            f"{ear.vector.file_system}): " + (why[0] if why else "; ".join(ear.reasons)))

        step(n + 2, "Stop the fleet cleanly and summarise the fleet store")
        agent.request_stop()
        ath.join(15)
        wait("the agent's offline status", lambda: store.status(dev) == "offline", 10)
        ok(f"agent stopped: outbox delivered, {dev} offline")
    ok(f"verifier service and mosquitto stopped (log {broker.log.relative_to(root.parent)})")
    with contextlib.closing(FleetStore(root / "fleet.sqlite")) as fleet:
        msgs = fleet.messages(dev)
        gaps = fleet.gaps(dev)
        counts = Counter(t for _s, t, _b in msgs)
        ok(f"fleet store {fleet.path.name}: {dev} {fleet.status(dev)}, {len(msgs)} messages: "
            + ", ".join(f"{t} {c}" for t, c in sorted(counts.items())))
        ok(f"seq 1..{gaps.highest}: {gaps.received} received, gaps: "
            + ("none" if not gaps.missing else f"{gaps.missing} (unexplained "
               f"{gaps.unexplained})"))
        ok("attestation results: " + ", ".join(r[2] for r in fleet.appraisals(dev)))
        if gaps.unexplained or counts["model.rejected"] < 1:
            raise DemoFailed("the fleet store does not show what happened")


def run_fleet(out: Path, step_start: int) -> None:
    """Steps ``step_start`` on: attestation (software key, then TPM), then the fleet."""
    from edgeward.simulator.devbroker import mosquitto_binary

    out = out.resolve()  # the TOML files below name paths relative to their own folder
    vendor = Vendor.create(out)
    run_attestation(out, step_start, vendor)
    run_tpm(out, step_start + 1, vendor)
    if mosquitto_binary() is None:
        step(step_start + 2, "The fleet over MQTT")
        info("skipped: mosquitto is not installed (make demo installs it)")
        return
    (out / "fleet").mkdir()
    _run_fleet_steps(out / "fleet", step_start + 2, vendor)
