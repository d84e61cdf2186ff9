"""Opening a whole-slide image: one small reader interface over OpenSlide and tifffile.

- **OpenSlide** (`openslide-python` + the `openslide-bin` wheel, no system library) reads
  Aperio .svs, Hamamatsu .ndpi/.vms/.vmu, MIRAX .mrxs, Leica .scn, Philips TIFF, Sakura
  .svslide, Ventana .bif, DICOM WSI and generic tiled TIFF.
- **tifffile** reads the TIFF pyramids OpenSlide 4 sees as one level: OME-TIFF and TIFFs
  whose reduced levels are sub-IFDs (`TiffPyramidReader`). It is chosen only where tifffile
  sees more pyramid levels than OpenSlide; otherwise OpenSlide reads, as before.

Both give the same few things (`SlideReader`): level sizes and downsamples, OpenSlide-style
properties (`openslide.mpp-x/-y`, `openslide.vendor`, `openslide.quickhash-1`,
`tiff.ImageDescription`) and `read_region`, which returns RGB (white where nothing was
scanned). No reader ever decodes a whole level: tifffile decodes only the tiles or strips a
region touches (uncompressed strips are read row by row), keeping at most
`SEGMENT_CACHE_BYTES` of decoded segments; a compressed single-strip level larger than
`MAX_SEGMENT_PIXELS` cannot be read in parts and is refused (`too_large`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import openslide  # finds the openslide-bin wheel's library by itself (openslide-python >= 1.4)
import tifffile

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.cohort.readers import _check_file as check_file

logger = logging.getLogger(__name__)

# What is read as a slide. A .mrxs has a data folder of the same name beside it; a .vms
# lists its image files; a DICOM slide is a folder of .dcm files (one per level).
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm"}
)
TIFF_SUFFIXES = (".tif", ".tiff")
SEGMENT_CACHE_BYTES = 32 << 20  # decoded tiles kept for neighbouring reads
MAX_SEGMENT_PIXELS = 1 << 26  # one compressed strip/tile decoded whole: at most 64 MP (192 MB)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PATH = re.compile(
    r"(?:[A-Za-z]:)?(?:[\\/][^\s:;,()'\"]+)+|[^\s:;,()'\"]+\.(?:svs|tiff?|ndpi|vms|vmu|"
    r"mrxs|scn|bif|svslide|dcm|dat|ini)\b",
    re.IGNORECASE,
)
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: inch, centimetre


class SlideReader(Protocol):
    """What the slide code needs of an open slide (OpenSlide's names, RGB pixels)."""

    level_count: int
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: Mapping[str, str]

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray: ...

    def get_best_level_for_downsample(self, downsample: float) -> int: ...

    def close(self) -> None: ...


# --- OpenSlide ---------------------------------------------------------------------------------


class OpenSlideReader:
    """OpenSlide behind `SlideReader`: RGBA composited on white, errors as ImageProblem."""

    def __init__(self, slide: openslide.OpenSlide) -> None:
        self._slide = slide
        self.level_count = int(slide.level_count)
        self.dimensions = tuple(int(v) for v in slide.dimensions)
        self.level_dimensions = tuple((int(w), int(h)) for w, h in slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in slide.level_downsamples)
        self.properties = slide.properties

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        x, y = (int(v) for v in location)
        try:
            region = self._slide.read_region((x, y), level, (int(size[0]), int(size[1])))
        except openslide.OpenSlideError as error:
            raise read_problem(error, f"reading level {level} at ({x}, {y})") from error
        return to_rgb(np.asarray(region))

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return int(self._slide.get_best_level_for_downsample(downsample))

    def close(self) -> None:
        self._slide.close()


def to_rgb(rgba: np.ndarray) -> np.ndarray:
    """RGBA (transparent where nothing was scanned) as RGB on white glass."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    weight = alpha[..., None].astype(np.float32) / 255
    return (rgb * weight + 255 * (1 - weight) + 0.5).astype(np.uint8)


def read_problem(error: Exception, doing: str) -> ImageProblem:
    """A reader's message, sorted into `truncated` or `unreadable`.

    Readers name the file in their messages; the path (which may hold a patient id) is cut
    out, since quarantine reasons are shown and logged.
    """
    message = _PATH.sub("<file>", str(error))
    lowered = message.lower()
    words = (
        "truncat",
        "end of file",
        "unexpected end",
        "premature end",
        "short read",
        "read error",
    )
    if any(word in lowered for word in words):
        return ImageProblem("truncated", f"slide data cut short while {doing} ({message})")
    return ImageProblem("unreadable", f"cannot read the slide while {doing} ({message})")


# --- tifffile ----------------------------------------------------------------------------------


class TiffPyramidReader:
    """A TIFF pyramid through tifffile's series levels (OME-TIFF, sub-IFD pyramids).

    Level 0 is the first series' full-resolution page, each further level a reduced page of
    it. Pixels must be 8-bit grey, RGB or RGBA with interleaved samples (brightfield).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._tiff = tifffile.TiffFile(path)
        try:
            series = self._tiff.series[0]
            if series.axes not in ("YXS", "YX"):
                raise ImageProblem(
                    "unsupported_format",
                    f"a TIFF pyramid of axes {series.axes} (channels, z or time as separate "
                    "planes); brightfield slides are 8-bit RGB or grey, one plane",
                )
            self._pages = [level.keyframe for level in series.levels]
            for page in self._pages:
                _check_brightfield(page)
        except ImageProblem:
            self._tiff.close()
            raise
        except Exception as error:  # noqa: BLE001 - tifffile's many parse errors
            self._tiff.close()
            raise read_problem(error, "opening") from error
        self.level_dimensions = tuple((int(p.imagewidth), int(p.imagelength)) for p in self._pages)
        self.level_count = len(self._pages)
        self.dimensions = self.level_dimensions[0]
        width0, height0 = self.dimensions
        self.level_downsamples = tuple(
            (width0 / w + height0 / h) / 2 for w, h in self.level_dimensions
        )
        self.properties = self._properties()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def _properties(self) -> dict[str, str]:
        page = self._pages[0]
        properties = {
            "openslide.vendor": "ome-tiff" if self._tiff.is_ome else "tiff-pyramid",
            "openslide.level-count": str(self.level_count),
            "openslide.quickhash-1": self._quickhash(),
            "tiff.ImageDescription": self._tiff.pages[0].description or "",
        }
        for axis, mpp in zip("xy", resolution_mpp(page), strict=True):
            if mpp is not None:
                properties[f"openslide.mpp-{axis}"] = repr(mpp)
        return properties

    def _quickhash(self) -> str:
        """SHA-256 of the level sizes, the description and the smallest level's stored bytes:
        the same slide under two names hashes alike without decoding a tile."""
        digest = hashlib.sha256(repr(self.level_dimensions).encode())
        digest.update((self._tiff.pages[0].description or "").encode())
        page = self._pages[-1]
        handle = self._tiff.filehandle
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            digest.update(handle.read(count))
        return digest.hexdigest()

    def get_best_level_for_downsample(self, downsample: float) -> int:
        fine = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * 1.0001]
        return max(fine, key=lambda i: self.level_downsamples[i]) if fine else 0

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB of `size` level pixels whose top-left is level-0 `location` (white outside)."""
        width, height = (int(v) for v in size)
        downsample = self.level_downsamples[level]
        left, top = int(location[0] / downsample), int(location[1] / downsample)
        out = np.full((height, width, 3), 255, np.uint8)
        level_w, level_h = self.level_dimensions[level]
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(level_w, left + width), min(level_h, top + height)
        if x0 >= x1 or y0 >= y1:
            return out
        try:
            pixels = self._read_level(level, x0, y0, x1, y1)
        except ImageProblem:
            raise
        except Exception as error:  # noqa: BLE001 - codec errors of a corrupt segment
            raise read_problem(error, f"reading level {level} at {location}") from error
        out[y0 - top : y1 - top, x0 - left : x1 - left] = pixels
        return out

    def _read_level(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        page = self._pages[level]
        if page.compression == 1 and page.predictor == 1:
            return _rgb(page, self._read_raw_rows(page, x0, y0, x1, y1))
        seg_h, seg_w = (
            (page.chunks[0], page.chunks[1])
            if page.is_tiled
            else (page.rowsperstrip, page.imagewidth)
        )
        seg_h = min(seg_h, page.imagelength)
        if seg_h * seg_w > MAX_SEGMENT_PIXELS:
            raise ImageProblem(
                "too_large",
                f"level {level} is stored as compressed strips of {seg_h * seg_w:,} px, which "
                "can only be decoded whole; save the slide tiled (e.g. 512 x 512 tiles)",
            )
        across = math.ceil(page.imagewidth / seg_w)
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // seg_h, (y1 - 1) // seg_h + 1):
            for column in range(x0 // seg_w, (x1 - 1) // seg_w + 1):
                segment = self._segment(level, row * across + column)
                top, left = row * seg_h, column * seg_w
                a, b = max(y0, top), min(y1, top + segment.shape[0])
                c, d = max(x0, left), min(x1, left + segment.shape[1])
                out[a - y0 : b - y0, c - x0 : d - x0] = segment[
                    a - top : b - top, c - left : d - left
                ]
        return out

    def _segment(self, level: int, index: int) -> np.ndarray:
        """One decoded tile or strip as RGB, from a small LRU cache."""
        key = (level, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        page = self._pages[level]
        handle = self._tiff.filehandle
        handle.seek(page.dataoffsets[index])
        data = handle.read(page.databytecounts[index])
        decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if decoded is None:
            raise ImageProblem("unreadable", f"level {level} has an empty tile or strip")
        segment = _rgb(page, np.asarray(decoded).reshape(decoded.shape[-3:]))
        self._cache[key] = segment
        self._cached_bytes += segment.nbytes
        while self._cached_bytes > SEGMENT_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return segment

    def _read_raw_rows(self, page: Any, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Uncompressed strips: only the asked rows and columns are read from the file."""
        samples = page.samplesperpixel
        row_bytes = page.imagewidth * samples
        rows_per_strip = min(page.rowsperstrip, page.imagelength)
        out = np.empty((y1 - y0, x1 - x0, samples), np.uint8)
        handle = self._tiff.filehandle
        for y in range(y0, y1):
            strip, within = divmod(y, rows_per_strip)
            handle.seek(page.dataoffsets[strip] + within * row_bytes + x0 * samples)
            data = handle.read((x1 - x0) * samples)
            if len(data) < (x1 - x0) * samples:
                raise ImageProblem("truncated", f"slide data cut short at row {y}")
            out[y - y0] = np.frombuffer(data, np.uint8).reshape(x1 - x0, samples)
        return out

    def close(self) -> None:
        self._cache.clear()
        self._tiff.close()


def _check_brightfield(page: Any) -> None:
    """8-bit grey, RGB or RGBA, samples interleaved: what a brightfield stain gives."""
    photometric = int(page.photometric)
    if (
        page.dtype != np.uint8
        or page.samplesperpixel not in (1, 3, 4)
        or (page.samplesperpixel > 1 and int(page.planarconfig) != 1)
        or photometric not in (0, 1, 2, 6)  # min-is-white, min-is-black, RGB, YCbCr
    ):
        raise ImageProblem(
            "unsupported_format",
            f"a TIFF pyramid of {page.samplesperpixel} {page.dtype} sample(s) per pixel "
            f"(photometric {photometric}); brightfield slides are 8-bit RGB or grey",
        )


def _rgb(page: Any, pixels: np.ndarray) -> np.ndarray:
    """Decoded samples as RGB: grey repeated, min-is-white inverted, alpha on white."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] == 1:
        grey = pixels[..., 0]
        if int(page.photometric) == 0:
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=2)
    if pixels.shape[-1] == 4:
        return to_rgb(pixels)
    return np.ascontiguousarray(pixels[..., :3])


def resolution_mpp(page: Any) -> tuple[float | None, float | None]:
    """Microns per pixel from a page's resolution tags (inch or centimetre units), else None."""
    unit = _UM_PER_UNIT.get(int(page.resolutionunit or 1))
    if unit is None:
        return None, None
    values = []
    for ratio in page.resolution:
        values.append(unit / ratio if ratio and math.isfinite(ratio) and ratio > 0 else None)
    return values[0], values[1]


# --- opening -----------------------------------------------------------------------------------


def is_tiff(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4).startswith(_TIFF_MAGIC)


def tiff_levels(path: str | os.PathLike[str]) -> int:
    """Pyramid levels tifffile sees in a TIFF's first series (0: not a TIFF it can parse)."""
    path = Path(path)
    try:
        if not is_tiff(path):
            return 0
        with tifffile.TiffFile(path) as tiff:
            return len(tiff.series[0].levels) if tiff.series else 0
    except Exception:  # noqa: BLE001 - not a TIFF tifffile parses: OpenSlide decides
        return 0


@contextlib.contextmanager
def open_slide(path: str | os.PathLike[str]) -> Iterator[SlideReader]:
    """A `SlideReader` for a slide, or an ImageProblem that says why it is not usable.

    tifffile reads a TIFF in which it sees more pyramid levels than OpenSlide does (OME-TIFF,
    sub-IFD pyramids, which OpenSlide 4 opens as a one-level generic TIFF or not at all);
    OpenSlide reads the rest, vendor formats always.
    """
    path = Path(path)
    check_file(path)
    truncation = tiff_truncation(path)
    if truncation:
        raise ImageProblem("truncated", truncation)
    reader = _open(path)
    try:
        yield reader
    finally:
        reader.close()


def _open(path: Path) -> SlideReader:
    levels = tiff_levels(path)
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as error:
        if levels > 1:
            return TiffPyramidReader(path)
        raise ImageProblem(
            "unsupported_format",
            f"not a whole-slide image OpenSlide reads ({path.suffix or 'no '}"
            " extension); a plain untiled image belongs in an image cohort",
        ) from error
    except PermissionError as error:
        raise ImageProblem("unreadable", f"cannot read file ({error.strerror})") from error
    except (openslide.OpenSlideError, OSError) as error:
        raise read_problem(error, "opening") from error
    if levels > slide.level_count and slide.properties.get("openslide.vendor") == "generic-tiff":
        slide.close()  # a vendor format keeps OpenSlide, which knows its metadata
        return TiffPyramidReader(path)
    return OpenSlideReader(slide)


def is_slide(path: str | os.PathLike[str]) -> bool:
    """Whether a file is read as a slide: a slide-only extension, or a TIFF that OpenSlide or
    tifffile sees as a pyramid (more than one level; a flat TIFF stays a plain image)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SLIDE_EXTENSIONS:
        return False
    if suffix not in TIFF_SUFFIXES:
        return True
    if tiff_levels(path) > 1:
        return True
    try:
        if openslide.OpenSlide.detect_format(str(path)) is None:
            return False
        with contextlib.closing(openslide.OpenSlide(str(path))) as slide:
            return slide.level_count > 1
    except (openslide.OpenSlideError, OSError):
        return False


def tiff_truncation(path: Path) -> str | None:
    """For TIFF-family slides, whether the file ends before its pages or tiles do.

    Every page's (and every pyramid level's, sub-IFDs included) tile offsets and byte counts
    are checked against the file size, and a page chain pointing past the end (tifffile logs
    it and stops) counts too: an interrupted copy is caught without decoding a tile, where
    OpenSlide would often call it an unsupported format. None when fine, or not a TIFF.
    """
    if not is_tiff(path):
        return None
    size = path.stat().st_size
    broken = _CapturedLog()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(broken)
    propagate, tiff_logger.propagate = tiff_logger.propagate, False
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            for series in tiff.series:
                pages += [page for level in series.levels for page in level.pages if page]
            needed = max(
                (
                    int(np.max(np.add(page.dataoffsets, page.databytecounts)))
                    for page in pages
                    if len(getattr(page, "dataoffsets", ()))
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


def read_region(
    slide: SlideReader, x: int, y: int, level: int, width: int, height: int
) -> np.ndarray:
    """RGB pixels of a region at `level` whose top-left is level-0 (x, y); ImageProblem on a
    read failure (a truncated or corrupt tile)."""
    return slide.read_region((int(x), int(y)), level, (int(width), int(height)))
