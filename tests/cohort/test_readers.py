"""Decoders of one file (cohort/readers.py), moved from test_bad_input.py (issue 12,
findings 3 and 4): decompression limits from the header for every decoder, and bit depth."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ssc_skin.cohort import readers
from ssc_skin.cohort.checks import ImageProblem


def _tissue(seed, h=160, w=160):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 245, np.uint8)
    image[20:-20, 20:-20] = (190 + seed % 50, 70 + seed % 30, 150)
    image[20:-20, 20:-20] += rng.integers(0, 5, (h - 40, w - 40, 3), dtype=np.uint8)
    return image


def _save(path, array, **options):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


# --- 3: decompression limits, from the header, for every decoder ----------------------------


def _png_header_only(path, width, height, depth=8, colour=2):
    """A tiny PNG that declares a huge image (its pixel data is a few zero bytes)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_a_huge_float_tiff_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.float16), compression="zlib")
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 1000)  # a 64x64 stand-in for 15000x15000
    decoded = []
    monkeypatch.setattr(
        tifffile.TiffPage, "asarray", lambda self, *a, **k: decoded.append(1) or np.zeros((64, 64))
    )
    with pytest.raises(ImageProblem) as caught:
        readers.read_rgb(path)
    assert caught.value.check == "too_large" and "4096 pixels" in caught.value.reason
    assert not decoded  # refused from the header, nothing was decoded


def test_the_pixel_limit_covers_pillow_and_the_16_bit_colour_path(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 1000)
    _save(tmp_path / "rgb.png", _tissue(1, 40, 40))
    with pytest.raises(ImageProblem, match="too large"):
        readers.read_rgb(tmp_path / "rgb.png")
    _png_header_only(tmp_path / "rgb16.png", 50, 50, depth=16)
    with pytest.raises(ImageProblem, match="too large"):
        readers.read_rgb(tmp_path / "rgb16.png")


def test_check_encoded_image_reads_only_the_header(monkeypatch):
    """For decoders that take bytes (OpenCV in the REST server): size from the header."""
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 10_000)
    small = io.BytesIO()
    Image.fromarray(_tissue(1, 64, 64)).save(small, format="PNG")
    assert readers.check_encoded_image(small.getvalue()) == (64, 64)
    big = io.BytesIO()
    Image.new("L", (200, 200)).save(big, format="PNG")
    with pytest.raises(ImageProblem) as caught:
        readers.check_encoded_image(big.getvalue())
    assert caught.value.check == "too_large"
    with pytest.raises(ImageProblem) as caught:
        readers.check_encoded_image(b"not an image")
    assert caught.value.check == "not_an_image"


# --- 4: bit depth -----------------------------------------------------------------------------


def _png16_rgb(path, array16, sbit=None):
    """A 16-bit RGB PNG (Pillow cannot write one), optionally with an sBIT chunk."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    h, w, _ = array16.shape
    raw = b"".join(b"\0" + array16[y].astype(">u2").tobytes() for y in range(h))
    chunks = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    if sbit:
        chunks += chunk(b"sBIT", bytes([sbit] * 3))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunks + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("sbit", [None, 12])
def test_12_bit_data_in_a_16_bit_png_keeps_its_brightness(tmp_path, sbit):
    rgb8 = _tissue(3)
    twelve = np.rint(rgb8.astype(np.float64) * 4095 / 255).astype(np.uint16)  # 0..4095
    image, notes = readers.read_rgb(_png16_rgb(tmp_path / "t.png", twelve, sbit))
    assert np.abs(image.astype(int) - rgb8).max() <= 1  # not black (>> 8 gave 0..15)
    source = "sBIT" if sbit else "maximum value"
    assert notes == [f"16-bit -> 8-bit (12 significant bits, from its {source})"]


def test_12_bit_grayscale_png_and_tiff_keep_their_brightness(tmp_path):
    gray8 = _tissue(4).mean(axis=2).astype(np.uint8)
    twelve = (gray8.astype(np.uint32) * 4095 // 255).astype(np.uint16)
    _save(tmp_path / "g.png", twelve)
    tifffile.imwrite(tmp_path / "g.tif", twelve)
    tifffile.imwrite(tmp_path / "c.tif", np.dstack([twelve] * 3), photometric="rgb")
    for name in ("g.png", "g.tif", "c.tif"):
        image, _ = readers.read_rgb(tmp_path / name)
        assert np.abs(image[..., 0].astype(int) - gray8).max() <= 1, name
