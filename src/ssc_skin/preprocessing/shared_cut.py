"""Patches cut once and shared by every fold of a cross-validation.

Decoding, tissue detection, tiling, cropping and each image's own stain statistics depend on
the image alone, so they are done once per run. What is *fitted* (the stain normaliser's target,
then the UNet, classifiers, peer and hybrid) is fitted per fold on that fold's training
patients: `normalise_for_fold` applies a fold's fitted normaliser to the shared raw crops. The
result is pixel for pixel what `Preprocessor.cut` gives with that normaliser, because the
stain map is estimated on the whole image in both cases (`StainNormalizer.estimate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.imaging import stain
from ssc_skin.preprocessing.preprocess import PreprocessConfig

UNASSIGNED = "unassigned"  # the split of a shared patch: each fold assigns its own


def raw_config(config: PreprocessConfig) -> PreprocessConfig:
    """The same preprocessing with no stain normalisation: the shared, fold-free crops."""
    return PreprocessConfig.from_dict({**config.to_dict(), "normalizer": {"method": "none"}})


def stain_estimates(
    images: Mapping[str, Callable[[], Any]], image_ids: list[str], method: str
) -> dict[str, dict[str, list] | None]:
    """Each image's own stain statistics for `method` (None: too little stain to estimate;
    such an image is left as it is, as `Preprocessor.cut` leaves it)."""
    estimator = stain.NORMALIZERS[stain.check_method(method)]()  # estimate reads no target
    return {
        image: estimator.estimate(np.asarray(images[image]().convert("RGB"))) for image in image_ids
    }


def normalise_for_fold(
    raw: Mapping[str, np.ndarray],
    index: pd.DataFrame,
    estimates: Mapping[str, Any],
    normalizer: stain.StainNormalizer,
    split_of: Mapping[str, str],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The shared crops under one fold's fitted normaliser, with that fold's splits.

    Masks are shared as they are (normalisation does not touch them); the index keeps its rows
    and order, only `split` changes. A patient missing from `split_of` is an error: every
    patient of the cohort belongs to every fold, as a train, val or test patient.
    """
    missing = sorted(set(index["patient"]) - set(split_of))
    if missing:
        raise ValueError(f"{len(missing)} patient(s) of the patch index have no split in this fold")
    images = np.empty_like(raw["images"])
    for image, group in index.groupby("image", sort=False)["row"]:
        rows = group.to_numpy()
        images[rows] = normalizer.transform_from(estimates.get(image))(raw["images"][rows])
    untouched = np.setdiff1d(np.arange(len(images)), index["row"].to_numpy())
    images[untouched] = raw["images"][untouched]
    return {"images": images, "masks": raw["masks"]}, index.assign(
        split=index["patient"].map(split_of)
    )
