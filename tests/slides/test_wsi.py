"""Whole-slide reading: mpp rules, level choice, tissue tiles, lazy patches, checks, discovery."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from ssc_skin.cohort.ingest import QUARANTINE_COLUMNS, ImageProblem
from ssc_skin.slides import synthetic as ss
from ssc_skin.slides import wsi as slides

ALLOWED = ["normal", "early", "late", "ssc"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="module")
def aperio(root) -> ss.SlideRecord:
    return ss.write_synthetic_slide(
        root / "aperio.svs", 4000, 3000, sections=3, label="late", mpp=0.5, seed=1
    )


@pytest.fixture(scope="module")
def no_mpp(root) -> ss.SlideRecord:
    return ss.write_synthetic_slide(
        root / "plain.tif", 4000, 3000, sections=2, mpp=None, style="generic", seed=2
    )


def problem(path, **options) -> ImageProblem:
    with pytest.raises(ImageProblem) as caught:
        slides.validate_slide(path, 64, options.pop("target", 2.0), **options)
    return caught.value


# --- resolution --------------------------------------------------------------------------------


def test_mpp_from_metadata_wins():
    mpp, source, notes = slides.slide_mpp(
        {"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"},
        manifest_mpp=0.5,
        fallback_mpp=1.0,
    )
    assert (mpp, source) == (pytest.approx(0.2527), "metadata")
    assert any("manifest says 0.5" in note for note in notes)


def test_mpp_manifest_then_fallback_then_quarantine():
    assert slides.slide_mpp({}, 0.5, 1.0)[:2] == (0.5, "manifest")
    mpp, source, notes = slides.slide_mpp({}, None, 1.0)
    assert (mpp, source) == (1.0, "fallback") and "cohort.source.microns_per_pixel" in notes[0]
    with pytest.raises(ImageProblem) as caught:
        slides.slide_mpp({}, None, None)
    assert caught.value.check == "no_mpp" and "microns_per_pixel" in caught.value.reason


def test_screen_resolution_is_not_a_microscope():
    """A TIFF's 72 dpi default (352.8 um/px) must not pass for a scan's resolution."""
    with pytest.raises(ImageProblem) as caught:
        slides.slide_mpp({"openslide.mpp-x": "352.777", "openslide.mpp-y": "352.777"})
    assert caught.value.check == "no_mpp"
    _, source, notes = slides.slide_mpp({"openslide.mpp-x": "352.777"}, fallback_mpp=0.5)
    assert source == "fallback" and "not a microscope" in notes[0]


def test_resolution_tags_give_mpp(tmp_path):
    image = np.full((1024, 1024, 3), 200, np.uint8)
    path = tmp_path / "tags.tif"
    tifffile.imwrite(
        path,
        image,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(25400 / 0.25, 25400 / 0.25),
        resolutionunit="INCH",
        metadata=None,
    )
    with slides.open_slide(path) as slide:
        info = slides.slide_info(slide)
    assert info.mpp == pytest.approx(0.25) and info.mpp_source == "metadata"


def test_ome_tiff_pixel_size(tmp_path):
    """OpenSlide opens an OME-TIFF as a generic TIFF without its mpp; the OME-XML has it."""
    image = np.full((1024, 1024, 3), 200, np.uint8)
    image[200:800, 200:800] = (180, 90, 150)
    path = tmp_path / "x.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            image,
            tile=(256, 256),
            photometric="rgb",
            compression="zlib",
            metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
    facts, _ = slides.validate_slide(path, 64, 2.0)
    assert facts["microns_per_pixel"] == pytest.approx(0.5)
    assert facts["mpp_source"] == "metadata" and facts["tiles"] > 0
    assert slides.ome_mpp(
        '<OME><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" '
        'PhysicalSizeY="250" PhysicalSizeYUnit="nm"/></OME>'
    ) == [0.25, 0.25]
    assert slides.ome_mpp("Aperio Image Library") == []


# --- level choice and plan ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "level"), [(0.25, 0), (0.5, 0), (1.0, 1), (2.0, 1), (4.0, 2), (10.0, 2), (0.97, 0)]
)
def test_best_level_is_coarsest_at_least_as_fine(target, level):
    assert slides.best_level((1.0, 4.0, 16.0), 0.25, target) == level


def test_best_level_tolerates_scanner_rounding():
    assert slides.best_level((1.0, 4.0), 0.2527, 1.0) == 1  # 1.0108 um/px counts as 1.0
    assert slides.best_level((1.0, 4.0), 0.2527, 1.0, tolerance=0) == 0


def info(width=40_000, height=30_000, mpp=0.25, downsamples=(1.0, 4.0, 16.0)):
    dims = tuple((int(width / d), int(height / d)) for d in downsamples)
    return slides.SlideInfo(width, height, dims, downsamples, mpp, "metadata", "aperio", None)


def test_plan_geometry():
    plan = slides.plan_tiles(info(), 64, 2.0)
    assert plan.tile_size0 == 512 and plan.level == 1 and plan.region_size == 128
    assert plan.cells * plan.thumbnail_downsample == pytest.approx(512)
    assert plan.thumbnail_shape[0] * plan.thumbnail_shape[1] <= slides.MAX_THUMBNAIL_PIXELS


def test_plan_thumbnail_is_bounded_whatever_the_slide_size():
    """The tissue thumbnail (the only per-slide image in memory) must not grow with area."""
    shapes = [
        slides.plan_tiles(info(side, side), 64, 2.0).thumbnail_shape
        for side in (40_000, 80_000, 160_000)
    ]
    assert all(h * w <= slides.MAX_THUMBNAIL_PIXELS for h, w in shapes)
    assert shapes[2][0] * shapes[2][1] > 0.3 * slides.MAX_THUMBNAIL_PIXELS


def test_plan_stride_is_whole_thumbnail_pixels():
    plan = slides.plan_tiles(info(), 64, 2.0, stride=32)
    assert plan.cells % 2 == 0 and plan.cell_stride * 2 == plan.cells


def test_plan_refuses_coarse_and_tiny_slides():
    with pytest.raises(ImageProblem) as caught:
        slides.plan_tiles(info(mpp=4.0), 64, 2.0)
    assert caught.value.check == "too_coarse"
    assert slides.plan_tiles(info(mpp=2.2), 64, 2.0).notes  # a little coarser: a note
    with pytest.raises(ImageProblem) as caught:
        slides.plan_tiles(info(width=300, height=300), 64, 2.0)
    assert caught.value.check == "too_small"


# --- patches -----------------------------------------------------------------------------------


def all_batches(path, target=2.0, **options):
    return list(slides.iter_slide_batches(path, 64, target, **options))


@pytest.mark.parametrize(("target", "page", "factor"), [(2.0, 2, 4), (1.0, 1, 2), (1.5, 1, 2)])
def test_patches_are_the_pixels_at_the_target_resolution(aperio, target, page, factor):
    """Each patch equals the tile cut from the right pyramid page (read independently with
    tifffile) and resized to 64 px."""
    batches = all_batches(aperio.path, target, batch_size=50)
    with tifffile.TiffFile(aperio.path) as tiff:
        level = tiff.pages[page].asarray()
    region = round(64 * target / 0.5 / factor)
    checked = 0
    for batch in batches:
        for image, (x, y, size) in zip(
            batch.images, batch.tiles[["x", "y", "size"]].to_numpy(), strict=True
        ):
            assert size == round(64 * target / 0.5)
            expected = level[y // factor : y // factor + region, x // factor : x // factor + region]
            if region != 64:
                expected = cv2.resize(expected, (64, 64), interpolation=cv2.INTER_AREA)
            assert np.array_equal(image, expected)
            checked += 1
    assert checked > 20


def test_batches_are_lazy_sized_and_cover_each_section(aperio):
    iterator = slides.iter_slide_batches(aperio.path, 64, 2.0, batch_size=16)
    first = next(iterator)  # a generator: the first batch comes before the rest is read
    batches = [first, *iterator]
    assert all(b.images.shape[1:] == (64, 64, 3) and b.images.dtype == np.uint8 for b in batches)
    assert all(len(b.images) == 16 for b in batches[:-1]) and 0 < len(batches[-1].images) <= 16
    tiles = pd.concat([b.tiles for b in batches], ignore_index=True)
    assert list(tiles.columns) == slides.TILE_COLUMNS
    assert not tiles.duplicated(["x", "y"]).any()
    assert (tiles["tissue_fraction"] >= 0.5).all()
    centres_x, centres_y = tiles["x"] + tiles["size"] / 2, tiles["y"] + tiles["size"] / 2
    for x, y, w, h in aperio.sections:
        on = (centres_x > x) & (centres_x < x + w) & (centres_y > y) & (centres_y < y + h)
        assert on.sum() >= 5  # every section is tiled
    outside = np.ones(len(tiles), bool)
    for x, y, w, h in aperio.sections:
        outside &= ~(
            (centres_x > x - 256)
            & (centres_x < x + w + 256)
            & (centres_y > y - 256)
            & (centres_y < y + h + 256)
        )
    assert not outside.any()  # and nothing is cut from the glass between them


def test_patches_are_tissue_not_glass(aperio):
    images = np.concatenate([b.images for b in all_batches(aperio.path)])
    saturation = np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2HSV)[..., 1] for i in images])
    assert (saturation.reshape(len(images), -1).mean(axis=1) > 25).mean() > 0.9


def test_edge_to_edge_tissue_is_all_tiles(tmp_path):
    """A slide covered by tissue (no glass): every grid cell is a tile."""
    rng = np.random.default_rng(0)
    tissue = np.clip(rng.normal((200, 120, 170), 15, (300, 400, 3)), 0, 255).astype(np.uint8)
    path = ss.write_slide(tmp_path / "full.svs", [ss.Placement(tissue, 0, 0, 4.0)], 1600, 1200)
    tiles = pd.concat([b.tiles for b in all_batches(path, 1.0)])
    assert len(tiles) == (1600 // 128) * (1200 // 128)


def test_grayscale_slide_finds_tissue_by_darkness(tmp_path):
    section = ss.write_synthetic_slide(tmp_path / "colour.svs", 2000, 1500, sections=1).path
    with tifffile.TiffFile(section) as tiff:
        colour = tiff.pages[0].asarray()
    gray = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    path = ss.write_slide(tmp_path / "gray.svs", [ss.Placement(gray, 0, 0, 1.0)], 2000, 1500)
    facts, _ = slides.validate_slide(path, 64, 1.0)
    assert facts["tiles"] > 10


def test_jpeg_immunohistochemistry_slide(tmp_path):
    """A real stained image (IHC, DAB + haematoxylin) filling a JPEG-tiled slide, as most
    scanners compress: tissue edge to edge, colours the simulator never makes."""
    pytest.importorskip("imagecodecs")  # tifffile writes JPEG tiles only with it
    skimage_data = pytest.importorskip("skimage.data")
    ihc = skimage_data.immunohistochemistry()  # 512 x 512 RGB
    path = ss.write_slide(
        tmp_path / "ihc.svs",
        [ss.Placement(ihc, 0, 0, 4.0)],
        2048,
        2048,
        mpp=0.5,
        compression="jpeg",
    )
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.JPEG
    facts, tissue = slides.validate_slide(path, 64, 0.5)
    assert facts["tiles"] > 0.9 * (2048 // 64) ** 2
    batch = next(slides.iter_slide_batches(path, 64, 0.5, batch_size=8))
    x, y = batch.tiles.loc[0, ["x", "y"]]
    expected = cv2.resize(ihc, (2048, 2048), interpolation=cv2.INTER_NEAREST)[
        y : y + 64, x : x + 64
    ]
    assert np.abs(batch.images[0].astype(int) - expected).mean() < 8  # JPEG loss only


# --- checks ------------------------------------------------------------------------------------


def test_valid_slide_facts(aperio):
    facts, tissue = slides.validate_slide(aperio.path, 64, 2.0)
    assert facts["microns_per_pixel"] == 0.5 and facts["mpp_source"] == "metadata"
    assert facts["vendor"] == "aperio" and facts["level_count"] == 3
    assert facts["read_level"] == 2 and facts["tile_size"] == 256
    assert facts["tiles"] == slides.count_tiles(tissue.mask, tissue.plan, 0.5, (4000, 3000))
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


@pytest.mark.parametrize(("style", "vendor"), [("generic", "generic-tiff"), ("philips", "philips")])
def test_other_vendor_formats_tile_alike(aperio, tmp_path, style, vendor):
    """The same slide as Aperio, generic TIFF or Philips TIFF gives the same tiles."""
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
    assert facts["vendor"] == vendor
    reference = pd.concat([b.tiles for b in all_batches(aperio.path)], ignore_index=True)
    tiles = pd.concat([b.tiles for b in all_batches(other.path)], ignore_index=True)
    pd.testing.assert_frame_equal(tiles, reference)


# --- discovery and cohort validation -----------------------------------------------------------


def test_folder_discovery_counts_multi_file_slides_once(tmp_path):
    for relative in [
        "normal/P01_a.svs",
        "normal/P01_b.ndpi",
        "late/P02.mrxs",
        "late/P02/Slidedat.ini",
        "late/P02/Data0000.dat",
        "late/P03.vms",
        "late/P03_x.jpg",
        "late/P03.opt",
        "early/P04_scan/1.dcm",
        "early/P04_scan/2.dcm",
        "early/notes.txt",
        "P05.svs",
        "late/.DS_Store",
    ]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    (tmp_path / "late/P03.vms").write_text(
        "[Virtual Microscope Specimen]\nImageFile=P03_x.jpg\nOptimisationFile=P03.opt\n"
    )
    records = slides.discover_slide_folder(tmp_path)
    assert list(records.columns) == slides.SLIDE_RECORD_COLUMNS
    by_path = records.set_index("relative_path")
    assert sorted(by_path.index) == [
        "P05.svs",
        "early/P04_scan",
        "early/notes.txt",
        "late/P02.mrxs",
        "late/P03.vms",
        "normal/P01_a.svs",
        "normal/P01_b.ndpi",
    ]
    assert by_path.loc["early/P04_scan", "patient_id"] == "P04"
    assert by_path.loc["early/P04_scan", "image_path"].endswith("1.dcm")
    assert by_path.loc["early/notes.txt", "problem_check"] == "not_image_extension"
    assert by_path.loc["P05.svs", "problem_check"] == "no_label_folder"
    assert by_path.loc["normal/P01_a.svs", "raw_label"] == "normal"
    assert by_path["problem_check"].isna().sum() == 5


def test_manifest_rows_are_slides(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "slide_path;patient_id;label;microns_per_pixel\n"
        "a/one.svs;P1;normal;\nb/two.svs;P1;normal;0.25\nthree.png;P2;late;\n"
        "four.tif;P2;late;fast\n;P3;late;\n"
    )
    records = slides.read_slide_manifest(tmp_path / "manifest.csv").set_index("relative_path")
    assert records.loc["b/two.svs", "microns_per_pixel"] == 0.25
    assert np.isnan(records.loc["a/one.svs", "microns_per_pixel"])
    assert records.loc["three.png", "problem_check"] == "not_image_extension"
    assert records.loc["four.tif", "problem_check"] == "invalid_mpp"
    assert records.loc["manifest.csv line 6", "problem_check"] == "missing_image_path"
    assert records.loc["a/one.svs", "image_path"] == str(tmp_path / "a" / "one.svs")
    (tmp_path / "bad.csv").write_text("path,patient\nx.svs,P1\n")
    with pytest.raises(ValueError, match="slide_path"):
        slides.read_slide_manifest(tmp_path / "bad.csv")


def test_discover_slides_by_layout(tmp_path):
    with pytest.raises(slides.CohortConfigError, match="cohort.source.root"):
        slides.discover_slides({"layout": "slide_folder"})
    with pytest.raises(slides.CohortConfigError, match="not a slide layout"):
        slides.discover_slides({"layout": "folder", "root": str(tmp_path)})
    assert slides.discover_slides({"layout": "slide_folder", "root": str(tmp_path)}).empty


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
    records = slides.discover_slide_folder(cohort, r"^(?P<patient>S\d+)")
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
    records = slides.discover_slide_folder(tmp_path)
    valid, quarantine = slides.validate_slides(
        records,
        label_map={},
        allowed_labels=ALLOWED,
        patch_size=64,
        target_mpp=2.0,
        fallback_mpp=0.5,
    )
    assert quarantine.empty and valid.loc[0, "mpp_source"] == "fallback"
