"""Tissue detection: which pixels of a stained section are tissue and which are glass."""

from __future__ import annotations

import cv2
import numpy as np


def tissue_mask(image: np.ndarray, min_saturation: int = 12, kernel: int = 5,
                min_darkness: int = 20) -> np.ndarray:
    """Tissue vs glass: Otsu on HSV saturation, then morphological opening and closing.

    Stained tissue is saturated and glass is not, whatever the stain's hue. A floor on the
    threshold keeps an all-glass image from being split into two halves of noise. An image
    without colour (a grayscale scan) falls back to Otsu on darkness: tissue absorbs light.
    """
    signal = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    floor = min_saturation
    if int(signal.max()) < min_saturation:
        signal = 255 - cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        floor = min_darkness
    otsu, _ = cv2.threshold(signal, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, mask = cv2.threshold(signal, max(otsu, floor), 255, cv2.THRESH_BINARY)
    structuring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, structuring)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, structuring)
    return mask > 0
