"""From study to screening tool: the export node, the predict nodes and the benchmark script."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.constants import Skipped
from ssc_skin.datasets import TFLiteModelDataset
from ssc_skin.imaging import stain
from ssc_skin.inference import export, predict
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.pipelines.export.nodes import export_classifier, log_whole_image_predictor
from ssc_skin.pipelines.predict.nodes import (
    find_new_images,
    gradcam_new_images,
    predict_new_images,
)

PROJECT = Path(__file__).resolve().parents[2]
SIZE = 32  # classifier input
PATCH = 64
BINARY = {"name": "binary", "classes": ["normal", "ssc"]}
THREE = {"name": "three_class", "classes": ["normal", "early", "late"]}
TASKS = {"binary": BINARY, "three_class": THREE}
CNN = {"name": "cnn", "input_size": SIZE}
EXPORT = {"representative_patches": 16, "agreement_patches": 48, "latency_patches": 16,
          "latency_rounds": 2, "agreement_threshold": 0.99, "num_threads": 2, "batch_size": 8,
          "seed": 0, "log_predictor": True}
PATCHES = {"patch_size": PATCH, "stride": PATCH, "min_tissue_fraction": 0.5,
           "min_saturation": 12}
SEGMENTATION = {"unet": {"input_size": 32},
                "selection": {"use_segmentation": True, "min_dermis_fraction": 0.5}}
SOURCE = {"patient_id_regex": "^(?P<patient>[A-Za-z0-9]+)", "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


def _classifier(n_classes: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_cnn(input_size=SIZE, n_classes=n_classes, filters=(8,), dense_units=8)


@pytest.fixture(scope="module")
def patch_data() -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Smooth colour fields with noise, as patch arrays at patch size, in three splits."""
    rng = np.random.default_rng(1)
    n = 72
    images = np.clip(rng.uniform(60, 230, (n, 1, 1, 3)) + rng.normal(0, 25, (n, PATCH, PATCH, 3)),
                     0, 255).astype(np.uint8)
    index = pd.DataFrame({"row": np.arange(n), "split": np.repeat(["train", "val", "test"], 24),
                          "label": np.tile(["normal", "late"], n // 2)})
    return {"images": images}, index


@pytest.fixture(scope="module")
def trained(patch_data) -> keras.Model:
    """A tiny classifier fitted for one epoch: enough to have real, uneven probabilities."""
    patches, index = patch_data
    model = _classifier(2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = patches["images"][:, ::2, ::2].astype(np.float32)
    model.fit(x, (index["label"] == "late").to_numpy(int), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(trained, patch_data):
    return export_classifier(trained, *patch_data, BINARY, CNN, EXPORT)


def test_export_writes_both_tflite_models_and_an_agreement_summary(exported, tmp_path):
    float32, int8, summary, metrics = exported
    runtimes = summary["runtimes"]
    assert set(runtimes) == {"keras", "tflite_float32", "tflite_int8"}
    for name in ("tflite_float32", "tflite_int8"):
        assert {"label_agreement", "max_abs_probability_difference", "patches_per_second",
                "ms_per_patch", "model_bytes"} <= set(runtimes[name])
        assert 0 <= runtimes[name]["label_agreement"] <= 1
    assert runtimes["tflite_float32"]["label_agreement"] == 1.0
    assert runtimes["tflite_float32"]["max_abs_probability_difference"] < 1e-4
    assert summary["runtime"] in {"keras", "tflite_float32"} and summary["runtime_reason"]
    assert summary["agreement_patches"] == 24  # every test patch (fewer than asked for)
    assert runtimes["tflite_int8"]["model_bytes"] < runtimes["tflite_float32"]["model_bytes"]
    assert metrics["tflite_float32.label_agreement"]["value"] == 1.0
    assert "uses_tflite" in metrics
    json.dumps(summary)  # the JSON dataset can write it
    for name, data in (("float32", float32), ("int8", int8)):
        dataset = TFLiteModelDataset(str(tmp_path / f"m.{name}.tflite"), None)
        dataset.save(data)
        assert (tmp_path / f"m.{name}.tflite").read_bytes()[4:8] == b"TFL3"
        assert dataset.load() == data


def test_export_of_a_skipped_task_saves_markers(patch_data, tmp_path):
    float32, int8, summary, metrics = export_classifier(Skipped("binary-only cohort"),
                                                        *patch_data, THREE, CNN, EXPORT)
    assert isinstance(float32, Skipped) and isinstance(int8, Skipped) and metrics == {}
    assert summary["skipped"] == "binary-only cohort"
    dataset = TFLiteModelDataset(str(tmp_path / "t.float32.tflite"), None)
    dataset.save(float32)
    assert not (tmp_path / "t.float32.tflite").exists() and dataset.exists()
    assert dataset.load() == Skipped("binary-only cohort")
    log_whole_image_predictor(Skipped("x"), float32, summary, THREE, CNN, PATCHES, 0.6)


def test_predictor_logging_is_a_no_op_without_an_mlflow_run(exported, trained):
    assert mlflow.active_run() is None
    float32, _, summary, _ = exported
    log_whole_image_predictor(trained, float32, summary, BINARY, CNN, PATCHES, 0.6)
    assert mlflow.active_run() is None


def test_runtime_choice_needs_agreement_and_speed():
    fast = {"keras": {"patches_per_second": 100.0},
            "tflite_float32": {"patches_per_second": 300.0, "label_agreement": 1.0}}
    assert predict.choose_runtime(fast, 0.99)[0] == "tflite_float32"
    disagrees = {**fast, "tflite_float32": {"patches_per_second": 300.0,
                                            "label_agreement": 0.9}}
    assert predict.choose_runtime(disagrees, 0.99)[0] == "keras"
    slow = {**fast, "tflite_float32": {"patches_per_second": 50.0, "label_agreement": 1.0}}
    assert predict.choose_runtime(slow, 0.99)[0] == "keras"


# --- predict -------------------------------------------------------------------------------

def _section(label: str, seed: int) -> np.ndarray:
    patient = synthetic.make_patient("x", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


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


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """What a training run leaves: a binary CNN exported to TFLite (export chose it), a
    3-class CNN on Keras, a UNet and a fitted stain normaliser."""
    models = tmp_path_factory.mktemp("models")
    binary, three = _classifier(2, 0), _classifier(3, 1)
    binary.save(models / "binary.cnn.keras")
    three.save(models / "three_class.cnn.keras")
    (models / "binary.cnn.float32.tflite").write_bytes(export.to_tflite(binary))
    (models / "binary.cnn.export.json").write_text(json.dumps({"runtime": "tflite_float32"}))
    (models / "three_class.cnn.export.json").write_text(json.dumps({"runtime": "keras"}))
    keras.utils.set_random_seed(0)
    unet = build_unet(32, 4, base_filters=4, depth=2)
    normalizer = stain.fit_normalizer("macenko", [_section("normal", 9)]).to_dict()
    templates = {"keras": str(models / "{task}.{arch}.keras"),
                 "tflite": str(models / "{task}.{arch}.float32.tflite"),
                 "export_summary": str(models / "{task}.{arch}.export.json")}
    return unet, normalizer, templates


def _params(root: Path, templates: dict[str, str]) -> dict:
    return {"input": str(root), "architecture": "cnn", "runtime": "auto", "tasks": None,
            "patient_ids": True, "patient_id_regex": None, "low_confidence_threshold": 0.6,
            "gradcam_images": 2, "num_threads": 2, "models": templates}


@pytest.fixture(scope="module")
def predicted(new_images, study, tmp_path_factory):
    root, _ = new_images
    unet, normalizer, templates = study
    params = _params(root, templates)
    images, quarantine, linkage = find_new_images(params, SOURCE, CHECKS, PATCHES)
    table = predict_new_images(images, unet, normalizer, params, PATCHES, SEGMENTATION, TASKS,
                               {"cnn": CNN})
    csv = tmp_path_factory.mktemp("out") / "predictions.csv"
    table.to_csv(csv, index=False)
    return images, quarantine, linkage, table, csv


def test_predictions_have_one_row_per_valid_image_and_task(predicted):
    images, _, _, table, _ = predicted
    assert len(images) == 4
    by_image = table[table["level"] == "image"]
    assert len(by_image) == 4 * 2
    assert by_image.groupby("task")["image"].nunique().to_dict() == {"binary": 4,
                                                                     "three_class": 4}
    for task in TASKS.values():
        rows = by_image[by_image["task"] == task["name"]]
        columns = [f"probability_{c}" for c in task["classes"]]
        np.testing.assert_allclose(rows[columns].sum(axis=1), 1.0, atol=1e-4)
        assert set(rows["label"]) <= set(task["classes"])
        assert (rows["low_confidence"] == (rows[columns].max(axis=1) < 0.6)).all()
    assert (by_image["n_patches"] > 0).all()
    assert (by_image["n_patches"] <= by_image["n_tissue_patches"]).all()
    assert dict(zip(by_image["task"], by_image["runtime"], strict=True)) == {
        "binary": "tflite_float32", "three_class": "keras"}


def test_patient_rows_average_images_with_a_patient_id(predicted):
    images, _, linkage, table, _ = predicted
    patients = table[table["level"] == "patient"]
    assert len(patients) == 2 * 2  # SMITH07 and JONES42, both tasks; '_slide.jpg' has no id
    smith = linkage.loc[linkage["patient_id"] == "SMITH07", "patient"].iloc[0]
    row = patients[(patients["patient"] == smith) & (patients["task"] == "binary")].iloc[0]
    of_smith = table[(table["level"] == "image") & (table["patient"] == smith)
                     & (table["task"] == "binary")]
    assert row["n_images"] == 2
    assert row["probability_ssc"] == pytest.approx(of_smith["probability_ssc"].mean())


def test_bad_file_is_quarantined_and_no_raw_name_leaves(predicted, new_images):
    root, before = new_images
    _, quarantine, linkage, _, csv = predicted
    assert list(quarantine["check"]) == ["truncated"]
    assert "DOE99" not in quarantine.to_csv() and quarantine["file"].iloc[0].endswith("_cut.png")
    text = csv.read_text()
    for raw in ("SMITH07", "JONES42", "DOE99", "_slide", ".png", ".jpg", str(root)):
        assert raw not in text
    assert set(linkage["relative_path"]) == {"SMITH07_a.png", "SMITH07_b.png",
                                             "batch2/JONES42_a.png", "_slide.jpg"}
    assert _checksums(root) == before  # the input folder is only read


def test_gradcam_figure_of_new_images(predicted, study, new_images):
    images, _, _, table, _ = predicted
    unet, normalizer, templates = study
    params = _params(new_images[0], templates)
    figure = gradcam_new_images(images, table, unet, normalizer, params, PATCHES, SEGMENTATION,
                                TASKS, {"cnn": CNN})
    assert isinstance(figure, Figure)
    assert sum(ax.get_visible() for ax in figure.axes) == 2


def test_single_file_input_and_a_skipped_task(new_images, study, tmp_path):
    root, _ = new_images
    unet, normalizer, templates = study
    marker_templates = {**templates, "keras": str(tmp_path / "{task}.{arch}.keras")}
    (tmp_path / "binary.cnn.keras").symlink_to(Path(templates["keras"].format(
        task="binary", arch="cnn")))
    (tmp_path / "three_class.cnn.skipped.json").write_text(json.dumps({"reason": "binary"}))
    params = {**_params(root / "SMITH07_a.png", marker_templates), "runtime": "keras"}
    images, quarantine, _ = find_new_images(params, SOURCE, CHECKS, PATCHES)
    assert len(images) == 1 and quarantine.empty
    table = predict_new_images(images, unet, normalizer, params, PATCHES, SEGMENTATION, TASKS,
                               {"cnn": CNN})
    assert list(table["level"]) == ["image", "patient"]
    assert set(table["task"]) == {"binary"} and set(table["runtime"]) == {"keras"}


def test_folder_without_usable_images_gives_an_empty_table(study, tmp_path):
    unet, normalizer, templates = study
    (tmp_path / "notes.txt").write_text("stained 2019")
    Image.new("RGB", (96, 96), (250, 250, 250)).save(tmp_path / "glass.png")
    params = _params(tmp_path, templates)
    images, quarantine, _ = find_new_images(params, SOURCE, CHECKS, PATCHES)
    assert images.empty and set(quarantine["check"]) == {"not_image_extension", "no_tissue"}
    table = predict_new_images(images, unet, normalizer, params, PATCHES, SEGMENTATION, TASKS,
                               {"cnn": CNN})
    assert table.empty and "probability_ssc" in table.columns


@pytest.mark.e2e  # two `kedro run` subprocesses: about a minute on 2 idle cores
def test_benchmark_quick_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([sys.executable, str(PROJECT / "benchmarks/run.py"), "--quick",
                             "--out", str(tmp_path)], check=False, capture_output=True,
                            text=True, timeout=300, env=env, cwd=PROJECT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert {"tiling", "training", "inference", "predict", "memory"} <= set(data)
    assert len(data["memory"]["runs"]) == 2 and data["memory"]["runs"][0]["patches"] > 0
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert markdown.startswith("# ") and "| " in markdown
