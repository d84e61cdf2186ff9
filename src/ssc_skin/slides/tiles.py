"""Cutting a slide: pick the read level, find tissue on a thumbnail, tile, read patches.

Nothing here decodes a whole slide or a whole level:

- **Tiles** are `patch_size` pixels at `target_mpp`, read from the coarsest pyramid level at
  least `MIN_OVERSAMPLE` (2x) finer than the target (level 0 when none is), then shrunk
  with INTER_AREA. Every slide is resampled the same way, whatever its scan resolution
  and pyramid: a level that happens to sit at the target is the scanner's own downsampling
  (its filter, its JPEG pass), and patches read straight from it differ from those
  area-averaged from a finer level (the same tissue scanned at 0.25 and 0.5 um/px flipped
  14% of tile labels). A slide coarser than the target by more than `max_upsample` is
  quarantined (`too_coarse`).
- **Tissue** is found by `imaging.tissue.tissue_mask` on a thumbnail whose pixel count is
  bounded (`max_thumbnail_pixels`), assembled from reads of at most `READ_BLOCK` level
  pixels a side (a slide with one level is shrunk block by block, never read whole); tiles
  are the grid cells of that mask (`imaging.tiling.grid_tiles`, one band of rows at a time)
  with enough tissue.
- **Patches** come out lazily, a batch at a time, read a block of neighbouring tiles per
  call: memory is one thumbnail, one block of at most `READ_BLOCK`² level pixels (plus the
  reader's own cache) and one batch, whatever the slide size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.imaging.tiling import grid_tiles
from ssc_skin.imaging.tissue import MIN_SATURATION, tissue_mask
from ssc_skin.slides.metadata import SlideInfo, slide_info
from ssc_skin.slides.readers import SlideReader, open_slide, read_region

TILE_COLUMNS = ["x", "y", "size", "tissue_fraction"]
# Tissue is found on a thumbnail of at most this many pixels, each tile at most 16 x 16 of
# them: a bounded thumbnail is what keeps memory flat as slides grow (1 MP is ~20 um/px on a
# 20 x 20 mm slide, as fine as tissue-vs-glass needs); raise it for finer tile fractions.
CELLS_PER_TILE = 16
MAX_THUMBNAIL_PIXELS = 1_000_000
READ_BLOCK = 1024  # level pixels per side of one read (patches and thumbnail)
GLASS_FRAME = 32  # thumbnail pixels of glass around the thumbnail during tissue detection
MIN_OVERSAMPLE = 2.0  # patches are area-averaged from a level at least this much finer


@dataclass(frozen=True)
class TilePlan:
    """How a slide is cut: the level read, tile geometry in level-0 pixels, the thumbnail."""

    patch_size: int
    target_mpp: float
    level: int  # the pyramid level patches are read from
    level_downsample: float
    tile_size0: float  # level-0 pixels per patch side (may be fractional)
    region_size: int  # level pixels read per patch, resized to patch_size
    thumbnail_downsample: float  # level-0 pixels per thumbnail pixel
    thumbnail_shape: tuple[int, int]  # (height, width)
    cells: int  # thumbnail pixels per tile side
    cell_stride: int  # thumbnail pixels between neighbouring tiles
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PatchBatch:
    """Raw RGB patches of one slide and where each came from (level-0 pixels)."""

    images: np.ndarray  # N x patch_size x patch_size x 3, uint8
    tiles: pd.DataFrame  # TILE_COLUMNS: x, y, size (level-0 px), tissue_fraction


@dataclass
class SlideTissue:
    """The thumbnail, its tissue mask and the tile plan: enough to tile and to draw results."""

    plan: TilePlan
    thumbnail: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W bool
    notes: list[str] = field(default_factory=list)
    # tissue tiles at patch resolution, side by side: what the slide's stain map is estimated
    # on (filled by `preprocessing.slides.slide_tiles`; None when not read)
    stain_sample: np.ndarray | None = None


# --- planning ---


def best_level(
    downsamples: tuple[float, ...] | list[float],
    mpp: float,
    target_mpp: float,
    tolerance: float = 0.02,
    oversample: float | None = None,
) -> int:
    """The coarsest level at least `oversample` (default MIN_OVERSAMPLE) times finer than the target (level mpp *
    oversample <= target); with none that fine, level 0.

    `tolerance` lets a 0.2525 um/px scan count as 0.25. Reading finer than the target and
    shrinking with INTER_AREA makes every slide's patches the same box average of its finest
    data, instead of the scanner's downsampling where a level happens to sit at the target.
    """
    limit = target_mpp * (1 + tolerance) / (MIN_OVERSAMPLE if oversample is None else oversample)
    fine_enough = [i for i, d in enumerate(downsamples) if mpp * d <= limit]
    return max(fine_enough, key=lambda i: downsamples[i]) if fine_enough else 0


def plan_tiles(
    info: SlideInfo,
    patch_size: int,
    target_mpp: float,
    stride: int | None = None,
    cells_per_tile: int = CELLS_PER_TILE,
    max_thumbnail_pixels: int = MAX_THUMBNAIL_PIXELS,
    max_upsample: float = 1.25,
) -> TilePlan:
    """Tile geometry and the thumbnail size for tissue detection.

    A tile is `cells` x `cells` thumbnail pixels: as many as `cells_per_tile` allows, fewer
    when the thumbnail would exceed `max_thumbnail_pixels` (a huge slide), at least one.
    `cells` is a multiple of patch/gcd(patch, stride), so the stride is whole thumbnail
    pixels and `grid_tiles` can run on the thumbnail mask.
    """
    stride = patch_size if stride is None else stride
    if patch_size < 1 or stride < 1 or target_mpp <= 0 or cells_per_tile < 1:
        raise ValueError(
            "need patch_size, stride, cells_per_tile >= 1 and target_mpp > 0; got "
            f"{patch_size}, {stride}, {cells_per_tile}, {target_mpp}"
        )
    notes = []
    if info.mpp > target_mpp * max_upsample:
        raise ImageProblem(
            "too_coarse",
            f"slide scanned at {info.mpp:.4g} um/px, coarser than "
            f"the target {target_mpp:g} um/px (patches.target_"
            "microns_per_pixel): its patches would be blurred "
            "enlargements",
        )
    if info.mpp > target_mpp * 1.02:
        notes.append(
            f"slide {info.mpp:.4g} um/px slightly coarser than target "
            f"{target_mpp:g}: patches enlarged"
        )
    level = best_level(info.level_downsamples, info.mpp, target_mpp)
    downsample = info.level_downsamples[level]
    tile0 = patch_size * target_mpp / info.mpp
    if tile0 > min(info.width, info.height):
        raise ImageProblem(
            "too_small",
            f"slide {info.width}x{info.height} px is smaller than one "
            f"patch ({tile0:.0f} level-0 px at {target_mpp:g} um/px)",
        )
    step = patch_size // math.gcd(patch_size, stride)  # cells must be a multiple of this
    area_tiles = info.width * info.height / (tile0 * tile0)
    cells_budget = math.sqrt(max_thumbnail_pixels / area_tiles)
    cells = max(step, int(min(cells_per_tile, cells_budget) // step) * step)
    thumb_downsample = tile0 / cells
    shape = (int(info.height // thumb_downsample), int(info.width // thumb_downsample))
    return TilePlan(
        patch_size=patch_size,
        target_mpp=target_mpp,
        level=level,
        level_downsample=downsample,
        tile_size0=tile0,
        region_size=max(1, round(tile0 / downsample)),
        thumbnail_downsample=thumb_downsample,
        thumbnail_shape=shape,
        cells=cells,
        cell_stride=cells * stride // patch_size,
        notes=tuple(notes),
    )


# --- reading ---


def read_thumbnail(
    slide: SlideReader,
    info: SlideInfo,
    downsample: float,
    shape: tuple[int, int],
    block: int = READ_BLOCK,
) -> np.ndarray:
    """The slide at `downsample` (level-0 px per pixel), assembled block by block.

    Each block reads at most `block` x `block` pixels of the best level for the downsample
    and shrinks them with INTER_AREA, so a pyramid with few levels (or one) never puts a
    whole level, nor a large part of it, in memory.
    """
    level = slide.get_best_level_for_downsample(downsample)
    level_downsample = info.level_downsamples[level]
    step = max(1, int(block * level_downsample / downsample))  # thumbnail px per read
    height, width = shape
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, step):
        for left in range(0, width, step):
            h, w = min(step, height - top), min(step, width - left)
            x0, y0 = left * downsample, top * downsample
            rw = max(1, math.ceil(w * downsample / level_downsample))
            rh = max(1, math.ceil(h * downsample / level_downsample))
            region = read_region(slide, round(x0), round(y0), level, rw, rh)
            out[top : top + h, left : left + w] = (
                region
                if region.shape[:2] == (h, w)
                else cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
            )
    return out


def detect_tissue(
    slide: SlideReader, info: SlideInfo, plan: TilePlan, min_saturation: int = MIN_SATURATION
) -> SlideTissue:
    """Thumbnail and tissue mask (`tissue_mask`, the same function images use)."""
    thumbnail = read_thumbnail(slide, info, plan.thumbnail_downsample, plan.thumbnail_shape)
    return SlideTissue(
        plan, thumbnail, thumbnail_tissue(thumbnail, min_saturation), [*info.notes, *plan.notes]
    )


def thumbnail_tissue(thumbnail: np.ndarray, min_saturation: int = MIN_SATURATION) -> np.ndarray:
    """`tissue_mask` of a thumbnail framed in glass.

    Beyond a slide's edge there is glass, and morphology on an unframed image treats the
    border as tissue (a closing then grows tissue from the edge into a thumbnail's glass).
    """
    pad = GLASS_FRAME
    framed = cv2.copyMakeBorder(
        thumbnail, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(255, 255, 255)
    )
    return np.ascontiguousarray(tissue_mask(framed, min_saturation)[pad:-pad, pad:-pad])


def iter_tiles(
    mask: np.ndarray,
    plan: TilePlan,
    min_tissue_fraction: float,
    slide_size: tuple[int, int] | None = None,
    band_tiles: int = 64,
) -> Iterator[pd.DataFrame]:
    """Tissue tiles as level-0 (x, y, size, tissue_fraction), one band of tile rows at a time.

    `grid_tiles` runs on `band_tiles` rows of the thumbnail mask at a time, so the tile list
    of a huge slide is never built whole.
    """
    cells, stride = plan.cells, plan.cell_stride
    height = mask.shape[0]
    width0, height0 = slide_size or (math.inf, math.inf)
    size0 = round(plan.tile_size0)
    for first in range(0, max(0, height - cells + 1), band_tiles * stride):
        band = mask[first : min(height, first + (band_tiles - 1) * stride + cells)]
        tiles = [
            t
            for t in grid_tiles(band, cells, stride, min_tissue_fraction)
            if t.y < band_tiles * stride
        ]
        if not tiles:
            continue
        xs = np.array([round(t.x * plan.thumbnail_downsample) for t in tiles], np.int64)
        ys = np.array([round((t.y + first) * plan.thumbnail_downsample) for t in tiles], np.int64)
        inside = (xs + size0 <= width0) & (ys + size0 <= height0)
        yield pd.DataFrame(
            {
                "x": xs[inside],
                "y": ys[inside],
                "size": np.full(int(inside.sum()), size0, np.int64),
                "tissue_fraction": np.array([t.tissue_fraction for t in tiles])[inside],
            },
            columns=TILE_COLUMNS,
        )


def count_tiles(
    mask: np.ndarray,
    plan: TilePlan,
    min_tissue_fraction: float,
    slide_size: tuple[int, int] | None = None,
) -> int:
    return sum(len(band) for band in iter_tiles(mask, plan, min_tissue_fraction, slide_size))


def iter_patches(
    slide: SlideReader,
    plan: TilePlan,
    tiles: Iterator[pd.DataFrame],
    batch_size: int = 256,
    block: int = READ_BLOCK,
) -> Iterator[PatchBatch]:
    """Patches of the given tiles, `batch_size` at a time (the last batch may be smaller).

    Neighbouring tiles of a band share one OpenSlide read of at most `block` level pixels per
    side; each patch is cut from it and resized to `patch_size` (INTER_AREA).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    images: list[np.ndarray] = []
    rows: list[pd.DataFrame] = []
    for band in tiles:
        for chunk in _blocks(band, plan, block):
            images.extend(_read_block(slide, plan, chunk))
            rows.append(chunk)
            if len(images) >= batch_size:
                table = pd.concat(rows, ignore_index=True)
                while len(images) >= batch_size:
                    yield PatchBatch(
                        np.stack(images[:batch_size]),
                        table.iloc[:batch_size].reset_index(drop=True),
                    )
                    images, table = images[batch_size:], table.iloc[batch_size:]
                rows = [table]
    if images:
        yield PatchBatch(np.stack(images), pd.concat(rows, ignore_index=True))


def _blocks(band: pd.DataFrame, plan: TilePlan, block: int) -> Iterator[pd.DataFrame]:
    """Tiles of a band grouped so that each group fits one read of `block` level pixels."""
    span0 = block * plan.level_downsample
    band = band.sort_values(["y", "x"], kind="stable").reset_index(drop=True)
    rows = ((band["y"] - band["y"].min()) // span0).to_numpy()
    columns = (band["x"] // span0).to_numpy()
    for row in np.unique(rows):
        for column in np.unique(columns[rows == row]):
            yield band[(rows == row) & (columns == column)].reset_index(drop=True)


def _read_block(slide: SlideReader, plan: TilePlan, tiles: pd.DataFrame) -> list[np.ndarray]:
    """One region covering `tiles` at the plan's level, cut into resized patches."""
    downsample, size = plan.level_downsample, plan.region_size
    x0, y0 = int(tiles["x"].min()), int(tiles["y"].min())
    width = math.ceil((int(tiles["x"].max()) + plan.tile_size0 - x0) / downsample) + 1
    height = math.ceil((int(tiles["y"].max()) + plan.tile_size0 - y0) / downsample) + 1
    region = read_region(slide, x0, y0, plan.level, width, height)
    patches = []
    for x, y in zip(tiles["x"].to_numpy(), tiles["y"].to_numpy(), strict=True):
        left, top = round((x - x0) / downsample), round((y - y0) / downsample)
        patch = region[top : top + size, left : left + size]
        if size != plan.patch_size:
            patch = cv2.resize(
                patch, (plan.patch_size, plan.patch_size), interpolation=cv2.INTER_AREA
            )
        patches.append(np.ascontiguousarray(patch))
    return patches


def iter_slide_batches(
    path: str | os.PathLike[str],
    patch_size: int,
    target_mpp: float,
    *,
    stride: int | None = None,
    min_tissue_fraction: float = 0.5,
    min_saturation: int = MIN_SATURATION,
    batch_size: int = 256,
    manifest_mpp: float | None = None,
    fallback_mpp: float | None = None,
    cells_per_tile: int = CELLS_PER_TILE,
    max_thumbnail_pixels: int = MAX_THUMBNAIL_PIXELS,
) -> Iterator[PatchBatch]:
    """Every tissue patch of one slide as raw RGB batches with their level-0 tiles.

    The one entry point for training, predict and serving: open, plan, detect tissue, tile,
    read. Raises ImageProblem (before the first batch, or mid-slide on a bad tile).
    """
    with open_slide(path) as slide:
        info = slide_info(slide, manifest_mpp, fallback_mpp)
        plan = plan_tiles(
            info, patch_size, target_mpp, stride, cells_per_tile, max_thumbnail_pixels
        )
        tissue = detect_tissue(slide, info, plan, min_saturation)
        mask = tissue.mask
        del tissue  # the thumbnail is not needed while reading patches
        tiles = iter_tiles(mask, plan, min_tissue_fraction, (info.width, info.height))
        yield from iter_patches(slide, plan, tiles, batch_size)


def read_tissue(
    path: str | os.PathLike[str],
    patch_size: int,
    target_mpp: float,
    *,
    stride: int | None = None,
    min_saturation: int = MIN_SATURATION,
    manifest_mpp: float | None = None,
    fallback_mpp: float | None = None,
    cells_per_tile: int = CELLS_PER_TILE,
    max_thumbnail_pixels: int = MAX_THUMBNAIL_PIXELS,
) -> SlideTissue:
    """Thumbnail, tissue mask and tile plan of a slide already validated (no sample reads):
    what a cohort image stands in for (colour baseline, gallery, stain fit) and results draw on."""
    with open_slide(path) as slide:
        info = slide_info(slide, manifest_mpp, fallback_mpp)
        plan = plan_tiles(
            info, patch_size, target_mpp, stride, cells_per_tile, max_thumbnail_pixels
        )
        return detect_tissue(slide, info, plan, min_saturation)
