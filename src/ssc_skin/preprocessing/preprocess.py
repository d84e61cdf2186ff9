"""The one preprocessing step from a stained image to the patches a classifier sees.

tissue mask -> grid tiles -> crops -> stain normalisation -> UNet dermis gating -> selection.

Training (`patches` and `segmentation` stages), the `predict` pipeline, the served MLflow model
and the benchmarks all call this module, configured by one serialisable `PreprocessConfig`
that the training run saves beside its models (with the fitted stain normaliser in it) and
the UNet that gates patches. So a served model sees exactly the patches it was trained on.

No Kedro here: numpy arrays in, numpy arrays and plain values out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from ssc_skin.constants import DERMIS
from ssc_skin.imaging import stain, tiling
from ssc_skin.imaging.tissue import MIN_SATURATION, tissue_mask

Segmenter = Callable[[np.ndarray], np.ndarray]  # N x s x s x 3 uint8 -> N x s x s x classes

# How each image's classified patches were chosen (`selection`), most trusted first.
OK, TISSUE_FALLBACK, GATING_FALLBACK, NOT_ASSESSABLE = (
    "ok",
    "tissue_fallback",
    "gating_fallback",
    "not_assessable",
)
SELECTIONS = (OK, TISSUE_FALLBACK, GATING_FALLBACK, NOT_ASSESSABLE)
SELECTION_REASONS = {
    OK: "",
    TISSUE_FALLBACK: "no patch reached the tissue threshold; assessed from its best patches",
    GATING_FALLBACK: "no patch passed UNet dermis gating; assessed from all its tissue patches",
    NOT_ASSESSABLE: "no tissue tile at all (glass only, or smaller than one patch)",
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides which pixels a classifier sees; JSON-able (`to_dict`).

    Saved by the training run (`data/06_models/preprocess.json`), loaded by `predict` and
    shipped inside the served model, so none of them can drift from training.
    """

    patch_size: int = 64
    stride: int = 64
    min_tissue_fraction: float = 0.5  # a patch is classifiable with this much tissue
    # Tiles down to this tissue share are cut too: the UNet learns section borders and fat
    # from them, and an image with no classifiable patch is assessed from its best ones.
    fallback_min_tissue_fraction: float = 0.05
    fallback_patches: int = 8  # at most this many best tiles for a tissue-fallback image
    min_saturation: int = MIN_SATURATION
    kernel: int = 5
    normalizer: Mapping[str, Any] = field(default_factory=lambda: {"method": "none"})
    use_segmentation: bool = True
    unet_input_size: int = 32  # patches are resized to this for the UNet (coarse = fast)
    min_dermis_fraction: float = 0.5
    # Slides: the resolution patches are cut at and how slides are read (`patches` block's
    # `target_microns_per_pixel` and `slide`), so predict cuts slides as training did.
    slide: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("patch_size", "stride", "unet_input_size", "fallback_patches", "kernel"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(
                    f"preprocessing: {name} must be positive, got {getattr(self, name)!r}"
                )
        for name in ("min_tissue_fraction", "fallback_min_tissue_fraction", "min_dermis_fraction"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(
                    f"preprocessing: {name} must be within [0, 1], got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "normalizer", dict(self.normalizer))
        object.__setattr__(self, "slide", dict(self.slide))

    @property
    def lowest_tissue_fraction(self) -> float:
        return min(self.min_tissue_fraction, self.fallback_min_tissue_fraction)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: PreprocessConfig | Mapping[str, Any]) -> PreprocessConfig:
        """The config of a saved `to_dict` (unknown keys named); a config is returned as is,
        so callers handed either (the catalog's typed dataset, a plain dict) need not care."""
        if isinstance(data, PreprocessConfig):
            return data
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"preprocessing config: unknown keys {unknown}; known: {sorted(known)}"
            )
        return cls(**dict(data))

    @classmethod
    def from_params(
        cls,
        patches: Mapping[str, Any],
        segmentation: Mapping[str, Any] | None,
        normalizer: Mapping[str, Any] | None = None,
    ) -> PreprocessConfig:
        """From the project's `patches` and `segmentation` parameter blocks."""
        unet = (segmentation or {}).get("unet", {})
        selection = (segmentation or {}).get("selection", {})
        return cls(
            patch_size=int(patches["patch_size"]),
            stride=int(patches["stride"]),
            min_tissue_fraction=float(patches["min_tissue_fraction"]),
            fallback_min_tissue_fraction=float(
                patches.get("unet_min_tissue_fraction", cls.fallback_min_tissue_fraction)
            ),
            fallback_patches=int(patches.get("fallback_patches", cls.fallback_patches)),
            min_saturation=int(patches.get("min_saturation", cls.min_saturation)),
            normalizer=dict(normalizer or {"method": "none"}),
            use_segmentation=bool(selection.get("use_segmentation", True)),
            unet_input_size=int(unet.get("input_size", cls.unet_input_size)),
            min_dermis_fraction=float(
                selection.get("min_dermis_fraction", cls.min_dermis_fraction)
            ),
            slide={
                **(
                    {"target_microns_per_pixel": patches["target_microns_per_pixel"]}
                    if patches.get("target_microns_per_pixel")
                    else {}
                ),
                **(patches.get("slide") or {}),
            },
        )


@dataclass
class ImagePatches:
    """One image's candidate patches (stain-normalised) and which of them are classified."""

    patches: np.ndarray  # N x patch_size x patch_size x 3, uint8
    tiles: list[tiling.Tile]
    dermis_fraction: np.ndarray | None  # per patch, None without a UNet
    used: np.ndarray  # bool per patch: sent to the classifier
    selection: str  # one of SELECTIONS
    n_tissue_tiles: int = 0  # every tile with at least the fallback share of tissue

    @property
    def used_patches(self) -> np.ndarray:
        return self.patches[self.used]

    @property
    def used_tiles(self) -> list[tiling.Tile]:
        return [t for t, keep in zip(self.tiles, self.used, strict=True) if keep]

    @property
    def fallback(self) -> bool:
        return self.selection in (TISSUE_FALLBACK, GATING_FALLBACK)


def candidate_patches(
    tissue_fraction: np.ndarray, config: PreprocessConfig
) -> tuple[np.ndarray, str]:
    """Patches of ONE image with enough tissue; without any, its most tissue-rich tiles
    (`tissue_fallback`); without any tile, `not_assessable`."""
    tissue_fraction = np.asarray(tissue_fraction, float)
    if len(tissue_fraction) == 0:
        return np.zeros(0, bool), NOT_ASSESSABLE
    candidates = tissue_fraction >= config.min_tissue_fraction
    if candidates.any():
        return candidates, OK
    best = np.argsort(-tissue_fraction, kind="stable")[: config.fallback_patches]
    candidates[best] = True
    return candidates, TISSUE_FALLBACK


def choose_patches(
    tissue_fraction: np.ndarray, dermis_fraction: np.ndarray | None, config: PreprocessConfig
) -> tuple[np.ndarray, str]:
    """Which candidate patches of ONE image the classifier sees, and how they were chosen.

    Patches with enough tissue, then enough dermis (UNet gating). An image is never dropped
    silently: without a classifiable patch it falls back to its `fallback_patches` most
    tissue-rich tiles (`tissue_fallback`); when gating would remove everything, to all its
    candidates (`gating_fallback`); without any tile it is `not_assessable`.
    `dermis_fraction` is only read where a patch is a candidate (NaN elsewhere is fine).
    """
    candidates, selection = candidate_patches(tissue_fraction, config)
    if not config.use_segmentation or dermis_fraction is None or not candidates.any():
        return candidates, selection
    dermis = np.where(candidates, np.asarray(dermis_fraction, float), -1.0)
    gated = candidates & (dermis >= config.min_dermis_fraction)
    if not gated.any():
        return candidates, selection if selection != OK else GATING_FALLBACK
    return gated, selection


class Preprocessor:
    """`PreprocessConfig` + the gating UNet (any callable: Keras or TFLite) as one step."""

    def __init__(self, config: PreprocessConfig, unet: Segmenter | None = None) -> None:
        self.config = config
        self.normalizer = stain.StainNormalizer.from_dict(config.normalizer)
        self.unet = unet

    # --- the parts, each usable alone (training runs them stage by stage) ---------------------

    def tissue(self, image: np.ndarray) -> np.ndarray:
        return tissue_mask(image, self.config.min_saturation, self.config.kernel)

    def tiles(self, image: np.ndarray) -> list[tiling.Tile]:
        """Grid tiles of the raw image with at least the fallback share of tissue."""
        return tiling.grid_tiles(
            self.tissue(image),
            self.config.patch_size,
            self.config.stride,
            self.config.lowest_tissue_fraction,
        )

    def cut(self, image: np.ndarray) -> tuple[np.ndarray, list[tiling.Tile]]:
        """Stain-normalised candidate patches and their tiles.

        The stain map is estimated on the whole image and applied to the crops only: the
        same pixels as normalising the image and cropping it, for a fraction of the work.
        """
        found = self.tiles(image)
        size = self.config.patch_size
        if not found:
            return np.zeros((0, size, size, 3), np.uint8), []
        raw = np.stack([tiling.crop(image, t, size) for t in found])
        return self.normalizer.pixel_transform(image)(raw), found

    def normalise(self, image: np.ndarray) -> np.ndarray:
        return self.normalizer.transform(image)

    def segment(self, patches: np.ndarray) -> np.ndarray:
        """UNet class labels per pixel at `unet_input_size` (N x s x s, uint8)."""
        if self.unet is None:
            raise ValueError("this preprocessor has no UNet")
        size = self.config.unet_input_size
        if len(patches) == 0:
            return np.zeros((0, size, size), np.uint8)
        scores = self.unet(tiling.resize_batch(np.asarray(patches), size))
        return np.asarray(scores).argmax(axis=-1).astype(np.uint8)

    def dermis_fraction(self, patches: np.ndarray) -> np.ndarray | None:
        """Share of each patch the UNet calls dermis; None when gating is off or no UNet."""
        if not self.config.use_segmentation or self.unet is None:
            return None
        return (self.segment(patches) == DERMIS).mean(axis=(1, 2))

    # --- the whole step ------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> ImagePatches:
        """Candidates only are cropped, normalised and gated (the rest would be thrown away):
        each kept patch has exactly the pixels `cut` gives training for the same tile."""
        found = self.tiles(image)
        kept = self.candidates(found)
        size = self.config.patch_size
        raw = (
            np.stack([tiling.crop(image, t, size) for t in kept])
            if kept
            else np.zeros((0, size, size, 3), np.uint8)
        )
        return self.from_candidates(raw, kept, self.normalizer.pixel_transform(image), len(found))

    def candidates(self, tiles: Sequence[tiling.Tile]) -> list[tiling.Tile]:
        """The tiles worth reading: those with enough tissue, or the fallback's best ones."""
        fractions = np.array([t.tissue_fraction for t in tiles], float)
        chosen, _ = candidate_patches(fractions, self.config)
        return [t for t, keep in zip(tiles, chosen, strict=True) if keep]

    def from_candidates(
        self,
        raw_patches: np.ndarray,
        tiles: Sequence[tiling.Tile],
        stain_map: stain.PixelTransform,
        n_tissue_tiles: int,
    ) -> ImagePatches:
        """The rest of the step for candidate patches already cut (`candidates`), e.g. a
        slide's tiles read lazily at the target resolution: `stain_map` comes from
        `normalizer.pixel_transform` on the slide's thumbnail or a sample of its tiles."""
        size = self.config.patch_size
        patches = (
            stain_map(np.asarray(raw_patches))
            if len(tiles)
            else np.zeros((0, size, size, 3), np.uint8)
        )
        dermis = self.dermis_fraction(patches) if len(tiles) else None
        # on the candidates alone, the tissue step picks them all again with the same status
        fractions = np.array([t.tissue_fraction for t in tiles], float)
        used, selection = choose_patches(fractions, dermis, self.config)
        return ImagePatches(patches, list(tiles), dermis, used, selection, n_tissue_tiles)

    def patches_for_classifier(
        self, image: np.ndarray, input_size: int
    ) -> tuple[np.ndarray, ImagePatches]:
        """The classified patches resized to a classifier's input, and the full record."""
        found = self(image)
        return tiling.resize_batch(found.used_patches, input_size), found


def segment_image(
    preprocessor: Preprocessor, image: np.ndarray, min_tissue_fraction: float = 0.05
) -> np.ndarray:
    """A whole-image UNet mask from the patch UNet: non-overlapping patch windows (edges
    padded), each normalised like training patches; windows the tiling calls glass are
    background, as in training."""
    size = preprocessor.config.patch_size
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % size), (0, -w % size), (0, 0)), mode="edge")
    every = tiling.grid_tiles(np.ones(padded.shape[:2], bool), size, size, 0.0)
    windows = np.stack([tiling.crop(padded, t, size) for t in every])
    normalised = preprocessor.normalizer.pixel_transform(image)(windows)
    labels = tiling.resize_batch(preprocessor.segment(normalised), size, cv2.INTER_NEAREST)
    tissue = preprocessor.tissue(np.ascontiguousarray(padded))
    mask = np.zeros(padded.shape[:2], np.uint8)
    for label, tile in zip(labels, every, strict=True):
        if tiling.crop(tissue, tile, size).mean() >= min_tissue_fraction:
            mask[tile.y : tile.y + size, tile.x : tile.x + size] = label
    return mask[:h, :w]


def selection_counts(selections: Sequence[str]) -> dict[str, int]:
    """How many images were assessed in each way (every selection listed, zeros included)."""
    values = list(selections)
    return {name: values.count(name) for name in SELECTIONS}
