"""Stain normalisation and stain augmentation for H&E skin sections (pseudo-masks from the
stains: `imaging.pseudo_mask`).

Colour in histology depends on the lab, the stain batch and the section thickness as much as on
the tissue, so a model can learn a patient's stain instead of their disease. Normalisers are fitted
on training images only (pooled statistics, robust to an odd slide) and applied to every image.
Everything works in optical density (OD, Beer-Lambert), where stains add up linearly, and only
stained pixels drive any statistic: white glass would otherwise dominate. Pure numpy/OpenCV; it
knows nothing of Kedro.

References: Reinhard et al. 2001 (colour transfer in LAB); Macenko et al. 2009 (stain vectors
from the OD plane); Ruifrok & Johnston 2001 (colour deconvolution); Tellez et al. 2018 (HED
augmentation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("none", "reinhard", "macenko")
CONFIG_KEY = "patches.stain.method"

BETA = 0.15  # OD below which a pixel counts as glass (Macenko et al.'s beta)
ALPHA = 1.0  # percentile of stain angles taken as the pure stains (Macenko et al.'s alpha)
MAX_CONCENTRATION_PERCENTILE = 99.0
MIN_TISSUE_PIXELS = 256  # fewer stained pixels than this: too few for statistics, leave as is
# Each image's stain vectors are estimated on an even grid of at most this many pixels: the
# statistics (a 3x3 covariance and two percentiles) are stable well below it, and estimating
# is most of the cost of normalising the patches `predict` classifies.
ESTIMATE_PIXELS = 8_192
# H and E vectors are ~40 degrees apart; closer than ~18 means one stain only (an all-collagen
# or all-nuclei patch), where unmixing is ill-conditioned and would paint in the missing stain.
MAX_STAIN_COSINE = 0.95

# Ruifrok & Johnston's OD vectors (rows: haematoxylin, eosin, DAB), as in scikit-image.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

# uint8 -> log intensity (= -OD); 256, not 255, so that 0 stays finite and 255 maps to 0.
_LOG_LUT = np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0).astype(np.float32)


def check_rgb(image: np.ndarray) -> np.ndarray:
    """The image if it is uint8 RGB (HxWx3); a ValueError saying what it is otherwise."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image (HxWx3), got {image.dtype} {image.shape}")
    return image


def optical_density(image: np.ndarray) -> np.ndarray:
    """OD per channel (float32, HxWx3): stains add up linearly here, unlike in RGB."""
    return -_LOG_LUT[image]


def _log_intensity(image: np.ndarray) -> np.ndarray:
    """-OD through a lookup table: the cheapest way into OD space for uint8 images."""
    return cv2.LUT(np.ascontiguousarray(image), _LOG_LUT)


def _to_uint8(log_intensity: np.ndarray) -> np.ndarray:
    """Back from -OD to uint8 RGB (OpenCV saturates: no separate clip pass)."""
    return cv2.convertScaleAbs(cv2.exp(log_intensity), alpha=256.0, beta=-1.0)


def _darkest_channel(image: np.ndarray) -> np.ndarray:
    """Per pixel, the smallest of R, G, B: its OD is the largest channel OD."""
    r, g, b = cv2.split(np.ascontiguousarray(image))
    return cv2.min(cv2.min(r, g), b)


def tissue_pixels(image: np.ndarray, beta: float = BETA) -> np.ndarray:
    """Boolean HxW: some channel absorbs at least `beta` (pale eosin counts; glass does not)."""
    return -_LOG_LUT[_darkest_channel(image)] >= beta


def tissue_weight(image: np.ndarray, beta: float = BETA) -> np.ndarray:
    """Float32 HxW, 0 on glass and 1 on tissue with a ramp between: recolouring glass tints it."""
    ramp = np.clip((-_LOG_LUT - 0.5 * beta) / (0.5 * beta), 0.0, 1.0).astype(np.float32)
    return cv2.LUT(_darkest_channel(image), ramp)


def _blend(changed: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight * changed + (1 - weight) * original, per pixel (float32)."""
    return cv2.blendLinear(changed, original, weight, 1.0 - weight)


def _tissue_sample(image: np.ndarray, limit: int) -> np.ndarray:
    """OD (Nx3) of tissue pixels on an even grid of about `limit` pixels: cheap and stable."""
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / limit))))
    grid = np.ascontiguousarray(image[::step, ::step])
    return optical_density(grid).reshape(-1, 3)[tissue_pixels(grid).ravel()]


PixelTransform = Callable[[np.ndarray], np.ndarray]


def _identity(pixels: np.ndarray) -> np.ndarray:
    return check_pixels(pixels).copy()


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB pixels: one image (HxWx3) or a batch of patches (NxHxWx3)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 RGB pixels (HxWx3 or NxHxWx3), got {pixels.dtype} {pixels.shape}"
        )
    return pixels


def _per_image_rows(pixels: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a per-pixel OpenCV map to an image, or to a batch stacked as one tall image (one
    call instead of N: the map is per pixel, so stacking changes nothing)."""
    check_pixels(pixels)
    if pixels.ndim == 3:
        return fn(np.ascontiguousarray(pixels))
    n, h, w, c = pixels.shape
    if n == 0:
        return pixels.copy()
    return fn(np.ascontiguousarray(pixels).reshape(n * h, w, c)).reshape(n, h, w, c)


# --------------------------------------------------------------------------- normalisers


@dataclass(frozen=True)
class StainNormalizer:
    """Identity ('none'), and the base of the fitted normalisers: a method name and a dict."""

    method: ClassVar[str] = "none"

    def transform(self, image: np.ndarray) -> np.ndarray:
        """The image with this normaliser's target stain appearance (uint8 RGB)."""
        return self.pixel_transform(image)(image)

    def pixel_transform(self, image: np.ndarray) -> PixelTransform:
        """The per-pixel map this image's stain statistics call for.

        Estimated once on `image` (a whole image, a slide thumbnail or a sample of its
        tiles), it can then be applied to any of its pixels: to the image itself, or only to
        the patches cut from it (N x H x W x 3) with the same result pixel for pixel. That is
        what lets training, `predict`, serving and slides share one preprocessing step.
        """
        return self.transform_from(self.estimate(image))

    def estimate(self, image: np.ndarray) -> dict[str, list] | None:
        """The image's own stain statistics (no fitted state): what `transform_from` needs.

        Per-image work that no fold's fitting touches: cross-validation estimates it once per
        image and applies each fold's fitted target to the same estimate. JSON-able; None
        where the image leaves too little to estimate (it is then left as it is)."""
        check_rgb(image)
        return None

    def transform_from(self, estimate: Mapping[str, Any] | None) -> PixelTransform:
        """The per-pixel map for an image whose statistics are `estimate` (see `estimate`)."""
        return _identity

    def params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able dict, for the catalog and MLflow."""
        return {"method": self.method, **self.params()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> StainNormalizer:
        """Rebuild any normaliser from `to_dict`'s output."""
        method = check_method(str(data.get("method", "")))
        params = {k: v for k, v in data.items() if k != "method"}
        return NORMALIZERS[method].from_params(params)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StainNormalizer:
        return cls()


@dataclass(frozen=True)
class ReinhardNormalizer(StainNormalizer):
    """Match the per-channel mean and std of tissue pixels in CIE LAB (Reinhard et al. 2001).

    `mean` and `std` are in CIE units (L 0-100, a and b signed).
    """

    method: ClassVar[str] = "reinhard"
    mean: tuple[float, ...] = (70.0, 30.0, -15.0)
    std: tuple[float, ...] = (10.0, 10.0, 8.0)
    n_images: int = 0

    def estimate(self, image: np.ndarray) -> dict[str, list] | None:
        stats = _lab_stats(_lab(check_rgb(image)), tissue_pixels(image))
        if stats is None:
            return None
        return {"mean": [float(v) for v in stats[0]], "std": [float(v) for v in stats[1]]}

    def transform_from(self, estimate: Mapping[str, Any] | None) -> PixelTransform:
        if estimate is None:
            return _identity
        mean, std = np.asarray(estimate["mean"]), np.asarray(estimate["std"])
        scale = np.asarray(self.std) / np.maximum(std, 1e-3)
        offset = np.asarray(self.mean) - mean * scale
        affine = np.hstack([np.diag(scale), offset[:, None]]).astype(np.float32)

        def apply(pixels: np.ndarray) -> np.ndarray:
            return _per_image_rows(
                pixels,
                lambda rgb8: cv2.convertScaleAbs(
                    _blend(
                        cv2.cvtColor(cv2.transform(_lab(rgb8), affine), cv2.COLOR_LAB2RGB),
                        np.multiply(rgb8, np.float32(1 / 255), dtype=np.float32),
                        tissue_weight(rgb8),
                    ),
                    alpha=255.0,
                ),
            )

        return apply

    def params(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "n_images": self.n_images}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReinhardNormalizer:
        return cls(
            mean=_floats(params["mean"], 3),
            std=_floats(params["std"], 3),
            n_images=int(params.get("n_images", 0)),
        )


@dataclass(frozen=True)
class MacenkoNormalizer(StainNormalizer):
    """Re-express each image with reference stain vectors and concentrations (Macenko 2009).

    `stains` holds the unit OD vectors of haematoxylin and eosin (rows, RGB order) and
    `max_concentrations` their 99th-percentile concentrations over tissue pixels.
    """

    method: ClassVar[str] = "macenko"
    stains: tuple[tuple[float, ...], ...] = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11))
    max_concentrations: tuple[float, ...] = (1.0, 1.0)
    n_images: int = 0

    def estimate(self, image: np.ndarray) -> dict[str, list] | None:
        check_rgb(image)
        sample = _tissue_sample(image, ESTIMATE_PIXELS)
        if len(sample) < MIN_TISSUE_PIXELS:
            return None
        source = stain_vectors(sample)
        if float(source[0] @ source[1]) > MAX_STAIN_COSINE:
            logger.debug("one stain only in this image: left as it is")
            return None
        unmix = np.linalg.pinv(source)  # 3x2: least-squares concentrations, as in the paper
        source_max = np.percentile(sample @ unmix, MAX_CONCENTRATION_PERCENTILE, axis=0)
        return {"stains": source.tolist(), "max_concentrations": source_max.tolist()}

    def transform_from(self, estimate: Mapping[str, Any] | None) -> PixelTransform:
        if estimate is None:
            return _identity
        unmix = np.linalg.pinv(np.asarray(estimate["stains"], np.float64))
        source_max = np.asarray(estimate["max_concentrations"], np.float64)
        scale = np.asarray(self.max_concentrations) / np.maximum(source_max, 1e-3)
        # unmix, rescale and remix with the target's stains: one 3x3 map in OD space (and so
        # in -OD space); OD off the stain plane is dropped, as in the paper.
        remix = ((unmix * scale) @ np.asarray(self.stains)).T.astype(np.float32)

        def apply(pixels: np.ndarray) -> np.ndarray:
            def one(rgb8: np.ndarray) -> np.ndarray:
                log_i = _log_intensity(rgb8)
                return _to_uint8(_blend(cv2.transform(log_i, remix), log_i, tissue_weight(rgb8)))

            return _per_image_rows(pixels, one)

        return apply

    def params(self) -> dict[str, Any]:
        return {
            "stains": [list(v) for v in self.stains],
            "max_concentrations": list(self.max_concentrations),
            "n_images": self.n_images,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MacenkoNormalizer:
        stains = params["stains"]
        return cls(
            stains=(_floats(stains[0], 3), _floats(stains[1], 3)),
            max_concentrations=_floats(params["max_concentrations"], 2),
            n_images=int(params.get("n_images", 0)),
        )


# method name -> normaliser class (loading a fitted one, estimating per-image statistics).
# Adding a normaliser: its class, an entry here, a name in METHODS and its fit in
# `fit_normalizer`; every other module reads these.
NORMALIZERS: dict[str, type[StainNormalizer]] = {
    "none": StainNormalizer,
    "reinhard": ReinhardNormalizer,
    "macenko": MacenkoNormalizer,
}


def check_method(method: str) -> str:
    """The method name, or a ValueError that names the parameter to fix."""
    if method not in METHODS:
        raise ValueError(f"{CONFIG_KEY} must be one of {list(METHODS)}, got {method!r}")
    return method


def _floats(values: Iterable[Any], n: int) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != n:
        raise ValueError(f"expected {n} numbers, got {len(out)}")
    return out


def _lab(image: np.ndarray) -> np.ndarray:
    """CIE LAB in float32 (L 0-100): no 8-bit quantisation of the a and b channels."""
    rgb = np.multiply(image, np.float32(1 / 255), dtype=np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)


def _lab_stats(lab: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and std of LAB over tissue pixels, or None when there is too little tissue."""
    if np.count_nonzero(tissue) < MIN_TISSUE_PIXELS:
        return None
    mean, std = cv2.meanStdDev(lab, mask=tissue.astype(np.uint8))
    return mean.ravel(), std.ravel()


def stain_vectors(od: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Haematoxylin and eosin unit OD vectors (2x3) from stained pixels' OD (Nx3), per Macenko.

    The OD of H&E tissue lies near a plane; the two extreme angles in that plane (robust
    percentiles, not the min and max) are the purest pixels of each stain.
    """
    _, vecs = np.linalg.eigh(np.cov(od.T.astype(np.float64)))
    plane = vecs[:, [2, 1]]  # the two largest eigenvalues, largest first
    plane[:, 0] *= np.sign(plane[:, 0].sum()) or 1.0  # OD is positive: so is the main axis
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    ends = [plane @ np.array([np.cos(a), np.sin(a)]) for a in (lo, hi)]
    # a stain absorbs, it cannot emit: clip rounding noise below zero, then unit length
    ends = [np.clip(v * (np.sign(v.sum()) or 1.0), 0.0, None) for v in ends]
    ends = [v / max(float(np.linalg.norm(v)), 1e-6) for v in ends]
    # haematoxylin absorbs more red than eosin does
    return np.stack(ends if ends[0][0] > ends[1][0] else ends[::-1])


def fit_normalizer(
    method: str, images: Iterable[np.ndarray], pixels_per_image: int = 4096
) -> StainNormalizer:
    """Fit a normaliser on training images: a robust target pooled over all of them.

    Reinhard: the median of per-image LAB means and stds. Macenko: stain vectors from a pool of
    tissue pixels sampled from every image, and the median of per-image max concentrations, so
    that one odd slide cannot set the target. Glass never enters any statistic.
    """
    check_method(method)
    if method == "none":
        return StainNormalizer()
    if method == "reinhard":
        return _fit_reinhard(images)
    return _fit_macenko(images, pixels_per_image)


def _fit_reinhard(images: Iterable[np.ndarray]) -> ReinhardNormalizer:
    stats = [_lab_stats(_lab(check_rgb(image)), tissue_pixels(image)) for image in images]
    kept = [s for s in stats if s is not None]
    if not kept:
        raise ValueError("no training image has enough tissue to fit a stain normaliser")
    mean = np.median([s[0] for s in kept], axis=0)
    std = np.median([s[1] for s in kept], axis=0)
    logger.info(
        "Reinhard target from %d of %d images: LAB mean %s, std %s",
        len(kept),
        len(stats),
        np.round(mean, 2).tolist(),
        np.round(std, 2).tolist(),
    )
    return ReinhardNormalizer(mean=_floats(mean, 3), std=_floats(std, 3), n_images=len(kept))


def _fit_macenko(images: Iterable[np.ndarray], pixels_per_image: int) -> MacenkoNormalizer:
    samples = [_tissue_sample(check_rgb(image), pixels_per_image) for image in images]
    kept = [s for s in samples if len(s) >= min(MIN_TISSUE_PIXELS, pixels_per_image // 4)]
    if not kept:
        raise ValueError("no training image has enough tissue to fit a stain normaliser")
    stains = stain_vectors(np.concatenate(kept))
    if float(stains[0] @ stains[1]) > MAX_STAIN_COSINE:
        logger.warning(
            "training images show one stain only: Macenko target %s is unreliable",
            np.round(stains, 3).tolist(),
        )
    unmix = np.linalg.pinv(stains)
    max_conc = np.median(
        [np.percentile(s @ unmix, MAX_CONCENTRATION_PERCENTILE, axis=0) for s in kept], axis=0
    )
    logger.info(
        "Macenko target from %d of %d images: stains %s, max concentrations %s",
        len(kept),
        len(samples),
        np.round(stains, 3).tolist(),
        np.round(max_conc, 3).tolist(),
    )
    return MacenkoNormalizer(
        stains=(_floats(stains[0], 3), _floats(stains[1], 3)),
        max_concentrations=_floats(max_conc, 2),
        n_images=len(kept),
    )


# --------------------------------------------------------------------------- augmentation


def augment_hed(
    image: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05
) -> np.ndarray:
    """Random stain jitter in HED space (Tellez et al. 2018), for training only.

    Each stain's concentration is scaled by U(1-sigma, 1+sigma) and shifted by U(-bias, bias)
    (OD units); the shift is applied to tissue only so that glass stays white.
    """
    scale = rng.uniform(1 - sigma, 1 + sigma, 3)
    shift = rng.uniform(-bias, bias, 3)
    log_i = _log_intensity(check_rgb(image))
    jittered = cv2.transform(log_i, (HED_FROM_RGB * scale @ RGB_FROM_HED).T.astype(np.float32))
    shift_od = (shift @ RGB_FROM_HED).astype(np.float32)
    jittered -= tissue_weight(image)[..., None] * shift_od
    return _to_uint8(jittered)
