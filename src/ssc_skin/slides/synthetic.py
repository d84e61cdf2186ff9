"""Synthetic whole-slide images: pyramidal tiled TIFFs holding several simulated sections.

The slide path (open, pick a pyramid level, detect tissue on a thumbnail, tile, read) needs
gigapixel pyramids to be tested without downloads, so this module writes them:

- Sections come from the image simulator (`synthetic.render_section`), drawn at
  `SECTION_MICRONS_PER_PIXEL` (2 um/px: its nuclei are ~5 px and its epidermis ~25 px, i.e.
  ~10 um and ~50 um), and are laid out on a grid with glass between them, each trimmed to an
  irregular outline so that the tissue is not a set of rectangles.
- Level 0 is at the slide's `mpp` (0.5 um/px by default, a 20x scan); a section is enlarged
  by nearest-neighbour index mapping, so each coarser level is an exact block mean away.
- The file is written tile by tile from a generator, one strip of tiles at a time: memory
  is one strip plus the rendered sections, whatever the slide size (40000 x 40000 and more).
- Five styles: `aperio` (the fake Aperio description tiffslide's own tests use: `Aperio
  Image Library ...` and `|MPP = 0.5`), `generic` (a plain tiled TIFF whose mpp, if any, is
  in its resolution tags), `philips` (Philips TIFF XML with DICOM pixel spacing per level),
  all read by OpenSlide as pyramids; and `ome` (OME-TIFF, `PhysicalSizeX/Y` in its OME-XML)
  and `subifd` (resolution tags), whose reduced levels are sub-IFDs of level 0, which
  OpenSlide 4 opens as one level and `slides.readers` reads through tifffile. `mpp=None`
  writes a slide with no resolution at all.

Pure numpy/OpenCV/tifffile; no Kedro.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile

from ssc_skin.cohort.synthetic import make_patient, render_section
from ssc_skin.constants import LABELS

SECTION_MICRONS_PER_PIXEL = 2.0
# The simulator's glass: 255 * exp(-0.03) (it absorbs a little); sections blend into it.
GLASS_RGB = (247, 247, 247)
TILE = 512
STYLES = ("aperio", "generic", "philips", "ome", "subifd")
SUFFIX = {
    "aperio": ".svs",
    "generic": ".tif",
    "philips": ".tiff",
    "ome": ".ome.tif",
    "subifd": ".tif",
}
SUBIFD_STYLES = ("ome", "subifd")  # reduced levels as sub-IFDs of level 0 (one top page)


@dataclass(frozen=True)
class Placement:
    """One section on the slide: its pixels (at section mpp) and its level-0 top-left corner."""

    image: np.ndarray  # HxWx3 uint8, glass outside the section's outline
    x: int
    y: int
    scale: float  # level-0 pixels per section pixel


@dataclass(frozen=True)
class SlideRecord:
    """What was written, for manifests and tests."""

    path: str
    patient_id: str
    label: str
    width: int
    height: int
    mpp: float | None
    style: str
    sections: tuple[tuple[int, int, int, int], ...]  # level-0 (x, y, width, height) each


# --- layout ------------------------------------------------------------------------------------


def grid_shape(count: int, width: int, height: int) -> tuple[int, int]:
    """Columns and rows for `count` sections on a width x height slide, cells near square."""
    if count < 1:
        raise ValueError(f"need at least one section; got {count}")
    best = (count, 1)
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        cell = (width / columns) / (height / rows)
        if abs(math.log(cell)) < abs(math.log((width / best[0]) / (height / best[1]))):
            best = (columns, rows)
    return best


def layout(
    width: int,
    height: int,
    count: int,
    section_mpp: float,
    mpp: float,
    max_section_side: int = 1024,
    fill: float = 0.8,
) -> list[tuple[int, int, int, int]]:
    """Cells of a grid: each section's level-0 (x, y) and its size in section pixels (w, h).

    A section fills `fill` of its cell, so glass separates neighbours; its side is capped at
    `max_section_side` section pixels so rendering stays cheap on a huge slide.
    """
    columns, rows = grid_shape(count, width, height)
    scale = section_mpp / mpp
    cell_w, cell_h = width / columns, height / rows
    section_w = max(32, min(max_section_side, int(cell_w * fill / scale)))
    section_h = max(32, min(max_section_side, int(cell_h * fill / scale)))
    cells = []
    for index in range(count):
        row, column = divmod(index, columns)
        x = int(column * cell_w + (cell_w - section_w * scale) / 2)
        y = int(row * cell_h + (cell_h - section_h * scale) / 2)
        cells.append((max(0, x), max(0, y), section_w, section_h))
    return cells


def trim_outline(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Glass outside an irregular rounded outline: real sections are not rectangles."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1
    angle = np.arctan2(v, u)
    wobble = sum(
        rng.uniform(0.02, 0.06) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    inside = np.abs(u) ** 4 + np.abs(v) ** 4 < (0.97 + wobble) ** 4
    out = image.copy()
    out[~inside] = GLASS_RGB
    return out


# --- writing -----------------------------------------------------------------------------------


def level_sizes(width: int, height: int, min_side: int = 512) -> list[tuple[int, int]]:
    """Level dimensions halving each time, until the long side is at most 2 * min_side."""
    sizes = [(width, height)]
    while max(sizes[-1]) > 2 * min_side:
        w, h = sizes[-1]
        sizes.append((max(1, w // 2), max(1, h // 2)))
    return sizes


def _level_sections(
    placements: Sequence[Placement], downsample: int
) -> list[tuple[np.ndarray, float, float, float]]:
    """Per section at one level: pixels, level x, level y, level pixels per source pixel.

    A level coarser than the section's own pixels gets a section shrunk by area averaging
    (small); finer levels map indices onto the section itself (nearest neighbour).
    """
    out = []
    for p in placements:
        factor = p.scale / downsample
        image = p.image
        if factor < 1:
            h, w = image.shape[:2]
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            factor = 1.0
        out.append((image, p.x / downsample, p.y / downsample, factor))
    return out


def _strip(
    sections: list[tuple[np.ndarray, float, float, float]], top: int, height: int, width: int
) -> np.ndarray:
    """Rows [top, top + height) of one level, as glass plus every section overlapping them."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = GLASS_RGB
    for image, x0, y0, factor in sections:
        h, w = image.shape[:2]
        y_lo, y_hi = max(top, math.ceil(y0)), min(top + height, math.ceil(y0 + h * factor))
        x_lo, x_hi = max(0, math.ceil(x0)), min(width, math.ceil(x0 + w * factor))
        if y_lo >= y_hi or x_lo >= x_hi:
            continue
        rows = np.minimum(((np.arange(y_lo, y_hi) - y0) / factor).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(x_lo, x_hi) - x0) / factor).astype(np.int64), w - 1)
        strip[y_lo - top : y_hi - top, x_lo:x_hi] = image[np.ix_(rows, cols)]
    return strip


def _tiles(
    sections: list[tuple[np.ndarray, float, float, float]], width: int, height: int, tile: int
) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, built one strip of tiles at a time."""
    for top in range(0, height, tile):
        strip = _strip(sections, top, tile, math.ceil(width / tile) * tile)
        for left in range(0, width, tile):
            yield strip[:, left : left + tile]


def aperio_description(
    width: int, height: int, mpp: float, tile: int = TILE, codec: str = "ZLIB"
) -> str:
    """An Aperio-style ImageDescription; OpenSlide keys on its first word and `|MPP =`."""
    magnification = round(10 / mpp)
    return (
        f"Aperio Image Library v12.0.15 \n{width}x{height} [0,0 {width}x{height}] "
        f"({tile}x{tile}) {codec} Q=100|AppMag = {magnification}|MPP = {mpp:g}"
        "|ScanScope ID = SYNTHETIC|Filename = synthetic"
    )


def philips_description(sizes: Sequence[tuple[int, int]], mpp: float | None) -> str:
    """A Philips TIFF XML description: one WSI image, DICOM pixel spacing (mm) per level."""

    def spacing(downsample: float) -> str:
        millimetres = (mpp or 1.0) * downsample / 1000
        return f'"{millimetres:.9g}" "{millimetres:.9g}"'

    levels = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f"{spacing(sizes[0][0] / w)}</Attribute></DataObject>"
        for w, _ in sizes
    )
    top = (
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" '
        f'PMSVR="IDoubleArray">{spacing(1)}</Attribute>'
        if mpp
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        '<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" '
        'PMSVR="IString">PHILIPS</Attribute>'
        '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" '
        'PMSVR="IDataObjectArray"><Array><DataObject ObjectType="DPScannedImage">'
        f"{top}"
        '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" '
        'PMSVR="IString">WSI</Attribute>'
        '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" '
        'Element="0x8B01" PMSVR="IDataObjectArray"><Array>'
        f"{levels}</Array></Attribute></DataObject></Array></Attribute></DataObject>"
    )


def write_slide(
    path: str | os.PathLike[str],
    placements: Sequence[Placement],
    width: int,
    height: int,
    mpp: float | None = 0.5,
    style: str = "aperio",
    tile: int = TILE,
    compression_level: int = 1,
    maxworkers: int = 1,
    compression: str = "zlib",
) -> Path:
    """Write a pyramidal tiled TIFF of glass and `placements`, level by level.

    Each level streams from a tile generator, so the slide itself is never in memory.
    `mpp=None` writes no resolution anywhere (a slide the reader must quarantine or give a
    fallback to); for `generic`, a given mpp goes into the resolution tags (pixels per cm).
    `compression` is `zlib` (level `compression_level`) or `jpeg` (quality 80, as most
    scanners write; tifffile needs the `imagecodecs` package for it).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
    if compression not in ("zlib", "jpeg"):
        raise ValueError(f"compression must be zlib or jpeg; got {compression!r}")
    if width < 1 or height < 1 or (mpp is not None and mpp <= 0):
        raise ValueError(f"need a positive size and mpp; got {width}x{height}, mpp {mpp}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = level_sizes(width, height, tile)
    common = {
        "tile": (tile, tile),
        "dtype": np.uint8,
        "photometric": "rgb",
        "compression": compression,
        "compressionargs": {"level": compression_level if compression == "zlib" else 80},
        "metadata": None,
        "maxworkers": maxworkers,
        "buffersize": 32 << 20,
    }  # tifffile's default read-ahead is ~0.5 GB of tiles
    partial = path.with_name(path.name + ".partial")  # a crash never leaves a plausible slide
    with tifffile.TiffWriter(partial, bigtiff=True, ome=style == "ome") as tif:
        for index, (w, h) in enumerate(sizes):
            downsample = 2**index
            extra: dict[str, object] = {"subfiletype": 1} if index else {}
            if style == "aperio" and mpp is not None:
                extra["description"] = aperio_description(
                    w, h, mpp * downsample, tile, compression.upper()
                )
            elif style == "aperio":
                extra["description"] = (
                    f"Aperio Image Library v12.0.15 \n{w}x{h} ({tile}x{tile}) ZLIB|AppMag = 20"
                )
            elif style == "philips" and index == 0:
                extra.update(
                    description=philips_description(sizes, mpp), software="Philips DP v1.0"
                )
            if style in SUBIFD_STYLES and index == 0:
                extra["subifds"] = len(sizes) - 1
            if style == "ome" and index == 0:
                extra["metadata"] = {"axes": "YXS"} | (
                    {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if mpp is not None else {}
                )
            if style in ("generic", "subifd") and mpp is not None:
                pixels_per_cm = 1e4 / (mpp * downsample)
                extra.update(resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER")
            tif.write(
                _tiles(_level_sections(placements, downsample), w, h, tile),
                shape=(h, w, 3),
                **(common | extra),
            )
    partial.replace(path)
    return path


def write_synthetic_slide(
    path: str | os.PathLike[str],
    width: int = 4000,
    height: int = 3000,
    sections: int = 3,
    label: str = "normal",
    patient_id: str = "S0001",
    mpp: float | None = 0.5,
    style: str = "aperio",
    seed: int = 0,
    stain: str = "he",
    difficulty: float = 0.5,
    artefact_rate: float | dict[str, float] = 0.1,
    max_section_side: int = 1024,
    compression_level: int = 1,
    maxworkers: int = 1,
) -> SlideRecord:
    """One patient's slide: `sections` simulated sections on glass, written tile by tile."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}; got {label!r}")
    rng = np.random.default_rng(seed)
    patient = make_patient(patient_id, label, rng, difficulty)
    scale = SECTION_MICRONS_PER_PIXEL / (mpp or 0.5)
    placements, boxes = [], []
    for index, (x, y, w, h) in enumerate(
        layout(width, height, sections, SECTION_MICRONS_PER_PIXEL, mpp or 0.5, max_section_side)
    ):
        section = render_section(patient, index, (h, w), stain, difficulty, artefact_rate)
        placements.append(Placement(trim_outline(section.image, rng), x, y, scale))
        boxes.append((x, y, math.ceil(w * scale), math.ceil(h * scale)))
    written = write_slide(
        path,
        placements,
        width,
        height,
        mpp,
        style,
        compression_level=compression_level,
        maxworkers=maxworkers,
    )
    return SlideRecord(str(written), patient_id, label, width, height, mpp, style, tuple(boxes))


def write_slide_cohort(
    root: str | os.PathLike[str],
    patients_per_class: dict[str, int],
    slides_per_patient: int = 1,
    width: int = 4000,
    height: int = 3000,
    sections: int = 3,
    mpp: float | None = 0.5,
    style: str = "aperio",
    seed: int = 0,
    **options: object,
) -> pd.DataFrame:
    """`<root>/<label>/<patient>_<k><suffix>` plus `<root>/manifest.csv` (rows are slides).

    The manifest has the columns slide ingestion reads: image_path (relative to root),
    patient_id, label. Options go to `write_synthetic_slide` (stain, difficulty, ...).
    """
    unknown = set(patients_per_class) - set(LABELS)
    if unknown:
        raise ValueError(
            f"patients_per_class has unknown labels {sorted(unknown)}; allowed: {', '.join(LABELS)}"
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, number = [], 0
    for label in LABELS:
        for _ in range(patients_per_class.get(label, 0)):
            number += 1
            patient_id = f"S{number:04d}"
            for k in range(slides_per_patient):
                relative = f"{label}/{patient_id}_{k + 1}{SUFFIX[style]}"
                write_synthetic_slide(
                    root / relative,
                    width,
                    height,
                    sections,
                    label,
                    patient_id,
                    mpp,
                    style,
                    int(rng.integers(2**31 - 1)),
                    **options,
                )  # type: ignore[arg-type]
                rows.append({"image_path": relative, "patient_id": patient_id, "label": label})
    manifest = pd.DataFrame(rows, columns=["image_path", "patient_id", "label"])
    manifest.to_csv(root / "manifest.csv", index=False)
    return manifest


def truncated_copy(
    source: str | os.PathLike[str], target: str | os.PathLike[str], keep_fraction: float = 0.6
) -> Path:
    """A copy cut short after `keep_fraction` of its bytes: an interrupted transfer."""
    if not 0 < keep_fraction < 1:
        raise ValueError(f"keep_fraction must be in (0, 1); got {keep_fraction}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remaining = int(Path(source).stat().st_size * keep_fraction)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while remaining > 0:
            data = src.read(min(1 << 20, remaining))
            if not data:
                break
            dst.write(data)
            remaining -= len(data)
    return target
