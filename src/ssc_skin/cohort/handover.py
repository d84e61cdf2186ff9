"""What ingestion hands to the rest of the study (no Kedro here): lazily written 8-bit RGB
images and masks under pseudonyms, the pseudonymised manifest, the local linkage table, the
quarantine report and its counts.

Images and masks are callables: the catalog's `PartitionedDataset` calls one, writes its PNG
and drops it before calling the next, so at most one decoded image (and its mask) is held
while writing, whatever the cohort's size. Nothing here opens a file for writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ssc_skin.cohort.config import MASK_CHOICES
from ssc_skin.cohort.privacy import pseudonym
from ssc_skin.cohort.readers import read_mask, read_rgb
from ssc_skin.imaging import pseudo_mask

logger = logging.getLogger("ssc_skin.cohort.ingest")  # the ingestion stage's one logger

LINKAGE_COLUMNS = ["image", "patient", "patient_id", "relative_path", "check"]
Loader = Callable[[], Image.Image]


@dataclass
class Ingested:
    """The outputs of the `ingest_cohort` node, in its order (`astuple`)."""

    images: dict[str, Loader]
    masks: dict[str, Loader]
    manifest: pd.DataFrame
    linkage: pd.DataFrame
    report: pd.DataFrame
    metrics: dict[str, Any]

    def astuple(self) -> tuple[Any, ...]:
        return self.images, self.masks, self.manifest, self.linkage, self.report, self.metrics


def image_loaders(valid: pd.DataFrame, tiff_page: int, scale: float) -> dict[str, Loader]:
    """Image pseudonym -> a callable that decodes, rescales and returns the image."""
    return {row.image: image_loader(row.image_path, tiff_page, scale) for row in valid.itertuples()}


def mask_loaders(valid: pd.DataFrame, tiff_page: int, scale: float) -> dict[str, Loader]:
    """Image pseudonym -> its mask (its own file, or a pseudo-mask); none where `none`."""
    return {
        row.image: mask_loader(row.mask_path, row.image_path, row.mask_source, tiff_page, scale)
        for row in valid.itertuples()
        if row.mask_source != "none"
    }


def image_loader(path: str, tiff_page: int, scale: float = 1.0) -> Loader:
    return lambda: Image.fromarray(_rgb(path, tiff_page, scale))


def mask_loader(
    mask_path: str | None, image_path: str, source: str, tiff_page: int, scale: float = 1.0
) -> Loader:
    if source == "cohort":
        return lambda: Image.fromarray(_rescale(read_mask(mask_path), scale, cv2.INTER_NEAREST))
    return lambda: Image.fromarray(pseudo_mask.pseudo_mask(_rgb(image_path, tiff_page, scale)))


def _rgb(path: str, tiff_page: int, scale: float) -> np.ndarray:
    """The image as the study sees it (decoded, at the target resolution): one array, no
    Pillow copy in between (a pseudo-mask of a 90 MP image needs every byte it can get)."""
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return _rescale(read_rgb(path, tiff_page)[0], scale, interpolation)


def resolution_scale(cohort_mpp: float | None, target_mpp: float | None) -> float:
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


def mask_sources(valid: pd.DataFrame, choice: str) -> pd.Series:
    """Per image: `cohort` (its own mask file), `pseudo` (from colour deconvolution) or `none`.

    `cohort.masks`: auto = the cohort's masks where it has them, pseudo-masks elsewhere.
    """
    if valid.empty:
        return pd.Series(dtype=object)
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


def manifest_table(valid: pd.DataFrame) -> pd.DataFrame:
    """The pseudonymised manifest the study reads; notes never name a file or a patient."""
    return pd.DataFrame(
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
    ).reset_index(drop=True)


def build_linkage(
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


def quarantine_metrics(valid: pd.DataFrame, quarantine: pd.DataFrame) -> dict[str, Any]:
    """Counts for MLflow (kedro-mlflow's metrics format): valid images, quarantined files
    in all and per check."""
    counts = {
        "images_valid": len(valid),
        "files_quarantined": len(quarantine),
        **{
            f"quarantined.{check}": int(n)
            for check, n in quarantine["check"].value_counts().items()
        },
    }
    return {k: {"value": float(v), "step": 0} for k, v in counts.items()}


def log_handover(manifest: pd.DataFrame, quarantined: int, total: int) -> None:
    """Counts only: how many images of how many patients go on, and where the rest went."""
    if manifest.empty:
        logger.error(
            "Cohort: no usable image among %d file(s); the reason for each is in "
            "data/08_reporting/quarantine.csv",
            total,
        )
    logger.info(
        "Tissue masks: %s",
        ", ".join(f"{k}={v}" for k, v in manifest["mask_source"].value_counts().items()),
    )
    logger.info(
        "Cohort: %d images from %d patients (%s); %d file(s) quarantined%s",
        len(manifest),
        manifest["patient"].nunique(),
        _per_label(manifest),
        quarantined,
        " -> data/08_reporting/quarantine.csv" if quarantined else "",
    )


def _per_label(manifest: pd.DataFrame) -> str:
    counts: Iterable[tuple[str, int]] = (
        manifest.groupby("label")["patient"].nunique().items() if len(manifest) else ()
    )
    return ", ".join(f"{k}={v}" for k, v in counts)
