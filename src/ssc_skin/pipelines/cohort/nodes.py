"""Nodes of the `cohort` pipeline: make or read the cohort, validate it, split by patient."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin.cohort import ingest, splits, synthetic
from ssc_skin.cohort.config import MASK_CHOICES
from ssc_skin.cohort.privacy import (
    hide_quarantine,
    pseudonym,
    pseudonym_key,
    pseudonymise_records,
)
from ssc_skin.constants import LABELS
from ssc_skin.evaluation import baseline, figures
from ssc_skin.imaging import stain
from ssc_skin.pipelines.cohort import slide_nodes

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_path", "patient_id", "label", "mask_path"]  # a real cohort's format


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
    manifest, the local linkage table, the quarantine report (no raw id or path in it) and
    its counts for MLflow. The linkage also maps each name the report shows back to its file
    (rows with a `check`).
    The user's folder is only read. `synthetic_manifest` orders this node after generation:
    the synthetic cohort is read back from disk exactly like a user's manifest cohort.
    A cohort with no usable image still returns (the report is written); `split_cohort`
    then stops the run.
    """
    del synthetic_manifest, synthetic_slides
    source = ingest.check_source_config(cohort.get("source"))
    if slide_nodes.is_slide_layout(source):  # slides: thumbnails + linkage, see slide_nodes
        return slide_nodes.ingest_slides(
            source,
            cohort,
            {
                "patch_size": patch_size,
                "stride": patch_size,
                "min_tissue_fraction": 0.5,
                "min_saturation": min_saturation,
                **(patches or {}),
            },
            _linkage,
        )
    if source["layout"] == "synthetic":
        source = {**source, "layout": "manifest"}
    checks = cohort.get("checks", {})
    records = ingest.discover_cohort(source)
    valid, quarantine = ingest.validate_cohort(
        records,
        label_map=source["label_map"],
        allowed_labels=checks["allowed_labels"],
        min_side=patch_size,
        min_tissue_fraction=checks["min_tissue_fraction"],
        min_saturation=min_saturation,
        tiff_page=source["tiff_page"],
    )
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    scale = _resolution_scale(source["microns_per_pixel"], cohort.get("target_microns_per_pixel"))
    images = {
        row.image: _image_loader(row.image_path, source["tiff_page"], scale)
        for row in valid.itertuples()
    }
    valid["mask_source"] = (
        _mask_sources(valid, cohort.get("masks", "auto")) if len(valid) else pd.Series(dtype=object)
    )
    masks = {
        row.image: _mask_loader(
            row.mask_path, row.image_path, row.mask_source, source["tiff_page"], scale
        )
        for row in valid.itertuples()
        if row.mask_source != "none"
    }
    manifest = pd.DataFrame(
        {
            "image": valid["image"],
            "patient": valid["patient"],
            "label": valid["label"],
            "has_mask": valid["mask_source"] != "none",
            "mask_source": valid["mask_source"],
            "fixed_split": valid["split"],
            "content_hash": valid["content_hash"],
            "height": valid["height"],
            "width": valid["width"],
            "tissue_fraction": valid["tissue_fraction"],
            "notes": valid["notes"].fillna(""),
        }
    )  # notes never name a file or a patient
    labels = {*checks["allowed_labels"], *source["label_map"]}
    report, shown = hide_quarantine(
        quarantine, records, key, label_folders=source["layout"] == "folder", labels=labels
    )
    linkage = _linkage(valid, shown, records, key)
    if valid.empty:
        logger.error(
            "Cohort: no usable image among %d file(s); the reason for each is in "
            "data/08_reporting/quarantine.csv",
            len(records),
        )
    counts = {
        "images_valid": len(valid),
        "files_quarantined": len(quarantine),
        **{
            f"quarantined.{check}": int(n)
            for check, n in quarantine["check"].value_counts().items()
        },
    }
    logger.info(
        "Tissue masks: %s",
        ", ".join(f"{k}={v}" for k, v in valid["mask_source"].value_counts().items()),
    )
    logger.info(
        "Cohort: %d images from %d patients (%s); %d file(s) quarantined%s",
        len(manifest),
        manifest["patient"].nunique(),
        ", ".join(f"{k}={v}" for k, v in manifest.groupby("label")["patient"].nunique().items()),
        len(quarantine),
        " -> data/08_reporting/quarantine.csv" if len(quarantine) else "",
    )
    metrics = {k: {"value": float(v), "step": 0} for k, v in counts.items()}
    return images, masks, manifest.reset_index(drop=True), linkage, report, metrics


LINKAGE_COLUMNS = ["image", "patient", "patient_id", "relative_path", "check"]


def _linkage(
    valid: pd.DataFrame, shown: pd.DataFrame, records: pd.DataFrame, key: str
) -> pd.DataFrame:
    """Local table: image pseudonym (or the name quarantine.csv shows) -> file and patient."""
    owners = dict(zip(records["relative_path"], records["patient_id"], strict=True))
    owners.update(zip(records["mask_relative_path"], records["patient_id"], strict=True))
    quarantined = shown.rename(columns={"file": "image"}).assign(
        patient_id=lambda t: t["relative_path"].map(owners)
    )
    quarantined["patient"] = quarantined["patient_id"].map(
        lambda p: pseudonym(p, key) if isinstance(p, str) else None
    )
    kept = valid[["image", "patient", "patient_id", "relative_path"]].assign(check=None)
    return pd.concat([kept, quarantined[LINKAGE_COLUMNS]], ignore_index=True)[LINKAGE_COLUMNS]


def _resolution_scale(cohort_mpp: float | None, target_mpp: float | None) -> float:
    """Resize factor that brings the cohort to the target microns per pixel (1 when either
    is unknown), so that patches cover the same tissue area whatever the scanner."""
    if not cohort_mpp or not target_mpp:
        return 1.0
    scale = cohort_mpp / target_mpp
    logger.info(
        "Resolution: %.3f -> %.3f microns/pixel (images resized x%.3f)",
        cohort_mpp,
        target_mpp,
        scale,
    )
    return scale


def _rescale(array: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    if scale == 1.0:
        return array
    size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
    return cv2.resize(array, size, interpolation=interpolation)


def _image_loader(path: str, tiff_page: int, scale: float = 1.0) -> Callable[[], Image.Image]:
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return lambda: Image.fromarray(
        _rescale(ingest.read_rgb(path, tiff_page)[0], scale, interpolation)
    )


def _mask_sources(valid: pd.DataFrame, choice: str) -> pd.Series:
    """Per image: `cohort` (its own mask file), `pseudo` (from colour deconvolution) or `none`.

    `cohort.masks`: auto = the cohort's masks where it has them, pseudo-masks elsewhere.
    """
    if choice not in MASK_CHOICES:
        raise ValueError(f"cohort.masks must be one of {', '.join(MASK_CHOICES)}; got {choice!r}")
    has_file = valid["mask_path"].map(lambda p: isinstance(p, str))
    if choice == "pseudo":
        return pd.Series("pseudo", index=valid.index)
    sources = has_file.map({True: "cohort", False: "pseudo" if choice == "auto" else "none"})
    if (sources == "none").all():
        raise ValueError(
            "the cohort has no mask files and cohort.masks is 'cohort'; set "
            "cohort.masks: auto to train the UNet on pseudo-masks"
        )
    return sources


def _mask_loader(
    mask_path: str | None, image_path: str, source: str, tiff_page: int, scale: float = 1.0
) -> Callable[[], Image.Image]:
    if source == "cohort":
        return lambda: Image.fromarray(
            _rescale(ingest.read_mask(mask_path), scale, cv2.INTER_NEAREST)
        )
    image = _image_loader(image_path, tiff_page, scale)
    return lambda: Image.fromarray(stain.pseudo_mask(np.asarray(image())))


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
