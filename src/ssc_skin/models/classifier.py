"""Training one classifier (task x architecture) on patch arrays; no Kedro or MLflow here.

What the classification node did in one long body, as small steps it now calls: whether the
model runs at all, its training and validation arrays, building and fitting it (frozen backbone
first where pretrained), and the training summary the report and MLflow read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from ssc_skin.imaging import tiling
from ssc_skin.models import builders, seeding, training
from ssc_skin.models.tasks import encode_labels, unsupported_reason


def settings_for(training_params: dict[str, Any], architecture: dict[str, Any]) -> dict[str, Any]:
    """The shared training settings with the architecture's own on top."""
    return {**training_params, **architecture.get("training", {})}


def builder_name(architecture: dict[str, Any]) -> str:
    """The network an architecture entry builds: `builder` (a variant such as `cnn_wide:
    {name: cnn_wide, builder: cnn, ...}`), else its `name`."""
    return str(architecture.get("builder") or architecture["name"])


def skip_reason(labels: pd.Series, task: dict[str, Any], architecture: dict[str, Any]) -> str:
    """Why this model does not run ('' when it does): disabled, or a task the cohort's labels
    cannot express (3-class on a normal/ssc cohort)."""
    if not architecture.get("enabled", True):
        return (
            f"{architecture['name']} is not enabled in this run (classification."
            f"architectures.{architecture['name']}.enabled: false)"
        )
    return unsupported_reason(labels, task) or ""


def skipped_summary(task: dict[str, Any], architecture: dict[str, Any], reason: str) -> dict:
    """The training summary of a model that did not run: who, and why."""
    return {
        "task": task["name"],
        "architecture": architecture["name"],
        "classes": list(task["classes"]),
        "skipped": reason,
    }


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


def train_val_arrays(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    input_size: int,
    settings: dict[str, Any],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The capped, seeded training sample and the validation sample early stopping watches
    (a stable loss needs a sample, not every validation patch each epoch)."""
    seed = settings["seed"]
    train = split_arrays(
        patches, patch_index, task, "train", input_size, settings.get("max_train_patches"), seed
    )
    val = split_arrays(
        patches, patch_index, task, "val", input_size, settings.get("max_val_patches"), seed
    )
    return train, val


def run_params(
    task: dict[str, Any], architecture: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """What a tracker records as this model's parameters."""
    return {
        "task": task["name"],
        "architecture": architecture["name"],
        "input_size": architecture["input_size"],
        **{f"options.{k}": v for k, v in architecture.get("options", {}).items()},
        **{f"training.{k}": v for k, v in settings.items()},
    }


def pretrained_base(model: keras.Model) -> keras.Model | None:
    """The nested backbone of a transfer-learning model, when its weights were pretrained."""
    if not getattr(model, "pretrained", False):
        return None
    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def build_and_fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    task: dict[str, Any],
    architecture: dict[str, Any],
    settings: dict[str, Any],
    log: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[keras.Model, list[training.TrainingResult]]:
    """Build the model and fit it (frozen backbone first where pretrained), in the caller's
    distribution scope; each epoch's metrics go to `log` with one step count across fits."""
    with seeding.seeded(settings["seed"]):  # initial weights from the seed alone
        model = builders.build_classifier(
            builder_name(architecture),
            architecture["input_size"],
            len(task["classes"]),
            architecture.get("options", {}),
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
        "targets": training.SoftTargets.from_settings(settings, len(task["classes"])),
    }
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

    base = pretrained_base(model)
    if base is not None and settings.get("frozen_epochs", 0) > 0:
        base.trainable = False
        fit(settings["frozen_epochs"], learning_rate)
        base.trainable = True
        for layer in base.layers[: -settings["fine_tune_layers"]]:
            layer.trainable = False
        learning_rate *= settings.get("fine_tune_lr_factor", 0.1)
    fit(settings["epochs"], learning_rate)
    return model, results


def training_summary(
    model: keras.Model,
    results: list[training.TrainingResult],
    task: dict[str, Any],
    architecture: dict[str, Any],
    settings: dict[str, Any],
    samples: tuple[int, int],
    replicas: int = 1,
) -> dict[str, Any]:
    """What the report, the registry and MLflow read about one fit: sizes, time, epochs,
    throughput and the per-epoch history (one curve across a frozen and a fine-tuning fit)."""
    history: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.history.items():
            history.setdefault(k, []).extend(v)
    return {
        "task": task["name"],
        "architecture": architecture["name"],
        "classes": list(task["classes"]),
        "input_size": architecture["input_size"],
        "weights_source": getattr(model, "weights_source", "random"),
        "train_patches": samples[0],
        "val_patches": samples[1],
        "train_seconds": sum(r.seconds for r in results),
        "epochs_run": sum(r.epochs_run for r in results),
        "patches_per_second": float(np.median([r.patches_per_second for r in results])),
        "parameters": int(model.count_params()),
        "history": history,
        "distribution": str(settings.get("distribution", "none")),
        "replicas": int(replicas),
    }
