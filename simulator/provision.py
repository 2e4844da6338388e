"""What a device maker and an operator set up before a fleet runs: keys, model, CAs, files.

:class:`FleetKit` makes, under one folder, the vendor's signing key, the signed reference model
(``digits_mlp``, trained by project code) with a signed guard profile bound into its manifest,
the maker CA that endorses device keys, the operator's command and EAR keys, and the fleet CA
for TLS. :meth:`FleetKit.device_files` writes one device's folder (models, certificates,
AGENT.toml) the way :mod:`edgeward.simulator.demo_fleet` does for the demo;
:meth:`FleetKit.verifier_files` writes VERIFIER.toml and the board's vendor-signed reference
values (agent code and the fleet's configurations, the model, the boot-state PCRs).

I/O: files under the fleet folder only. Keys are generated here and never leave it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "digits_mlp"
SWVERSION = "0.1.0"
BOOT_PCR = 7
BOOT_MEASUREMENT = b"simulated firmware: secure boot enabled"


@dataclass(frozen=True)
class DeviceSpec:
    """One provisioned device: everything a SimDevice needs to start it."""

    index: int
    name: str
    folder: Path
    config: Path  # AGENT.toml
    relay_port: int  # the broker as this device sees it (its link)
    tpm_port: int  # swtpm server port (control port + 1)


class FleetKit:
    def __init__(self, root: Path) -> None:
        from edgeward.attestation.enroll import make_ca
        from edgeward.core import keys
        from edgeward.simulator.devbroker import DevCA

        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.vendor_key = keys.generate("ed25519")
        _, self.vendor_pub = keys.write_keypair(self.root / "vendor" / "keys", self.vendor_key)
        self.maker_key = keys.generate("p256")
        self.maker_cert = make_ca(self.maker_key, "Simulated Maker Device CA", now=time.time())
        self.maker_ca = self.root / "vendor" / "maker-ca.pem"
        from cryptography.hazmat.primitives.serialization import Encoding

        self.maker_ca.write_bytes(self.maker_cert.public_bytes(Encoding.PEM))
        backend = self.root / "backend"
        self.cmd_priv, self.cmd_pub = keys.write_keypair(backend / "command-key",
                                                         keys.generate("ed25519"))
        self.ear_priv, self.ear_pub = keys.write_keypair(backend / "ear-key",
                                                         keys.generate("ed25519"))
        self.ca = DevCA(self.root / "fleet-ca", name="Simulated Fleet CA")
        self.models = self.root / "vendor" / "models"

    def build_model(self, seed: int = 0) -> None:
        """Train, sign and calibrate the reference model (a few seconds)."""
        import numpy as np

        from edgeward.core.persist import write_atomic
        from edgeward.models import guard as g
        from edgeward.models.integrity import sign_model
        from edgeward.models.refmodels import MLP_PARAMS
        from edgeward.models.refmodels.data import load_digits_split
        from edgeward.models.refmodels.export import mlp_tflite
        from edgeward.models.refmodels.train import train_mlp
        from edgeward.models.runtime import load_interpreter

        x_train, y_train, x_test, _ = load_digits_split()
        # held-back digits the on-device guard burst draws its clean inputs from (a device has
        # no scikit-learn to load them itself)
        inputs = self.root / "vendor" / "sim-inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        with open(inputs / "digits.npy", "wb") as f:
            np.save(f, x_test[300:].astype(np.float32))
        content = mlp_tflite(train_mlp(x_train, y_train, **MLP_PARAMS))  # type: ignore[arg-type]
        path = self.models / f"{MODEL}.tflite"
        self.models.mkdir(parents=True, exist_ok=True)
        write_atomic(path, content)
        import hashlib

        interp = load_interpreter(content, preserve_all_tensors=True)
        io_ = g.ModelIO(interp, logits_index=g.softmax_logits_index(interp))
        profile = g.calibrate(
            x_test[:300].astype(np.float32), io_.predict,
            model_sha256=hashlib.sha256(content).digest(), input_shape=io_.in_shape[1:],
            input_dtype="float32", fpr=0.05, energy_source="preserved-logits",
            squeeze=g.SqueezeConfig(rate=0.1, image_shape=(8, 8, 1)),
        )
        data = g.sign_profile(profile, self.vendor_key)
        write_atomic(self.models / f"{MODEL}.guard", data)
        sig, _ = sign_model(path, self.vendor_key, name=MODEL, version=1, profile=data)
        write_atomic(path.with_name(path.name + ".ewsig"), sig)

    def device_files(self, index: int, name: str, board: str, relay_port: int,
                     tpm_port: int, pcrs: tuple[int, ...] = tuple(range(8))) -> DeviceSpec:
        """The device's folder: models, TLS identity, command trust and AGENT.toml.

        The maker certificate over the TPM attestation key is added by :meth:`endorse` once the
        device's TPM has made its key.
        """
        folder = self.root / "devices" / name
        (folder / "device").mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.models, folder / "models", dirs_exist_ok=True)
        shutil.copytree(self.root / "vendor" / "sim-inputs", folder / "sim-inputs",
                        dirs_exist_ok=True)
        tls = self.ca.issue(name)
        trust = folder / "backend-keys"
        trust.mkdir(exist_ok=True)
        shutil.copy(self.cmd_pub, trust / "command.pem")  # command keys only
        shutil.copy(self.ear_pub, folder / "device" / "verifier-ear.pem")
        shutil.copy(self.vendor_pub, folder / "device" / "vendor.pem")
        text = f"""[device]
name = "{name}"
board = "{board}"
hwversion = "rev-b"
key = "tpm"
cert_file = "device/cert.pem"
tpm_tcti = "swtpm:host=127.0.0.1,port={tpm_port}"

[attestation]
state_dir = "state"
dbgstat = "disabled-permanently"
verifier_key = "device/verifier-ear.pem"
pcrs = [{", ".join(map(str, pcrs))}]

[agent]
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {relay_port}
ca = "{self.ca.ca}"
cert = "{tls.cert}"
key = "{tls.key}"
keepalive = 5
backoff_base = 0.2
backoff_cap = 2.0

[outbox]
ack_timeout = 5.0

[metrics]
interval = 1.0

[commands]
trust = "backend-keys"

[models]
trust = "device/vendor.pem"
state_dir = "state/models"
check_interval = 0.5

[[models.model]]
path = "models/{MODEL}.tflite"
name = "{MODEL}"

[local]
socket = "run/agent.sock"
"""
        cfg = folder / "agent.toml"
        cfg.write_text(text)
        return DeviceSpec(index, name, folder, cfg, relay_port, tpm_port)

    def endorse(self, spec: DeviceSpec, public: Any) -> None:
        """The maker CA's certificate over the device's TPM-resident attestation key."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from edgeward.attestation.enroll import issue_device_cert

        cert = issue_device_cert(self.maker_key, self.maker_cert, public, spec.name,
                                 now=time.time(), tpm=True)
        (spec.folder / "device" / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))

    def verifier_files(self, broker_port: int, board: str, specs: list[DeviceSpec],
                       pcrs: dict[int, bytes], challenge_interval: float) -> Path:
        """VERIFIER.toml and the board's signed reference values; returns VERIFIER.toml."""
        from edgeward.attestation import refvalues as R
        from edgeward.attestation.config import load_attester_config
        from edgeward.attestation.measure import load_model_trust, measure

        backend = self.root / "backend"
        configs: set[bytes] = set()
        code: set[bytes] = set()
        model_digests: set[bytes] = set()
        for spec in specs:
            cfg = load_attester_config(spec.config)
            m = measure(cfg.source, cfg.models, agent_root=cfg.agent_root,
                        model_sigs=cfg.model_sigs, trust=load_model_trust(cfg.model_trust))
            configs.add(m.agent_config)
            code.add(m.agent_code)
            for mm in m.models:
                model_digests.update(d for _p, d in mm.files)
        rv = R.RefValues(
            board=board, issued=int(time.time()), min_swversion=SWVERSION,
            releases=(R.Release(SWVERSION, frozenset(code), frozenset(configs)),),
            models=(R.ModelRef(MODEL, 1, frozenset(model_digests)),),
            pcrs=pcrs, require_tpm=True,
        )
        (backend / "refvalues").mkdir(parents=True, exist_ok=True)
        (backend / "refvalues" / f"{board}.ewref").write_bytes(
            R.sign_refvalues(rv, self.vendor_key))
        vtls = self.ca.issue("edgeward-verifier")
        mqtt = (f'host = "127.0.0.1"\nport = {broker_port}\nca = "{self.ca.ca}"\n'
                f'cert = "{vtls.cert}"\nkey = "{vtls.key}"\nkeepalive = 5\n'
                "backoff_base = 0.2\nbackoff_cap = 2.0\n")
        path = backend / "verifier.toml"
        path.write_text(
            f'[service]\nworker = "sim-w0"\nstore = "fleet.sqlite"\ntick = 0.2\n'
            f"challenge_interval = {challenge_interval}\n\n[mqtt]\n{mqtt}\n"
            f'[commands]\nkey = "{self.cmd_priv}"\n\n'
            f'[verifier]\ndatabase = "verifier.sqlite"\nkey_file = "{self.ear_priv}"\n'
            f'policy_id = "edgeward-sim/1"\n\n[enrollment]\nmaker_cas = ["{self.maker_ca}"]\n\n'
            f'[refvalues]\nvendor_keys = "{self.vendor_pub}"\ndir = "refvalues"\n')
        return path
