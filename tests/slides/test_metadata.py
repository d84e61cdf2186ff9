"""Microns per pixel: metadata, manifest, fallback; resolution tags and OME-XML."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from ssc_skin.cohort.checks import ImageProblem
from ssc_skin.slides import checks, metadata
from ssc_skin.slides.readers import open_slide


def test_mpp_from_metadata_wins():
    mpp, source, notes = metadata.slide_mpp(
        {"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"},
        manifest_mpp=0.5,
        fallback_mpp=1.0,
    )
    assert (mpp, source) == (pytest.approx(0.2527), "metadata")
    assert any("manifest says 0.5" in note for note in notes)


def test_mpp_manifest_then_fallback_then_quarantine():
    assert metadata.slide_mpp({}, 0.5, 1.0)[:2] == (0.5, "manifest")
    mpp, source, notes = metadata.slide_mpp({}, None, 1.0)
    assert (mpp, source) == (1.0, "fallback") and "cohort.source.microns_per_pixel" in notes[0]
    with pytest.raises(ImageProblem) as caught:
        metadata.slide_mpp({}, None, None)
    assert caught.value.check == "no_mpp" and "microns_per_pixel" in caught.value.reason


def test_screen_resolution_is_not_a_microscope():
    """A TIFF's 72 dpi default (352.8 um/px) must not pass for a scan's resolution."""
    with pytest.raises(ImageProblem) as caught:
        metadata.slide_mpp({"openslide.mpp-x": "352.777", "openslide.mpp-y": "352.777"})
    assert caught.value.check == "no_mpp"
    _, source, notes = metadata.slide_mpp({"openslide.mpp-x": "352.777"}, fallback_mpp=0.5)
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
    with open_slide(path) as slide:
        info = metadata.slide_info(slide)
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
    facts, _ = checks.validate_slide(path, 64, 2.0)
    assert facts["microns_per_pixel"] == pytest.approx(0.5)
    assert facts["mpp_source"] == "metadata" and facts["tiles"] > 0
    assert metadata.ome_mpp(
        '<OME><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" '
        'PhysicalSizeY="250" PhysicalSizeYUnit="nm"/></OME>'
    ) == [0.25, 0.25]
    assert metadata.ome_mpp("Aperio Image Library") == []
