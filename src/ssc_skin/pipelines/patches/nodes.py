"""Nodes of the `patches` pipeline: tissue detection and grid tiling with provenance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin import imaging

logger = logging.getLogger(__name__)


def extract_patches(images: dict[str, Callable[[], Any]], masks: dict[str, Callable[[], Any]],
                    manifest: pd.DataFrame, patient_splits: pd.DataFrame,
                    params: dict[str, Any]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Tile every image's tissue into patches; keep (image, patient, x, y, split) per patch."""
    size, stride = params["patch_size"], params["stride"]
    split_of = patient_splits.set_index("patient")["split"]
    patch_images, patch_masks, rows = [], [], []
    for n, record in enumerate(manifest.itertuples(index=False), start=1):
        image = np.asarray(images[record.image]().convert("RGB"))
        mask = (np.asarray(masks[record.image]()) if record.has_mask
                else np.zeros(image.shape[:2], np.uint8))
        tissue = imaging.tissue_mask(image, params["min_saturation"])
        for tile in imaging.grid_tiles(tissue, size, stride, params["min_tissue_fraction"]):
            patch_images.append(imaging.crop(image, tile, size))
            patch_masks.append(imaging.crop(mask, tile, size))
            rows.append({"row": len(rows), "image": record.image, "patient": record.patient,
                         "label": record.label, "split": split_of[record.patient],
                         "x": tile.x, "y": tile.y, "tissue_fraction": tile.tissue_fraction,
                         "has_mask": record.has_mask})
        if n % max(1, len(manifest) // 5) == 0:
            logger.info("Patches: %d/%d images, %d patches so far", n, len(manifest), len(rows))
    index = pd.DataFrame(rows)
    logger.info("Patches: %d from %d images (%s)", len(index), len(manifest),
                ", ".join(f"{k}={v}" for k, v in index["split"].value_counts().items()))
    arrays = {"images": np.stack(patch_images), "masks": np.stack(patch_masks)}
    return arrays, index
