"""Fuzz the signed model manifest (models/manifest.py): ``.ewsig`` files and manifest payloads.

Input: byte 0 picks the mode, the rest is the data.

* mode 0: a ``.ewsig`` as found next to a model: ``open_manifest`` against the vendor key (a
  fixed Ed25519 key, so that the saved corpus stays signed with it);
* mode 1: a manifest payload (CBOR), parsed with ``decode_manifest`` alone;
* mode 2: a manifest payload signed here with the vendor key, then ``open_manifest``: the
  payload checks after a valid signature (a vendor's own mistake, or a stolen key).

Oracle (see _common.py): only EdgewardError is clean; anything else is a bug. A manifest that
opens must re-encode: ``encode_manifest`` of it raises nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OneInput, main


def setup() -> OneInput:
    from _keys import fixed_key

    from edgeward.core.cose import sign1
    from edgeward.models import manifest as mf

    vendor = fixed_key("vendor", "ed25519")

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0] % 3, data[1:]
        if mode == 0:
            m = mf.open_manifest(body, vendor.public)
        elif mode == 1:
            m = mf.decode_manifest(body)
        else:
            m = mf.open_manifest(sign1(body, vendor, content_type=mf.CONTENT_TYPE),
                                 vendor.public)
        mf.encode_manifest(m)

    return one


if __name__ == "__main__":
    main("manifest", setup)
