"""Nodes of the `evaluation` pipeline: patch, image and patient metrics, then the report."""

from __future__ import annotations

import logging
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd

from ssc_skin import metrics, report, training
from ssc_skin.pipelines.classification.nodes import split_arrays

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def predict_patches(classifier: keras.Model, patches: dict[str, np.ndarray],
                    patch_index: pd.DataFrame, task: dict[str, Any],
                    architecture: dict[str, Any]) -> pd.DataFrame:
    """Class probabilities for every selected patch, with its provenance."""
    frames = []
    for split in SPLITS:
        part = patch_index[patch_index["split"] == split]
        images, y = split_arrays(patches, patch_index, task, split, architecture["input_size"])
        probabilities = training.predict(classifier, images)
        frame = part[["row", "image", "patient", "label", "split"]].reset_index(drop=True)
        frame["y_true"] = y
        for i, name in enumerate(task["classes"]):
            frame[f"p_{name}"] = probabilities[:, i]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def evaluate_predictions(predictions: pd.DataFrame, task: dict[str, Any],
                         training_summary: dict[str, Any], params: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics at patch, image and patient level per split; bootstrap CIs for test patients."""
    prob_columns = [f"p_{name}" for name in task["classes"]]
    summary: dict[str, Any] = {k: v for k, v in training_summary.items() if k != "history"}
    for split in SPLITS:
        part = predictions[predictions["split"] == split]
        if part.empty:
            continue
        probabilities = part[prob_columns].to_numpy()
        y = part["y_true"]
        levels = {"patch": (probabilities, y.to_numpy())}
        for level in ("image", "patient"):
            levels[level] = metrics.aggregate_probabilities(probabilities, part[level], y)
        for level, (p, t) in levels.items():
            for name, value in metrics.classification_metrics(t, p).items():
                summary[f"{split}_{level}_{name}"] = value
        summary[f"{split}_patients"] = int(part["patient"].nunique())
    summary.update(_test_patient_intervals(predictions, prob_columns, params))
    logger.info("%s.%s test patient accuracy %.3f [%.3f, %.3f]", summary["task"],
                summary["architecture"], summary.get("test_patient_accuracy", float("nan")),
                summary.get("test_patient_accuracy_ci_low", float("nan")),
                summary.get("test_patient_accuracy_ci_high", float("nan")))
    numeric = {k: {"value": v, "step": 0} for k, v in _finite_numbers(summary).items()}
    return numeric, summary


def _test_patient_intervals(predictions: pd.DataFrame, prob_columns: list[str],
                            params: dict[str, Any]) -> dict[str, float]:
    """Intervals of test metrics over patients (the unit of independence): Wilson for accuracy,
    percentile bootstrap resampling patients for the others."""
    test = predictions[predictions["split"] == "test"]
    p_test, y_test = metrics.aggregate_probabilities(test[prob_columns].to_numpy(),
                                                     test["patient"], test["y_true"])
    intervals = {}
    for name in params["bootstrap_metrics"]:
        if name == "accuracy":  # a proportion of patients: Wilson, exact-ish even at 100%
            correct = int((p_test.argmax(axis=1) == y_test).sum())
            low, high = metrics.wilson_interval(correct, len(y_test), params["confidence"])
        else:
            low, high = metrics.bootstrap_interval(
                y_test, p_test, metrics.METRICS[name], params["bootstrap_resamples"],
                params["confidence"], params["seed"])
        intervals[f"test_patient_{name}_ci_low"] = low
        intervals[f"test_patient_{name}_ci_high"] = high
    return intervals


def _finite_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The entries MLflow can take as metrics: finite numbers (not bools, not NaN)."""
    return {k: float(v) for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}


def build_report(segmentation_summary: dict[str, Any], colour_baseline: dict[str, Any],
                 manifest: pd.DataFrame, *evaluations: dict[str, Any]) -> str:
    """The Markdown study report (paper comparison first)."""
    per_class = manifest.groupby("label")["patient"].nunique()
    cohort = (f"{len(manifest)} images from {manifest['patient'].nunique()} patients ("
              + ", ".join(f"{k}: {v}" for k, v in per_class.items()) + ")")
    return report.build_markdown(segmentation_summary, list(evaluations),
                                 {"cohort": cohort, "colour_baseline": colour_baseline})


def log_model_run(evaluation: dict[str, Any], architecture: dict[str, Any]) -> None:
    """One MLflow child run per task x architecture with the same metric names for every model,
    so MLflow's Compare view lines MobileNetV2 and CNN up directly. No-op without an active run.
    """
    if mlflow.active_run() is None:
        return
    name = f"{evaluation['task']}.{evaluation['architecture']}"
    with mlflow.start_run(run_name=name, nested=True):
        mlflow.set_tags({"task": evaluation["task"], "architecture": evaluation["architecture"]})
        mlflow.log_params({"task": evaluation["task"], "architecture": evaluation["architecture"],
                           "input_size": architecture["input_size"],
                           "weights_source": evaluation.get("weights_source", "random"),
                           **{f"options.{k}": v for k, v in architecture.get("options", {}).items()}})
        mlflow.log_metrics(_finite_numbers(evaluation))
