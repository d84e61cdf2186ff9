"""Slide checks before any training: readable, known mpp, tissue, intact tiles; no Kedro here.

Problems raise the `ImageProblem` of the cohort checks with the images' vocabulary
(`file_missing`, `empty_file`, `unreadable`, `truncated`, `unsupported_format`, `too_large`,
`no_mpp`, `too_small`, `too_coarse`, `no_tissue`), so the cohort stage quarantines slides and
images alike. Patient ids are private: log lines carry counts only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.cohort.checks import VALID_COLUMNS, Check, ImageProblem, check_items
from ssc_skin.imaging.tissue import MIN_SATURATION
from ssc_skin.slides.metadata import positive_float, slide_info
from ssc_skin.slides.readers import SlideReader, open_slide, read_region
from ssc_skin.slides.tiles import (
    CELLS_PER_TILE,
    MAX_THUMBNAIL_PIXELS,
    SlideTissue,
    TilePlan,
    count_tiles,
    detect_tissue,
    iter_tiles,
    plan_tiles,
)

SLIDE_VALID_COLUMNS = [
    *VALID_COLUMNS,
    "microns_per_pixel",
    "mpp_source",
    "vendor",
    "level_count",
    "read_level",
    "read_downsample",
    "tile_size",
    "tiles",
]
_NUMERIC = {
    "height": "int64",
    "width": "int64",
    "tissue_fraction": "float64",
    "microns_per_pixel": "float64",
    "level_count": "int64",
    "read_level": "int64",
    "read_downsample": "float64",
    "tile_size": "int64",
    "tiles": "int64",
}


def validate_slide(
    path: str | os.PathLike[str],
    patch_size: int,
    target_mpp: float,
    *,
    stride: int | None = None,
    min_tissue_fraction: float = 0.5,
    min_saturation: int = MIN_SATURATION,
    manifest_mpp: float | None = None,
    fallback_mpp: float | None = None,
    sample_tiles: int = 4,
    cells_per_tile: int = CELLS_PER_TILE,
    max_thumbnail_pixels: int = MAX_THUMBNAIL_PIXELS,
) -> tuple[dict[str, Any], SlideTissue]:
    """Check one slide before any training: readable, known mpp, tissue, intact tiles.

    Reads the thumbnail (the whole coarse end of the pyramid) and `sample_tiles` tissue tiles
    spread over the slide at level 0 and at the read level (the fine end), so a file cut
    short or a corrupt tile shows here rather than mid-run. Returns the slide's facts and its
    tissue (for drawing results); raises ImageProblem.
    """
    with open_slide(path) as slide:
        info = slide_info(slide, manifest_mpp, fallback_mpp)
        plan = plan_tiles(
            info, patch_size, target_mpp, stride, cells_per_tile, max_thumbnail_pixels
        )
        tissue = detect_tissue(slide, info, plan, min_saturation)
        size = (info.width, info.height)
        count = count_tiles(tissue.mask, plan, min_tissue_fraction, size)
        fraction = float(tissue.mask.mean()) if tissue.mask.size else 0.0
        if count == 0:
            raise ImageProblem(
                "no_tissue",
                f"no tissue: no {patch_size} px tile at "
                f"{target_mpp:g} um/px is {min_tissue_fraction:.0%}"
                f" tissue ({fraction:.1%} of the slide is tissue)",
            )
        _sample_reads(slide, plan, tissue.mask, min_tissue_fraction, size, count, sample_tiles)
    facts = {
        "height": info.height,
        "width": info.width,
        "tissue_fraction": fraction,
        "content_hash": info.quickhash,
        "microns_per_pixel": info.mpp,
        "mpp_source": info.mpp_source,
        "vendor": info.vendor,
        "level_count": len(info.level_downsamples),
        "read_level": plan.level,
        "read_downsample": plan.level_downsample,
        "tile_size": round(plan.tile_size0),
        "tiles": count,
        "notes": list(tissue.notes),
    }
    return facts, tissue


def _sample_reads(
    slide: SlideReader,
    plan: TilePlan,
    mask: np.ndarray,
    min_tissue_fraction: float,
    size: tuple[int, int],
    count: int,
    samples: int,
) -> None:
    """Decode a few tissue tiles, evenly spread in tile order, at level 0 and the read level."""
    wanted = set(np.linspace(0, count - 1, min(samples, count)).round().astype(int).tolist())
    seen = 0
    side = max(1, round(plan.tile_size0))
    for band in iter_tiles(mask, plan, min_tissue_fraction, size):
        for x, y in zip(band["x"], band["y"], strict=True):
            if seen in wanted:
                read_region(slide, x, y, 0, min(side, 512), min(side, 512))
                read_region(slide, x, y, plan.level, plan.region_size, plan.region_size)
            seen += 1


def validate_slides(
    records: pd.DataFrame,
    *,
    label_map: Mapping[str, str],
    allowed_labels: list[str] | tuple[str, ...],
    patch_size: int,
    target_mpp: float,
    min_tissue_fraction: float = 0.5,
    min_saturation: int = MIN_SATURATION,
    stride: int | None = None,
    fallback_mpp: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort's check runner (`cohort.checks.check_items`) with one slide check:
    (valid slides, quarantined files with reasons).

    Same label, patient and split checks and the same quarantine table as images; per slide
    the checks of `validate_slide`; duplicates by the reader's quickhash (a hash of the
    slide's metadata and smallest level), so the same slide under two names is caught without
    decoding it. `min_tissue_fraction` is per tile: a slide is mostly glass, so the image rule
    (a share of the whole image) does not apply.
    """

    def slide(entry: dict[str, Any]) -> None:
        facts, _ = validate_slide(
            entry["image_path"],
            patch_size,
            target_mpp,
            stride=stride,
            min_tissue_fraction=min_tissue_fraction,
            min_saturation=min_saturation,
            manifest_mpp=positive_float(entry.get("microns_per_pixel")),
            fallback_mpp=fallback_mpp,
        )
        entry.update(facts)

    valid, quarantine = check_items(
        records,
        [Check("slide", slide)],
        label_map=label_map,
        allowed_labels=allowed_labels,
        columns=SLIDE_VALID_COLUMNS,
        progress=progress,
        what="slides",
    )
    return valid.astype(_NUMERIC), quarantine
