"""Every test image and patient accounted for: who was assessed, who was not and why.

Accuracy over the images that happened to reach the classifier flatters a model whenever the
hard images (no tissue patch, nothing past the dermis gate) drop out. The segmentation stage
writes one row per manifest image (`image_selection`: selection ok | tissue_fallback |
gating_fallback | not_assessable, and a reason); these functions turn it, with a model's
predictions, into counts, a list of what was not assessed, and "intention-to-diagnose"
metrics that count every image and patient never assessed as a wrong answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.evaluation import metrics

FALLBACKS = ("tissue_fallback", "gating_fallback")
NOT_ASSESSABLE = "not_assessable"
SELECTION_COLUMNS = (
    "image",
    "patient",
    "label",
    "split",
    "n_tiles",
    "n_classified",
    "selection",
    "reason",
)


def selection_from_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """A stand-in `image_selection` when none is given: every predicted image counts as `ok`.

    Used by callers that have no selection table (unit tests, old runs); it cannot know of
    images that never reached the classifier, so it says nothing about them.
    """
    if predictions.empty:
        return pd.DataFrame(columns=list(SELECTION_COLUMNS))
    frame = predictions if "label" in predictions else predictions.assign(label="")
    per_image = frame.groupby("image", sort=True).agg(
        patient=("patient", "first"),
        label=("label", "first"),
        split=("split", "first"),
        n_classified=("patient", "size"),
    )
    per_image = per_image.reset_index().assign(
        n_tiles=lambda f: f["n_classified"], selection="ok", reason=""
    )
    return per_image[list(SELECTION_COLUMNS)]


def _reason(row: Any) -> str:
    """Why an image has no prediction, in words a reader of the report understands."""
    if row.selection == NOT_ASSESSABLE:
        return str(row.reason) or "not assessable"
    return (
        f"no prediction although {row.n_classified} patch(es) were selected "
        f"(selection: {row.selection})"
    )


def assessment(selection: pd.DataFrame, predictions: pd.DataFrame, split: str) -> pd.DataFrame:
    """One row per image of `split`: whether the model assessed it, flagged or not, and why not.

    An image is assessed when the model predicted at least one of its patches. Images that
    the model predicted but the selection table does not list are kept (and say so), so that
    nothing that was scored is lost from the counts either.
    """
    images = selection[selection["split"] == split].copy()
    predicted = set(predictions.loc[predictions["split"] == split, "image"])
    extra = sorted(predicted - set(images["image"]))
    if extra:
        part = predictions[predictions["image"].isin(extra)]
        images = pd.concat(
            [
                images,
                selection_from_predictions(part).assign(
                    reason="predicted but missing from image_selection"
                ),
            ],
            ignore_index=True,
        )
    images["assessed"] = images["image"].isin(predicted)
    images["flagged"] = images["assessed"] & images["selection"].isin(FALLBACKS)
    images["why_not"] = [
        ("" if row.assessed else _reason(row)) for row in images.itertuples(index=False)
    ]
    return images.reset_index(drop=True)


def counts(images: pd.DataFrame, split: str) -> dict[str, int]:
    """assessed / total images and patients, flagged and not-assessable counts of one split."""
    patients = images.groupby("patient")["assessed"].any()
    flagged_patients = images.groupby("patient")["flagged"].any()
    result = {
        f"{split}_images_total": len(images),
        f"{split}_images_assessed": int(images["assessed"].sum()),
        f"{split}_images_flagged": int(images["flagged"].sum()),
        f"{split}_patients_total": len(patients),
        f"{split}_patients_assessed": int(patients.sum()),
        f"{split}_patients_flagged": int(flagged_patients.sum()),
        f"{split}_images_not_assessed": int((~images["assessed"]).sum()),
    }
    for kind in FALLBACKS:
        result[f"{split}_images_{kind}"] = int(
            (images["flagged"] & (images["selection"] == kind)).sum()
        )
    return result


def not_assessed(images: pd.DataFrame) -> dict[str, list[dict[str, str]]]:
    """The images, and the patients none of whose images was assessed, each with the reason
    (pseudonyms only: image and patient ids here are the cohort stage's pseudonyms)."""
    missing = images[~images["assessed"]]
    image_rows = [
        {"image": r.image, "patient": r.patient, "label": r.label, "reason": r.why_not}
        for r in missing.itertuples(index=False)
    ]
    patient_rows = []
    for patient, part in images.groupby("patient", sort=True):
        if not part["assessed"].any():
            reasons = sorted(set(part["why_not"]))
            patient_rows.append(
                {
                    "patient": patient,
                    "label": str(part["label"].iloc[0]),
                    "reason": f"none of {len(part)} image(s) assessed: " + "; ".join(reasons),
                }
            )
    return {"images": image_rows, "patients": patient_rows}


def intention_to_diagnose(
    y_true_all: np.ndarray, y_pred_all: np.ndarray, class_names: list[str], confidence: float = 0.95
) -> dict[str, float]:
    """Accuracy, balanced accuracy and per-class sensitivity over *all* units (images or
    patients), where `y_pred_all` is -1 for a unit that was not assessed: it counts as wrong.
    Accuracy comes with its Wilson interval over all units."""
    y, pred = np.asarray(y_true_all, int), np.asarray(y_pred_all, int)
    correct = pred == y
    nan = float("nan")
    result: dict[str, float] = {
        "accuracy": float(correct.mean()) if len(y) else nan,
        "correct": int(correct.sum()),
        "n": len(y),
    }
    result["accuracy_ci_low"], result["accuracy_ci_high"] = metrics.wilson_interval(
        int(correct.sum()), len(y), confidence
    )
    recalls = []
    for k, name in enumerate(class_names):
        of_class = y == k
        recall = float(correct[of_class].mean()) if of_class.any() else nan
        result[f"sensitivity_{name}"] = recall
        if of_class.any():
            recalls.append(recall)
    result["balanced_accuracy"] = float(np.mean(recalls)) if recalls else nan
    return result


def encode(labels: pd.Series, task: dict[str, Any]) -> np.ndarray:
    """Cohort labels -> this task's class indices (early and late -> ssc for binary); NaN for a
    label the task does not know (or an empty one)."""
    index = {name: i for i, name in enumerate(task["classes"])}
    return labels.map(task["label_map"]).map(index).to_numpy(float)
