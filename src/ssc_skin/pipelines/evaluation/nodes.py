"""Nodes of the `evaluation` pipeline: every model's predictions scored by one piece of code
(patch, image and patient level, every test image accounted for), the classical colour +
texture peer, the paired comparison of the models, figures and the report."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.pipeline import Pipeline as SklearnPipeline

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.evaluation import comparison, figures, report, report_html, scoring, texture
from ssc_skin.imaging import tiling
from ssc_skin.models import gradcam, training
from ssc_skin.models.tasks import encode_labels, unsupported_reason

logger = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["row", "image", "patient", "label", "split", "y_true"]
# The splits a model is scored on. Training patches are not predicted: no number of the study
# reads them (the pooled CV uses each fold's validation and test patients; the hybrid is
# fitted on validation patients), and with test-time augmentation each prediction costs 8
# forward passes. How well a model fits its training patches is its per-epoch training curve
# (MLflow, `train/accuracy`).
SCORED_SPLITS = ("val", "test")


def scored_rows(patch_index: pd.DataFrame) -> pd.Series:
    """Which patch-index rows are predicted and scored (validation and test patients)."""
    return patch_index["split"].isin(SCORED_SPLITS)


def _empty_predictions(task: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        columns=[*PREDICTION_COLUMNS, *scoring.probability_columns(task["classes"])]
    )


def _predictions_frame(
    part: pd.DataFrame, probabilities: np.ndarray, task: dict[str, Any]
) -> pd.DataFrame:
    frame = part[PREDICTION_COLUMNS[:-1]].reset_index(drop=True)
    frame["y_true"] = encode_labels(part["label"], task)
    for i, name in enumerate(task["classes"]):
        frame[f"p_{name}"] = probabilities[:, i]
    return frame


def predict_patches(
    classifier: keras.Model,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    architecture: dict[str, Any],
    chunk_size: int = 2048,
) -> pd.DataFrame:
    """Class probabilities for every selected patch of the scored splits (`SCORED_SPLITS`),
    with its provenance."""
    if isinstance(classifier, Skipped):
        return _empty_predictions(task)
    patch_index = patch_index[scored_rows(patch_index)]
    frames = []
    for start in range(0, len(patch_index), chunk_size):  # chunks keep memory flat
        part = patch_index.iloc[start : start + chunk_size]
        images = tiling.resize_batch(
            patches["images"][part["row"].to_numpy()], architecture["input_size"]
        )
        frames.append(_predictions_frame(part, training.predict(classifier, images), task))
    return pd.concat(frames, ignore_index=True) if frames else _empty_predictions(task)


def evaluate_predictions(
    predictions: pd.DataFrame,
    task: dict[str, Any],
    training_summary: dict[str, Any],
    params: dict[str, Any],
    image_selection: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every number about one model: metrics at patch, image and patient level per split over
    the assessed images; assessed / total test images and patients and why each one left was
    not assessed (`image_selection`, one row per manifest image); intention-to-diagnose
    metrics (not assessed = wrong); intervals, calibration and the Youden threshold.

    The same function scores the deep models and the colour + texture peer.
    """
    summary: dict[str, Any] = {k: v for k, v in training_summary.items() if k != "history"}
    if "skipped" in summary:
        return {}, summary
    summary.update(
        scoring.score_model(predictions, image_selection, task, params, splits=SCORED_SPLITS)
    )
    logger.info(
        "%s assessed (%s of %s over all, not assessed = wrong); %s of %s test images "
        "assessed, %s flagged",
        scoring.headline(summary),
        f"{summary.get('test_patient_accuracy_all', float('nan')):.3f}",
        summary.get("test_patients_total"),
        summary.get("test_images_assessed"),
        summary.get("test_images_total"),
        summary.get("test_images_flagged"),
    )
    numeric = {k: {"value": v, "step": 0} for k, v in _finite_numbers(summary).items()}
    return numeric, summary


_finite_numbers = scoring.finite_numbers


# ---------- the classical colour + texture peer ----------


def texture_features(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    params: dict[str, Any],
    chunk_size: int = 2048,
) -> np.ndarray:
    """Colour + texture features of every selected patch (row i = patch_index row i), computed
    once and shared by every task's peer model."""
    options = params.get("texture", {})
    rows = patch_index["row"].to_numpy()
    parts = [
        texture.features(patches["images"][rows[start : start + chunk_size]], options)
        for start in range(0, len(rows), chunk_size)
    ]
    return np.concatenate(parts) if parts else texture.features(np.zeros((0, 8, 8, 3)), options)


def train_texture_baseline(
    features: np.ndarray,
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    params: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[SklearnPipeline | Skipped, dict[str, Any]]:
    """Logistic regression on colour + texture features of the same training patches the deep
    models see (same cap and seed); regularisation chosen on the validation patches."""
    name = f"{task['name']}.texture"
    base = {"task": task["name"], "architecture": "texture", "classes": list(task["classes"])}
    reason = unsupported_reason(patch_index["label"], task)
    if reason:
        logger.warning("%s skipped: %s", name, reason)
        return Skipped(reason), {**base, "skipped": reason}
    train, val = _feature_splits(features, patch_index, task, training_params)
    options = params.get("texture", {})
    run_params = {"task": task["name"], "architecture": "texture"}
    run_params.update({f"options.{k}": v for k, v in options.items()})
    with tracking.model_run(
        name, {"task": task["name"], "architecture": "texture"}, run_params
    ) as run_id:
        model, fitted = texture.fit(
            train, val, len(task["classes"]), options, training_params["seed"]
        )
    summary = {**base, **_texture_summary(model, fitted, train, val), "mlflow_run_id": run_id}
    logger.info(
        "%s fitted in %.1f s on %d patches (%d features, C=%s)",
        name,
        fitted["seconds"],
        len(train[0]),
        features.shape[1],
        fitted["C"],
    )
    return model, summary


def _feature_splits(
    features: np.ndarray,
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The peer's training features (the deep models' cap and seed) and validation features."""
    index = patch_index.reset_index(drop=True)
    train_rows = training.subsample(
        index[index["split"] == "train"],
        training_params.get("max_train_patches"),
        training_params["seed"],
    ).index
    val_rows = index.index[index["split"] == "val"]
    train = (features[train_rows], encode_labels(index.loc[train_rows, "label"], task))
    val = (features[val_rows], encode_labels(index.loc[val_rows, "label"], task))
    return train, val


def _texture_summary(
    model: SklearnPipeline,
    fitted: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    return {
        "weights_source": "n/a (logistic regression)",
        "train_patches": len(train[0]),
        "val_patches": len(val[0]),
        "train_seconds": fitted["seconds"],
        "epochs_run": 0,
        "patches_per_second": len(train[0]) / max(fitted["seconds"], 1e-9),
        "parameters": int(model[-1].coef_.size + model[-1].intercept_.size),
        "features": int(train[0].shape[1]),
        "C": fitted["C"],
        "val_log_loss": fitted["val_log_loss"],
        "history": {},
    }


def predict_texture_baseline(
    model: SklearnPipeline | Skipped,
    features: np.ndarray,
    patch_index: pd.DataFrame,
    task: dict[str, Any],
) -> pd.DataFrame:
    """The peer's class probabilities for the same patches as `predict_patches` (the scored
    splits), in the same frame, so `evaluate_predictions` scores it like any deep model."""
    scored = scored_rows(patch_index).to_numpy()
    if isinstance(model, Skipped) or not scored.any():
        return _empty_predictions(task)
    probabilities = texture.predict_proba(model, features[scored], len(task["classes"]))
    return _predictions_frame(patch_index[scored], probabilities, task)


def log_texture_run(evaluation: dict[str, Any]) -> None:
    """The peer's evaluation into its nested MLflow run (opened while it was fitted), with the
    same metric names as the deep models'. No-op without an active run."""
    tracking.log_evaluation(evaluation)


# ---------- comparisons, figures, report ----------


def _models(inputs: tuple[Any, ...]) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """(predictions, summary) of every model that was not skipped; `inputs` holds every
    model's predictions, then every model's summary, in the same order."""
    half = len(inputs) // 2
    return [(p, s) for p, s in zip(inputs[:half], inputs[half:], strict=True) if "skipped" not in s]


def compare_models(params: dict[str, Any], *inputs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each pair of models of a task on the same test patients: exact McNemar and the paired
    bootstrap AUC difference, with the sentence the report prints."""
    models = {
        f"{s['task']}.{s['architecture']}": (s["task"], p, list(s["classes"]))
        for p, s in _models(inputs)
    }
    results = comparison.compare_all(models, params)
    for result in results.values():
        logger.info("Paired comparison, %s: %s", result["task"], result["sentence"])
    numeric = {
        f"{key}.{name}": {"value": float(value), "step": 0}
        for key, result in results.items()
        for name, value in _finite_numbers(result).items()
    }
    return numeric, results


def evaluation_figures(*inputs: Any) -> tuple[Figure, Figure, Figure, Figure]:
    """Confusion matrices, ROC curves (test patients), training curves (models that have
    epochs) and reliability diagrams (test patches), every model.

    `inputs`: the predictions of every model, then their training summaries, in the same order.
    """
    confusion, roc, curves, reliability = {}, {}, {}, {}
    for predictions, summary in _models(inputs):
        name = f"{summary['task']}.{summary['architecture']}"
        test = predictions[predictions["split"] == "test"]
        labels, probabilities, _ = scoring.unit_probabilities(test, summary["classes"], "patient")
        confusion[name] = (labels, probabilities.argmax(axis=1), summary["classes"])
        roc[name] = (labels, probabilities, summary["classes"])
        if summary.get("history"):
            curves[name] = summary["history"]
        y, p, _ = scoring.unit_probabilities(test, summary["classes"], "patch")
        reliability[name] = (y, p)
    return (
        figures.confusion_matrices_figure(confusion),
        figures.roc_curves_figure(roc),
        figures.training_curves_figure(curves),
        figures.reliability_figure(reliability),
    )


def gradcam_examples(
    classifier: keras.Model,
    predictions: pd.DataFrame,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    images: dict[str, Any],
    task: dict[str, Any],
    architecture: dict[str, Any],
) -> Figure:
    """Grad-CAM over whole test images: per class, the most confident right and wrong image.

    Each patch's map is weighted by its probability for the explained class and put back at
    its place in the image, so the overlay shows where in the section the evidence lies.
    """
    if isinstance(classifier, Skipped):
        name = f"{task['name']}.{architecture['name']}"
        return figures.gradcam_figure(
            [], note=f"No Grad-CAM: {name} was skipped ({classifier.reason})"
        )
    test = predictions[predictions["split"] == "test"]
    prob_columns = [f"p_{c}" for c in task["classes"]]
    per_image = test.groupby("image").agg(
        y_true=("y_true", "first"), **{c: (c, "mean") for c in prob_columns}
    )
    per_image["predicted"] = per_image[prob_columns].to_numpy().argmax(axis=1)
    per_image["confidence"] = per_image[prob_columns].to_numpy().max(axis=1)
    samples = []
    for y, name in enumerate(task["classes"]):
        of_class = per_image[per_image["y_true"] == y].sort_values("confidence", ascending=False)
        for right in (True, False):
            chosen = of_class[(of_class["predicted"] == y) == right].head(1)
            for image_id, row in chosen.iterrows():
                predicted = task["classes"][int(row["predicted"])]
                title = (
                    f"{name} → {predicted} ({'right' if right else 'wrong'}, "
                    f"p={row['confidence']:.2f})"
                )
                samples.append(
                    (
                        title,
                        *_image_heatmap(
                            classifier,
                            images[image_id](),
                            test[test["image"] == image_id],
                            patches,
                            patch_index,
                            int(row["predicted"]),
                            prob_columns[int(row["predicted"])],
                            architecture["input_size"],
                        ),
                    )
                )
    return figures.gradcam_figure(samples)


def _image_heatmap(
    classifier: keras.Model,
    image: Any,
    image_predictions: pd.DataFrame,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    class_index: int,
    prob_column: str,
    input_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(image.convert("RGB"))
    rows = image_predictions["row"].to_numpy()
    located = patch_index.set_index("row").loc[rows]
    patch = patches["images"][rows]
    size = patch.shape[1]
    maps = gradcam.grad_cam(classifier, tiling.resize_batch(patch, input_size), class_index)
    weights = image_predictions[prob_column]
    heat = np.zeros(pixels.shape[:2], np.float32)
    for m, w, (x, y) in zip(maps, weights.to_numpy(), located[["x", "y"]].to_numpy(), strict=True):
        heat[y : y + size, x : x + size] = tiling.resize_batch(m[None], size)[0] * w
    return pixels, heat / max(float(heat.max()), 1e-6)


def build_report(
    segmentation_summary: dict[str, Any],
    colour_baseline: dict[str, Any],
    manifest: pd.DataFrame,
    stain_normalizer: dict[str, Any],
    params: dict[str, Any],
    ablations: str | None,
    model_comparison: dict[str, Any],
    *evaluations: dict[str, Any],
) -> str:
    """The study report in Markdown: headline table (every model incl. the colour + texture
    peer, with how many of how many patients each number covers), the paired comparison, who
    was not assessed and why, then the paper comparison and the detail.

    `ablations`: the table `benchmarks/ablation.py` writes (separate runs), or None.
    """
    per_class = manifest.groupby("label")["patient"].nunique()
    cohort = (
        f"{len(manifest)} images from {manifest['patient'].nunique()} patients ("
        + ", ".join(f"{k}: {v}" for k, v in per_class.items())
        + ")"
    )
    return report.build_markdown(
        segmentation_summary,
        list(evaluations),
        {
            "cohort": cohort,
            "colour_baseline": colour_baseline,
            "stain": stain_normalizer.get("method", "none"),
            "ablations": ablations or None,
            "comparison": model_comparison,
            "confidence": params.get("confidence", 0.95),
        },
    )


def render_report_html(report_text: str, figures_on_disk: dict[str, Callable[[], Any]]) -> str:
    """The report as one self-contained HTML page: every figure it shows is embedded (data
    URI), so the page renders anywhere, MLflow's artifact view included. `figures_on_disk`:
    the PNGs under data/08_reporting, keyed by path without suffix (the catalog reads them)."""
    return report_html.markdown_to_html(
        report_text, "ssc-skin study report", images=_png_sources(report_text, figures_on_disk)
    )


def _png_sources(report_text: str, figures_on_disk: dict[str, Callable[[], Any]]) -> dict[str, str]:
    embedded = {}
    for link in report_html.image_links(report_text):
        loader = figures_on_disk.get(link.removesuffix(".png"))
        if loader is None:
            logger.warning("Report figure %s not found; left as a link in report.html", link)
            continue
        buffer = io.BytesIO()
        loader().save(buffer, format="PNG")
        embedded[link] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return embedded


def log_model_run(
    evaluation: dict[str, Any], architecture: dict[str, Any], classifier: keras.Model
) -> None:
    """Evaluation metrics into the model's nested run, with the same metric names for every
    model, so MLflow's Compare view lines MobileNetV2 and CNN up directly.

    The run was opened by `train_classifier` (its id is in the training summary) and is
    reopened here, keeping its training-length duration (`tracking.log_evaluation`). Without
    that run, a new nested run gets these params, the metrics and the model. No-op without a run.
    """
    params = {
        "task": evaluation["task"],
        "architecture": evaluation["architecture"],
        "input_size": architecture.get("input_size"),  # a skipped model may declare none
        **{f"options.{k}": v for k, v in architecture.get("options", {}).items()},
    }
    tracking.log_evaluation(evaluation, params, classifier)
