"""TPM 2.0 edge: the attestation key, PCR reads and TPM2_Quote, through tpm2-pytss (ESAPI).

This is the only module that imports ``tpm2_pytss``. It connects through a TCTI string
(``"swtpm:host=127.0.0.1,port=2321"`` for the emulator, ``"device:/dev/tpmrm0"`` on a board),
and offers a :class:`~edgeward.firmware_shim.signer.Signer` (``kind == "tpm"``):

* the attestation key (AK) is a primary, restricted ECDSA P-256/SHA-256 signing key in the owner
  hierarchy (TPM 2.0 Part 1 §25.3.1.4 restricted signing keys; template: Part 2 §12.2.4
  TPMT_PUBLIC with ``fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted |
  sign`` and a NULL symmetric algorithm). It is made persistent at ``ak_handle`` with
  TPM2_EvictControl, so it survives restarts and its public key stays the one enrolled. A key
  found at that handle is used only if it has those attributes (:func:`check_ak_public`): a
  restricted key signs quotes and data the TPM hashed itself (with a TPMT_TK_HASHCHECK ticket,
  which the TPM refuses for data that starts with TPM_GENERATED_VALUE), never a digest handed
  in from outside, so software on the device cannot forge a quote with it;
* :meth:`TpmSigner.sign` hashes the message inside the TPM (TPM2_HashSequenceStart /
  SequenceUpdate / SequenceComplete, which returns the TPMT_TK_HASHCHECK ticket a restricted key
  needs, Part 3 §17.5) and signs with TPM2_Sign; it returns ``r || s`` (the COSE ES256 form);
* :meth:`TpmSigner.read_pcrs` reads a SHA-256 PCR bank (TPM2_PCR_Read, 8 PCRs per call);
* :meth:`TpmSigner.quote` runs TPM2_Quote (Part 3 §18.4) with the caller's qualifying data and
  returns the marshalled TPMS_ATTEST and the signature, checked by
  :mod:`edgeward.attestation.tpm_quote` on the verifier.

Every tpm2-pytss exception is translated into :class:`~edgeward.core.errors.TpmError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeward.core.errors import TpmError
from edgeward.core.keys import VerifyingKey
from edgeward.firmware_shim.signer import SignerKind

logger = logging.getLogger(__name__)

DEFAULT_AK_HANDLE = 0x81010020
MAX_HASH_CHUNK = 1024  # MAX_DIGEST_BUFFER of TPM2_SequenceUpdate (Part 2 §10.4.3)


@dataclass(frozen=True)
class TpmQuote:
    """The output of TPM2_Quote: marshalled TPMS_ATTEST and ECDSA signature ``r || s``."""

    attest: bytes
    signature: bytes


def _pytss() -> Any:
    # The TSS libraries print their own "ERROR:tcti:..." lines to stderr; every failure reaches
    # the user as one TpmError line instead. TSS2_LOG=all+debug (set by the user) still wins.
    os.environ.setdefault("TSS2_LOG", "all+none")
    try:
        import tpm2_pytss
    except ImportError as e:  # pragma: no cover - depends on the install
        raise TpmError(
            "tpm2-pytss (the TPM extra) is not installed",
            hint="on Debian or Raspberry Pi OS: apt install libtss2-dev pkg-config python3-dev "
            "build-essential, then pip install 'edgeward[tpm]' (docs/INSTALL-PI.md)",
        ) from e
    return tpm2_pytss


def _ak_attrs(t: Any) -> Any:
    return (
        t.TPMA_OBJECT.FIXEDTPM
        | t.TPMA_OBJECT.FIXEDPARENT
        | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | t.TPMA_OBJECT.USERWITHAUTH
        | t.TPMA_OBJECT.RESTRICTED
        | t.TPMA_OBJECT.SIGN_ENCRYPT
    )


def check_ak_public(t: Any, area: Any, handle: int) -> None:
    """Refuse a key at the AK handle that is not a restricted, TPM-bound P-256 signing key."""
    need = int(_ak_attrs(t))
    attrs = int(area.objectAttributes)
    if attrs & need != need or attrs & int(t.TPMA_OBJECT.DECRYPT):
        raise TpmError(
            f"the key at handle 0x{handle:x} is not a restricted TPM signing key "
            f"(attributes 0x{attrs:08x}); it could sign any digest",
            hint="evict it (tpm2_evictcontrol) and let edgeward create the attestation key, "
            "then enroll the new key",
        )
    if (int(area.type) != int(t.TPM2_ALG.ECC)
            or int(area.parameters.eccDetail.curveID) != int(t.TPM2_ECC.NIST_P256)):
        raise TpmError(f"the key at handle 0x{handle:x} is not an ECC P-256 key")


def _ak_template(t: Any) -> Any:
    public = t.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=_ak_attrs(t))
    public.parameters.eccDetail.symmetric.algorithm = t.TPM2_ALG.NULL
    return t.TPM2B_PUBLIC(public)


class TpmSigner:
    """An attestation key in a TPM 2.0, plus the PCR and quote operations that go with it."""

    kind: SignerKind = "tpm"
    alg = "ES256"

    def __init__(self, tcti: str, *, ak_handle: int = DEFAULT_AK_HANDLE) -> None:
        t = _pytss()
        self._t = t
        self.tcti = tcti
        try:
            from tpm2_pytss.TCTILdr import TCTILdr

            self._tcti = TCTILdr.parse(tcti)
            self._esys = t.ESAPI(self._tcti)
        except Exception as e:
            raise TpmError(f"cannot open the TPM through TCTI '{tcti}': {e}",
                           hint="is the TPM (or swtpm) running?") from e
        try:
            self._ak = self._load_or_create_ak(ak_handle)
            pub, _name, _qname = self._esys.read_public(self._ak)
            check_ak_public(t, pub.publicArea, ak_handle)
            pem = pub.publicArea.to_pem()
        except t.TSS2_Exception as e:
            self.close()
            raise TpmError(f"TPM attestation key setup failed: {e}") from e
        except TpmError:
            self.close()
            raise
        self.public = VerifyingKey.from_pem(bytes(pem))
        self.key_id = self.public.key_id
        logger.info("TPM attestation key %s at handle 0x%x", self.key_id.hex()[:16], ak_handle)

    def _load_or_create_ak(self, handle: int) -> Any:
        t = self._t
        esys = self._esys
        _more, data = esys.get_capability(t.TPM2_CAP.HANDLES, t.TPM2_HC.PERSISTENT_FIRST, 64)
        if handle in list(data.data.handles):
            return esys.tr_from_tpmpublic(handle)
        logger.warning("creating a new TPM attestation key at 0x%x; enroll its public key", handle)
        tr, _pub, _cd, _ch, _tk = esys.create_primary(None, _ak_template(t), t.ESYS_TR.OWNER)
        try:
            return esys.evict_control(t.ESYS_TR.OWNER, tr, handle)
        finally:
            esys.flush_context(tr)

    def sign(self, msg: bytes) -> bytes:
        """Hash ``msg`` in the TPM (with a hashcheck ticket) and sign with the restricted AK."""
        if not msg:
            raise ValueError("the TPM cannot sign an empty message with a restricted key")
        t = self._t
        esys = self._esys
        try:
            chunks = [msg[i : i + MAX_HASH_CHUNK] for i in range(0, len(msg), MAX_HASH_CHUNK)]
            seq = esys.hash_sequence_start(None, t.TPM2_ALG.SHA256)
            for chunk in chunks[:-1]:
                esys.sequence_update(seq, chunk)
            digest, ticket = esys.sequence_complete(seq, chunks[-1], t.ESYS_TR.OWNER)
            sig = esys.sign(self._ak, digest, t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL), ticket)
        except t.TSS2_Exception as e:
            raise TpmError(f"TPM signing failed: {e}") from e
        return self._rs(sig)

    @staticmethod
    def _rs(sig: Any) -> bytes:
        r = bytes(sig.signature.ecdsa.signatureR)
        s = bytes(sig.signature.ecdsa.signatureS)
        return r.rjust(32, b"\0") + s.rjust(32, b"\0")

    @staticmethod
    def _selection(pcrs: Iterable[int]) -> str:
        return "sha256:" + ",".join(str(i) for i in sorted(set(pcrs)))

    def read_pcrs(self, pcrs: Iterable[int]) -> dict[int, bytes]:
        """Read SHA-256 PCR values, ``{index: digest}`` (TPM2_PCR_Read, Part 3 §22.4)."""
        t = self._t
        wanted = sorted(set(pcrs))
        out: dict[int, bytes] = {}
        try:
            for i in range(0, len(wanted), 8):
                chunk = wanted[i : i + 8]
                _cnt, _sel, digests = self._esys.pcr_read(self._selection(chunk))
                values = [bytes(d) for d in digests]
                if len(values) != len(chunk):
                    raise TpmError(f"the TPM returned {len(values)} of {len(chunk)} PCRs")
                out.update(zip(chunk, values, strict=True))
        except t.TSS2_Exception as e:
            raise TpmError(f"TPM PCR read failed: {e}") from e
        return out

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """TPM2_PCR_Extend of the SHA-256 bank (measured boot; tests and the simulator)."""
        t = self._t
        try:
            handle = getattr(t.ESYS_TR, f"PCR{index}")
            values = t.TPML_DIGEST_VALUES(
                [t.TPMT_HA(hashAlg=t.TPM2_ALG.SHA256, digest=t.TPMU_HA(sha256=digest))]
            )
            self._esys.pcr_extend(handle, values)
        except t.TSS2_Exception as e:
            raise TpmError(f"TPM PCR extend failed: {e}") from e

    def quote(self, qualifying_data: bytes, pcrs: Iterable[int]) -> TpmQuote:
        """TPM2_Quote over the SHA-256 ``pcrs`` with ``qualifying_data`` as extraData."""
        t = self._t
        try:
            quoted, sig = self._esys.quote(self._ak, self._selection(pcrs), qualifying_data)
        except t.TSS2_Exception as e:
            raise TpmError(f"TPM2_Quote failed: {e}") from e
        raw = bytes(quoted.marshal())[2:]  # strip the TPM2B size
        return TpmQuote(attest=raw, signature=self._rs(sig))

    def close(self) -> None:
        esys = getattr(self, "_esys", None)
        if esys is not None:
            esys.close()
            self._esys = None

    def __enter__(self) -> TpmSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
