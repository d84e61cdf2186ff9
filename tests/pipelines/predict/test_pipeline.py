"""The `predict` pipeline: new images through the training run's preprocessing and models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.datasets import TrainedModelsDataset
from ssc_skin.imaging import stain
from ssc_skin.inference import export
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.pipelines.predict.nodes import (
    find_new_images,
    gradcam_new_images,
    load_predict_setup,
    predict_new_inputs,
)
from ssc_skin.pipelines.predict.pipeline import create_pipeline
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from tests.pipelines.runner import run_pipeline

SIZE = 32  # classifier input
PATCH = 64
BINARY = {"name": "binary", "classes": ["normal", "ssc"]}
THREE = {"name": "three_class", "classes": ["normal", "early", "late"]}
TASKS = {"binary": BINARY, "three_class": THREE}
CNN = {"name": "cnn", "input_size": SIZE}
PATCHES = {"patch_size": PATCH, "stride": PATCH, "min_tissue_fraction": 0.5, "min_saturation": 12}
SAVED = PreprocessConfig(patch_size=PATCH, stride=PATCH)  # the training run's preprocess.json
SOURCE = {"patient_id_regex": "^(?P<patient>[A-Za-z0-9]+)", "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


def _predict(images, config, unet, trained, params) -> object:
    """The predict node's table, with the setup node's one object."""
    setup = load_predict_setup(config, unet, trained, params, TASKS, {"cnn": CNN}, SOURCE)
    return predict_new_inputs(images, setup)[0]


def _classifier(n_classes: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_cnn(input_size=SIZE, n_classes=n_classes, filters=(8,), dense_units=8)


# --- predict -------------------------------------------------------------------------------


def _section(label: str, seed: int) -> np.ndarray:
    patient = synthetic.make_patient("x", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def new_images(tmp_path_factory):
    """Two patients' images (ids in file names, one in a subfolder), a truncated file and a
    file without a patient-id match; read-only, as a user's folder must stay."""
    root = tmp_path_factory.mktemp("new_images")
    (root / "batch2").mkdir()
    Image.fromarray(_section("normal", 4)).save(root / "SMITH07_a.png")
    Image.fromarray(_section("normal", 5)).save(root / "SMITH07_b.png")
    Image.fromarray(_section("late", 3)).save(root / "batch2" / "JONES42_a.png")
    Image.fromarray(_section("early", 4)).save(root / "_slide.jpg")
    (root / "DOE99_cut.png").write_bytes((root / "SMITH07_a.png").read_bytes()[:900])
    for path in root.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = _checksums(root)
    yield root, before
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_study(models: Path, reports: Path) -> None:
    """What a training run leaves: a binary CNN exported to TFLite (export chose it), a
    3-class CNN on Keras."""
    binary, three = _classifier(2, 0), _classifier(3, 1)
    binary.save(models / "binary.cnn.keras")
    three.save(models / "three_class.cnn.keras")
    (models / "binary.cnn.float32.tflite").write_bytes(export.to_tflite(binary))
    for name, runtime in (("binary.cnn", "tflite_float32"), ("three_class.cnn", "keras")):
        (reports / name).mkdir(parents=True)
        (reports / name / "export.json").write_text(json.dumps({"runtime": runtime}))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A training run's models (read through the catalog's `trained_models` dataset), its
    preprocessing configuration with a fitted stain normaliser, and its TFLite UNet."""
    models, reports = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("reports")
    _write_study(models, reports)
    keras.utils.set_random_seed(0)
    unet = export.to_tflite(build_unet(32, 4, base_filters=4, depth=2))
    normalizer = stain.fit_normalizer("macenko", [_section("normal", 9)]).to_dict()
    config = PreprocessConfig(
        patch_size=PATCH,
        stride=PATCH,
        normalizer=normalizer,
        unet_input_size=32,
        min_dermis_fraction=0.5,
    ).to_dict()
    return config, unet, TrainedModelsDataset(str(models), str(reports))


def _params(root: Path) -> dict:
    return {
        "input": str(root),
        "architecture": "cnn",
        "runtime": "auto",
        "tasks": None,
        "patient_ids": True,
        "patient_id_regex": None,
        "low_confidence_threshold": 0.6,
        "gradcam_images": 2,
        "num_threads": 2,
    }


@pytest.fixture(scope="module")
def predicted(new_images, study, tmp_path_factory):
    root, _ = new_images
    config, unet, trained = study
    params = _params(root)
    images, quarantine, linkage = find_new_images(params, SOURCE, CHECKS, SAVED)
    table = _predict(images, config, unet, trained.load(), params)
    csv = tmp_path_factory.mktemp("out") / "predictions.csv"
    table.to_csv(csv, index=False)
    return images, quarantine, linkage, table, csv


def test_predictions_have_one_row_per_valid_image_and_task(predicted):
    images, _, _, table, _ = predicted
    assert len(images) == 4
    by_image = table[table["level"] == "image"]
    assert len(by_image) == 4 * 2
    assert by_image.groupby("task")["image"].nunique().to_dict() == {"binary": 4, "three_class": 4}
    for task in TASKS.values():
        rows = by_image[by_image["task"] == task["name"]]
        columns = [f"probability_{c}" for c in task["classes"]]
        np.testing.assert_allclose(rows[columns].sum(axis=1), 1.0, atol=1e-4)
        assert set(rows["label"]) <= set(task["classes"])
        flagged = (rows[columns].max(axis=1) < 0.6) | (rows["selection"] != "ok")
    assert (rows["low_confidence"] == flagged).all()
    assert (by_image["n_patches"] > 0).all()
    assert (by_image["n_patches"] <= by_image["n_tissue_patches"]).all()
    assert dict(zip(by_image["task"], by_image["runtime"], strict=True)) == {
        "binary": "tflite_float32",
        "three_class": "keras",
    }


def test_patient_rows_average_images_with_a_patient_id(predicted):
    images, _, linkage, table, _ = predicted
    patients = table[table["level"] == "patient"]
    assert len(patients) == 2 * 2  # SMITH07 and JONES42, both tasks; '_slide.jpg' has no id
    smith = linkage.loc[linkage["patient_id"] == "SMITH07", "patient"].iloc[0]
    row = patients[(patients["patient"] == smith) & (patients["task"] == "binary")].iloc[0]
    of_smith = table[
        (table["level"] == "image") & (table["patient"] == smith) & (table["task"] == "binary")
    ]
    assert row["n_images"] == 2
    # the study's rule: the mean over all of the patient's patches (images weigh by patch count)
    weights = of_smith["n_patches"] / of_smith["n_patches"].sum()
    assert row["probability_ssc"] == pytest.approx((of_smith["probability_ssc"] * weights).sum())


def test_bad_file_is_quarantined_and_no_raw_name_leaves(predicted, new_images):
    root, before = new_images
    _, quarantine, linkage, _, csv = predicted
    assert list(quarantine["check"]) == ["truncated"]
    assert "DOE99" not in quarantine.to_csv() and "_cut" not in quarantine.to_csv()
    assert quarantine["file"].iloc[0].endswith(".png")  # a pseudonym: no part of the name
    text = csv.read_text()
    for raw in ("SMITH07", "JONES42", "DOE99", "_slide", ".png", ".jpg", str(root)):
        assert raw not in text
    assert set(linkage["relative_path"]) == {
        "SMITH07_a.png",
        "SMITH07_b.png",
        "batch2/JONES42_a.png",
        "_slide.jpg",
    }
    assert _checksums(root) == before  # the input folder is only read


def test_gradcam_figure_of_new_images(predicted, study, new_images):
    images, _, _, table, _ = predicted
    config, unet, trained = study
    params = _params(new_images[0])
    setup = load_predict_setup(config, unet, trained.load(), params, TASKS, {"cnn": CNN}, SOURCE)
    figure, png = gradcam_new_images(images, table, setup, params)
    assert png.startswith(b"\x89PNG")
    assert isinstance(figure, Figure)
    assert sum(ax.get_visible() for ax in figure.axes) == 2


def test_single_file_input_and_a_skipped_task(new_images, study, tmp_path):
    root, _ = new_images
    config, unet, _ = study
    _classifier(2).save(tmp_path / "binary.cnn.keras")
    (tmp_path / "three_class.cnn.skipped.json").write_text(json.dumps({"reason": "binary"}))
    params = {**_params(root / "SMITH07_a.png"), "runtime": "keras"}
    images, quarantine, _ = find_new_images(params, SOURCE, CHECKS, SAVED)
    assert len(images) == 1 and quarantine.empty
    trained = TrainedModelsDataset(str(tmp_path), str(tmp_path / "reports")).load()
    table = _predict(images, config, unet, trained, params)
    assert list(table["level"]) == ["image", "patient"]
    assert set(table["task"]) == {"binary"} and set(table["runtime"]) == {"keras"}


def test_folder_without_usable_images_gives_an_empty_table(study, tmp_path):
    config, unet, trained = study
    (tmp_path / "notes.txt").write_text("stained 2019")
    Image.new("RGB", (96, 96), (250, 250, 250)).save(tmp_path / "glass.png")
    params = _params(tmp_path)
    images, quarantine, _ = find_new_images(params, SOURCE, CHECKS, SAVED)
    assert images.empty and set(quarantine["check"]) == {"not_image_extension", "no_tissue"}
    table = _predict(images, config, unet, trained.load(), params)
    assert table.empty and "probability_ssc" in table.columns


def test_the_predict_pipeline_runs_on_an_in_memory_catalog(new_images, study):
    """All three nodes through Kedro's runner, with the catalog's model dataset."""
    root, before = new_images
    config, unet, trained = study
    catalog = run_pipeline(
        create_pipeline(),
        {
            "preprocess_config": config,
            "unet_tflite": unet,
            "trained_models": trained.load(),
            "params:predict": _params(root),
            "params:cohort.source": SOURCE,
            "params:cohort.checks": CHECKS,
            "params:patches": PATCHES,
            "params:classification.tasks": TASKS,
            "params:classification.architectures": {"cnn": CNN},
            "params:cohort.source.tiff_page": 0,
            "params:engine": {"kind": "sequential"},
        },
    )
    table = catalog.load("new_image_predictions")
    assert set(table["level"]) == {"image", "patient"} and len(table) == 4 * 2 + 2 * 2
    assert isinstance(catalog.load("new_image_gradcam"), Figure)
    assert list(catalog.load("predict_quarantine")["check"]) == ["truncated"]
    assert _checksums(root) == before


def test_images_are_checked_with_the_training_runs_saved_preprocessing(tmp_path):
    """Today's `patches` parameters no longer reach predict's checks: a 48 px image passes
    when the training run cut 32 px patches, however large `params:patches` says now, and
    fails when the saved run cut 64 px ones."""
    Image.fromarray(_section("normal", 9)[:48, :48]).save(tmp_path / "MRN-4471-Smith_a.png")
    params = _params(tmp_path)
    small, quarantine, _ = find_new_images(params, SOURCE, CHECKS, PreprocessConfig(32, 32))
    assert len(small) == 1 and quarantine.empty
    large, quarantine, _ = find_new_images(params, SOURCE, CHECKS, PreprocessConfig(64, 64))
    assert large.empty and len(quarantine) == 1
    assert "params:patches" not in create_pipeline().inputs()
