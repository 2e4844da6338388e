"""A tiny deterministic CBOR encoder (RFC 8949 §4.2.1) for the lock's microcontroller.

Encodes int, bytes, str, list/tuple, dict (keys sorted by their encoding), bool and None, with
the shortest heads and definite lengths only, so the gateway's verifier computes the same bytes.
No decoder: the microcontroller never parses CBOR from the outside.
"""


def head(major, n):
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 0x100:
        return bytes([(major << 5) | 24, n])
    if n < 0x10000:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")
    return bytes([(major << 5) | 27]) + n.to_bytes(8, "big")


def dumps(obj, depth=0):
    if depth > 16:
        raise ValueError("CBOR nesting too deep")
    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        if obj >= 0:
            return head(0, obj)
        return head(1, -1 - obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return head(2, len(obj)) + bytes(obj)
    if isinstance(obj, str):
        b = obj.encode("utf-8")
        return head(3, len(b)) + b
    if isinstance(obj, (list, tuple)):
        return head(4, len(obj)) + b"".join([dumps(x, depth + 1) for x in obj])
    if isinstance(obj, dict):
        items = sorted([(dumps(k, depth + 1), dumps(v, depth + 1)) for k, v in obj.items()])
        return head(5, len(items)) + b"".join([k + v for k, v in items])
    raise TypeError("cannot encode this type in CBOR")


def tag(number, encoded):
    """Wrap already encoded bytes in a CBOR tag (major type 6)."""
    return head(6, number) + encoded
