"""One model's predictions -> every number the report and MLflow show about it.

The same function scores a deep model, the colour + texture baseline, one cross-validation
fold or the pooled out-of-fold predictions: whatever produced a predictions frame (one row per
patch: image, patient, split, y_true, p_<class>), it is judged by the same code.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin import aggregation
from ssc_skin.constants import SPLITS
from ssc_skin.evaluation import accounting, metrics

logger = logging.getLogger(__name__)
LEVELS = ("patch", "image", "patient")


def probability_columns(classes: list[str]) -> list[str]:
    return [f"p_{name}" for name in classes]


def unit_keys(frame: pd.DataFrame, level: str) -> pd.Series:
    """The aggregation unit of each row. Pooled cross-validation frames (a `fold` column) key
    units within their fold, because a patient can be a validation patient of several folds
    (though a test patient of one only)."""
    if "fold" in frame:
        return frame["fold"].astype(str) + "|" + frame[level].astype(str)
    return frame[level].astype(str)


def unit_probabilities(
    part: pd.DataFrame, classes: list[str], level: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, mean class probabilities, unit keys) per `level` (patch, image or patient):
    `aggregation.group_means`, the rule `predict` and the served model apply too."""
    probabilities = part[probability_columns(classes)].to_numpy()
    if level == "patch":
        return part["y_true"].to_numpy(int), probabilities, np.arange(len(part))
    keys = unit_keys(part, level).to_numpy()
    units, mean, _ = aggregation.group_means(probabilities, keys)
    labels = part["y_true"].groupby(keys).first().loc[units]
    return labels.to_numpy(int), mean, units


def _level_metrics(y: np.ndarray, p: np.ndarray, classes: list[str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{prefix}_{k}": v for k, v in metrics.classification_metrics(y, p).items()
    }
    out.update(
        {
            f"{prefix}_{k}": v
            for k, v in metrics.per_class_sensitivity_specificity(
                y, p.argmax(axis=1), classes
            ).items()
        }
    )
    out[f"{prefix}_confusion"] = metrics.confusion(y, p.argmax(axis=1), len(classes))
    out[f"{prefix}_n"] = len(y)
    out[f"{prefix}_correct"] = int((p.argmax(axis=1) == y).sum())
    return out


def _intention_to_diagnose(
    part: pd.DataFrame,
    images: pd.DataFrame,
    task: dict[str, Any],
    level: str,
    confidence: float,
    prefix: str,
) -> dict[str, float]:
    """Metrics over every image/patient of the split, not-assessed ones counted as wrong.

    Assessed units take their class from the predictions, the others from their cohort label.
    """
    keys = unit_keys(images, level)
    labels = images["label"].astype(str).groupby(keys.to_numpy()).first()
    truth = pd.Series(accounting.encode(labels, task), index=labels.index)
    called = pd.Series(-1, index=labels.index)
    if not part.empty:
        y, p, ids = unit_probabilities(part, task["classes"], level)
        truth.loc[ids] = y
        called.loc[ids] = p.argmax(axis=1)
    if truth.isna().any():
        raise ValueError(
            f"labels {sorted(set(labels[truth.isna()]))} of not-assessed units are "
            f"not in the label_map of task {task['name']!r}"
        )
    result = accounting.intention_to_diagnose(
        truth.to_numpy(int), called.to_numpy(int), task["classes"], confidence
    )
    return {
        f"{prefix}_{k.replace('_ci_', '_all_ci_') if '_ci_' in k else k + '_all'}": v
        for k, v in result.items()
    }


def _folds(frame: pd.DataFrame) -> pd.Series:
    return frame["fold"] if "fold" in frame else pd.Series(0, index=frame.index)


def _thresholds(predictions: pd.DataFrame, classes: list[str]) -> dict[Any, float]:
    """Per fold (one fold in a single split): the Youden screening threshold chosen on the
    validation patients, SSc (any class but the first, normal) vs normal."""
    val = predictions[predictions["split"] == "val"]
    chosen = {}
    for fold, part in val.groupby(_folds(val)):
        y, p, _ = unit_probabilities(part, classes, "patient")
        chosen[fold] = metrics.youden_threshold(y != 0, 1 - p[:, 0])
    return chosen


def _screening(predictions: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Test patients screened (SSc vs normal) at 0.5 and at each fold's validation Youden
    threshold; a fold whose validation patients lack a class has no threshold (left out)."""
    chosen = _thresholds(predictions, classes)
    test = predictions[predictions["split"] == "test"]
    positive, score, threshold = [], [], []
    for fold, part in test.groupby(_folds(test)):
        y, p, _ = unit_probabilities(part, classes, "patient")
        positive.append(y != 0)
        score.append(1 - p[:, 0])
        threshold.append(np.full(len(y), chosen.get(fold, np.nan)))
    positive, score, threshold = map(np.concatenate, (positive, score, threshold))
    finite = [t for t in chosen.values() if np.isfinite(t)]
    result: dict[str, Any] = {
        "youden_thresholds": [float(t) for t in chosen.values()],
        "val_patient_youden_threshold": float(np.mean(finite)) if finite else float("nan"),
    }
    for name, t in (("default", np.full(len(score), 0.5)), ("youden", threshold)):
        usable = np.isfinite(t)
        stats = metrics.screening_at_threshold(positive[usable], score[usable] - t[usable], 0.0)
        result.update({f"test_patient_screen_{k}_{name}": v for k, v in stats.items()})
        result[f"test_patient_screen_n_{name}"] = int(usable.sum())
    return result


def score_model(
    predictions: pd.DataFrame,
    selection: pd.DataFrame | None,
    task: dict[str, Any],
    params: dict[str, Any],
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """Patch, image and patient metrics per split over the assessed units; counts of assessed /
    total images and patients with the reason for each one not assessed; intention-to-diagnose
    metrics (not assessed = wrong); intervals, calibration and the screening threshold for the
    test patients.

    `params`: the `evaluation` block (bootstrap_resamples, confidence, bootstrap_metrics, seed,
    calibration_bins). A `fold` column (pooled cross-validation) keeps folds apart where a unit
    can recur (validation patients) and picks each fold's threshold on its own validation set.
    """
    classes = list(task["classes"])
    if selection is None:
        selection = accounting.selection_from_predictions(predictions)
    if ("fold" in predictions) != ("fold" in selection):
        raise ValueError("pooled predictions and image selection must both have a `fold` column")
    confidence = params.get("confidence", 0.95)
    summary: dict[str, Any] = {}
    for split in splits:
        part = predictions[predictions["split"] == split]
        images = accounting.assessment(selection, predictions, split)
        if images.empty:
            continue
        summary.update(accounting.counts(images, split))
        summary[f"{split}_patients"] = int(part["patient"].nunique())
        for level in LEVELS:
            if not part.empty:
                y, p, _ = unit_probabilities(part, classes, level)
                summary.update(_level_metrics(y, p, classes, f"{split}_{level}"))
            if level != "patch":
                summary.update(
                    _intention_to_diagnose(
                        part, images, task, level, confidence, f"{split}_{level}"
                    )
                )
        if split == "test":
            summary["test_not_assessed"] = accounting.not_assessed(images)
    test = predictions[predictions["split"] == "test"]
    if not test.empty:
        summary.update(_test_intervals(test, classes, params))
        bins = params.get("calibration_bins", 10)
        for level in ("patch", "patient"):
            y, p, _ = unit_probabilities(test, classes, level)
            summary[f"test_{level}_ece"] = metrics.expected_calibration_error(y, p, bins)
        summary.update(_screening(predictions, classes))
    return summary


def _test_intervals(
    test: pd.DataFrame, classes: list[str], params: dict[str, Any]
) -> dict[str, float]:
    """Intervals over test patients (the unit of independence): Wilson for accuracy,
    percentile bootstrap resampling patients for the others."""
    y, p, _ = unit_probabilities(test, classes, "patient")
    intervals = {}
    for name in params.get("bootstrap_metrics", ["accuracy"]):
        if name == "accuracy":
            correct = int((p.argmax(axis=1) == y).sum())
            low, high = metrics.wilson_interval(correct, len(y), params.get("confidence", 0.95))
        elif metrics.enough_for_bootstrap(y, len(classes), params.get("min_per_class", 3)):
            low, high = metrics.bootstrap_interval(
                y,
                p,
                metrics.METRICS[name],
                params.get("bootstrap_resamples", 1000),
                params.get("confidence", 0.95),
                params.get("seed", 0),
            )
        else:  # too few patients of some class: no interval rather than a degenerate one
            low, high = float("nan"), float("nan")
        intervals[f"test_patient_{name}_ci_low"] = low
        intervals[f"test_patient_{name}_ci_high"] = high
    return intervals


def finite_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The entries MLflow can take as metrics: finite numbers (not bools, not NaN)."""
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }


def headline(summary: dict[str, Any]) -> str:
    """The log line's start for one model's evaluation: `binary.cnn: test patient accuracy
    0.833 [0.681, 0.921] over 36 of 36 patients` (assessed patients; counts say of how many)."""
    nan = float("nan")
    return (
        f"{summary['task']}.{summary['architecture']}: test patient accuracy "
        f"{summary.get('test_patient_accuracy', nan):.3f} "
        f"[{summary.get('test_patient_accuracy_ci_low', nan):.3f}, "
        f"{summary.get('test_patient_accuracy_ci_high', nan):.3f}] over "
        f"{summary.get('test_patients_assessed')} of {summary.get('test_patients_total')} patients"
    )
