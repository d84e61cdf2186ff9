"""Whole-slide images, one import: the public names of the slide modules (no Kedro here).

One concept per module (after TIAToolbox's `wsicore`):

- `slides.readers`: opening a slide (`open_slide`, `is_slide`): OpenSlide, and tifffile for
  the TIFF pyramids OpenSlide sees as one level (OME-TIFF, sub-IFD pyramids);
- `slides.metadata`: size, pyramid and microns per pixel (`slide_info`, `slide_mpp`);
- `slides.tiles`: read level, thumbnail and tissue, tiles, lazy patch batches;
- `slides.checks`: the checks of one slide and of a slide cohort (`validate_slides`);
- `slides.discovery`: `slide_folder` and `slide_manifest` layouts, multi-file slides.

New code may import those modules directly; this one keeps the names callers already use.
"""

from __future__ import annotations

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.cohort.config import CohortConfigError
from ssc_skin.slides.checks import SLIDE_VALID_COLUMNS, validate_slide, validate_slides
from ssc_skin.slides.discovery import (
    MANIFEST_SLIDE_OPTIONAL,
    SLIDE_RECORD_COLUMNS,
    discover_slide_folder,
    discover_slides,
    read_slide_manifest,
)
from ssc_skin.slides.metadata import PLAUSIBLE_MPP, SlideInfo, ome_mpp, slide_info, slide_mpp
from ssc_skin.slides.readers import (
    SLIDE_EXTENSIONS,
    OpenSlideReader,
    SlideReader,
    TiffPyramidReader,
    is_slide,
    open_slide,
    read_region,
    tiff_truncation,
    to_rgb,
)
from ssc_skin.slides.tiles import (
    CELLS_PER_TILE,
    GLASS_FRAME,
    MAX_THUMBNAIL_PIXELS,
    MIN_OVERSAMPLE,
    READ_BLOCK,
    TILE_COLUMNS,
    PatchBatch,
    SlideTissue,
    TilePlan,
    best_level,
    count_tiles,
    detect_tissue,
    iter_patches,
    iter_slide_batches,
    iter_tiles,
    plan_tiles,
    read_thumbnail,
    read_tissue,
    thumbnail_tissue,
)

is_slide_file = is_slide  # the name slides.predict calls

__all__ = [
    "CELLS_PER_TILE",
    "GLASS_FRAME",
    "MANIFEST_SLIDE_OPTIONAL",
    "MAX_THUMBNAIL_PIXELS",
    "MIN_OVERSAMPLE",
    "PLAUSIBLE_MPP",
    "READ_BLOCK",
    "SLIDE_EXTENSIONS",
    "SLIDE_RECORD_COLUMNS",
    "SLIDE_VALID_COLUMNS",
    "TILE_COLUMNS",
    "CohortConfigError",
    "ImageProblem",
    "OpenSlideReader",
    "PatchBatch",
    "SlideInfo",
    "SlideReader",
    "SlideTissue",
    "TiffPyramidReader",
    "TilePlan",
    "best_level",
    "count_tiles",
    "detect_tissue",
    "discover_slide_folder",
    "discover_slides",
    "is_slide",
    "is_slide_file",
    "iter_patches",
    "iter_slide_batches",
    "iter_tiles",
    "ome_mpp",
    "open_slide",
    "plan_tiles",
    "read_region",
    "read_slide_manifest",
    "read_thumbnail",
    "read_tissue",
    "slide_info",
    "slide_mpp",
    "thumbnail_tissue",
    "tiff_truncation",
    "to_rgb",
    "validate_slide",
    "validate_slides",
]
