"""Nodes of the hybrid (`{task}.hybrid`): the task's deep models and colour + texture peer
combined (`evaluation.hybrid`: an equal-weight vote, or stacked on the validation patients),
scored like every other model."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.evaluation import hybrid, scoring

logger = logging.getLogger(__name__)


def _components(inputs: tuple[Any, ...]) -> list[tuple[str, pd.DataFrame]]:
    """(name, predictions) of every component that was not skipped; `inputs` holds every
    component's predictions, then every component's training summary, in the same order."""
    half = len(inputs) // 2
    return [
        (f"{s['task']}.{s['architecture']}", p)
        for p, s in zip(inputs[:half], inputs[half:], strict=True)
        if "skipped" not in s and not p.empty
    ]


def fit_hybrid(
    task: dict[str, Any], params: dict[str, Any], *inputs: Any
) -> tuple[Any, dict[str, Any], pd.DataFrame]:
    """Combine the task's models (a vote, or stacked on their validation predictions); predict
    every patch.

    Returns the stacker (or `Skipped`), its training summary and its predictions (the frame
    every model's evaluation reads). Skipped when fewer than two components ran.
    """
    base = {"task": task["name"], "architecture": "hybrid", "classes": list(task["classes"])}
    columns = scoring.probability_columns(task["classes"])
    components = _components(inputs)
    if len(components) < 2:
        reason = f"the hybrid needs two or more models of {task['name']}; {len(components)} ran"
        logger.info("%s.hybrid skipped: %s", task["name"], reason)
        empty = pd.DataFrame(columns=[*inputs[0].columns]) if inputs else pd.DataFrame()
        return Skipped(reason), {**base, "skipped": reason}, empty
    options = params.get("hybrid", {})
    names = [name for name, _ in components]
    run_params = {"task": task["name"], "architecture": "hybrid", "components": ", ".join(names)}
    run_params.update({f"options.{k}": v for k, v in options.items()})
    with tracking.model_run(
        f"{task['name']}.hybrid", {"task": task["name"], "architecture": "hybrid"}, run_params
    ) as run_id:
        model, fitted, out = hybrid.fit_on_validation(components, columns, options)
    weights = hybrid.component_weights(model, names, task["classes"])
    logger.info(
        "%s.hybrid (%s) over %d validation patches: weights %s (C=%s)",
        task["name"],
        fitted["method"],
        fitted["val_patches"],
        weights,
        fitted["C"],
    )
    summary = {
        **base,
        "components": names,
        "component_weights": weights,
        "weights_source": (
            "equal-weight vote (nothing fitted)"
            if fitted["method"] == "vote"
            else "stacked on validation patients"
        ),
        "method": fitted["method"],
        "train_patches": 0,
        "val_patches": fitted["val_patches"],
        "train_seconds": fitted["seconds"],
        "epochs_run": 0,
        "C": fitted["C"],
        "history": {},
        "mlflow_run_id": run_id,
    }
    return {"model": model, "components": names}, summary, out


def log_hybrid_run(evaluation: dict[str, Any]) -> None:
    """The hybrid's evaluation into its nested MLflow run (opened while it was combined), with
    the same metric names as every other model's. No-op without an active run."""
    tracking.log_evaluation(evaluation)
