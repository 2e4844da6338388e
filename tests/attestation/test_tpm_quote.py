"""TPM path against a real swtpm: AK, PCRs, quote, and the pure TPMS_ATTEST checks."""

from __future__ import annotations

import hashlib

import pytest

from edgeward.attestation import tpm_quote
from edgeward.attestation.tpm_quote import QuoteMismatchError, qualifying_data, verify_quote
from edgeward.core.errors import MalformedInputError, SignatureError


@pytest.fixture
def tpm(swtpm):
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    with TpmSigner(swtpm.tcti) as signer:
        yield signer


def test_ak_is_persistent_and_p256(swtpm, tpm):
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    assert tpm.alg == "ES256" and tpm.kind == "tpm"
    with TpmSigner(swtpm.tcti) as again:
        assert again.key_id == tpm.key_id


def test_tpm_sign_verifies_including_long_messages(tpm):
    for msg in (b"short", b"x" * 1024, b"x" * 5000):
        tpm.public.verify(msg, tpm.sign(msg))


def test_quote_verifies_and_binds_nonce_and_pcrs(tpm):
    tpm.extend_pcr(7, hashlib.sha256(b"secure boot on").digest())
    nonce = b"n" * 32
    pcrs = tpm.read_pcrs(range(8))
    q = tpm.quote(qualifying_data(nonce), pcrs)
    info = verify_quote(q.attest, q.signature, tpm.public.crypto_key, eat_nonce=nonce, pcrs=pcrs)
    assert info.selection == ((tpm_quote.TPM_ALG_SHA256, tuple(range(8))),)


def test_attack_quote_over_another_nonce(tpm):
    pcrs = tpm.read_pcrs(range(8))
    q = tpm.quote(qualifying_data(b"old" * 8), pcrs)
    with pytest.raises(QuoteMismatchError, match="another nonce"):
        verify_quote(q.attest, q.signature, tpm.public.crypto_key, eat_nonce=b"new" * 8, pcrs=pcrs)


def test_attack_reported_pcrs_differ_from_quoted(tpm):
    pcrs = tpm.read_pcrs(range(8))
    q = tpm.quote(qualifying_data(b"n" * 16), pcrs)
    forged = dict(pcrs)
    forged[0] = b"\x11" * 32
    with pytest.raises(QuoteMismatchError, match="PCR digest"):
        verify_quote(q.attest, q.signature, tpm.public.crypto_key, eat_nonce=b"n" * 16, pcrs=forged)


def test_attack_tampered_attest_fails_signature(tpm):
    pcrs = tpm.read_pcrs(range(4))
    q = tpm.quote(qualifying_data(b"n" * 16), pcrs)
    bad = q.attest[:-1] + bytes([q.attest[-1] ^ 1])
    with pytest.raises(SignatureError):
        verify_quote(bad, q.signature, tpm.public.crypto_key, eat_nonce=b"n" * 16, pcrs=pcrs)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\x54\x43\x47", b"\x00" * 40, b"\xff\x54\x43\x47\x80\x17" + b"\x00" * 40],
)
def test_malformed_attest_is_refused(data):
    with pytest.raises(MalformedInputError):
        tpm_quote.parse_attest(data)
