"""``edgeward guard``: calibrate the inference guard on clean data, and score data with it.

Thin commands over :mod:`edgeward.models.guard`. The I/O lives here: reading the model, the
profile and ``.npy`` data (bounded, ``allow_pickle=False``), writing the profile atomically, and
creating the interpreter. Errors map to the exit codes of DESIGN.md: 1 for usage (a bad option or
data file), 2 for a profile or model that fails a check, 3 for I/O or a missing runtime.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from pathlib import Path
from typing import Any

import click

from edgeward.agent.cli.common import echo_json, progress_printer
from edgeward.core.errors import ConfigError, MalformedInputError
from edgeward.core.persist import write_atomic

logger = logging.getLogger(__name__)

PATH = click.Path(path_type=Path)
MAX_DATA_BYTES = 512 * 1024 * 1024
MAX_PROFILE_FILE = 4 * 1024 * 1024  # the profile's own bound (guard.profile.MAX_PROFILE_BYTES)


@click.group()
def guard() -> None:
    """Calibrate and run the inference guard (anomaly detection for a model's inputs)."""


def _read(path: Path, limit: int, what: str) -> bytes:
    from edgeward.core.fileio import read_bounded

    return read_bounded(path, limit, what=what)


def _load_model(model: Path, trust: Path | None, sig: Path | None) -> tuple[bytes, bytes, Any]:
    """(model bytes, SHA-256, manifest or None). With --trust the model is verified first."""
    from edgeward.core.keys import TrustStore
    from edgeward.models.integrity import DEFAULT_LIMITS, verify_model

    if trust is not None:
        verified = verify_model(model, TrustStore.from_path(trust), sig_path=sig)
        return verified.content, verified.sha256, verified.manifest
    content = _read(model, DEFAULT_LIMITS.max_model_bytes, "model")
    from edgeward.models.tflite import validate

    validate(content)  # structure first, before a runtime parses the bytes
    return content, hashlib.sha256(content).digest(), None


def _interpreter(content: bytes) -> Any:
    """A batch-1 interpreter that keeps intermediate tensors (so the guard can read logits)."""
    from edgeward.models.runtime import load_interpreter

    return load_interpreter(content, preserve_all_tensors=True)


def _load_data(path: Path, input_shape: tuple[int, ...]) -> Any:
    """A bounded, pickle-free ``.npy`` as (N, *input_shape) float32 rows."""
    import numpy as np

    raw = _read(path, MAX_DATA_BYTES, "data file")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused
        raise ConfigError(f"data file {path} is not a plain numeric .npy ({e})") from e
    except Exception as e:  # a .npz, a truncated header, garbage
        raise ConfigError(f"data file {path} is not a readable .npy array ({e})") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ConfigError(f"data file {path} does not hold a numeric array")
    size = int(np.prod(input_shape))
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ConfigError(f"data file {path} has shape {arr.shape}; give (N, {size}) with N >= 1")
    if arr.shape[1:] not in (tuple(input_shape), (size,)):
        raise ConfigError(
            f"data rows have shape {arr.shape[1:]}, the model takes {tuple(input_shape)} "
            f"(or {size} flat values)"
        )
    if arr.dtype != np.float32:
        raise ConfigError(f"data file {path} is {arr.dtype}; the model takes float32")
    return arr.reshape(len(arr), *input_shape)


def _image_shape(spec: str | None, input_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    if spec:
        try:
            dims = tuple(int(v) for v in spec.lower().split("x"))
        except ValueError as e:
            raise ConfigError(f"--image-shape {spec!r} is not HxWxC") from e
        if (
            len(dims) != 3
            or min(dims) <= 0
            or dims[0] * dims[1] * dims[2] != int(__import__("numpy").prod(input_shape))
        ):
            raise ConfigError(f"--image-shape {spec} does not fit the input {input_shape}")
        return dims
    if len(input_shape) == 3:  # (H, W, C) after the batch axis
        return (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    return None


def _tensor_size(interp: Any, name: str) -> int:
    """Values per input of the tensor ``name`` (0 if the model has no such tensor)."""
    for d in [*interp.get_output_details(), *interp.get_tensor_details()]:
        if d.get("name") == name:
            shape = [int(n) for n in d["shape"]]
            return math.prod(shape[1:]) if len(shape) > 1 else math.prod(shape)
    return 0


@guard.command()
@click.argument("model", type=PATH)
@click.option("--data", "data_path", required=True, type=PATH, help="Clean inputs (.npy).")
@click.option(
    "--fpr",
    type=click.FloatRange(0.001, 0.25),
    default=0.05,
    show_default=True,
    help="Target false-positive rate on clean inputs.",
)
@click.option("--key", "key_path", type=PATH, help="The model signer's private.pem.")
@click.option("--out", "out_path", required=True, type=PATH, help="Profile file to write.")
@click.option(
    "--squeeze-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Fraction of invokes that run feature squeezing (extra inferences).",
)
@click.option("--image-shape", help="HxWxC for median smoothing of flat inputs, e.g. 8x8x1.")
@click.option(
    "--features",
    "feature_tensor",
    help="Name of the penultimate-layer tensor (a model output, or any tensor: it is read with "
    "preserved tensors) for the feature detectors (Mahalanobis, kNN).",
)
@click.option(
    "--feature-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Fraction of invokes that run the feature detectors.",
)
@click.option(
    "--reference",
    "reference_path",
    type=PATH,
    help="Clean inputs (.npy, e.g. the training set) for the feature detectors' bank and means; "
    "without it, half of --data.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def calibrate(
    model: Path,
    data_path: Path,
    fpr: float,
    key_path: Path | None,
    out_path: Path,
    squeeze_rate: float,
    image_shape: str | None,
    feature_tensor: str | None,
    feature_rate: float,
    reference_path: Path | None,
    quiet: bool,
) -> None:
    """Fit the guard on clean data and write a signed profile bound to MODEL."""
    from edgeward.core.keys import load_signing_key
    from edgeward.models import guard as g

    say = progress_printer(not quiet)
    key = load_signing_key(key_path) if key_path else None  # a bad key fails before the work
    content, digest, _ = _load_model(model, None, None)
    interp = _interpreter(content)
    io_ = g.ModelIO(interp, logits_index=g.softmax_logits_index(interp))
    shape = io_.in_shape[1:]
    x = _load_data(data_path, shape)
    say(f"model {model.name} sha256 {digest.hex()[:16]}, {len(x)} clean samples")
    feats: dict[str, Any] = {}
    if feature_tensor:
        try:
            tap = g.FeatureTap(interp, feature_tensor, _tensor_size(interp, feature_tensor))
        except MalformedInputError as e:
            raise ConfigError(f"--features {feature_tensor}: {e}") from e
        feats = {
            "feature_fn": lambda rows: g.run_features(io_, tap, rows),
            "feature_tensor": feature_tensor,
            "feature_rate": feature_rate,
        }
        if reference_path is not None:
            feats["feature_reference"] = (_load_data(reference_path, shape), None)
    try:
        profile = g.calibrate(
            x,
            io_.predict,
            model_sha256=digest,
            input_shape=shape,
            input_dtype="float32",
            fpr=fpr,
            energy_source="preserved-logits" if io_.logits_index is not None else "logits",
            squeeze=g.SqueezeConfig(
                rate=squeeze_rate, image_shape=_image_shape(image_shape, shape)
            ),
            progress=say,
            **feats,
        )
    except ValueError as e:
        raise ConfigError(f"cannot calibrate: {e}") from e
    try:
        data = g.encode_profile(profile) if key is None else g.sign_profile(profile, key)
    except ValueError as e:  # too many input features for a device profile
        raise ConfigError(f"cannot write the profile: {e}") from e
    if key is None:
        click.echo(
            "edgeward: WARNING: profile is UNSIGNED (no --key); devices refuse it unless "
            "run with --allow-unsigned (development only)",
            err=True,
        )
    write_atomic(out_path, data)
    say(
        f"wrote {out_path} ({len(data)} bytes, sha256 {g.profile_digest(data).hex()[:16]}); "
        f"combined threshold {profile.threshold:.3f}"
    )
    fm = profile.features
    if fm is not None:
        say(
            f"feature detectors on {fm.tensor!r} ({fm.dim} features, kNN bank {len(fm.bank)}): "
            f"{fm.cost_s * 1e6:.0f} us per scored invoke here, run on {fm.rate:g} of invokes: "
            f"expected mean {fm.mean_cost_s * 1e6:.1f} us per invoke"
        )
    if key is not None:
        say(f"bind it: edgeward model sign {model} --key {key_path} --profile {out_path} ...")


@guard.command()
@click.argument("model", type=PATH)
@click.option("--profile", "profile_path", required=True, type=PATH, help="Guard profile.")
@click.option("--data", "data_path", required=True, type=PATH, help="Inputs to score (.npy).")
@click.option(
    "--trust",
    "trust_path",
    type=PATH,
    help="Signer's public.pem or a folder of them: verifies the model and profile.",
)
@click.option("--sig", "sig_path", type=PATH, help="Model signature [default: MODEL.ewsig].")
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="DEVELOPMENT ONLY: accept a profile without checking its signature.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable verdicts on stdout.")
def score(
    model: Path,
    profile_path: Path,
    data_path: Path,
    trust_path: Path | None,
    sig_path: Path | None,
    allow_unsigned: bool,
    as_json: bool,
) -> None:
    """One verdict per sample of the data, with the profile checked against MODEL."""
    from edgeward.core.keys import TrustStore
    from edgeward.models import guard as g

    if trust_path is None and not allow_unsigned:
        raise ConfigError(
            "--trust is needed to check the profile's signature",
            hint="give the model signer's public.pem (or --allow-unsigned in development)",
        )
    if allow_unsigned:
        click.echo(
            "edgeward: WARNING: --allow-unsigned: the guard profile is NOT verified", err=True
        )
    content, digest, manifest = _load_model(model, trust_path, sig_path)
    raw = _read(profile_path, MAX_PROFILE_FILE, "profile")
    trust = TrustStore.from_path(trust_path) if trust_path else None
    profile = g.open_profile(raw, model_sha256=digest, trust=trust, allow_unsigned=allow_unsigned)
    if manifest is not None:
        if manifest.profile_sha256 is not None:
            g.check_manifest_binding(raw, manifest.profile_sha256)
        else:
            logger.warning(
                "the model's manifest names no guard profile; the profile is bound "
                "by its signature and model digest only"
            )
    interp = _interpreter(content)
    guarded = g.GuardedInterpreter(interp, profile)
    x = _load_data(data_path, guarded.io.in_shape[1:])
    verdicts = guarded.score_batch(x)
    if as_json:
        echo_json({"samples": [v.to_json() for v in verdicts]})
        return
    for i, v in enumerate(verdicts):
        reason = "; ".join(v.reasons) or "ok"
        click.echo(
            f"{i}\t{v.severity}\t{'FLAGGED' if v.flagged else 'ok'}\t"
            f"combined={v.scores.get('combined', 0.0):.3f}\t{reason}"
        )
    flagged = sum(v.flagged for v in verdicts)
    click.echo(f"{flagged} of {len(verdicts)} samples flagged", err=True)
