"""Markdown tables of the guard evaluation (``eval_guard.py``): only measured numbers."""

from __future__ import annotations

from typing import Any

SHORT = {"zmax": "zmax", "mahalanobis": "input maha", "msp": "MSP", "entropy": "entropy",
         "energy": "energy", "squeeze": "squeeze", "feature_mahalanobis": "feat maha",
         "feature_knn": "feat kNN", "feature_mahalanobis_noreact": "feat maha (no ReAct)",
         "feature_knn_noreact": "feat kNN (no ReAct)", "combined_max": "combined (max)",
         "combined_always_on": "combined (always-on only)",
         "combined": "combined (profile rule)"}


def fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


def _table(rows: dict[str, dict[str, dict[str, float]]], dets: tuple[str, ...], what: str
           ) -> list[str]:
    out = ["| set | " + " | ".join(SHORT[k] for k in dets) + " |",
           "|---|" + "---|" * len(dets)]
    for label, m in rows.items():
        out.append(f"| {label} | " + " | ".join(fmt(m[k][what]) for k in dets) + " |")
    return out


def _weights(w: dict[str, float] | None) -> str:
    if not w:
        return "max surprise (the weighted rule did not detect more proxies)"
    return "weighted: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(w.items(), key=lambda t: -t[1]))


def report(results: list[dict[str, Any]], held: list[dict[str, Any]], cost: dict[str, Any],
           drift: dict[str, Any], same: dict[str, Any], dets: tuple[str, ...]) -> str:
    lines: list[str] = ["### Goals", "",
                        "| model | held-out classes AUROC (>= 0.95) | held-out detected "
                        "(>= 0.70) | clean FPR, new writers (<= 0.05) | adaptive PGD 0.1 / 0.2 "
                        "detected (>= 0.50) | held-out / PGD 0.1 / PGD 0.2 detected at 5% clean "
                        "FPR | the same, max surprise |", "|---|---|---|---|---|---|---|"]
    for r, h in zip(results, held, strict=True):
        hm = h["metrics"]["combined"]
        a1 = r["sets"]["adversarial: PGD eps=0.1 adaptive"]["combined"]
        a2 = r["sets"]["adversarial: PGD eps=0.2 adaptive"]["combined"]
        lines.append(f"| {r['model']} | {fmt(hm['auroc'])} | {fmt(hm['det'])} | "
                     f"{fmt(r['clean_fpr']['combined'])} (0-7: {fmt(h['clean_fpr']['combined'])})"
                     f" | {fmt(a1['det'])} / {fmt(a2['det'])} | {fmt(hm['tpr05'])} / "
                     f"{fmt(a1['tpr05'])} / {fmt(a2['tpr05'])} | " + " / ".join(
                         fmt(m["tpr05"]) for m in (
                             h["metrics"]["combined_max"],
                             r["sets"]["adversarial: PGD eps=0.1 adaptive"]["combined_max"],
                             r["sets"]["adversarial: PGD eps=0.2 adaptive"]["combined_max"]))
                     + " |")
    lines += ["", "Combined score with the profile's rule, all detectors running (an invoke on "
              "which the sampled ones run); held-out classes on the 0-7 variant of each model. "
              "The last column uses the threshold that flags 5% of these clean test inputs (an "
              "oracle: what detection would be with a threshold right for the new writers).",
              ""]
    for r in results:
        lines += [f"### {r['model']}", "",
                  f"Clean test accuracy {r['clean_acc']:.3f}. Combination rule fitted at "
                  f"calibration: {_weights(r['weights'])}.", "",
                  "Clean false-positive rate at the calibrated thresholds, new writers "
                  "(target 0.05): " + ", ".join(f"{SHORT[k]} {r['clean_fpr'][k]:.3f}"
                                                for k in dets) + ".", "",
                  "AUROC:", ""]
        lines += _table(r["sets"], dets, "auroc")
        lines += ["", "Detected at the calibrated threshold:", ""]
        lines += _table(r["sets"], dets, "det")
        lines += ["", "FPR at 95% TPR:", ""]
        lines += _table(r["sets"], dets, "fpr95")
        lines += ["", "Adversarial error rate (fraction misclassified): " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["adv_error_rate"].items()) + ".", ""]
    lines += ["### Held-out classes (trained on 0-7, calibrated on 0-7, tested on unseen 8 and 9)",
              ""]
    heads = [h["model"] for h in held]
    lines += ["| detector | " + " | ".join(f"{m} AUROC / FPR95 / det" for m in heads) + " |",
              "|---|" + "---|" * len(heads)]
    for k in dets:
        lines.append(f"| {SHORT[k]} | " + " | ".join(
            f"{fmt(h['metrics'][k]['auroc'])} / {fmt(h['metrics'][k]['fpr95'])} / "
            f"{fmt(h['metrics'][k]['det'])}" for h in held) + " |")
    lines += ["", "Held-out diagnosis: " + "; ".join(
        f"{h['model']}: {h['unseen_confident']:.0%} of the unseen digits get a softmax "
        f"probability >= 0.9; predicted as " + ", ".join(
            f"{c}: {n}" for c, n in sorted(h["unseen_as"].items(), key=lambda t: -t[1])[:4])
        + "; combined AUROC on unseen 8s " + fmt(h["by_class"]["8"]["auroc"]) + ", on 9s "
        + fmt(h["by_class"]["9"]["auroc"]) for h in held) + "."]
    lines += ["", "Rules: " + "; ".join(f"{h['model']}: {_weights(h['weights'])}" for h in held)
              + ". Clean FPR on 0-7 (new writers), combined: " + ", ".join(
                  f"{h['model']} {h['clean_fpr']['combined']:.3f}" for h in held) + ".", ""]
    lines += ["### Cost of the feature detectors", "",
              "| model | features | kNN bank | per scored invoke, median at calibration (in the "
              "profile) | per scored invoke on the device path, median / mean | rate | expected "
              "mean per invoke (rate x median) | measured mean per invoke | invoke at "
              "calibration |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in cost.items():
        lines.append(f"| {name} | {c['dim']} | {c['bank']} | {c['profile_cost_s'] * 1e6:.1f} us "
                     f"| {c['per_scored_s'] * 1e6:.1f} / {c['per_scored_mean_s'] * 1e6:.1f} us "
                     f"({c['scored']} of {c['invokes']} invokes) | {c['rate']:g} | "
                     f"{c['mean_per_invoke_s'] * 1e6:.1f} us | "
                     f"{c['measured_mean_per_invoke_s'] * 1e6:.1f} us | "
                     f"{c['invoke_s'] * 1e6:.1f} us |")
    if drift:
        first = next(iter(drift.values()))["delays"]
        lines += ["", "### Drift (new writers)", "",
                  "| model | clean invokes | drift false alarms | per-input flags | CUSUM h | "
                  + " | ".join(f"delay: {k}" for k in first) + " |",
                  "|---|---|---|---|---|" + "---|" * len(first)]
        for name, d in drift.items():
            lines.append(f"| {name} | {d['clean_invokes']} | {d['drift_false_alarms']} | "
                         f"{d['per_input_flags']} | {d['cusum_h']:.1f} | " + " | ".join(
                             "/".join("none" if v != v else str(int(v)) for v in ds)
                             for ds in d["delays"].values()) + " |")
    lines += ["", "Clean false-positive rate, same writers (interleaved split), target 0.05:", "",
              "| model | " + " | ".join(SHORT[k] for k in dets) + " |",
              "|---|" + "---|" * len(dets)]
    for n, f in same.items():
        lines.append(f"| {n} | " + " | ".join(f"{f[k]:.3f}" for k in dets) + " |")
    return "\n".join(lines) + "\n"
