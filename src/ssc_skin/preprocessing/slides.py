"""Whole-slide images through the one preprocessing step (`preprocessing.preprocess`).

A slide is never decoded whole, so `Preprocessor.__call__`/`cut` (which take an image) cannot
run on it; this module feeds the same `Preprocessor` from the slide instead:

- the stain map is `normalizer.pixel_transform` of a mosaic of up to `STAIN_SAMPLE_TILES`
  tissue tiles read at patch resolution, evenly spread over the slide (`stain_sample`): an
  image's map is estimated on pixels at patch resolution, and so is a slide's. It used to be
  the thumbnail, whose scale follows the slide's size (bounded pixel count), so the same
  tissue on a larger slide got another map;
- tiles are the thumbnail mask's grid cells (`slides.iter_tiles`) with at least the fallback
  share of tissue, as `Preprocessor.tiles` gives for an image;
- training (`cut_slide`) streams ALL those tiles, stain-normalised, batch by batch, as
  `Preprocessor.cut` does for an image; predict (`preprocess_slide`) reads only
  `Preprocessor.candidates(tiles)` and hands them to `Preprocessor.from_candidates`.

Tiles are `tiling.Tile(x, y, tissue_fraction)` in level-0 pixels; their level-0 side is kept
beside them (`SlideTiles.table`, column `size`), since a slide's patch covers more level-0
pixels than `patch_size`. No Kedro here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.imaging import stain, tiling
from ssc_skin.preprocessing.preprocess import ImagePatches, PreprocessConfig, Preprocessor
from ssc_skin.slides import tiles as slides
from ssc_skin.slides.metadata import slide_info
from ssc_skin.slides.readers import SlideReader, open_slide

STAIN_SAMPLE_TILES = 64  # tiles the stain map is estimated on (64 x 224 px ~ 10 MB at most)


@dataclass(frozen=True)
class SlideSettings:
    """How slides are cut: target resolution, thumbnail bound, read batch, fallback mpp."""

    target_mpp: float = 2.0
    fallback_mpp: float | None = None
    max_thumbnail_pixels: int = slides.MAX_THUMBNAIL_PIXELS
    cells_per_tile: int = slides.CELLS_PER_TILE
    batch_size: int = 256

    @classmethod
    def from_config(
        cls, config: PreprocessConfig, fallback_mpp: float | None = None
    ) -> SlideSettings:
        """From the training run's saved preprocessing (`PreprocessConfig.slide`): predict
        cuts slides exactly as training did."""
        settings = dict(config.slide)
        return cls.from_params(
            {
                "target_microns_per_pixel": settings.pop("target_microns_per_pixel", None),
                "slide": settings,
            },
            fallback_mpp,
        )

    @classmethod
    def from_params(
        cls, patches: Mapping[str, Any], fallback_mpp: float | None = None
    ) -> SlideSettings:
        """From the `patches` block (`target_microns_per_pixel`, `slide`) and
        `cohort.source.microns_per_pixel` (the fallback for slides without metadata)."""
        slide = patches.get("slide") or {}
        return cls(
            target_mpp=float(patches.get("target_microns_per_pixel") or 2.0),
            fallback_mpp=float(fallback_mpp) if fallback_mpp else None,
            max_thumbnail_pixels=int(
                slide.get("max_thumbnail_pixels", slides.MAX_THUMBNAIL_PIXELS)
            ),
            cells_per_tile=int(slide.get("cells_per_tile", slides.CELLS_PER_TILE)),
            batch_size=int(slide.get("batch_size", 256)),
        )


@dataclass
class SlideTiles:
    """A slide's tissue tiles (>= the fallback tissue share) and its thumbnail/mask/plan."""

    tissue: slides.SlideTissue
    table: pd.DataFrame  # slides.TILE_COLUMNS: x, y, size (level-0 px), tissue_fraction
    size: tuple[int, int]  # level-0 width, height

    @property
    def tiles(self) -> list[tiling.Tile]:
        return to_tiles(self.table)


@dataclass
class SlidePatches:
    """What predict needs of one slide: the preprocessing result and where each patch lies."""

    found: ImagePatches
    sizes: np.ndarray  # level-0 side of each patch in `found`
    tissue: slides.SlideTissue


def to_tiles(table: pd.DataFrame) -> list[tiling.Tile]:
    return [
        tiling.Tile(int(x), int(y), float(f))
        for x, y, f in zip(table["x"], table["y"], table["tissue_fraction"], strict=True)
    ]


def slide_tiles(
    path: str | os.PathLike[str],
    config: PreprocessConfig,
    settings: SlideSettings,
    manifest_mpp: float | None = None,
) -> SlideTiles:
    """Thumbnail, tissue, every tile with at least `config.lowest_tissue_fraction`, and the
    stain sample (`stain_sample`), with the slide opened once.

    The tile table is a few numbers per tile (not pixels), so it is built whole.
    """
    with open_slide(path) as slide:
        info = slide_info(slide, manifest_mpp, settings.fallback_mpp)
        plan = slides.plan_tiles(
            info,
            config.patch_size,
            settings.target_mpp,
            config.stride,
            settings.cells_per_tile,
            settings.max_thumbnail_pixels,
        )
        tissue = slides.detect_tissue(slide, info, plan, config.min_saturation)
        size = (info.width, info.height)
        bands = list(slides.iter_tiles(tissue.mask, plan, config.lowest_tissue_fraction, size))
        table = (
            pd.concat(bands, ignore_index=True)
            if bands
            else pd.DataFrame(columns=slides.TILE_COLUMNS)
        )
        tissue.stain_sample = stain_sample(
            slide, plan, table, config, batch_size=settings.batch_size
        )
    return SlideTiles(tissue, table, size)


def stain_sample(
    slide: SlideReader,
    plan: slides.TilePlan,
    table: pd.DataFrame,
    config: PreprocessConfig,
    count: int = STAIN_SAMPLE_TILES,
    batch_size: int = 256,
) -> np.ndarray:
    """Up to `count` tiles, evenly spread in tile order over those a classifier would take
    (else all), read at patch resolution like every patch (in `batch_size` batches) and laid
    side by side on glass: at most `count` patches in memory."""
    classifiable = table[table["tissue_fraction"] >= config.min_tissue_fraction]
    pool = classifiable if len(classifiable) else table
    size = plan.patch_size
    if pool.empty:
        return np.full((size, size, 3), 255, np.uint8)
    picked = np.unique(np.linspace(0, len(pool) - 1, min(count, len(pool))).round().astype(int))
    chosen = pool.iloc[picked].reset_index(drop=True)
    columns = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    mosaic = np.full((rows * size, columns * size, 3), 255, np.uint8)
    index = 0
    for batch in slides.iter_patches(slide, plan, iter([chosen]), batch_size):
        for patch in batch.images:
            row, column = divmod(index, columns)
            mosaic[row * size : (row + 1) * size, column * size : (column + 1) * size] = patch
            index += 1
    return mosaic


def stain_map(preprocessor: Preprocessor, tissue: slides.SlideTissue) -> stain.PixelTransform:
    """The slide's stain map, estimated on its stain sample: tissue tiles at patch
    resolution (`slide_tiles` reads it), whatever the slide's size."""
    if tissue.stain_sample is None:
        raise ValueError("the slide's stain sample was not read: use slide_tiles()")
    return preprocessor.normalizer.pixel_transform(tissue.stain_sample)


def cut_slide(
    path: str | os.PathLike[str],
    preprocessor: Preprocessor,
    found: SlideTiles,
    batch_size: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray, pd.DataFrame]]:
    """`Preprocessor.cut` for a slide, streamed: (normalised, raw, tiles) per read batch.

    Every tile with at least the fallback tissue share (the UNet learns from border and fat
    patches), stain-normalised with the slide's map (`stain_map`); memory is one batch.
    """
    if found.table.empty:
        return
    transform = stain_map(preprocessor, found.tissue)
    with open_slide(path) as slide:
        for batch in slides.iter_patches(slide, found.tissue.plan, iter([found.table]), batch_size):
            yield transform(batch.images), batch.images, batch.tiles


def preprocess_slide(
    path: str | os.PathLike[str],
    preprocessor: Preprocessor,
    settings: SlideSettings,
    manifest_mpp: float | None = None,
) -> SlidePatches:
    """`Preprocessor.__call__` for a slide: only candidate tiles are read, then
    `from_candidates` (stain map, UNet gating, selection) exactly as for an image."""
    found = slide_tiles(path, preprocessor.config, settings, manifest_mpp)
    chosen = preprocessor.candidates(found.tiles)
    keep = {(t.x, t.y) for t in chosen}
    wanted = found.table[
        [(int(x), int(y)) in keep for x, y in zip(found.table["x"], found.table["y"], strict=True)]
    ]
    size = preprocessor.config.patch_size
    raw, read = [], []
    if len(wanted):
        with open_slide(path) as slide:
            for batch in slides.iter_patches(
                slide, found.tissue.plan, iter([wanted]), settings.batch_size
            ):
                raw.append(batch.images)
                read.append(batch.tiles)
    table = (
        pd.concat(read, ignore_index=True) if read else pd.DataFrame(columns=slides.TILE_COLUMNS)
    )
    patches = np.concatenate(raw) if raw else np.zeros((0, size, size, 3), np.uint8)
    result = preprocessor.from_candidates(
        patches, to_tiles(table), stain_map(preprocessor, found.tissue), len(found.table)
    )
    return SlidePatches(result, table["size"].to_numpy(np.int64), found.tissue)


def tile_table(
    result: SlidePatches, probabilities: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> pd.DataFrame:
    """The classified tiles of a slide with x, y, size, tissue_fraction, probability_<class>:
    what `slide_outputs.probability_heatmap` and `qupath_geojson` draw."""
    used = result.found.used
    tiles = result.found.used_tiles
    table = pd.DataFrame(
        {
            "x": [t.x for t in tiles],
            "y": [t.y for t in tiles],
            "size": result.sizes[used],
            "tissue_fraction": [t.tissue_fraction for t in tiles],
        }
    )
    for index, name in enumerate(class_names):
        table[f"probability_{name}"] = (
            np.asarray(probabilities, np.float64)[:, index] if len(tiles) else np.zeros(0)
        )
    return table
