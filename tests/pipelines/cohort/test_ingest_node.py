"""The cohort and predict pipelines' input nodes on bad input (issue 12): every output can be
written, the quarantine report is written even when nothing is usable, and no raw id or
path reaches a report."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.pipelines.cohort import create_pipeline
from ssc_skin.pipelines.cohort.nodes import ingest_cohort
from ssc_skin.pipelines.predict.nodes import find_new_images
from ssc_skin.preprocessing.preprocess import PreprocessConfig

CHECKS = {"min_tissue_fraction": 0.05, "allowed_labels": ["normal", "early", "late", "ssc"]}
SPLIT = {
    "val_fraction": 0.25,
    "test_fraction": 0.25,
    "seed": 0,
    "folds": 0,
    "fold": 0,
    "reuse_saved": False,
}
PATCHES = {"patch_size": 32, "min_saturation": 12}
SAVED = PreprocessConfig(patch_size=32, stride=32)  # the training run's preprocess.json
PREDICT = {"patient_ids": True, "patient_id_regex": None}


def _section(label: str, seed: int) -> np.ndarray:
    """A small section that shows tissue (a 96 px field of view can fall on glass only)."""
    for attempt in range(10):
        patient = synthetic.make_patient("x", label, np.random.default_rng([seed, attempt]))
        section = synthetic.render_section(patient, 0, (96, 96), artefact_rate=0.0)
        if (section.mask > 0).mean() > 0.5:
            return section.image
    raise AssertionError("no section with tissue")


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _cohort(root: Path, **source) -> dict:
    return {
        "source": {"layout": "folder", "root": str(root), **source},
        "checks": CHECKS,
        "split": SPLIT,
        "masks": "auto",
    }


def _ingest(root: Path, **source) -> dict:
    """The node's outputs by name (the order is the pipeline's)."""
    outputs = ingest_cohort(pd.DataFrame(), _cohort(root, **source), **PATCHES)
    names = ["images", "masks", "manifest", "linkage", "report", "metrics"]
    return dict(zip(names, outputs, strict=False))


def _written(tmp_path: Path, *tables: pd.DataFrame) -> str:
    """Every table as the catalog writes it (CSV, UTF-8); their text."""
    text = ""
    for number, table in enumerate(tables):
        path = tmp_path / f"out{number}.csv"
        CSVDataset(filepath=str(path)).save(table)
        text += path.read_text(encoding="utf-8")
    return text


# --- 1: names that are not UTF-8 ------------------------------------------------------------


def test_cohort_node_with_a_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "cohort"
    for label in ("normal", "late"):
        for p in range(3):
            _save(root / label / f"{label.upper()}{p}_a.png", _section(label, p + len(label)))
    odd = root / "normal" / os.fsdecode(b"NORMAL0_caf\xe9.png")
    _save(odd, _section("normal", 40))
    (root / "late" / os.fsdecode(b"LATE0_\xff.png")).write_bytes(b"")
    out = _ingest(root)
    manifest, linkage, report = out["manifest"], out["linkage"], out["report"]
    assert len(manifest) == 7 and list(report["check"]) == ["empty_file"]
    _written(tmp_path, manifest, linkage, report)  # no UnicodeEncodeError
    assert "normal/NORMAL0_caf\\xe9.png" in set(linkage["relative_path"])
    image = linkage.set_index("relative_path").loc["normal/NORMAL0_caf\\xe9.png", "image"]
    assert out["images"][image]().size == (96, 96)


def test_predict_node_with_a_name_that_is_not_utf8(tmp_path):
    _save(tmp_path / os.fsdecode(b"P1_caf\xe9.png"), _section("normal", 1))
    (tmp_path / os.fsdecode(b"P2_\xff.png")).write_bytes(b"")
    images, report, linkage = find_new_images(
        {**PREDICT, "input": str(tmp_path)}, {}, CHECKS, SAVED
    )
    assert len(images) == 1 and list(report["check"]) == ["empty_file"]
    _written(tmp_path, report, linkage)


# --- 2: the report is written when nothing is usable, and replaces an old one ---------------


def test_a_cohort_with_only_bad_files_writes_its_report_then_stops(tmp_path):
    root = tmp_path / "cohort"
    (root / "normal").mkdir(parents=True)
    (root / "normal" / "P1_a.png").write_bytes(b"")
    (root / "normal" / "P2_a.png").write_text("not an image")
    report_path = tmp_path / "quarantine.csv"
    pd.DataFrame({"file": ["old.png"], "check": ["corrupt"], "reason": ["stale"]}).to_csv(
        report_path, index=False
    )
    catalog = DataCatalog(
        {
            "quarantine": CSVDataset(filepath=str(report_path), save_args={"index": False}),
            "params:cohort": MemoryDataset(_cohort(root)),
            "params:cohort.split": MemoryDataset(SPLIT),
            "previous_patient_splits": MemoryDataset(None),
            "params:patches.patch_size": MemoryDataset(32),
            "params:patches.min_saturation": MemoryDataset(12),
            "params:patches": MemoryDataset(
                {"patch_size": 32, "stride": 32, "min_saturation": 12, "min_tissue_fraction": 0.5}
            ),
            "params:classification.tasks": MemoryDataset({}),
            "params:cohort.colour_baseline": MemoryDataset({"bins": 8, "folds": 2, "seed": 0}),
        }
    )
    with pytest.raises(ValueError, match="no usable image.*quarantine.csv"):
        SequentialRunner().run(create_pipeline(), catalog)
    written = pd.read_csv(report_path)
    assert sorted(written["check"]) == ["empty_file", "not_an_image"]  # the stale one is gone
    assert "P1" not in written.to_csv() and "P2" not in written.to_csv()


# --- 6 and 7: no raw id in any report, reasons intact ---------------------------------------


def test_patient_folders_and_common_words_in_the_cohort_report(tmp_path):
    root = tmp_path / "cohort"
    for label in ("normal", "ssc"):
        for p in range(3):
            for slide in ("slideA", "slideB"):
                _save(
                    root / label / f"{label.upper()}{p:02d}" / f"{slide}.png",
                    _section(
                        "normal" if label == "normal" else "late",
                        10 * p + ord(slide[-1]) + len(label),
                    ),
                )
    (root / "ssc" / "SSC00" / "image_01.png").write_text("not an image")
    (root / "ssc" / "_CASE77.png").write_bytes(b"")
    out = _ingest(root, patient_from="folder")
    manifest, linkage, report = out["manifest"], out["linkage"], out["report"]
    assert manifest["patient"].nunique() == 6 and len(manifest) == 12
    assert set(linkage.loc[linkage["check"].isna(), "patient_id"]) == {
        f"{c}{p:02d}" for c in ("NORMAL", "SSC") for p in range(3)
    }
    text = _written(tmp_path, manifest, report)
    for raw in ("NORMAL0", "SSC0", "CASE77", "slideA", str(root)):
        assert raw not in text, raw
    reasons = dict(zip(report["check"], report["reason"], strict=True))
    assert reasons["not_an_image"] == "not an image (format not recognised)"
    assert reasons["no_patient_id"].startswith("not inside a patient folder")


def test_the_local_report_linkage_maps_hidden_names_back(tmp_path):
    root = tmp_path / "cohort"
    for label in ("normal", "ssc"):
        for p in range(3):
            _save(
                root / label / f"{label.upper()}{p}_a.png", _section("normal", p + 3 * len(label))
            )
    (root / "ssc" / "_CASE77.png").write_bytes(b"")
    (root / "ssc" / "SSC0_b.png").write_bytes(b"")
    out = _ingest(root)
    quarantined = out["linkage"].dropna(subset=["check"])
    mapping = dict(zip(quarantined["image"], quarantined["relative_path"], strict=True))
    assert set(mapping) == set(out["report"]["file"])
    assert set(mapping.values()) == {"ssc/_CASE77.png", "ssc/SSC0_b.png"}
    assert out["linkage"]["check"].isna().sum() == len(out["manifest"])


def test_predict_report_without_patient_ids_shows_no_name(tmp_path):
    _save(tmp_path / "SMITH07_a.png", _section("normal", 1))
    (tmp_path / "batch2").mkdir()
    (tmp_path / "batch2" / "JONES42_b.png").write_bytes(b"")
    (tmp_path / "DOE99_c.png").write_text("not an image")
    params = {**PREDICT, "input": str(tmp_path), "patient_ids": False}
    images, report, linkage = find_new_images(params, {}, CHECKS, SAVED)
    assert len(images) == 1 and images["patient"].isna().all()
    text = _written(tmp_path, report)
    for raw in ("SMITH07", "JONES42", "DOE99", "batch2", str(tmp_path)):
        assert raw not in text, raw
    assert set(report["check"]) == {"empty_file", "not_an_image"}


def test_predict_report_with_links_out_of_the_input_folder(tmp_path):
    outside = tmp_path / "outside"
    _save(outside / "X1_a.png", _section("normal", 2))
    folder = tmp_path / "new"
    _save(folder / "P1_a.png", _section("normal", 3))
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    images, report, _ = find_new_images({**PREDICT, "input": str(folder)}, {}, CHECKS, SAVED)
    assert len(images) == 1 and list(report["check"]) == ["outside_root"]
    images, report, _ = find_new_images(
        {**PREDICT, "input": str(folder)}, {"allow_outside_root": True}, CHECKS, SAVED
    )
    assert len(images) == 2 and report.empty
