"""What a slide is: level-0 size, pyramid and resolution (microns per pixel); no Kedro here.

Microns per pixel come from the slide's metadata (`openslide.mpp-x/-y`, which OpenSlide fills
from the vendor's fields or the TIFF resolution tags and `readers.TiffPyramidReader` from the
resolution tags, else an OME-TIFF's `PhysicalSizeX/Y`), then from the manifest row, then from
the configured fallback; with none of them the slide is quarantined (`no_mpp`). A resolution
of a screen or a scanner of paper (e.g. 72 dpi, 352 um/px) is not a microscope's and counts as
missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.slides.readers import SlideReader

# A microscope scans at 0.1-10 um/px; a TIFF's default 72 dpi (352 um/px) is not one.
PLAUSIBLE_MPP = (0.05, 20.0)
_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>")
_XML_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_OME_UNITS = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3}


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


def slide_mpp(
    properties: Mapping[str, str],
    manifest_mpp: float | None = None,
    fallback_mpp: float | None = None,
) -> tuple[float, str, list[str]]:
    """(microns per pixel, where it came from, notes): metadata, else manifest, else fallback.

    Raises ImageProblem("no_mpp") when none is known.
    """
    notes: list[str] = []
    values = [positive_float(properties.get(key)) for key in ("openslide.mpp-x", "openslide.mpp-y")]
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
        value = positive_float(attributes.get(f"PhysicalSize{axis}"))
        unit = attributes.get(f"PhysicalSize{axis}Unit", "µm")
        if value is not None and unit in _OME_UNITS:
            sizes.append(value * _OME_UNITS[unit])
    return sizes


def positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def slide_info(
    slide: SlideReader, manifest_mpp: float | None = None, fallback_mpp: float | None = None
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
