"""Names shared by every stage, Kedro-free: labels, mask classes, splits, the `Skipped` marker."""

from __future__ import annotations

from dataclasses import dataclass

LABELS = ("normal", "early", "late")  # cohort labels; a binary cohort may say `ssc` instead
COHORT_LABELS = (*LABELS, "ssc")
MASK_CLASSES = {"background": 0, "epidermis": 1, "dermis": 2, "fat": 3}
MASK_NAMES = tuple(MASK_CLASSES)
DERMIS = MASK_CLASSES["dermis"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Skipped:
    """Stands in for a model that was not trained, e.g. the 3-class task on a binary cohort."""

    reason: str
