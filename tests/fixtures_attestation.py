"""Shared pytest fixtures: a complete attestation world (vendor, maker CA, verifier, one device).

Registered for every test folder by ``pytest_plugins`` in tests/conftest.py; other modules
import :func:`make_world` and :class:`World` from here. The real swtpm is ``fixtures_tpm``.
"""

from __future__ import annotations

# --- a complete attestation world: vendor, maker CA, verifier, one device ---------------------
import dataclasses
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from edgeward.attestation.appraisal import Policy
from edgeward.attestation.attester import Attester
from edgeward.attestation.config import load_attester_config
from edgeward.attestation.enroll import issue_device_cert, make_ca
from edgeward.attestation.measure import load_model_trust, measure
from edgeward.attestation.nonces import NoncePolicy
from edgeward.attestation.refvalues import (
    ModelRef,
    RefValues,
    Release,
    sign_refvalues,
)
from edgeward.attestation.service.verifier import Verifier
from edgeward.attestation.service.verifier_store import Store
from edgeward.core import keys
from edgeward.firmware_shim.sim.signer import SoftwareSigner
from edgeward.models.manifest import Manifest, file_entry, sign_manifest

BOARD = "smartlock-pi4"


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def write_model(folder, name="lockface", version=3, content=b"TFL3-model-bytes" * 8,
                key=None):
    key = key or keys.generate("ed25519")
    path = folder / f"{name}.tflite"
    path.write_bytes(content)
    m = Manifest(name=name, version=version, files=(file_entry(path.name, content),),
                 tflite={"ops": [], "inputs": [], "outputs": []}, created=1, key_id=key.key_id)
    (folder / f"{name}.tflite.ewsig").write_bytes(sign_manifest(m, key))
    return path


def agent_toml(folder, *, device="lock-0001", key="software", tcti=None, extra=""):
    # A small, private code folder: the live repository is edited by others while tests run.
    code = folder / "code"
    code.mkdir(exist_ok=True)
    (code / "main.py").write_text("print('edgeward agent')\n")
    (code / "pkg").mkdir(exist_ok=True)
    (code / "pkg" / "util.py").write_text("X = 1\n")
    lines = ["[device]", f'name = "{device}"', f'board = "{BOARD}"', 'hwversion = "rev-b"',
             f'key = "{key}"', 'key_file = "device/private.pem"', 'cert_file = "device/cert.pem"']
    if tcti:
        lines.append(f'tpm_tcti = "{tcti}"')
    lines += ["", "[models]", 'trust = "model-signer/public.pem"']
    lines += ["", "[attestation]", 'state_dir = "state"', 'models = ["models/lockface.tflite"]',
              "pcrs = [0, 1, 2, 3, 4, 5, 6, 7]", 'dbgstat = "disabled"', 'agent_root = "code"', extra]
    p = folder / "agent.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


@dataclasses.dataclass
class World:
    root: object
    clock: Clock
    vendor: keys.SigningKey
    ca_key: keys.SigningKey
    ca_cert: object
    verifier: Verifier
    attester: Attester
    config_path: object

    def refvalues(self, **changes) -> RefValues:
        cfg = self.attester.config
        m = measure(cfg.source, cfg.models, agent_root=cfg.agent_root,
                    trust=load_model_trust(cfg.model_trust))
        rv = RefValues(
            board=BOARD, issued=1, min_swversion="0.1.0",
            releases=(Release("0.1.0", frozenset({m.agent_code}),
                              frozenset({m.agent_config})),),
            models=tuple(ModelRef(mm.name, mm.version, frozenset(d for _p, d in mm.files))
                         for mm in m.models),
        )
        return dataclasses.replace(rv, **changes)

    def install_refvalues(self, rv: RefValues | None = None) -> None:
        self.verifier.refvalues = {BOARD: rv or self.refvalues()}

    def fresh_evidence(self, device="lock-0001") -> bytes:
        nonce = self.verifier.challenge(device)
        return self.attester.evidence(nonce)


def make_world(tmp_path, *, signer=None, key_kind="software", tcti=None, tofu=False,
               policy=None, cert_board=None) -> World:
    clock = Clock()
    (tmp_path / "models").mkdir()
    model_signer = keys.generate("ed25519")
    keys.write_keypair(tmp_path / "model-signer", model_signer)
    write_model(tmp_path / "models", key=model_signer)
    vendor = keys.generate("ed25519")
    ca_key = keys.generate("p256")
    ca_cert = make_ca(ca_key, "Acme Locks Device CA", now=clock())
    if signer is None:
        signer = SoftwareSigner(keys.generate("ed25519"))
        keys.write_keypair(tmp_path / "device", signer.signing_key)
    else:
        (tmp_path / "device").mkdir()
    cert = issue_device_cert(ca_key, ca_cert, signer.public, "lock-0001", now=clock(),
                             tpm=key_kind == "tpm", board=cert_board)
    (tmp_path / "device" / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    cfg_path = agent_toml(tmp_path, key=key_kind, tcti=tcti)
    cfg = load_attester_config(cfg_path)
    attester = Attester(cfg, signer, [cert.public_bytes(Encoding.DER)], clock)
    verifier = Verifier(
        store=Store(tmp_path / "verifier.sqlite"),
        ear_key=keys.generate("ed25519"),
        maker_cas=[ca_cert],
        refvalues={},
        # The world's software key is accepted as affirming so that each test isolates its own
        # property; the default policy (a warning) is tested in test_attacks.py.
        policy=policy or Policy(software_keys="affirming"),
        nonces=NoncePolicy(ttl=60),
        tofu=tofu,
        clock=clock,
    )
    w = World(tmp_path, clock, vendor, ca_key, ca_cert, verifier, attester, cfg_path)
    w.install_refvalues()
    return w


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.verifier.close()


@pytest.fixture
def signed_refvalues(world):
    return sign_refvalues(world.refvalues(), world.vendor)


@pytest.fixture
def world_factory():
    """``make_world`` for tests that need a world with other options."""
    made = []

    def factory(tmp_path, **kw):
        w = make_world(tmp_path, **kw)
        made.append(w)
        return w

    yield factory
    for w in made:
        w.verifier.close()


@pytest.fixture
def model_writer():
    return write_model
