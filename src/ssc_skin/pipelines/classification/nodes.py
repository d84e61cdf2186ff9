"""Nodes of the `classification` pipeline, reused for every task x architecture namespace."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import pandas as pd

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.imaging import tiling
from ssc_skin.models import builders, training
from ssc_skin.models.tasks import encode_labels, unsupported_reason

logger = logging.getLogger(__name__)


def split_arrays(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    split: str,
    input_size: int,
    max_patches: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (resized to the model input) and class indices of one split, optionally capped."""
    part = training.subsample(patch_index[patch_index["split"] == split], max_patches, seed)
    rows = part["row"].to_numpy()
    return tiling.resize_batch(patches["images"][rows], input_size), encode_labels(
        part["label"], task
    )


def _pretrained_base(model: keras.Model) -> keras.Model | None:
    """The nested backbone of a transfer-learning model, when its weights were pretrained."""
    if not getattr(model, "pretrained", False):
        return None
    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def train_classifier(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    architecture: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[keras.Model | Skipped, dict[str, Any]]:
    """Train one architecture on one task; pretrained backbones go frozen first, then fine-tune.

    With an active MLflow run, the model's nested run opens here, before the model is built,
    and closes when training ends: its duration is the training time, its charts the
    per-epoch loss and accuracy. `log_model_run` reopens it (by the id in the summary) to add
    the evaluation. `distribution: mirrored` builds and fits under `MirroredStrategy`.
    A task the cohort's labels cannot express (3-class on a normal/ssc cohort) is skipped.
    """
    settings = {**training_params, **architecture.get("training", {})}
    strategy = training.distribution_strategy(
        settings.get("distribution", "none"), "classification.training.distribution"
    )
    size = architecture["input_size"]
    name = f"{task['name']}.{architecture['name']}"
    reason = unsupported_reason(patch_index["label"], task)
    if not architecture.get("enabled", True):
        reason = (
            f"{architecture['name']} is not enabled in this run (classification."
            f"architectures.{architecture['name']}.enabled: false)"
        )
        logger.info("%s skipped: %s", name, reason)
    elif reason:
        logger.warning("%s skipped: %s", name, reason)
    if reason:
        return Skipped(reason), {
            "task": task["name"],
            "architecture": architecture["name"],
            "classes": list(task["classes"]),
            "skipped": reason,
        }
    train = split_arrays(
        patches,
        patch_index,
        task,
        "train",
        size,
        settings.get("max_train_patches"),
        settings["seed"],
    )
    # early stopping needs a stable loss, not every validation patch each epoch
    val = split_arrays(
        patches, patch_index, task, "val", size, settings.get("max_val_patches"), settings["seed"]
    )
    params = {
        "task": task["name"],
        "architecture": architecture["name"],
        "input_size": size,
        **{f"options.{k}": v for k, v in architecture.get("options", {}).items()},
        **{f"training.{k}": v for k, v in settings.items()},
    }
    tags = {"task": task["name"], "architecture": architecture["name"]}
    with tracking.model_run(name, tags, params) as run_id:
        with strategy.scope():
            model, results = _build_and_fit(train, val, task, architecture, settings, run_id)
        weights_source = getattr(model, "weights_source", "random")
        model_uri = tracking.log_keras_model(model, name, weights_source) if run_id else None
    seconds = sum(r.seconds for r in results)
    epochs_run = sum(r.epochs_run for r in results)
    history: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.history.items():
            history.setdefault(k, []).extend(v)
    summary = {
        "task": task["name"],
        "architecture": architecture["name"],
        "classes": list(task["classes"]),
        "input_size": size,
        "weights_source": weights_source,
        "train_patches": len(train[0]),
        "val_patches": len(val[0]),
        "train_seconds": seconds,
        "epochs_run": epochs_run,
        "patches_per_second": float(np.median([r.patches_per_second for r in results])),
        "parameters": int(model.count_params()),
        "history": history,
        "distribution": str(settings.get("distribution", "none")),
        "replicas": int(strategy.num_replicas_in_sync),
        "mlflow_run_id": run_id,
        "model_uri": model_uri,
    }
    logger.info(
        "%s trained in %.1f s (%d epochs, %.0f patches/s after the first, weights: %s)",
        name,
        seconds,
        epochs_run,
        summary["patches_per_second"],
        weights_source,
    )
    return model, summary


def _build_and_fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    task: dict[str, Any],
    architecture: dict[str, Any],
    settings: dict[str, Any],
    run_id: str | None,
) -> tuple[keras.Model, list[training.TrainingResult]]:
    """Build the model and fit it (frozen backbone first where pretrained), in the caller's
    distribution scope; each epoch's metrics go to `run_id` with one step count across fits."""
    size = architecture["input_size"]
    model = builders.build_classifier(
        architecture["name"], size, len(task["classes"]), architecture.get("options", {})
    )
    fit_args = {
        "name": f"{task['name']}.{architecture['name']}",
        "batch_size": settings["batch_size"],
        "seed": settings["seed"],
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "augment": "classifier",
        "patience": settings["patience"],
        "early_stopping_start": settings.get("early_stopping_start", 0),
        "class_weight": training.balanced_class_weights(train[1], len(task["classes"])),
        "lr_schedule": settings.get("lr_schedule", "constant"),
        "stain_augmentation": settings.get("stain_augmentation"),
        "compile_options": {"steps_per_execution": int(settings.get("steps_per_execution", 1))},
    }
    log = tracking.epoch_logger(run_id)
    learning_rate = settings["learning_rate"]
    results: list[training.TrainingResult] = []

    def fit(epochs: int, rate: float) -> None:
        steps = sum(r.epochs_run for r in results)
        callbacks = [training.EpochMetrics(log, first_step=steps)] if log else []
        results.append(
            training.fit(
                model,
                train,
                val,
                epochs=epochs,
                learning_rate=rate,
                callbacks=callbacks,
                **fit_args,
            )
        )

    base = _pretrained_base(model)
    if base is not None and settings.get("frozen_epochs", 0) > 0:
        base.trainable = False
        fit(settings["frozen_epochs"], learning_rate)
        base.trainable = True
        for layer in base.layers[: -settings["fine_tune_layers"]]:
            layer.trainable = False
        learning_rate *= settings.get("fine_tune_lr_factor", 0.1)
    fit(settings["epochs"], learning_rate)
    return model, results
