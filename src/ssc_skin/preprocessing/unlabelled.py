"""Tissue patches from a folder of unlabelled images, for self-supervised pretraining.

A lab's archive has no labels and no fixed layout: the folder is searched recursively like
`predict`'s input (no label folders, no patient ids needed), every file goes through the
cohort's checks, and each valid image gives a sample of its tissue patches. One image is
decoded at a time and only its sampled patches are kept, so memory is bounded by
`max_patches`, not by the archive. The folder is only read.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ssc_skin.cohort import readers
from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import tissue_mask
from ssc_skin.inference import predict

logger = logging.getLogger(__name__)


def folder_patches(
    folder: str | Path,
    patch_size: int,
    min_tissue_fraction: float,
    max_patches: int,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, int]]:
    """(N, s, s, 3) uint8 tissue patches of the folder's valid images (at most `max_patches`,
    spread evenly over the images) and counts of what was used and what not, by reason."""
    records = predict.discover_inputs(folder, None)
    valid, quarantine = predict.validate_inputs(
        records, min_side=patch_size, min_tissue_fraction=min_tissue_fraction
    )
    counts: dict[str, int] = {"files": len(records), "images_used": 0}
    for check, n in Counter(quarantine["check"]).items():
        counts[f"not_used_{check}"] = int(n)
    if valid.empty:
        raise ValueError(
            f"pretrain.images: none of the {len(records)} files of the folder is a usable "
            f"tissue image ({dict(Counter(quarantine['check']))})"
        )
    per_image = max(1, math.ceil(max_patches / len(valid)))
    rng = np.random.default_rng(seed)
    patches: list[np.ndarray] = []
    for path in valid["image_path"]:
        image, _ = readers.read_rgb(path)
        tiles = tiling.grid_tiles(tissue_mask(image), patch_size, patch_size, min_tissue_fraction)
        if not tiles:
            counts["images_without_tissue_patch"] = counts.get("images_without_tissue_patch", 0) + 1
            continue
        chosen = rng.permutation(len(tiles))[:per_image]
        patches.extend(tiling.crop(image, tiles[i], patch_size) for i in chosen)
        counts["images_used"] += 1
    order = rng.permutation(len(patches))[:max_patches]
    counts["patches"] = len(order)
    logger.info(
        "Pretraining patches: %d of %d px from %d of %d files (%s)",
        len(order),
        patch_size,
        counts["images_used"],
        len(records),
        ", ".join(f"{k}: {v}" for k, v in counts.items() if k.startswith(("not_", "images_w")))
        or "every file used",
    )
    if not patches:
        raise ValueError("pretrain.images: no image of the folder has a tissue patch")
    return np.stack([patches[i] for i in order]), counts
