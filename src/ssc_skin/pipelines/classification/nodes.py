"""Nodes of the `classification` pipeline, reused for every task x architecture namespace."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import pandas as pd

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.models import classifier, training, tta

logger = logging.getLogger(__name__)


def train_classifier(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    task: dict[str, Any],
    architecture: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[keras.Model | Skipped, dict[str, Any]]:
    """Train one architecture on one task (`models.classifier`); pretrained backbones go
    frozen first, then fine-tune. A disabled model, or a task the cohort's labels cannot
    express, is skipped with the reason.

    With an active MLflow run, the model's nested run is open while it trains (its duration
    is the training time, its charts the per-epoch loss and accuracy); `log_model_run`
    reopens it by the id in the summary to add the evaluation.
    """
    name = f"{task['name']}.{architecture['name']}"
    reason = classifier.skip_reason(patch_index["label"], task, architecture)
    if reason:
        disabled = not architecture.get("enabled", True)
        (logger.info if disabled else logger.warning)("%s skipped: %s", name, reason)
        return Skipped(reason), classifier.skipped_summary(task, architecture, reason)
    settings = classifier.settings_for(training_params, architecture)
    views = str(settings.get("test_time_augmentation", "none"))
    tta.view_count(views)  # a misspelt value stops here, before any training
    strategy = training.distribution_strategy(
        settings.get("distribution", "none"), "classification.training.distribution"
    )
    train, val = classifier.train_val_arrays(
        patches, patch_index, task, architecture["input_size"], settings
    )
    tags = {"task": task["name"], "architecture": architecture["name"]}
    params = classifier.run_params(task, architecture, settings)
    with tracking.model_run(name, tags, params) as run_id:
        with strategy.scope():
            model, results = classifier.build_and_fit(
                train, val, task, architecture, settings, tracking.epoch_logger(run_id)
            )
            model = tta.with_test_time_augmentation(model, views)
        weights_source = getattr(model, "weights_source", "random")
        model_uri = tracking.log_keras_model(model, name, weights_source) if run_id else None
    summary = classifier.training_summary(
        model,
        results,
        task,
        architecture,
        settings,
        (len(train[0]), len(val[0])),
        strategy.num_replicas_in_sync,
    )
    summary.update(mlflow_run_id=run_id, model_uri=model_uri, test_time_augmentation=views)
    logger.info(
        "%s trained in %.1f s (%d epochs, %.0f patches/s after the first, weights: %s)",
        name,
        summary["train_seconds"],
        summary["epochs_run"],
        summary["patches_per_second"],
        weights_source,
    )
    return model, summary
