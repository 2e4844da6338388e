"""Evaluate the inference guard on the digits reference models against constructed shifts.

Run: ``.venv/bin/python benchmarks/eval_guard.py [--out FILE.md] [--json FILE.json]``

* Models: ``digits_mlp`` and ``digits_cnn`` (trained by project code on samples 0-1,199 of
  scikit-learn's digits), run by LiteRT with preserved intermediate tensors (pre-softmax logits).
* Calibration: samples 1,200-1,499 (the first 300 held-back), target FPR 0.05.
* Test: clean = samples 1,500-1,796 (297), against: Gaussian and uniform noise images, additive
  noise, inverted, rotated (90 degrees and 25 degrees), shifted (2 px), stuck (dead) pixels,
  saturated pixels, salt-and-pepper, held-out classes (variant models trained on 0-7, tested on
  8 and 9), and FGSM / PGD adversarial examples whose gradients come from the weights read out
  of the ``.tflite`` itself (numpy backprop, checked against the interpreter's outputs).
* Metrics: AUROC, FPR at 95% TPR, detection rate at the calibrated threshold; drift: detection
  delay after a gradual shift begins, false alarms per 10,000 clean inputs.

Only measured numbers are printed. Runtime: about a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from guard_attacks import NumpyNet, active_pixels, fgsm, pgd
from sklearn.metrics import roc_auc_score

from edgeward.models.guard import (
    GuardedInterpreter,
    ModelIO,
    SqueezeConfig,
    calibrate,
    softmax_logits_index,
)

DETECTORS = ("zmax", "mahalanobis", "msp", "entropy", "energy", "squeeze", "combined")
IMG = (8, 8)


# --- models ---------------------------------------------------------------------------------------


def build_models() -> dict[str, bytes]:
    """digits_mlp, digits_cnn and their 0-7 variants, trained by the project's numpy code."""
    from edgeward.models import refmodels as rm

    x_tr, y_tr, _, _ = rm.load_digits_split()
    keep = y_tr < 8
    mlp = rm.train_mlp(x_tr, y_tr, **rm.MLP_PARAMS)  # type: ignore[arg-type]
    cnn = rm.train_cnn(x_tr, y_tr, **rm.CNN_PARAMS)  # type: ignore[arg-type]
    mlp8 = rm.train_mlp(x_tr[keep], y_tr[keep], n_classes=8, **rm.MLP_PARAMS)  # type: ignore[arg-type]
    cnn8 = rm.train_cnn(x_tr[keep], y_tr[keep], n_classes=8, **rm.CNN_PARAMS)  # type: ignore[arg-type]
    return {"digits_mlp": rm.mlp_tflite(mlp), "digits_cnn": rm.cnn_tflite(cnn),
            "digits_mlp_0to7": rm.mlp_tflite(mlp8), "digits_cnn_0to7": rm.cnn_tflite(cnn8)}


def interpreter(content: bytes) -> Any:
    from edgeward.models.runtime import load_interpreter

    return load_interpreter(content, preserve_all_tensors=True)


# --- shifted inputs -----------------------------------------------------------------------------


def shifts(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Constructed distribution shifts of clean rows ``x`` (N, 64) in [0, 1]."""
    from scipy.ndimage import rotate

    rng = np.random.default_rng(seed)
    n = len(x)
    img = x.reshape(n, 8, 8)
    out: dict[str, np.ndarray] = {}
    out["gaussian noise"] = np.clip(rng.normal(0.3, 0.3, size=x.shape), 0, 1)
    out["uniform noise"] = rng.uniform(0, 1, size=x.shape)
    out["additive noise s=0.2"] = np.clip(x + rng.normal(0, 0.2, size=x.shape), 0, 1)
    out["inverted"] = 1.0 - x
    out["rotated 90"] = np.rot90(img, 1, axes=(1, 2)).reshape(n, -1)
    out["rotated 25"] = np.clip(rotate(img, 25, axes=(1, 2), reshape=False, order=1), 0, 1
                                ).reshape(n, -1)
    sh = np.zeros_like(img)
    sh[:, 2:, 2:] = img[:, :-2, :-2]
    out["shifted 2px"] = sh.reshape(n, -1)
    stuck = x.copy()
    sat = x.copy()
    sp = x.copy()
    for i in range(n):
        idx = rng.choice(64, size=8, replace=False)
        stuck[i, idx] = 0.0  # dead pixels
        idx = rng.choice(64, size=8, replace=False)
        sat[i, idx] = 1.0  # saturated pixels
        m = rng.random(64)
        sp[i, m < 0.05] = 0.0
        sp[i, m > 0.95] = 1.0
    out["stuck pixels (8 dead)"] = stuck
    out["saturated pixels (8)"] = sat
    out["salt and pepper 10%"] = sp
    return {k: v.astype(np.float32) for k, v in out.items()}


# --- scoring and metrics ------------------------------------------------------------------------


def batch_scores(g: GuardedInterpreter, x: np.ndarray) -> dict[str, np.ndarray]:
    verdicts = g.score_batch(x.reshape(len(x), *g.profile.spec.shape).astype(np.float32))
    return {k: np.array([v.scores.get(k, np.nan) for v in verdicts]) for k in DETECTORS}


def metrics(clean: np.ndarray, shifted: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, FPR at 95% TPR, detection rate at the calibrated threshold (flag when s > t)."""
    if np.isnan(clean).all():
        return {"auroc": float("nan"), "fpr95": float("nan"), "det": float("nan")}
    y = np.r_[np.zeros(len(clean)), np.ones(len(shifted))]
    s = np.r_[clean, shifted]
    auroc = float(roc_auc_score(y, s))
    t95 = np.quantile(shifted, 0.05, method="lower")
    return {"auroc": auroc, "fpr95": float((clean >= t95).mean()),
            "det": float((shifted > threshold).mean())}


def eval_model(name: str, content: bytes, x_cal: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, extra: dict[str, np.ndarray], seed: int = 0
               ) -> dict[str, Any]:
    it = interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    profile = calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1), seed=seed)
    g = GuardedInterpreter(it, profile)
    clean = batch_scores(g, x_test)
    th = dict(profile.thresholds, combined=profile.threshold)
    net = NumpyNet(content)
    ref = io.predict(x_test[:50].reshape(50, *shape), "probs").logits
    assert ref is not None
    err = float(np.abs(net.logits(x_test[:50]) - ref).max())
    sets = dict(shifts(x_test, seed))
    sets.update(extra)
    adv_info = {}
    for label, fn in (("FGSM eps=0.1", lambda: fgsm(net, x_test, y_test, 0.1)),
                      ("FGSM eps=0.2", lambda: fgsm(net, x_test, y_test, 0.2)),
                      ("PGD eps=0.1", lambda: pgd(net, x_test, y_test, 0.1, seed=seed)),
                      ("PGD eps=0.2", lambda: pgd(net, x_test, y_test, 0.2, seed=seed)),
                      # Adaptive: an attacker who knows the guard leaves alone the pixels that
                      # vary least in clean data (the digits' blank border), where any change
                      # stands out to the per-feature z score.
                      ("PGD eps=0.1 adaptive", lambda: pgd(net, x_test, y_test, 0.1, seed=seed,
                                                           mask=active_pixels(x_cal))),
                      ("PGD eps=0.2 adaptive", lambda: pgd(net, x_test, y_test, 0.2, seed=seed,
                                                           mask=active_pixels(x_cal)))):
        adv = fn()
        adv_info[label] = float((net.logits(adv).argmax(1) != y_test).mean())
        sets[label] = adv
    res: dict[str, Any] = {"model": name, "logit_check_max_abs_err": err,
                           "clean_fpr": {k: float((clean[k] > th[k]).mean()) for k in DETECTORS},
                           "clean_acc": float((net.logits(x_test).argmax(1) == y_test).mean()),
                           "adv_error_rate": adv_info, "sets": {}}
    for label, xs in sets.items():
        sc = batch_scores(g, xs)
        res["sets"][label] = {k: metrics(clean[k], sc[k], th[k]) for k in DETECTORS}
    return res


def clean_fpr(content: bytes, x_cal: np.ndarray, x_test: np.ndarray) -> dict[str, float]:
    """Per-detector false-positive rate on clean ``x_test`` at thresholds fit on ``x_cal``."""
    it = interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    profile = calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1)))
    g = GuardedInterpreter(it, profile)
    sc = batch_scores(g, x_test)
    th = dict(profile.thresholds, combined=profile.threshold)
    return {k: float((sc[k] > th[k]).mean()) for k in DETECTORS}


def eval_heldout(name: str, content: bytes, x_cal: np.ndarray, y_cal: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray, x_unseen: np.ndarray) -> dict[str, Any]:
    """A model trained on classes 0-7, calibrated and tested on 0-7, against unseen 8 and 9."""
    it = interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    xc = x_cal[y_cal < 8]
    profile = calibrate(xc.reshape(len(xc), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1)))
    g = GuardedInterpreter(it, profile)
    clean = batch_scores(g, x_test[y_test < 8])
    sc = batch_scores(g, x_unseen)
    th = dict(profile.thresholds, combined=profile.threshold)
    return {"model": name, "n_unseen": len(x_unseen),
            "metrics": {k: metrics(clean[k], sc[k], th[k]) for k in DETECTORS}}


def eval_drift(content: bytes, x_cal: np.ndarray, x_test: np.ndarray, *, n_clean: int = 10_000,
               seeds: int = 3) -> dict[str, Any]:
    """False alarms over ``n_clean`` clean invokes; delay after gradual shifts begin."""
    it = interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    shape = io.in_shape[1:]
    profile = calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                        input_shape=shape, energy_source="preserved-logits",
                        squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1))
    rng = np.random.default_rng(0)
    g = GuardedInterpreter(it, profile)
    alarms = flags = 0
    t0 = time.perf_counter()
    for i in rng.integers(0, len(x_test), size=n_clean):
        v = g.invoke(x_test[i].reshape(shape)).verdict
        alarms += "score drift" in v.reasons
        flags += any(r.startswith("anomalous") for r in v.reasons)
    elapsed = time.perf_counter() - t0
    ramps = {
        "additive noise 0 -> 0.3 over 1000": lambda x, t: np.clip(
            x + rng.normal(0, 0.3 * t, size=x.shape), 0, 1),
        "contrast fade 1 -> 0.4 over 1000": lambda x, t: x * (1 - 0.6 * t),
        "brightness offset 0 -> 0.3 over 1000": lambda x, t: np.clip(x + 0.3 * t, 0, 1),
    }
    delays: dict[str, list[float]] = {}
    for label, fn in ramps.items():
        delays[label] = []
        for s in range(seeds):
            g = GuardedInterpreter(it, profile)
            r = np.random.default_rng(100 + s)
            for i in r.integers(0, len(x_test), size=300):  # warm: clean traffic first
                g.invoke(x_test[i].reshape(shape))
            delay = float("nan")
            for step in range(2000):
                t = min(step / 1000, 1.0)
                x = fn(x_test[r.integers(0, len(x_test))], t).astype(np.float32)
                if "score drift" in g.invoke(x.reshape(shape)).verdict.reasons:
                    delay = step
                    break
            delays[label].append(delay)
    return {"clean_invokes": n_clean, "drift_false_alarms": alarms,
            "per_input_flags": flags, "cusum_h": profile.drift.h, "seconds": elapsed,
            "delays": delays}


# --- report ---------------------------------------------------------------------------------------


def fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


def report(results: list[dict[str, Any]], held: list[dict[str, Any]],
           drift: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in results:
        lines += [f"### {r['model']}", "",
                  f"Clean test accuracy {r['clean_acc']:.3f}; numpy logits vs interpreter max abs "
                  f"error {r['logit_check_max_abs_err']:.2e}. Clean false-positive rate at the "
                  f"calibrated thresholds (target 0.05): combined "
                  f"{r['clean_fpr']['combined']:.3f}, " + ", ".join(
                      f"{k} {r['clean_fpr'][k]:.3f}" for k in DETECTORS[:-1]) + ".", "",
                  "Combined score, and AUROC per detector:", "",
                  "| shift | combined AUROC | FPR@95TPR | detected @thr | "
                  + " | ".join(f"{k} AUROC" for k in DETECTORS[:-1]) + " |",
                  "|---|---|---|---|" + "---|" * (len(DETECTORS) - 1)]
        for label, m in r["sets"].items():
            c = m["combined"]
            lines.append(f"| {label} | {fmt(c['auroc'])} | {fmt(c['fpr95'])} | {fmt(c['det'])} | "
                         + " | ".join(fmt(m[k]["auroc"]) for k in DETECTORS[:-1]) + " |")
        lines += ["", "FPR at 95% TPR, MSP vs energy vs combined:", "",
                  "| shift | MSP | energy | entropy | mahalanobis | squeeze | combined |",
                  "|---|---|---|---|---|---|---|"]
        for label, m in r["sets"].items():
            lines.append(f"| {label} | " + " | ".join(
                fmt(m[k]["fpr95"]) for k in
                ("msp", "energy", "entropy", "mahalanobis", "squeeze", "combined")) + " |")
        lines += ["", "Adversarial error rate (fraction misclassified): " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["adv_error_rate"].items()) + ".", ""]
    lines += ["### Held-out classes (trained on 0-7, tested on unseen 8 and 9)", "",
              "| model | n | " + " | ".join(f"{k} AUROC / FPR95 / det" for k in
                                             ("msp", "energy", "mahalanobis", "combined")) + " |",
              "|---|---|---|---|---|---|"]
    for h in held:
        m = h["metrics"]
        lines.append(f"| {h['model']} | {h['n_unseen']} | " + " | ".join(
            f"{fmt(m[k]['auroc'])} / {fmt(m[k]['fpr95'])} / {fmt(m[k]['det'])}"
            for k in ("msp", "energy", "mahalanobis", "combined")) + " |")
    lines += ["", "### Drift", "",
              "| model | clean invokes | drift false alarms | per-input flags | CUSUM h | "
              + " | ".join(f"delay: {k}" for k in next(iter(drift.values()))["delays"]) + " |",
              "|---|---|---|---|---|" + "---|" * len(next(iter(drift.values()))["delays"])]
    for name, d in drift.items():
        lines.append(f"| {name} | {d['clean_invokes']} | {d['drift_false_alarms']} | "
                     f"{d['per_input_flags']} | {d['cusum_h']:.1f} | " + " | ".join(
                         "/".join("none" if v != v else str(int(v)) for v in ds)
                         for ds in d["delays"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    ap.add_argument("--n-clean", type=int, default=10_000)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from edgeward.models.refmodels import load_digits_split

    x_tr, y_tr, x_ho, y_ho = load_digits_split()
    # Contiguous split (samples 1,200-1,499 calibrate, 1,500-1,796 test): the digits are stored
    # by writer, so the test writers are new to the guard, as on a deployed device.
    x_cal, y_cal, x_test, y_test = x_ho[:300], y_ho[:300], x_ho[300:], y_ho[300:]
    # Interleaved split (even/odd held-back samples): the same writers on both sides.
    x_cal2, x_test2 = x_ho[0::2], x_ho[1::2]
    print("training models ...", file=sys.stderr)
    models = build_models()
    results = []
    for name in ("digits_mlp", "digits_cnn"):
        print(f"evaluating {name} ...", file=sys.stderr)
        results.append(eval_model(name, models[name], x_cal, x_test, y_test, {}))
    unseen = np.r_[x_tr[y_tr >= 8], x_test[y_test >= 8]]
    held = [eval_heldout(n, models[n], x_cal, y_cal, x_test, y_test, unseen)
            for n in ("digits_mlp_0to7", "digits_cnn_0to7")]
    drift = {}
    for name in ("digits_mlp", "digits_cnn"):
        print(f"drift on {name} ...", file=sys.stderr)
        drift[name + " (new writers)"] = eval_drift(models[name], x_cal, x_test,
                                                    n_clean=args.n_clean)
        drift[name + " (same writers)"] = eval_drift(models[name], x_cal2, x_test2,
                                                     n_clean=args.n_clean)
    same = {n: clean_fpr(models[n], x_cal2, x_test2) for n in ("digits_mlp", "digits_cnn")}
    text = report(results, held, drift)
    text += "\nClean false-positive rate, same writers (interleaved split), target 0.05:\n\n"
    text += "| model | " + " | ".join(DETECTORS) + " |\n|---|" + "---|" * len(DETECTORS) + "\n"
    for n, f in same.items():
        text += f"| {n} | " + " | ".join(f"{f[k]:.3f}" for k in DETECTORS) + " |\n"
    text += f"\nEvaluation run time: {time.perf_counter() - t0:.0f} s.\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "heldout": held, "drift": drift},
                                        indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
