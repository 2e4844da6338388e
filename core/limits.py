"""Safety limits, as configuration defaults (STYLE.md: limits are config defaults).

Every parser takes a :class:`Limits` (or uses :data:`DEFAULT_LIMITS`) and refuses input past
these bounds with :class:`~edgeward.core.errors.MalformedInputError` before doing work that
grows with the input. Agent and verifier configuration files may override any field.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # models
    max_model_bytes: int = 1024 * MiB
    max_subgraphs: int = 16
    max_tensors: int = 100_000
    max_operators: int = 100_000
    max_buffers: int = 100_000
    max_tensor_rank: int = 8
    max_tensor_elements: int = 1 << 31
    max_vector_length: int = 1 << 24
    max_string_bytes: int = 64 * 1024
    # CBOR / COSE
    max_cbor_bytes: int = 1 * MiB
    max_cbor_depth: int = 16
    max_cbor_items: int = 100_000
    # manifests
    max_manifest_files: int = 64
    # OpenSSF model-signing bundles (JSON)
    max_ossf_bundle_bytes: int = 1 * MiB


DEFAULT_LIMITS = Limits()
