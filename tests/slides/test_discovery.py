"""Slide discovery: folder layout with multi-file slides, slide manifests."""

from __future__ import annotations

import numpy as np
import pytest

from ssc_skin.cohort.config import CohortConfigError
from ssc_skin.slides import discovery as slides


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
    with pytest.raises(CohortConfigError, match="cohort.source.root"):
        slides.discover_slides({"layout": "slide_folder"})
    with pytest.raises(CohortConfigError, match="not a slide layout"):
        slides.discover_slides({"layout": "folder", "root": str(tmp_path)})
    assert slides.discover_slides({"layout": "slide_folder", "root": str(tmp_path)}).empty
