"""Pseudo-masks from the stains: background, epidermis, dermis and fat of an H&E section
without a hand-drawn mask (weaker than annotation; the UNet trains on them where a cohort has
no masks). Colour deconvolution (Ruifrok & Johnston 2001) separates haematoxylin-rich nuclei
from eosin-rich dermis; glass and fat are told apart by the membranes fat is full of. Pure
numpy/OpenCV; it knows nothing of Kedro.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ssc_skin.constants import MASK_CLASSES
from ssc_skin.imaging.stain import HED_FROM_RGB, check_rgb, optical_density


@dataclass(frozen=True)
class PseudoMaskConfig:
    """Thresholds and lengths of `pseudo_mask`; lengths are pixels at the cohort's 512 px scale.

    Tuned on synthetic sections of seeds other than the one the tests and the report use.
    """

    stain_threshold: float = 0.05  # chromatic OD above which a pixel is stained (not glass/lumen)
    solid_radius: int = 3  # stained structures thinner than this are membranes, not tissue mass
    min_membrane_area: int = 20  # smaller thin bits are noise or JPEG, not adipocyte membranes
    membrane_sigma: float = 12.0  # scale over which membrane density is judged
    glass_membrane_density: float = 0.02  # glass holds (almost) no membranes; fat is full of them
    min_glass_area: int = 1500
    min_glass_radius: float = 12.0  # glass is wide open; a dermal cleft reaching the edge is not
    max_epidermis_depth: int = 200  # depths searched for the nuclei-rich surface band
    ridge_sigma: float = 4.0
    lateral_sigma: float = 20.0  # averaging along the surface: is this stretch epidermis at all?
    min_band_contrast: float = (
        1.6  # band nuclei fraction over dermis fraction, to call it epidermis
    )
    fat_sigma: float = 15.0
    fat_fraction: float = 0.4  # share of empty (unstained) tissue around a pixel that makes it fat
    min_fat_area: int = (
        1200  # smaller fat regions are dermis (an empty vessel, a cluster of clefts)
    )


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones on a coarser grid (same smoothness, a fraction of the cost)."""
    field = field.astype(np.float32)
    factor = max(1, int(sigma // 3))
    if factor == 1:
        return cv2.GaussianBlur(field, (0, 0), sigma)
    h, w = field.shape
    small = cv2.resize(
        field, (max(2, w // factor), max(2, h // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _stained(image: np.ndarray, threshold: float) -> np.ndarray:
    """Stained pixels by chromatic OD (max minus min channel OD), on a lightly blurred image.

    Grey glass, uneven illumination and grey noise raise all channels' OD alike and cancel
    out; any stain, even a pale adipocyte membrane, absorbs one channel more than the others.
    """
    od = optical_density(cv2.GaussianBlur(image, (0, 0), 1.0))
    stained = (od.max(axis=-1) - od.min(axis=-1)) >= threshold
    return cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_CLOSE, _disk(1)) > 0


def _touches_border(labels: np.ndarray, n: int) -> np.ndarray:
    border = np.zeros(n, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    return border


def _glass(stained: np.ndarray, cfg: PseudoMaskConfig) -> np.ndarray:
    """Wide unstained regions on the image border that hold no membranes: glass.

    Fat is as white as glass, but criss-crossed by thin membranes; solid tissue next to glass
    does not count as membrane, so a thin strip of glass above the epidermis is still found.
    Dermal clefts hold no membranes either, but are narrow.
    """
    solid = cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_OPEN, _disk(cfg.solid_radius))
    thin = stained & (solid == 0)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= cfg.min_membrane_area
    keep[0] = False
    membranes = keep[labels].astype(np.float32)
    density = _blur(membranes, cfg.membrane_sigma) / (
        _blur((solid == 0).astype(np.float32), cfg.membrane_sigma) + 1e-3
    )
    white = ~stained
    n, labels, stats, _ = cv2.connectedComponentsWithStats(white.astype(np.uint8), connectivity=4)
    empty = np.bincount(labels[white & (density < cfg.glass_membrane_density)], minlength=n)
    area = stats[:, cv2.CC_STAT_AREA]
    radius = np.zeros(n, np.float32)  # inscribed radius of each component
    np.maximum.at(
        radius,
        labels.ravel(),
        cv2.distanceTransform(white.astype(np.uint8), cv2.DIST_L2, 5).ravel(),
    )
    is_glass = (
        (2 * empty >= area)
        & (area >= cfg.min_glass_area)
        & (radius >= cfg.min_glass_radius)
        & _touches_border(labels, n)
    )
    is_glass[0] = False  # label 0 is the stained pixels
    glass = is_glass[labels]
    # specks of dust in glass and slivers of tissue: not worth a class of their own
    tissue = cv2.morphologyEx((~glass).astype(np.uint8), cv2.MORPH_OPEN, _disk(2))
    return tissue == 0


def _nuclei(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Haematoxylin-dense pixels (float32 0/1): Otsu on colour-deconvolved H within tissue.

    Otsu adapts the cut to each slide's stain intensity; Ruifrok's fixed vectors suffice to
    rank pixels by haematoxylin, which is all a threshold needs.
    """
    hematoxylin = cv2.transform(optical_density(image), HED_FROM_RGB[:, :1].T.astype(np.float32))
    values = hematoxylin[tissue]
    top = float(np.percentile(values, 99.5)) + 1e-6
    scaled = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
    cut, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return ((hematoxylin > cut / 255.0 * top) & tissue).astype(np.float32)


def _epidermis(
    nuclei: np.ndarray, tissue: np.ndarray, depth: np.ndarray, cfg: PseudoMaskConfig
) -> np.ndarray:
    """The nuclei-rich band under the tissue surface, with its rete ridges.

    The nuclei fraction by depth below the glass gives a plateau (epidermis) over a base
    (dermis); the band ends where it falls half-way. Stretches of the band with few nuclei
    (a cut edge of dermis, not skin surface) are dropped; nuclei-dense tissue hanging from
    the band (rete ridges) is added.
    """
    none = np.zeros(tissue.shape, bool)
    max_depth = cfg.max_epidermis_depth
    near = tissue & (depth < max_depth)
    bins = depth[near].astype(np.int64)
    counts = np.bincount(bins, minlength=max_depth)
    if counts[:20].sum() < 50:
        return none
    profile = np.bincount(bins, weights=nuclei[near], minlength=max_depth) / np.maximum(counts, 1)
    profile = np.convolve(profile, np.ones(5) / 5, mode="same")
    top = int(np.argmax(profile[: max_depth // 2]))
    deep = tissue & (depth >= max_depth // 2)
    base = (
        float(nuclei[deep].mean())
        if deep.sum() > 500
        else float(np.median(profile[max_depth // 2 :]))
    )
    plateau = float(profile[top])
    if plateau < cfg.min_band_contrast * base + 0.02:
        return none
    middle = (plateau + base) / 2
    below = np.nonzero(profile[top:] < middle)[0]
    thickness = top + (int(below[0]) if len(below) else 0)
    band = tissue & (depth < thickness)
    if not band.any():
        return none
    weight = band.astype(np.float32)
    along = _blur(nuclei * weight, cfg.lateral_sigma) / (_blur(weight, cfg.lateral_sigma) + 1e-6)
    band &= along >= (float(nuclei[band].mean()) + base) / 2
    dense = _blur(nuclei, cfg.ridge_sigma) >= middle
    candidates = band | (dense & tissue & (depth < 2 * thickness))
    n, labels = cv2.connectedComponents(candidates.astype(np.uint8))
    keep = np.zeros(n, bool)
    keep[np.unique(labels[band])] = True
    keep[0] = False
    return keep[labels]


def _fat(stained: np.ndarray, tissue: np.ndarray, cfg: PseudoMaskConfig) -> np.ndarray:
    """Tissue that is mostly empty around a pixel: adipocytes are empty cells, dermis is not."""
    empty = (~stained & tissue).astype(np.float32)
    fat = ((_blur(empty, cfg.fat_sigma) >= cfg.fat_fraction) & tissue).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fat, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= cfg.min_fat_area
    keep[0] = False
    return keep[labels]


def pseudo_mask(image: np.ndarray, config: PseudoMaskConfig | None = None) -> np.ndarray:
    """A tissue mask (HxW uint8: 0 glass, 1 epidermis, 2 dermis, 3 fat) from stain alone.

    For cohorts without drawn masks. Weaker than real masks: glass by chroma and membranes,
    epidermis as the nuclei-rich band under the surface (none without visible glass), fat as
    tissue that is mostly empty around a pixel, dermis the rest. Made for H&E.
    """
    cfg = config or PseudoMaskConfig()
    stained = _stained(check_rgb(image), cfg.stain_threshold)
    glass = _glass(stained, cfg)
    tissue = ~glass
    mask = np.zeros(glass.shape, np.uint8)
    if not tissue.any():
        return mask
    mask[tissue] = MASK_CLASSES["dermis"]
    mask[_fat(stained, tissue, cfg)] = MASK_CLASSES["fat"]
    if glass.any():
        depth = cv2.distanceTransform(tissue.astype(np.uint8), cv2.DIST_L2, 5)
        epidermis = _epidermis(_nuclei(image, tissue), tissue, depth, cfg)
        mask[epidermis] = MASK_CLASSES["epidermis"]
    return mask
