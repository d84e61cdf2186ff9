"""Classification and segmentation metrics, aggregation to patients, bootstrap intervals."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


def aggregate_probabilities(probabilities: np.ndarray, groups: pd.Series,
                            labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probability per group (image or patient) and the group's label."""
    frame = pd.DataFrame(probabilities, index=groups.to_numpy())
    mean = frame.groupby(level=0, sort=True).mean()
    group_labels = labels.groupby(groups.to_numpy()).first().loc[mean.index]
    return mean.to_numpy(), group_labels.to_numpy()


def _auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    n_classes = probabilities.shape[1]
    if len(np.unique(y_true)) < n_classes:
        return float("nan")  # AUC is undefined unless every class is present
    if n_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr",
                               labels=list(range(n_classes))))


def _brier(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    onehot = np.eye(probabilities.shape[1])[y_true]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def _labels(probabilities: np.ndarray) -> list[int]:
    return list(range(probabilities.shape[1]))


# Each metric takes (y_true, class probabilities); the bootstrap recomputes only those it needs.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(np.mean(p.argmax(1) == y)),
    "balanced_accuracy": lambda y, p: float(balanced_accuracy_score(y, p.argmax(1))),
    "macro_f1": lambda y, p: float(f1_score(y, p.argmax(1), average="macro",
                                            labels=_labels(p), zero_division=0)),
    "auc": _auc,
    "brier": _brier,
    "kappa_quadratic": lambda y, p: float(cohen_kappa_score(y, p.argmax(1), weights="quadratic",
                                                            labels=_labels(p))),
}


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1, ROC AUC, Brier and (3-class) quadratic kappa."""
    names = [n for n in METRICS if n != "kappa_quadratic" or probabilities.shape[1] > 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on single-class bootstrap samples
        return {name: METRICS[name](y_true, probabilities) for name in names}


def bootstrap_interval(y_true: np.ndarray, probabilities: np.ndarray,
                       metric: Callable[[np.ndarray, np.ndarray], float],
                       n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval, resampling rows (here: patients) with replacement."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        value = metric(y_true[idx], probabilities[idx])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: stays honest at 0% and 100%, where a bootstrap
    collapses to a single point."""
    if total == 0:
        return float("nan"), float("nan")
    ci = binomtest(successes, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def dice_iou(y_true: np.ndarray, y_pred: np.ndarray, positive: int) -> tuple[float, float]:
    """Dice and IoU of one class over a whole set of masks (pixels pooled)."""
    truth = y_true == positive
    pred = y_pred == positive
    intersection = float(np.logical_and(truth, pred).sum())
    total = float(truth.sum() + pred.sum())
    union = float(np.logical_or(truth, pred).sum())
    dice = 2 * intersection / total if total else 1.0
    iou = intersection / union if union else 1.0
    return dice, iou


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Confusion counts (rows: truth, columns: prediction) as plain ints for JSON, with every
    class present even when a split lacks it."""
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred),
                              labels=list(range(n_classes)))
    return [[int(v) for v in row] for row in matrix]


def per_class_sensitivity_specificity(y_true: np.ndarray, y_pred: np.ndarray,
                                      class_names: list[str]) -> dict[str, float]:
    """One-vs-rest sensitivity and specificity per class (`sensitivity_<class>`, ...): what a
    screening test is judged by. NaN where a class has no positive (or no negative) example."""
    matrix = np.asarray(confusion(y_true, y_pred, len(class_names)), dtype=float)
    total = matrix.sum()
    result = {}
    for k, name in enumerate(class_names):
        tp = matrix[k, k]
        fn = matrix[k].sum() - tp
        fp = matrix[:, k].sum() - tp
        tn = total - tp - fn - fp
        result[f"sensitivity_{name}"] = float(tp / (tp + fn)) if tp + fn else float("nan")
        result[f"specificity_{name}"] = float(tn / (tn + fp)) if tn + fp else float("nan")
    return result
