"""The verifier service's path for a gateway with a lock: the vendor's lock registry file, the
gateway's real Attester carrying the lock's token, the Verifier's signed EAR covering both."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fixtures_attestation import make_world
from mcu_helpers import KEY, KID, SCRIPTS, FakeKeys, LoopbackPort, cpython_lock, firmware

from edgeward.attestation import claims as C
from edgeward.attestation.config import load_verifier_config
from edgeward.attestation.ear import decode_ear
from edgeward.attestation.service.verifier import Verifier
from edgeward.attestation.service.verifier_store import Store
from edgeward.attestation.submods import gateway_submods, load_lock_registry
from edgeward.core.errors import ConfigError
from edgeward.firmware_shim.serial_link import McuLink


def write_registry(folder: Path, *, firmware_digest: bytes, mode: int = 0o600,
                   extra: str = "") -> Path:
    (folder / "keys").mkdir(exist_ok=True)
    key = folder / "keys" / "lock-0001.key"
    key.write_text(KEY.hex() + "\n")
    os.chmod(key, mode)
    scripts = ", ".join(f'"{n}" = ["{hashlib.sha256(d).hexdigest()}"]'
                        for n, d in SCRIPTS.items())
    p = folder / "locks.toml"
    p.write_text(f"""
[[lock]]
gateway = "lock-0001"
name = "lock-mcu"
kid = "{KID.hex()}"
key_file = "keys/lock-0001.key"
firmware = ["{firmware_digest.hex()}"]
scripts = {{ {scripts} }}
{extra}
""")
    return p


@pytest.fixture
def world(tmp_path: Path):
    w = make_world(tmp_path)
    w.verifier.locks = load_lock_registry(
        write_registry(tmp_path, firmware_digest=hashlib.sha256(firmware()).digest()))
    yield w
    w.verifier.close()


def gateway_evidence(world, fw: bytes | None = None, *, boot: int | None = None) -> bytes:
    """The gateway's evidence with its lock's token; ``boot``: the lock's bootcount."""
    nonce = world.verifier.challenge("lock-0001")
    keys = None if boot is None else FakeKeys(key=KEY, kid=KID,
                                              bootcount=(boot - 1).to_bytes(8, "big"))
    lock, uart = cpython_lock(fw, keys)
    subs = gateway_submods({"lock-mcu": McuLink(LoopbackPort(lock, uart), timeout=0.5)}, nonce)
    return world.attester.evidence(nonce, submods=subs)


def test_verifier_signs_an_affirming_ear_covering_gateway_and_lock(world) -> None:
    res = world.verifier.verify(gateway_evidence(world))
    assert res.ear.affirming, (res.ear.reasons, res.ear.submods)
    ear = decode_ear(res.signed, world.verifier.public_key)
    assert [s.name for s in ear.submods] == ["lock-mcu"] and ear.affirming


def test_verifier_contraindicates_a_gateway_whose_lock_firmware_was_patched(world) -> None:
    fw = bytearray(firmware())
    fw[-1] ^= 0xFF
    res = world.verifier.verify(gateway_evidence(world, bytes(fw)))
    assert res.ear.status == C.TIER_CONTRAINDICATED
    assert decode_ear(res.signed, world.verifier.public_key).status == C.TIER_CONTRAINDICATED


def lock_vector(res):
    (sub,) = res.ear.submods
    return sub.vector.instance_identity, sub.reasons


def test_rolled_back_lock_replaying_an_older_boot_is_refused_across_appraisals_and_restart(
        world, tmp_path: Path) -> None:
    # The attacker restores the lock's non-volatile state from an earlier dump (or swaps in a
    # clone made then): its MAC is good and the nonce fresh, but its bootcount goes backwards.
    assert world.verifier.verify(gateway_evidence(world, boot=5)).ear.affirming
    assert world.verifier.store.lock_bootcount("lock-0001", "lock-mcu") == 5
    res = world.verifier.verify(gateway_evidence(world, boot=3))
    assert res.ear.status == C.TIER_CONTRAINDICATED
    ident, reasons = lock_vector(res)
    assert ident == C.UNTRUSTWORTHY_INSTANCE and "bootcount went backwards (3 < 5)" in reasons[0]
    assert world.verifier.store.lock_bootcount("lock-0001", "lock-mcu") == 5  # not lowered

    # A verifier restart reads the bootcount back from its database: still refused.
    old = world.verifier
    old.store.close()
    world.verifier = Verifier(store=Store(tmp_path / "verifier.sqlite"), ear_key=old.ear_key,
                              maker_cas=old.maker_cas, refvalues=old.refvalues,
                              policy=old.policy, nonces=old.nonces, clock=old.clock,
                              locks=old.locks)
    res = world.verifier.verify(gateway_evidence(world, boot=4))
    assert res.ear.status == C.TIER_CONTRAINDICATED
    assert lock_vector(res)[0] == C.UNTRUSTWORTHY_INSTANCE
    # The same boot again (no restart of the lock between challenges) and a later boot pass.
    assert world.verifier.verify(gateway_evidence(world, boot=5)).ear.affirming
    assert world.verifier.verify(gateway_evidence(world, boot=6)).ear.affirming
    assert world.verifier.store.lock_bootcount("lock-0001", "lock-mcu") == 6


def test_a_lock_bootcount_is_kept_only_from_a_trustworthy_token(world) -> None:
    # A patched lock with a huge bootcount is contraindicated (firmware), but its identity is
    # fine: the count is kept. A token whose MAC fails must never raise the stored count.
    fw = bytearray(firmware())
    fw[0] ^= 1
    world.verifier.verify(gateway_evidence(world, bytes(fw), boot=9))
    assert world.verifier.store.lock_bootcount("lock-0001", "lock-mcu") == 9
    nonce = world.verifier.challenge("lock-0001")
    lock, uart = cpython_lock(None, FakeKeys(key=bytes(32), kid=KID,
                                             bootcount=(10**6).to_bytes(8, "big")))
    subs = gateway_submods({"lock-mcu": McuLink(LoopbackPort(lock, uart), timeout=0.5)}, nonce)
    res = world.verifier.verify(world.attester.evidence(nonce, submods=subs))
    assert lock_vector(res)[0] == C.CRYPTO_VALIDATION_FAILED
    assert world.verifier.store.lock_bootcount("lock-0001", "lock-mcu") == 9


def test_registry_file_mistakes_are_config_errors(tmp_path: Path) -> None:
    fw = hashlib.sha256(b"fw").digest()
    with pytest.raises(ConfigError, match="readable by others"):
        load_lock_registry(write_registry(tmp_path, firmware_digest=fw, mode=0o644))
    p = write_registry(tmp_path, firmware_digest=fw, extra='colour = "red"')
    with pytest.raises(ConfigError, match=r"lock\[0\]\.colour' is not a known setting"):
        load_lock_registry(p)
    p = write_registry(tmp_path, firmware_digest=fw)
    p.write_text(p.read_text().replace(fw.hex(), "abcd"))
    with pytest.raises(ConfigError, match=r"'lock\[0\]\.firmware' must be hex of 32 bytes"):
        load_lock_registry(p)
    p = write_registry(tmp_path, firmware_digest=fw)
    p.write_text(p.read_text() * 2)
    with pytest.raises(ConfigError):
        load_lock_registry(p)


def test_verifier_config_names_the_registry(tmp_path: Path) -> None:
    cfg = tmp_path / "verifier.toml"
    cfg.write_text('[verifier]\nkey_file = "k.pem"\n[enrollment]\ntofu = true\n'
                   '[refvalues]\nvendor_keys = "v.pem"\ndir = "rv"\n[locks]\nfile = "locks.toml"\n')
    assert load_verifier_config(cfg).locks_file == tmp_path / "locks.toml"
    cfg.write_text(cfg.read_text().replace('file = "locks.toml"', 'path = "x"'))
    with pytest.raises(ConfigError, match=r"'locks\.path' is not a known setting"):
        load_verifier_config(cfg)
