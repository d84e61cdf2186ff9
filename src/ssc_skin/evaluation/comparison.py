"""Two models compared on the same patients, in a sentence a clinician can read.

Two intervals that overlap say little: with 9 test patients both models' accuracies span ~40
points. What answers "is A better than B on this cohort?" is a paired analysis on the patients
both assessed: an exact McNemar test on their right/wrong calls, and a paired bootstrap
interval of the AUC difference that resamples patients.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.evaluation import metrics, scoring

DISPLAY = {
    "mobilenetv2": "MobileNetV2",
    "cnn": "CNN",
    "densenet": "DenseNet",
    "texture": "colour+texture LR",
    "hybrid": "hybrid (deep + peer)",
}


def display_name(architecture: str) -> str:
    return DISPLAY.get(architecture, architecture)


def _patients(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Test patients: label and mean class probabilities, keyed by (fold|)patient."""
    test = predictions[predictions["split"] == "test"]
    y, p, keys = scoring.unit_probabilities(test, classes, "patient")
    return pd.DataFrame(p, index=keys, columns=scoring.probability_columns(classes)).assign(
        y_true=y
    )


def compare(
    name_a: str,
    predictions_a: pd.DataFrame,
    name_b: str,
    predictions_b: pd.DataFrame,
    classes: list[str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """McNemar (exact) and the paired-bootstrap AUC difference (A - B) on the test patients
    both models assessed."""
    a, b = _patients(predictions_a, classes), _patients(predictions_b, classes)
    common = a.index.intersection(b.index)
    one_only = len(a.index.symmetric_difference(b.index))
    a, b = a.loc[common], b.loc[common]
    columns = scoring.probability_columns(classes)
    y = a["y_true"].to_numpy(int)
    pa, pb = a[columns].to_numpy(), b[columns].to_numpy()
    result: dict[str, Any] = {
        "a": name_a,
        "b": name_b,
        "patients": len(common),
        "patients_one_model_only": one_only,
        "accuracy_a": float(np.mean(pa.argmax(1) == y)) if len(y) else None,
        "accuracy_b": float(np.mean(pb.argmax(1) == y)) if len(y) else None,
    }
    result.update(metrics.mcnemar_exact(pa.argmax(1) == y, pb.argmax(1) == y))
    diff, low, high = metrics.paired_bootstrap_difference(
        y,
        pa,
        pb,
        metrics.METRICS["auc"],
        params.get("bootstrap_resamples", 1000),
        params.get("confidence", 0.95),
        params.get("seed", 0),
    )
    if not metrics.enough_for_bootstrap(y, len(classes), params.get("min_per_class", 3)):
        low = high = float("nan")  # a handful of patients: no honest interval
    result.update(
        {
            "auc_a": metrics.METRICS["auc"](y, pa) if len(y) else float("nan"),
            "auc_b": metrics.METRICS["auc"](y, pb) if len(y) else float("nan"),
            "auc_difference": diff,
            "auc_difference_ci_low": low,
            "auc_difference_ci_high": high,
        }
    )
    result["conclusion"] = conclusion(result, params.get("alpha", 0.05))
    result["sentence"] = sentence(result, params.get("confidence", 0.95))
    return result


def conclusion(result: dict[str, Any], alpha: float = 0.05) -> str:
    """'no evidence of a difference', or which model the evidence favours and by which test."""
    low, high = result["auc_difference_ci_low"], result["auc_difference_ci_high"]
    by_auc = (
        0
        if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high
        else (1 if low > 0 else -1)
    )
    by_calls = 0
    if result["p_value"] < alpha:
        by_calls = 1 if result["only_a_right"] > result["only_b_right"] else -1
    a, b = display_name(result["a"]), display_name(result["b"])
    if by_auc == 0 and by_calls == 0:
        return "no evidence of a difference"
    if by_auc and by_calls and by_auc != by_calls:
        return "conflicting evidence (AUC and right/wrong calls disagree)"
    better = a if (by_auc or by_calls) > 0 else b
    which = (
        "both AUC and right/wrong calls"
        if by_auc and by_calls
        else "AUC only"
        if by_auc
        else "right/wrong calls only"
    )
    return f"evidence that {better} is better ({which})"


def _signed(value: float) -> str:
    return (
        "n/a"
        if value is None or not math.isfinite(value)
        else f"{value:+.2f}".replace("-", "\u2212")
    )


def sentence(result: dict[str, Any], confidence: float = 0.95) -> str:
    """E.g. 'MobileNetV2 vs CNN (9 test patients): AUC difference +0.04 [−0.05, +0.12], McNemar
    exact p = 0.63 (MobileNetV2 alone right for 2, CNN alone for 1) — no evidence of a
    difference.'"""
    a, b = display_name(result["a"]), display_name(result["b"])
    p = result["p_value"]
    p_text = "p = 1" if p >= 0.995 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"
    if not math.isfinite(result["auc_difference"]):
        auc = "AUC difference undefined (a class is missing)"
    elif not math.isfinite(result["auc_difference_ci_low"]):
        auc = (
            f"AUC difference {_signed(result['auc_difference'])} (no interval: too few "
            "patients of some class)"
        )
    else:
        auc = (
            f"AUC difference {_signed(result['auc_difference'])} "
            f"[{_signed(result['auc_difference_ci_low'])}, "
            f"{_signed(result['auc_difference_ci_high'])}] ({100 * confidence:.0f}% paired "
            "bootstrap over patients)"
        )
    return (
        f"{a} vs {b} ({result['patients']} test patients both assessed): {auc}, McNemar exact "
        f"{p_text} ({a} alone right for {result['only_a_right']}, {b} alone for "
        f"{result['only_b_right']}) \u2014 {result['conclusion']}."
    )


def compare_all(
    models: dict[str, tuple[str, pd.DataFrame, list[str]]], params: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every pair of models of the same task, in the order given (deep models first, the
    classical peer last). `models`: namespace -> (task, predictions, classes); key of the
    result: '<task>.<a>_vs_<b>'."""
    results = {}
    by_task: dict[str, list[str]] = {}
    for namespace, (task, _, _) in models.items():
        by_task.setdefault(task, []).append(namespace)
    for task, namespaces in by_task.items():
        for first, second in itertools.combinations(namespaces, 2):
            arch_a, arch_b = first.rsplit(".", 1)[-1], second.rsplit(".", 1)[-1]
            classes = models[first][2]
            results[f"{task}.{arch_a}_vs_{arch_b}"] = {
                "task": task,
                **compare(arch_a, models[first][1], arch_b, models[second][1], classes, params),
            }
    return results
