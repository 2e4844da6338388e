"""``edgeward demo``: the product end to end on this machine, in a few readable steps.

Model integrity: keys, reference models, signing, verification, a verified inference, then a
tampered model and a rollback attempt that are refused. The inference guard: a signed profile
bound to the model, clean and odd inputs scored, the fail-safe hook called. Then remote
attestation and the fleet over MQTT (:mod:`.demo_fleet`), and last the simulator: two
simulated Pi 4 devices through the healthy and model-tamper scenarios, with the HTML report
(QEMU when it can run here, else local processes, saying why). Each step prints what it does and
what it found; the demo exits non-zero if any step does not behave as it should.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from edgeward.simulator import workdir
from edgeward.simulator.steps import DemoFailed, expect_rejection, ok, step

PATH = click.Path(path_type=Path)


def run_model_integrity(out: Path) -> None:
    import numpy as np

    from edgeward.core.keys import TrustStore, generate, write_keypair
    from edgeward.core.persist import write_atomic
    from edgeward.models.integrity import sign_model, verify_model
    from edgeward.models.refmodels import load_digits_split, write_examples
    from edgeward.models.rollback import RollbackState
    from edgeward.models.runtime import Runner, load_interpreter, runtime_name

    step(1, "Generate the vendor's model-signing key (Ed25519)")
    key = generate("ed25519")
    priv, pub = write_keypair(out / "keys", key, force=True)
    ok(f"{priv} (0600), {pub}; key id {key.key_id.hex()[:16]}…")
    trust = TrustStore.from_path(pub)

    step(2, "Build the reference models with numpy (scikit-learn's bundled digits)")
    t0 = time.monotonic()
    models = write_examples(out / "models", progress=lambda m: click.echo(f"    ..   {m}"))
    ok(f"{len(models)} models in {time.monotonic() - t0:.1f} s: "
        + ", ".join(p.name for p in models))

    step(3, "Sign each model: a COSE_Sign1 manifest binding name, version, digest, structure")
    for p in models:
        sig, manifest = sign_model(p, key, name=p.stem, version=2)
        write_atomic(p.with_name(p.name + ".ewsig"), sig)
        ok(f"{p.name}: '{manifest.name}' v{manifest.version}, {len(sig)}-byte manifest, "
            f"ops {', '.join(manifest.tflite['ops'])}")

    step(4, "Verify (signature, digest, anti-rollback, structure) and load the verified bytes")
    state = RollbackState(out / "state")
    mlp = out / "models" / "digits_mlp.tflite"
    vm = verify_model(mlp, trust, state=state)
    ok(f"{mlp.name} verified: sha256 {vm.sha256.hex()[:16]}…")
    _, _, x_test, y_test = load_digits_split()
    runner = Runner(load_interpreter(vm.content))
    pred = runner.run(x_test.astype(np.float32)).argmax(axis=1)
    acc = float((pred == y_test).mean())
    ok(f"inference in {runtime_name()}: {acc:.1%} on {len(y_test)} held-back digits")

    step(5, "Attacks: each must be refused")
    tampered = out / "tampered"
    tampered.mkdir(exist_ok=True)
    bad = tampered / mlp.name
    shutil.copy(mlp, bad)
    shutil.copy(mlp.with_name(mlp.name + ".ewsig"), bad.with_name(bad.name + ".ewsig"))
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    expect_rejection("one flipped bit in the weights", lambda: verify_model(bad, trust))
    cnn = out / "models" / "digits_cnn.tflite"
    expect_rejection(
        "the CNN's manifest used for the MLP (mix-and-match)",
        lambda: verify_model(mlp, trust, sig_path=cnn.with_name(cnn.name + ".ewsig")),
    )
    old_sig, _ = sign_model(mlp, key, name="digits_mlp", version=1)
    old = out / "rollback.ewsig"
    write_atomic(old, old_sig)
    expect_rejection(
        "a genuine but older version 1 after version 2 (rollback)",
        lambda: verify_model(mlp, trust, sig_path=old, state=state),
    )
    other = generate("ed25519")
    forged, _ = sign_model(mlp, other, name="digits_mlp", version=9)
    forged_path = out / "forged.ewsig"
    write_atomic(forged_path, forged)
    expect_rejection("a manifest signed by an untrusted key",
                      lambda: verify_model(mlp, trust, sig_path=forged_path))


def run_guard(out: Path) -> None:
    import numpy as np

    from edgeward.core.keys import TrustStore, load_signing_key
    from edgeward.core.persist import write_atomic
    from edgeward.models import guard as g
    from edgeward.models.integrity import sign_model, verify_model
    from edgeward.models.refmodels import load_digits_split
    from edgeward.models.rollback import RollbackState
    from edgeward.models.runtime import load_interpreter

    key = load_signing_key(out / "keys" / "private.pem")
    trust = TrustStore.from_path(out / "keys" / "public.pem")
    state = RollbackState(out / "state")
    mlp = out / "models" / "digits_mlp.tflite"
    _, _, x_test, _ = load_digits_split()
    calib, held = x_test[:300].astype(np.float32), x_test[300:].astype(np.float32)

    step(6, "Inference guard: calibrate on 300 clean held-back digits, target 5% false positives")
    vm = verify_model(mlp, trust, state=state)
    interp = load_interpreter(vm.content, preserve_all_tensors=True)
    io_ = g.ModelIO(interp, logits_index=g.softmax_logits_index(interp))
    profile = g.calibrate(
        calib, io_.predict, model_sha256=vm.sha256, input_shape=io_.in_shape[1:],
        input_dtype="float32", fpr=0.05, energy_source="preserved-logits",
        squeeze=g.SqueezeConfig(rate=0.1, image_shape=(8, 8, 1)),
    )
    data = g.sign_profile(profile, key)
    prof_path = out / "models" / "digits_mlp.guard"
    write_atomic(prof_path, data)
    sig, manifest = sign_model(mlp, key, name="digits_mlp", version=3, profile=data)
    write_atomic(mlp.with_name(mlp.name + ".ewsig"), sig)
    ok(f"profile {prof_path.name} ({len(data)} bytes) signed and bound into the manifest "
        f"of digits_mlp v{manifest.version}")

    step(7, "Guarded inference: clean digits, then inputs the model was not built for")
    vm = verify_model(mlp, trust, state=state)
    assert vm.manifest is not None
    g.check_manifest_binding(data, vm.manifest.profile_sha256)
    checked = g.open_profile(data, model_sha256=vm.sha256, trust=trust)
    failsafe = []
    guarded = g.GuardedInterpreter(
        load_interpreter(vm.content, preserve_all_tensors=True), checked,
        on_critical=lambda v: failsafe.append(v),
    )
    rng = np.random.default_rng(7)
    sets = {
        "clean held-back digits": held,
        "uniform noise": rng.uniform(0, 1, held.shape).astype(np.float32),
        "inverted digits": (1.0 - held).astype(np.float32),
        "salt-and-pepper (15%)": np.where(rng.uniform(size=held.shape) < 0.15,
                                          rng.integers(0, 2, held.shape), held).astype(np.float32),
    }
    for label, xs in sets.items():
        before = len(failsafe)
        flagged = sum(guarded.invoke(x).verdict.flagged for x in xs)
        ok(f"{label:<24} {flagged:>3} of {len(xs)} flagged ({flagged / len(xs):5.1%}); "
            f"fail-safe called {len(failsafe) - before} times")
    if len(failsafe) == 0:
        raise DemoFailed("the fail-safe callback never fired on noise")
    click.echo("    ..   a smart lock's fail-safe falls back to PIN entry on each critical verdict")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    expect_rejection("a tampered guard profile",
                      lambda: g.open_profile(bytes(bad), model_sha256=vm.sha256, trust=trust))
    guarded.close()


DEMO_SEED = 2026


def run_simulator(out: Path, n: int, mode: str = "auto") -> None:
    """Two simulated Pi 4 devices through the healthy and model-tamper scenarios, with report."""
    import shutil as sh

    from edgeward.simulator.cli import run_simulation, write_reports
    from edgeward.simulator.devbroker import mosquitto_binary
    from edgeward.simulator.results import RunResult
    from edgeward.simulator.steps import info

    step(n, "The simulator: two Pi 4 devices, each the real agent with its own TPM, through "
         "the healthy and model-tamper scenarios")
    if mosquitto_binary() is None or sh.which("swtpm") is None:
        info("skipped: mosquitto or swtpm is not installed (make demo installs them)")
        return
    result = run_simulation(board_name="rpi4b", devices=2,
                            scenario_names=["healthy", "model-tamper"], mode=mode,
                            workdir=out / "sim", seed=DEMO_SEED,
                            echo=lambda m: click.echo(f"    {m}"))
    assert isinstance(result, RunResult)
    write_reports(result, out / "sim-report", out / "sim-junit.xml")
    if result.setup_error:
        raise DemoFailed(f"the simulator could not run: {result.setup_error}")
    failed = [s.step for s in result.steps if not s.ok]
    if failed:
        raise DemoFailed("simulator steps failed: " + "; ".join(failed))
    for d in result.devices:
        ok(f"{d.name}: {d.state}, attestation {d.attestation} (hardware {d.hardware}), "
           f"{d.messages} messages, seq 1..{d.highest}, missing {d.missing}")
    ok(f"{result.passed} of {len(result.steps)} scenario steps passed in {result.mode} mode "
       f"({result.duration:.0f} s); report {out / 'sim-report' / 'index.html'}")


@click.command()
@click.option("--out", "out_dir", type=PATH, default=Path("demo-out"), show_default=True,
              help="Working folder for keys, models and state: new or empty, or one an earlier "
              "demo made (then only what that demo wrote there is replaced).")
@click.option("--mode", type=click.Choice(["auto", "qemu", "process"]), default="auto",
              show_default=True, help="The simulator step's devices: QEMU guests, local "
              "processes, or auto (QEMU when it can run here, as edgeward sim run).")
def demo(out_dir: Path, mode: str) -> None:
    """Run the end-to-end demonstration on this machine and say what each step showed."""
    from edgeward.core.errors import EdgewardError

    workdir.claim(out_dir)
    click.secho(f"edgeward demo (working folder {out_dir})", bold=True)
    try:
        run_model_integrity(out_dir)
        run_guard(out_dir)
        from edgeward.simulator.demo_fleet import run_fleet

        run_fleet(out_dir, step_start=8)
        run_simulator(out_dir, 13, mode)
    except DemoFailed as e:
        raise EdgewardError(f"demo failed: {e}") from e
    finally:
        workdir.record(out_dir)
    click.secho("\nAll demo steps behaved as expected.", fg="green", bold=True)
