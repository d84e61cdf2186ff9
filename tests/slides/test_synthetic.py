"""Synthetic slides: pyramidal tiled TIFFs that OpenSlide reads, with sections on glass."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
import pandas as pd
import pytest
import tifffile

from ssc_skin.slides import synthetic as ss


@pytest.fixture(scope="module")
def aperio(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    return ss.write_synthetic_slide(
        root / "a.svs", 4000, 3000, sections=3, label="late", mpp=0.5, style="aperio", seed=3
    )


def test_openslide_reads_the_aperio_slide(aperio):
    with openslide.OpenSlide(aperio.path) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert slide.dimensions == (4000, 3000)
        assert slide.level_count == 3
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        thumbnail = slide.get_thumbnail((400, 300))
        region = np.asarray(slide.read_region((1000, 1000), 0, (256, 256)))
    assert thumbnail.size[0] == 400
    assert region.shape == (256, 256, 4) and region[..., 3].min() == 255


def test_file_is_a_zlib_tiled_pyramid(aperio):
    with tifffile.TiffFile(aperio.path) as tiff:
        pages = list(tiff.pages)
        assert [p.shape[:2] for p in pages] == [(3000, 4000), (1500, 2000), (750, 1000)]
        assert all(p.is_tiled and p.tilewidth == ss.TILE for p in pages)
        assert all(p.compression == tifffile.COMPRESSION.ADOBE_DEFLATE for p in pages)
        assert pages[0].description.startswith("Aperio Image Library")
        assert "|MPP = 0.5" in pages[0].description


def test_levels_agree_with_each_other(aperio):
    """Level 1 is level 0 halved: a reader may pick either and see the same tissue."""
    x, y, w, h = aperio.sections[0]
    with tifffile.TiffFile(aperio.path) as tiff:
        level0 = tiff.pages[0].asarray()[y : y + h, x : x + w]
        level1 = tiff.pages[1].asarray()[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
    halved = cv2.resize(level0, (level1.shape[1], level1.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(halved.astype(int) - level1).mean() < 2


def test_sections_sit_on_glass(aperio):
    with openslide.OpenSlide(aperio.path) as slide:
        whole = np.asarray(slide.read_region((0, 0), 2, slide.level_dimensions[2]))[..., :3]
    saturation = cv2.cvtColor(whole, cv2.COLOR_RGB2HSV)[..., 1]
    inside = np.zeros(saturation.shape, bool)
    for x, y, w, h in aperio.sections:
        inside[y // 4 : (y + h) // 4 + 1, x // 4 : (x + w) // 4 + 1] = True  # edge pixels mix
        centre = saturation[
            (y + h // 2) // 4 - 20 : (y + h // 2) // 4 + 20,
            (x + w // 2) // 4 - 20 : (x + w // 2) // 4 + 20,
        ]
        assert centre.mean() > 30  # stained tissue in the middle of each section
    assert len(aperio.sections) == 3
    assert np.all(whole[~inside] == ss.GLASS_RGB)  # glass between and around sections
    assert (saturation[inside] > 20).mean() > 0.4


@pytest.mark.parametrize(("style", "vendor"), [("generic", "generic-tiff"), ("philips", "philips")])
def test_other_styles_carry_their_mpp(tmp_path, style, vendor):
    record = ss.write_synthetic_slide(
        tmp_path / f"s{ss.SUFFIX[style]}", 2048, 1536, sections=2, mpp=0.25, style=style
    )
    with openslide.OpenSlide(record.path) as slide:
        assert slide.properties["openslide.vendor"] == vendor
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert slide.level_count == 2


@pytest.mark.parametrize("style", ss.STYLES)
def test_slides_without_mpp_have_none(tmp_path, style):
    record = ss.write_synthetic_slide(
        tmp_path / f"s{ss.SUFFIX[style]}", 2048, 1536, sections=1, mpp=None, style=style
    )
    with openslide.OpenSlide(record.path) as slide:
        assert "openslide.mpp-x" not in slide.properties
        assert slide.dimensions == (2048, 1536)


def test_tiles_stream_one_strip_at_a_time():
    """The writer's input is a generator of tile-sized arrays, never the level itself."""
    image = np.full((40, 60, 3), 100, np.uint8)
    sections = ss._level_sections([ss.Placement(image, 10, 20, 4.0)], 1)
    tiles = ss._tiles(sections, 1000, 700, 256)
    first = next(tiles)
    assert first.shape == (256, 256, 3)
    rest = list(tiles)
    assert len(rest) + 1 == 4 * 3
    # the section (240 x 160 level-0 px at (10, 20)) lands in the first tile only
    assert (first[20:180, 10:250] == 100).all() and (first[:20] == ss.GLASS_RGB).all()
    assert all((t == ss.GLASS_RGB).all() for t in rest)


def test_cohort_writes_slides_and_a_manifest(tmp_path):
    manifest = ss.write_slide_cohort(
        tmp_path,
        {"normal": 1, "late": 1},
        slides_per_patient=2,
        width=1024,
        height=1024,
        sections=1,
    )
    assert list(manifest.columns) == ["image_path", "patient_id", "label"]
    assert len(manifest) == 4 and manifest["patient_id"].nunique() == 2
    assert (tmp_path / "manifest.csv").exists()
    assert pd.read_csv(tmp_path / "manifest.csv").equals(manifest)
    for relative in manifest["image_path"]:
        assert relative.split("/")[0] in ("normal", "late") and relative.endswith(".svs")
        assert (tmp_path / relative).stat().st_size > 0
    with pytest.raises(ValueError, match="unknown labels"):
        ss.write_slide_cohort(tmp_path, {"mild": 1})


def test_truncated_copy_is_cut_short(aperio, tmp_path):
    cut = ss.truncated_copy(aperio.path, tmp_path / "cut.svs", 0.5)
    full = Path(aperio.path).stat().st_size
    assert cut.stat().st_size == int(full * 0.5)
    with pytest.raises(ValueError):
        ss.truncated_copy(aperio.path, tmp_path / "x.svs", 1.0)


def test_layout_separates_sections():
    cells = ss.layout(40_000, 40_000, 16, 2.0, 0.5)
    assert len(cells) == 16
    boxes = [(x, y, x + w * 4, y + h * 4) for x, y, w, h in cells]
    for i, a in enumerate(boxes):
        assert a[2] <= 40_000 and a[3] <= 40_000
        for b in boxes[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]  # glass between
