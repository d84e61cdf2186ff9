"""Nodes of the `cohort` pipeline: make or read the cohort, validate it, split by patient."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin import baseline, plots, splits, synthetic
from ssc_skin.privacy import pseudonym

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_id", "image_path", "patient_id", "label", "mask_path"]
PSEUDONYM_KEY_ENV = "SSC_SKIN_PSEUDONYM_KEY"


def generate_synthetic_cohort(
    params: dict[str, Any],
) -> tuple[dict[str, Image.Image], dict[str, Image.Image], pd.DataFrame]:
    """Draw the synthetic cohort: images, ground-truth masks and a real-cohort-style manifest."""
    total = sum(params["patients_per_class"].values()) * params["images_per_patient"]
    sections = synthetic.generate_cohort(
        patients_per_class=params["patients_per_class"],
        images_per_patient=params["images_per_patient"],
        size=(params["image_size"], params["image_size"]),
        stain=params["stain"],
        difficulty=params["difficulty"],
        artefact_rate=params["artefact_rate"],
        seed=params["seed"],
    )
    images, masks, rows = {}, {}, []
    start = time.perf_counter()
    for done, section in enumerate(sections, start=1):
        images[section.image_id] = Image.fromarray(section.image)
        masks[section.image_id] = Image.fromarray(section.mask)
        rows.append({"image_id": section.image_id, "image_path": f"images/{section.image_id}.png",
                     "patient_id": section.patient_id, "label": section.label,
                     "mask_path": f"masks/{section.image_id}.png"})
        if done % max(1, total // 10) == 0 or done == total:
            logger.info("Synthetic cohort: %d/%d images (%.2f images/s)", done, total,
                        done / (time.perf_counter() - start))
    return images, masks, pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def validate_manifest(manifest: pd.DataFrame, images: dict[str, Callable[[], Any]],
                      masks: dict[str, Callable[[], Any]]) -> pd.DataFrame:
    """Keep rows whose image exists; add keyed pseudonyms for patients and images.

    The validated manifest is the local linkage table (`image_id` -> raw file); everything
    downstream carries only the pseudonyms `patient` and `image`.
    """
    missing_columns = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing_columns:
        raise ValueError(f"manifest lacks columns {sorted(missing_columns)}")
    present = manifest["image_id"].isin(list(images))
    if (~present).any():
        logger.warning("%d manifest rows have no image and are skipped", int((~present).sum()))
    valid = manifest[present].copy()
    valid["has_mask"] = valid["image_id"].isin(list(masks))
    key = os.environ.get(PSEUDONYM_KEY_ENV, "ssc-skin-default-key")
    valid["patient"] = valid["patient_id"].map(lambda pid: pseudonym(pid, key))
    valid["image"] = valid["image_id"].map(lambda iid: pseudonym(iid, key).replace("pt-", "im-"))
    valid = valid.drop(columns=["patient_id", "image_path", "mask_path"])
    logger.info("Cohort: %d images from %d patients (%s)", len(valid), valid["patient"].nunique(),
                ", ".join(f"{k}={v}" for k, v in valid.groupby("label")["patient"].nunique().items()))
    return valid.reset_index(drop=True)


def split_cohort(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Stratified patient-level split; every image inherits its patient's split."""
    table = splits.split_patients(manifest.rename(columns={"patient": "patient_id"}),
                                  params["val_fraction"], params["test_fraction"], params["seed"])
    splits.assert_no_patient_leak(table)
    for split, part in table.groupby("split"):
        logger.info("Split %s: %d patients (%s)", split, len(part),
                    ", ".join(f"{k}={v}" for k, v in part["label"].value_counts().sort_index().items()))
    return table.rename(columns={"patient_id": "patient"})




def colour_baseline(images: dict[str, Callable[[], Any]], manifest: pd.DataFrame,
                    tasks: dict[str, dict[str, Any]], params: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Logistic regression on per-image colour histograms, patient-grouped CV, per task.

    A cohort on which this scores high can be solved without looking at tissue structure.
    """
    features = np.stack([baseline.colour_histogram(np.asarray(images[i]().convert("RGB")),
                                                   params["bins"])
                         for i in manifest["image_id"]])
    groups = manifest["patient"].to_numpy()
    summary: dict[str, Any] = {}
    for name, task in tasks.items():
        mapped = manifest["label"].map(task["label_map"])
        if mapped.isna().any() or mapped.nunique() < len(task["classes"]):
            continue  # the cohort's labels cannot express this task
        labels = mapped.map({c: i for i, c in enumerate(task["classes"])}).to_numpy(int)
        result = baseline.grouped_cv_accuracy(features, labels, groups, params["folds"],
                                              params["seed"])
        summary[name] = result
        logger.info("Colour-only baseline, %s: accuracy %.3f (balanced %.3f, majority class "
                    "%.3f), %d-fold patient-grouped CV", name, result["accuracy"],
                    result["balanced_accuracy"], result["majority_class_rate"], result["folds"])
    metrics = {f"{task}.{key}": {"value": float(value), "step": 0}
               for task, result in summary.items() for key, value in result.items()}
    return metrics, summary


def cohort_gallery(images: dict[str, Callable[[], Any]], masks: dict[str, Callable[[], Any]],
                   manifest: pd.DataFrame, per_class: int = 3) -> Figure:
    """Sample images and masks per class, one patient each, for a look at the cohort."""
    samples = {}
    for label, part in manifest.groupby("label", sort=False):
        first_of_patient = part.drop_duplicates("patient").head(per_class)
        samples[label] = [
            (np.asarray(images[row.image_id]().convert("RGB")),
             np.asarray(masks[row.image_id]()) if row.has_mask else None)
            for row in first_of_patient.itertuples()]
    order = [c for c in synthetic.LABELS if c in samples] + sorted(set(samples) - set(synthetic.LABELS))
    return plots.cohort_gallery({k: samples[k] for k in order},
                                "Cohort samples: image and tissue mask, one patient each")
