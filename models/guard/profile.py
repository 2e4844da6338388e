"""The guard's calibrated profile: statistics and thresholds, bound to one model and signed.

A profile is deterministic CBOR (RFC 8949 §4.2.1) in a COSE_Sign1 envelope (RFC 9052 §4.2) made
with the model's signing key. It is bound to the model twice:

* its payload records the SHA-256 of the model bytes it was calibrated on, and
  :func:`open_profile` refuses it for any other model (:class:`DigestMismatchError`);
* the model's signed manifest names the SHA-256 of the profile file
  (``Manifest.profile_sha256``), so swapping in another validly signed profile is refused too
  (:func:`check_manifest_binding`).

A tampered, unsigned, oversized or malformed profile raises the ``IntegrityError`` family
(exit 2). An unsigned profile (bare CBOR) is accepted only with ``allow_unsigned=True``, for
development, and logged as a warning each time.

Pure: bytes in, :class:`Profile` out, and back. No I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeward.core import cbor
from edgeward.core.cose import verify1
from edgeward.core.errors import DigestMismatchError, MalformedInputError, SignatureError
from edgeward.core.keys import SigningKey, TrustStore, VerifyingKey
from edgeward.core.limits import DEFAULT_LIMITS, Limits

from .detectors import InputSpec, InputStats
from .features import FeatureModel, decode_features, encode_features
from .stats import TailModel

logger = logging.getLogger(__name__)

PROFILE_VERSION = 1
CONTENT_TYPE = "application/vnd.edgeward.guard-profile+cbor"
MAX_PROFILE_BYTES = 4 * 1024 * 1024  # room for a kNN bank and a feature covariance
MAX_DIM = 1 << 20

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class SqueezeConfig:
    bits: int = 3
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) for median smoothing
    rate: float = 0.1  # fraction of invokes that pay for the extra inferences


@dataclass(frozen=True)
class DriftConfig:
    """Streaming change detection on the combined score (see ``stats.py``)."""

    mu: float
    sigma: float
    k: float
    h: float
    window: int
    step: int
    alpha: float
    z_crit: float
    ref: F64  # sorted clean combined scores, the windowed test's reference


@dataclass(frozen=True)
class Profile:
    """Everything the guard needs at run time, calibrated on clean data for one model."""

    model_sha256: bytes
    fpr: float
    spec: InputSpec
    stats: InputStats
    output_kind: str  # "probs" (softmax model) or "logits"
    energy_source: str  # "logits", "preserved-logits" or "none"
    tails: dict[str, TailModel]  # detector name -> clean score distribution
    thresholds: dict[str, float]  # detector name -> own threshold at ``fpr``
    threshold: float  # combined surprise threshold at ``fpr``
    critical: float  # combined surprise at or above which a verdict is critical
    squeeze: SqueezeConfig
    drift: DriftConfig
    n_calibration: int
    # Optional parts (absent from the encoding when unset, so older profiles decode unchanged):
    features: FeatureModel | None = None  # penultimate-layer detectors (features.py)
    weights: dict[str, float] | None = None  # weighted-surprise combination; None: max surprise
    invoke_s: float = 0.0  # median invoke time at calibration (the latency baseline); 0: unknown

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(sorted(self.tails))


# --- encoding ------------------------------------------------------------------------------------


def _arr(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype="<f8")
    return {"shape": list(a.shape), "f8": a.tobytes()}


def _unarr(obj: Any, what: str, ndim: int) -> F64:
    if not isinstance(obj, dict) or set(obj) != {"shape", "f8"}:
        raise MalformedInputError(f"profile field {what} is not an array")
    shape, raw = obj["shape"], obj["f8"]
    if (
        not isinstance(shape, list)
        or len(shape) != ndim
        or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_DIM for n in shape
        )
        or not isinstance(raw, bytes)
    ):
        raise MalformedInputError(f"profile field {what} has a bad shape or data")
    if len(raw) != 8 * int(np.prod(shape)):
        raise MalformedInputError(f"profile field {what} has {len(raw)} bytes for shape {shape}")
    out = np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64)
    if not np.isfinite(out).all():
        raise MalformedInputError(f"profile field {what} holds NaN or Inf")
    return out


def encode_profile(p: Profile) -> bytes:
    """Deterministic CBOR of ``p`` (the COSE payload)."""
    m = _encode_base(p)
    if p.features is not None:
        m["features"] = encode_features(p.features)
    if p.weights is not None:
        m["weights"] = {k: float(v) for k, v in p.weights.items()}
    if p.invoke_s:
        m["invoke_s"] = float(p.invoke_s)
    return cbor.dumps(m)


def _encode_base(p: Profile) -> dict[str, Any]:
    return dict(
        {
            "v": PROFILE_VERSION,
            "model_sha256": p.model_sha256,
            "fpr": float(p.fpr),
            "input": {
                "shape": list(p.spec.shape),
                "dtype": p.spec.dtype,
                "lo": float(p.spec.lo),
                "hi": float(p.spec.hi),
            },
            "stats": {
                "mean": _arr(p.stats.mean),
                "scale": _arr(p.stats.scale),
                "precision": _arr(p.stats.precision),
                "shrinkage": float(p.stats.shrinkage),
            },
            "output": {"kind": p.output_kind, "energy": p.energy_source},
            "tails": {k: _arr(t.ref) for k, t in p.tails.items()},
            "thresholds": {k: float(v) for k, v in p.thresholds.items()},
            "threshold": float(p.threshold),
            "critical": float(p.critical),
            "squeeze": {
                "bits": p.squeeze.bits,
                "rate": float(p.squeeze.rate),
                "image_shape": list(p.squeeze.image_shape) if p.squeeze.image_shape else None,
            },
            "drift": {
                "mu": float(p.drift.mu),
                "sigma": float(p.drift.sigma),
                "k": float(p.drift.k),
                "h": float(p.drift.h),
                "window": p.drift.window,
                "step": p.drift.step,
                "alpha": float(p.drift.alpha),
                "z_crit": float(p.drift.z_crit),
                "ref": _arr(p.drift.ref),
            },
            "n": p.n_calibration,
        }
    )


def _get(m: Any, key: str, typ: type | tuple[type, ...], what: str = "") -> Any:
    if not isinstance(m, dict) or key not in m:
        raise MalformedInputError(f"profile has no field {what}{key}")
    v = m[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
        raise MalformedInputError(f"profile field {what}{key} has the wrong type")
    return v


def decode_profile(payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Profile:
    """Parse a profile payload; any structural problem is a :class:`MalformedInputError`."""
    lim = Limits(
        max_cbor_bytes=max(limits.max_cbor_bytes, MAX_PROFILE_BYTES),
        max_cbor_depth=limits.max_cbor_depth,
        max_cbor_items=limits.max_cbor_items,
    )
    m = cbor.loads(payload, limits=lim)
    if _get(m, "v", int) != PROFILE_VERSION:
        raise MalformedInputError(f"profile version {m['v']} is not {PROFILE_VERSION}")
    digest = _get(m, "model_sha256", bytes)
    if len(digest) != 32:
        raise MalformedInputError("profile model_sha256 is not 32 bytes")
    fpr = _get(m, "fpr", float)
    inp = _get(m, "input", dict)
    shape = _get(inp, "shape", list, "input.")
    if not shape or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_DIM for n in shape
    ):
        raise MalformedInputError("profile input.shape is not a list of positive sizes")
    spec = InputSpec(
        shape=tuple(shape),
        dtype=_get(inp, "dtype", str, "input."),
        lo=_get(inp, "lo", float, "input."),
        hi=_get(inp, "hi", float, "input."),
    )
    if spec.dtype not in ("float32", "int8", "uint8"):
        raise MalformedInputError(f"profile input dtype {spec.dtype!r} is not supported")
    st = _get(m, "stats", dict)
    d = spec.size
    stats = InputStats(
        mean=_unarr(st.get("mean"), "stats.mean", 1),
        scale=_unarr(st.get("scale"), "stats.scale", 1),
        precision=_unarr(st.get("precision"), "stats.precision", 2),
        shrinkage=_get(st, "shrinkage", float, "stats."),
    )
    if (
        stats.mean.shape != (d,)
        or stats.scale.shape != (d,)
        or stats.precision.shape not in ((d, d), (1, d))
    ):
        raise MalformedInputError("profile statistics do not match the input size")
    if (stats.scale <= 0).any():
        raise MalformedInputError("profile stats.scale is not positive")
    out = _get(m, "output", dict)
    kind, energy = _get(out, "kind", str, "output."), _get(out, "energy", str, "output.")
    if kind not in ("probs", "logits") or energy not in ("logits", "preserved-logits", "none"):
        raise MalformedInputError("profile output kind or energy source is unknown")
    tails = {
        str(k): TailModel(ref=np.sort(_unarr(v, f"tails.{k}", 1)))
        for k, v in _get(m, "tails", dict).items()
    }
    thresholds = {
        str(k): float(v)
        for k, v in _get(m, "thresholds", dict).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not tails or set(thresholds) != set(tails):
        raise MalformedInputError("profile tails and thresholds do not name the same detectors")
    sq = _get(m, "squeeze", dict)
    ishape = sq.get("image_shape")
    if ishape is not None and (
        not isinstance(ishape, list)
        or len(ishape) != 3
        or any(not isinstance(n, int) or n <= 0 for n in ishape)
        or int(np.prod(ishape)) != d
    ):
        raise MalformedInputError("profile squeeze.image_shape does not fit the input")
    bits = _get(sq, "bits", int, "squeeze.")
    rate = _get(sq, "rate", float, "squeeze.")
    if not 1 <= bits <= 16 or not 0.0 <= rate <= 1.0:
        raise MalformedInputError("profile squeeze bits or rate out of range")
    dr = _get(m, "drift", dict)
    drift = DriftConfig(
        mu=_get(dr, "mu", float),
        sigma=_get(dr, "sigma", float),
        k=_get(dr, "k", float),
        h=_get(dr, "h", float),
        window=_get(dr, "window", int),
        step=_get(dr, "step", int),
        alpha=_get(dr, "alpha", float),
        z_crit=_get(dr, "z_crit", float),
        ref=np.sort(_unarr(dr.get("ref"), "drift.ref", 1)),
    )
    if not (
        1 < drift.window <= 100_000
        and 0 < drift.step <= drift.window
        and 0 < drift.alpha < 1
        and drift.sigma > 0
    ):
        raise MalformedInputError("profile drift settings out of range")
    if not 0.0 < fpr < 1.0:
        raise MalformedInputError("profile fpr out of range")
    features = decode_features(m["features"]) if "features" in m else None
    if features is not None and not {"feature_mahalanobis", "feature_knn"} <= set(tails):
        raise MalformedInputError("profile has feature detectors but no tails for them")
    weights = _decode_weights(m["weights"], tails) if "weights" in m else None
    invoke_s = _get(m, "invoke_s", float) if "invoke_s" in m else 0.0
    if not 0.0 <= invoke_s < 3600.0:
        raise MalformedInputError("profile invoke_s out of range")
    return Profile(
        model_sha256=digest,
        fpr=fpr,
        spec=spec,
        stats=stats,
        output_kind=kind,
        energy_source=energy,
        tails=tails,
        thresholds=thresholds,
        threshold=_get(m, "threshold", float),
        critical=_get(m, "critical", float),
        squeeze=SqueezeConfig(bits=bits, rate=rate, image_shape=tuple(ishape) if ishape else None),
        drift=drift,
        n_calibration=_get(m, "n", int),
        features=features,
        weights=weights,
        invoke_s=invoke_s,
    )


def _decode_weights(obj: Any, tails: dict[str, TailModel]) -> dict[str, float]:
    """Combination weights: one finite, non-negative weight per known detector, some positive."""
    if not isinstance(obj, dict) or not obj or not set(obj) <= set(tails):
        raise MalformedInputError("profile weights do not name the profile's detectors")
    out: dict[str, float] = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1e6:
            raise MalformedInputError(f"profile weight of {k!r} is not in [0, 1e6]")
        out[str(k)] = float(v)
    if not any(out.values()):
        raise MalformedInputError("profile weights are all zero")
    return out


# --- signing and opening -------------------------------------------------------------------------


def sign_profile(p: Profile, key: SigningKey) -> bytes:
    """The profile file: COSE_Sign1 over its CBOR, signed with the model's key."""
    return cbor_sign(encode_profile(p), key)


def cbor_sign(payload: bytes, key: SigningKey) -> bytes:
    from edgeward.core.cose import sign1

    return sign1(payload, key, content_type=CONTENT_TYPE)


def profile_digest(data: bytes) -> bytes:
    """SHA-256 of the profile file bytes: what the model's manifest names."""
    return hashlib.sha256(data).digest()


def open_profile(
    data: bytes,
    *,
    model_sha256: bytes,
    trust: TrustStore | VerifyingKey | None,
    allow_unsigned: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> Profile:
    """Verify and parse a profile file for the model with digest ``model_sha256``.

    Checks, in order: size; COSE_Sign1 signature by a trusted key (or, only with
    ``allow_unsigned``, a bare CBOR profile); content type; that the profile was calibrated for
    this model. Raises the ``IntegrityError`` family on any failure.
    """
    if len(data) > MAX_PROFILE_BYTES:
        raise MalformedInputError(f"profile of {len(data)} bytes exceeds {MAX_PROFILE_BYTES}")
    if not data:
        raise MalformedInputError("profile is empty")
    lim = Limits(
        max_cbor_bytes=MAX_PROFILE_BYTES,
        max_cbor_depth=limits.max_cbor_depth,
        max_cbor_items=limits.max_cbor_items,
    )
    is_cose = data[:2] == b"\xd2\x84" or data[:1] == b"\x84"
    if is_cose:
        if trust is None:
            if not allow_unsigned:
                raise SignatureError(
                    "no trusted key given to verify the signed profile",
                    hint="pass the model signer's public key (--trust)",
                )
            logger.warning("UNVERIFIED guard profile: signature not checked (development only)")
            from edgeward.core.cose import decode_sign1

            payload = decode_sign1(data, limits=lim).payload
        else:
            msg = verify1(data, trust, limits=lim)
            if msg.content_type != CONTENT_TYPE:
                raise MalformedInputError(f"signed object is a {msg.content_type!r}, not a profile")
            payload = msg.payload
    else:
        if not allow_unsigned:
            raise SignatureError(
                "guard profile is not signed",
                hint="calibrate with --key, or use --allow-unsigned in development",
            )
        logger.warning(
            "UNSIGNED guard profile accepted (development only): it is not bound "
            "to the model's signer"
        )
        payload = data
    profile = decode_profile(payload, limits=lim)
    if not hmac.compare_digest(profile.model_sha256, model_sha256):
        raise DigestMismatchError(
            f"profile was calibrated for model {profile.model_sha256.hex()[:16]}, "
            f"not this model {model_sha256.hex()[:16]}",
            hint="recalibrate with `edgeward guard calibrate` for this model",
        )
    return profile


def check_manifest_binding(data: bytes, manifest_profile_sha256: bytes | None) -> None:
    """Refuse a profile file the model's signed manifest does not name."""
    if manifest_profile_sha256 is None:
        raise DigestMismatchError(
            "the model's manifest names no guard profile", hint="re-sign the model with its profile"
        )
    if not hmac.compare_digest(profile_digest(data), manifest_profile_sha256):
        raise DigestMismatchError("guard profile differs from the one the model's manifest names")
