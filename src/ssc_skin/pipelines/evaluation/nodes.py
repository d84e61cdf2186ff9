"""Nodes of the `evaluation` pipeline: patch, image and patient metrics, then the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import mlflow
import mlflow.keras
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.figure import Figure

from ssc_skin.constants import SPLITS, Skipped
from ssc_skin.evaluation import figures, metrics, report
from ssc_skin.imaging import tiling
from ssc_skin.models import gradcam, training
from ssc_skin.pipelines.classification.nodes import encode_labels

logger = logging.getLogger(__name__)


def predict_patches(classifier: keras.Model, patches: dict[str, np.ndarray],
                    patch_index: pd.DataFrame, task: dict[str, Any],
                    architecture: dict[str, Any], chunk_size: int = 2048) -> pd.DataFrame:
    """Class probabilities for every selected patch, with its provenance."""
    if isinstance(classifier, Skipped):
        return pd.DataFrame(columns=["row", "image", "patient", "label", "split", "y_true",
                                     *(f"p_{c}" for c in task["classes"])])
    frames = []
    for start in range(0, len(patch_index), chunk_size):  # chunks keep memory flat
        part = patch_index.iloc[start:start + chunk_size]
        images = tiling.resize_batch(patches["images"][part["row"].to_numpy()],
                                      architecture["input_size"])
        probabilities = training.predict(classifier, images)
        frame = part[["row", "image", "patient", "label", "split"]].reset_index(drop=True)
        frame["y_true"] = encode_labels(part["label"], task)
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
    if "skipped" in summary:
        return {}, summary
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
            per_class = metrics.per_class_sensitivity_specificity(t, p.argmax(axis=1),
                                                                  task["classes"])
            summary.update({f"{split}_{level}_{k}": v for k, v in per_class.items()})
            summary[f"{split}_{level}_confusion"] = metrics.confusion(
                t, p.argmax(axis=1), len(task["classes"]))
        summary[f"{split}_patients"] = int(part["patient"].nunique())
    summary.update(_test_patient_intervals(predictions, task["classes"], params))
    logger.info("%s.%s test patient accuracy %.3f [%.3f, %.3f]", summary["task"],
                summary["architecture"], summary.get("test_patient_accuracy", float("nan")),
                summary.get("test_patient_accuracy_ci_low", float("nan")),
                summary.get("test_patient_accuracy_ci_high", float("nan")))
    numeric = {k: {"value": v, "step": 0} for k, v in _finite_numbers(summary).items()}
    return numeric, summary


def _test_patient_intervals(predictions: pd.DataFrame, classes: list[str],
                            params: dict[str, Any]) -> dict[str, float]:
    """Intervals of test metrics over patients (the unit of independence): Wilson for accuracy,
    percentile bootstrap resampling patients for the others."""
    y_test, p_test = _test_patients(predictions, classes)
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


def _test_patients(predictions: pd.DataFrame, classes: list[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mean probabilities) of the test patients."""
    test = predictions[predictions["split"] == "test"]
    probabilities, labels = metrics.aggregate_probabilities(
        test[[f"p_{c}" for c in classes]].to_numpy(), test["patient"], test["y_true"])
    return labels, probabilities


def evaluation_figures(*inputs: Any) -> tuple[Figure, Figure, Figure]:
    """Confusion matrices and ROC curves (test patients) and training curves, every model.

    `inputs`: the predictions of every model, then their training summaries, in the same order.
    """
    half = len(inputs) // 2
    confusion, roc, curves = {}, {}, {}
    for predictions, summary in zip(inputs[:half], inputs[half:], strict=True):
        if "skipped" in summary:
            continue
        name = f"{summary['task']}.{summary['architecture']}"
        labels, probabilities = _test_patients(predictions, summary["classes"])
        confusion[name] = (labels, probabilities.argmax(axis=1), summary["classes"])
        roc[name] = (labels, probabilities, summary["classes"])
        curves[name] = summary["history"]
    return (figures.confusion_matrices_figure(confusion), figures.roc_curves_figure(roc),
            figures.training_curves_figure(curves))


def gradcam_examples(classifier: keras.Model, predictions: pd.DataFrame,
                     patches: dict[str, np.ndarray], patch_index: pd.DataFrame,
                     images: dict[str, Any], task: dict[str, Any],
                     architecture: dict[str, Any]) -> Figure:
    """Grad-CAM over whole test images: per class, the most confident right and wrong image.

    Each patch's map is weighted by its probability for the explained class and put back at
    its place in the image, so the overlay shows where in the section the evidence lies.
    """
    if isinstance(classifier, Skipped):
        return figures.gradcam_figure([])
    test = predictions[predictions["split"] == "test"]
    prob_columns = [f"p_{c}" for c in task["classes"]]
    per_image = test.groupby("image").agg(y_true=("y_true", "first"),
                                          **{c: (c, "mean") for c in prob_columns})
    per_image["predicted"] = per_image[prob_columns].to_numpy().argmax(axis=1)
    per_image["confidence"] = per_image[prob_columns].to_numpy().max(axis=1)
    samples = []
    for y, name in enumerate(task["classes"]):
        of_class = per_image[per_image["y_true"] == y].sort_values("confidence", ascending=False)
        for right in (True, False):
            chosen = of_class[(of_class["predicted"] == y) == right].head(1)
            for image_id, row in chosen.iterrows():
                predicted = task["classes"][int(row["predicted"])]
                title = (f"{name} → {predicted} ({'right' if right else 'wrong'}, "
                         f"p={row['confidence']:.2f})")
                samples.append((title, *_image_heatmap(
                    classifier, images[image_id](), test[test["image"] == image_id], patches,
                    patch_index, int(row["predicted"]), prob_columns[int(row["predicted"])],
                    architecture["input_size"])))
    return figures.gradcam_figure(samples)


def _image_heatmap(classifier: keras.Model, image: Any, image_predictions: pd.DataFrame,
                   patches: dict[str, np.ndarray], patch_index: pd.DataFrame, class_index: int,
                   prob_column: str, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(image.convert("RGB"))
    rows = image_predictions["row"].to_numpy()
    located = patch_index.set_index("row").loc[rows]
    patch = patches["images"][rows]
    size = patch.shape[1]
    maps = gradcam.grad_cam(classifier, tiling.resize_batch(patch, input_size), class_index)
    weights = image_predictions[prob_column]
    heat = np.zeros(pixels.shape[:2], np.float32)
    for m, w, (x, y) in zip(maps, weights.to_numpy(), located[["x", "y"]].to_numpy(), strict=True):
        heat[y:y + size, x:x + size] = tiling.resize_batch(m[None], size)[0] * w
    return pixels, heat / max(float(heat.max()), 1e-6)


def build_report(segmentation_summary: dict[str, Any], colour_baseline: dict[str, Any],
                 manifest: pd.DataFrame, stain_normalizer: dict[str, Any],
                 params: dict[str, Any], *evaluations: dict[str, Any]) -> tuple[str, str]:
    """The study report (paper comparison first), as Markdown and as a standalone HTML page.

    The ablation table comes from `benchmarks/ablation.py` (separate runs), when it exists.
    """
    per_class = manifest.groupby("label")["patient"].nunique()
    cohort = (f"{len(manifest)} images from {manifest['patient'].nunique()} patients ("
              + ", ".join(f"{k}: {v}" for k, v in per_class.items()) + ")")
    ablations = Path(params.get("ablations_table", ""))
    text = report.build_markdown(
        segmentation_summary, list(evaluations),
        {"cohort": cohort, "colour_baseline": colour_baseline,
         "stain": stain_normalizer.get("method", "none"),
         "ablations": ablations.read_text() if ablations.is_file() else None})
    return text, report.markdown_to_html(text, "ssc-skin study report")


def log_model_run(evaluation: dict[str, Any], architecture: dict[str, Any],
                  classifier: keras.Model) -> None:
    """Evaluation metrics into the model's nested run, with the same metric names for every
    model, so MLflow's Compare view lines MobileNetV2 and CNN up directly.

    The run was opened by `train_classifier` (its id is in the training summary) and is
    reopened here, keeping its training-length duration; the metrics are also linked to the
    logged model `<task>_<arch>`. Without that run (training tracked elsewhere or not at all),
    a new nested run gets the metrics and the model. No-op without an active run.
    """
    from ssc_skin import tracking  # noqa: PLC0415 - keeps this edit inside log_model_run

    if mlflow.active_run() is None or "skipped" in evaluation:
        return
    name = f"{evaluation['task']}.{evaluation['architecture']}"
    run_id = tracking.existing_run(evaluation.get("mlflow_run_id"))
    if run_id:
        context = tracking.reopened_run(run_id)
    else:
        context = tracking.model_run(
            name, {"task": evaluation["task"], "architecture": evaluation["architecture"]},
            {"task": evaluation["task"], "architecture": evaluation["architecture"],
             "input_size": architecture["input_size"],
             "weights_source": evaluation.get("weights_source", "random"),
             **{f"options.{k}": v for k, v in architecture.get("options", {}).items()}})
    with context:
        model_uri = evaluation.get("model_uri") if run_id else None
        if not model_uri:
            model_uri = mlflow.keras.log_model(
                classifier, name=tracking.logged_model_name(name),
                pip_requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"]
            ).model_uri
        model_id = (model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-")
                    else None)
        mlflow.log_metrics(_finite_numbers(evaluation), model_id=model_id)
        mlflow.set_tags({"model_uri": model_uri, tracking.NOTE_TAG: tracking.model_note(evaluation)})
