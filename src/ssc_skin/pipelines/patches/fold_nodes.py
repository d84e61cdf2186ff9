"""Nodes of the shared cut (once per run) and of each fold's patches (cross-validation and the
final fit): per-image work is shared, the stain normaliser is fitted per fold."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.imaging.stain import StainNormalizer
from ssc_skin.preprocessing import shared_cut
from ssc_skin.preprocessing.cohort_patches import cut_cohort
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides.linkage import slide_paths

logger = logging.getLogger(__name__)


def cut_shared_patches(
    images: dict[str, Callable[[], Any]],
    masks: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    patches: dict[str, Any],
    segmentation: dict[str, Any],
    linkage: pd.DataFrame | None = None,
    engine: dict[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, Any]]:
    """Every image's raw crops, masks and provenance, and its own stain statistics: once per
    run, whatever the number of folds."""
    config = PreprocessConfig.from_params(patches, segmentation)
    unassigned = dict.fromkeys(manifest["patient"], shared_cut.UNASSIGNED)
    arrays, index = cut_cohort(
        images, masks, manifest, unassigned, config, slide_paths(manifest, linkage), engine
    )
    estimates = shared_cut.stain_estimates(
        images, list(manifest["image"]), patches["stain"]["method"]
    )
    logger.info(
        "Shared cut: %d patches from %d images, cut once for every fold", len(index), len(manifest)
    )
    return arrays, index, estimates


def fold_patches(
    raw: dict[str, np.ndarray],
    index: pd.DataFrame,
    estimates: dict[str, Any],
    preprocess_config: PreprocessConfig,
    patient_splits: pd.DataFrame,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The shared crops under this fold's normaliser (fitted on its training patients only),
    with this fold's train / val / test split."""
    normalizer = StainNormalizer.from_dict(PreprocessConfig.from_dict(preprocess_config).normalizer)
    split_of = patient_splits.set_index("patient")["split"].to_dict()
    return shared_cut.normalise_for_fold(raw, index, estimates, normalizer, split_of)
