"""Tissue detection: which pixels of a stained image are tissue and which are glass.

Real input ranges from whole sections with glass around them to tiles cut from inside a
section, tissue from edge to edge. A relative threshold (Otsu) needs both classes: on a tile
with no glass it splits the tissue's own range, and even on our synthetic sections (10-20%
glass) it cut away a quarter of the pale dermis. So glass is defined by absolute criteria,
as slideflow's grayspace/whitespace checks do:

1. *Colourless and bright*: saturation below `min_saturation` (12/255, slideflow's 0.05) and
   gray level above ``255 - min_darkness`` (230, slideflow's whitespace). Colourless and
   near-black (scanner padding, ink) is background too.
2. *Dim glass* (vignetting, a dim scanner): a colourless pixel brighter than 180 is glass
   when it lies in a large *flat* region. Flatness is what tells glass from pale loose
   stroma, which is as bright and as colourless but textured; it is measured on a 4x smaller
   copy, so it costs little and camera noise averages out. The step runs only when enough
   such pixels exist.

Then specks of "tissue" smaller than `kernel` in glass are removed (dust, noise), and gaps
narrower than `hole_size` inside tissue are filled: clefts between collagen bundles and fat
cell interiors belong to the tissue region (otherwise loose normal dermis would lose patches
that dense sclerotic dermis keeps, a bias between the classes).

A grayscale scan has no saturation, so only the brightness and flatness criteria decide.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SATURATION = 12  # the one default: pixels at least this saturated (of 255) are tissue
DIM_GLASS_LEVEL = 180  # colourless pixels brighter than this may be glass, if flat
FLAT_STD = 4.0  # gray-level std (5x5 window, 4x smaller copy) below which a region is flat
GLASS_REGION = 24  # a dim-glass region must hold a disc this wide (pixels, full resolution)
BLACK_LEVEL = 20  # colourless pixels darker than this are padding or ink, not tissue
_SCALE = 4
_DIM_SHARE = 0.02  # run the dim-glass step only when this share of pixels could be dim glass


def tissue_mask(
    image: np.ndarray,
    min_saturation: int = MIN_SATURATION,
    kernel: int = 5,
    min_darkness: int = 25,
    *,
    hole_size: int = 15,
) -> np.ndarray:
    """Boolean HxW mask of tissue in an HxWx3 uint8 RGB image (see the module docstring).

    `min_saturation`: pixels at least this saturated are tissue whatever their brightness.
    `min_darkness`: a colourless pixel is tissue only if at least this much darker than white.
    `kernel`: smaller specks of tissue in glass are dropped. `hole_size`: narrower gaps
    inside tissue are filled (0 or 1: none).
    """
    saturation = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    colourless = saturation < min_saturation
    background = colourless & ((gray > 255 - min_darkness) | (gray < BLACK_LEVEL))
    dim = colourless & (gray > DIM_GLASS_LEVEL)
    if np.count_nonzero(dim & ~background) > _DIM_SHARE * gray.size:
        background |= dim & _flat_glass(image, min_saturation)
    tissue = (~background).view(np.uint8)
    if kernel > 1:
        tissue = cv2.morphologyEx(
            tissue, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
        )
    if hole_size > 1:
        tissue = cv2.morphologyEx(
            tissue,
            cv2.MORPH_CLOSE,
            cv2.getStructuringElement(cv2.MORPH_RECT, (hole_size, hole_size)),
        )
    return tissue > 0


def _flat_glass(image: np.ndarray, min_saturation: int) -> np.ndarray:
    """Full-size mask of large, flat, colourless, bright regions (dim glass)."""
    height, width = image.shape[:2]
    if min(height, width) < 4 * _SCALE:
        return np.zeros((height, width), bool)
    small = cv2.resize(image, (width // _SCALE, height // _SCALE), interpolation=cv2.INTER_AREA)
    saturation = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    level = gray.astype(np.float32)
    mean = cv2.blur(level, (5, 5))
    variance = cv2.blur(level * level, (5, 5)) - mean * mean
    candidate = (saturation < min_saturation) & (gray > DIM_GLASS_LEVEL) & (variance < FLAT_STD**2)
    side = max(3, GLASS_REGION // _SCALE) | 1
    core = cv2.morphologyEx(
        candidate.view(np.uint8),
        cv2.MORPH_OPEN,
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)),
    )
    return cv2.resize(core, (width, height), interpolation=cv2.INTER_NEAREST) > 0
