"""The patches stage's per-image job, as functions a Dask worker can run.

A worker gets `CutWork` (the preprocessing settings by value) and rebuilds the `Preprocessor`
once per process (`distributed.worker_cached`); images are read in the driver, where the
catalog is. No TensorFlow, no Kedro.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssc_skin import distributed
from ssc_skin.imaging import tiling
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor


@dataclass(frozen=True)
class CutWork:
    """`Preprocessor.cut` settings by value (the patches stage has no UNet)."""

    key: str
    preprocess_config: dict[str, Any]


@dataclass(frozen=True)
class CutImage:
    """One image's candidate patches, their tiles and the mask under each."""

    patches: np.ndarray  # N x s x s x 3 uint8, stain-normalised
    masks: np.ndarray  # N x s x s uint8
    tiles: list[tiling.Tile]


def cut_work(preprocess_config: PreprocessConfig | Mapping[str, Any]) -> CutWork:
    config = PreprocessConfig.from_dict(preprocess_config).to_dict()
    return CutWork(distributed.digest(json.dumps(config, sort_keys=True, default=str)), config)


def cut_image(image: np.ndarray, mask: np.ndarray | None, preprocessor: Preprocessor) -> CutImage:
    """`Preprocessor.cut` and the mask crops of the same tiles (zeros without a mask)."""
    size = preprocessor.config.patch_size
    patches, tiles = preprocessor.cut(image)
    if mask is None:
        mask = np.zeros(image.shape[:2], np.uint8)
    masks = (
        np.stack([tiling.crop(mask, t, size) for t in tiles])
        if tiles
        else np.zeros((0, size, size), np.uint8)
    )
    return CutImage(patches, masks, tiles)


def cut_image_on_worker(item: tuple[np.ndarray, np.ndarray | None], work: CutWork) -> CutImage:
    """`cut_image` for (image, mask or None) read in the driver, where the catalog is."""
    preprocessor = distributed.worker_cached(
        work.key, lambda: Preprocessor(PreprocessConfig.from_dict(work.preprocess_config))
    )
    image, mask = item
    return cut_image(image, mask, preprocessor)
