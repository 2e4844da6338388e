"""Provisioning QEMU devices and the host backend they talk to (the QEMU tests and benchmarks).

:class:`QemuBackend` is what a fleet of QEMU devices needs on the host, all on loopback: a vendor
key with signed reference models, a maker CA, a fleet CA, the shipped Mosquitto configuration,
the verifier service (in a thread) with reference values for the board, measured from the
guest's own configuration and edgeward's device code (the same files the image carries).
:meth:`QemuBackend.device` provisions one device the way a factory would: its swtpm makes the
attestation key, the maker CA certifies it as TPM-resident, the fleet CA issues its broker
certificate, and a config folder holds the identity and AGENT.toml that the guest reads from
its config drive. Paths in AGENT.toml are relative, and per-device files have the same names on
every device, so all devices of a board share one configuration measurement.

I/O: the root folder, swtpm (while provisioning), Mosquitto and the verifier service.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError

from .image import Image, recipe
from .qemu import BROKER_PORT, Forward, QemuGuest, QemuMachine

MODELS = ("digits_mlp", "digits_cnn")
PCRS = tuple(range(8))


def provision_tpm(state: Path) -> tuple[Any, dict[int, bytes]]:
    """Make the device's attestation key in its swtpm; its public key and fresh PCR values."""
    from edgeward.firmware_shim.linux.tpm import TpmSigner
    from edgeward.firmware_shim.sim.swtpm import start_swtpm

    try:
        with start_swtpm(state) as tpm, TpmSigner(tpm.tcti) as signer:
            return signer.public, signer.read_pcrs(PCRS)
    except RuntimeError as e:
        raise DeviceError(f"swtpm did not start to provision {state}: {e}") from e


def guest_agent_toml(name: str, board: str) -> str:
    """AGENT.toml as the guest reads it from /etc/edgeward (paths relative to that folder)."""
    models = "".join(f'\n[[models.model]]\npath = "models/{m}.tflite"\nname = "{m}"\n'
                     for m in MODELS)
    return (
        f'[device]\nname = "{name}"\nboard = "{board}"\nhwversion = "qemu-virt"\nkey = "tpm"\n'
        'cert_file = "device/cert.pem"\ntpm_tcti = "device:/dev/tpmrm0"\n\n'
        '[attestation]\nstate_dir = "state"\ndbgstat = "disabled-permanently"\n\n'
        '[agent]\nstate_dir = "state"\n\n'
        f'[mqtt]\nhost = "{recipe.BROKER_ADDR}"\nport = {BROKER_PORT}\n'
        'ca = "fleet-ca.pem"\ncert = "device/tls.crt"\nkey = "device/tls.key"\nkeepalive = 10\n'
        "backoff_base = 0.5\nbackoff_cap = 5.0\n\n"
        "[metrics]\ninterval = 5.0\n\n"
        '[commands]\ntrust = "backend-keys"\n\n'
        '[models]\ntrust = "vendor.pem"\nstate_dir = "state/models"\ncheck_interval = 1.0\n'
        + models
    )


class QemuBackend:
    """Broker, verifier service, vendor and CAs on loopback for QEMU devices; a context manager."""

    def __init__(self, root: Path, image: Image, *, board: str = "rpi4b") -> None:
        self.root = root.resolve()
        self.image = image
        self.board = board
        self._stack = contextlib.ExitStack()
        self.devices: list[QemuGuest] = []
        self.service: Any = None
        self.store: Any = None

    # -- set-up -----------------------------------------------------------------------------

    def __enter__(self) -> QemuBackend:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for d in self.devices:
            d.stop()
        self._stack.close()

    def _start(self) -> None:
        from edgeward.core import keys
        from edgeward.core.persist import write_atomic
        from edgeward.models.integrity import sign_model
        from edgeward.models.refmodels import write_examples
        from edgeward.simulator.demo_fleet import Vendor
        from edgeward.simulator.devbroker import DevCA, Mosquitto

        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        vkey = keys.generate("ed25519")
        keys.write_keypair(r / "keys", vkey)
        for p in write_examples(r / "all-models"):
            if p.stem in MODELS:
                (r / "models").mkdir(exist_ok=True)
                shutil.copy(p, r / "models" / p.name)
                sig, _ = sign_model(p, vkey, name=p.stem, version=1)
                write_atomic(r / "models" / (p.name + ".ewsig"), sig)
        self.vendor = Vendor.create(r)
        self.fleet_ca = DevCA(r / "fleet-ca", name="edgeward simulator fleet CA")
        (r / "broker").mkdir()
        self.broker = Mosquitto(r / "broker", self.fleet_ca)
        self._files()
        self.broker.start()
        self._stack.callback(self.broker.stop)
        self._start_service()

    def _files(self) -> None:
        from edgeward.attestation.config import load_attester_config
        from edgeward.core import keys

        r = self.root
        cmd_priv, cmd_pub = keys.write_keypair(r / "command-key", keys.generate("ed25519"))
        _, ear_pub = keys.write_keypair(r / "ear-key", keys.generate("ed25519"))
        self.trust = r / "backend-keys"
        self.trust.mkdir()
        shutil.copy(cmd_pub, self.trust / "command.pem")
        shutil.copy(ear_pub, self.trust / "ear.pem")
        vtls = self.fleet_ca.issue("edgeward-verifier")
        mqtt = (f'host = "127.0.0.1"\nport = {self.broker.port}\nca = "{self.fleet_ca.ca}"\n'
                "keepalive = 10\nbackoff_base = 0.2\nbackoff_cap = 2.0\n")
        (r / "refvalues").mkdir()
        self.verifier_toml = r / "verifier.toml"
        self.verifier_toml.write_text(
            f'[service]\nworker = "w0"\nstore = "fleet.sqlite"\ntick = 0.2\n'
            # a device whose challenge on connect was lost (sent before it subscribed) is
            # challenged again within 10 s, not after the default hour
            f'challenge_interval = 10.0\n\n[mqtt]\n{mqtt}'
            f'cert = "{vtls.cert}"\nkey = "{vtls.key}"\n\n[commands]\nkey = "{cmd_priv}"\n\n'
            '[verifier]\ndatabase = "verifier.sqlite"\nkey_file = "ear-key/private.pem"\n'
            'policy_id = "edgeward-sim/1"\n\n'
            f'[enrollment]\nmaker_cas = ["{self.vendor.ca_path}"]\n\n'
            f'[refvalues]\nvendor_keys = "{r / "keys" / "public.pem"}"\ndir = "refvalues"\n')
        # reference values: measured from a golden device folder (code, configuration, models);
        # PCRs as a freshly started TPM has them (nothing measures the boot in the guest)
        golden = r / "golden"
        self._guest_folder(golden, "golden", cert=None)
        cfg = load_attester_config(golden / "agent.toml")
        signed, _ = self.vendor.refvalues(cfg, board=self.board,
                                          pcrs={i: bytes(32) for i in PCRS})
        (r / "refvalues" / f"{self.board}.ewref").write_bytes(signed)

    def _start_service(self) -> None:
        from edgeward.attestation.service.appraise import AttestationAppraiser
        from edgeward.attestation.service.config import load_service_config
        from edgeward.attestation.service.service import VerifierService
        from edgeward.core.keys import load_signing_key

        cfg = load_service_config(self.verifier_toml)
        assert cfg.verifier is not None  # read in the same parse as the service's tables
        self.appraiser = AttestationAppraiser.from_config(cfg.verifier)
        self._stack.callback(self.appraiser.close)
        assert cfg.command_key is not None
        svc = VerifierService(cfg, appraiser=self.appraiser,
                              command_key=load_signing_key(cfg.command_key))
        th = threading.Thread(target=svc.run, name="verifier service", daemon=True)
        th.start()

        def halt() -> None:
            svc.request_stop()
            th.join(15)

        self._stack.callback(halt)
        if not svc.transport.wait_connected(15):
            raise DeviceError("the verifier service did not connect to the broker")
        self.service = svc
        self.store = svc.store

    def _guest_folder(self, folder: Path, name: str, cert: bytes | None) -> None:
        folder.mkdir(parents=True)
        shutil.copytree(self.root / "models", folder / "models")
        shutil.copy(self.root / "keys" / "public.pem", folder / "vendor.pem")
        shutil.copy(self.fleet_ca.ca, folder / "fleet-ca.pem")
        shutil.copytree(self.trust, folder / "backend-keys")
        (folder / "device").mkdir()
        if cert is not None:
            (folder / "device" / "cert.pem").write_bytes(cert)
            tls = self.fleet_ca.issue(name)
            shutil.copy(tls.cert, folder / "device" / "tls.crt")
            shutil.copy(tls.key, folder / "device" / "tls.key")
        (folder / "agent.toml").write_text(guest_agent_toml(name, self.board))

    # -- devices ----------------------------------------------------------------------------

    def device(self, name: str, *, machine: QemuMachine | None = None) -> QemuGuest:
        """Provision device ``name`` (TPM key, certificates, config folder); not yet started."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from edgeward.attestation.enroll import issue_device_cert

        work = self.root / "devices" / name
        public, pcrs = provision_tpm(work / "tpm")
        if any(v != bytes(32) for v in pcrs.values()):
            raise DeviceError(f"{name}'s fresh TPM has non-zero PCRs: {pcrs}")
        cert = issue_device_cert(self.vendor.ca_key, self.vendor.ca_cert, public, name,
                                 now=time.time(), tpm=True)
        self._guest_folder(work / "config", name, cert.public_bytes(Encoding.PEM))
        dev = QemuGuest(name, self.board, self.image, work / "config", work,
                         [Forward(self.broker.port)], machine=machine, tpm_state=work / "tpm")
        self.devices.append(dev)
        return dev

    def appraisals(self, name: str) -> list[str]:
        """The device's attestation results so far (``affirming``, ``contraindicated``...)."""
        return [row[2] for row in self.store.appraisals(name) if row[2] != "pending"]

    def latest_ear(self, name: str) -> Any:
        from edgeward.attestation.ear import check_ear

        v = self.appraiser.verifier
        return check_ear(v.store.history(name, 1)[0][2], v.public_key, now=time.time(),
                         max_age=600)


def flip_byte_command(path: str, offset: int = 200) -> str:
    """A guest shell command that flips one byte of ``path`` in place (busybox only)."""
    return (f"b=$(dd if={path} bs=1 skip={offset} count=1 2>/dev/null | od -An -tu1 | tr -d ' '); "
            f"printf \"\\\\$(printf %o $(( (b ^ 255) & 255 )))\" | "
            f"dd of={path} bs=1 seek={offset} count=1 conv=notrunc 2>/dev/null")


def file_digest_command(path: str) -> str:
    return f"sha256sum {path} | cut -d' ' -f1"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
