"""Stain and scanner shifts: what a user's lab images do to a model trained on ours.

A model trained on one lab's H&E meets other stain batches, other stains and other scanners.
Each shift here is a pure function `(image, strength, rng) -> image` on uint8 RGB, so a
benchmark can hand every model the very same shifted image (one fixed rng per image) and
measure accuracy against the strength of the shift:

- `hed`: the stain jitter of Tellez et al. 2018 (`imaging.stain.augment_hed`) with its spread
  and bias scaled by `strength`: 0 is the image itself, 1 a stain batch of another lab, 2 the
  "HED-strong" range. The direction of the jitter comes from the rng alone, so with the same
  seed a larger strength moves every pixel further the same way.
- `masson`: a Masson-trichrome-like recolouring (collagen blue, cytoplasm red, nuclei near
  black) by colour deconvolution: the H&E concentrations are remixed with Masson stain vectors;
  `strength` blends from the image (0) to the full recolouring (1).
- `jpeg`: re-compression at a JPEG quality (`strength` is the quality, 1-100), as slide
  scanners and image exports do.

Pure numpy/OpenCV; it knows nothing of Kedro.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ssc_skin.cohort.synthetic import STAIN_VECTORS
from ssc_skin.imaging.stain import (
    HED_FROM_RGB,
    RGB_FROM_HED,
    augment_hed,
    check_rgb,
    optical_density,
    tissue_weight,
)

Shift = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

# strength 1 of `hed`: each stain's concentration x U(1 - 0.1, 1 + 0.1), shifted by
# U(-0.05, 0.05) OD; Tellez et al.'s HED-light is sigma 0.05, HED-strong 0.2 (strength 2)
HED_SIGMA = 0.1
HED_BIAS = 0.05
MIN_STAIN_SCALE = 0.05  # a stain never turns negative, however strong the jitter

# Masson trichrome (Weigert's haematoxylin, Biebrich scarlet, aniline blue): the simulator's
# OD vectors (rows: nuclei near black, cytoplasm red, collagen blue), unit length.
_MASSON = STAIN_VECTORS["masson"] / np.linalg.norm(STAIN_VECTORS["masson"], axis=1, keepdims=True)
MASSON_NUCLEI, MASSON_CYTOPLASM, MASSON_COLLAGEN = _MASSON
MASSON_NUCLEI_GAIN = 1.5  # iron haematoxylin stains nuclei darker than Mayer's in H&E
MASSON_COLLAGEN_GAIN = 1.5  # aniline blue stains collagen deeper than eosin does
NUCLEUS_H = 0.3  # H concentration at which a pixel is all nucleus: its eosin turns dark too
# Cell-rich tissue (epidermis, infiltrates) by haematoxylin density over a few cells: its eosin
# is cytoplasm (red); eosin elsewhere is collagen (blue). A ramp between these blurred H values.
CELL_SIGMA = 8.0
CELL_H = (0.1, 0.15)


def hed(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Stain jitter in HED space of `strength` x (sigma 0.1, bias 0.05): another lab's batch.

    `augment_hed` draws U(1 - sigma, 1 + sigma) as 1 - sigma + 2 sigma U with the same U for
    any sigma, so one seed gives one direction and `strength` only how far along it.
    """
    check_rgb(image)
    if strength < 0:
        raise ValueError(f"hed shift: strength must be >= 0, got {strength}")
    # scales below MIN_STAIN_SCALE would flip a stain's sign: cap sigma for large strengths
    sigma = min(HED_SIGMA * strength, 1.0 - MIN_STAIN_SCALE)
    return augment_hed(image, rng, sigma=sigma, bias=HED_BIAS * strength)


def _cytoplasm_share(haematoxylin: np.ndarray) -> np.ndarray:
    """Per pixel, how much of its eosin is cytoplasm: eosin where nuclei are dense around it."""
    dense = cv2.GaussianBlur(haematoxylin, (0, 0), CELL_SIGMA)
    return np.clip((dense - CELL_H[0]) / (CELL_H[1] - CELL_H[0]), 0.0, 1.0)


def masson(
    image: np.ndarray, strength: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A Masson-trichrome look from an H&E image (strength 1), blended with it below 1.

    Colour deconvolution (Ruifrok's H&E vectors) gives each pixel's haematoxylin and eosin;
    they are remixed with Masson vectors: haematoxylin and the eosin on nuclei as near-black
    nuclei, eosin in cell-rich tissue (dense nuclei around it: epidermis, infiltrates) as red
    cytoplasm and eosin elsewhere as blue collagen (H&E cannot tell cytoplasm from collagen
    by colour; in skin, acellular eosin is mostly collagen). Glass has no stain and stays white. `rng` is unused (the
    recolouring is deterministic); it is there so every shift has the same signature.
    """
    check_rgb(image)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"masson shift: strength must be within [0, 1], got {strength}")
    od = optical_density(image)
    conc = od @ HED_FROM_RGB.astype(np.float32)
    h, e, dab = (np.clip(conc[..., k], 0.0, None)[..., None] for k in range(3))
    nucleus = np.clip(h / NUCLEUS_H, 0.0, 1.0)
    red = _cytoplasm_share(h[..., 0])[..., None]
    eosin_colour = nucleus * MASSON_NUCLEI + (1.0 - nucleus) * (
        red * MASSON_CYTOPLASM + (1.0 - red) * MASSON_COLLAGEN_GAIN * MASSON_COLLAGEN
    )
    recoloured = MASSON_NUCLEI_GAIN * h * MASSON_NUCLEI + e * eosin_colour + dab * RGB_FROM_HED[2]
    weight = strength * tissue_weight(image)[..., None]
    mixed = (1.0 - weight) * od + weight * recoloured
    return np.clip(np.rint(np.exp(-mixed) * 256.0 - 1.0), 0, 255).astype(np.uint8)


def jpeg(
    image: np.ndarray, quality: float = 50, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The image saved as JPEG at `quality` (1-100) and read back: blocks, ringing and 4:2:0
    chroma subsampling, as a scanner's export does. `rng` is unused (deterministic)."""
    check_rgb(image)
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg shift: quality must be within [1, 100], got {quality}")
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("jpeg shift: OpenCV could not encode the image")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


SHIFTS: dict[str, Shift] = {"hed": hed, "masson": masson, "jpeg": jpeg}
# The levels the robustness benchmark measures: HED of increasing strength (0 = no shift; 6 =
# three times Tellez et al.'s HED-strong, past what a normaliser is expected to undo), the
# full Masson recolouring, JPEG at quality 50.
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "hed": (0.0, 1.0, 2.0, 4.0, 6.0),
    "masson": (1.0,),
    "jpeg": (50.0,),
}


def apply(name: str, image: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Shift `name` at `strength` with a fresh rng from `seed`: the same image for every model
    that asks with the same seed (derive the seed from the image, not from the model)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {sorted(SHIFTS)}")
    return SHIFTS[name](image, strength, np.random.default_rng(seed))


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean RGB distance between two images of one shape (0-441): how far a shift
    moved the colours."""
    diff = a.astype(np.float32) - b.astype(np.float32)
    return float(np.sqrt((diff**2).sum(axis=-1)).mean())
