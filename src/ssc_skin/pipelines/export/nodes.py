"""Nodes of the `export` pipeline: TFLite models of each classifier, checked, timed, served."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.inference import export, serving

logger = logging.getLogger(__name__)


def export_classifier(
    classifier: keras.Model | Skipped,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    architecture: dict[str, Any],
    params: dict[str, Any],
) -> tuple[bytes | Skipped, bytes | Skipped, dict[str, Any], dict[str, Any]]:
    """TFLite float32 and int8 of one classifier, and which runtime `predict` should use.

    int8 is calibrated on training patches; agreement with Keras is checked on test patches
    (the model has not seen them, like the images it will be asked about).
    """
    name = f"{task['name']}.{architecture['name']}"
    header = {
        "task": task["name"],
        "architecture": architecture["name"],
        "classes": list(task["classes"]),
        "input_size": architecture["input_size"],
    }
    if isinstance(classifier, Skipped):
        logger.info("%s export skipped: %s", name, classifier.reason)
        return classifier, classifier, {**header, "skipped": classifier.reason}, {}
    representative, check, timing = _export_samples(patches, patch_index, architecture, params)
    result = export.export_classifier(
        classifier,
        representative,
        check,
        timing,
        agreement_threshold=params["agreement_threshold"],
        rounds=params["latency_rounds"],
        num_threads=params["num_threads"],
        batch_size=params["batch_size"],
        int8_enabled=params.get("int8", True),
    )
    summary = {**header, **result.summary}
    _log_runtimes(name, summary)
    metrics = {k: {"value": v, "step": 0} for k, v in export.export_metrics(summary).items()}
    return result.float32, result.int8, summary, metrics


def _export_samples(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    architecture: dict[str, Any],
    params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration patches (training), agreement patches (test first) and the latency sample."""
    size, seed = architecture["input_size"], params.get("seed", 0)
    images = patches["images"]
    representative = export.split_patches(
        images, patch_index, ("train",), params["representative_patches"], size, seed
    )
    check = export.split_patches(
        images, patch_index, ("test", "val", "train"), params["agreement_patches"], size, seed
    )
    return representative, check, check[: params["latency_patches"]]


def _log_runtimes(name: str, summary: dict[str, Any]) -> None:
    logger.info("%s export: %s. %s", name, summary["runtime"], summary["runtime_reason"])
    for runtime, row in summary["runtimes"].items():
        logger.info(
            "%s %s: %.0f patches/s, %.2f MB, label agreement %s",
            name,
            runtime,
            row["patches_per_second"],
            row["model_bytes"] / 1e6,
            f"{row['label_agreement']:.3f}" if "label_agreement" in row else "-",
        )


def log_whole_image_predictor(
    classifier: keras.Model | Skipped,
    float32: bytes | Skipped,
    summary: dict[str, Any],
    task: dict[str, Any],
    architecture: dict[str, Any],
    preprocess_config: dict[str, Any],
    unet_tflite: bytes,
    low_confidence_threshold: float,
    enabled: bool = True,
    training_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole-image pyfunc on the runtime export chose, so that
    `mlflow models serve -m <model uri>` answers REST requests. It carries the training run's
    preprocessing (`preprocess.json`) and gating UNet, so it sees the patches training saw.

    It goes into the model's nested run (`training_summary["mlflow_run_id"]`), so a registered
    version links to the run that trained it; the parent run gets a tag with its URI.
    Returns where it went (the registry reads it); nothing is logged without a run."""
    if not tracking.is_tracking() or not enabled or "skipped" in summary:
        why = (
            "no active MLflow run"
            if not tracking.is_tracking()
            else "export.log_predictor is false"
            if not enabled
            else summary["skipped"]
        )
        return {"uri": None, "reason": why}
    config = serving.PredictorConfig(
        class_names=tuple(task["classes"]),
        input_size=architecture["input_size"],
        preprocess=preprocess_config,
        low_confidence_threshold=low_confidence_threshold,
    )
    name = f"{task['name']}.{architecture['name']}"
    run_id = tracking.existing_run((training_summary or {}).get("mlflow_run_id"))
    with tempfile.TemporaryDirectory() as folder, tracking.within(run_id):
        if summary["runtime"] == export.FLOAT32 and not isinstance(float32, Skipped):
            path = Path(folder) / f"{name}.float32.tflite"
            path.write_bytes(float32)
        else:
            path = Path(folder) / f"{name}.keras"
            classifier.save(path)
        unet_path = Path(folder) / "unet.tflite"
        unet_path.write_bytes(unet_tflite)
        info = serving.log_predictor(
            path,
            config,
            unet_path,
            name=f"{task['name']}_{architecture['name']}_whole_image_predictor",
        )
    # `mlflow models serve -m <this uri>`: the tag finds it from the parent run's page
    tracking.set_tags({f"{name}.whole_image_predictor_uri": info.model_uri})
    return {"uri": info.model_uri, "runtime": summary["runtime"], "run_id": run_id}
