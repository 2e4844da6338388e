"""What every part of edgeward shares: the error tree, limits, bounded CBOR, COSE, keys and trust
stores, atomic writes, TOML access, local-socket frames, digests and bounded file reads.

Imports no other part of edgeward (a test reads the imports and holds it to that).
"""
