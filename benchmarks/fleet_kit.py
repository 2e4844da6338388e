"""The load benchmark's fleet: device identities (cached), the evidence encoder, the backend files.

``build(count)`` makes, once per fleet size, in ``build/fleet-load/<count>/``:

* a fleet CA (:class:`edgeward.attestation.service.pki.FleetCA`) and one P-256 key and TLS client
  certificate per device (``devices/load-00042.crt``, ``.key``), as ``edgeward fleet ca issue``
  makes them; the certificate's name is the device's MQTT identity;
* a maker CA and, per device, the maker's endorsement of that same key (``issue_device_cert``,
  with the board), which the device puts in its evidence's x5chain;
* a vendor key and the board's signed reference values, an EAR key and a command key;
* a template device (agent code, a signed model, AGENT.toml) whose measurements every simulated
  device reports (one measurement, many devices: the files are the same on every device).

A rerun with the same count reuses the folder (``complete.json`` marks it finished), so only the
first run pays for the keys. Evidence is built by :class:`Evidence`: the attester's claims
(:meth:`edgeward.attestation.attester.Attester.claims` without re-measuring the files for every
nonce) signed by the device's own key with :func:`edgeward.attestation.evidence.sign_evidence`,
the same encoder the agent uses.

I/O: the build folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from edgeward.attestation import claims as C
from edgeward.attestation import refvalues as R
from edgeward.attestation.attester import VERSION
from edgeward.attestation.config import load_attester_config
from edgeward.attestation.enroll import issue_device_cert, make_ca
from edgeward.attestation.evidence import EvidenceClaims, sign_evidence
from edgeward.attestation.measure import load_model_trust, measure
from edgeward.attestation.service.pki import FleetCA
from edgeward.core import keys
from edgeward.firmware_shim.sim.signer import SoftwareSigner
from edgeward.models.manifest import Manifest, file_entry, sign_manifest

BOARD = "smartlock-pi4"
ROOT = Path(__file__).resolve().parent.parent / "build" / "fleet-load"
MODEL = "lockface"


def device_name(i: int) -> str:
    return f"load-{i:05d}"


@dataclasses.dataclass(frozen=True)
class Kit:
    folder: Path
    count: int

    @property
    def fleet_ca(self) -> Path:
        return self.folder / "fleet-ca"

    def tls(self, i: int) -> tuple[Path, Path]:
        d = self.folder / "devices"
        return d / f"{device_name(i)}.crt", d / f"{device_name(i)}.key"

    def endorsements(self) -> list[bytes]:
        """Each device's maker certificate (DER), by index."""
        return [bytes.fromhex(line) for line in
                (self.folder / "endorsements.txt").read_text().split()]

    def path(self, name: str) -> Path:
        return self.folder / name


def _template(folder: Path) -> Path:
    """A device's files (agent code, one signed model, AGENT.toml); returns AGENT.toml."""
    signer = keys.generate("ed25519")
    keys.write_keypair(folder / "model-signer", signer)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    content = b"TFL3-load-benchmark-model" * 40
    (folder / "models" / f"{MODEL}.tflite").write_bytes(content)
    m = Manifest(name=MODEL, version=1, files=(file_entry(f"{MODEL}.tflite", content),),
                 tflite={"ops": [], "inputs": [], "outputs": []}, created=1, key_id=signer.key_id)
    (folder / "models" / f"{MODEL}.tflite.ewsig").write_bytes(sign_manifest(m, signer))
    (folder / "code").mkdir(exist_ok=True)
    (folder / "code" / "main.py").write_text("print('edgeward agent')\n")
    toml = folder / "agent.toml"
    toml.write_text("\n".join([
        "[device]", 'name = "load-template"', f'board = "{BOARD}"', 'hwversion = "rev-b"',
        'key = "software"', 'key_file = "device/private.pem"', "",
        "[models]", 'trust = "model-signer/public.pem"', "",
        "[attestation]", 'state_dir = "state"', f'models = ["models/{MODEL}.tflite"]',
        'dbgstat = "disabled"', 'agent_root = "code"', ""]))
    return toml


def template_claims(folder: Path) -> EvidenceClaims:
    """The claims every simulated device shares (what :meth:`Attester.claims` measures)."""
    cfg = load_attester_config(folder / "template" / "agent.toml")
    m = measure(cfg.source, cfg.models, agent_root=cfg.agent_root, model_sigs=cfg.model_sigs,
                trust=load_model_trust(cfg.model_trust))
    return EvidenceClaims(nonce=b"\0" * 8, device=cfg.device, ueid=b"\x01" + b"\0" * 16,
                          hwmodel=cfg.board, swname=cfg.swname, swversion=VERSION, iat=0,
                          bootcount=1, key_kind="software", measurements=m, oemid=cfg.oemid,
                          hwversion=cfg.hwversion, dbgstat=cfg.dbgstat)


def build(count: int, say: Callable[[str], None], root: Path = ROOT) -> Kit:
    """The fleet of ``count`` devices, from the cache or made now (with progress)."""
    kit = Kit(root / str(count), count)
    done = kit.path("complete.json")
    if done.exists() and json.loads(done.read_text()).get("count") == count:
        say(f"fleet of {count} identities from the cache {kit.folder}")
        return kit
    t0 = time.monotonic()
    kit.folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    ca_dir = kit.fleet_ca
    fleet = (FleetCA.load(ca_dir, days=3650) if (ca_dir / "ca.key").exists() else
             FleetCA.create(ca_dir, "edgeward fleet-load CA", leaf_days=3650))
    maker = keys.generate("p256")
    maker_cert = make_ca(maker, "edgeward fleet-load maker CA", now=now)
    kit.path("maker-ca.pem").write_bytes(maker_cert.public_bytes(Encoding.PEM))
    for name in ("vendor", "ear", "commands"):
        keys.write_keypair(kit.path(name), keys.generate("ed25519"), force=True)
    toml = _template(kit.path("template"))
    ev = template_claims(kit.folder)
    rv = R.RefValues(board=BOARD, issued=int(now), min_swversion=VERSION,
                     releases=(R.Release(VERSION, frozenset({ev.measurements.agent_code}),
                                         frozenset({ev.measurements.agent_config})),),
                     models=tuple(R.ModelRef(mm.name, mm.version,
                                             frozenset(d for _p, d in mm.files))
                                  for mm in ev.measurements.models))
    (kit.path("refvalues")).mkdir(exist_ok=True)
    vendor = keys.load_signing_key(kit.path("vendor") / "private.pem")
    kit.path("refvalues").joinpath(f"{BOARD}.ewref").write_bytes(R.sign_refvalues(rv, vendor))
    assert toml.exists()
    lines = []
    for i in range(count):
        cert = fleet.issue(device_name(i), out=kit.path("devices"))
        public = keys.load_signing_key(cert.key).public
        endorsed = issue_device_cert(maker, maker_cert, public, device_name(i), now=now,
                                     board=BOARD)
        lines.append(endorsed.public_bytes(Encoding.DER).hex())
        if (i + 1) % 500 == 0:
            say(f"  {i + 1}/{count} device identities ({time.monotonic() - t0:.0f} s)")
    kit.path("endorsements.txt").write_text("\n".join(lines) + "\n")
    done.write_text(json.dumps({"count": count, "made": now}))
    say(f"made {count} device identities in {time.monotonic() - t0:.1f} s ({kit.folder})")
    return kit


class Evidence:
    """Evidence for every device of a kit: its own key, its own endorsement, a fresh nonce."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.template = template_claims(kit.folder)
        self.endorsed = kit.endorsements()
        self._signers: dict[int, SoftwareSigner] = {}

    def signer(self, i: int) -> SoftwareSigner:
        s = self._signers.get(i)
        if s is None:
            s = self._signers[i] = SoftwareSigner.from_file(self.kit.tls(i)[1])
        return s

    def token(self, i: int, nonce: bytes, now: float, uptime: int) -> bytes:
        s = self.signer(i)
        ueid = bytes([C.UEID_RAND]) + hashlib.sha256(b"edgeward-ueid" + s.key_id).digest()[:16]
        ev = dataclasses.replace(self.template, nonce=nonce, device=device_name(i), ueid=ueid,
                                 iat=int(now), uptime=uptime)
        return sign_evidence(ev, s, x5chain=[self.endorsed[i]])


def forged(token: bytes) -> bytes:
    """The same token with its signature's last byte flipped (a forged signature)."""
    return token[:-1] + bytes([token[-1] ^ 0x01])


def verifier_toml(kit: Kit, out: Path, worker: str, port: int, ca: Path, cert: Path, key: Path,
                  *, tick: float = 0.5, extra: str = "") -> Path:
    """One worker's VERIFIER.toml in ``out`` (the store and nonce database shared by all)."""
    k = kit.folder
    text = (f'[service]\nworker = "{worker}"\nstore = "fleet.sqlite"\ntick = {tick}\n{extra}\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nca = "{ca}"\ncert = "{cert}"\n'
            f'key = "{key}"\nkeepalive = 30\n\n'
            f'[commands]\nkey = "{k / "commands" / "private.pem"}"\n\n'
            f'[verifier]\ndatabase = "verifier.sqlite"\nkey_file = "{k / "ear" / "private.pem"}"\n'
            f'policy_id = "edgeward-load/1"\n\n'
            f'[enrollment]\nmaker_cas = ["{k / "maker-ca.pem"}"]\n\n'
            f'[refvalues]\nvendor_keys = "{k / "vendor" / "public.pem"}"\n'
            f'dir = "{k / "refvalues"}"\n\n'
            '[policy]\nsoftware_keys = "affirming"\n')
    path = out / f"verifier-{worker}.toml"
    path.write_text(text)
    return path
