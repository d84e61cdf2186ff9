"""Whole-slide images as a cohort source: find, check, tile and read slides (no Kedro here).

Slides are gigapixel pyramids, so nothing here ever decodes a whole slide:

- **Reading** goes through OpenSlide (`openslide-python` + the `openslide-bin` wheel, no
  system library), which reads Aperio .svs, Hamamatsu .ndpi/.vms/.vmu, MIRAX .mrxs, Leica
  .scn, Philips TIFF, Sakura .svslide, Ventana .bif, DICOM WSI and generic tiled TIFF.
  tiffslide was not chosen: it reads only the TIFF family (no MIRAX, Hamamatsu VMS or DICOM)
  and would be a second reader to keep in step.
- **Microns per pixel** come from the slide's metadata (`openslide.mpp-x/-y`, which OpenSlide
  fills from the vendor's fields or the TIFF resolution tags, else an OME-TIFF's
  `PhysicalSizeX/Y`, which OpenSlide does not read), then from the manifest row,
  then from the configured fallback; with none of them the slide is quarantined (`no_mpp`).
  A resolution of a screen or a scanner of paper (e.g. 72 dpi, 352 um/px) is not a
  microscope's and counts as missing.
- **Tiles** are `patch_size` pixels at `target_mpp`, read from the coarsest pyramid level
  still at least that fine (mpp <= target), then resized with INTER_AREA. A slide coarser
  than the target by more than `max_upsample` is quarantined (`too_coarse`).
- **Tissue** is found by `imaging.tissue.tissue_mask` on a thumbnail whose pixel count is
  bounded (`max_thumbnail_pixels`), and tiles are the grid cells of that mask
  (`imaging.tiling.grid_tiles`, one band of rows at a time) with enough tissue.
- **Patches** come out lazily, a batch at a time, read a block of neighbouring tiles per
  OpenSlide call: memory is one thumbnail, one block and one batch, whatever the slide size.

Problems raise the `ImageProblem` of `ingest` with the same check vocabulary (`file_missing`,
`empty_file`, `unreadable`, `truncated`, `unsupported_format`, `no_mpp`, `too_small`,
`too_coarse`, `no_tissue`), so the cohort stage quarantines slides and images alike.
Patient ids are private: log lines carry counts only.
"""

from __future__ import annotations

import configparser
import contextlib
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openslide  # finds the openslide-bin wheel's library by itself (openslide-python >= 1.4)
import pandas as pd
import tifffile

from ssc_skin.cohort.ingest import (
    _OUTSIDE_ROOT,
    DEFAULT_PATIENT_ID_REGEX,
    MANIFEST_REQUIRED,
    QUARANTINE_COLUMNS,
    RECORD_COLUMNS,
    VALID_COLUMNS,
    CohortConfigError,
    ImageProblem,
    _check_file,
    _check_metadata,
    _flag_duplicates,
    _flag_patient_conflicts,
    _frame,
    _is_junk,
    _log_summary,
    _record,
    _report_progress,
    _resolve,
    _text,
    _walk,
    check_labels,
    compile_patient_regex,
)
from ssc_skin.constants import SPLITS
from ssc_skin.imaging.tiling import grid_tiles
from ssc_skin.imaging.tissue import tissue_mask

logger = logging.getLogger(__name__)

# What OpenSlide opens. A .mrxs has a data folder of the same name beside it; a .vms lists
# its image files; a DICOM slide is a folder of .dcm files (one per level), opened by any.
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm"}
)
SLIDE_RECORD_COLUMNS = [*RECORD_COLUMNS, "microns_per_pixel"]
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
TILE_COLUMNS = ["x", "y", "size", "tissue_fraction"]
MANIFEST_SLIDE_OPTIONAL = ("split", "microns_per_pixel")
# A microscope scans at 0.1-10 um/px; a TIFF's default 72 dpi (352 um/px) is not one.
PLAUSIBLE_MPP = (0.05, 20.0)
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
# Tissue is found on a thumbnail of at most this many pixels, each tile at most 16 x 16 of
# them: a bounded thumbnail is what keeps memory flat as slides grow (1 MP is ~20 um/px on a
# 20 x 20 mm slide, as fine as tissue-vs-glass needs); raise it for finer tile fractions.
CELLS_PER_TILE = 16
MAX_THUMBNAIL_PIXELS = 1_000_000
READ_BLOCK = 1024  # level pixels per side of one OpenSlide read while cutting patches
GLASS_FRAME = 32  # thumbnail pixels of glass around the thumbnail during tissue detection
_PATH = re.compile(
    r"(?:[A-Za-z]:)?(?:[\\/][^\s:;,()'\"]+)+|[^\s:;,()'\"]+\.(?:svs|tiff?|ndpi|vms|vmu|"
    r"mrxs|scn|bif|svslide|dcm|dat|ini)\b",
    re.IGNORECASE,
)
_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>")
_XML_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_OME_UNITS = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class SlideInfo:
    """What one opened slide is: level-0 size, pyramid and resolution."""

    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    mpp_source: str  # metadata | manifest | fallback
    vendor: str | None
    quickhash: str | None
    notes: tuple[str, ...] = ()


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


# --- opening -----------------------------------------------------------------------------------


@contextlib.contextmanager
def open_slide(path: str | os.PathLike[str]) -> Iterator[openslide.OpenSlide]:
    """An OpenSlide handle, or an ImageProblem that says why the file is not a usable slide."""
    path = Path(path)
    _check_file(path)
    truncation = tiff_truncation(path)
    if truncation:
        raise ImageProblem("truncated", truncation)
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as error:
        raise ImageProblem(
            "unsupported_format",
            f"not a whole-slide image OpenSlide reads ({path.suffix or 'no '}"
            " extension); a plain untiled image belongs in an image cohort",
        ) from error
    except PermissionError as error:
        raise ImageProblem("unreadable", f"cannot read file ({error.strerror})") from error
    except (openslide.OpenSlideError, OSError) as error:
        raise _read_problem(error, "opening") from error
    try:
        yield slide
    finally:
        slide.close()


def _read_problem(error: Exception, doing: str) -> ImageProblem:
    """OpenSlide's message, sorted into `truncated` or `unreadable`.

    OpenSlide names the file in its messages; the path (which may hold a patient id) is cut
    out, since quarantine reasons are shown and logged.
    """
    message = _PATH.sub("<file>", str(error))
    lowered = message.lower()
    if any(
        word in lowered
        for word in (
            "truncat",
            "end of file",
            "unexpected end",
            "premature end",
            "short read",
            "read error",
        )
    ):
        return ImageProblem("truncated", f"slide data cut short while {doing} ({message})")
    return ImageProblem("unreadable", f"OpenSlide cannot read the slide while {doing} ({message})")


def tiff_truncation(path: Path) -> str | None:
    """For TIFF-family slides, whether the file ends before its pages or tiles do.

    Every page's tile offsets and byte counts are checked against the file size, and a page
    chain pointing past the end (tifffile logs it and stops) counts too: an interrupted copy
    is caught without decoding a tile, where OpenSlide would often call it an unsupported
    format. None when fine, or not a TIFF (OpenSlide decides then).
    """
    with path.open("rb") as handle:
        if not handle.read(4).startswith(_TIFF_MAGIC):
            return None
    size = path.stat().st_size
    broken = _CapturedLog()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(broken)
    propagate, tiff_logger.propagate = tiff_logger.propagate, False
    try:
        with tifffile.TiffFile(path) as tiff:
            needed = max(
                (
                    int(np.max(np.add(page.dataoffsets, page.databytecounts)))
                    for page in tiff.pages
                    if len(page.dataoffsets)
                ),
                default=0,
            )
    except Exception:  # noqa: BLE001 - tifffile cannot parse it: OpenSlide will say why
        return None
    finally:
        tiff_logger.removeHandler(broken)
        tiff_logger.propagate = propagate
    if needed > size:
        return (
            f"file is {size:,} bytes but its tiles need {needed:,} (cut short, e.g. an "
            "interrupted copy)"
        )
    if any("invalid page offset" in message for message in broken.messages):
        return f"file is {size:,} bytes but its list of pages goes on past the end (cut short)"
    return None


class _CapturedLog(logging.Handler):
    """Collects tifffile's complaints about one file instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def slide_mpp(
    properties: Mapping[str, str],
    manifest_mpp: float | None = None,
    fallback_mpp: float | None = None,
) -> tuple[float, str, list[str]]:
    """(microns per pixel, where it came from, notes): metadata, else manifest, else fallback.

    Raises ImageProblem("no_mpp") when none is known.
    """
    notes: list[str] = []
    values = [_float(properties.get(key)) for key in ("openslide.mpp-x", "openslide.mpp-y")]
    values = [v for v in values if v is not None] or ome_mpp(
        properties.get("tiff.ImageDescription", "")
    )
    mpp = None
    if values:
        mean = sum(values) / len(values)
        if PLAUSIBLE_MPP[0] <= mean <= PLAUSIBLE_MPP[1]:
            mpp = mean
            if len(values) == 2 and abs(values[0] - values[1]) > 0.01 * mean:
                notes.append(
                    f"pixels not square ({values[0]:.4g} x {values[1]:.4g} um); "
                    f"mean {mean:.4g} um/px used"
                )
        else:
            notes.append(f"metadata resolution {mean:.4g} um/px is not a microscope's (ignored)")
    if mpp is not None:
        if manifest_mpp and abs(manifest_mpp - mpp) > 0.05 * mpp:
            notes.append(f"manifest says {manifest_mpp:g} um/px, metadata {mpp:.4g}: metadata used")
        return mpp, "metadata", notes
    if manifest_mpp:
        return float(manifest_mpp), "manifest", [*notes, f"mpp {manifest_mpp:g} from manifest"]
    if fallback_mpp:
        return (
            float(fallback_mpp),
            "fallback",
            [
                *notes,
                f"no mpp in metadata: fallback {fallback_mpp:g} um/px "
                "(cohort.source.microns_per_pixel) used",
            ],
        )
    raise ImageProblem(
        "no_mpp",
        "no microns per pixel in the slide's metadata; set "
        "cohort.source.microns_per_pixel (or a manifest "
        "microns_per_pixel column) to your scanner's resolution",
    )


def ome_mpp(description: str) -> list[float]:
    """Pixel sizes (um) of an OME-TIFF's first image, which OpenSlide does not read.

    OME-XML gives `PhysicalSizeX/Y` on `<Pixels>`, in `PhysicalSizeXUnit` (default um).
    """
    pixels = _OME_PIXELS.search(description or "")
    if not pixels:
        return []
    attributes = dict(_XML_ATTRIBUTE.findall(pixels.group(0)))
    sizes = []
    for axis in ("X", "Y"):
        value = _float(attributes.get(f"PhysicalSize{axis}"))
        unit = attributes.get(f"PhysicalSize{axis}Unit", "µm")
        if value is not None and unit in _OME_UNITS:
            sizes.append(value * _OME_UNITS[unit])
    return sizes


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def slide_info(
    slide: openslide.OpenSlide, manifest_mpp: float | None = None, fallback_mpp: float | None = None
) -> SlideInfo:
    """Size, pyramid and resolution of an open slide (raises ImageProblem("no_mpp"))."""
    properties = slide.properties
    mpp, source, notes = slide_mpp(properties, manifest_mpp, fallback_mpp)
    width, height = slide.dimensions
    return SlideInfo(
        width=int(width),
        height=int(height),
        level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        mpp=mpp,
        mpp_source=source,
        vendor=properties.get("openslide.vendor"),
        quickhash=properties.get("openslide.quickhash-1"),
        notes=tuple(notes),
    )


# --- planning ----------------------------------------------------------------------------------


def best_level(
    downsamples: tuple[float, ...] | list[float],
    mpp: float,
    target_mpp: float,
    tolerance: float = 0.02,
) -> int:
    """The coarsest level still at least as fine as the target (level mpp <= target).

    `tolerance` lets a 0.2525 um/px scan count as 0.25; with no level that fine, level 0.
    """
    fine_enough = [i for i, d in enumerate(downsamples) if mpp * d <= target_mpp * (1 + tolerance)]
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


# --- reading -----------------------------------------------------------------------------------


def to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's RGBA (transparent where nothing was scanned) as RGB on white glass."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    weight = alpha[..., None].astype(np.float32) / 255
    return (rgb * weight + 255 * (1 - weight) + 0.5).astype(np.uint8)


def read_region(
    slide: openslide.OpenSlide, x: int, y: int, level: int, width: int, height: int
) -> np.ndarray:
    """RGB pixels of a region at `level` whose top-left is level-0 (x, y); ImageProblem on a
    read failure (OpenSlide raises on a truncated or corrupt tile)."""
    try:
        region = slide.read_region((int(x), int(y)), level, (int(width), int(height)))
    except openslide.OpenSlideError as error:
        raise _read_problem(error, f"reading level {level} at ({x}, {y})") from error
    return to_rgb(np.asarray(region))


def read_thumbnail(
    slide: openslide.OpenSlide,
    info: SlideInfo,
    downsample: float,
    shape: tuple[int, int],
    block: int = 512,
) -> np.ndarray:
    """The slide at `downsample` (level-0 px per pixel), assembled block by block.

    Each block reads the best level for the downsample and is shrunk with INTER_AREA, so even
    a pyramid with few levels never puts a whole level in memory.
    """
    level = slide.get_best_level_for_downsample(downsample)
    level_downsample = info.level_downsamples[level]
    height, width = shape
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, block):
        for left in range(0, width, block):
            h, w = min(block, height - top), min(block, width - left)
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
    slide: openslide.OpenSlide, info: SlideInfo, plan: TilePlan, min_saturation: int = 12
) -> SlideTissue:
    """Thumbnail and tissue mask (`tissue_mask`, the same function images use)."""
    thumbnail = read_thumbnail(slide, info, plan.thumbnail_downsample, plan.thumbnail_shape)
    return SlideTissue(
        plan, thumbnail, thumbnail_tissue(thumbnail, min_saturation), [*info.notes, *plan.notes]
    )


def thumbnail_tissue(thumbnail: np.ndarray, min_saturation: int = 12) -> np.ndarray:
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
    slide: openslide.OpenSlide,
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


def _read_block(
    slide: openslide.OpenSlide, plan: TilePlan, tiles: pd.DataFrame
) -> list[np.ndarray]:
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
    min_saturation: int = 12,
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
    min_saturation: int = 12,
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


def is_slide_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file is read as a slide: a slide-only extension, or a TIFF that OpenSlide
    opens as a pyramid (more than one level; a flat tiled TIFF stays a plain image)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SLIDE_EXTENSIONS:
        return False
    if suffix not in (".tif", ".tiff"):
        return True
    try:
        if openslide.OpenSlide.detect_format(str(path)) is None:
            return False
        with contextlib.closing(openslide.OpenSlide(str(path))) as slide:
            return slide.level_count > 1
    except (openslide.OpenSlideError, OSError):
        return False


# --- validation --------------------------------------------------------------------------------


def validate_slide(
    path: str | os.PathLike[str],
    patch_size: int,
    target_mpp: float,
    *,
    stride: int | None = None,
    min_tissue_fraction: float = 0.5,
    min_saturation: int = 12,
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
    slide: openslide.OpenSlide,
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
    min_saturation: int = 12,
    stride: int | None = None,
    fallback_mpp: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`ingest.validate_cohort` for slides: (valid slides, quarantined files with reasons).

    Same label, patient and split checks and the same quarantine table; per slide the checks
    of `validate_slide`; duplicates by OpenSlide's quickhash (a hash of the slide's metadata
    and smallest level), so the same slide under two names is caught without decoding it.
    `min_tissue_fraction` is per tile: a slide is mostly glass, so the image rule (a share of
    the whole image) does not apply.
    """
    check_labels(label_map, allowed_labels)
    missing = [column for column in RECORD_COLUMNS if column not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}")
    rows = records.sort_values("relative_path", kind="stable").to_dict("records")
    total, start = len(rows), time.perf_counter()
    checked = []
    for done, record in enumerate(rows, start=1):
        entry = _check_metadata(
            {key: _text(record[key]) for key in RECORD_COLUMNS}, label_map, allowed_labels
        )
        entry.update(dict.fromkeys(SLIDE_VALID_COLUMNS[len(VALID_COLUMNS) :]))
        if entry["check"] is None:
            try:
                facts, _ = validate_slide(
                    entry["image_path"],
                    patch_size,
                    target_mpp,
                    stride=stride,
                    min_tissue_fraction=min_tissue_fraction,
                    min_saturation=min_saturation,
                    manifest_mpp=_float(record.get("microns_per_pixel")),
                    fallback_mpp=fallback_mpp,
                )
                entry.update(facts)
            except ImageProblem as problem:
                entry.update(check=problem.check, reason=problem.reason)
        checked.append(entry)
        _report_progress(done, total, start, progress)
    _flag_patient_conflicts(checked, "label", allowed_labels, "under more than one label")
    _flag_patient_conflicts(checked, "split", SPLITS, "in more than one split")
    _flag_duplicates(checked)
    valid = _typed_frame(
        [{**e, "notes": "; ".join(e["notes"])} for e in checked if e["check"] is None],
        SLIDE_VALID_COLUMNS,
    )
    quarantine = pd.DataFrame(
        [
            {"file": e["relative_path"], "check": e["check"], "reason": e["reason"]}
            for e in checked
            if e["check"] is not None
        ],
        columns=QUARANTINE_COLUMNS,
    )
    quarantine = quarantine.sort_values(["file", "check"], kind="stable").reset_index(drop=True)
    _log_summary(valid, quarantine, total)
    return valid, quarantine


def _typed_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            column: pd.Series([row[column] for row in rows], dtype=_NUMERIC.get(column, object))
            for column in columns
        },
        columns=columns,
    )


# --- discovery ---------------------------------------------------------------------------------


def discover_slide_folder(
    root: str | os.PathLike[str],
    patient_id_regex: str = DEFAULT_PATIENT_ID_REGEX,
    *,
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """Records of `<root>/<label>/**/<slide>` (SLIDE_RECORD_COLUMNS), sorted by path.

    Multi-file slides count once: a MIRAX data folder and the files a .vms lists are parts
    of their slide, and a folder of .dcm files is one DICOM slide named by its folder. Other
    files come back with `problem` set, so they show in the quarantine table. Links leading
    out of the folder are `outside_root` (never read) unless `allow_outside_root`, as for
    images (`ingest._walk`).
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise CohortConfigError(f"cohort.source.root is not a folder ({root_path.name})")
    pattern = compile_patient_regex(patient_id_regex)
    walked = [
        (path, outside)
        for path, outside in _walk(root_path, allow_outside_root)
        if not _is_junk(path.name)
    ]
    files = [path for path, outside in walked if not outside]
    parts = _companion_files(files)
    dicom: dict[Path, list[Path]] = defaultdict(list)
    rows = []
    for path, outside in walked:
        if outside:
            row = _folder_record(root_path, path, path, pattern)
            row.update(image_path=None, problem_check="outside_root", problem=_OUTSIDE_ROOT)
            rows.append(row)
            continue
        if path in parts:
            continue
        if path.suffix.lower() == ".dcm":
            dicom[path.parent].append(path)
            continue
        rows.append(_folder_record(root_path, path, path, pattern))
    for folder, members in dicom.items():
        rows.append(_folder_record(root_path, sorted(members)[0], folder, pattern))
    if parts:
        logger.debug("%d file(s) read as parts of multi-file slides", len(parts))
    return _slide_frame(rows)


def _folder_record(root: Path, path: Path, named: Path, pattern: Any) -> dict[str, Any]:
    """A folder-layout record; `named` is the file (or DICOM folder) the slide is known by."""
    relative = named.relative_to(root).as_posix()
    folders = relative.split("/")[:-1]
    match = pattern.search(named.name)
    row = _record(
        str(path),
        relative,
        raw_label=folders[0] if folders else None,
        patient_id=match.group("patient") if match else None,
    )
    row["microns_per_pixel"] = None
    if path.suffix.lower() not in SLIDE_EXTENSIONS:
        row.update(
            problem_check="not_image_extension",
            problem=f"not a slide file extension ({path.suffix or 'none'}); allowed: "
            + ", ".join(sorted(SLIDE_EXTENSIONS)),
        )
    elif not folders:
        row.update(
            problem_check="no_label_folder",
            problem="not inside a label folder (<root>/<label>/...)",
        )
    elif not row["patient_id"]:
        row.update(problem_check="no_patient_id", problem="no patient id in file name")
    return row


def _companion_files(files: list[Path]) -> set[Path]:
    """Files that belong to another slide: MIRAX data folders and the image files a .vms/.vmu
    lists (Hamamatsu), which OpenSlide reads through the main file."""
    parts: set[Path] = set()
    mirax = {path.with_suffix("") for path in files if path.suffix.lower() == ".mrxs"}
    for path in files:
        if any(folder in mirax for folder in path.parents):
            parts.add(path)
    for path in files:
        if path.suffix.lower() in (".vms", ".vmu"):
            parts.update(path.parent / name for name in _vms_members(path))
    return parts


def _vms_members(path: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return []
    section = "Virtual Microscope Specimen"
    if not parser.has_section(section):
        return []
    return [
        value.strip()
        for key, value in parser.items(section)
        if key.startswith(("imagefile", "mapfile", "optimisationfile")) and value.strip()
    ]


def read_slide_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a manifest CSV whose rows are slides (a patient may have several).

    Columns: `image_path` (or `slide_path`), `patient_id`, `label`; optional `split` and
    `microns_per_pixel` (the slide's resolution where its metadata lacks one). Relative
    paths resolve against the manifest's folder.
    """
    manifest = Path(path).expanduser()
    if not manifest.is_file():
        raise CohortConfigError(f"cohort.source.manifest is not a file: {manifest}")
    with manifest.open(encoding="utf-8-sig") as handle:
        header = handle.readline()
    separator = max(",;\t", key=header.count)
    table = pd.read_csv(
        manifest, sep=separator, dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    table.columns = [str(column).strip().lower() for column in table.columns]
    if "image_path" not in table.columns and "slide_path" in table.columns:
        table = table.rename(columns={"slide_path": "image_path"})
    missing = [column for column in MANIFEST_REQUIRED if column not in table.columns]
    if missing:
        raise ValueError(
            f"manifest {manifest} lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(MANIFEST_REQUIRED)} (image_path may be called "
            f"slide_path), optional: {', '.join(MANIFEST_SLIDE_OPTIONAL)}; found: "
            f"{', '.join(table.columns)}"
        )
    rows = []
    for line, entry in enumerate(table.to_dict("records"), start=2):
        slide = _text(entry["image_path"])
        split = _text(entry.get("split"))
        slide_path, relative = (
            _resolve(slide, manifest.parent) if slide else (None, f"{manifest.name} line {line}")
        )
        row = _record(
            slide_path,
            relative,
            patient_id=_text(entry["patient_id"]),
            raw_label=_text(entry["label"]),
            split=split.lower() if split else None,
        )
        row["microns_per_pixel"] = None
        mpp_text = _text(entry.get("microns_per_pixel"))
        if not slide:
            row.update(problem_check="missing_image_path", problem="missing slide path")
        elif Path(slide_path).suffix.lower() not in SLIDE_EXTENSIONS:
            row.update(
                problem_check="not_image_extension",
                problem=f"not a slide file extension ({Path(slide_path).suffix or 'none'}"
                "); allowed: " + ", ".join(sorted(SLIDE_EXTENSIONS)),
            )
        elif mpp_text is not None and _float(mpp_text) is None:
            row.update(
                problem_check="invalid_mpp",
                problem=f"microns_per_pixel {mpp_text!r} is not a positive number",
            )
        else:
            row["microns_per_pixel"] = _float(mpp_text)
        rows.append(row)
    return _slide_frame(rows)


def discover_slides(source: Mapping[str, Any]) -> pd.DataFrame:
    """Slide records of a `cohort.source` with layout `slide_folder` or `slide_manifest`."""
    layout = source.get("layout")
    if layout == "slide_folder":
        root = source.get("root")
        if not root:
            raise CohortConfigError("cohort.source.root must be a path when layout is slide_folder")
        return discover_slide_folder(
            root,
            source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX,
            allow_outside_root=bool(source.get("allow_outside_root")),
        )
    if layout == "slide_manifest":
        if not source.get("manifest"):
            raise CohortConfigError(
                "cohort.source.manifest must be a path when layout is slide_manifest"
            )
        return read_slide_manifest(source["manifest"])
    raise CohortConfigError(
        f"cohort.source.layout {layout!r} is not a slide layout (slide_folder | slide_manifest)"
    )


def _slide_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = _frame(rows, SLIDE_RECORD_COLUMNS)
    frame["microns_per_pixel"] = frame["microns_per_pixel"].astype("float64")
    return frame.sort_values("relative_path", kind="stable").reset_index(drop=True)
