"""Signing keys, verifying keys, key files and the trust store.

Two algorithms, as COSE names them (RFC 9053 §2.1, §2.2): ``EdDSA`` with Ed25519 and ``ES256``
(ECDSA with P-256 and SHA-256). Signatures are in COSE's format: Ed25519's 64 bytes, and for
ES256 the fixed-length ``r || s`` (32 + 32 bytes, RFC 9053 §2.1), not DER.

A key's id is the SHA-256 of its public key's SubjectPublicKeyInfo DER (RFC 5280 §4.1.2.7), so
it is the same on every machine and in every file format.

The key *objects* do no I/O. The file edges are :func:`write_keypair`, :func:`load_signing_key`,
:func:`load_verifying_key` and :meth:`TrustStore.from_path`; they raise
:class:`~edgeward.core.errors.ConfigError` with the path and the fix. Private key files are
written with mode 0600 from the first byte and refused when group or others can read them.
Key material is never logged; key ids are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from edgeward.core.errors import ConfigError, DeviceError, SignatureError
from edgeward.core.fileio import OPERATOR, open_bounded
from edgeward.core.persist import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "ALG_EDDSA",
    "ALG_ES256",
    "SigningKey",
    "TrustStore",
    "VerifyingKey",
    "generate",
    "load_signing_key",
    "load_verifying_key",
    "write_keypair",
]

ALG_EDDSA = "EdDSA"
ALG_ES256 = "ES256"
_P256_BYTES = 32
_MAX_KEY_FILE = 64 * 1024
_GEN_HINT = "create one with `edgeward keys generate --out DIR`"

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _alg_of_public(public_key: Any) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ALG_EDDSA
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return ALG_ES256
    raise ConfigError(
        f"unsupported public key type {type(public_key).__name__}",
        hint="use an Ed25519 or P-256 key",
    )


def _spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class VerifyingKey:
    """A public key that verifies COSE-format signatures. Does no I/O."""

    __slots__ = ("_key", "alg", "key_id")

    def __init__(self, public_key: PublicKey, *, key_id: bytes | None = None) -> None:
        self.alg: str = _alg_of_public(public_key)
        self._key = public_key
        self.key_id: bytes = (
            key_id if key_id is not None else hashlib.sha256(_spki_der(public_key)).digest()
        )

    @classmethod
    def from_crypto(cls, public_key: Any, *, key_id: bytes | None = None) -> VerifyingKey:
        """Wrap a cryptography public key (Ed25519 or P-256; ConfigError otherwise).

        ``key_id`` overrides the SHA-256-of-SPKI id, for interop with messages from other
        systems that name keys differently (e.g. the COSE WG examples' ``kid: "11"``).
        """
        return cls(public_key, key_id=key_id)

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyingKey:
        """Parse a PEM SubjectPublicKeyInfo (``BEGIN PUBLIC KEY``). ConfigError if it is not one."""
        if b"PRIVATE KEY" in data:
            raise ConfigError(
                "this is a private key, not a public key",
                hint="give the public.pem that was written next to it",
            )
        try:
            public_key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm, TypeError) as e:
            raise ConfigError(
                "not a PEM public key", hint="expected '-----BEGIN PUBLIC KEY-----'"
            ) from e
        return cls(public_key)  # type: ignore[arg-type]

    @property
    def crypto_key(self) -> PublicKey:
        """The underlying cryptography public key (for X.509 and other uses)."""
        return self._key

    def spki_der(self) -> bytes:
        return _spki_der(self._key)

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify a COSE-format signature over ``message``; raise SignatureError if it fails."""
        if not isinstance(signature, bytes) or len(signature) != 64:
            raise SignatureError(f"{self.alg} signature must be 64 bytes")
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, message)
            else:
                r = int.from_bytes(signature[:_P256_BYTES], "big")
                s = int.from_bytes(signature[_P256_BYTES:], "big")
                self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError(
                f"signature does not verify with key {self.key_id.hex()[:16]}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and self.spki_der() == other.spki_der()

    def __hash__(self) -> int:
        return hash(self.spki_der())

    def __repr__(self) -> str:
        return f"VerifyingKey(alg={self.alg!r}, key_id={self.key_id.hex()[:16]}...)"


class SigningKey:
    """A private key that makes COSE-format signatures. Does no I/O."""

    __slots__ = ("_key", "alg", "key_id", "public")

    def __init__(self, private_key: PrivateKey) -> None:
        if not isinstance(private_key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(
                f"unsupported private key type {type(private_key).__name__}",
                hint="use an Ed25519 or P-256 key",
            )
        self._key = private_key
        self.public: VerifyingKey = VerifyingKey(private_key.public_key())
        self.alg: str = self.public.alg
        self.key_id: bytes = self.public.key_id

    @property
    def crypto_key(self) -> PrivateKey:
        """The underlying cryptography private key (for X.509 CSRs and certificates)."""
        return self._key

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; 64 bytes (Ed25519, or ES256 ``r || s``)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(message)
        der = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (the file protection is mode 0600)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, key_id={self.key_id.hex()[:16]}...)"


def generate(alg: str = "ed25519") -> SigningKey:
    """A new key: ``"ed25519"`` (COSE EdDSA) or ``"p256"`` (COSE ES256)."""
    name = alg.lower()
    if name == "ed25519":
        return SigningKey(ed25519.Ed25519PrivateKey.generate())
    if name in ("p256", "p-256"):
        return SigningKey(ec.generate_private_key(ec.SECP256R1()))
    raise ConfigError(f"unknown key algorithm {alg!r}", hint="use 'ed25519' or 'p256'")


# --- file edges -----------------------------------------------------------------------------


_EXISTS_HINT = "pass --force to replace them, or choose another --out directory"


def write_keypair(out_dir: Path, key: SigningKey, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``private.pem`` (mode 0600) and ``public.pem`` into ``out_dir``.

    Refuses to overwrite either file (ConfigError) unless ``force``. Each file is written to a
    temp file in the same directory and moved into place, then the directory is fsynced.
    """
    out_dir = Path(out_dir)
    private_path = out_dir / "private.pem"
    public_path = out_dir / "public.pem"
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not force:
            for p in (private_path, public_path):
                if p.exists() or p.is_symlink():
                    raise ConfigError(
                        f"{p} already exists",
                        hint=_EXISTS_HINT,
                    )
        write_atomic(private_path, key.private_pem(), mode=0o600, overwrite=force)
        write_atomic(public_path, key.public.to_pem(), mode=0o644, overwrite=force)
    except FileExistsError as e:
        raise ConfigError(
            f"{e.filename2 or out_dir} already exists",
            hint=_EXISTS_HINT,
        ) from e
    except (OSError, DeviceError) as e:
        raise ConfigError(
            f"cannot write keys to {out_dir}: {getattr(e, 'strerror', None) or e}",
            hint="check that the directory is writable",
        ) from e
    logger.info("wrote %s key %s to %s", key.alg, key.key_id.hex()[:16], out_dir)
    return private_path, public_path


def _read_key_file(path: Path, what: str) -> tuple[bytes, os.stat_result]:
    with open_bounded(path, _MAX_KEY_FILE, what=f"{what} file", faults=OPERATOR,
                      hint=_GEN_HINT) as f:
        return f.read(), f.stat


def load_signing_key(path: Path) -> SigningKey:
    """Load a PEM private key (PKCS#8; Ed25519 or P-256) that only its owner can read."""
    path = Path(path)
    data, st = _read_key_file(path, "private key")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise ConfigError(
            f"{path} is a public key, where a private key is needed",
            hint="pass the private.pem that `edgeward keys generate` wrote beside it",
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"run `chmod 600 {path}`",
        )
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise ConfigError(
            f"private key file {path} is password-protected",
            hint="write it unencrypted with mode 0600 (e.g. `edgeward keys generate`)",
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(
            f"{path} is not a PEM private key",
            hint="expected '-----BEGIN PRIVATE KEY-----' (PKCS#8, Ed25519 or P-256); " + _GEN_HINT,
        ) from e
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise ConfigError(
            f"{path} holds an EC key on {private_key.curve.name}", hint="use Ed25519 or P-256"
        )
    try:
        return SigningKey(private_key)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", hint=e.hint) from e


def load_verifying_key(path: Path) -> VerifyingKey:
    """Load a PEM public key (SubjectPublicKeyInfo; Ed25519 or P-256)."""
    path = Path(path)
    data, _ = _read_key_file(path, "public key")
    try:
        return VerifyingKey.from_pem(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", hint=e.hint) from e


class TrustStore:
    """The set of public keys whose signatures are accepted, looked up by key id. No I/O."""

    def __init__(self, keys: Iterable[VerifyingKey]) -> None:
        self._by_id: dict[bytes, VerifyingKey] = {}
        for k in keys:
            if not isinstance(k, VerifyingKey):
                raise TypeError(f"TrustStore holds VerifyingKey objects, not {type(k).__name__}")
            self._by_id.setdefault(k.key_id, k)

    @classmethod
    def from_path(cls, path: Path) -> TrustStore:
        """Load one PEM public key file, or every ``*.pem`` public key in a directory.

        In a directory, files holding a *private* key (e.g. the ``private.pem`` that
        ``edgeward keys generate`` writes next to ``public.pem``) are skipped with a warning; a
        private key given as the file itself is a ConfigError. ConfigError if no key is found.
        """
        path = Path(path)
        if path.is_dir():
            found: list[VerifyingKey] = []
            skipped: list[str] = []
            for p in sorted(p for p in path.glob("*.pem") if p.is_file()):
                data, _ = _read_key_file(p, "public key")
                if b"PRIVATE KEY" in data:
                    logger.info("trust directory: skipping private key file %s", p)
                    skipped.append(p.name)
                    continue
                try:
                    found.append(VerifyingKey.from_pem(data))
                except ConfigError as e:
                    raise ConfigError(f"{p}: {e.message}", hint=e.hint) from e
            if not found:
                extra = f" (skipped private key file(s) {', '.join(skipped)})" if skipped else ""
                raise ConfigError(
                    f"trust directory {path} holds no *.pem public keys{extra}",
                    hint="copy the signer's public.pem into it",
                )
            store = cls(found)
        elif path.exists():
            store = cls([load_verifying_key(path)])
        else:
            raise ConfigError(
                f"trust path {path} does not exist",
                hint="give the signer's public.pem or a directory of public keys",
            )
        logger.debug("trust store from %s: %s", path, ", ".join(k.key_id.hex()[:16] for k in store))
        return store

    def get(self, key_id: bytes) -> VerifyingKey | None:
        return self._by_id.get(bytes(key_id))

    def with_alg(self, alg: str) -> list[VerifyingKey]:
        """The trusted keys of one algorithm (``"EdDSA"`` or ``"ES256"``)."""
        return [k for k in self._by_id.values() if k.alg == alg]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[VerifyingKey]:
        return iter(self._by_id.values())

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, bytes | bytearray) and bytes(key_id) in self._by_id

    def __repr__(self) -> str:
        return f"TrustStore({len(self)} keys)"
