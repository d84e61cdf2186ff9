"""A classification task's labels: cohort labels -> class indices, and whether a cohort can
express the task at all. Shared by training, evaluation and the classical peer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def encode_labels(labels: pd.Series, task: dict[str, Any]) -> np.ndarray:
    """Cohort labels -> class indices of this task (e.g. early and late -> ssc for binary)."""
    mapped = labels.map(task["label_map"])
    if mapped.isna().any():
        unknown = sorted(labels[mapped.isna()].unique())
        raise ValueError(f"labels {unknown} are not in the label_map of task {task['name']!r}")
    return mapped.map({name: i for i, name in enumerate(task["classes"])}).to_numpy(int)


def unsupported_reason(labels: pd.Series, task: dict[str, Any]) -> str | None:
    """Why the cohort's labels cannot express this task (None when they can)."""
    present = sorted(labels.unique())
    mapped = labels.map(task["label_map"])
    missing = [c for c in task["classes"] if c not in set(mapped.dropna())]
    if mapped.isna().any() or missing:
        return (
            f"the cohort's labels ({', '.join(present)}) cannot express the classes "
            f"{', '.join(task['classes'])} of task {task['name']!r}"
        )
    return None
