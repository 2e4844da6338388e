"""``edgeward demo``, after the models and the guard: remote attestation on one machine.

Remote attestation with the library API (RATS roles on one machine): the vendor signs reference
values for a board, a maker CA endorses a device's evidence key, the verifier challenges the
device and answers its evidence with a signed EAR, which a relying party checks offline; then a
replayed evidence and a model tampered on disk, which must not be affirmed. With swtpm installed,
the same with the evidence key in a TPM, a quote over the PCRs and the hardware claim.
:class:`Vendor` (keys, maker CA, reference values) and the device's TOML are shared with the
fleet steps (:mod:`.demo_fleet`). Everything runs under ``out``; nothing is left running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward.simulator.steps import DemoFailed, expect_rejection, info, ok, step

BOARD = "smartlock-pi4"
TPM_BOARD = "gateway-pi5"
MODELS = ("digits_mlp", "digits_cnn", "digits_mlp_int8")


def vector_text(ear: Any) -> str:
    return ", ".join(f"{name} {v}" for name, v in ear.vector.items() if v)


def flip_byte(path: Path) -> None:
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


def agent_toml(folder: Path, name: str, *, board: str, key: str, tcti: str | None = None,
                extra: str = "", model_trust: Path | None = None,
                verifier_key: Path | None = None) -> Path:
    dev = [f'name = "{name}"', f'board = "{board}"', 'hwversion = "rev-b"', f'key = "{key}"',
           'cert_file = "device/cert.pem"']
    dev.append(f'tpm_tcti = "{tcti}"' if tcti else 'key_file = "device/private.pem"')
    models = ", ".join(f'"models/{m}.tflite"' for m in MODELS)
    text = ("[device]\n" + "\n".join(dev) + "\n\n[attestation]\n"
            'state_dir = "state"\ndbgstat = "disabled-permanently"\n'
            + (f'verifier_key = "{verifier_key}"\n' if verifier_key else "")
            + (f"models = [{models}]\n" if not extra else "") + extra)
    if model_trust is not None:  # the manifests the measurement names must verify
        text += f'\n[models]\ntrust = "{model_trust}"\n'

    path = folder / "agent.toml"
    path.write_text(text)
    return path


def make_verifier(path: Path, vendor: Vendor, refvalues: dict[str, Any]) -> Any:
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
    cfg = load_attester_config(agent_toml(folder, "lock-0001", board=BOARD, key="software",
                                                model_trust=vendor.out / "keys" / "public.pem"))
    signed_rv, rv = vendor.refvalues(cfg, board=BOARD)
    ok(f"maker CA '{vendor.ca_cert.subject.rfc4514_string()}' endorsed lock-0001's Ed25519 "
        f"key; vendor-signed reference values for {BOARD} ({len(signed_rv)} bytes): agent "
        f"0.1.0, " + ", ".join(f"{m.name} v{m.min_version}" for m in rv.models))
    verifier = make_verifier(out / "attest" / "verifier.sqlite", vendor, {BOARD: rv})
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
            f"AR4SI: {vector_text(result.ear)}; hardware: no claim (software key)")
        ear = check_ear(result.signed, verifier.public_key, now=time.time(), max_age=300,
                        device="lock-0001")
        ok(f"relying party (the lock app), offline with the verifier's public key only: "
            f"signature good, about {ear.device}, fresh, {ear.status_name}")
        forged = bytearray(result.signed)
        forged[-10] ^= 0x01
        expect_rejection("an EAR altered in transit", lambda: check_ear(
            bytes(forged), verifier.public_key, now=time.time(), max_age=300))
        again = verifier.verify(evidence)
        if again.ear.affirming or not any("replay" in r for r in again.ear.reasons):
            raise DemoFailed(f"replayed evidence was not refused: {again.ear.reasons}")
        ok(f"the same evidence sent again: {again.ear.status_name} "
            f"(instance-identity {again.ear.vector.instance_identity}): {again.ear.reasons[0]}")
        flip_byte(folder / "models" / "digits_cnn.tflite")
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
            agent_toml(folder, "gw-0001", board=TPM_BOARD, key="tpm", tcti=tpm.tcti,
                        model_trust=vendor.out / "keys" / "public.pem"))
        ok(f"swtpm on 127.0.0.1:{tpm.port}; attestation key (restricted P-256) made in the "
            "TPM, endorsed by the maker CA as TPM-resident; firmware measured into PCR 7")
        _, rv = vendor.refvalues(cfg, board=TPM_BOARD, pcrs=signer.read_pcrs(cfg.pcrs))
        verifier = make_verifier(folder / "verifier.sqlite", vendor, {TPM_BOARD: rv})
        stack.callback(verifier.close)
        attester = Attester(cfg, signer, load_cert_chain(cfg.cert_file))
        evidence = attester.evidence(verifier.challenge("gw-0001"))
        ok(f"evidence: {len(evidence)} bytes, {signer.kind} key ({signer.alg}), "
            f"TPM2_Quote over PCRs {cfg.pcrs[0]}-{cfg.pcrs[-1]} bound to the nonce")
        result = verifier.verify(evidence)
        if not result.ear.affirming or result.ear.vector.hardware != 2:
            raise DemoFailed(f"TPM evidence was {result.ear.status_name}: {result.ear.reasons}")
        ok(f"EAR {result.ear.status_name}; AR4SI: {vector_text(result.ear)} "
            "(hardware 2 = genuine, attested by the TPM quote)")
        signer.extend_pcr(4, hashlib.sha256(b"an unexpected bootloader").digest())
        bad = verifier.verify(attester.evidence(verifier.challenge("gw-0001")))
        if bad.ear.affirming:
            raise DemoFailed("evidence with changed PCRs was affirmed")
        why = [r for r in bad.ear.reasons if "PCR" in r]
        ok(f"after PCR 4 changed (another bootloader): EAR {bad.ear.status_name}: "
            + (why[0] if why else "; ".join(bad.ear.reasons)))
    ok("swtpm stopped")
