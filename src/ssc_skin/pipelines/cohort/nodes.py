"""Nodes of the `cohort` pipeline: make or read the cohort, validate it, split by patient."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin.cohort import handover, ingest, splits, synthetic
from ssc_skin.cohort.privacy import pseudonym_key
from ssc_skin.constants import LABELS
from ssc_skin.evaluation import baseline, figures
from ssc_skin.pipelines.cohort import slide_nodes

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_path", "patient_id", "label", "mask_path"]  # a real cohort's format
# Sections drawn at once at the start of a run, when nothing else is ready to run beside it.
SYNTHETIC_WORKERS = 2


def generate_synthetic_cohort(
    cohort: dict[str, Any],
) -> tuple[dict[str, Image.Image], dict[str, Image.Image], pd.DataFrame]:
    """Draw the synthetic cohort: images, ground-truth masks and a real-cohort-style manifest.

    Skipped (empty outputs) when `cohort.source.layout` points at the user's own images.
    """
    layout = ingest.check_source_config(cohort.get("source"))["layout"]
    if layout != "synthetic":
        logger.info("cohort.source.layout is %s: the synthetic cohort is not generated", layout)
        return {}, {}, pd.DataFrame(columns=MANIFEST_COLUMNS)
    params = cohort["synthetic"]
    total = sum(params["patients_per_class"].values()) * params["images_per_patient"]
    sections = synthetic.generate_cohort(
        patients_per_class=params["patients_per_class"],
        images_per_patient=params["images_per_patient"],
        size=(params["image_size"], params["image_size"]),
        stain=params["stain"],
        difficulty=params["difficulty"],
        artefact_rate=params["artefact_rate"],
        seed=params["seed"],
        workers=SYNTHETIC_WORKERS,
    )
    images, masks, rows = {}, {}, []
    start = time.perf_counter()
    for done, section in enumerate(sections, start=1):
        images[section.image_id] = Image.fromarray(section.image)
        masks[section.image_id] = Image.fromarray(section.mask)
        rows.append(
            {
                "image_path": f"images/{section.image_id}.png",
                "patient_id": section.patient_id,
                "label": section.label,
                "mask_path": f"masks/{section.image_id}.png",
            }
        )
        if done % max(1, total // 10) == 0 or done == total:
            logger.info(
                "Synthetic cohort: %d/%d images (%.2f images/s)",
                done,
                total,
                done / (time.perf_counter() - start),
            )
    return images, masks, pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def generate_synthetic_slides(cohort: dict[str, Any]) -> dict[str, Any]:
    """The synthetic slide cohort's settings (`cohort.synthetic_slides`), which the catalog's
    `raw_slide_manifest` writes as pyramidal TIFFs; {} (nothing) for other layouts."""
    return slide_nodes.synthetic_slide_spec(cohort)


def ingest_cohort(
    synthetic_manifest: pd.DataFrame,
    cohort: dict[str, Any],
    patch_size: int,
    min_saturation: int,
    patches: dict[str, Any] | None = None,
    synthetic_slides: pd.DataFrame | None = None,
) -> tuple[
    dict[str, Callable[[], Image.Image]],
    dict[str, Callable[[], Image.Image]],
    pd.DataFrame,
    pd.DataFrame,
    pd.DataFrame,
    dict[str, Any],
]:
    """Check every file of the configured cohort and convert the valid ones to 8-bit RGB PNG.

    Returns lazily written images and masks keyed by image pseudonym, the pseudonymised
    manifest, the local linkage table (pseudonym or shown name -> file), the quarantine
    report (no raw id or path in it) and its counts for MLflow; see `ingest.ingest_images`.
    `synthetic_manifest` and `synthetic_slides` only order this node after generation.
    """
    del synthetic_manifest, synthetic_slides
    source = ingest.check_source_config(cohort.get("source"))
    if slide_nodes.is_slide_layout(source):  # slides: thumbnails + linkage, see slide_nodes
        settings = {"patch_size": patch_size, "stride": patch_size, "min_tissue_fraction": 0.5}
        settings |= {"min_saturation": min_saturation, **(patches or {})}
        return slide_nodes.ingest_slides(source, cohort, settings, handover.build_linkage)
    return ingest.ingest_images(
        cohort, min_side=patch_size, min_saturation=min_saturation, key=pseudonym_key()
    ).astuple()


def split_cohort(
    manifest: pd.DataFrame, params: dict[str, Any], previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Stratified patient-level split (or k-fold), reusing the saved table; checks leaks.

    `previous` is the table the last run saved (the catalog's `previous_patient_splits`,
    None when there is none); see `splits.assign_splits`.
    """
    return splits.assign_splits(manifest, params, previous)


def colour_baseline(
    images: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    tasks: dict[str, dict[str, Any]],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Logistic regression on per-image colour histograms, patient-grouped CV, per task.

    A cohort on which this scores high can be solved without looking at tissue structure.
    """
    if manifest.empty:  # nothing usable: split_cohort stops the run and says why
        return {}, {}
    features = np.stack(
        [
            baseline.colour_histogram(np.asarray(images[i]().convert("RGB")), params["bins"])
            for i in manifest["image"]
        ]
    )
    groups = manifest["patient"].to_numpy()
    summary: dict[str, Any] = {}
    for name, task in tasks.items():
        mapped = manifest["label"].map(task["label_map"])
        if mapped.isna().any() or mapped.nunique() < len(task["classes"]):
            continue  # the cohort's labels cannot express this task
        labels = mapped.map({c: i for i, c in enumerate(task["classes"])}).to_numpy(int)
        result = baseline.grouped_cv_accuracy(
            features, labels, groups, params["folds"], params["seed"]
        )
        summary[name] = result
        logger.info(
            "Colour-only baseline, %s: accuracy %.3f (balanced %.3f, majority class "
            "%.3f), %d-fold patient-grouped CV",
            name,
            result["accuracy"],
            result["balanced_accuracy"],
            result["majority_class_rate"],
            result["folds"],
        )
    metrics = {
        f"{task}.{key}": {"value": float(value), "step": 0}
        for task, result in summary.items()
        for key, value in result.items()
    }
    return metrics, summary


def cohort_gallery(
    images: dict[str, Callable[[], Any]],
    masks: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    per_class: int = 3,
) -> Figure:
    """Sample images and masks per class, one patient each, for a look at the cohort."""
    if manifest.empty:
        figure = Figure(figsize=(4, 1))
        figure.text(0.5, 0.5, "No usable image: see quarantine.csv", ha="center")
        return figure
    samples = {}
    for label, part in manifest.groupby("label", sort=False):
        first_of_patient = part.drop_duplicates("patient").head(per_class)
        samples[label] = [
            (
                np.asarray(images[row.image]().convert("RGB")),
                np.asarray(masks[row.image]()) if row.has_mask else None,
            )
            for row in first_of_patient.itertuples()
        ]
    order = [c for c in LABELS if c in samples] + sorted(set(samples) - set(LABELS))
    return figures.cohort_gallery(
        {k: samples[k] for k in order}, "Cohort samples: image and tissue mask, one patient each"
    )
