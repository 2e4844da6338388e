"""Keys, key files and the trust store."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edgeward.core import keys
from edgeward.core.errors import ConfigError, SignatureError


@pytest.fixture(params=["ed25519", "p256"])
def key(request: pytest.FixtureRequest) -> keys.SigningKey:
    return keys.generate(request.param)


def test_generate_algs_and_key_id(key: keys.SigningKey) -> None:
    assert key.alg in ("EdDSA", "ES256")
    assert key.key_id == hashlib.sha256(key.public.spki_der()).digest()
    assert key.public.key_id == key.key_id and key.public.alg == key.alg


def test_generate_unknown_alg() -> None:
    with pytest.raises(ConfigError, match="ed25519"):
        keys.generate("rsa")


def test_sign_verify_64_byte_signatures(key: keys.SigningKey) -> None:
    sig = key.sign(b"msg")
    assert len(sig) == 64
    key.public.verify(b"msg", sig)


def test_es256_signature_is_raw_r_s() -> None:
    """RFC 9053 §2.1: ES256 in COSE is r || s, not DER; the DER form must not verify."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    k = keys.generate("p256")
    sig = k.sign(b"m")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    pub, priv = k.public.crypto_key, k.crypto_key
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    pub.verify(
        encode_dss_signature(r, s),
        b"m",
        ec.ECDSA(hashes.SHA256()),
    )
    der = priv.sign(b"m", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(SignatureError):
        k.public.verify(b"m", der)


def test_verify_refuses_tampering(key: keys.SigningKey) -> None:
    """Attack: edited message, flipped signature bit, truncated or other-key signature."""
    sig = key.sign(b"msg")
    with pytest.raises(SignatureError):
        key.public.verify(b"msh", sig)
    with pytest.raises(SignatureError):
        key.public.verify(b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    with pytest.raises(SignatureError):
        key.public.verify(b"msg", sig[:63])
    with pytest.raises(SignatureError):
        key.public.verify(b"msg", b"")
    other = keys.generate("ed25519" if key.alg == "EdDSA" else "p256")
    with pytest.raises(SignatureError):
        other.public.verify(b"msg", sig)


def test_es256_zero_signature_refused() -> None:
    """Attack: r = s = 0 (the 'psychic signature' class of bugs)."""
    k = keys.generate("p256")
    with pytest.raises(SignatureError):
        k.public.verify(b"m", b"\x00" * 64)


def test_pem_round_trip(key: keys.SigningKey) -> None:
    vk = keys.VerifyingKey.from_pem(key.public.to_pem())
    assert vk.key_id == key.key_id and vk == key.public
    assert key.private_pem().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_from_crypto_unsupported_curve_and_rsa() -> None:
    with pytest.raises(ConfigError):
        keys.VerifyingKey.from_crypto(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(ConfigError):
        keys.VerifyingKey.from_crypto(
            rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        )


def test_from_crypto_key_id_override() -> None:
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    assert keys.VerifyingKey.from_crypto(pub, key_id=b"11").key_id == b"11"


def test_from_pem_refuses_private_key_and_garbage(key: keys.SigningKey) -> None:
    with pytest.raises(ConfigError, match="private key"):
        keys.VerifyingKey.from_pem(key.private_pem())
    with pytest.raises(ConfigError, match="not a PEM public key"):
        keys.VerifyingKey.from_pem(b"hello")


# --- files -----------------------------------------------------------------------------------


def test_write_keypair_modes_and_load(tmp_path: Path, key: keys.SigningKey) -> None:
    priv, pub = keys.write_keypair(tmp_path / "k", key)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) & 0o077 == 0
    assert keys.load_signing_key(priv).key_id == key.key_id
    assert keys.load_verifying_key(pub).key_id == key.key_id
    assert [p.name for p in (tmp_path / "k").iterdir() if p.name.startswith(".")] == []


def test_write_keypair_private_never_world_readable_even_with_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        priv, _ = keys.write_keypair(tmp_path, keys.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600


def test_write_keypair_refuses_overwrite(tmp_path: Path) -> None:
    """Attack/mistake: silently replacing a product's signing key."""
    first = keys.generate()
    keys.write_keypair(tmp_path, first)
    with pytest.raises(ConfigError, match="already exists"):
        keys.write_keypair(tmp_path, keys.generate())
    assert keys.load_signing_key(tmp_path / "private.pem").key_id == first.key_id
    second = keys.generate("p256")
    keys.write_keypair(tmp_path, second, force=True)
    assert keys.load_signing_key(tmp_path / "private.pem").key_id == second.key_id
    assert stat.S_IMODE((tmp_path / "private.pem").stat().st_mode) == 0o600


def test_write_keypair_refuses_symlink_in_place(tmp_path: Path) -> None:
    """Attack: a pre-planted symlink at private.pem must not redirect the key elsewhere."""
    target = tmp_path / "elsewhere"
    (tmp_path / "private.pem").symlink_to(target)
    with pytest.raises(ConfigError):
        keys.write_keypair(tmp_path, keys.generate())
    assert not target.exists()


def test_load_signing_key_refuses_group_readable(tmp_path: Path) -> None:
    priv, _ = keys.write_keypair(tmp_path, keys.generate())
    priv.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as e:
        keys.load_signing_key(priv)
    assert str(priv) in str(e.value)


def test_load_missing_files_name_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*keys generate"):
        keys.load_signing_key(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        keys.load_verifying_key(tmp_path / "nope.pem")


def test_load_wrong_format(tmp_path: Path) -> None:
    p = tmp_path / "x.pem"
    p.write_bytes(b"not a key")
    p.chmod(0o600)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        keys.load_signing_key(p)
    with pytest.raises(ConfigError, match=str(p)):
        keys.load_verifying_key(p)


def test_load_public_key_given_as_private_and_vice_versa(tmp_path: Path) -> None:
    priv, pub = keys.write_keypair(tmp_path, keys.generate())
    pub.chmod(0o600)
    with pytest.raises(ConfigError):
        keys.load_signing_key(pub)
    with pytest.raises(ConfigError, match="private key"):
        keys.load_verifying_key(priv)


def test_load_encrypted_private_key(tmp_path: Path) -> None:
    k = ed25519.Ed25519PrivateKey.generate()
    p = tmp_path / "enc.pem"
    p.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    p.chmod(0o600)
    with pytest.raises(ConfigError, match="password"):
        keys.load_signing_key(p)


def test_load_p384_private_key_refused(tmp_path: Path) -> None:
    k = ec.generate_private_key(ec.SECP384R1())
    p = tmp_path / "p384.pem"
    p.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p.chmod(0o600)
    with pytest.raises(ConfigError, match="P-256"):
        keys.load_signing_key(p)


def test_load_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        keys.load_verifying_key(tmp_path)


# --- trust store -----------------------------------------------------------------------------


def test_trust_store_from_file_and_dir(tmp_path: Path) -> None:
    a, b = keys.generate(), keys.generate("p256")
    (tmp_path / "a.pem").write_bytes(a.public.to_pem())
    (tmp_path / "b.pem").write_bytes(b.public.to_pem())
    (tmp_path / "README").write_text("ignored")
    store = keys.TrustStore.from_path(tmp_path)
    assert len(store) == 2
    assert store.get(a.key_id) == a.public and store.get(b.key_id) == b.public
    assert store.get(b"\x00" * 32) is None
    assert {k.key_id for k in store} == {a.key_id, b.key_id}
    assert [k.key_id for k in store.with_alg("ES256")] == [b.key_id]
    single = keys.TrustStore.from_path(tmp_path / "a.pem")
    assert len(single) == 1 and a.key_id in single


def test_trust_store_empty_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*\.pem"):
        keys.TrustStore.from_path(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        keys.TrustStore.from_path(tmp_path / "missing")


def test_trust_store_skips_private_key_in_dir(tmp_path: Path) -> None:
    """Mistake: `--trust keys/` where keys/ also holds private.pem: the private key is skipped
    (never trusted as such), the public key is used; a dir of only private keys is refused."""
    k = keys.generate()
    keys.write_keypair(tmp_path, k)
    store = keys.TrustStore.from_path(tmp_path)
    assert [v.key_id for v in store] == [k.key_id]
    (tmp_path / "public.pem").unlink()
    with pytest.raises(ConfigError, match=r"skipped private key file\(s\) private\.pem"):
        keys.TrustStore.from_path(tmp_path)
    with pytest.raises(ConfigError, match="private key"):
        keys.TrustStore.from_path(tmp_path / "private.pem")


def test_trust_store_refuses_garbage_pem_in_dir(tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(keys.generate().public.to_pem())
    (tmp_path / "oops.pem").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"oops\.pem"):
        keys.TrustStore.from_path(tmp_path)


def test_trust_store_deduplicates() -> None:
    k = keys.generate()
    assert len(keys.TrustStore([k.public, k.public])) == 1


def test_public_key_given_as_private_says_so_whatever_its_mode(tmp_path: Path) -> None:
    """A newcomer passes --key public.pem (mode 0644): the answer is 'public key', not chmod."""
    _priv, pub = keys.write_keypair(tmp_path, keys.generate())
    pub.chmod(0o644)
    with pytest.raises(ConfigError, match="is a public key") as e:
        keys.load_signing_key(pub)
    assert "chmod" not in str(e.value) + (e.value.hint or "")


def test_existing_keys_error_mentions_force(tmp_path: Path) -> None:
    keys.write_keypair(tmp_path, keys.generate())
    with pytest.raises(ConfigError) as e:
        keys.write_keypair(tmp_path, keys.generate())
    assert "--force" in (e.value.hint or "")
