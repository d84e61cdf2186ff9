"""Checks of one slide and of a slide cohort (the quarantine vocabulary of images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from ssc_skin.cohort.checks import QUARANTINE_COLUMNS, ImageProblem
from ssc_skin.slides import checks as slides
from ssc_skin.slides import synthetic as ss
from ssc_skin.slides.discovery import discover_slide_folder
from ssc_skin.slides.tiles import count_tiles, iter_slide_batches

ALLOWED = ["normal", "early", "late", "ssc"]


def all_batches(path, target=2.0, **options):
    return list(iter_slide_batches(path, 64, target, **options))


def problem(path, **options) -> ImageProblem:
    with pytest.raises(ImageProblem) as caught:
        slides.validate_slide(path, 64, options.pop("target", 2.0), **options)
    return caught.value


def test_valid_slide_facts(aperio):
    facts, tissue = slides.validate_slide(aperio.path, 64, 2.0)
    assert facts["microns_per_pixel"] == 0.5 and facts["mpp_source"] == "metadata"
    assert facts["vendor"] == "aperio" and facts["level_count"] == 3
    assert facts["read_level"] == 1 and facts["tile_size"] == 256  # 1 um/px for 2 um/px patches
    assert facts["tiles"] == count_tiles(tissue.mask, tissue.plan, 0.5, (4000, 3000))
    assert facts["content_hash"]
    assert tissue.thumbnail.shape[:2] == tissue.mask.shape == tissue.plan.thumbnail_shape
    assert 0.15 < facts["tissue_fraction"] < 0.7


def test_no_mpp_is_quarantined_unless_a_fallback_is_set(no_mpp):
    assert problem(no_mpp.path).check == "no_mpp"
    facts, _ = slides.validate_slide(no_mpp.path, 64, 2.0, fallback_mpp=0.5)
    assert facts["mpp_source"] == "fallback" and "fallback" in facts["notes"][0]


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9, 0.999])
def test_truncated_slide(aperio, tmp_path, fraction):
    cut = ss.truncated_copy(aperio.path, tmp_path / "cut.svs", fraction)
    found = problem(cut)
    assert found.check == "truncated" and "cut short" in found.reason


def test_truncated_between_pages(aperio, tmp_path):
    """Cut right after level 0's data: every tile present is whole, but pages are missing."""
    with tifffile.TiffFile(aperio.path) as tiff:
        page = tiff.pages[0]
        end = int(np.max(np.add(page.dataoffsets, page.databytecounts)))
    cut = tmp_path / "between.svs"
    cut.write_bytes(Path(aperio.path).read_bytes()[:end])
    assert problem(cut).check == "truncated"


def test_corrupt_tile_is_caught_by_sample_reads(tmp_path):
    """Garbage inside one level-0 tile (size intact) shows when validation decodes tiles."""
    image = np.full((1024, 1024, 3), (190, 110, 160), np.uint8)
    path = tmp_path / "corrupt.svs"
    ss.write_slide(path, [ss.Placement(image, 0, 0, 1.0)], 1024, 1024, mpp=0.5)
    with tifffile.TiffFile(path) as tiff:
        offsets, counts = tiff.pages[0].dataoffsets, tiff.pages[0].databytecounts
    data = bytearray(path.read_bytes())
    for offset, count in zip(offsets, counts, strict=True):
        data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    found = problem(path, target=0.5)
    assert found.check in ("unreadable", "truncated")
    assert str(tmp_path) not in found.reason and "corrupt.svs" not in found.reason  # no paths


def test_no_tissue(tmp_path):
    path = ss.write_slide(tmp_path / "blank.svs", [], 2048, 2048, mpp=0.5)
    found = problem(path)
    assert found.check == "no_tissue" and "no tissue" in found.reason


@pytest.mark.parametrize(
    ("content", "check"),
    [(None, "file_missing"), (b"", "empty_file"), (b"hello, not a slide", "unsupported_format")],
)
def test_file_problems(tmp_path, content, check):
    path = tmp_path / "x.svs"
    if content is not None:
        path.write_bytes(content)
    assert problem(path).check == check


def test_plain_image_is_unsupported(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")  # not tiled
    found = problem(path)
    assert found.check == "unsupported_format" and "image cohort" in found.reason


@pytest.mark.parametrize(
    ("style", "vendor"),
    [
        ("generic", "generic-tiff"),
        ("philips", "philips"),
        ("ome", "ome-tiff"),
        ("subifd", "tiff-pyramid"),
    ],
)
def test_other_vendor_formats_tile_alike(aperio, tmp_path, style, vendor):
    """The same slide as Aperio, generic TIFF, Philips TIFF, OME-TIFF or a sub-IFD pyramid
    gives the same facts, tiles and patches: OME and sub-IFD levels (one level to OpenSlide
    4) are read as the pyramid they are."""
    other = ss.write_synthetic_slide(
        tmp_path / f"s{ss.SUFFIX[style]}",
        4000,
        3000,
        sections=3,
        label="late",
        mpp=0.5,
        style=style,
        seed=1,
    )
    facts, _ = slides.validate_slide(other.path, 64, 2.0)
    expected, _ = slides.validate_slide(aperio.path, 64, 2.0)
    assert facts["vendor"] == vendor
    same = ("microns_per_pixel", "level_count", "read_level", "tile_size", "tiles")
    assert {key: facts[key] for key in same} == {key: expected[key] for key in same}
    reference, batches = all_batches(aperio.path), all_batches(other.path)
    tiles = pd.concat([b.tiles for b in batches], ignore_index=True)
    pd.testing.assert_frame_equal(tiles, pd.concat([b.tiles for b in reference], ignore_index=True))
    images = np.concatenate([b.images for b in batches])
    assert np.array_equal(images, np.concatenate([b.images for b in reference]))


def test_slide_cohort_validation(tmp_path, aperio, no_mpp):
    """A cohort written like a user's: good slides, one without mpp, one truncated, one copy
    of another under a new name, a patient with two slides and a stray text file."""
    cohort = tmp_path / "cohort"
    ss.write_slide_cohort(
        cohort, {"normal": 1, "late": 1}, slides_per_patient=2, width=2048, height=1536, sections=2
    )
    shutil.copy(no_mpp.path, cohort / "late" / "S0003_1.tif")
    shutil.copy(cohort / "normal" / "S0001_1.svs", cohort / "late" / "S0004_1.svs")
    ss.truncated_copy(aperio.path, cohort / "late" / "S0005_1.svs", 0.7)
    (cohort / "late" / "readme.txt").write_text("scanner notes")
    records = discover_slide_folder(cohort, r"^(?P<patient>S\d+)")
    valid, quarantine = slides.validate_slides(
        records, label_map={}, allowed_labels=ALLOWED, patch_size=64, target_mpp=2.0
    )
    assert list(valid.columns) == slides.SLIDE_VALID_COLUMNS
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    checks = dict(zip(quarantine["file"], quarantine["check"], strict=True))
    assert checks == {
        "late/S0003_1.tif": "no_mpp",
        "late/S0004_1.svs": "same_image_two_owners",
        "normal/S0001_1.svs": "same_image_two_owners",
        "late/S0005_1.svs": "truncated",
        "late/readme.txt": "not_image_extension",
        "manifest.csv": "not_image_extension",
    }
    assert sorted(valid["relative_path"]) == [
        "late/S0002_1.svs",
        "late/S0002_2.svs",
        "normal/S0001_2.svs",
    ]
    assert (valid["tiles"] > 0).all() and (valid["microns_per_pixel"] == 0.5).all()
    assert valid.groupby("patient_id").size().to_dict() == {"S0001": 1, "S0002": 2}
    assert not quarantine["file"].str.startswith("/").any()  # paths relative to the root


def test_fallback_mpp_admits_a_slide_without_one(no_mpp, tmp_path):
    folder = tmp_path / "late"
    folder.mkdir()
    shutil.copy(no_mpp.path, folder / "S9_1.tif")
    records = discover_slide_folder(tmp_path)
    valid, quarantine = slides.validate_slides(
        records,
        label_map={},
        allowed_labels=ALLOWED,
        patch_size=64,
        target_mpp=2.0,
        fallback_mpp=0.5,
    )
    assert quarantine.empty and valid.loc[0, "mpp_source"] == "fallback"
