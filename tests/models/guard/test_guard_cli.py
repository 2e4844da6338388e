"""``edgeward guard calibrate|score`` on the real digits models, through main() and exit codes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeward.agent.cli import main
from edgeward.models.refmodels import load_digits_split


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture(scope="module")
def work(guard_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("guard-cli")
    for name in ("digits_mlp.tflite", "digits_cnn.tflite", "digits_mlp_int8.tflite"):
        shutil.copy(guard_models / name, d / name)
    _, _, x, _ = load_digits_split()
    np.save(d / "clean.npy", x[:300])
    np.save(d / "clean_img.npy", x[:300].reshape(-1, 8, 8, 1))
    test = x[300:330].copy()
    test[5] = np.nan  # attack: NaN sample in the data
    test[6] = 1.0 - test[6]  # inverted digit
    np.save(d / "test.npy", test)
    return d


@pytest.fixture(scope="module")
def signed(work: Path) -> Path:
    """Keys, a signed profile for the MLP, and the MLP's manifest naming the profile."""
    for args in (
        ["keys", "generate", "--out", str(work / "k")],
        ["guard", "calibrate", str(work / "digits_mlp.tflite"), "--data", str(work / "clean.npy"),
         "--key", str(work / "k/private.pem"), "--out", str(work / "mlp.prof"),
         "--image-shape", "8x8x1", "-q"],
        ["model", "sign", str(work / "digits_mlp.tflite"), "--key", str(work / "k/private.pem"),
         "--name", "digits", "--version", "1", "--profile", str(work / "mlp.prof")],
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0, args
    return work


def score_args(w: Path, prof: str = "mlp.prof", data: str = "test.npy") -> list[str]:
    return ["guard", "score", str(w / "digits_mlp.tflite"), "--profile", str(w / prof),
            "--data", str(w / data), "--trust", str(w / "k/public.pem")]


def test_calibrate_then_score_json(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*score_args(signed), "--json"], capsys)
    assert code == 0
    samples = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))["samples"]
    assert len(samples) == 30
    assert set(samples[0]) >= {"flagged", "severity", "scores"}
    assert samples[5]["severity"] == "critical" and samples[5]["flagged"]  # NaN sample
    assert samples[5]["scores"]["combined"] is None
    assert samples[6]["flagged"]  # inverted digit
    assert {"mahalanobis", "msp", "energy", "squeeze", "combined"} <= set(samples[0]["scores"])
    assert sum(s["flagged"] for s in samples) <= 8


def test_score_text_output(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(score_args(signed), capsys)
    assert code == 0 and len(out.splitlines()) == 30 and "flagged" in err


def test_cnn_image_shaped_data(work: Path, signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["guard", "calibrate", str(work / "digits_cnn.tflite"), "--data",
                        str(work / "clean_img.npy"), "--out", str(work / "cnn.prof")], capsys)
    assert code == 0 and "UNSIGNED" in err
    code, out, err = run(["guard", "score", str(work / "digits_cnn.tflite"), "--profile",
                          str(work / "cnn.prof"), "--data", str(work / "clean.npy"),
                          "--allow-unsigned", "--json"], capsys)
    assert code == 0 and "NOT verified" in err and len(json.loads(out)["samples"]) == 300


def test_attack_tampered_profile_exit_2(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray((signed / "mlp.prof").read_bytes())
    data[len(data) // 2] ^= 0x40
    (signed / "tampered.prof").write_bytes(bytes(data))
    code, _, err = run(score_args(signed, "tampered.prof"), capsys)
    assert code == 2 and "edgeward:" in err and "Traceback" not in err


def test_attack_profile_for_another_model_exit_2(work: Path, signed: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["guard", "calibrate", str(work / "digits_cnn.tflite"), "--data",
                      str(work / "clean.npy"), "--key", str(work / "k/private.pem"), "--out",
                      str(work / "cnn_signed.prof"), "-q"], capsys)
    assert code == 0
    code, _, err = run(score_args(signed, "cnn_signed.prof"), capsys)
    assert code == 2 and "calibrated for model" in err


def test_attack_other_valid_profile_not_named_by_manifest(signed: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A second, validly signed profile for the same model (say, a laxer FPR) is refused."""
    code, _, _ = run(["guard", "calibrate", str(signed / "digits_mlp.tflite"), "--data",
                      str(signed / "clean.npy"), "--key", str(signed / "k/private.pem"),
                      "--fpr", "0.2", "--out", str(signed / "lax.prof"), "-q"], capsys)
    assert code == 0
    code, _, err = run(score_args(signed, "lax.prof"), capsys)
    assert code == 2 and "manifest" in err


def test_attack_unsigned_profile_exit_2(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["guard", "calibrate", str(signed / "digits_mlp.tflite"), "--data",
                      str(signed / "clean.npy"), "--out", str(signed / "unsigned.prof"), "-q"],
                     capsys)
    assert code == 0
    code, _, err = run(score_args(signed, "unsigned.prof"), capsys)
    assert code == 2 and "not signed" in err


@pytest.mark.parametrize("blob", [b"", b"\x00" * 10, b"garbage" * 100])
def test_attack_garbage_profile_exit_2(signed: Path, capsys: pytest.CaptureFixture[str],
                                       blob: bytes) -> None:
    (signed / "garbage.prof").write_bytes(blob)
    code, _, err = run(score_args(signed, "garbage.prof"), capsys)
    assert code == 2 and "internal error" not in err


def test_attack_truncated_profile_exit_2(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (signed / "trunc.prof").write_bytes((signed / "mlp.prof").read_bytes()[:-7])
    code, _, _ = run(score_args(signed, "trunc.prof"), capsys)
    assert code == 2


def test_attack_pickled_object_npy_exit_1(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(signed / "obj.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    code, _, err = run(score_args(signed, data="obj.npy"), capsys)
    assert code == 1 and "not a plain numeric" in err


@pytest.mark.parametrize(
    "arr, needle",
    [
        (np.zeros((5, 63), np.float32), "rows have shape"),  # wrong shape
        (np.zeros((0, 64), np.float32), "N >= 1"),  # empty
        (np.zeros(64, np.float32), "N >= 1"),  # no sample axis
        (np.zeros((5, 64), np.float64), "float32"),  # wrong dtype
        (np.array([["a"] * 64]), "numeric"),  # strings
    ],
)
def test_bad_data_exit_1(signed: Path, capsys: pytest.CaptureFixture[str], arr: np.ndarray,
                         needle: str) -> None:
    np.save(signed / "bad.npy", arr)
    code, _, err = run(score_args(signed, data="bad.npy"), capsys)
    assert code == 1 and needle in err


def test_garbage_npy_and_missing_files(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (signed / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    assert run(score_args(signed, data="junk.npy"), capsys)[0] == 1
    assert run(score_args(signed, data="missing.npy"), capsys)[0] == 1
    assert run(score_args(signed, prof="missing.prof"), capsys)[0] == 1


def test_score_without_trust_is_a_usage_error(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = score_args(signed)[:-2]
    code, _, err = run(args, capsys)
    assert code == 1 and "--trust" in err


def test_calibrate_usage_errors(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = str(signed / "digits_mlp.tflite")
    np.save(signed / "few.npy", np.zeros((10, 64), np.float32))
    assert run(["guard", "calibrate", m, "--data", str(signed / "few.npy"), "--out",
                str(signed / "x.prof")], capsys)[0] == 1
    nan = np.load(signed / "clean.npy")
    nan[0, 0] = np.nan
    np.save(signed / "nan.npy", nan)
    assert run(["guard", "calibrate", m, "--data", str(signed / "nan.npy"), "--out",
                str(signed / "x.prof")], capsys)[0] == 1
    assert run(["guard", "calibrate", m, "--data", str(signed / "clean.npy"), "--fpr", "0.9",
                "--out", str(signed / "x.prof")], capsys)[0] == 1
    assert run(["guard", "calibrate", m, "--data", str(signed / "clean.npy"), "--image-shape",
                "3x3x3", "--out", str(signed / "x.prof")], capsys)[0] == 1


def test_attack_tampered_model_exit_2(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = signed / "tm"
    d.mkdir()
    for name in ("digits_mlp.tflite", "digits_mlp.tflite.ewsig", "mlp.prof", "test.npy"):
        shutil.copy(signed / name, d / name)
    shutil.copytree(signed / "k", d / "k")
    model = bytearray((d / "digits_mlp.tflite").read_bytes())
    model[-100] ^= 1
    (d / "digits_mlp.tflite").write_bytes(bytes(model))
    assert run(score_args(d), capsys)[0] == 2


def test_int8_model_scores_probabilities_and_dequantised_logits(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The int8 model's SOFTMAX feeds a DEQUANTIZE: the guard walks back to its int8 logits."""
    m = str(work / "digits_mlp_int8.tflite")
    assert run(["guard", "calibrate", m, "--data", str(work / "clean.npy"), "--out",
                str(work / "int8.prof"), "-q"], capsys)[0] == 0
    code, out, _ = run(["guard", "score", m, "--profile", str(work / "int8.prof"), "--data",
                        str(work / "test.npy"), "--allow-unsigned", "--json"], capsys)
    samples = json.loads(out)["samples"]
    assert code == 0 and samples[0]["scores"]["energy"] < 0
    assert samples[0]["scores"]["msp"] < 0.5  # read as probabilities, not softmaxed again
    assert sum(s["flagged"] for s in samples) <= 8 and samples[6]["flagged"]


def test_installed_command_tampered_profile_one_line_exit_2(signed: Path) -> None:
    """The console script end to end: one line on stderr, no traceback, exit 2."""
    import subprocess

    exe = Path(sys.executable).with_name("edgeward")
    data = bytearray((signed / "mlp.prof").read_bytes())
    data[-10] ^= 0x01  # inside the signature
    (signed / "sigflip.prof").write_bytes(bytes(data))
    p = subprocess.run([str(exe), *score_args(signed, "sigflip.prof")], capture_output=True,
                       text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("edgeward:")]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr


def test_calibrate_with_feature_detectors(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--features names the penultimate layer (preserved here: the example has one output)."""
    w, f = signed, signed / "feat"
    f.mkdir(exist_ok=True)
    shutil.copy(w / "digits_mlp.tflite", f / "digits_mlp.tflite")
    key = str(w / "k/private.pem")
    for args in (
        ["guard", "calibrate", str(f / "digits_mlp.tflite"), "--data", str(w / "clean.npy"),
         "--key", key, "--out", str(f / "feat.prof"), "--features", "dense_0/relu",
         "--feature-rate", "0.2", "--reference", str(w / "clean.npy"), "-q"],
        ["model", "sign", str(f / "digits_mlp.tflite"), "--key", key, "--name", "digits",
         "--version", "1", "--profile", str(f / "feat.prof")],
    ):
        code, out, err = run(args[:-1] if args[-1] == "-q" else args, capsys)
        assert code == 0, err
        if args[1] == "calibrate":
            assert "expected mean" in out + err and "per scored invoke" in out + err
    code, out, err = run(["guard", "score", str(f / "digits_mlp.tflite"), "--profile",
                          str(f / "feat.prof"), "--data", str(w / "test.npy"), "--trust",
                          str(w / "k/public.pem"), "--json"], capsys)
    assert code == 0, err
    samples = json.loads(out)["samples"]
    assert "feature_knn" in samples[0]["scores"] and "feature_mahalanobis" in samples[0]["scores"]
    assert samples[6]["flagged"]  # the inverted digit


def test_calibrate_features_of_a_tensor_the_model_lacks(signed: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    w = signed
    code, _, err = run(["guard", "calibrate", str(w / "digits_mlp.tflite"), "--data",
                        str(w / "clean.npy"), "--out", str(w / "x.prof"), "--features",
                        "no/such/tensor", "-q"], capsys)
    assert code == 1 and "--features no/such/tensor" in err and "does not have" in err
