"""Evaluate the inference guard on the digits reference models, following OpenOOD's protocol.

Run: ``.venv/bin/python benchmarks/eval_guard.py [--out FILE.md] [--json FILE.json]``

* Models: ``digits_mlp``, ``digits_cnn`` and the int8 ``digits_mlp_int8`` (trained by project
  code on samples 0-1,199 of scikit-learn's digits), each naming its penultimate layer as a
  second output, run by LiteRT with preserved intermediate tensors (pre-softmax logits).
* Calibration: samples 1,200-1,499 (the first 300 held-back) with their labels, target FPR 0.05;
  the feature detectors' bank and class means also take the training samples (never test data).
* Test (OpenOOD: clean in-distribution vs near- and far-distribution sets): clean = samples
  1,500-1,796 (297), writers the guard never saw. Near: held-out classes (variants trained on
  0-7, tested on 8 and 9), partial occlusion, blur, contrast and brightness shifts, sensor noise,
  dead pixels, small rotations and shifts, and the adaptive (border-preserving) PGD. Far: noise
  images, inverted, rotated 90 degrees, plain FGSM / PGD. Gradients for the attacks come from the
  weights read out of the ``.tflite`` itself (numpy backprop, checked against the interpreter).
* Metrics: AUROC, FPR at 95% TPR, detection at the calibrated threshold, per detector and
  combined (max surprise, and the profile's rule); the feature detectors' cost and the expected
  mean cost at the sampled rate; drift: delay after a gradual shift, false alarms per 10,000.

Only measured numbers are printed. Only data sets a package ships; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eval_guard_report import report
from guard_attacks import NumpyNet, active_pixels, fgsm, pgd
from sklearn.metrics import roc_auc_score

from edgeward.models.guard import (
    FeatureTap,
    GuardedInterpreter,
    ModelIO,
    Profile,
    SqueezeConfig,
    calibrate,
    run_features,
    softmax_logits_index,
)
from edgeward.models.guard.combine import combine
from edgeward.models.guard.features import FeatureModel

__all__ = ["NumpyNet", "fgsm", "interpreter", "metrics", "shifts"]

DETECTORS = ("zmax", "mahalanobis", "msp", "entropy", "energy", "squeeze",
             "feature_mahalanobis", "feature_knn", "feature_mahalanobis_noreact",
             "feature_knn_noreact", "combined_max", "combined_always_on", "combined")
SAMPLED = ("squeeze", "feature_mahalanobis", "feature_knn")
IMG = (8, 8)


# --- models ---------------------------------------------------------------------------------------


def build_models() -> dict[str, bytes]:
    """The three reference models and their 0-7 variants, with the penultimate layer named."""
    from edgeward.models import refmodels as rm

    x_tr, y_tr, _, _ = rm.load_digits_split()
    keep = y_tr < 8
    mlp = rm.train_mlp(x_tr, y_tr, **rm.MLP_PARAMS)  # type: ignore[arg-type]
    cnn = rm.train_cnn(x_tr, y_tr, **rm.CNN_PARAMS)  # type: ignore[arg-type]
    mlp8 = rm.train_mlp(x_tr[keep], y_tr[keep], n_classes=8, **rm.MLP_PARAMS)  # type: ignore[arg-type]
    cnn8 = rm.train_cnn(x_tr[keep], y_tr[keep], n_classes=8, **rm.CNN_PARAMS)  # type: ignore[arg-type]
    return {
        "digits_mlp": rm.mlp_tflite(mlp, features=True),
        "digits_cnn": rm.cnn_tflite(cnn, features=True),
        "digits_mlp_int8": rm.mlp_int8_tflite(mlp, x_tr, features=True),
        "digits_mlp_0to7": rm.mlp_tflite(mlp8, features=True),
        "digits_cnn_0to7": rm.cnn_tflite(cnn8, features=True),
        "digits_mlp_int8_0to7": rm.mlp_int8_tflite(mlp8, x_tr[keep], features=True),
    }


def interpreter(content: bytes) -> Any:
    from edgeward.models.runtime import load_interpreter

    return load_interpreter(content, preserve_all_tensors=True)


@dataclass
class Guard:
    """One model with its calibrated guards: the shipped profile, max rule, no ReAct."""

    it: Any
    io: ModelIO
    tap: FeatureTap
    shape: tuple[int, ...]
    main: GuardedInterpreter
    plain_max: Profile
    noreact: FeatureModel
    noreact_th: dict[str, float]


def setup(content: bytes, x_cal: np.ndarray, y_cal: np.ndarray, x_ref: np.ndarray,
          y_ref: np.ndarray, seed: int = 0, rate: float = 0.1) -> Guard:
    it = interpreter(content)
    io = ModelIO(it, logits_index=softmax_logits_index(it))
    out = it.get_output_details()[1]
    dim = int(np.prod(out["shape"][1:]))
    tap = FeatureTap(it, out["name"], dim)
    shape = io.in_shape[1:]

    def cal(**kw: Any) -> Profile:
        return calibrate(x_cal.reshape(len(x_cal), *shape), io.predict, model_sha256=b"\0" * 32,
                         input_shape=shape, energy_source="preserved-logits",
                         squeeze=SqueezeConfig(bits=3, image_shape=(8, 8, 1), rate=0.1),
                         seed=seed, feature_fn=lambda r: run_features(io, tap, r),
                         feature_tensor=out["name"], feature_labels=y_cal, feature_rate=rate,
                         feature_reference=(x_ref, y_ref), **kw)

    main = cal()
    plain_max = cal(combination="max")
    nr = cal(combination="max", react_percentile=None)
    assert nr.features is not None
    th = {k + "_noreact": nr.thresholds[k] for k in ("feature_mahalanobis", "feature_knn")}
    return Guard(it, io, tap, shape, GuardedInterpreter(it, main), plain_max, nr.features, th)


def thresholds(g: Guard) -> dict[str, float]:
    p = g.main.profile
    return {**p.thresholds, **g.noreact_th, "combined": p.threshold,
            "combined_always_on": p.threshold, "combined_max": g.plain_max.threshold}


def set_scores(g: Guard, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every detector's score on rows ``x`` (all detectors run: the sampled ones too)."""
    verdicts = g.main.score_batch(x.reshape(len(x), *g.shape).astype(np.float32))
    out = {k: np.array([v.scores.get(k, np.nan) for v in verdicts]) for k in DETECTORS
           if not k.endswith(("_noreact", "_max", "_always_on"))}
    feats = run_features(g.io, g.tap, x.reshape(len(x), -1).astype(np.float32))
    for k, v in g.noreact.scores(feats).items():
        out[k + "_noreact"] = v
    base = {k: out[k] for k in g.plain_max.tails}
    out["combined_max"] = combine(g.plain_max.tails, base, None)
    # What an invoke on which no sampled detector ran sees (the profile's rule, same threshold).
    p = g.main.profile
    out["combined_always_on"] = combine(p.tails, {k: v for k, v in base.items()
                                                  if k not in SAMPLED}, p.weights)
    return out


# --- shifted inputs -----------------------------------------------------------------------------


def shifts(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Near- and far-distribution sets built from clean rows ``x`` (N, 64) in [0, 1]."""
    from scipy.ndimage import gaussian_filter, rotate

    rng = np.random.default_rng(seed)
    n = len(x)
    img = x.reshape(n, 8, 8)
    out: dict[str, np.ndarray] = {}
    # near: what a deployed sensor meets
    occ = img.copy()
    for i in range(n):
        r, c = rng.integers(0, 5, size=2)
        occ[i, r:r + 4, c:c + 4] = 0.0  # a quarter of the image covered
    out["near: occlusion 4x4"] = occ.reshape(n, -1)
    out["near: blur sigma 0.8"] = np.stack([gaussian_filter(m, 0.8) for m in img]).reshape(n, -1)
    out["near: contrast x0.6"] = x * 0.6
    out["near: brightness +0.15"] = np.clip(x + 0.15, 0, 1)
    out["near: sensor noise s=0.05"] = np.clip(x + rng.normal(0, 0.05, size=x.shape), 0, 1)
    out["near: sensor noise s=0.1"] = np.clip(x + rng.normal(0, 0.1, size=x.shape), 0, 1)
    stuck = x.copy()
    for i in range(n):
        stuck[i, rng.choice(64, size=8, replace=False)] = 0.0
    out["near: dead pixels (8)"] = stuck
    out["near: rotated 15"] = np.clip(rotate(img, 15, axes=(1, 2), reshape=False, order=1), 0, 1
                                      ).reshape(n, -1)
    sh = np.zeros_like(img)
    sh[:, 1:, 1:] = img[:, :-1, :-1]
    out["near: shifted 1px"] = sh.reshape(n, -1)
    # far
    out["far: gaussian noise"] = np.clip(rng.normal(0.3, 0.3, size=x.shape), 0, 1)
    out["far: uniform noise"] = rng.uniform(0, 1, size=x.shape)
    out["far: inverted"] = 1.0 - x
    out["far: rotated 90"] = np.rot90(img, 1, axes=(1, 2)).reshape(n, -1)
    return {k: v.astype(np.float32) for k, v in out.items()}


def attacks(net: NumpyNet, x: np.ndarray, y: np.ndarray, x_cal: np.ndarray, seed: int
            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    mask = active_pixels(x_cal)
    made = {
        "adversarial: PGD eps=0.1 adaptive": pgd(net, x, y, 0.1, seed=seed, mask=mask),
        "adversarial: PGD eps=0.2 adaptive": pgd(net, x, y, 0.2, seed=seed, mask=mask),
        "far: FGSM eps=0.1": fgsm(net, x, y, 0.1),
        "far: PGD eps=0.1": pgd(net, x, y, 0.1, seed=seed),
    }
    err = {k: float((net.logits(v).argmax(1) != y).mean()) for k, v in made.items()}
    return made, err


# --- metrics --------------------------------------------------------------------------------------


def metrics(clean: np.ndarray, shifted: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, FPR at 95% TPR, detection rate at the calibrated threshold (flag when s > t), and
    TPR at 5% clean FPR (``tpr05``: the detection a threshold right for this clean set gives)."""
    if np.isnan(clean).all() or np.isnan(shifted).all():
        return {"auroc": float("nan"), "fpr95": float("nan"), "det": float("nan"),
                "tpr05": float("nan")}
    y = np.r_[np.zeros(len(clean)), np.ones(len(shifted))]
    s = np.nan_to_num(np.r_[clean, shifted], nan=np.inf, posinf=1e300)
    auroc = float(roc_auc_score(y, s))
    t95 = np.quantile(shifted, 0.05, method="lower")
    t05 = np.quantile(np.nan_to_num(clean, nan=np.inf), 0.95, method="higher")
    return {"auroc": auroc, "fpr95": float((clean >= t95).mean()),
            "det": float((shifted > threshold).mean()), "tpr05": float((shifted > t05).mean())}


def eval_model(name: str, g: Guard, content: bytes, x_cal: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, seed: int = 0) -> dict[str, Any]:
    clean = set_scores(g, x_test)
    th = thresholds(g)
    net = NumpyNet(content)
    sets = shifts(x_test, seed)
    adv, adv_err = attacks(net, x_test, y_test, x_cal, seed)
    sets.update(adv)
    res: dict[str, Any] = {
        "model": name,
        "clean_fpr": {k: float((clean[k] > th[k]).mean()) for k in DETECTORS},
        "clean_acc": float((net.logits(x_test).argmax(1) == y_test).mean()),
        "adv_error_rate": adv_err, "weights": g.main.profile.weights, "sets": {},
    }
    for label, xs in sorted(sets.items()):
        sc = set_scores(g, xs)
        res["sets"][label] = {k: metrics(clean[k], sc[k], th[k]) for k in DETECTORS}
    return res


def feature_cost(g: Guard, x: np.ndarray, n: int = 2000) -> dict[str, float]:
    """Measured on the device path: seconds of feature scoring per scored invoke (median and
    mean: the machine is shared, so the mean carries other processes' preemptions) and the mean
    per invoke at the profile's rate."""
    p = g.main.profile
    assert p.features is not None
    guard = GuardedInterpreter(g.it, p)
    hook = guard.features
    assert hook is not None
    rng = np.random.default_rng(0)
    rows = x[rng.integers(0, len(x), size=n)].reshape(n, *g.shape).astype(np.float32)
    per: list[float] = []
    for r in rows:
        before, scored = hook.seconds, hook.scored
        guard.invoke(r)
        if hook.scored > scored:
            per.append(hook.seconds - before)
    med = float(np.median(per)) if per else float("nan")
    return {"rate": hook.rate, "scored": hook.scored, "invokes": n, "per_scored_s": med,
            "per_scored_mean_s": hook.seconds / max(hook.scored, 1),
            "mean_per_invoke_s": hook.rate * med, "measured_mean_per_invoke_s": hook.seconds / n,
            "profile_cost_s": p.features.cost_s, "profile_mean_cost_s": p.features.mean_cost_s,
            "invoke_s": p.invoke_s, "bank": int(p.features.bank.shape[0]), "dim": p.features.dim}


def eval_drift(g: Guard, x_test: np.ndarray, *, n_clean: int = 10_000, seeds: int = 3
               ) -> dict[str, Any]:
    """False alarms over ``n_clean`` clean invokes; delay after gradual shifts begin."""
    profile, shape = g.main.profile, g.shape
    rng = np.random.default_rng(0)
    guard = GuardedInterpreter(g.it, profile)
    alarms = flags = 0
    for i in rng.integers(0, len(x_test), size=n_clean):
        v = guard.invoke(x_test[i].reshape(shape)).verdict
        alarms += "score drift" in v.reasons
        flags += any(r.startswith("anomalous") for r in v.reasons)
    ramps = {
        "additive noise 0 -> 0.3 over 1000": lambda x, t: np.clip(
            x + rng.normal(0, 0.3 * t, size=x.shape), 0, 1),
        "contrast fade 1 -> 0.4 over 1000": lambda x, t: x * (1 - 0.6 * t),
    }
    delays: dict[str, list[float]] = {}
    for label, fn in ramps.items():
        delays[label] = []
        for s in range(seeds):
            guard = GuardedInterpreter(g.it, profile)
            r = np.random.default_rng(100 + s)
            for i in r.integers(0, len(x_test), size=300):  # warm: clean traffic first
                guard.invoke(x_test[i].reshape(shape))
            delay = float("nan")
            for step in range(2000):
                t = min(step / 1000, 1.0)
                x = fn(x_test[r.integers(0, len(x_test))], t).astype(np.float32)
                if "score drift" in guard.invoke(x.reshape(shape)).verdict.reasons:
                    delay = step
                    break
            delays[label].append(delay)
    return {"clean_invokes": n_clean, "drift_false_alarms": alarms, "per_input_flags": flags,
            "cusum_h": profile.drift.h, "delays": delays}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    ap.add_argument("--n-clean", type=int, default=10_000, help="clean invokes for drift")
    ap.add_argument("--rate", type=float, default=0.1, help="feature detectors' sampled rate")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from edgeward.models.refmodels import load_digits_split

    x_tr, y_tr, x_ho, y_ho = load_digits_split()
    # Contiguous split (samples 1,200-1,499 calibrate, 1,500-1,796 test): the digits are stored
    # by writer, so the test writers are new to the guard, as on a deployed device.
    x_cal, y_cal, x_test, y_test = x_ho[:300], y_ho[:300], x_ho[300:], y_ho[300:]
    x_cal2, y_cal2, x_test2 = x_ho[0::2], y_ho[0::2], x_ho[1::2]  # same writers both sides
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say("training models ...")
    models = build_models()
    results, cost, drift, same = [], {}, {}, {}
    for name in ("digits_mlp", "digits_cnn", "digits_mlp_int8"):
        say(f"evaluating {name} ...")
        g = setup(models[name], x_cal, y_cal, x_tr, y_tr, rate=args.rate)
        results.append(eval_model(name, g, models[name], x_cal, x_test, y_test))
        cost[name] = feature_cost(g, x_test)
        if args.n_clean:
            say(f"drift on {name} ...")
            drift[name] = eval_drift(g, x_test, n_clean=args.n_clean)
        g2 = setup(models[name], x_cal2, y_cal2, x_tr, y_tr, rate=args.rate)
        sc, th = set_scores(g2, x_test2), thresholds(g2)
        same[name] = {k: float((sc[k] > th[k]).mean()) for k in DETECTORS}
    held = []
    keep_c, keep_t, keep_r = y_cal < 8, y_test < 8, y_tr < 8
    unseen = np.r_[x_tr[y_tr >= 8], x_test[y_test >= 8]]
    for name in ("digits_mlp_0to7", "digits_cnn_0to7", "digits_mlp_int8_0to7"):
        say(f"held-out classes on {name} ...")
        g = setup(models[name], x_cal[keep_c], y_cal[keep_c], x_tr[keep_r], y_tr[keep_r],
                  rate=args.rate)
        clean = set_scores(g, x_test[keep_t])
        sc, th = set_scores(g, unseen), thresholds(g)
        probs = g.io.predict(unseen.astype(np.float64), "probs").probs
        conf = probs.max(axis=1)
        top = np.bincount(probs.argmax(axis=1), minlength=8)
        held.append({"model": name, "n_unseen": len(unseen), "weights": g.main.profile.weights,
                     "unseen_confident": float((conf >= 0.9).mean()),
                     "unseen_as": {int(c): int(v) for c, v in enumerate(top) if v},
                     "by_class": {str(c): metrics(clean["combined"],
                                                  sc["combined"][np.r_[y_tr[y_tr >= 8],
                                                                       y_test[y_test >= 8]] == c],
                                                  th["combined"]) for c in (8, 9)},
                     "clean_fpr": {k: float((clean[k] > th[k]).mean()) for k in DETECTORS},
                     "metrics": {k: metrics(clean[k], sc[k], th[k]) for k in DETECTORS}})
    text = report(results, held, cost, drift, same, DETECTORS)
    text += f"\nEvaluation run time: {time.perf_counter() - t0:.0f} s.\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "heldout": held, "cost": cost,
                                         "drift": drift, "same_writers": same},
                                        indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
