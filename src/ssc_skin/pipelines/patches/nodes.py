"""Nodes of the `patches` pipeline: stain normalisation, tissue detection, grid tiling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.imaging import stain, tiling
from ssc_skin.imaging.tissue import tissue_mask

logger = logging.getLogger(__name__)


def _rgb(images: dict[str, Callable[[], Any]], image_id: str) -> np.ndarray:
    return np.asarray(images[image_id]().convert("RGB"))


def fit_stain_normalizer(images: dict[str, Callable[[], Any]], manifest: pd.DataFrame,
                         patient_splits: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    """Fit the stain normaliser on training patients' images only (never val or test)."""
    method = stain.check_method(params["method"])
    train_patients = set(patient_splits.loc[patient_splits["split"] == "train", "patient"])
    train = manifest[manifest["patient"].isin(train_patients)]
    sample = train.sample(min(len(train), params["max_fit_images"]), random_state=0)
    normalizer = stain.fit_normalizer(method, (_rgb(images, i) for i in sample["image"]))
    logger.info("Stain normalisation: %s, fitted on %d training images", method, len(sample))
    return normalizer.to_dict()


def extract_patches(images: dict[str, Callable[[], Any]], masks: dict[str, Callable[[], Any]],
                    manifest: pd.DataFrame, patient_splits: pd.DataFrame,
                    normalizer: dict[str, Any], params: dict[str, Any]
                    ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Tile every image's tissue into stain-normalised patches with their masks.

    Patches with little tissue (fat, section borders) are kept for the UNet only, which has to
    learn them; the classifiers see `classifiable` patches. Each patch keeps its provenance (image, patient, x, y, split) and its mask source:
    `cohort` masks (drawn, or the synthetic ground truth) or `pseudo` masks from colour
    deconvolution for cohorts without any (weaker; see `stain.pseudo_mask`).
    """
    size, stride = params["patch_size"], params["stride"]
    normalise = stain.StainNormalizer.from_dict(normalizer).transform
    split_of = patient_splits.set_index("patient")["split"]
    patch_images, patch_masks, rows = [], [], []
    for n, record in enumerate(manifest.itertuples(index=False), start=1):
        image = _rgb(images, record.image)
        mask = (np.asarray(masks[record.image]()) if record.has_mask
                else np.zeros(image.shape[:2], np.uint8))
        tissue = tissue_mask(image, params["min_saturation"])
        image = normalise(image)
        lowest = min(params["min_tissue_fraction"], params["unet_min_tissue_fraction"])
        for tile in tiling.grid_tiles(tissue, size, stride, lowest):
            patch_images.append(tiling.crop(image, tile, size))
            patch_masks.append(tiling.crop(mask, tile, size))
            rows.append({"row": len(rows), "image": record.image, "patient": record.patient,
                         "label": record.label, "split": split_of[record.patient],
                         "x": tile.x, "y": tile.y, "tissue_fraction": tile.tissue_fraction,
                         "classifiable": tile.tissue_fraction >= params["min_tissue_fraction"],
                         "has_mask": record.has_mask, "mask_source": record.mask_source})
        if n % max(1, len(manifest) // 5) == 0:
            logger.info("Patches: %d/%d images, %d patches so far", n, len(manifest), len(rows))
    index = pd.DataFrame(rows)
    logger.info("Patches: %d from %d images (%s); masks: %s", len(index), len(manifest),
                ", ".join(f"{k}={v}" for k, v in index["split"].value_counts().items()),
                ", ".join(f"{k}={v}" for k, v in index["mask_source"].value_counts().items()))
    arrays = {"images": np.stack(patch_images), "masks": np.stack(patch_masks)}
    return arrays, index
