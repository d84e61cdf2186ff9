"""Nodes of the `patches` pipeline: stain normalisation, tissue detection, grid tiling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.imaging import stain
from ssc_skin.preprocessing.cohort_patches import cut_cohort, rgb
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides.linkage import slide_paths

logger = logging.getLogger(__name__)


def fit_stain_normalizer(
    images: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Fit the stain normaliser on training patients' images only (never val or test)."""
    method = stain.check_method(params["method"])
    train_patients = set(patient_splits.loc[patient_splits["split"] == "train", "patient"])
    train = manifest[manifest["patient"].isin(train_patients)]
    sample = train.sample(min(len(train), params["max_fit_images"]), random_state=0)
    normalizer = stain.fit_normalizer(method, (rgb(images, i) for i in sample["image"]))
    logger.info("Stain normalisation: %s, fitted on %d training images", method, len(sample))
    return normalizer.to_dict()


def preprocess_config(
    normalizer: dict[str, Any], patches: dict[str, Any], segmentation: dict[str, Any]
) -> dict[str, Any]:
    """The one preprocessing configuration (patching, tissue, fitted stain normaliser, UNet
    gating) that training, `predict` and the served model all read."""
    return PreprocessConfig.from_params(patches, segmentation, normalizer)


def extract_patches(
    images: dict[str, Callable[[], Any]],
    masks: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    preprocess_config: PreprocessConfig,
    linkage: pd.DataFrame | None = None,
    engine: dict[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Tile every image's tissue into stain-normalised patches with their masks and provenance
    (image, patient, x, y, split, mask source), through `Preprocessor.cut`: the very step
    `predict` and the served model run. Low-tissue patches are kept for the UNet and as an
    image's fallback (`preprocessing.cohort_patches.cut_cohort`)."""
    split_of = patient_splits.set_index("patient")["split"].to_dict()
    slide_files = slide_paths(manifest, linkage)  # slide rows: cut from the slide in place
    config = PreprocessConfig.from_dict(preprocess_config)
    arrays, index = cut_cohort(images, masks, manifest, split_of, config, slide_files, engine)
    logger.info(
        "Patches: %d from %d images (%s); masks: %s",
        len(index),
        len(manifest),
        ", ".join(f"{k}={v}" for k, v in index["split"].value_counts().items()),
        ", ".join(f"{k}={v}" for k, v in index["mask_source"].value_counts().items()),
    )
    return arrays, index
