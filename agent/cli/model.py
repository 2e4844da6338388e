"""``edgeward model``: reference models, inspection, signing and verification."""

from __future__ import annotations

from pathlib import Path

import click

from edgeward.core.errors import IntegrityError

from .common import echo_json, progress_printer

PATH = click.Path(path_type=Path)


@click.group()
def model() -> None:
    """Build, inspect, sign and verify TFLite models."""


@model.command("examples")
@click.option("--out", "out_dir", required=True, type=PATH, help="Folder for the .tflite files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def examples(out_dir: Path, quiet: bool) -> None:
    """Write the reference models, trained here with numpy on scikit-learn's bundled digits.

    digits_mlp.tflite (input [1, 64]), digits_cnn.tflite (input [1, 8, 8, 1]) and
    digits_mlp_int8.tflite (int8-quantised). No download, no TensorFlow.
    """
    from edgeward.models.refmodels import write_examples

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in write_examples(out_dir, progress=progress_printer(not quiet)):
        click.echo(str(path))


@model.command("inspect")
@click.argument("model_path", metavar="MODEL", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--allow-custom-ops", is_flag=True, help="Do not count custom ops as a finding.")
def inspect(model_path: Path, as_json: bool, allow_custom_ops: bool) -> None:
    """Show a model's digest, operators, tensors, inputs/outputs and validator findings.

    Exit 2 if the validator refuses the model (the reason is printed).
    """
    import hashlib

    from edgeward.core.fileio import read_bounded
    from edgeward.core.limits import DEFAULT_LIMITS
    from edgeward.models.tflite import validate

    content = read_bounded(model_path, DEFAULT_LIMITS.max_model_bytes, what="model")
    digest = hashlib.sha256(content).hexdigest()
    try:
        summary = validate(content, allow_custom_ops=allow_custom_ops)
    except IntegrityError as e:
        if as_json:
            echo_json({"path": model_path, "sha256": digest, "size": len(content),
                       "valid": False, "findings": [str(e)]})
            raise SystemExit(2) from e
        raise
    if as_json:
        report = summary.to_json()
        report.update({"path": model_path, "sha256": digest, "size": len(content),
                       "valid": True})
        echo_json(report)
        return
    click.echo(f"model     {model_path} ({len(content)} bytes)")
    click.echo(f"sha256    {digest}")
    click.echo(f"schema    version {summary.schema_version}, {summary.subgraph_count} subgraph(s), "
               f"{summary.tensor_count} tensors, {summary.operator_count} operators, "
               f"{summary.buffer_count} buffers")
    click.echo(f"operators {', '.join(summary.operators)}")
    for label, specs in (("input", summary.inputs), ("output", summary.outputs)):
        for spec in specs:
            click.echo(f"{label:<9} {spec.name} {spec.dtype} {list(spec.shape)}")
    click.echo("tensors")
    for t in summary.tensors:
        click.echo(f"  {t.index:>4} {t.dtype:<8} {list(t.shape)!s:<18} {t.name}")
    findings = summary.findings or ("none",)
    click.echo("findings  " + "\n          ".join(findings))


@model.command("sign")
@click.argument("model_path", metavar="MODEL", type=PATH)
@click.option("--key", "key_path", required=True, type=PATH, help="Signer's private.pem.")
@click.option("--name", required=True, help="Model name, the anti-rollback key ([A-Za-z0-9._-]).")
@click.option("--version", type=click.IntRange(min=0), required=True,
              help="Unsigned, monotonic version; devices refuse lower ones.")
@click.option("--allow-custom-ops", is_flag=True,
              help="Vouch for custom operators (refused otherwise).")
@click.option("--profile", "profile_path", type=PATH,
              help="Bind a signed inference-guard profile: its digest goes in the manifest.")
@click.option("--out", "out_path", type=PATH, help="Signature file [default: MODEL.ewsig].")
def sign(model_path: Path, key_path: Path, name: str, version: int, allow_custom_ops: bool,
         profile_path: Path | None, out_path: Path | None) -> None:
    """Validate MODEL and write its signed manifest (COSE_Sign1).

    The manifest binds the name, version, file size and SHA-256 and the model's structure
    (operators, inputs, outputs). A model the validator refuses is not signed (exit 2).
    """
    from edgeward.core.fileio import read_bounded
    from edgeward.core.keys import load_signing_key
    from edgeward.core.persist import write_atomic
    from edgeward.models.integrity import default_sig_path, sign_model

    key = load_signing_key(key_path)
    profile = read_bounded(profile_path, 16 * 1024 * 1024, what="profile") if profile_path else None
    sig, manifest = sign_model(model_path, key, name=name, version=version,
                               allow_custom_ops=allow_custom_ops, profile=profile)
    out = out_path or default_sig_path(model_path)
    write_atomic(out, sig)
    click.echo(f"signed {model_path.name} as '{manifest.name}' version {manifest.version} "
               f"with key {key.key_id.hex()[:16]}… -> {out}")


@model.command("verify")
@click.argument("model_path", metavar="MODEL", type=PATH)
@click.option("--trust", "trust_path", required=True, type=PATH,
              help="A trusted public key (.pem) or a folder of them.")
@click.option("--sig", "sig_path", type=PATH,
              help="edgeward manifest or OpenSSF model-signing bundle [default: MODEL.ewsig].")
@click.option("--name", "name", help="The model name the signature must give (the file name "
              "alone binds nothing).")
@click.option("--state", "state_dir", type=PATH,
              help="Anti-rollback state folder: refuse versions lower than accepted ones.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable verdict on stdout.")
def verify(model_path: Path, trust_path: Path, sig_path: Path | None, name: str | None,
           state_dir: Path | None, as_json: bool) -> int:
    """Verify MODEL against its signature. Exit 0 verified, 2 rejected.

    Checks, in order: the signature against the trust store, the signed name (with --name),
    the file's size and SHA-256,
    anti-rollback (with --state), and the flatbuffer's structure against the signed summary.
    """
    from edgeward.core.keys import TrustStore
    from edgeward.models.integrity import check_model
    from edgeward.models.rollback import RollbackState

    trust = TrustStore.from_path(trust_path)
    state = RollbackState(state_dir) if state_dir else None
    try:
        vm = check_model(model_path, trust, sig_path=sig_path, state=state, name=name)
    except IntegrityError as e:
        if as_json:
            echo_json({"verified": False, "path": model_path, "reason": str(e),
                       "error": type(e).__name__})
            click.echo(f"edgeward: model rejected: {e}", err=True)
            return e.exit_code
        raise IntegrityError(f"model rejected: {e}") from e
    if as_json:
        echo_json(vm.report())
    else:
        version = f" version {vm.version}" if vm.version is not None else ""
        click.echo(f"OK {model_path.name}: '{vm.name}'{version}, sha256 {vm.sha256.hex()[:16]}…, "
                   f"signed by {vm.signer_key_id.hex()[:16]}… ({vm.scheme})")
    return 0
