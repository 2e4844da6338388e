"""Fuzz EAT evidence appraisal through the verifier (attestation/service/verifier.py
``Verifier.verify``: COSE_Sign1 structure, x5chain enrollment, attestation/appraisal.py and
attestation/evidence.py claims decoding, the EAR and the store).

Input: byte 0 picks the mode, the rest is the data.

* mode 0: evidence as a device sends it (COSE_Sign1 with kid and x5chain);
* mode 1: an evidence claims set (CBOR) signed here with the enrolled device key (x5chain of its
  maker certificate in the header): everything after a valid signature;
* mode 2: as mode 1, and the device is enrolled ahead of time (no x5chain needed): appraisal
  against an enrolled record with a last bootcount.

Each input gets a fresh verifier (in-memory store, fixed clock, one issued nonce,
``fuzz/world/refvalues.ewref`` as the board's reference values).

Oracle, stricter than the others: ``Verifier.verify`` promises a signed EAR for every input, so
*any* exception is a bug, an EdgewardError included (one message must never take down a
``verifier run`` worker). The returned EAR must name no device other than the enrolled one, and
its reasons must hold no control characters (device-controlled text in a reason must not forge
extra lines in the EAR or the terminal).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


class VerdictNotReturnedError(AssertionError):
    """Verifier.verify raised instead of returning a verdict."""


class UnescapedReasonError(AssertionError):
    """An EAR reason carries a control character: device text can forge reason lines."""


def setup() -> OneInput:
    import _world

    from edgeward.attestation import claims as C
    from edgeward.attestation.appraisal import Policy
    from edgeward.attestation.nonces import NoncePolicy, Session
    from edgeward.attestation.refvalues import open_refvalues
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.service.verifier_store import DeviceRecord, Store
    from edgeward.core.cose import sign1
    from edgeward.core.errors import EdgewardError

    w = _world.world()
    rv = open_refvalues(_world.REFVALUES.read_bytes(), w.vendor.public)

    def verifier(enrolled: bool) -> Verifier:
        store = Store(":memory:")
        store.put_session(Session(_world.NONCE, _world.DEVICE, _world.NOW - 1, _world.NOW + 59))
        if enrolled:
            k = w.device.public
            store.put_device(DeviceRecord(_world.DEVICE, k.key_id, k.spki_der(), "x509",
                                          "fuzz", _world.NOW - 100, 3, "software"))
        return Verifier(store=store, ear_key=w.ear_key, maker_cas=[w.ca_cert],
                        refvalues={rv.board: rv}, policy=Policy(software_keys="affirming"),
                        nonces=NoncePolicy(ttl=60), clock=lambda: _world.NOW)

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 3, data[1:]
        if mode:
            body = sign1(body, w.device, unprotected={C.COSE_X5CHAIN: w.cert_der})
        v = verifier(enrolled=mode == 2)
        try:
            result = v.verify(body)
        except EdgewardError as e:
            raise VerdictNotReturnedError(f"verify raised {type(e).__name__}: {e}") from e
        finally:
            v.close()
        assert result.device in (None, _world.DEVICE), result.device
        for reason in result.ear.reasons:
            if not reason.isprintable():
                raise UnescapedReasonError(repr(reason))

    return one


if __name__ == "__main__":
    main("evidence", setup)
