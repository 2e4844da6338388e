"""COSE_Mac0 with HMAC 256/256 (RFC 9052 §6.2, §6.3; RFC 9053 §3.1) for the microcontroller.

``COSE_Mac0 = [protected: bstr {1: 5, 4: kid}, unprotected: {}, payload: bstr, tag: bstr]``,
tagged 17. The tag is HMAC-SHA256 over ``MAC_structure = ["MAC0", protected, external_aad,
payload]``. HMAC (RFC 2104) is written out over ``hashlib.sha256`` because not every MicroPython
port has an ``hmac`` module. Public-key signing is too slow on these chips; the per-device key
is provisioned at manufacture and registered with the verifier.
"""

import hashlib

from . import cbor

ALG_HMAC_256_256 = 5
COSE_MAC0_TAG = 17
BLOCK = 64


def hmac_sha256(key, msg):
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(BLOCK - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def mac_structure(protected, payload, external_aad=b""):
    return cbor.dumps(["MAC0", protected, external_aad, payload])


def mac0(payload, key, kid):
    """The tagged COSE_Mac0 bytes authenticating ``payload`` under ``key``."""
    protected = cbor.dumps({1: ALG_HMAC_256_256, 4: kid})
    tag = hmac_sha256(key, mac_structure(protected, payload))
    return cbor.tag(COSE_MAC0_TAG, cbor.dumps([protected, {}, payload, tag]))
