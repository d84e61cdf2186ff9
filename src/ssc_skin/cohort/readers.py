"""Decoders for one image file: PNG, JPEG, TIFF pages, bit depth and colour (no Kedro here).

`read_rgb` gives uint8 RGB and a note per conversion; `read_mask` class indices. Choices:

- Samples wider than 8 bits are scaled by the image's significant bits (PNG sBIT, TIFF
  MaxSampleValue, else the smallest of 8/10/12/14/16 bits that holds its maximum), so 12-bit
  data in a 16-bit file keeps its brightness (see `_to_uint8`).
- Every decoder (Pillow, tifffile, OpenCV) gets the image size from the header first; more
  than `MAX_IMAGE_PIXELS` pixels (Pillow's own bomb limit) or `MAX_DECODED_BYTES` of samples
  is an ImageProblem ``too_large`` before anything is decoded.
- A grayscale image is converted to RGB; transparency is composited on white.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ssc_skin.cohort.checks import ImageProblem

# Pillow's format names; MPO is what Pillow calls a camera JPEG that holds extra frames.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "BMP"})
# Decompression limits, checked from the header before any decoder runs: Pillow's own bomb
# limit (~89.5 million pixels) and 1 GiB of decoded samples (a float TIFF is 4-8 bytes each).
MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
MAX_DECODED_BYTES = 1 << 30
_EXIF_ORIENTATION = 0x0112
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_MAX_SAMPLE_VALUE = 281
_WIDTHS = (8, 10, 12, 14, 16)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class _Depth:
    """How many bits a file's samples have: as stored, and as significant (if it says)."""

    stored: int = 8
    significant: int | None = None  # from PNG sBIT or TIFF MaxSampleValue
    source: str = ""


class _NeedsTifffile(ImageProblem):
    """Internal: a TIFF whose samples Pillow would cut to 8 bits; tifffile reads it whole."""

    def __init__(self) -> None:
        super().__init__("needs_tifffile", "wide TIFF samples")


def read_rgb(path: str | os.PathLike[str], tiff_page: int = 0) -> tuple[np.ndarray, list[str]]:
    """The image as uint8 HxWx3 RGB, fully decoded, and a note per conversion made.

    Raises ImageProblem when the file is missing, empty, not an image, truncated, corrupt or
    too large to decode safely (checked from the header, before decoding).
    """
    path = Path(path)
    try:
        return _decode(path, tiff_page, _pil_to_rgb)
    except _NeedsTifffile:
        pass
    except ImageProblem as problem:
        if problem.check != "not_an_image" or not _starts_with(path, _TIFF_MAGIC):
            raise
    return _read_tiff_with_tifffile(path, tiff_page)


def header_pixels(path: str | os.PathLike[str]) -> int:
    """Width x height from an image file's header (nothing decoded); 0 when the file is
    missing, no image or unreadable, which the decoder then reports."""
    path = Path(path)
    try:
        if not _starts_with(path, (_PNG_MAGIC, b"\xff\xd8", b"BM", *_TIFF_MAGIC)):
            return 0
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # the decoder will say what is wrong with it
        return 0
    return int(width) * int(height)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask as uint8 HxW class indices (palette PNGs give their indices, not colours)."""
    mask, _ = _decode(Path(path), 0, _pil_to_indices)
    return mask


def check_encoded_image(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, read from its header only; raises ImageProblem
    when it is no image or larger than the decompression limits. Call it before handing
    bytes to a decoder that has no limit of its own (OpenCV's `imdecode`)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageProblem("too_large", f"image too large to decode safely ({error})") from error
    except Exception as error:
        raise ImageProblem("not_an_image", "not an image (format not recognised)") from error
    _check_size(width, height)
    return width, height


def _check_size(width: int, height: int, nbytes: int | None = None) -> None:
    """Decompression limits, from the header: pixels, and decoded bytes where known."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageProblem(
            "too_large",
            f"image too large to decode safely: {width}x{height} = "
            f"{width * height} pixels, limit {MAX_IMAGE_PIXELS} "
            "pixels (tile it, or use a slide cohort)",
        )
    if nbytes is not None and nbytes > MAX_DECODED_BYTES:
        raise ImageProblem(
            "too_large",
            f"image too large to decode safely: {nbytes} bytes of "
            f"samples, limit {MAX_DECODED_BYTES} bytes",
        )


_STRICT_LOCK = threading.Lock()
_STRICT_USERS = [0, False]  # decoders inside `_strict_decoding` now, the flag before them


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on a truncated file instead of padding it with grey.

    The flag is process-wide and another library may have set it; it is forced off while
    any thread decodes here and put back when the last one leaves.
    """
    with _STRICT_LOCK:
        if _STRICT_USERS[0] == 0:
            _STRICT_USERS[1] = ImageFile.LOAD_TRUNCATED_IMAGES
        _STRICT_USERS[0] += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _STRICT_LOCK:
            _STRICT_USERS[0] -= 1
            if _STRICT_USERS[0] == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _STRICT_USERS[1]


def check_file(path: Path) -> None:
    if not path.exists():
        raise ImageProblem("file_missing", "file missing")
    if not path.is_file():
        raise ImageProblem("not_a_file", "not a regular file")
    if path.stat().st_size == 0:
        raise ImageProblem("empty_file", "empty file (0 bytes)")


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    with path.open("rb") as handle:
        head = handle.read(8)
    return head.startswith(magics)


def _decode(
    path: Path, page: int, convert: Callable[[Image.Image, _Depth], tuple[np.ndarray, list[str]]]
) -> tuple[np.ndarray, list[str]]:
    """Open, check the format and size, pick the TIFF page, decode in full, apply EXIF
    orientation.

    Any failure inside Pillow is turned into an ImageProblem: a corrupt file can make a
    format plugin raise nearly anything. 16-bit colour PNGs are decoded by OpenCV, since
    Pillow keeps only their high byte; wide TIFFs go to tifffile (see `read_rgb`).
    """
    check_file(path)
    notes: list[str] = []
    try:
        with _strict_decoding():
            png = _png_header(path) if _starts_with(path, (_PNG_MAGIC,)) else None
            if png is not None:
                with Image.open(path) as image:
                    image.verify()  # chunk checksums, which decoding alone does not check
            with Image.open(path) as source:
                if source.format not in IMAGE_FORMATS:
                    raise ImageProblem(
                        "unsupported_format",
                        f"unsupported image format {source.format}; allowed: "
                        + ", ".join(sorted(IMAGE_FORMATS - {"MPO"})),
                    )
                if source.format == "TIFF":
                    notes += _seek_tiff_page(source, page)
                _check_size(*source.size)
                depth = _pillow_depth(source, png)
                if convert is _pil_to_rgb and source.format == "TIFF" and depth.stored > 8:
                    raise _NeedsTifffile
                if (
                    convert is _pil_to_rgb
                    and png is not None
                    and png[2] == 16
                    and png[3] in (2, 4, 6)
                ):
                    array, converted = _png16_with_opencv(path, depth)
                    return array, notes + converted
                source.load()
                image = source
                orientation = source.getexif().get(_EXIF_ORIENTATION, 1)
                if orientation in range(2, 9):
                    image = ImageOps.exif_transpose(source)
                    notes.append(f"EXIF orientation {orientation} applied")
                array, converted = convert(image, depth)
    except ImageProblem:
        raise
    except UnidentifiedImageError as error:
        raise ImageProblem("not_an_image", "not an image (format not recognised)") from error
    except Image.DecompressionBombError as error:
        raise ImageProblem("too_large", f"image too large to decode safely ({error})") from error
    except PermissionError as error:
        raise ImageProblem("unreadable", f"cannot read file ({error.strerror})") from error
    except Exception as error:
        if "truncat" in str(error).lower():
            raise ImageProblem("truncated", "truncated image data (file cut short)") from error
        raise ImageProblem("corrupt", f"corrupt image data ({error})") from error
    return array, notes + converted


def _seek_tiff_page(image: Image.Image, page: int) -> list[str]:
    pages = getattr(image, "n_frames", 1)
    if page >= pages:
        raise ImageProblem(
            "tiff_page",
            f"TIFF page {page} requested but the file has {pages} page(s) (pages count from 0)",
        )
    if pages == 1:
        return []
    image.seek(page)
    return [f"multi-page TIFF: page {page} of {pages} used (pages count from 0)"]


def _png_header(path: Path) -> tuple[int, int, int, int, int | None]:
    """(width, height, bit depth, colour type, significant bits from sBIT) of a PNG.

    Reads chunk headers up to the first IDAT only (a few dozen bytes in practice).
    """
    width = height = depth = colour = 0
    significant = None
    with path.open("rb") as handle:
        handle.read(8)
        for _ in range(256):  # a bounded walk: chunk headers, not pixel data
            head = handle.read(8)
            if len(head) < 8:
                break
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in {b"IDAT", b"IEND"}:
                break
            data = handle.read(length) if kind in (b"IHDR", b"sBIT") and length < 64 else None
            if data is None:
                handle.seek(length, os.SEEK_CUR)
            elif kind == b"IHDR" and len(data) >= 10:
                width, height = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
                depth, colour = data[8], data[9]
            elif kind == b"sBIT" and data:
                colours = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(colour, len(data))
                significant = max(data[:colours])
            handle.seek(4, os.SEEK_CUR)  # CRC
    return width, height, depth, colour, significant


def _pillow_depth(image: Image.Image, png: tuple[int, int, int, int, int | None] | None) -> _Depth:
    """Stored and significant bits per sample: Pillow hides both, so read the header."""
    if image.format == "TIFF":
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 1)
        return _Depth(max(bits if isinstance(bits, tuple) else (bits,)))
    if png is not None and png[2] == 16:
        return _Depth(16, png[4] if png[4] and png[4] < 16 else None, "sBIT")
    return _Depth()


def _png16_with_opencv(path: Path, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """A 16-bit colour (or grey + alpha) PNG at full depth; size already checked."""
    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageProblem("corrupt", "corrupt image data (16-bit PNG not decodable)")
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    colour = array[..., [2, 1, 0]] if channels >= 3 else np.repeat(array[..., :1], 3, axis=2)
    rgb, notes = _to_uint8(np.ascontiguousarray(colour), depth)
    if channels in (2, 4):
        alpha = array[..., -1:].astype(np.float32) / 65535
        rgb = np.rint(rgb * alpha + 255 * (1 - alpha)).astype(np.uint8)
        notes.append(
            f"{'RGBA' if channels == 4 else 'LA'} -> RGB (transparency composited on white)"
        )
    elif channels == 1:
        notes.append("grayscale -> RGB")
    return rgb, notes


def _pil_to_rgb(image: Image.Image, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode to uint8 RGB, with a note per conversion."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        gray, notes = _to_uint8(np.asarray(image), depth)
        return np.repeat(gray[..., None], 3, axis=2), [*notes, "grayscale -> RGB"]
    notes: list[str] = []
    if mode == "RGB":
        return np.asarray(image), notes
    if mode in ("L", "1"):
        notes.append("grayscale -> RGB")
    elif mode == "P" and "transparency" not in image.info:
        notes.append("palette -> RGB")
    elif mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
        notes.append(
            f"{'palette' if mode in ('P', 'PA') else mode} -> RGB "
            "(transparency composited on white)"
        )
    else:
        notes.append(f"{mode} -> RGB")
    return np.asarray(image.convert("RGB")), notes


def _pil_to_indices(image: Image.Image, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """A single-channel mask as class indices; a colour mask is ambiguous and refused."""
    del depth  # class indices are never rescaled
    array = np.asarray(image)
    if image.mode == "RGB" and (array == array[..., :1]).all():
        array = array[..., 0]
    if array.ndim != 2:
        raise ImageProblem(
            "not_class_indices", f"mask must be single-channel class indices; got mode {image.mode}"
        )
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ImageProblem("not_class_indices", "mask values must be class indices 0..255")
    return array.astype(np.uint8), []


def _to_uint8(array: np.ndarray, depth: _Depth | None = None) -> tuple[np.ndarray, list[str]]:
    """Samples to uint8 by the file's bit depth (never per-image contrast stretching).

    Wide samples are scaled by 255 / (2^bits - 1), `bits` being the significant bits the
    header gives (PNG sBIT, TIFF MaxSampleValue) or else the smallest of 8, 10, 12, 14, 16
    that holds the image's maximum: a 12-bit camera's 0..4095 in a 16-bit file keeps its
    brightness (its high byte alone would be 0..15, black), while every image of the same bit
    depth shares one map, so stain colours stay comparable. A header that claims fewer bits
    than the values need is overruled by the values.
    """
    depth = depth or _Depth()
    if array.dtype == np.uint8:
        return array, []
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255, []
    if array.dtype.kind in "ui" and array.size and array.min() >= 0:
        top = int(array.max())
        if top <= 255 and depth.stored <= 8:
            return array.astype(np.uint8), []
        if top <= 65535:
            bits, source = depth.significant, depth.source
            if not bits or top >= 1 << bits:
                bits = next(b for b in _WIDTHS if top < 1 << b)
                source = "maximum value"
            scaled = np.rint(array.astype(np.float32) * np.float32(255 / ((1 << bits) - 1)))
            stored = depth.stored if depth.stored > 8 else 16
            return np.clip(scaled, 0, 255).astype(np.uint8), [
                f"{stored}-bit -> 8-bit ({bits} significant bits, from its {source})"
            ]
    if (
        array.dtype.kind == "f"
        and np.isfinite(array).all()
        and array.min() >= 0
        and array.max() <= 1
    ):
        return np.rint(array * 255).astype(np.uint8), ["float -> 8-bit (x255)"]
    raise ImageProblem(
        "unsupported_pixels",
        f"unsupported sample values ({array.dtype}, not 8/16-bit or float 0..1)",
    )


def _read_tiff_with_tifffile(path: Path, page: int) -> tuple[np.ndarray, list[str]]:
    """TIFFs that Pillow cannot open (e.g. float samples) or would cut to 8 bits (16-bit):
    grey or RGB pages only, size checked from the page's tags before decoding."""
    notes = ["decoded with tifffile"]
    try:
        with tifffile.TiffFile(path) as tiff:
            if page >= len(tiff.pages):
                raise ImageProblem(
                    "tiff_page",
                    f"TIFF page {page} requested but the file has "
                    f"{len(tiff.pages)} page(s) (pages count from 0)",
                )
            if len(tiff.pages) > 1:
                notes.append(
                    f"multi-page TIFF: page {page} of {len(tiff.pages)} used (pages count from 0)"
                )
            tiff_page = tiff.pages[page]
            _check_size(tiff_page.imagewidth, tiff_page.imagelength, tiff_page.nbytes)
            maximum = tiff_page.tags.get(_TIFF_MAX_SAMPLE_VALUE)
            extras = tuple(getattr(tiff_page, "extrasamples", ()) or ())
            array = tiff_page.asarray()
            photometric = tiff_page.photometric
            if array.ndim == 3 and tiff_page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                array = np.moveaxis(array, 0, -1)
    except ImageProblem:
        raise
    except Exception as error:
        message = str(error)
        check = "truncated" if "failed to read" in message else "corrupt"
        raise ImageProblem(check, f"unreadable TIFF ({message})") from error
    rgb = photometric == tifffile.PHOTOMETRIC.RGB and array.ndim == 3 and array.shape[2] >= 3
    gray = (
        photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE)
        and array.ndim == 2
    )
    if not (rgb or gray):
        raise ImageProblem(
            "unsupported_pixels",
            f"unsupported TIFF layout ({photometric.name}, shape {array.shape})",
        )
    depth = _tiff_depth(array, maximum)
    alpha = None
    if rgb and array.shape[2] > 3 and extras and int(extras[0]) in (1, 2):  # (un)assoc. alpha
        alpha, _ = _to_uint8(array[..., 3], depth)
    converted, more = _to_uint8(np.ascontiguousarray(array[..., :3] if rgb else array), depth)
    notes += more
    if gray:
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            converted = 255 - converted
        return np.repeat(converted[..., None], 3, axis=2), [*notes, "grayscale -> RGB"]
    if alpha is not None:
        weight = alpha[..., None].astype(np.float32) / 255
        converted = np.rint(converted * weight + 255 * (1 - weight)).astype(np.uint8)
        notes.append("RGBA -> RGB (transparency composited on white)")
    elif array.shape[2] > 3:
        notes.append("extra samples dropped")
    return converted, notes


def _tiff_depth(array: np.ndarray, maximum: Any) -> _Depth:
    """Stored bits from the dtype; significant bits from MaxSampleValue, when it says less."""
    stored = array.dtype.itemsize * 8 if array.dtype.kind in "ui" else 8
    value = getattr(maximum, "value", None)
    top = max(value) if isinstance(value, tuple | list) else value
    if isinstance(top, int) and 0 < top < (1 << stored) - 1:
        return _Depth(stored, top.bit_length(), "MaxSampleValue")
    return _Depth(stored)


_check_file = check_file  # the name slides/readers.py imported before it was public
