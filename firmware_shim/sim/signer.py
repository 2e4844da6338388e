"""Software evidence signer: an Ed25519 or P-256 key from a file (``kind == "software"``).

Used on boards without a TPM, in tests and in the simulator. The key file is read with
:func:`edgeward.core.keys.load_signing_key`, which refuses a file that group or others can
read (mode 0600). Reading that file is the only I/O.
"""

from __future__ import annotations

from pathlib import Path

from edgeward.core import keys
from edgeward.core.keys import SigningKey, VerifyingKey
from edgeward.firmware_shim.signer import SignerKind


class SoftwareSigner:
    """A :class:`~edgeward.firmware_shim.signer.Signer` over a :class:`SigningKey`."""

    kind: SignerKind = "software"

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.alg: str = key.alg
        self.key_id: bytes = key.key_id
        self.public: VerifyingKey = key.public

    @classmethod
    def generate(cls, alg: str = "ed25519") -> SoftwareSigner:
        return cls(keys.generate(alg))

    @classmethod
    def from_file(cls, path: Path) -> SoftwareSigner:
        return cls(keys.load_signing_key(path))

    @property
    def signing_key(self) -> SigningKey:
        return self._key

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)
