"""Opening slides: OpenSlide's decoders, and tifffile for pyramids OpenSlide sees flat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.slides import checks, metadata, readers, tiles


def test_openslide_decoders_of_vendor_formats():
    """OpenSlide's built-in synthetic slide decodes one sample of every codec its vendor
    formats use (JPEG, JPEG 2000, DICOM JPEG, LZW and JPEG TIFF, BigTIFF, PNG, BMP, zstd);
    it opens only when OPENSLIDE_DEBUG=synthetic is set before the library loads."""
    code = (
        "import openslide, numpy; s = openslide.OpenSlide(''); "
        "print(s.properties['openslide.vendor'], sorted(k for k in s.properties "
        "if k.startswith('synthetic.item.')).__len__(), "
        "sum(k.startswith('synthetic.image[') for k in s.properties), "
        "numpy.asarray(s.read_region((0, 0), 0, s.dimensions))[..., 3].max())"
    )
    env = {**os.environ, "OPENSLIDE_DEBUG": "synthetic"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    vendor, items, rendered, alpha = out
    assert vendor == "synthetic" and int(items) >= 10 and int(rendered) >= 8 and alpha == "255"


# --- TIFF pyramids OpenSlide sees as one level (OME-TIFF, sub-IFDs) ---------------------------


def pyramid(seed: int = 0, size: tuple[int, int] = (1536, 2048)) -> list[np.ndarray]:
    """Level 0 (stained-looking noise with a glass margin) and two area-averaged halvings."""
    rng = np.random.default_rng(seed)
    level0 = np.full((*size, 3), 245, np.uint8)
    h, w = size
    level0[h // 8 : -h // 8, w // 8 : -w // 8] = rng.integers(
        (120, 40, 90), (230, 150, 200), (h - 2 * (h // 8), w - 2 * (w // 8), 3)
    ).astype(np.uint8)
    levels = [level0]
    for _ in range(2):
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return levels


def write_pyramid(path: Path, levels: list[np.ndarray], ome: bool, tile: int | None = 256) -> Path:
    """Levels 1.. as sub-IFDs of level 0, as OME-TIFF or a plain TIFF with resolution tags."""
    options = {"photometric": "rgb", "compression": "zlib"} | (
        {"tile": (tile, tile)} if tile else {}
    )
    with tifffile.TiffWriter(path, ome=ome) as tif:
        tif.write(
            levels[0],
            subifds=len(levels) - 1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25} if ome else None,
            resolution=None if ome else (1e4 / 0.25, 1e4 / 0.25),
            resolutionunit=None if ome else "CENTIMETER",
            **options,
        )
        for level in levels[1:]:
            tif.write(level, subfiletype=1, metadata=None, **options)
    return path


@pytest.mark.parametrize(
    ("name", "ome", "tile", "vendor"),
    [
        ("MRN-4471-Smith_DOB19700101.ome.tif", True, 256, "ome-tiff"),
        ("PAT_0042 (Jane Doe).tif", False, 256, "tiff-pyramid"),
        ("PAT_0042_strips.ome.tiff", True, None, "ome-tiff"),  # stripped, not tiled
    ],
)
def test_subifd_pyramids_are_read_with_every_level(tmp_path, name, ome, tile, vendor):
    """OpenSlide 4 sees one level (or none, for strips); the reader sees the whole pyramid,
    and a region of any level is that level's pixels, i.e. level 0 area-averaged."""
    levels = pyramid()
    path = write_pyramid(tmp_path / name, levels, ome, tile)
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir())
    assert readers.is_slide(path)
    with readers.open_slide(path) as slide:
        assert isinstance(slide, readers.TiffPyramidReader)
        assert slide.level_count == 3 and slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.properties["openslide.vendor"] == vendor
        assert metadata.slide_info(slide).mpp == pytest.approx(0.25)
        for level, downsample in ((1, 2), (2, 4)):
            x, y, w, h = 640, 384, 300, 200  # level-0 origin, level size
            region = slide.read_region((x, y), level, (w, h))
            expected = levels[level][y // downsample : y // downsample + h, x // downsample :][
                :, :w
            ]
            assert np.array_equal(region, expected)
            coarse = cv2.resize(
                levels[0], None, fx=1 / downsample, fy=1 / downsample, interpolation=cv2.INTER_AREA
            )
            assert (
                np.abs(
                    region.astype(int) - coarse[y // downsample :][:h, x // downsample :][:, :w]
                ).max()
                <= 1
            )
        edge = slide.read_region((2000, 1500), 0, (100, 80))  # past the right and bottom edges
        assert np.array_equal(edge[:36, :48], levels[0][1500:, 2000:]) and (edge[36:] == 255).all()
    assert (
        sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir())
        == before
    )


def test_flat_tiff_is_not_a_slide_but_a_pyramid_is(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, pyramid()[0], tile=(256, 256), photometric="rgb")
    assert not readers.is_slide(flat)
    assert readers.is_slide(write_pyramid(tmp_path / "p.tif", pyramid(), ome=False))
    assert not readers.is_slide(tmp_path / "p.png")


def test_single_level_slide_is_read_in_bounded_blocks(tmp_path, monkeypatch):
    """A one-level tiled TIFF (OpenSlide reads it) is shrunk to its thumbnail in reads of at
    most READ_BLOCK level pixels a side, never a large part of the level at once."""
    path = tmp_path / "one_level.tif"
    tifffile.imwrite(
        path,
        np.tile(pyramid()[0], (2, 2, 1)),
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(1e4 / 0.25, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )
    sizes = []
    original = readers.OpenSlideReader.read_region

    def spy(self, location, level, size):
        sizes.append(size)
        return original(self, location, level, size)

    monkeypatch.setattr(readers.OpenSlideReader, "read_region", spy)
    tissue = tiles.read_tissue(path, 64, 2.0, max_thumbnail_pixels=4096)
    assert tissue.plan.thumbnail_downsample > 8 and tissue.mask.any()  # far coarser than level 0
    assert max(w * h for w, h in sizes) <= tiles.READ_BLOCK**2
    facts, _ = checks.validate_slide(path, 64, 2.0, max_thumbnail_pixels=4096)
    assert facts["level_count"] == 1 and facts["tiles"] > 0


def test_tiff_pyramid_problems_are_quarantine_checks(tmp_path, monkeypatch):
    """A cut-short sub-IFD pyramid is `truncated`; a corrupt tile `unreadable` without the
    path; a compressed strip too large to decode in parts `too_large`."""
    path = write_pyramid(tmp_path / "MRN-4471-Smith.ome.tif", pyramid(), ome=True)
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    with pytest.raises(ImageProblem) as caught, readers.open_slide(cut):
        pass
    assert caught.value.check == "truncated"
    with tifffile.TiffFile(path) as tiff:
        page = tiff.series[0].levels[1].keyframe
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x07" * count
    broken = tmp_path / "broken.ome.tif"
    broken.write_bytes(bytes(data))
    with readers.open_slide(broken) as slide, pytest.raises(ImageProblem) as caught:
        slide.read_region((0, 0), 1, (64, 64))
    assert caught.value.check in ("unreadable", "truncated")
    assert "MRN" not in caught.value.reason and str(tmp_path) not in caught.value.reason
    strips = write_pyramid(tmp_path / "strips.ome.tif", pyramid(), ome=True, tile=None)
    monkeypatch.setattr(readers, "MAX_SEGMENT_PIXELS", 1000)
    with readers.open_slide(strips) as slide, pytest.raises(ImageProblem) as caught:
        slide.read_region((0, 0), 0, (64, 64))
    assert caught.value.check == "too_large" and "tiled" in caught.value.reason


def test_fluorescence_pyramid_is_not_a_brightfield_slide(tmp_path):
    """A 16-bit multichannel OME pyramid (immunofluorescence) is refused with the reason,
    not decoded as if it were a stain."""
    path = tmp_path / "PAT_0042_IF.ome.tif"
    channels = np.zeros((3, 1024, 1024), np.uint16)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(channels, subifds=1, tile=(256, 256), metadata={"axes": "CYX"})
        tif.write(channels[:, ::2, ::2], subfiletype=1, tile=(256, 256))
    with pytest.raises(ImageProblem) as caught, readers.open_slide(path):
        pass
    assert caught.value.check == "unsupported_format" and "8-bit" in caught.value.reason
    planes = tmp_path / "PAT_0042_IF8.ome.tif"  # 8-bit, but one plane per channel
    with tifffile.TiffWriter(planes, ome=True) as tif:
        tif.write(channels.astype(np.uint8), subifds=1, tile=(256, 256), metadata={"axes": "CYX"})
        tif.write(channels[:, ::2, ::2].astype(np.uint8), subfiletype=1, tile=(256, 256))
    with pytest.raises(ImageProblem) as caught, readers.open_slide(planes):
        pass
    assert caught.value.check == "unsupported_format" and "CYX" in caught.value.reason
