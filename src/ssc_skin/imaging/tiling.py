"""Grid tiling of a tissue mask, patch cropping and batch resizing (OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Tile:
    """Top-left corner of a patch and the share of it covered by tissue."""

    x: int
    y: int
    tissue_fraction: float


def grid_tiles(
    mask: np.ndarray, patch_size: int, stride: int, min_tissue_fraction: float
) -> list[Tile]:
    """Grid positions whose patch holds at least `min_tissue_fraction` tissue.

    Uses an integral image so each patch's tissue count costs four look-ups.
    """
    if patch_size <= 0 or stride <= 0:
        raise ValueError("patch_size and stride must be positive")
    h, w = mask.shape
    if h < patch_size or w < patch_size:
        return []
    integral = cv2.integral(mask.astype(np.uint8))
    ys = np.arange(0, h - patch_size + 1, stride)
    xs = np.arange(0, w - patch_size + 1, stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    counts = (
        integral[yy + patch_size, xx + patch_size]
        - integral[yy, xx + patch_size]
        - integral[yy + patch_size, xx]
        + integral[yy, xx]
    )
    fractions = counts / float(patch_size * patch_size)
    keep = fractions >= min_tissue_fraction
    return [
        Tile(int(x), int(y), float(f))
        for x, y, f in zip(xx[keep], yy[keep], fractions[keep], strict=True)
    ]


def crop(array: np.ndarray, tile: Tile, patch_size: int) -> np.ndarray:
    return array[tile.y : tile.y + patch_size, tile.x : tile.x + patch_size]


def resize_batch(images: np.ndarray, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize a batch (N, H, W[, C]) to size x size; a no-op when already that size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    if len(images) == 0:
        return np.zeros((0, size, size, *images.shape[3:]), images.dtype)
    return np.stack([cv2.resize(img, (size, size), interpolation=interpolation) for img in images])
