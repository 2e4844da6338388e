"""The one error tree of edgeward.

Every error the product raises on purpose is an :class:`EdgewardError`. The branches are named
for whose fault the failure is, and each branch carries the process exit code that DESIGN.md
fixes for every command:

====================  ====  ==========================================================
branch                exit  meaning
====================  ====  ==========================================================
ConfigError           1     usage or configuration error (the operator can fix it)
IntegrityError        2     untrusted input failed a check: signature, digest,
                            rollback, policy, malformed model or CBOR
AttestationError      2     freshness, replay, unknown device, negative appraisal
TransportError        3     broker, network, socket failures
DeviceError           3     local I/O, TPM or runtime missing or failing
====================  ====  ==========================================================

Third-party exceptions are translated at the edge that called the library and chained with
``raise ... from e``. Code never returns error codes. Misuse of an API (wrong call order) raises
the built-in :class:`RuntimeError`, which is a bug, not a verdict.

This module does no I/O.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_REJECTED = 2
EXIT_OPERATIONAL = 3


class EdgewardError(Exception):
    """Base of every deliberate edgeward error.

    ``str(err)`` is one line that says what failed and, where the operator can act, what to do.
    """

    exit_code: int = EXIT_OPERATIONAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


# --- configuration (exit 1) ---------------------------------------------------------------


class ConfigError(EdgewardError):
    """The operator's input is wrong: a bad option, file, key or value in a configuration."""

    exit_code = EXIT_USAGE


class MissingFileError(ConfigError):
    """A file the operator named (or the product expects) does not exist."""


# --- integrity (exit 2): untrusted input failed a check --------------------------------------


class IntegrityError(EdgewardError):
    """Untrusted input failed a check. The input is rejected; nothing from it is used."""

    exit_code = EXIT_REJECTED


class SignatureError(IntegrityError):
    """A signature does not verify, or was made by a key that is not trusted."""


class UntrustedKeyError(SignatureError):
    """The signer's key id is not in the trust store."""


class DigestMismatchError(IntegrityError):
    """Bytes on disk differ from the digest or size a signed manifest binds."""


class RollbackError(IntegrityError):
    """A version lower than one already accepted was offered (anti-rollback)."""


class PolicyError(IntegrityError):
    """Input is well-formed and authentic but the policy forbids it (custom ops, profile)."""


class MalformedInputError(IntegrityError):
    """Input does not parse within the limits: bad CBOR, COSE, flatbuffer, frame, payload."""


class MalformedModelError(MalformedInputError):
    """A TFLite flatbuffer failed structural validation."""


# --- attestation (exit 2) ---------------------------------------------------------------------


class AttestationError(EdgewardError):
    """Attestation did not succeed: freshness, replay, unknown device, negative appraisal."""

    exit_code = EXIT_REJECTED


class FreshnessError(AttestationError):
    """A nonce that was never issued, expired, used, or issued to another device."""


class ReplayError(FreshnessError):
    """Evidence, a command or a nonce that was already consumed."""


class UnknownDeviceError(AttestationError):
    """The device is not enrolled, or its key is not endorsed by a trusted CA."""


# --- operational (exit 3) ---------------------------------------------------------------------


class TransportError(EdgewardError):
    """The network or the broker failed: unreachable, refused, timed out."""

    exit_code = EXIT_OPERATIONAL


class DeviceError(EdgewardError):
    """Something local failed: file I/O, a missing runtime, the TPM."""

    exit_code = EXIT_OPERATIONAL


class RuntimeMissingError(DeviceError):
    """Neither ai-edge-litert nor tflite-runtime can be imported."""


class TpmError(DeviceError):
    """The TPM is missing or a TPM command failed."""
